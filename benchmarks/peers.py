"""The methods the per-sample-gradient benchmark times: ``make(method, case)`` returns a
zero-argument function computing ``[N, P]`` per-sample gradients (the plain backward: None).

gradkit (auto, vmap, loop and two ablations of its pass), BackPACK ``BatchGrad``, Opacus
``GradSampleModule`` (its own LSTM / attention layers swapped in by ``ModuleValidator.fix``) and
PyTorch's ExpandedWeights. A peer that is not installed raises :class:`Skip`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F

from gradkit.grads import forget, per_sample_grads


class Skip(Exception):
    """A peer that is not installed or cannot handle the model."""


def _flat(params, attr: str, n: int) -> torch.Tensor:
    """Per-sample gradients stored by a peer as ``p.<attr>``; NaN columns where it has none
    (BackPACK has no GroupNorm extension), so that the check can say what is missing."""
    return torch.cat([getattr(p, attr).reshape(n, -1) if getattr(p, attr, None) is not None
                      else p.new_full((n, p.numel()), float("nan")) for p in params], dim=1)


def make(method: str, case) -> Callable[[], torch.Tensor | None]:
    """A zero-argument function computing ``[N, P]`` per-sample gradients by ``method`` for
    ``case`` (a ``per_sample_grads.Case``: model, x, y, n, loss_sum, loss_mean, ablations)."""
    model, x, y, n = case.model, case.x, case.y, case.n
    loss_mean, loss_sum = case.loss_mean, case.loss_sum
    if method in ("gradkit-floor", "gradkit-noconv") and not case.ablations:
        raise Skip("ablation rows only for the workbook's model")
    if method == "plain":
        def run():
            model.zero_grad(set_to_none=True)
            loss_mean(model(x), y).backward()
        return run
    if method == "gradkit":
        return lambda: per_sample_grads(model, loss_mean, x, y)
    if method == "gradkit-first":
        def first():  # what a model's first call costs: the reference pass, probes and check
            forget(model)
            return per_sample_grads(model, loss_mean, x, y)
        return first
    if method in ("gradkit-floor", "gradkit-noconv"):
        # Ablations (no agreement check): the same pass with some per-layer rules emptied.
        import gradkit.grads.layerpass as gp
        import gradkit.grads.rules.registry as gg

        rules, replays = dict(gg._RULES), dict(gg._REPLAYS)
        emptied = [t for t in rules if method == "gradkit-floor" or issubclass(t, torch.nn.Conv2d)]

        def plain_group_norm(m, args, kwargs, sample_dim, store):
            # GroupNorm's own forward and backward (its input gradient), no per-sample product
            a = args[0]
            out = F.group_norm(a, m.num_groups, m.weight.detach(), m.bias.detach(), m.eps)
            return out, [a] if a.requires_grad else []

        fuses = gp.fuses

        def run():
            for t in emptied:
                gg._RULES[t] = (lambda m, a, d: {}, rules[t][1])
            if method == "gradkit-floor":
                gg._REPLAYS[torch.nn.GroupNorm] = plain_group_norm
            gp.fuses = lambda m, a: False  # no conv takes its gradients in one step (FusedConv)
            try:
                per_sample_grads(model, loss_mean, x, y, check=False)  # emptied: would fail
            finally:
                gg._RULES.update(rules)
                gg._REPLAYS.update(replays)
                gp.fuses = fuses
        return run
    if method == "gradkit-vmap":
        return lambda: per_sample_grads(model, loss_mean, x, y, method="vmap")
    if method == "loop":
        return lambda: per_sample_grads(model, loss_mean, x, y, method="loop")
    if method == "backpack":
        try:
            from backpack import backpack, extend
            from backpack.extensions import BatchGrad
        except ImportError as err:
            raise Skip(f"not installed ({err.name})") from err
        bmodel = extend(copy.deepcopy(model))
        params = [p for p in bmodel.parameters() if p.requires_grad]

        def run():
            bmodel.zero_grad(set_to_none=True)
            loss = loss_sum(bmodel(x), y)
            with backpack(BatchGrad()):
                loss.backward()
            return _flat(params, "grad_batch", n)
        return run
    if method == "opacus":
        try:
            from opacus import GradSampleModule
        except ImportError as err:
            raise Skip(f"not installed ({err.name})") from err
        # Opacus records activations only in training mode; with GroupNorm and no dropout the
        # ranker computes the same function in both modes.
        from opacus.validators import ModuleValidator

        # Its own DPLSTM / DPMultiheadAttention replace torch's (weights copied by the fix).
        fixed = ModuleValidator.fix(copy.deepcopy(model))
        omodel = GradSampleModule(fixed.train(), loss_reduction="sum")
        params = [p for p in omodel.parameters() if p.requires_grad]

        def run():
            omodel.zero_grad(set_to_none=True)
            loss_sum(omodel(x), y).backward()
            return _flat(params, "grad_sample", n)
        return run
    if method == "expanded-weights":
        from torch.nn.utils._per_sample_grad import call_for_per_sample_grads

        emodel = copy.deepcopy(model)
        params = [p for p in emodel.parameters() if p.requires_grad]

        def run():
            for p in params:
                p.grad_sample = None
            loss_sum(call_for_per_sample_grads(emodel, loss_reduction="sum")(x), y).backward()
            return _flat(params, "grad_sample", n)
        return run
    raise ValueError(f"unknown method {method!r}")
