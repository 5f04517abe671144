"""The ``"layers"`` pass, and the checks that let it run on any model without guessing.

A rule (:mod:`gradkit.grads.rules`) is exact only under assumptions about how its module is
used. The pass verifies each of them, for every call of every hooked module, and *rejects* a
module (its parameters then go to an exact fallback, :mod:`gradkit.grads.engine`) when one fails:

1. **form**: the module's class does not override the ``forward`` of the class its rule was
   registered for, and it is called with exactly one positional tensor and no keyword arguments,
   returning a tensor (a *replay* rule, :func:`~gradkit.grads.rules.register_replay`, takes
   any call and checks it itself: GroupNorm its one input, an LSTM / GRU / RNN with its
   ``hx``, attention with its masks);
2. **where the samples are**: the same call on one sample alone
   (:func:`~gradkit.grads.reference.reference_pass`) had the same input and output shapes
   except for one dim of size 1 where the chunk has its ``n`` samples: that dim holds the
   samples. It must be dim 0 for rules written for dim 0 (convolutions, GroupNorm,
   BatchNorm); a Linear or LayerNorm may see them on any dim (time-major ``[T, N, C]``, moved
   to dim 0 for the rule). A flattened ``[N·T, C]`` view has no such dim and is rejected; the
   number of calls is the same in both;
3. **called**: it is called at least once (``nn.MultiheadAttention`` applies its ``out_proj``
   functionally, never calling the Linear);
4. **no use outside the call**: during each call its parameters are swapped for fresh leaf
   tensors, so the backward reaches the real parameters only through uses *outside* the
   module's calls (a tied decoder ``F.linear(h, enc.weight)``); any such path rejects the owner.
   This costs nothing when there is none: autograd never forms those gradients otherwise;
5. **the samples do not interact**: the probed sample's loss and output in the batch equal its
   values alone (:func:`~gradkit.grads.reference.batch_coupling`); a batch padded to its
   longest sample, with layers that see the padding, fails this for the whole model
   (per-sample gradients are defined for each sample alone: then only the loop or vmap
   computes them).

What these checks cannot see is caught end to end by the consistency check of the engine
(``check=True``): the probed sample's row ``G[r]`` must equal the gradient of ``l_r``, its
loss taken alone by plain autograd in :func:`~gradkit.grads.reference.reference_pass` (for one
sample, "the per-sample gradients sum to the gradient of the summed loss"; a sum over the
whole batch would not see a time-major layout, whose rows still sum to the right total).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gradkit.grads.coupling import check_coupled_outputs
from gradkit.grads.freeparams import AdditiveCapture, free_parameters
from gradkit.grads.reference import (
    NEVER_CALLED,
    Reference,
    batch_coupling,
    call_form,
    call_shapes,
    first_tensor,
)
from gradkit.grads.rules import (
    any_sample_dim,
    holds_free_parameters,
    replay_for,
    rule_for,
    unsupported_reason,
)
from gradkit.grads.rules.conv import FusedConv, fuses
from gradkit.grads.samples import num_samples, per_sample_losses

__all__ = ["LayerPlan", "layers_pass"]

def _own_trainable(m: nn.Module) -> list[str]:
    return [k for k, p in m._parameters.items() if p is not None and p.requires_grad]


def _slots(m: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(holder, name)`` of the trainable parameters the pass covers through ``m``: its own, or
    for a replay rule those of its whole subtree (attention's ``out_proj``)."""
    if replay_for(m) is not None:
        return [(sub, k) for sub in m.modules() for k in _own_trainable(sub)]
    return [(m, k) for k in _own_trainable(m)]


@dataclass
class LayerPlan:
    """Which modules the pass hooks (``owners``: module -> name) and which parameters it can
    cover at all (``covered``: ids of parameters whose every owner module has a rule);
    ``unsupported``: module name -> why it has no rule; ``slots``: the parameters an owner's
    calls cover (:func:`_slots`)."""

    owners: dict[nn.Module, str] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    owners_of: dict[int, list[nn.Module]] = field(default_factory=dict)
    params: dict[int, Tensor] = field(default_factory=dict)
    covered: set[int] = field(default_factory=set)
    slots: dict[nn.Module, list[tuple[nn.Module, str]]] = field(default_factory=dict)
    free: dict[int, tuple] = field(default_factory=dict)  # a container's own (freeparams)
    fallen: set[int] = field(default_factory=set)  # free parameters excluded: by fallback

    @classmethod
    def of(cls, model: nn.Module) -> LayerPlan:
        plan, inside, holders = cls(), set(), []  # inside: modules a replay subtree covers
        for name, m in model.named_modules(remove_duplicate=False):
            if m in inside:
                continue
            if replay_for(m) is not None:
                inside |= set(m.modules()) - {m}
            slots = _slots(m)
            if not slots:
                continue
            for holder, k in slots:
                p = holder._parameters[k]
                plan.owners_of.setdefault(id(p), []).append(m)
                plan.params[id(p)] = p
            reason = unsupported_reason(m)
            if reason and holds_free_parameters(m):
                holders.append(m)
            elif reason:
                plan.unsupported[name or type(m).__name__] = reason
            elif m not in plan.owners:
                _, registered = rule_for(m)
                if type(m).forward is not registered.forward:
                    plan.unsupported[name or type(m).__name__] = (
                        f"{type(m).__name__} overrides the forward of {registered.__name__}, "
                        "for which its rule was written")
                else:
                    plan.owners[m], plan.slots[m] = name or type(m).__name__, slots
        plan.free = free_parameters(model, holders)
        plan.covered = {pid for pid, ms in plan.owners_of.items()
                        if all(m in plan.owners for m in ms)} | set(plan.free)
        return plan

    def exclude(self, names: dict[str, str]) -> None:
        """Treat the named modules as unsupported from now on (a rejection is for the call)."""
        for m, name in list(self.owners.items()):
            if name in names:
                del self.owners[m]
                self.unsupported[name] = names[name]
        for pid, (_, _, name) in list(self.free.items()):
            if name in names:
                del self.free[pid]
                self.fallen.add(pid)
                self.unsupported[name] = names[name]
        self.covered = {pid for pid in self.covered if pid in self.free
                        or all(m in self.owners for m in self.owners_of[pid])}


def _sample_dim(ref: torch.Size, got: torch.Size, n: int, k: int) -> int | None:
    """The dim holding the samples: size ``k`` in the reference call, ``n`` in the chunk, every
    other dim equal (unique when ``n > k``; dim 0 preferred when ``n == k``). Failing that, the
    one dim of sizes ``k`` and ``n`` when others differ too: a padded batch is as long as its
    longest sample, the reference sample only as its own length (torchaudio's Conformer)."""
    if len(ref) != len(got):
        return None
    sized = [s for s in range(len(got)) if ref[s] == k and got[s] == n]
    dims = [s for s in sized if ref[:s] == got[:s] and ref[s + 1:] == got[s + 1:]]
    if dims:
        return 0 if 0 in dims else dims[0]
    return sized[0] if len(sized) == 1 else None


def _layout(ref: Reference, m: nn.Module, i: int, a: torch.Size, out: torch.Size,
            n: int) -> tuple[int | None, str | None]:
    """``(the dim of the samples, None)`` for the ``i``-th call of ``m``, or ``(None, why not)``."""
    seen = ref.calls[m]
    if i >= len(seen):
        return None, f"called more often with {n} samples than with {ref.k}"
    if isinstance(seen[i], str):
        return None, seen[i]
    ra, ro = seen[i]
    s, s_out = _sample_dim(ra, a, n, ref.k), _sample_dim(ro, out, n, ref.k)
    replay = replay_for(m) is not None
    if s is None or s_out is None or (s != s_out and not replay):
        return None, (f"dim 0 is not the sample dimension: input {tuple(a)} / output "
                      f"{tuple(out)} with {n} samples but {tuple(ra)} / {tuple(ro)} with "
                      f"{ref.k} (flattened samples?)")
    if s != 0 and not (replay or any_sample_dim(m)):
        return None, (f"dim 0 is not the sample dimension: the samples are on dim {s} of "
                      f"{tuple(a)}, and its rule needs them on dim 0 (time-major?)")
    return s, None


def layers_pass(model, loss_fn, inputs, targets, plan: LayerPlan, ref: Reference,
                coupling: bool = True, loss_check: bool = False, sink: Any = None,
                ) -> tuple[dict[int, Tensor | None], dict[str, str], str | None]:
    """One forward and one backward of the chunk -> (``{parameter id: Tensor[n, numel]}`` for
    the parameters of accepted modules, ``{module name: why rejected}``, why the samples of the
    batch interact (:func:`batch_coupling`, with ``coupling`` when ``ref`` holds the values of
    this chunk's probed sample; the gradients are then not per-sample ones and the caller must
    discard them)). With ``loss_check``, whether the loss couples the samples is checked at the
    model's outputs (:func:`~gradkit.grads.coupling.check_coupled_outputs`, raising
    :class:`~gradkit.grads.coupling.CoupledLossError`): backward passes through the loss only,
    the model's single backward then starting from the outputs' per-sample gradient.

    ``sink`` (:class:`~gradkit.grads.gramsink.GramSink`) receives each hooked layer's input and
    output gradient (``sink.layer(module, a, δ)``, samples on dim 0) and every per-sample
    gradient a rule or replay stores (``sink.store(module, {name: Tensor[n, ...]})``) instead of
    the pass keeping them: those parameters then map to None (the pass never holds ``[n, P]``);
    a parameter taken outside any rule (an additive free parameter, :mod:`~gradkit.grads.
    freeparams`) still maps to its ``[n, numel]`` gradient. A replay's ``store`` then has
    ``store.linear(names, wants, x, δ)``, which takes an affine map's factors instead of its
    per-sample gradients (True) or declines (False)."""
    n = num_samples(inputs)
    grads: dict[int, Tensor] = {}
    edges = []  # where each layer output enters the graph: storage-free handles for the backward
    rejected: dict[str, str] = {}
    ncalls = dict.fromkeys(plan.owners, 0)
    swapped: list[tuple[nn.Module, nn.Module, str, Tensor]] = []

    def store(module, per_sample):
        if sink is not None:
            sink.store(module, per_sample)
            return
        for name, g in per_sample.items():
            key, g = id(module.get_parameter(name)), g.reshape(n, -1)
            grads[key] = grads[key] + g if key in grads else g  # shared layers add up

    def pre_hook(module, args, kwargs):
        for holder, k in plan.slots[module]:  # fresh leaves: uses outside the call stay visible
            p = holder._parameters[k]
            swapped.append((module, holder, k, p))
            holder._parameters[k] = p.detach().requires_grad_()

    def restore(module):
        while swapped and swapped[-1][0] is module:
            _, holder, k, p = swapped.pop()
            holder._parameters[k] = p

    replayed: dict[nn.Module, Any] = {}  # replay module -> its current call's edges, or why not

    def replaying_forward(module: nn.Module):
        """``module``'s forward for the pass: its replay rule *instead of* its own forward (one
        computation, not two), its own forward where the replay does not apply."""
        own, replay = module.__dict__.get("forward"), replay_for(module)

        def forward(*args, **kwargs):
            i, seen, a = ncalls[module], ref.calls[module], first_tensor((args, kwargs))
            s, why = None, None
            if i >= len(seen) or isinstance(seen[i], str) or a is None:
                why = "checked in the forward hook"
            else:
                s = _sample_dim(seen[i][0], a.shape, n, ref.k)
            if s is not None:
                def keep(g):
                    store(module, g)

                if sink is not None:  # a replay's affine maps may hand their factors instead
                    keep.linear = lambda *f: sink.linear(module, *f)
                got = replay(module, args, kwargs, s, keep)
                if not isinstance(got, str):
                    replayed[module] = got[1]
                    return got[0]
                why = got
            replayed[module] = why or "its input has no dim of the samples"
            return own(*args, **kwargs) if own else type(module).forward(module, *args, **kwargs)

        return own, forward

    def forward_hook(module, args, kwargs, output):
        i, ncalls[module] = ncalls[module], ncalls[module] + 1
        why = call_form(module, args, kwargs, output)
        s = None
        if not why:
            s, why = _layout(ref, module, i, *call_shapes(args, kwargs, output), n)
        restore(module)
        if module in replayed:  # output is the replay's (or the own forward's, with a reason)
            got = replayed.pop(module)
            why = why or (got if isinstance(got, str) else None)
            if not why:
                edges.extend(torch.autograd.graph.get_gradient_edge(t) for t in got
                             if t.requires_grad)
        if why:
            rejected.setdefault(plan.owners[module], why)
            return None
        if replay_for(module) is not None:
            return None
        if not output.requires_grad:
            return None
        if sink is None and fuses(module, args[0]):
            # The edge is the conv's input: reaching it runs FusedConv's backward.
            edges.append(torch.autograd.graph.get_gradient_edge(args[0]))
            return FusedConv.apply(args[0], module, [output.detach()],
                                   lambda g: store(module, g))
        saved, rule = [args[0].detach().movedim(s, 0)], rule_for(module)[0]

        def on_grad(d):  # ∂L/∂output (of the value before any later in-place change)
            if sink is None:
                store(module, rule(module, saved[0], d.movedim(s, 0)))
            else:
                sink.layer(module, saved[0], d.movedim(s, 0))
            saved.clear()  # free the input now, as autograd frees its saved tensors

        # The hook refers to neither the output nor the graph: no reference cycle keeps
        # activations alive after the call (one measurably slowed the next forward).
        output.register_hook(on_grad)
        edges.append(torch.autograd.graph.get_gradient_edge(output))
        return None

    handles = [h for m in plan.owners for h in (
        m.register_forward_pre_hook(pre_hook, with_kwargs=True),
        m.register_forward_hook(forward_hook, with_kwargs=True))]
    own_forwards = {}

    def store_free(pid: int, g: Tensor) -> None:
        grads[pid] = grads[pid] + g.reshape(n, -1) if pid in grads else g.reshape(n, -1)

    capture = AdditiveCapture(plan.free, n, store_free) if plan.free else None
    try:
        for m in plan.owners:
            if replay_for(m) is not None:
                own_forwards[m], m.forward = replaying_forward(m)
        if capture is None:
            outputs = model(inputs)
        else:
            capture.swap()
            with capture:
                outputs = model(inputs)
    finally:
        if capture is not None:
            capture.restore()
        for h in handles:
            h.remove()
        for m, own in own_forwards.items():
            if own is None:
                del m.forward
            else:
                m.forward = own
        for _, holder, k, p in reversed(swapped):  # a forward that raised mid-call
            holder._parameters[k] = p
    for m, name in plan.owners.items():
        if ncalls[m] == 0:
            rejected.setdefault(name, NEVER_CALLED)
        elif ncalls[m] != len(ref.calls[m]):
            rejected.setdefault(name, f"called {ncalls[m]} times with {n} samples but "
                                      f"{len(ref.calls[m])} times with {ref.k}")
    # The loss on the outputs cut from the model: its backward (and the coupling check's)
    # reaches no hook of the model's graph; the model's backward starts from its result.
    real = torch.utils._pytree.tree_leaves(outputs)
    real = [t for t in real if isinstance(t, Tensor) and t.requires_grad]
    cut = [t.detach().requires_grad_() for t in real]
    swap = dict(zip(map(id, real), cut, strict=True))
    outputs = torch.utils._pytree.tree_map(lambda t: swap.get(id(t), t), outputs)
    losses = per_sample_losses(loss_fn, outputs, targets)
    coupled = batch_coupling(ref, losses, outputs) if coupling else None
    if coupled:
        return {}, rejected, coupled
    seeds = check_coupled_outputs(loss_fn, outputs, cut, targets, losses, loss_check) \
        if cut else []
    roots = [t for t, g in zip(real, seeds, strict=True) if g is not None]
    seeds = [g for g in seeds if g is not None]
    del outputs, losses, cut
    params = {pid: (plan.params[pid], plan.owners_of[pid]) for pid in plan.covered
              if pid not in plan.free}
    leaves = dict(capture.leaves) if capture is not None else {}
    # Backward to the layer outputs only (gradient edges hold no activations), so autograd
    # never forms the summed weight gradients; the tensor hooks turn each δ into per-sample
    # gradients as it arrives. The real parameters are reached only by uses outside the calls.
    if (edges or params or leaves) and roots:
        plist = [p for p, _ in params.values()] + [plan.params[pid] for pid in leaves]
        got = torch.autograd.grad(roots, edges + plist + list(leaves.values()), seeds,
                                  allow_unused=True)[len(edges):]
        got, outside, at_leaf = (got[:len(params)], got[len(params):len(plist)],
                                 got[len(plist):])
        for pid, g in zip(leaves, outside, strict=True):
            if g is not None:
                capture._reject(pid, "also used outside the model's forward (by the loss?)")
        capture is None or capture.verify(dict(zip(leaves, at_leaf, strict=True)))
        for (_, ms), g in zip(params.values(), got, strict=True):
            if g is not None:
                for m in ms:
                    rejected.setdefault(plan.owners[m], "a parameter of it is also used outside "
                                                        "its call (a tied weight?)")
    if capture is not None:
        rejected.update(capture.rejected)
    bad = {m for m, name in plan.owners.items() if name in rejected}
    keep = {pid: grads[pid] if pid in grads else None if sink is not None else plan.params[
            pid].new_zeros(n, plan.params[pid].numel())
            for pid in plan.covered if not any(m in bad for m in plan.owners_of[pid])
            and not (pid in plan.free and plan.free[pid][2] in rejected)}
    return keep, rejected, None
