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

import functools
from typing import Any

import torch
from torch import Tensor, nn

from gradkit.grads.coupling import check_coupled_outputs
from gradkit.grads.freeparams import AdditiveCapture
from gradkit.grads.layerplan import LayerPlan
from gradkit.grads.reference import (
    NEVER_CALLED,
    Reference,
    batch_coupling,
    call_form,
    call_shapes,
    first_tensor,
)
from gradkit.grads.rules import any_sample_dim, replay_for, rule_for
from gradkit.grads.rules.conv import FusedConv, fuses
from gradkit.grads.samples import num_samples, per_sample_losses

__all__ = ["LayerPass", "LayerPlan", "layers_pass"]

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


class LayerPass:
    """One forward and one backward of a chunk through the hooked modules of ``plan``.

    The forward (:meth:`forward`) swaps each hooked module's parameters for fresh leaves during
    its calls (:meth:`_swap_in`, check 4), checks every call (:meth:`_after_call`, checks 1-3),
    runs a replay rule instead of its module's forward (:meth:`_replay_call`) and hooks each
    accepted call's output, whose gradient the rule turns into per-sample gradients
    (:meth:`_watch`). The backward (:meth:`backward`) goes from the loss to those outputs only;
    :meth:`result` keeps the parameters of the modules no check rejected.

    Without a ``sink`` the per-sample gradients are kept here, ``{parameter id: [n, numel]}``;
    with one (:class:`~gradkit.grads.gramsink.GramSink`) each hooked layer's input and output
    gradient goes to ``sink.layer(module, a, δ)`` and every stored gradient to
    ``sink.store(module, {name: [n, ...]})`` instead (the pass never holds ``[n, P]``); a small
    convolution takes its gradients in one step only where ``sink.materialises`` says its
    weight is reduced from them anyway.
    """

    def __init__(self, plan: LayerPlan, ref: Reference, n: int, sink: Any = None):
        self.plan, self.ref, self.n, self.sink = plan, ref, n, sink
        self.grads: dict[int, Tensor] = {}
        self.edges: list = []  # where each layer output enters the graph (storage-free handles)
        self.rejected: dict[str, str] = {}
        self.ncalls = dict.fromkeys(plan.owners, 0)
        self.swapped: list[tuple[nn.Module, nn.Module, str, Tensor]] = []
        self.replayed: dict[nn.Module, Any] = {}  # replay module -> its call's edges, or why not
        self.capture: AdditiveCapture | None = None
        self.own_forwards: dict[nn.Module, Any] = {}  # a replay module's own forward attribute

    # -- storing per-sample gradients ---------------------------------------------------------
    def store(self, module: nn.Module, per_sample: dict[str, Tensor]) -> None:
        """Per-sample gradients ``{name: [n, *shape]}`` of ``module``'s parameters."""
        if self.sink is not None:
            self.sink.store(module, per_sample)
            return
        for name, g in per_sample.items():
            self._add(id(module.get_parameter(name)), g)

    def _add(self, pid: int, g: Tensor) -> None:
        g = g.reshape(self.n, -1)
        self.grads[pid] = self.grads[pid] + g if pid in self.grads else g  # shared layers add up

    # -- the forward ----------------------------------------------------------------------------
    def forward(self, model: nn.Module, inputs: Any) -> Any:
        """The model's outputs, every hooked call checked; hooks and swaps undone even if it
        raised."""
        plan = self.plan
        handles = [h for m in plan.owners for h in (
            m.register_forward_pre_hook(self._swap_in, with_kwargs=True),
            m.register_forward_hook(self._after_call, with_kwargs=True))]
        self.capture = AdditiveCapture(plan.free, self.n, self._add) if plan.free else None
        try:
            for m in plan.owners:
                if replay_for(m) is not None:
                    self.own_forwards[m] = m.__dict__.get("forward")
                    m.forward = functools.partial(self._replay_call, m)
            if self.capture is None:
                outputs = model(inputs)
            else:
                self.capture.swap()
                with self.capture:
                    outputs = model(inputs)
        finally:
            if self.capture is not None:
                self.capture.restore()
            for h in handles:
                h.remove()
            for m, own in self.own_forwards.items():
                if own is None:
                    del m.forward
                else:
                    m.forward = own
            for _, holder, k, p in reversed(self.swapped):  # a forward that raised mid-call
                holder._parameters[k] = p
        self._count_calls()
        return outputs

    def _swap_in(self, module, args, kwargs) -> None:
        """Fresh leaves for the call: the backward then reaches the real parameters only
        through uses outside it (check 4)."""
        for holder, k in self.plan.slots[module]:
            p = holder._parameters[k]
            self.swapped.append((module, holder, k, p))
            holder._parameters[k] = p.detach().requires_grad_()

    def _restore(self, module: nn.Module) -> None:
        while self.swapped and self.swapped[-1][0] is module:
            _, holder, k, p = self.swapped.pop()
            holder._parameters[k] = p

    def _replay_call(self, module: nn.Module, *args, **kwargs):
        """``module``'s forward during the pass: its replay rule *instead of* its own forward
        (one computation, not two), its own forward where the replay does not apply."""
        i, seen, a = self.ncalls[module], self.ref.calls[module], first_tensor((args, kwargs))
        s, why = None, None
        if i >= len(seen) or isinstance(seen[i], str) or a is None:
            why = "checked in the forward hook"
        else:
            s = _sample_dim(seen[i][0], a.shape, self.n, self.ref.k)
        if s is not None:
            got = replay_for(module)(module, args, kwargs, s, self._keeper(module))
            if not isinstance(got, str):
                self.replayed[module] = got[1]
                return got[0]
            why = got
        self.replayed[module] = why or "its input has no dim of the samples"
        own = self.own_forwards[module]
        return own(*args, **kwargs) if own else type(module).forward(module, *args, **kwargs)

    def _keeper(self, module: nn.Module):
        """The ``store`` a replay calls; with a sink it has ``store.linear(names, wants, x, δ)``,
        which takes an affine map's factors instead of its per-sample gradients (True) or
        declines (False)."""
        def keep(g):
            self.store(module, g)

        if self.sink is not None:
            keep.linear = functools.partial(self.sink.linear, module)
        return keep

    def _after_call(self, module, args, kwargs, output):
        """Checks 1-3 on the call, then the output hooked for the rule (or the replay's
        intermediate tensors taken as edges)."""
        i, self.ncalls[module] = self.ncalls[module], self.ncalls[module] + 1
        why = call_form(module, args, kwargs, output)
        s = None
        if not why:
            s, why = _layout(self.ref, module, i, *call_shapes(args, kwargs, output), self.n)
        self._restore(module)
        if module in self.replayed:  # output is the replay's (or the own forward's, with a reason)
            got = self.replayed.pop(module)
            why = why or (got if isinstance(got, str) else None)
            if not why:
                self.edges.extend(torch.autograd.graph.get_gradient_edge(t) for t in got
                                  if t.requires_grad)
        if why:
            self.rejected.setdefault(self.plan.owners[module], why)
            return None
        if replay_for(module) is not None or not output.requires_grad:
            return None
        if fuses(module, args[0]) and (self.sink is None
                                       or self.sink.materialises(module, args[0], output)):
            # The edge is the conv's input: reaching it runs FusedConv's backward.
            self.edges.append(torch.autograd.graph.get_gradient_edge(args[0]))
            return FusedConv.apply(args[0], module, [output.detach()],
                                   functools.partial(self.store, module))
        self._watch(module, args[0].detach().movedim(s, 0), s, output)
        return None

    def _watch(self, module: nn.Module, a: Tensor, s: int, output: Tensor) -> None:
        """Hook ``output``: its gradient ``δ`` (of the value before any later in-place change)
        and the saved input ``a`` go to the rule (or the sink) as the backward reaches it."""
        saved, rule, sink, store = [a], rule_for(module)[0], self.sink, self.store

        def on_grad(d):
            if sink is None:
                store(module, rule(module, saved[0], d.movedim(s, 0)))
            else:
                sink.layer(module, saved[0], d.movedim(s, 0))
            saved.clear()  # free the input now, as autograd frees its saved tensors

        # The hook refers to neither the output nor the graph (only the pass, whose edges are
        # dropped when it ends, layers_pass): no reference cycle keeps activations alive after
        # the call (one measurably slowed the next forward).
        output.register_hook(on_grad)
        self.edges.append(torch.autograd.graph.get_gradient_edge(output))

    def _count_calls(self) -> None:
        """Check 3, and as many calls as in the reference pass."""
        for m, name in self.plan.owners.items():
            calls, want = self.ncalls[m], len(self.ref.calls[m])
            if calls == 0:
                self.rejected.setdefault(name, NEVER_CALLED)
            elif calls != want:
                self.rejected.setdefault(name, f"called {calls} times with {self.n} samples "
                                               f"but {want} times with {self.ref.k}")

    # -- the backward ---------------------------------------------------------------------------
    def backward(self, roots: list[Tensor], seeds: list[Tensor]) -> None:
        """Backward to the layer outputs only (gradient edges hold no activations), so autograd
        never forms the summed weight gradients; the tensor hooks turn each δ into per-sample
        gradients as it arrives. The real parameters, reached only by uses outside the calls,
        reject their modules (check 4); a free parameter's leaf is verified by the capture."""
        plan, capture = self.plan, self.capture
        params = {pid: (plan.params[pid], plan.owners_of[pid]) for pid in plan.covered
                  if pid not in plan.free}
        leaves = dict(capture.leaves) if capture is not None else {}
        if (self.edges or params or leaves) and roots:
            plist = [p for p, _ in params.values()] + [plan.params[pid] for pid in leaves]
            got = torch.autograd.grad(roots, self.edges + plist + list(leaves.values()), seeds,
                                      allow_unused=True)[len(self.edges):]
            got, outside, at_leaf = (got[:len(params)], got[len(params):len(plist)],
                                     got[len(plist):])
            for pid, g in zip(leaves, outside, strict=True):
                if g is not None:
                    capture._reject(pid, "also used outside the model's forward (by the loss?)")
            capture is None or capture.verify(dict(zip(leaves, at_leaf, strict=True)))
            for (_, ms), g in zip(params.values(), got, strict=True):
                if g is not None:
                    for m in ms:
                        self.rejected.setdefault(plan.owners[m], "a parameter of it is also "
                                                                 "used outside its call (a tied "
                                                                 "weight?)")
        if capture is not None:
            self.rejected.update(capture.rejected)

    def result(self) -> dict[int, Tensor | None]:
        """``{parameter id: [n, numel]}`` of the parameters of modules no check rejected (None
        where a sink took them; zeros where no gradient reached them)."""
        plan, rejected = self.plan, self.rejected
        bad = {m for m, name in plan.owners.items() if name in rejected}
        keep = {}
        for pid in plan.covered:
            if any(m in bad for m in plan.owners_of[pid]) or (
                    pid in plan.free and plan.free[pid][2] in rejected):
                continue
            keep[pid] = self.grads.get(pid)
            if keep[pid] is None and self.sink is None:
                keep[pid] = plan.params[pid].new_zeros(self.n, plan.params[pid].numel())
        return keep


def layers_pass(model, loss_fn, inputs, targets, plan: LayerPlan, ref: Reference,
                coupling: bool = True, loss_check: bool = False, sink: Any = None,
                ) -> tuple[dict[int, Tensor | None], dict[str, str], str | None]:
    """One forward and one backward of the chunk (:class:`LayerPass`) -> (``{parameter id:
    Tensor[n, numel]}`` for the parameters of accepted modules, None where ``sink`` took them,
    ``{module name: why rejected}``, why the samples of the batch interact
    (:func:`batch_coupling`, with ``coupling`` when ``ref`` holds the values of this chunk's
    probed sample; the gradients are then not per-sample ones and the caller must discard
    them)). With ``loss_check``, whether the loss couples the samples is checked at the
    model's outputs (:func:`~gradkit.grads.coupling.check_coupled_outputs`, raising
    :class:`~gradkit.grads.coupling.CoupledLossError`): backward passes through the loss only,
    the model's single backward then starting from the outputs' per-sample gradient. A
    parameter taken outside any rule (an additive free parameter, :mod:`~gradkit.grads.
    freeparams`) maps to its ``[n, numel]`` gradient even with a sink."""
    run = LayerPass(plan, ref, num_samples(inputs), sink)
    try:
        outputs = run.forward(model, inputs)
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
            return {}, run.rejected, coupled
        seeds = check_coupled_outputs(loss_fn, outputs, cut, targets, losses, loss_check) \
            if cut else []
        roots = [t for t, g in zip(real, seeds, strict=True) if g is not None]
        seeds = [g for g in seeds if g is not None]
        del outputs, losses, cut
        run.backward(roots, seeds)
        return run.result(), run.rejected, None
    finally:
        run.edges = []  # the graph's hooks refer to the pass: it must not refer to the graph
