"""What the ``"layers"`` pass hands each layer's input and output gradient to for Gram matrices,
norms and sketches: :class:`GramSink` reduces every layer to its ``[N, N]`` / ``[N]`` / ``[N, k]``
contribution as the backward reaches it, so ``[N, P]`` never exists.

Per layer (the cost model, within a memory budget of ``budget`` bytes):

- a layer whose weight gradient is a product of factors (its file in :mod:`gradkit.grads.rules`
  registers a :class:`~gradkit.grads.rules.Factored` form: ``Linear``, and convolutions on
  unfolded patches, 1-D / 2-D only): the ghost form or that layer's materialised per-sample
  gradient ("mixed ghost", Bu et al. 2022), whichever
  :func:`~gradkit.grads.rules.linear.ghost_cheaper` says costs fewer flops; materialising
  needs ``N x P_layer`` numbers, and is done in blocks of samples when that exceeds the
  budget (a Gram block ``(I, J)`` from the two blocks' rows).
- every other rule (normalisation layers: ``N x C``) and every replay (GroupNorm, LSTM,
  attention): the engine's materialised rule, reduced as soon as it is stored; so is a small
  convolution's weight that the cost model materialises in one block
  (:meth:`GramSink.materialises`): it comes with the input gradient in one step, as in
  ``per_sample_grads``.
- a module called more than once per forward, or a parameter shared between modules: its
  per-sample gradients are summed over the calls first (the Gram of a sum is not the sum of
  Grams), and reduced when the backward has ended (:meth:`GramSink.finish`).

A replay that stores one parameter in parts (cross-attention's packed projections) cannot be
reduced part by part: its module is reported in :attr:`GramSink.bad` and its parameters go to
the exact fallback. With ``probe`` (a sample) and ``want`` (its gradient by plain autograd, per
parameter id) the sink compares that sample's gradient row, one parameter at a time as it
arrives, for the engine's consistency check (:attr:`GramSink.errors`; nothing of it is kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gradkit.grads.layerplan import LayerPlan
from gradkit.grads.reference import Reference
from gradkit.grads.rules import Factored, factored_for, rule_for
from gradkit.grads.rules.linear import (
    affine_factored,
    ghost_cheaper,
    ghost_gram,
    ghost_norms,
    kron_project,
    linear_bias,
    matrix_view,
)
from gradkit.grads.sketch import kron_factors, param_seed, sketch

__all__ = ["MODES", "GramSink", "budget_bytes", "gram64", "reduce_rows"]

MODES = ("gram", "norms", "sketch")
# Columns converted to float64 at a time by gram64 (its only temporary).
_F64_BYTES = 16 * 2**20


def gram64(flat: Tensor, other: Tensor | None = None, diag: bool = False) -> Tensor:
    """``flat otherᵀ`` (``other`` default ``flat``; ``diag``: only ``||flat_i||²``) accumulated in
    float64, converting ``_F64_BYTES`` of columns at a time: the products of float32 numbers are
    exact in float64, so the statistics (differences of large sums: ``tr Σ``, ``||g_D||²``)
    keep the digits of the materialised path."""
    other = flat if other is None else other
    n, m, p = flat.shape[0], other.shape[0], flat.shape[1]
    step = max(1, _F64_BYTES // (8 * max(n, m)))
    if diag and p == 0:
        return flat.new_zeros(n, dtype=torch.float64)
    if diag:  # the norms in float64 (the input cast first), one kernel per block of columns
        norms = [torch.linalg.vector_norm(flat[:, s : s + step], dim=1, dtype=torch.float64)
                 for s in range(0, p, step)]
        return norms[0].square() if len(norms) == 1 else torch.stack(norms).square().sum(0)
    out = flat.new_zeros((n, m), dtype=torch.float64)
    for s in range(0, p, step):
        a = flat[:, s : s + step].double()
        out += a @ (a if other is flat else other[:, s : s + step].double()).T
    return out

def reduce_rows(g: Tensor, mode: str, k: int | None = None, seed: int = 0) -> Tensor:
    """One parameter's materialised per-sample gradients ``[n, *shape]`` -> its contribution:
    ``g gᵀ`` (``"gram"``), ``||g_i||²`` (``"norms"``) or its sketch (``"sketch"``: Kronecker
    ``R_out g_i R_inᵀ`` for a matrix-shaped parameter, a dense :func:`sketch` for a vector)."""
    if mode in ("gram", "norms"):
        return gram64(g.reshape(g.shape[0], -1), diag=mode == "norms")
    if g.dim() >= 3:
        mat = matrix_view(g)
        r_out, r_in = kron_factors(seed, mat.shape[1], mat.shape[2], k, g.dtype, g.device)
        return (r_out @ mat @ r_in.T).flatten(1)
    return sketch(g.reshape(g.shape[0], -1), k, seed)


class GramSink:
    """Receives one ``"layers"`` pass (``layers_pass(..., sink=...)``) and keeps, per parameter
    id, its contribution (:attr:`out`; ``mode`` one of :data:`MODES`) and, with ``probe`` and
    ``want``, ``(||row - want||, ||want||)`` of the probe sample's gradient (:attr:`errors`)."""

    def __init__(self, plan: LayerPlan, ref: Reference, n: int, mode: str, budget: int,
                 index: dict[int, int], k: int | None = None, seed: int = 0,
                 probe: int | None = None, want: dict[int, Tensor] | None = None):
        self.plan, self.n, self.mode, self.budget, self.k = plan, n, mode, int(budget), k
        self.seeds = {pid: param_seed(seed, i) for pid, i in index.items()}
        self.single = {m for m in plan.owners if len(ref.calls.get(m, ())) == 1 and all(
            len(plan.owners_of[id(h._parameters[nm])]) == 1 for h, nm in plan.slots[m])}
        self.probe = probe if want is not None else None
        self.want = want
        self.out: dict[int, Tensor] = {}
        self.errors: dict[int, tuple[float, float]] = {}
        self.bad: dict[str, str] = {}
        self.held: dict[int, Tensor] = {}  # summed over calls, reduced by finish()
        self.parts: set[int] = set()  # parameters added up from disjoint blocks (linear())
        self.pieces: dict[int, Tensor] = {}  # the probe's gradient of those, assembled

    # -- what the pass calls -----------------------------------------------------------------
    def store(self, module: nn.Module, per_sample: dict[str, Tensor]) -> None:
        """Per-sample gradients ``{name: [n, *shape]}`` a rule or replay computed for ``module``."""
        for name, g in per_sample.items():
            pid = id(module.get_parameter(name))
            g = g.reshape(self.n, *module.get_parameter(name).shape)
            if module not in self.single:
                self.held[pid] = self.held[pid] + g if pid in self.held else g
            elif pid in self.out or pid in self.parts:
                self.bad.setdefault(self.plan.owners[module], (
                    f"its rule stores {name!r} in parts, which a Gram matrix cannot add up"))
            else:
                self._reduced(pid, g)

    def layer(self, module: nn.Module, a: Tensor, d: Tensor) -> None:
        """A hooked layer's input ``a`` and output gradient ``d`` (samples on dim 0): reduced by
        its factored form where its file registers one (:func:`~gradkit.grads.rules.
        factored_for`), else by its materialised rule."""
        rule, factored = rule_for(module)[0], factored_for(module)
        w = getattr(module, "weight", None)
        if (module not in self.single or factored is None
                or not (isinstance(w, Tensor) and w.requires_grad)):
            self.store(module, rule(module, a, d))
            return
        f = factored(module, a, d)
        self.store(module, f.rest())
        pid = id(w)
        rows = lambda sl: rule(module, a[sl], d[sl])["weight"]  # noqa: E731
        self._probe(pid, rows)
        self.out[pid] = self._weight(f, self.seeds[pid], slice(0, w.shape[0]), w.shape[0], rows,
                                     w.numel() * a.element_size())

    def linear(self, module: nn.Module, names: dict, wants: Callable[[str], bool], x: Tensor,
               d: Tensor) -> bool:
        """A replay's affine map ``x Wᵀ + b`` inside ``module`` (attention's projections), as
        factors (:func:`~gradkit.grads.rules.linear.affine_factored`) instead of
        ``[n, out, in]``: ``names`` maps ``"weight"``/``"bias"`` to the parameter's name and its
        rows ``(start, total)`` in a packed parameter (None: all of it). Disjoint row blocks of
        one parameter add up (their cross terms are zero). False (declined: the replay
        materialises) for a module called more than once."""
        if module not in self.single:
            return False
        f = affine_factored(x, d)
        A, B = f.kron
        for kind, (name, place) in names.items():
            if not wants(name):
                continue
            p = module.get_parameter(name)
            pid, start = id(p), 0 if place is None else place[0]
            rows = slice(start, start + f.d_out)
            if kind == "bias":
                g = B.new_zeros(A.shape[0], p.shape[0])
                g[:, rows] = linear_bias(B)
                self._part(pid, p, rows, reduce_rows(g, self.mode, self.k, self.seeds[pid]),
                           g[self.probe, rows] if self.probe is not None else None)
                continue
            value = self._weight(f, self.seeds[pid], rows, p.shape[0],
                                 lambda sl: torch.bmm(B[sl].transpose(1, 2), A[sl]),
                                 f.d_in * f.d_out * A.element_size())
            piece = None if self.probe is None else B[self.probe].T @ A[self.probe]
            self._part(pid, p, rows, value, piece)
        return True

    def _weight(self, f: Factored, seed: int, rows: slice, d_total: int,
                exact: Callable[[slice], Tensor], p_bytes: int) -> Tensor:
        """A weight's contribution from its factored form ``f`` by :meth:`_form`: the Kronecker
        sketch (``rows`` of the weight's ``d_total`` rows: a block of a packed weight), the
        ghost form, or ``exact(samples)``, its per-sample gradients, in blocks."""
        form = self._form(f, p_bytes)
        if form == "kron":
            A = f.kron[0]
            r_out, r_in = kron_factors(seed, d_total, f.d_in, self.k, A.dtype, A.device)
            return kron_project(*f.kron, r_out[:, rows], r_in)
        if form == "ghost":
            ghost = ghost_gram if self.mode == "gram" else ghost_norms
            return sum(ghost(A_c, B_c, self.budget) for A_c, B_c in f.pairs())
        return self._materialised(exact, p_bytes, seed)

    def _form(self, f: Factored, p_bytes: int) -> str:
        """The cost model (module docstring): ``"kron"`` (a sketch, where ``f`` holds its
        factors), ``"ghost"`` (where cheaper and within the budget) or ``"rows"``."""
        if self.mode == "sketch":
            return "kron" if f.kron is not None else "rows"
        fits = self.n * p_bytes <= self.budget
        if f.pair_bytes <= self.budget and ghost_cheaper(self.n, f.t, f.d_in, f.d_out, self.mode,
                                                         fits):
            return "ghost"
        return "rows"

    def materialises(self, module: nn.Module, a: Tensor, out: Tensor) -> bool:
        """Whether :meth:`layer` would reduce ``module``'s weight from its whole ``[n, ...]``
        per-sample gradients in one block (``out``: the call's output, for the shapes): then a
        rule that computes them with the input gradient in one step (a small convolution's
        :class:`~gradkit.grads.rules.conv.FusedConv`) may hand them over to :meth:`store`."""
        factored, w = factored_for(module), getattr(module, "weight", None)
        if (module not in self.single or factored is None
                or not (isinstance(w, Tensor) and w.requires_grad)):
            return True  # layer() stores the rule's per-sample gradients
        p_bytes = w.numel() * a.element_size()
        return (self.n * p_bytes <= self.budget
                and self._form(factored(module, a, out), p_bytes) == "rows")

    def finish(self) -> None:
        """Reduce what was summed over calls (after the backward: every call has added to it),
        and compare the probe's gradients assembled from parts."""
        for pid, g in self.held.items():
            self._reduced(pid, g)
        self.held.clear()
        for pid, row in self.pieces.items():
            self._compare(pid, row)
        self.pieces.clear()

    def _part(self, pid: int, p: Tensor, rows: slice, value: Tensor, piece) -> None:
        """Add a disjoint row block's contribution (and the probe's rows) to parameter ``pid``."""
        self.out[pid] = self.out[pid] + value if pid in self.out else value
        self.parts.add(pid)
        if piece is not None:
            whole = self.pieces.setdefault(pid, p.new_zeros(p.shape).detach())
            whole[rows] += piece.reshape(whole[rows].shape).to(whole.dtype)

    # -- reductions ----------------------------------------------------------------------------
    def _reduced(self, pid: int, g: Tensor) -> None:
        self.out[pid] = reduce_rows(g, self.mode, self.k, self.seeds.get(pid, 0))
        if self.probe is not None:
            self._compare(pid, g[self.probe])

    def _probe(self, pid: int, rows: Callable[[slice], Tensor]) -> None:
        if self.probe is not None:
            self._compare(pid, rows(slice(self.probe, self.probe + 1)))

    def _compare(self, pid: int, row: Tensor) -> None:
        want = self.want.pop(pid).to(row.dtype)  # freed as the backward goes
        self.errors[pid] = (float((row.reshape(-1) - want).norm()), float(want.norm()))

    def _materialised(self, rows: Callable[[slice], Tensor], p_bytes: int, seed: int) -> Tensor:
        """One parameter's contribution from its ``[n, P_layer]`` rows, materialised in blocks
        of samples within the budget (``rows(slice)`` recomputes a block; a Gram block
        ``(I, J)`` needs both)."""
        n = self.n
        size = max(1, min(n, self.budget // max(1, p_bytes)))
        if size >= n:
            return reduce_rows(rows(slice(0, n)), self.mode, self.k, seed)
        blocks = [slice(i, min(n, i + size)) for i in range(0, n, size)]
        if self.mode != "gram":
            return torch.cat([reduce_rows(rows(b), self.mode, self.k, seed) for b in blocks])
        K = torch.empty(n, n, dtype=torch.float64)
        for bi, I in enumerate(blocks):
            gi = rows(I).reshape(I.stop - I.start, -1)
            K[I, I] = gram64(gi)
            for J in blocks[bi + 1:]:
                K[I, J] = gram64(gi, rows(J).reshape(J.stop - J.start, -1))
                K[J, I] = K[I, J].T
        return K


def budget_bytes(budget: int | float | None) -> int:
    """The memory budget in bytes (default 256 MiB), checked."""
    if budget is None:
        return 256 * 2**20
    if not (isinstance(budget, int | float) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a positive number of bytes, got {budget!r}")
    return int(budget)
