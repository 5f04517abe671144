"""The update rules of the lecture notes, written out plainly, and a 2-D surface to run them on.

Every rule takes ``grad(θ) -> g`` (a function returning the gradient at θ, any tensor shape), the
start ``theta0``, a number of ``steps`` and a learning rate ``lr`` that is either a number η or a
schedule ``t -> η_t`` (t = 0, 1, …), and returns the whole trajectory ``[steps + 1, *θ.shape]``.
Subscript i (one coordinate) is implicit: every operation is element-wise.

=================  =================================================================
rule               update (g_t = ∇L(θ_t); all operations per coordinate)
=================  =================================================================
gradient descent   θ ← θ − η g
momentum           d ← μ d + g ;  θ ← θ − η d
root mean square   σ_t = √( (1/(t+1)) Σ_{s≤t} g_s² ) ;  θ ← θ − η/σ_t · g
AdaGrad            σ_t = √( Σ_{s≤t} g_s² ) ;  θ ← θ − η/σ_t · g
RMSProp            σ_t² = α σ_{t−1}² + (1−α) g_t² ;  θ ← θ − η/σ_t · g
Adam               m ← β₁m + (1−β₁)g ; v ← β₂v + (1−β₂)g² ; θ ← θ − η m̂/(√v̂ + ε)
=================  =================================================================

A small ε in each denominator avoids a division by zero (PyTorch's placement is kept, so
that the rules are *equal* to ``torch.optim``, which the tests assert).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

GradFn = Callable[[Tensor], Tensor]
LR = float | Callable[[int], float]


def _lr(lr: LR, t: int) -> float:
    return float(lr(t)) if callable(lr) else float(lr)


def _check(theta0: Tensor, steps: int) -> Tensor:
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {steps}")
    if not torch.is_floating_point(theta0):
        raise ValueError(f"theta0 must be a floating-point tensor, got {theta0.dtype}")
    return theta0.detach().clone()


def gradient_descent(grad: GradFn, theta0: Tensor, steps: int, lr: LR) -> Tensor:
    """θ_{t+1} = θ_t − η_t g_t. Equal to ``torch.optim.SGD(lr=η)``."""
    theta = _check(theta0, steps)
    path = [theta]
    for t in range(steps):
        theta = theta - _lr(lr, t) * grad(theta)
        path.append(theta)
    return torch.stack(path)


def momentum(grad: GradFn, theta0: Tensor, steps: int, lr: LR, mu: float = 0.9) -> Tensor:
    """Heavy ball: ``d_t = μ d_{t−1} + g_t`` (d_{−1} = 0), ``θ_{t+1} = θ_t − η_t d_t``.

    The notes' ``θ_new = θ − α(v + β∇L)`` with ``v = μ d_{t−1}`` (the last movement, decayed)
    and β = 1. Equal to ``torch.optim.SGD(lr=η, momentum=μ)``; with a constant η it is also the
    lecture's ``m_t = μ m_{t−1} − η g_t, θ_{t+1} = θ_t + m_t`` (m = −η d).
    """
    theta = _check(theta0, steps)
    d = torch.zeros_like(theta)
    path = [theta]
    for t in range(steps):
        d = mu * d + grad(theta)
        theta = theta - _lr(lr, t) * d
        path.append(theta)
    return torch.stack(path)


def root_mean_square(grad: GradFn, theta0: Tensor, steps: int, lr: LR,
                     eps: float = 0.0) -> Tensor:
    """The notes' rule: ``σ_t = √((1/(t+1)) Σ_{s≤t} g_s²)``, ``θ_{t+1} = θ_t − η_t g_t/(σ_t+ε)``.

    With ``η_t = η/√(t+1)`` the 1/(t+1) inside σ cancels and this is AdaGrad (:func:`adagrad`).
    """
    # A formula twin of adagrad on purpose: the notes state both rules (benchmarks/README.md).
    theta = _check(theta0, steps)
    sum_sq = torch.zeros_like(theta)
    path = [theta]
    for t in range(steps):
        g = grad(theta)
        sum_sq = sum_sq + g**2
        sigma = torch.sqrt(sum_sq / (t + 1))
        theta = theta - _lr(lr, t) * g / (sigma + eps)
        path.append(theta)
    return torch.stack(path)


def adagrad(grad: GradFn, theta0: Tensor, steps: int, lr: LR, eps: float = 1e-10) -> Tensor:
    """AdaGrad: ``σ_t = √(Σ_{s≤t} g_s²)``, ``θ_{t+1} = θ_t − η_t g_t/(σ_t + ε)``.

    Equal to ``torch.optim.Adagrad(lr=η, eps=ε)``.
    """
    theta = _check(theta0, steps)
    sum_sq = torch.zeros_like(theta)
    path = [theta]
    for t in range(steps):
        g = grad(theta)
        sum_sq = sum_sq + g**2
        theta = theta - _lr(lr, t) * g / (torch.sqrt(sum_sq) + eps)
        path.append(theta)
    return torch.stack(path)


def rmsprop(grad: GradFn, theta0: Tensor, steps: int, lr: LR, alpha: float = 0.99,
            eps: float = 1e-8, start: str = "zero") -> Tensor:
    """RMSProp: ``σ_t² = α σ_{t−1}² + (1−α) g_t²``, ``θ_{t+1} = θ_t − η_t g_t/(σ_t + ε)``.

    ``start="zero"``: σ_{−1} = 0, so σ_0 = √(1−α)|g_0| (PyTorch; equal to
    ``torch.optim.RMSprop(lr=η, alpha=α, eps=ε)``). ``start="notes"``: σ_0 = |g_0| as in the
    notes (equal to PyTorch with its running average seeded with g_0²).
    """
    if start not in ("zero", "notes"):
        raise ValueError(f"start must be 'zero' or 'notes', got {start!r}")
    theta = _check(theta0, steps)
    sq = None if start == "notes" else torch.zeros_like(theta)
    path = [theta]
    for t in range(steps):
        g = grad(theta)
        sq = g**2 if sq is None else alpha * sq + (1 - alpha) * g**2
        theta = theta - _lr(lr, t) * g / (torch.sqrt(sq) + eps)
        path.append(theta)
    return torch.stack(path)


def adam(grad: GradFn, theta0: Tensor, steps: int, lr: LR,
         betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         history: dict[str, list] | None = None) -> Tensor:
    """Adam = RMSProp + momentum, both bias-corrected (Kingma & Ba, 2015).

    ``m_t = β₁m + (1−β₁)g``, ``v_t = β₂v + (1−β₂)g²``, ``m̂ = m_t/(1−β₁^{t+1})``,
    ``v̂ = v_t/(1−β₂^{t+1})``, ``θ_{t+1} = θ_t − η_t m̂/(√v̂ + ε)``. Equal to
    ``torch.optim.Adam(lr=η, betas=(β₁, β₂), eps=ε)``.

    The step is the notes' product of three factors: global η × schedule s(t) (together
    ``η_t``) × the per-coordinate adaptive ``1/(√v̂ + ε)``, applied to m̂. Pass a dict as
    ``history`` to collect ``lr`` (η_t), ``adaptive`` and ``m_hat`` of every step.
    """
    b1, b2 = betas
    theta = _check(theta0, steps)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    path = [theta]
    for t in range(steps):
        g = grad(theta)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1 ** (t + 1)), v / (1 - b2 ** (t + 1))
        theta = theta - _lr(lr, t) * m_hat / (torch.sqrt(v_hat) + eps)
        path.append(theta)
        if history is not None:
            for key, value in (("lr", _lr(lr, t)), ("adaptive", 1 / (torch.sqrt(v_hat) + eps)),
                               ("m_hat", m_hat)):
                history.setdefault(key, []).append(value)
    return torch.stack(path)


def torch_path(make_optimizer: Callable, grad: GradFn, theta0: Tensor, steps: int,
               make_scheduler: Callable | None = None,
               init_state: Callable[[Tensor], dict] | None = None) -> Tensor:
    """The same trajectory taken by a ``torch.optim`` optimizer, for comparison.

    ``make_optimizer([param])`` builds it (e.g. ``lambda ps: torch.optim.Adam(ps, lr=0.1)``),
    ``make_scheduler(optimizer)`` optionally a learning-rate scheduler stepped after each step.
    ``init_state(g_0)`` optionally seeds the optimizer's per-parameter state before its first
    step (e.g. RMSProp's ``square_avg = g_0²``, the notes' start; see :func:`rmsprop`).
    """
    p = torch.nn.Parameter(_check(theta0, steps))
    opt = make_optimizer([p])
    sched = make_scheduler(opt) if make_scheduler is not None else None
    path = [p.detach().clone()]
    for _ in range(steps):
        p.grad = grad(p.detach())
        if init_state is not None and not opt.state[p]:
            opt.state[p].update(init_state(p.grad))
        opt.step()
        if sched is not None:
            sched.step()
        path.append(p.detach().clone())
    return torch.stack(path)


RULES = {
    "gradient descent": gradient_descent,
    "momentum": momentum,
    "AdaGrad": adagrad,
    "RMSProp": rmsprop,
    "Adam": adam,
}


def run_rule(name: str, grad: GradFn, theta0: Tensor, steps: int, lr: LR,
             beta: float = 0.9) -> Tensor:
    """The trajectory of rule ``name`` (a key of :data:`RULES`) with one shared ``beta``: the
    momentum μ, RMSProp's α and Adam's β₁ (Adam's β₂ stays 0.999); gradient descent and AdaGrad
    have none."""
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; one of {sorted(RULES)}")
    extra = {"momentum": {"mu": beta}, "RMSProp": {"alpha": beta},
             "Adam": {"betas": (beta, 0.999)}}.get(name, {})
    return RULES[name](grad, theta0, steps, lr, **extra)


def run_rules(grad: GradFn, theta0: Tensor, steps: int, lr: LR, beta: float = 0.9,
              names=None) -> dict[str, Tensor]:
    """:func:`run_rule` for every rule in ``names`` (default: all of :data:`RULES`, in order)."""
    return {name: run_rule(name, grad, theta0, steps, lr, beta) for name in (names or RULES)}


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules: factors s(t) multiplying the global η
# ---------------------------------------------------------------------------------------------
def warmup_cosine(t: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """Warm-up then decay: ``s(t) = (t+1)/W`` for t < W, then cosine from 1 down to ``floor``:
    ``s(t) = floor + (1 − floor)(1 + cos(π (t − W)/(T − W)))/2`` for W ≤ t ≤ T.

    Equal to PyTorch's ``SequentialLR([LinearLR(1/W, 1, W − 1), CosineAnnealingLR(T − W,
    floor·η)], milestones=[W])``. After T it stays at ``floor``.
    """
    if not 0 < warmup < total:
        raise ValueError(f"need 0 < warmup < total, got warmup={warmup}, total={total}")
    if t < warmup:
        return (t + 1) / warmup
    progress = min(t - warmup, total - warmup) / (total - warmup)
    return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2


def warmup_cosine_schedule(warmup: int, total: int, floor: float = 0.0, peak: float = 1.0
                           ) -> Callable[[int], float]:
    """``t -> peak · warmup_cosine(t, warmup, total, floor)``: a learning-rate schedule to pass
    as ``lr`` to a rule above, or as ``schedule`` (a per-step factor, ``peak = 1``) to
    :func:`gradkit.training.train_short`."""
    warmup_cosine(0, warmup, total, floor)  # checks the arguments now, not at the first step

    def schedule(t: int) -> float:
        return peak * warmup_cosine(t, warmup, total, floor)

    return schedule


# ---------------------------------------------------------------------------------------------
# A 2-D surface with a saddle point and a narrow valley
# ---------------------------------------------------------------------------------------------
def saddle_valley(theta: Tensor, kappa: float = 40.0) -> Tensor:
    """``L(x, y) = (x² − 1)²/4 + κ y²/2``: a saddle at (0, 0), minima at (±1, 0).

    Hessian ``diag(3x² − 1, κ)``: at the saddle the eigenvalues are −1 and κ, at the minima 2
    and κ. With κ = 40 the valley along y = 0 is narrow: its walls are 20× steeper than its floor
    is curved, so one learning rate cannot suit both coordinates (plain gradient descent needs
    η < 2/κ = 0.05 to be stable across the valley, and then crawls along it and off the saddle).
    ``theta[..., 0]`` is x and ``theta[..., 1]`` is y; works on any leading shape (grids too).
    """
    x, y = theta[..., 0], theta[..., 1]
    return (x**2 - 1) ** 2 / 4 + kappa * y**2 / 2


SADDLE_VALLEY_START = torch.tensor([0.01, 1.0], dtype=torch.float64)
"""The notes' start on :func:`saddle_valley`: just off the saddle, high on the valley's wall."""


def saddle_valley_grad(theta: Tensor, kappa: float = 40.0) -> Tensor:
    """``∇L = (x³ − x, κ y)``."""
    x, y = theta[..., 0], theta[..., 1]
    return torch.stack([x**3 - x, kappa * y], dim=-1)


def steps_to(path: Tensor, level: float = 1e-3, loss: Callable[[Tensor], Tensor] | None = None
             ) -> int | None:
    """The first step at which ``loss(path[t]) < level`` (default :func:`saddle_valley`), or
    ``None`` if the path never gets there."""
    values = (saddle_valley if loss is None else loss)(path)
    below = (values < level).nonzero()
    return int(below[0]) if len(below) else None
