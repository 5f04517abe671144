"""Exact per-sample gradient norms and Gram matrices, and gradient sketches, without ``[N, P]``.

Every statistic of notebooks 02 and 03 is a function of the per-sample Gram matrix
``K[i, j] = <g_i, g_j>`` (``N x N``) and the batch gradient (:mod:`gradkit.grads.gramstats`).
:func:`gradient_gram`, :func:`per_sample_norms` and :func:`gradient_sketch` compute ``K``,
``||g_i||`` and ``[N, k]`` sketches from one ``"layers"`` pass
(:func:`~gradkit.grads.layerpass.layers_pass` with a :class:`~gradkit.grads.gramsink.GramSink`):
each layer is reduced as the backward reaches it, by its ghost form or by materialising *that
layer's* gradients within a memory budget (the cost model: :mod:`gradkit.grads.gramsink`).

The guarantees are :func:`~gradkit.grads.per_sample_grads`'s, on the same checks: the reference
pass and the layout checks of :mod:`~gradkit.grads.layerpass`, what earlier calls learned
(:mod:`~gradkit.grads.learned`, shared with ``per_sample_grads``), and, with ``check=True``, the
consistency check (the probed sample's gradient row, one ``P``-vector, against plain autograd).
Parameters the pass cannot take (no rule, a rejected call, a tied weight) are computed exactly
by ``per_sample_grads`` for *those parameters only* (``N x P_rest``, chunked), with a warning
naming the modules; samples that interact in the batch send every parameter there.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from gradkit.core.params import trainable_named_parameters
from gradkit.grads.databatches import Batches, concat, is_batches
from gradkit.grads.engine import per_sample_grads
from gradkit.grads.gramsink import GramSink, budget_bytes, reduce_rows
from gradkit.grads.layerpass import layers_pass
from gradkit.grads.layerplan import LayerPlan
from gradkit.grads.learned import recall
from gradkit.grads.reference import inconsistent, reference_pass, reference_rejections
from gradkit.grads.samples import LossFn, check_inputs, take
from gradkit.grads.sketch import param_seed

__all__ = ["gradient_gram", "gradient_sketch", "per_sample_norms"]

_WARNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> messages given


def _warn(model: nn.Module, messages: list[str]) -> None:
    """Each message once per model, at the caller of the public function (stacklevel 3)."""
    seen = _WARNED.setdefault(model, set())
    for msg in dict.fromkeys(messages):
        if msg not in seen:
            seen.add(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _materialised(model, loss_fn, x, y, names: list[str], check: bool,
                  said: list[str]) -> dict[str, Tensor]:
    """``{name: [n, *shape]}`` for ``names`` only, by :func:`per_sample_grads` with every other
    parameter frozen for the call (its warnings passed on in ``said``)."""
    named = trainable_named_parameters(model)
    others = [p for k, p in named if k not in names]
    try:
        for p in others:
            p.requires_grad_(False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            G = per_sample_grads(model, loss_fn, x, y, check=check)
    finally:
        for p in others:
            p.requires_grad_(True)
    said.extend(str(w.message) for w in caught)
    shapes = [(k, p.shape) for k, p in named if k in names]
    parts = G.split([s.numel() for _, s in shapes], dim=1)
    return {k: g.reshape(G.shape[0], *shape) for (k, shape), g in zip(shapes, parts, strict=True)}


def _consistency(named, ref, errors: dict[int, tuple[float, float]]) -> None:
    """The probed sample's gradient (from the pass) against the plain autograd one, per tensor:
    ``errors[id] = (||row - want||, ||want||)`` (``GramSink.errors``)."""
    checked = [(k, p) for k, p in named if id(p) in errors]
    if not checked:
        return
    bad = inconsistent([(name, *errors[id(p)]) for name, p in checked])
    if bad:
        raise RuntimeError(
            "gradient statistics: consistency check failed: the gradient of the probed sample "
            f"differs from the gradient of its loss taken alone (plain autograd) for "
            f"{', '.join(bad)}. A layer rule's assumption does not hold for this model; "
            "per_sample_grads(..., method='loop') is exact. check=False skips this check.")


def _reasons(d: dict[str, str]) -> str:
    return "; ".join(f"{name!r}: {why}" for name, why in d.items())


def _per_parameter(model, loss_fn, x, y, n: int, mode: str, budget: int, check: bool,
                   k: int | None, seed: int, said: list[str]) -> dict[str, Tensor]:
    """One batch -> ``{parameter name: its contribution}`` (``[n, n]``, ``[n]`` or ``[n, k]``)."""
    named = trainable_named_parameters(model)
    index = {id(p): i for i, (_, p) in enumerate(named)}
    plan, learned = LayerPlan.of(model), recall(model, x)
    plan.exclude(dict(learned.rejected))
    ref = learned.ref if learned.ref is not None and (learned.checked or not check) else None
    checking, out, errors, why = False, {}, {}, learned.coupled
    if not why and plan.covered:
        if ref is None:
            checking = check
            ref = reference_pass(model, loss_fn, x, y, plan, check)
            rejected = reference_rejections(ref, plan)
            plan.exclude(rejected)
            learned.rejected.update(rejected)
        sink = GramSink(plan, ref, n, mode, budget, index, k, seed, probe=ref.index,
                        want=ref.grads if checking else None)
        keep, rejected, why = layers_pass(model, loss_fn, x, y, plan, ref, sink=sink,
                                          loss_check=check)
        if why:
            learned.coupled = why
            said.append(f"gradient statistics: {why}; per-sample gradients are defined for each "
                        "sample alone, so every parameter's are computed by per_sample_grads "
                        "(exact)")
        else:
            plan.exclude(rejected)
            learned.rejected.update(rejected)
            sink.finish()
            unsupported = {**plan.unsupported, **sink.bad}
            bad = {m for m, name in plan.owners.items() if name in sink.bad}
            for pid in keep:
                if pid in sink.out and not any(m in bad for m in plan.owners_of[pid]):
                    out[pid] = sink.out[pid]
                    if pid in sink.errors:
                        errors[pid] = sink.errors[pid]
                elif keep[pid] is not None:  # taken by the pass itself (a free parameter)
                    out[pid] = reduce_rows(keep[pid], mode, k, param_seed(seed, index[pid]))
                elif pid not in sink.out and not any(m in bad for m in plan.owners_of[pid]):
                    out[pid] = _zeros(plan.params[pid], n, mode, k)  # no gradient reached it
                    if checking and ref.grads is not None:
                        size = float(ref.grads[pid].norm())
                        errors[pid] = (size, size)
            rest = [name for name, p in named if id(p) not in out]
            if rest and unsupported:
                said.append(f"gradient statistics: the 'layers' rules do not hold for "
                            f"{_reasons(unsupported)}; their parameters ({', '.join(rest)}) are "
                            "materialised exactly by per_sample_grads (vmap, else the loop)")
            if checking:
                _consistency(named, ref, errors)
            if ref is not learned.ref:
                ref.grads, ref.losses, ref.output = None, None, None
                learned.ref, learned.checked = ref, checking
    rest = [name for name, p in named if id(p) not in out]
    if rest:
        for name, g in _materialised(model, loss_fn, x, y, rest, check, said).items():
            p = model.get_parameter(name)
            out[id(p)] = reduce_rows(g, mode, k, param_seed(seed, index[id(p)]))
    return {name: out[id(p)] for name, p in named}


def _zeros(p: Tensor, n: int, mode: str, k: int | None) -> Tensor:
    shape = {"gram": (n, n), "norms": (n,), "sketch": (n, k or 1)}[mode]
    return p.new_zeros(shape)


def _chunks(n: int, chunk_size: int | None) -> list[slice]:
    if chunk_size is None:
        return [slice(0, n)]
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return [slice(i, min(n, i + int(chunk_size))) for i in range(0, n, int(chunk_size))]


def gradient_gram(model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Any = None, *,
                  by_layer: bool = False, budget: int | None = None,
                  check: bool = True) -> Tensor | dict[str, Tensor]:
    """The per-sample gradient Gram matrix ``K[i, j] = <g_i, g_j>`` -> ``Tensor[N, N]`` (float64).

    Exactly ``G Gᵀ`` of :func:`~gradkit.grads.per_sample_grads` (same model, loss and arguments
    conventions), without ``G``: each layer is reduced as the backward reaches it (module
    docstring). ``budget`` (bytes, default 256 MiB) bounds what one layer may materialise. The
    whole batch runs in one pass (``K`` couples every pair of samples): memory is that of a
    plain backward of the batch plus the budget. ``by_layer=True`` returns ``{parameter name:
    its [N, N] block}`` (trainable parameters in ``named_parameters()`` order), which sum to
    ``K``.

    A whole data set: pass an iterable of ``(inputs, targets)`` batches (a ``DataLoader`` with
    ``shuffle=False``) as ``inputs`` and omit ``targets``. ``K`` is then assembled from blocks
    ``K[I, J] = <G_I, G_J>`` of batches ``I`` and ``J``, each pair of batches taken exactly by one
    pass over the two joined: with ``C`` batches, ``C (C - 1) / 2`` passes of two batches (one
    pass if ``C = 1``) and ``C + 1`` readings of the iterable, which must give the same batches
    each time (checked); memory is a backward of two batches plus ``K``, never all the inputs.

    >>> import torch, torch.nn.functional as F
    >>> model = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    >>> K = gradient_gram(model, F.cross_entropy, x, y)
    >>> K.shape, bool(torch.allclose(K, K.T))
    (torch.Size([4, 4]), True)
    >>> loader = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=3)
    >>> bool(torch.allclose(gradient_gram(model, F.cross_entropy, loader), K))
    True
    """
    said: list[str] = []
    if is_batches(inputs, targets):
        parts = _gram_of_batches(model, loss_fn, Batches(inputs, again=True),
                                 budget_bytes(budget), check, said)
    else:
        n = check_inputs(model, inputs, targets)
        parts = _per_parameter(model, loss_fn, inputs, targets, n, "gram", budget_bytes(budget),
                               check, None, 0, said)
    _warn(model, said)
    parts = {name: K.double() for name, K in parts.items()}
    return parts if by_layer else sum(parts.values())


def _gram_of_batches(model, loss_fn, batches: Batches, budget: int, check: bool,
                     said: list[str]) -> dict[str, Tensor]:
    """``{parameter name: [N, N]}`` from the pairs of batches (:func:`gradient_gram`)."""
    for _ in batches:  # the first reading: every batch's size, checked
        pass
    sizes, C = batches.sizes, len(batches.sizes)
    starts = [sum(sizes[:i]) for i in range(C)]
    out: dict[str, Tensor] = {}

    def put(name, block, i, j, rows, cols):
        K = out.setdefault(name, block.new_zeros(batches.n, batches.n, dtype=torch.float64))
        K[starts[i]:starts[i] + sizes[i], starts[j]:starts[j] + sizes[j]] = block[rows, cols]

    for i in range(max(C - 1, 1)):
        held = None
        for j, (x, y) in enumerate(batches):
            if j == i:
                held = (x, y)
                if C > 1:
                    continue
            elif j < i:
                continue
            xs, ys = (x, y) if C == 1 else (concat(held[0], x), concat(held[1], y))
            n = check_inputs(model, xs, ys)
            a = slice(0, sizes[i])
            b = a if C == 1 else slice(sizes[i], n)
            for name, K in _per_parameter(model, loss_fn, xs, ys, n, "gram", budget, check,
                                          None, 0, said).items():
                K = K.double()
                put(name, K, i, j, a, b)
                put(name, K, j, i, b, a)
                if j == i + 1:  # each diagonal block once: batch i's from its first pair
                    put(name, K, i, i, a, a)
                if j == C - 1 and i == C - 2:
                    put(name, K, j, j, b, b)
    return out


def _each_chunk(model, inputs, targets, chunk_size):
    """``(inputs, targets, n)`` of each chunk: of one batch, or of every batch of an iterable
    (``targets`` omitted), each batch cut into chunks of at most ``chunk_size`` samples."""
    pairs = Batches(inputs) if is_batches(inputs, targets) else [(inputs, targets)]
    for x, y in pairs:
        n = check_inputs(model, x, y)
        for sl in _chunks(n, chunk_size):
            yield take(x, sl), take(y, sl), sl.stop - sl.start


def per_sample_norms(model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Any = None,
                     chunk_size: int | None = None, *, budget: int | None = None,
                     check: bool = True) -> Tensor:
    """``||g_i||``, the norm of each sample's gradient -> ``Tensor[N]`` (float64), without ``G``.

    The diagonal of :func:`gradient_gram`, by the cheaper diagonal forms (a Linear layer's
    ``||g_i||² = <A_i A_iᵀ, B_i B_iᵀ>``, ``O(N T²)``); samples are independent here, so
    ``chunk_size`` (default: the whole batch) bounds the activations held at once. A whole data
    set: an iterable of ``(inputs, targets)`` batches (a ``DataLoader``, read once) as
    ``inputs``, ``targets`` omitted; the norms of all its samples in order.

    >>> import torch, torch.nn.functional as F
    >>> model = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    >>> per_sample_norms(model, F.cross_entropy, x, y).shape
    torch.Size([4])
    >>> loader = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=3)
    >>> per_sample_norms(model, F.cross_entropy, loader).shape
    torch.Size([4])
    """
    said: list[str] = []
    got = []
    for xs, ys, n in _each_chunk(model, inputs, targets, chunk_size):
        parts = _per_parameter(model, loss_fn, xs, ys, n, "norms", budget_bytes(budget), check,
                               None, 0, said)
        got.append(sum(v.double() for v in parts.values()))
    _warn(model, said)
    return torch.cat(got).clamp_min(0).sqrt()


def gradient_sketch(model: nn.Module, loss_fn: LossFn, inputs: Any, targets: Any = None,
                    k: int = 256, seed: int = 0, *, chunk_size: int | None = None,
                    budget: int | None = None, check: bool = True) -> Tensor:
    """A seeded random projection of every sample's gradient -> ``Tensor[N, k]``, without ``G``.

    Per parameter tensor an independent projection: a matrix-shaped weight (``d_out`` rows)
    by the Kronecker-structured ``R_out ⊗ R_in`` (:func:`~gradkit.grads.sketch.kron_factors`;
    for a Linear layer ``(B_i R_outᵀ)ᵀ (A_i R_inᵀ)`` from its input and output gradient, never
    ``g_i``; LoGra, Choe et al. 2024), a vector by :func:`~gradkit.grads.sketch.sketch`; the
    sketch is their sum. Independent zero-mean projections with ``E[RᵀR] = I`` keep inner
    products in expectation: ``E[s_i · s_j] = <g_i, g_j>``, with a spread that shrinks as
    ``1/√k``. Seeded: the same ``(seed, k)`` gives the same sketch for any ``chunk_size``, and
    for an iterable of batches (``targets`` omitted, as :func:`per_sample_norms`).

    >>> import torch, torch.nn.functional as F
    >>> model = torch.nn.Linear(3, 2)
    >>> x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    >>> gradient_sketch(model, F.cross_entropy, x, y, k=16, seed=0).shape
    torch.Size([4, 16])
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"sketch dimension k must be a positive integer, got {k!r}")
    said: list[str] = []
    got = []
    for xs, ys, n in _each_chunk(model, inputs, targets, chunk_size):
        parts = _per_parameter(model, loss_fn, xs, ys, n, "sketch", budget_bytes(budget), check,
                               k, seed, said)
        got.append(sum(parts.values()))
    _warn(model, said)
    return torch.cat(got)
