"""The notes' update rules and schedule against PyTorch's own implementations.

Each function runs ours and ``torch.optim``'s on the same problem and returns the largest
difference, for the notebook to show; ``tests/lectures`` assert those differences are rounding.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor

from gradkit.lectures.optimizers import (
    RULES,
    GradFn,
    adagrad,
    adam,
    rmsprop,
    root_mean_square,
    run_rule,
    torch_path,
    warmup_cosine,
    warmup_cosine_schedule,
)

__all__ = ["rules_against_torch", "torch_optimizer", "torch_warmup_cosine",
           "variants_against_torch"]


def torch_optimizer(name: str, lr: float, beta: float = 0.9):
    """``params -> torch.optim`` optimizer that is rule ``name`` of
    :func:`gradkit.lectures.optimizers.run_rule` with the same ``lr`` and ``beta``."""
    factories = {"gradient descent": partial(torch.optim.SGD, lr=lr),
                 "momentum": partial(torch.optim.SGD, lr=lr, momentum=beta),
                 "AdaGrad": partial(torch.optim.Adagrad, lr=lr),
                 "RMSProp": partial(torch.optim.RMSprop, lr=lr, alpha=beta),
                 "Adam": partial(torch.optim.Adam, lr=lr, betas=(beta, 0.999))}
    if name not in factories:
        raise ValueError(f"unknown rule {name!r}; one of {sorted(factories)}")
    return factories[name]


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


def rules_against_torch(problems: dict[str, tuple[GradFn, Tensor, int]], lr: float,
                        beta: float = 0.9):
    """For every problem ``name -> (grad, theta0, steps)`` and every rule of
    :data:`~gradkit.lectures.optimizers.RULES`: the largest ``|ours − torch.optim|`` over the
    whole trajectory. One row per (problem, rule)."""
    import pandas as pd

    rows = []
    for problem, (grad, theta0, steps) in problems.items():
        for name in RULES:
            ours = run_rule(name, grad, theta0, steps, lr, beta)
            theirs = torch_path(torch_optimizer(name, lr, beta), grad, theta0, steps)
            rows.append({"problem": problem, "rule": name, "steps": steps,
                         "max |ours − torch.optim|": _max_diff(ours, theirs)})
    return pd.DataFrame(rows)


def _seed_square_avg(g: Tensor) -> dict:
    return {"step": torch.tensor(0.0), "square_avg": g.clone() ** 2}


def variants_against_torch(grad: GradFn, theta0: Tensor, steps: int, lr: float,
                           beta: float = 0.9, warmup: int = 20):
    """The notes' variants, each against what it should equal (largest difference over the
    trajectory): RMSProp started at σ₀ = |g₀| against ``torch.optim.RMSprop`` seeded with
    ``square_avg = g₀²``; the root-mean-square rule with η/√(t+1) against AdaGrad (ε = 0); Adam
    with :func:`~gradkit.lectures.optimizers.warmup_cosine` against ``torch.optim.Adam`` +
    ``LambdaLR``."""
    import pandas as pd

    factor = warmup_cosine_schedule(warmup, steps)
    pairs = [
        ("RMSProp, the notes' start σ₀ = |g₀|", "torch RMSprop seeded with g₀²",
         rmsprop(grad, theta0, steps, lr, alpha=beta, start="notes"),
         torch_path(partial(torch.optim.RMSprop, lr=lr, alpha=beta), grad, theta0, steps,
                    init_state=_seed_square_avg)),
        ("root mean square, η/√(t+1)", "AdaGrad (ε = 0)",
         root_mean_square(grad, theta0, steps, lambda t: lr / math.sqrt(t + 1)),
         adagrad(grad, theta0, steps, lr, eps=0.0)),
        (f"Adam × warm-up ({warmup}) + cosine", "torch Adam + LambdaLR",
         adam(grad, theta0, steps, warmup_cosine_schedule(warmup, steps, peak=lr)),
         torch_path(partial(torch.optim.Adam, lr=lr), grad, theta0, steps,
                    partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=factor))),
    ]
    return pd.DataFrame([{"ours": a, "equals": b, "steps": steps, "max |difference|":
                          _max_diff(x, y)} for a, b, x, y in pairs])


def torch_warmup_cosine(warmup: int, total: int, floor: float = 0.0,
                        steps: int | None = None) -> list[float]:
    """PyTorch's own warm-up + cosine factor at steps ``0 … steps − 1`` (default ``total``):
    ``SequentialLR([LinearLR(1/W, 1, W − 1), CosineAnnealingLR(T − W, floor)], [W])`` stepped
    after each optimiser step, read from an SGD of learning rate 1."""
    warmup_cosine(0, warmup, total, floor)  # the same argument checks as ours
    p = torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler
    seq = sched.SequentialLR(sgd, [sched.LinearLR(sgd, 1 / warmup, 1.0, total_iters=warmup - 1),
                                   sched.CosineAnnealingLR(sgd, T_max=total - warmup,
                                                           eta_min=floor)],
                             milestones=[warmup])
    factors = []
    for _ in range(total if steps is None else steps):
        factors.append(sgd.param_groups[0]["lr"])
        sgd.step()
        seq.step()
    return factors
