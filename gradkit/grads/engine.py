"""Exact per-sample gradients ``G[i] = ∇_θ l_i(θ)`` -> ``Tensor[N, P]``.

Notation (used throughout :mod:`gradkit.grads` and the notebooks): a data set ``D`` of ``N``
samples, the trainable parameters ``θ`` (:mod:`gradkit.core.params`: ``requires_grad``, in
``named_parameters()`` order, flattened to ``P`` numbers) and a per-sample loss
``l_i(θ) = loss_fn(model(x_i), y_i)`` (:mod:`gradkit.grads.samples`).

Three exact ways to get ``G`` (all agree with a per-sample autograd loop to 1e-5, see the tests):

``"vmap"``
    ``torch.func``: ``vmap(grad(l))`` over the samples with ``functional_call`` (buffers and frozen
    parameters passed through unchanged, trainable ones differentiated).
``"loop"``
    one ``torch.autograd.grad`` per sample (the reference).
``"layers"``
    one forward and one backward for the whole batch, per-layer rules on saved activations and
    output gradients (:mod:`gradkit.grads.rules`), every assumption of the rules verified on
    every call (:mod:`gradkit.grads.layerpass`); it raises where one fails.

``method="auto"`` chooses per chunk and per layer:

- fewer than ``_LOOP_BELOW`` samples in the chunk: the loop;
- every parameter whose modules have rules and pass the checks: ``"layers"``; within it each
  convolution's weight rule takes the cheapest exact path for its shape
  (:func:`~gradkit.grads.rules.conv.conv_path`: a grouped ``convolution_backward`` while groups are
  small, else im2col + batched matmul, else one summed gradient per sample), and ``LSTM``,
  ``GRU``, ``RNN`` and ``MultiheadAttention`` are replayed (:mod:`~gradkit.grads.rules.lstm`,
  :mod:`~gradkit.grads.rules.gru`, :mod:`~gradkit.grads.rules.rnn`,
  :mod:`~gradkit.grads.rules.attention`); a
  container's own parameters added to the activations (a learned positional embedding) are
  taken in the pass too (:mod:`~gradkit.grads.freeparams`), and one used otherwise falls back
  alone;
- the other parameters: ``"vmap"`` (for all parameters, since it runs the whole network batched
  anyway, unless a large convolution would take vmap's costly grouped weight gradient: then for
  those parameters only), or the loop when the chunk has at most ``_LOOP_MAX`` samples, when
  the model has recurrent layers (``nn.RNNBase``: vmap fails on a GRU at some batch sizes, and
  is a slow internal loop otherwise) or when vmap raised (data-dependent control flow,
  ``.item()``; warned once, with the method to pass to skip the attempt). When the fallback
  is the loop, the loop does the whole chunk (it costs the same for all parameters as for
  some);
- all parameters go to vmap, else the loop, when the samples of a batch interact (a batch
  padded to its longest sample with layers that see the padding): a batched pass cannot give
  each sample's gradient alone (:func:`~gradkit.grads.reference.batch_coupling`, warned once).

What a call learns about a model (the reference sample's call shapes, the modules rejected,
a failed vmap, interacting samples, a passed consistency check and loss-coupling check) is
kept, weakly, per model and call signature (the inputs' tree, float inputs' per-sample shapes
and dtypes, integer and bool inputs by value, the modules, their training flags, the trainable
parameters; :mod:`~gradkit.grads.learned`): later calls with the same signature skip the
reference pass and the probes. :func:`forget` drops it.

Cost model, in units of a plain batch backward ``B``: layers ``≈ B`` plus the per-sample
products (the rules' flops equal the summed weight gradient's; attention and recurrent layers
are replayed in their own forward, the recurrence in Python); vmap a constant factor more on
convolutions, norms and attention (whose math kernel it must use); the loop ``≈ N · B(1)``,
``N`` single-sample passes, the best choice at small ``N`` or for large layers, where
``B(1) ≈ B / N``. The first call on a model adds the reference pass: a forward of one sample
and, with the check, its backward, ``B(1)``. The figures behind the thresholds and the
rules' forms are in ``benchmarks/README.md`` ("Timing notes moved from the code";
``benchmarks/per_sample_grads.py``).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from gradkit.core.params import trainable_named_parameters
from gradkit.grads.coupling import CoupledLossError, check_coupled_params, warn_nonfinite
from gradkit.grads.fallbacks import loop_grads, vmap_grads
from gradkit.grads.layerpass import LayerPlan, layers_pass
from gradkit.grads.learned import Learned, forget, recall
from gradkit.grads.reference import check_consistency, reference_pass, reference_rejections
from gradkit.grads.rules import layers_supported
from gradkit.grads.rules.conv import conv_path
from gradkit.grads.samples import (
    LossFn,
    active_dropout,
    check_inputs,
    default_chunk_size,
    num_samples,
    take,
)
from gradkit.grads.sketch import sketch
from gradkit.grads.warn import warn_user

__all__ = ["METHODS", "CoupledLossError", "choose_method", "default_chunk_size", "forget",
           "per_sample_grads"]

METHODS = ("auto", "vmap", "loop", "layers")

# "auto": below this many samples the plain loop is fastest (benchmarks/README.md) ...
_LOOP_BELOW = 4
# ... and without layer support the loop beats vmap up to this many samples.
_LOOP_MAX = 8


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def choose_method(model: nn.Module, n: int, *, supported: bool | None = None) -> str:
    """The method ``"auto"`` uses for a chunk of ``n`` samples (measurements: module docstring).

    ``"loop"`` for ``n < _LOOP_BELOW``; else ``"layers"`` if every trainable parameter is in a
    supported layer (``supported``, if given, saves re-checking); else ``"loop"`` up to
    ``_LOOP_MAX`` samples and ``"vmap"`` above.
    """
    if n < _LOOP_BELOW:
        return "loop"
    if layers_supported(model) if supported is None else supported:
        return "layers"
    return "loop" if n <= _LOOP_MAX else "vmap"


_WARNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> warnings given


def _warn_once(model: nn.Module, kind: str, message: str) -> None:
    seen = _WARNED.setdefault(model, set())
    if kind not in seen:
        seen.add(kind)
        warn_user(message)


def _reasons(d: dict[str, str]) -> str:
    return "; ".join(f"{name!r}: {why}" for name, why in d.items())


class _Run:
    """One call of :func:`per_sample_grads`: the method chosen per chunk, the layer plan and
    its rejections (kept for the later chunks and, in ``learned``, for later calls), the
    reference sample, the fallbacks."""

    def __init__(self, model, loss_fn, method, check):
        self.model, self.loss_fn, self.method, self.check = model, loss_fn, method, check
        self.named = trainable_named_parameters(model)
        self.plan = LayerPlan.of(model) if method in ("auto", "layers") else None
        if method == "layers" and self.plan.unsupported:
            raise ValueError(f"method='layers' cannot handle {_reasons(self.plan.unsupported)}; "
                             "use method='auto' (exact fallbacks) or 'vmap' / 'loop'")
        self.ref, self.whole, self.learned = None, None, Learned()
        self.checking = False  # whether this call's reference pass took the gradient
        self.random = active_dropout(model)  # random masks: runs cannot be compared
        if self.random:
            _warn_once(model, "dropout", (
                f"per_sample_grads: {', '.join(map(repr, self.random))} drop at random (training "
                "mode): the per-sample gradients are those under this call's random masks (each "
                "sample its own; another call draws others), computed by the per-sample loop, "
                "and the checks that compare two passes are skipped. model.eval() gives "
                "deterministic per-sample gradients (of the model without dropout)."))
        if self.random and method == "layers":
            raise ValueError(f"method='layers' cannot verify its rules under random masks "
                             f"({', '.join(map(repr, self.random))} in training mode): call "
                             "model.eval(), or use method='loop' / 'vmap'")

    def recall(self, x) -> None:
        """Start from what earlier calls learned for this model and signature."""
        self.learned = learned = recall(self.model, x)
        if self.plan is None:
            return
        self._reject(dict(learned.rejected))
        if learned.ref is not None and (learned.checked or not self.check):
            self.ref = learned.ref

    def chunk(self, x, y, first: bool, out: Tensor | None = None) -> Tensor:
        """The chunk's ``[n, P]`` gradients (the layers pass writes them into ``out`` if given);
        on the first chunk, with ``check``, the loss-coupling check (:mod:`~gradkit.grads.coupling`:
        free inside the layers pass, else one batch backward per call signature)."""
        if first:
            self.recall(x)
        self.summed = False  # whether the layers pass checked the loss's coupling
        g = self._chunk(x, y, first, out)
        learned = self.learned
        if first and self.check and not (self.summed or learned.summed or learned.coupled
                                          or self.random):
            params = [p for _, p in self.named]
            learned.summed = check_coupled_params(self.model, self.loss_fn, x, y, g, params)
        return g

    def _chunk(self, x, y, first: bool, out: Tensor | None) -> Tensor:
        whole = self._whole_chunk(x, y)
        if whole is not None:
            return whole
        got = self._per_parameter(x, y, first)
        if isinstance(got, Tensor):  # a fallback took the whole chunk after all
            return got
        return self._assemble(got, first, out)

    def _whole_chunk(self, x, y) -> Tensor | None:
        """The chunk's gradients where one method takes every parameter (the method asked for,
        interacting samples, the loop for few samples or random masks, a fallback already
        chosen, layers that need vmap); None: the layers pass takes part."""
        n, plan, model, loss_fn = num_samples(x), self.plan, self.model, self.loss_fn
        if self.method == "vmap":
            return self._fallback(x, y, None)
        if self.method == "loop":
            return loop_grads(model, loss_fn, x, y)
        if self.learned.coupled and self.whole is None:
            return self._coupled(self.learned.coupled, x, y)
        if self.whole == "loop" or (self.method == "auto" and (n < _LOOP_BELOW or self.random)):
            return loop_grads(model, loss_fn, x, y)
        if self.whole == "vmap":
            return self._fallback(x, y, None)
        if (self.method == "auto" and len(plan.covered) + len(plan.fallen) < len(self.named)
                and not self._large_conv()):
            # some layers need vmap (or the loop), which then takes all (see _fallback); a
            # container's own parameter that is not additive falls back alone (freeparams)
            self._warn_unsupported(plan.unsupported)
            fb = self._fallback(x, y, None)
            self.whole = self.whole or "vmap"
            return loop_grads(model, loss_fn, x, y) if fb is None else fb
        return None

    def _per_parameter(self, x, y, first: bool) -> dict[int, Tensor] | Tensor:
        """``{parameter id: [n, numel]}``: the parameters no rule covers by the fallback first
        (if it is the loop, the loop does everything: the whole chunk's ``[n, P]`` is returned),
        then the layers pass, then what it rejected by the fallback."""
        plan, model, loss_fn = self.plan, self.model, self.loss_fn
        if self.ref is None and plan.covered:
            self.checking = self.check
            self.ref = reference_pass(model, loss_fn, x, y, plan, self.check)
            self._reject(reference_rejections(self.ref, plan))
        missing = [(k, p) for k, p in self.named if id(p) not in plan.covered]
        got: dict[int, Tensor] = {}
        if missing:
            self._warn_unsupported(plan.unsupported)
            # vmap of some parameters runs the whole network batched anyway: unless a large
            # conv would take vmap's costly grouped weight gradient, vmap does everything too
            fb = self._fallback(x, y, [k for k, _ in missing])
            if fb is None:
                return loop_grads(model, loss_fn, x, y)
            got.update(self._split(missing, fb))
        if plan.covered:
            self.summed = first and self.check  # checked at the outputs, inside the pass
            layered, rejected, coupled = layers_pass(model, loss_fn, x, y, plan, self.ref,
                                                     coupling=first, loss_check=self.summed)
            if coupled:
                return self._coupled(coupled, x, y)
            self._reject(rejected)
            got.update(layered)
            late = [(k, p) for k, p in self.named if id(p) not in got]
            if late:
                self._warn_unsupported(plan.unsupported)
                names = [k for k, _ in late]
                fb = self._fallback(x, y, names)
                fb = loop_grads(model, loss_fn, x, y, names=names) if fb is None else fb
                got.update(self._split(late, fb))
        return got

    @staticmethod
    def _split(named: list[tuple[str, Tensor]], g: Tensor) -> dict[int, Tensor]:
        """A fallback's ``[n, Σ numel]`` for ``named`` -> ``{parameter id: [n, numel]}``."""
        parts = g.split([p.numel() for _, p in named], dim=1)
        return {id(p): part for (_, p), part in zip(named, parts, strict=True)}

    def _assemble(self, got: dict[int, Tensor], first: bool, out: Tensor | None) -> Tensor:
        """``[n, P]`` in ``named_parameters()`` order (into ``out`` if given); on the first
        chunk the consistency check, and the reference kept for later calls."""
        parts = [got[id(p)] for _, p in self.named]
        fits = out is not None and all(t.dtype == out.dtype for t in parts)
        g = torch.cat(parts, dim=1, out=out) if fits else torch.cat(parts, dim=1)
        if first and self.checking:
            check_consistency(self.ref, self.named, g)
        if first and self.ref is not None and self.learned.ref is not self.ref:
            self.ref.grads, self.ref.losses, self.ref.output = None, None, None
            self.learned.ref, self.learned.checked = self.ref, self.checking
        return g

    def _coupled(self, why: str, x, y) -> Tensor:
        """The samples of a batch interact: only a method that runs each sample alone is exact
        (vmap, else the loop), for every parameter; ``"layers"`` raises."""
        if self.method == "layers":
            raise ValueError(f"method='layers': {why}; one batched pass cannot give each "
                             "sample's gradient alone: use method='loop' (or 'vmap')")
        _warn_once(self.model, "coupled", (
            f"per_sample_grads: {why}. Per-sample gradients are defined for each sample alone, "
            "so all of them are computed by vmap, else the per-sample loop (exact)."))
        self.learned.coupled = why
        fb = self._fallback(x, y, None)
        self.whole = self.whole or "vmap"
        return loop_grads(self.model, self.loss_fn, x, y) if fb is None else fb

    def _large_conv(self) -> bool:
        """Whether a hooked conv leaves the grouped call (there vmap's weight gradient explodes:
        vmap then takes only the parameters the layers pass cannot)."""
        return any(isinstance(m, nn.modules.conv._ConvNd)
                   and conv_path(m, (1, m.in_channels) + (1,) * (m.weight.dim() - 2))
                   not in ("bmm", "taps", "depthwise", "grouped") for m in self.plan.owners)

    def _reject(self, rejected: dict[str, str]) -> None:
        if rejected and self.method == "layers":
            raise ValueError(f"method='layers': its assumptions fail for {_reasons(rejected)}; "
                             "method='auto' computes these modules' parameters by vmap / loop")
        self.plan.exclude(rejected)
        self.learned.rejected.update(rejected)

    def _warn_unsupported(self, reasons: dict[str, str]) -> None:
        _warn_once(self.model, "layers", (
            f"per_sample_grads: the 'layers' rules do not hold for {_reasons(reasons)}; their "
            "parameters are computed by an exact fallback (vmap, else the per-sample loop)"))

    def _fallback(self, x, y, names) -> Tensor | None:
        """vmap for ``names`` (all: None); under auto the loop where vmap cannot or should not
        run (recurrent layers, whose vmap is a slow loop; few samples; a failed attempt)."""
        model, loss_fn, n = self.model, self.loss_fn, num_samples(x)
        if self.method == "vmap":  # with dropout active, each sample its own mask
            return vmap_grads(model, loss_fn, x, y, names=names,
                              randomness="different" if self.random else "error")
        recurrent = self.random or any(isinstance(m, nn.RNNBase) for m in model.modules())
        if self.method == "auto" and not (self.learned.vmap_failed or recurrent or n <= _LOOP_MAX):
            try:
                return vmap_grads(model, loss_fn, x, y, names=names)
            except Exception as e:  # noqa: BLE001 - any vmap failure: the loop is exact
                self.learned.vmap_failed = True
                _warn_once(model, "vmap", (
                    f"per_sample_grads: torch.func.vmap failed on {type(model).__name__} "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); using the per-sample "
                    "loop instead (exact). Pass method='loop' to skip the vmap attempt."))
        if self.method == "auto":
            self.whole = "loop"  # the loop costs the same for all parameters as for some
            return None  # the caller runs the loop
        return loop_grads(model, loss_fn, x, y, names=names)


def per_sample_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: Any,
    targets: Any,
    chunk_size: int | None = None,
    *,
    method: str = "auto",
    sketch_dim: int | None = None,
    sketch_seed: int = 0,
    check: bool = True,
) -> Tensor:
    """Per-sample gradients ``G[i] = ∇_θ loss_fn(model(x_i), y_i)`` -> ``Tensor[N, P]``.

    ``θ`` are the trainable parameters (``requires_grad``) in ``named_parameters()`` order, each
    flattened; frozen parameters and buffers (BatchNorm running statistics) enter as constants.
    The model is called as ``model(inputs)``; ``inputs`` and ``targets`` may be tensors or
    (nested) tuples / dicts of tensors, every tensor with the N samples on dim 0. The model must
    be in eval mode where it has BatchNorm (a sample's output must not depend on the rest of the
    batch). Samples are processed ``chunk_size`` at a time (default :func:`default_chunk_size`);
    ``method`` is ``"auto"``, ``"vmap"``, ``"loop"`` or ``"layers"`` (module docstring).

    ``"layers"`` and ``"auto"`` verify the layer rules' assumptions on every call
    (:mod:`gradkit.grads.layerpass`); a module that fails one makes ``"layers"`` raise and sends
    its parameters, under ``"auto"``, to vmap (then the loop) with one warning naming it and why.
    Samples that interact in a batch (padding seen by a layer) make ``"layers"`` raise and send
    everything, under ``"auto"``, to vmap or the loop. ``check=True`` (default) adds the end-to-
    end consistency check: the row of one sample (the first, or the shortest where the inputs
    give lengths) must equal the plain autograd gradient of its loss taken alone (to 5 %
    relative per parameter tensor: float32 rounding differs by up to ~1 % between a batch and
    one sample, a broken rule by O(1)), else a ``RuntimeError`` names the parameters. It runs
    on the first call for a model and call signature (module docstring), costing a backward of
    one sample; later calls reuse the verdict, and :func:`forget` makes the next call check
    again. ``check=True`` also checks that the loss does not couple the samples: the per-sample
    gradients, summed and scaled by the reduction, must equal the gradient of the batch loss
    (:mod:`~gradkit.grads.coupling`; free in the layers pass, one batch backward per call
    signature otherwise), else :class:`CoupledLossError` names the loss. ``check=False`` skips
    both once trusted (the structural checks stay). A sample whose input or gradient row is
    not finite is warned about by index.
    With ``sketch_dim=k`` every chunk is projected by :func:`sketch` (seed ``sketch_seed``) and
    the result is ``Tensor[N, k]``.
    """
    n = check_inputs(model, inputs, targets)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    run = _Run(model, loss_fn, method, check)
    if chunk_size is None:
        chunk_size = default_chunk_size(model, inputs, n,
                                        params=sum(p.numel() for _, p in run.named))
    result = None  # [n, P] or [n, k], allocated once the first chunk shows its width and dtype
    for start in range(0, n, int(chunk_size)):
        sl = slice(start, min(n, start + int(chunk_size)))
        out = result[sl] if result is not None and sketch_dim is None else None
        x = take(inputs, sl)
        g = run.chunk(x, take(targets, sl), first=start == 0, out=out).detach()
        warn_nonfinite(x, g, offset=start)
        if sketch_dim is not None:
            g = sketch(g, sketch_dim, sketch_seed)
        if sl.stop - sl.start == n:
            return g
        result = g.new_empty(n, g.shape[1]) if result is None else result
        if out is None or g.data_ptr() != out.data_ptr():  # not written in place
            result[sl] = g
    return result
