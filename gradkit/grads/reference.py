"""The reference pass of the ``"layers"`` method: one sample alone, what the pass checks against.

:func:`reference_pass` runs one sample (:func:`probe_index`) through the model with every hooked
module's calls recorded (the shapes that tell :mod:`~gradkit.grads.layerpass` where the samples
are), its loss and output (for :func:`batch_coupling`: do the samples of a batch interact?) and,
for the consistency check, the plain autograd gradient of its loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from gradkit.grads.rules import any_sample_dim, replay_for
from gradkit.grads.samples import per_sample_losses, take

if TYPE_CHECKING:
    from gradkit.grads.layerplan import LayerPlan

__all__ = ["NEVER_CALLED", "Reference", "batch_coupling", "call_form", "call_shapes",
           "check_consistency", "first_tensor", "probe_index", "reference_pass",
           "reference_rejections"]

# The consistency check's tolerance (check_consistency): relative per parameter tensor, and a
# floor relative to the whole gradient for tensors whose gradient is nearly zero.
_CHECK_RTOL, _CHECK_FLOOR = 5e-2, 1e-2

NEVER_CALLED = ("never called (its parameters are used functionally by another module, e.g. "
                "nn.MultiheadAttention's out_proj)")  # why a hooked module is rejected


def first_tensor(tree: Any) -> Tensor | None:
    """The first tensor of a call's arguments or result (a nested tuple / dict), or None."""
    first = tree
    while isinstance(first, tuple | list) and first:  # the first leaf, without flattening all
        first = first[0]
    if isinstance(first, Tensor):
        return first
    leaves = torch.utils._pytree.tree_leaves(tree)
    return next((t for t in leaves if isinstance(t, Tensor)), None)


def call_form(m: nn.Module, args: tuple, kwargs: dict, output: Any) -> str | None:
    """Why a call of ``m`` is not of the form its rule needs (None: it is): one positional tensor
    in, a tensor out; a replay rule checks its call itself and needs only a tensor each way."""
    if replay_for(m) is not None:
        if first_tensor((args, kwargs)) is None or first_tensor(output) is None:
            return "called without a tensor input or output"
        return None
    if kwargs or len(args) != 1 or not isinstance(args[0], Tensor):
        return "called with other than one positional tensor (keyword or extra arguments)"
    if not isinstance(output, Tensor):
        return f"returned a {type(output).__name__}, not a tensor"
    return None


def call_shapes(args: tuple, kwargs: dict, output: Any) -> tuple[torch.Size, torch.Size]:
    """(input, output) shapes of a call: its first tensor argument and first tensor result."""
    return first_tensor((args, kwargs)).shape, first_tensor(output).shape


@dataclass
class Reference:
    """The reference pass: ``k`` samples (one), each hooked module's call shapes
    ``calls[module] = [(input shape, output shape) or reason]``, when taken the autograd gradient
    of their summed loss by parameter id (``grads``), and their losses and outputs alone
    (``losses``, ``output``; for :func:`batch_coupling`)."""

    k: int
    calls: dict[nn.Module, list]
    grads: dict[int, Tensor] | None
    losses: Tensor | None = None
    output: Any = None
    index: int = 0  # which sample of the chunk ran alone (:func:`probe_index`)


def reference_pass(model, loss_fn, inputs, targets, plan: LayerPlan, with_grad: bool) -> Reference:
    """Run one sample alone (``k = 1``, sample ``r`` of :func:`probe_index`) through the model,
    recording each hooked call's shapes, its loss and output; with ``with_grad`` also the plain
    autograd gradient of its loss ``l_r`` (the consistency check's reference: the definition of
    ``G[r]``, one sample alone, so that coupling between the samples of a batch shows too)."""
    calls: dict[nn.Module, list] = {m: [] for m in plan.owners}

    def hook(m, args, kwargs, output):
        calls[m].append(call_form(m, args, kwargs, output) or call_shapes(args, kwargs, output))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in plan.owners]
    i = probe_index(inputs)
    x, y = take(inputs, slice(i, i + 1)), take(targets, slice(i, i + 1))
    try:  # with autograd on even without the check: some modules take another path without
        out = model(x)  # (the TransformerEncoderLayer fast path skips its submodules)
    finally:
        for h in handles:
            h.remove()
    grads, losses = None, per_sample_losses(loss_fn, out, y)
    if with_grad:
        params = {id(p): p for p in model.parameters() if p.requires_grad}
        g = torch.autograd.grad(losses.sum(), list(params.values()), allow_unused=True)
        grads = {pid: (gi if gi is not None else torch.zeros_like(p)).detach().reshape(-1)
                 for (pid, p), gi in zip(params.items(), g, strict=True)}
    detach = torch.utils._pytree.tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t, out)
    return Reference(1, calls, grads, losses.detach(), detach, i)


_INTEGER = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def probe_index(inputs: Any) -> int:
    """The sample the reference pass runs alone: where the inputs hold a 1-D integer tensor (a
    length per sample), the sample of the smallest value (the most padded sample of a padded
    batch, where interacting samples show); else the first."""
    for t in torch.utils._pytree.tree_leaves(inputs):
        if isinstance(t, Tensor) and t.dim() == 1 and t.dtype in _INTEGER:
            return int(t.argmin())
    return 0


def batch_coupling(ref: Reference, losses: Tensor, outputs: Any) -> str | None:
    """Why the probed sample's loss or output in the batch is not its value alone (None: equal).

    Per-sample gradients are those of each sample *alone* (the loop's definition); a batched
    pass computes them only when the samples of a batch do not interact. They do when a model
    pads a batch to its longest sample and a layer sees the padding (torchaudio's Conformer:
    its depthwise convolution runs over the padded frames). Rounding differs between a batch
    and one sample by ~1e-7 relative in float32 (on the benchmark's models); the bar
    is 1000 ulps. One sample is probed (:func:`probe_index`: the shortest where the inputs give
    lengths), so a coupling that spares it is not seen; the consistency check tests the same
    sample.
    """
    if ref.losses is None:
        return None
    rows = slice(ref.index, ref.index + ref.k)
    pairs = [(ref.losses, losses[rows])]
    got = torch.utils._pytree.tree_leaves(take(outputs, rows))
    want = torch.utils._pytree.tree_leaves(ref.output)
    if len(got) == len(want):
        pairs += [(w, g) for w, g in zip(want, got, strict=True) if isinstance(w, Tensor)
                  and isinstance(g, Tensor) and w.shape == g.shape and w.is_floating_point()]
    for want, got in pairs:
        tol = 1e3 * torch.finfo(want.dtype).eps
        err, size = float((got.detach() - want).norm()), float(want.norm())
        if err > tol * size + 1e-30:
            return (f"sample {ref.index}'s {'loss' if want is ref.losses else 'output'} differs by "
                    f"{err / max(size, 1e-30):.1g} (relative) between the batch and that sample "
                    "alone: the samples of a batch interact (a batch padded to its longest "
                    "sample, with layers that see the padding?)")
    return None


def reference_rejections(ref: Reference, plan: LayerPlan) -> dict[str, str]:
    """Modules the reference pass already disqualifies (before any batch pass): not called,
    called otherwise than their rule expects, or without a dim of size 1 for the one sample
    (on dim 0 where the rule needs it there)."""
    out = {}
    for m, name in plan.owners.items():
        calls = ref.calls[m]
        bad = next((c for c in calls if isinstance(c, str)), None)
        anywhere = any_sample_dim(m) or replay_for(m) is not None
        if not calls:
            out[name] = NEVER_CALLED
        elif bad:
            out[name] = bad
        elif any((ref.k not in a or ref.k not in o) if anywhere else (a[0] != ref.k or o[0] !=
                 ref.k) for a, o in calls):
            a, o = next((a, o) for a, o in calls if (a[0] != ref.k or o[0] != ref.k))
            out[name] = (f"dim 0 is not the sample dimension: for one sample its input is "
                         f"{tuple(a)}, its output {tuple(o)} (time-major or flattened samples?)")
    return out


def inconsistent(errors: list[tuple[str, float, float]]) -> list[str]:
    """The parameters that fail the consistency check, each with its relative error, from
    ``(name, ||row - want||, ||want||)`` per parameter tensor: the probed sample's gradient
    row against the plain autograd gradient of its loss alone. The one tolerance of every
    path (per_sample_grads and the Gram path)."""
    # The batched pass and a one-sample backward round differently in float32; through a deep
    # frozen trunk the input-side gradients (an input prompt) differed by up to ~1 % (vmap
    # agreed with the batched pass). A broken rule is off by O(1): 5 % separates the two.
    floor = _CHECK_FLOOR * sum(size * size for _, _, size in errors) ** 0.5
    return [f"{name} (relative error {err / max(size, 1e-30):.2g})"
            for name, err, size in errors if err > _CHECK_RTOL * max(size, floor) + 1e-30]


def check_consistency(ref: Reference | None, named: list[tuple[str, Tensor]], g: Tensor) -> None:
    """``G[r]`` of the probed sample ``r`` (:func:`probe_index`) against the autograd gradient of
    its loss ``l_r`` alone (``ref.grads``; nothing to do without them); a ``RuntimeError``
    names the parameters that differ by more than 5 %."""
    if ref is None or ref.grads is None:
        return
    sums = g[ref.index : ref.index + ref.k].sum(0).split([p.numel() for _, p in named])
    want = [ref.grads[id(p)].to(s.dtype) for (_, p), s in zip(named, sums, strict=True)]
    bad = inconsistent([(name, float((s - r).norm()), float(r.norm()))
                        for (name, _), s, r in zip(named, sums, want, strict=True)])
    if bad:
        raise RuntimeError(
            f"per_sample_grads: consistency check failed: the per-sample gradient of the first "
            "sample differs from the gradient of its loss taken alone (plain autograd) for "
            f"{', '.join(bad)}. A layer rule's assumption does not hold for this model; "
            "method='loop' (or 'vmap') is exact. check=False skips this check.")
