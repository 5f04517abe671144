"""What calls of :func:`~gradkit.grads.per_sample_grads` learn about a model, kept for later calls.

Per model (weakly: the model can be freed) and call signature (:func:`_signature`): the
reference sample's call shapes, the modules rejected and why, a failed vmap, interacting
samples, a passed consistency check and loss-coupling check. A later call with the same
signature skips the reference pass and the probes; :func:`forget` starts over.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gradkit.grads.reference import Reference

__all__ = ["Learned", "forget", "recall"]


@dataclass
class Learned:
    """What calls learned about one model and call signature (:func:`_signature`), so that
    later calls skip the probes: the reference calls of a sample
    (its gradient and values dropped once used), the modules rejected and why, whether vmap
    failed, why the samples of a batch interact (if they do) and whether the consistency check
    passed."""

    ref: Reference | None = None
    rejected: dict[str, str] = field(default_factory=dict)
    coupled: str | None = None
    vmap_failed: bool = False
    checked: bool = False
    summed: bool = False  # the loss-coupling check passed (gradkit.grads.coupling)


_LEARNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {signature: Learned}
_SIGNATURES_KEPT = 8


def _leaf_signature(t: Any) -> tuple:
    if not isinstance(t, Tensor):
        return type(t).__name__, repr(t)[:80]
    if t.is_floating_point() or t.is_complex():
        return tuple(t.shape[1:]), t.dtype, t.device
    # Integer and bool inputs (lengths, masks, token ids) can steer the structure by their
    # values (a batch cropped to its longest sample): a new pattern is probed again.
    return tuple(t.shape), t.dtype, t.device, hash(t.detach().cpu().numpy().tobytes())


def _signature(model: nn.Module, inputs: Any) -> tuple:
    """What the layers pass's structure depends on: the inputs' tree, each float tensor's
    per-sample shape, dtype and device, integer and bool tensors by value (other leaves by
    repr), the modules and their training flags, the parameters and which are trainable. (The
    number of samples of a float input is left out: a chunk of any size behaves alike.)"""
    leaves, spec = torch.utils._pytree.tree_flatten(inputs)
    sig = tuple(_leaf_signature(t) for t in leaves)
    return (str(spec), sig, tuple((id(m), m.training) for m in model.modules()),
            tuple((id(p), p.requires_grad) for p in model.parameters()))


def recall(model: nn.Module, inputs: Any) -> Learned:
    """What was learned for ``model`` called on inputs like ``inputs`` (a fresh record if new;
    at most ``_SIGNATURES_KEPT`` signatures per model, the oldest dropped)."""
    known = _LEARNED.setdefault(model, {})
    key = _signature(model, inputs)
    if key not in known:
        if len(known) >= _SIGNATURES_KEPT:
            known.pop(next(iter(known)))
        known[key] = Learned()
    return known[key]


def forget(model: nn.Module) -> None:
    """Drop what earlier calls learned about ``model`` (the next call probes and checks again)."""
    _LEARNED.pop(model, None)
