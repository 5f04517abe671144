"""What the tracker takes from the user's own forward and backward: each tracked layer's input
``a`` (a forward hook) and output gradient ``δ`` (a tensor hook on its output), handed to the
engine's :class:`~gradkit.grads.gramsink.GramSink`, which reduces them by the layer's ghost or
materialised form (:mod:`gradkit.grads.rules`) to per-sample squared norms ``[N]`` or a Gram
matrix ``[N, N]``. No extra forward or backward: the hooks only read what the step computes.

Tracked: every layer with an ordinary per-sample rule of the engine (:mod:`gradkit.grads.rules`:
``Linear``, ``Conv1d/2d/3d`` with zero padding given as numbers, ``LayerNorm``, ``BatchNorm``,
the project's ``InputPrompt``, and any type given one by :func:`~gradkit.grads.register_rule`)
whose parameters belong to tracked layers only. Not tracked (:func:`untracked_reason`): a layer
whose rule is a replay of its forward (LSTM, GRU, RNN, MultiheadAttention, GroupNorm), a layer
with no rule, a container's own parameters: those are taken by the tracker's exact fallback
(:mod:`gradkit.track.fallback`) where the loss and the inputs are given; else their contribution
is missing, and the tracker says so (a warning naming the modules, ``meta.json``, the
``covered`` column). A BatchNorm in training mode is read with the batch's statistics: its rows,
like every layer's where samples interact, are each sample's share of the batch gradient.

Checks, every step and free: each tracked layer is called exactly once with gradients enabled
(calls under ``torch.no_grad()`` are ignored), with one tensor whose
dim 0 holds the ``N`` samples (a layer called twice, a flattened ``[N·T, C]`` input or a second
backward in the step is excluded from then on, with a warning). On the first step
(:meth:`Capture.begin` with ``check=True``) also: the per-sample gradients, summed over the
samples, must equal the gradient autograd put in ``.grad`` (times ``N`` for a mean loss); this
catches gradients accumulated over several backward passes, a parameter also used outside its
layer (a tied weight), a hook that changes gradients. Both sides come from the same ``δ``, so
this cannot see how the loss combines the samples: with a probe (the gradient of one sample's
loss alone by plain autograd, :meth:`Capture.begin`'s ``want``) the sample's row must equal
it, which catches a loss reduced otherwise than declared (a factor ``N``) and samples that
interact (a loss coupling the samples, batch statistics). Without the loss function the
tracker cannot make that check, and says so in ``meta.json`` (``checks``).
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from gradkit.core.params import trainable_named_parameters
from gradkit.grads.gramsink import GramSink, budget_bytes
from gradkit.grads.layerpass import LayerPlan
from gradkit.grads.rules import replay_for, rule_for

__all__ = ["Capture", "TrackerCheckError", "batch_statistics", "untracked_reason"]
# Σ_i g_i against .grad: float32 sums in another order differ by ~1e-6; a wrong reduction by a
# factor N, a tied weight or a second backward by O(1).
_SUM_RTOL = 1e-3
# The probe's row against its loss alone: the engine's consistency tolerance (float32 rounding
# differs by up to ~1 % between a batch and one sample).
_PROBE_RTOL = 5e-2


def untracked_reason(module: nn.Module) -> str | None:
    """Why the hooks cannot take ``module``'s per-sample gradients from the user's own backward
    (None: they can, by its rule from the layer input and the output gradient)."""
    kind = type(module).__name__
    if replay_for(module) is not None:
        return f"{kind}'s per-sample gradients need a replay of its forward"
    return None


def batch_statistics(model: nn.Module, known: list[str], stacklevel: int) -> list[str]:
    """The BatchNorms in training mode (batch statistics make the samples interact: the rows are
    then each sample's share of the batch gradient, not the gradient of its loss alone), with a
    warning the first time (``known`` empty); ``[]`` when there are none or they are known."""
    bn = [name for name, m in model.named_modules()
          if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not bn or known:
        return []
    warnings.warn(
        f"Tracker: {bn} normalise with batch statistics (training mode), so the samples of a "
        "batch interact: each per-sample row is that sample's share of the batch gradient, not "
        "the gradient of its loss alone (the per-sample statistics are defined for samples that "
        "do not interact)", RuntimeWarning, stacklevel=stacklevel)
    return bn


class TrackerCheckError(RuntimeError):
    """The first step's check failed: the tracked per-sample gradients are not those of the
    user's loss (the message names the parameters and the likely causes)."""


class Capture:
    """The tracked layers of ``model`` and one step's capture of their ``(a, δ)``."""

    def __init__(self, model: nn.Module, budget: int | None = None):
        self.model, self.budget = model, budget_bytes(budget)
        plan = LayerPlan.of(model)
        named = trainable_named_parameters(model)
        self.names = {id(p): k for k, p in named}
        self.numel = {id(p): p.numel() for _, p in named}
        self.index = {id(p): i for i, (_, p) in enumerate(named)}
        self.untracked: dict[str, str] = dict(plan.unsupported)
        for _, _, name in plan.free.values():
            self.untracked[name] = "its own parameters are used in its forward (no layer rule)"
        tracked = {}
        for m, name in plan.owners.items():
            why = untracked_reason(m)
            if why is None:
                tracked[m] = name
            else:
                self.untracked[name] = why
        changed = True
        while changed:  # a parameter shared with an untracked module: its layer is not covered
            changed = False
            for m in list(tracked):
                if any(not all(o in tracked for o in plan.owners_of[id(p)])
                       for p in m.parameters(recurse=False) if p.requires_grad):
                    self.untracked[tracked.pop(m)] = "shares a parameter with an untracked module"
                    changed = True
        self.plan, self.modules = plan, tracked
        self.disabled: dict[str, str] = {}

    # -- coverage --------------------------------------------------------------------------------
    def params_of(self, modules) -> dict[int, Tensor]:
        return {id(p): p for m in modules for p in m.parameters(recurse=False) if p.requires_grad}

    def covered(self) -> dict[int, Tensor]:
        """The parameters whose per-sample gradients the tracker takes (by id)."""
        return self.params_of(self.modules)

    def names_of(self, params) -> list[str]:
        return [self.names[pid] for pid in params]

    def missing(self) -> list[str]:
        """Trainable parameters not covered (their contribution is absent from every statistic)."""
        cov = self.covered()
        return [k for pid, k in self.names.items() if pid not in cov]

    def disable(self, reasons: dict[nn.Module, str], stacklevel: int) -> None:
        """Exclude modules from now on, with one warning naming them and why."""
        if not reasons:
            return
        for m, why in reasons.items():
            self.disabled[self.modules.pop(m)] = why
        said = "; ".join(f"{name!r}: {why}" for name, why in self.disabled.items()
                         if name in {self.plan.owners[m] for m in reasons})
        warnings.warn(
            f"Tracker: excluded {said}. From this step on the per-sample norms, Gram matrices and "
            f"noise scale cover only the remaining tracked parameters ({len(self.missing())} of "
            f"{len(self.names)} parameter tensors are not covered; see meta.json).",
            RuntimeWarning, stacklevel=stacklevel)

    # -- one step --------------------------------------------------------------------------------
    def begin(self, n: int | None, mode: str, scale_by_n: bool, check: bool,
              want: dict[int, Tensor] | None = None, grad_scale: float = 1.0,
              sketch: tuple[int, int] | None = None) -> None:
        """Hook the tracked layers for one forward + backward (``mode``: "norms" or "gram";
        ``n``: the number of samples, None: dim 0 of the first tracked call; ``grad_scale``:
        the factor the backward's loss was multiplied by, a ``GradScaler``'s scale; ``sketch``:
        ``(k, seed)``, also :func:`~gradkit.grads.gradient_sketch`'s ``[N, k]`` sketch, from
        the same ``(a, δ)``, in :attr:`sketch`)."""
        self.n, self.mode, self.scale_by_n, self.check, self.want = n, mode, scale_by_n, check, want
        self.grad_scale = float(grad_scale)
        self.checked = False
        self.calls = dict.fromkeys(self.modules, 0)
        self.problems: dict[nn.Module, str] = {}
        self.sums: dict[int, Tensor] = {}
        self.sink: GramSink | None = None
        self.sketch_spec, self.sketcher = sketch, None
        self.sketch: Tensor | None = None
        self.handles = [m.register_forward_hook(self._forward_hook, with_kwargs=True)
                        for m in self.modules]

    def _forward_hook(self, module, args, kwargs, output):
        if not torch.is_grad_enabled():  # an evaluation inside the step: no part of the backward
            return None
        self.calls[module] += 1
        if self.calls[module] > 1:
            self.problems.setdefault(module, "called more than once in a step (a reused layer, or "
                                     "several forward passes in one tracker.step)")
            return None
        a = args[0] if len(args) == 1 and not kwargs else None
        if not (isinstance(a, Tensor) and isinstance(output, Tensor) and a.dim() >= 2):
            self.problems[module] = "not called with one tensor [N, ...] returning a tensor"
            return None
        self.n = a.shape[0] if self.n is None else self.n
        if a.shape[0] != self.n or output.shape[0] != self.n:
            self.problems[module] = (f"dim 0 does not hold the {self.n} samples: input "
                                     f"{tuple(a.shape)}, output {tuple(output.shape)} (flattened "
                                     "or time-major samples?)")
            return None
        if not output.requires_grad:
            return None
        saved = [a.detach()]

        def on_grad(d: Tensor) -> None:  # ∂loss/∂output, from the user's own backward
            if self.calls[module] == 1 and module not in self.problems and saved:
                self._layer(module, saved[0], d * (self.row_factor() / self.grad_scale))
            saved.clear()

        output.register_hook(on_grad)
        return None

    def _layer(self, module: nn.Module, a: Tensor, d: Tensor) -> None:
        if self.sink is None:  # the forward has ended: the calls are known
            ref = SimpleNamespace(calls={m: [None] * c for m, c in self.calls.items()})
            self.sink = GramSink(self.plan, ref, self.n, self.mode, self.budget, self.index,
                                 probe=0 if self.want is not None else None, want=self.want)
            if self.sketch_spec is not None:
                k, seed = self.sketch_spec
                self.sketcher = GramSink(self.plan, ref, self.n, "sketch", self.budget,
                                         self.index, k, seed)
        self.sink.layer(module, a, d)
        if self.sketcher is not None:
            self.sketcher.layer(module, a, d)
        if self.check:
            self._sum(module, a, d)

    def _sum(self, module: nn.Module, a: Tensor, d: Tensor) -> None:
        """``Σ_i g_i`` of ``module``'s parameters by the engine's materialised rule, in blocks of
        samples within the budget (first step only)."""
        rule = rule_for(module)[0]
        per = sum(p.numel() for p in module.parameters(recurse=False)) * a.element_size()
        size = max(1, self.budget // max(1, per))
        for i in range(0, a.shape[0], size):
            for name, g in rule(module, a[i:i + size], d[i:i + size]).items():
                pid = id(module.get_parameter(name))
                s = g.double().sum(0).reshape(-1)
                self.sums[pid] = self.sums[pid] + s if pid in self.sums else s

    def end(self, stacklevel: int) -> dict[int, Tensor]:
        """Unhook; exclude the modules with a problem; on a checked step compare with ``.grad``.
        Returns ``{parameter id: [N] squared norms or [N, N] Gram block}`` of the covered
        parameters (zeros for a tracked parameter no gradient reached)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        sink = self.sink
        if sink is not None:
            sink.finish()
        self.disable({m: why for m, why in self.problems.items() if m in self.modules},
                     stacklevel + 1)
        if self.check and self.modules and self._finite():  # an overflow: checked at the next
            self.checked = True
            self._check_sums(stacklevel + 1)
            if self.want is not None and sink is not None:
                self._check_probe(sink.errors)
        out = {}
        n = self.n or 0
        for pid, p in self.covered().items():
            if sink is not None and pid in sink.out:
                out[pid] = sink.out[pid].double()
            else:
                out[pid] = torch.zeros((n,) if self.mode == "norms" else (n, n),
                                       dtype=torch.float64, device=p.device)
        if self.sketcher is not None:
            self.sketcher.finish()
            got = [self.sketcher.out[pid] for pid in self.covered() if pid in self.sketcher.out]
            self.sketch = sum(got) if got else None
        self.sink, self.sketcher = None, None
        return out

    def _finite(self) -> bool:
        grads = [p.grad for p in self.covered().values() if p.grad is not None]
        return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def row_factor(self) -> float:
        """What turns the output gradient of the step's loss into that of ``l_i``: ``N`` for a
        mean over the batch."""
        return float(self.n) if self.scale_by_n else 1.0

    def _check_sums(self, stacklevel: int) -> None:
        factor = self.row_factor() / self.grad_scale
        pairs = {}
        for pid, p in self.covered().items():
            want = (p.grad.detach().double().reshape(-1) * factor if p.grad is not None
                    else torch.zeros(p.numel(), dtype=torch.float64, device=p.device))
            pairs[pid] = (self.sums.get(pid, torch.zeros_like(want)), want)
        # a gradient that is zero in exact arithmetic (a bias before a normalisation) is
        # rounding noise on both sides: compared with the whole gradient's size
        floor = 1e-2 * sum(float(w.norm()) ** 2 for _, w in pairs.values()) ** 0.5
        bad = {}
        for pid, (got, want) in pairs.items():
            err, size = float((got - want).norm()), float(want.norm())
            if err > _SUM_RTOL * max(size, float(got.norm()), floor) + 1e-12:
                bad[pid] = f"{self.names[pid]} (|Σ g_i| {float(got.norm()):.4g}, from .grad " \
                           f"{size:.4g})"
        self.sums = {}
        if not bad:
            return
        causes = (
            "gradients accumulated over several backward passes (call optimizer.zero_grad() "
            "inside tracker.step, before backward); the parameter is also used outside its "
            "layer's call (a tied weight); a hook that changes gradients")
        if len(bad) == len(self.covered()):
            raise TrackerCheckError(
                "Tracker: first-step check failed: the per-sample gradients summed over the "
                "batch differ from the gradient autograd produced (.grad) for every tracked "
                f"parameter: {', '.join(bad.values())}. Likely: {causes}.")
        owners = {m: f"the sum of its per-sample gradients differs from .grad ({causes})"
                  for m in self.modules for p in m.parameters(recurse=False) if id(p) in bad}
        self.disable(owners, stacklevel + 1)

    def _check_probe(self, errors: dict[int, tuple[float, float]]) -> None:
        checked = [pid for pid in self.covered() if pid in errors]
        floor = 1e-2 * sum(errors[pid][1] ** 2 for pid in checked) ** 0.5
        bad = [f"{self.names[pid]} (relative error {err / max(size, 1e-30):.2g})"
               for pid in checked for err, size in [errors[pid]]
               if err > _PROBE_RTOL * max(size, floor) + 1e-30]
        if bad:
            raise TrackerCheckError(
                "Tracker: first-step check failed: sample 0's gradient in the batch differs from "
                f"the gradient of its loss taken alone for {', '.join(bad)}. The loss is not "
                "reduced as declared (Tracker(reduction='mean') for a mean over the batch, "
                "'sum' for a sum: a factor N), or the samples of the batch interact "
                "(a loss that couples them, batch statistics such as BatchNorm in "
                "training mode, dropout drawn differently), so the rows are not per-sample "
                "gradients. Per-sample statistics need per-sample losses; pass loss_fn=None to "
                "skip this check.")
