"""Short, timed, seeded trainings of any classifier on an audio split (notebook 05)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from gradkit.core.params import trainable_parameters
from gradkit.training.guard import DivergenceGuard
from gradkit.training.loop import epoch_batches, evaluate, fit_epoch
from gradkit.training.objective import sample_loss

__all__ = ["train_short"]


def train_short(
    model: nn.Module,
    split: Any,
    epochs: int,
    batch_size: int,
    lr: float,
    schedule: Callable[[int], float] | None = None,
    optimizer: str = "adam",
    seed: int = 42,
    loss_fn: Callable[[Any, Tensor], Tensor] | None = None,
    stop: Callable[[pd.DataFrame], bool] | None = None,
) -> pd.DataFrame:
    """Train ``model`` in place on ``split.x_train`` for ``epochs``; one row per epoch.

    Mini-batches of :func:`gradkit.training.loop.epoch_batches` (``batch_size``, ``seed``);
    the optimiser is Adam or SGD (``optimizer="adam"|"sgd"``) with ``lr`` times
    ``schedule(step)`` (a per-step factor, e.g. :func:`gradkit.lectures.optimizers.warmup_cosine`).
    ``loss_fn`` defaults to :func:`gradkit.training.objective.sample_loss` (cross-entropy on the
    class logits). Columns: ``epoch``,
    ``train_loss``/``train_acc`` (the whole training set after the epoch, eval mode),
    ``val_loss``/``val_acc``, ``lr`` (at the epoch's last step), ``seconds`` (the epoch's
    optimisation steps, wall clock). ``stop``, asked after every epoch with the rows so far,
    ends training early when it returns True (e.g. a convergence test of the training loss);
    ``epochs`` is then the cap.

    The epochs run through :func:`gradkit.training.loop.fit_epoch` with a finiteness guard: a
    NaN / infinite loss or parameter raises
    :class:`~gradkit.training.guard.TrainingDiverged` naming the epoch and batch.
    """
    loss_fn = loss_fn or sample_loss
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs ≥ 1, batch_size ≥ 1, lr > 0; got {epochs}, "
                         f"{batch_size}, {lr}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    params = trainable_parameters(model)
    opt = (torch.optim.Adam(params, lr=lr) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule else None
    x, y = split.x_train, split.y_train
    guard = DivergenceGuard(max_loss=math.inf, lr=lr)  # finiteness only: the loss is the caller's

    def step(idx: Tensor) -> Tensor:
        return loss_fn(model(x[idx]), y[idx])

    def measure() -> dict[str, float]:
        row = {}
        for part, xs, ys in (("train", x, y), ("val", split.x_val, split.y_val)):
            out = model(xs)
            logits = out[0] if isinstance(out, tuple) else out
            row[f"{part}_loss"] = float(loss_fn(out, ys))
            row[f"{part}_acc"] = float((logits.argmax(1) == ys).float().mean())
        return row

    rows = []
    for epoch in range(1, epochs + 1):
        batches = epoch_batches(len(x), batch_size, seed, epoch)
        start = time.perf_counter()
        fit_epoch(model, opt, batches, step, epoch=epoch, scheduler=sched, guard=guard)
        seconds = time.perf_counter() - start
        lr_now = opt.param_groups[0]["lr"] if sched is None else sched.get_last_lr()[0]
        rows.append({"epoch": epoch, "seconds": seconds, "lr": lr_now,
                     **evaluate(model, measure)})
        if stop is not None and epoch < epochs and stop(pd.DataFrame(rows)):
            break
    return pd.DataFrame(rows)
