"""Is ``loss_fn`` a sum of per-sample terms? The check that per-sample gradients mean anything.

Per-sample gradients ``G[i] = ∇_θ l_i`` (:mod:`gradkit.grads.engine`) take the loss of each
sample alone, ``l_i = loss_fn(model(x_i), y_i)``. When the batch loss ``L = loss_fn(model(x),
y)`` is a mean (or sum) of those terms, ``c · Σ_i G[i] = ∇_θ L`` with ``c = 1/N`` (or 1): the
rows are the pieces of the training gradient. When the loss *couples* the samples (an in-batch
ranking loss over pairs, a batch-variance penalty, weights normalised over the batch) the rows
are the gradients of a different objective: an in-batch ranking loss of one sample has no pair
and is 0 (an all-zero ``G``), and a batch-variance penalty of one sample vanishes. Nothing in
the rows shows it, so :func:`check_coupled_outputs` and :func:`check_coupled_params` test the
identity above and raise :class:`CoupledLossError`:

- in the ``"layers"`` pass at the model's outputs ``z``, where it costs only backward passes
  through the loss function: ``c · ∂(Σ_i l_i)/∂z = ∂L/∂z`` (by the chain rule, the identity for
  ``θ``; stricter where a part of the outputs reaches no parameter). The gradient of ``Σ_i l_i``
  at the outputs is then the one the pass's single model backward starts from;
- on the other paths (vmap, the loop) for ``θ`` itself, with one backward of the batch loss.

The reduction ``c`` is read from the values: ``1/N`` when ``L`` is the mean of the ``l_i``,
``1`` when their sum, else ``L / Σ_i l_i`` (any other fixed scale; then only the gradient
decides). A loss whose batch value is not a scalar is compared term by term (``c = 1``) when
it has one value per sample, else not checked.

A NaN or infinity in a sample's input or gradient row is reported by
:func:`warn_nonfinite`, naming the samples (one bad sample must not hide in a statistic).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gradkit.grads.samples import per_sample_losses
from gradkit.grads.warn import warn_user

__all__ = ["CoupledLossError", "check_coupled_outputs", "check_coupled_params", "loss_name",
           "reduction_scale", "warn_nonfinite"]

# Float32 rounding of the same loss evaluated batched and per sample: a few ulps, bar 1000.
_ULPS = 1e3
_RTOL_MAX = 0.1  # the bar for half precision, whose eps times 1000 would accept anything


class CoupledLossError(RuntimeError):
    """The loss (or model) couples the samples of a batch: its per-sample gradients are not the
    pieces of its batch gradient (:mod:`gradkit.grads.coupling`)."""


def loss_name(loss_fn: Any) -> str:
    """A user-facing name of ``loss_fn``: its ``__name__``, else its class's name."""
    inner = getattr(loss_fn, "func", None)  # functools.partial
    name = getattr(loss_fn, "__name__", None) or getattr(inner, "__name__", None)
    return name or type(loss_fn).__name__


def _rtol(dtype: torch.dtype) -> float:
    return min(_ULPS * torch.finfo(dtype).eps, _RTOL_MAX)


def reduction_scale(batch: float, summed: float, n: int, rtol: float) -> float:
    """``c`` with ``L = c · Σ_i l_i``: ``1/N`` (mean), ``1`` (sum), else ``L / Σ_i l_i``."""
    for c in (1.0 / n, 1.0):
        if abs(batch - c * summed) <= rtol * max(abs(batch), abs(c * summed)) + 1e-30:
            return c
    return batch / summed if abs(summed) > 1e-30 else 1.0 / n


def _raise(loss_fn, where: str, err: float, size: float, c: float, n: int) -> None:
    raise CoupledLossError(
        f"per_sample_grads: the loss {loss_name(loss_fn)!r} couples the samples of a batch: "
        f"the per-sample gradients, summed and scaled by the reduction (c = {c:.4g}, N = {n}), "
        f"differ from the gradient of the batch loss loss_fn(model(x), y) by {err / size:.2g} "
        f"(relative, {where}). Per-sample gradients take each sample's loss alone, "
        "loss_fn(model(x_i), y_i); for an in-batch ranking loss (pairs), a batch-variance "
        "penalty or weights normalised over the batch that is another objective (a pairwise "
        "term of one sample is 0), so these rows are not the pieces of the training gradient. "
        "Compute per-sample quantities of a per-sample loss (each sample's own term, with any "
        "batch-dependent weights or pair shares frozen as constants, as "
        "gradkit.analysis.objective_grads does for the ranking term), or pass check=False to "
        "accept the rows of the per-sample losses as they are.")


def _values(loss_fn, batch: Tensor, losses: Tensor, n: int) -> tuple[Tensor, Tensor, float] | None:
    """``(L, Σ l_i scaled, c)`` as comparable tensors, or None (not comparable / non-finite)."""
    if not (torch.isfinite(losses).all() and torch.isfinite(batch).all()):
        return None  # warn_nonfinite names the samples; no verdict on NaN
    rtol = _rtol(losses.dtype)
    if batch.numel() == 1:
        c = reduction_scale(float(batch.detach()), float(losses.sum()), n, rtol)
        return batch.reshape(()), losses.sum() * c, c
    if batch.numel() == n and n > 1:  # one value per sample (reduction='none')
        return batch.reshape(-1), losses.reshape(-1), 1.0
    return None


def check_coupled_outputs(loss_fn, outputs: Any, leaves: list[Tensor], targets: Any,
                          losses: Tensor, check: bool = True) -> list[Tensor | None]:
    """``∂(Σ_i l_i)/∂z`` for the output tensors ``leaves`` (detached from the model, so that
    no hook of the model's graph fires: ``outputs`` is their tree), the seeds of the layers
    pass's model backward; with ``check`` first the check at the outputs (module docstring),
    raising :class:`CoupledLossError`."""
    if not losses.requires_grad:
        return [None] * len(leaves)
    per_sample = torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
    n = losses.shape[0]
    got = _values(loss_fn, loss_fn(outputs, targets), losses.detach(), n) if check else None
    if got is None or not got[0].requires_grad:
        return list(per_sample)
    batch, _, c = got
    whole = torch.autograd.grad(batch.sum(), leaves, allow_unused=True)
    diff = size = 0.0
    for t, g, w in zip(leaves, per_sample, whole, strict=True):
        g = torch.zeros_like(t) if g is None else g * c
        w = torch.zeros_like(t) if w is None else w
        diff += float((g - w).pow(2).sum())
        size += float(w.pow(2).sum()) + float(g.pow(2).sum())
    if diff ** 0.5 > _rtol(losses.dtype) * size ** 0.5 + 1e-30:
        _raise(loss_fn, "at the model's outputs", diff ** 0.5, size ** 0.5, c, n)
    return list(per_sample)


def check_coupled_params(model, loss_fn, inputs: Any, targets: Any, g: Tensor,
                         params: list[Tensor]) -> bool:
    """The other paths' check (module docstring): one batch forward and backward, ``c · Σ_i
    G[i]`` against ``∇_θ L``; raises :class:`CoupledLossError`. False when it could not decide
    (non-finite values)."""
    n = g.shape[0]
    out = model(inputs)
    with torch.no_grad():
        losses = per_sample_losses(loss_fn, out, targets)
    got = _values(loss_fn, loss_fn(out, targets), losses, n)
    if got is None:
        return False
    batch, _, c = got
    if not batch.requires_grad:
        return True
    whole = torch.autograd.grad(batch.sum(), params, allow_unused=True)
    want = torch.cat([(w if w is not None else torch.zeros_like(p)).reshape(-1).to(g.dtype)
                      for w, p in zip(whole, params, strict=True)])
    summed = g.sum(0) * c
    # The rows and the batch backward round differently; relative to the rows' own size (a
    # sum of N rows cancels down to the mean gradient): 1000 ulps of c·‖G‖ and of ‖∇L‖.
    err = float((summed - want).norm())
    scale = float(want.norm()) + c * float(g.norm())
    if err > _rtol(g.dtype) * scale + 1e-30:
        _raise(loss_fn, "for the parameters", err, float(want.norm()) + 1e-30, c, n)
    return True


def warn_nonfinite(inputs: Any, g: Tensor, offset: int = 0) -> None:
    """Warn, naming the samples, where a sample's input or gradient row is not finite."""
    floats = [t for t in torch.utils._pytree.tree_leaves(inputs)
              if isinstance(t, Tensor) and t.is_floating_point() and t.shape[:1] == g.shape[:1]]
    # One reduction per tensor in the common case (all finite): a NaN or infinity survives a sum.
    if all(bool(torch.isfinite(t.detach().sum())) for t in [g, *floats]):
        return
    bad_in = torch.zeros(g.shape[0], dtype=torch.bool)
    for t in floats:
        bad_in |= ~torch.isfinite(t.detach().reshape(t.shape[0], -1)).all(1).cpu()
    bad_row = ~torch.isfinite(g.sum(1)).cpu()  # NaN and infinities survive the sum
    if not (bad_in.any() or bad_row.any()):
        return
    def names(mask):
        idx = (torch.nonzero(mask).flatten() + offset).tolist()
        return f"{idx[:20]}{' ...' if len(idx) > 20 else ''}"
    parts = ([f"samples {names(bad_in)} have a NaN or infinite input"] if bad_in.any() else []) \
        + ([f"the gradient rows of samples {names(bad_row)} are not finite (NaN or infinite "
            "loss?)"] if bad_row.any() else [])
    warn_user(f"per_sample_grads: {'; '.join(parts)}. Statistics of G (means, norms, the noise "
              "scale) are NaN or dominated by these rows; drop or fix these samples.")
