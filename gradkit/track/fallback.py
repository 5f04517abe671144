"""The exact fallback for the parameters the tracker cannot take inside the user's backward.

A module the hooks cannot read (a recurrent or attention layer, whose per-sample gradients
need a replay of its forward; a parameter used in a container's ``forward``, a learned
positional embedding; a BatchNorm; a layer with no rule) would leave its parameters out of
every per-sample statistic. With the loss (``Tracker(loss_fn=...)``) and the step's inputs
(``step(inputs=x)``) the tracker instead takes them exactly by the engine
(:func:`~gradkit.grads.per_sample_norms` / :func:`~gradkit.grads.gradient_gram`, with every
other parameter frozen for the call): one extra forward and backward of the batch per step,
after the user's backward and before ``optimizer.step()``, so at the same parameters. Its
cost, timed on the first step against the step's own forward and backward, is stated in the
warning and in ``meta.json`` (``fallback``).

The user's model is left as it was: ``requires_grad`` flags, ``.grad``, buffers (BatchNorm's
running statistics) and the random number generators are restored.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import Tensor, nn

from gradkit.grads import gradient_gram, per_sample_norms
from gradkit.grads.samples import active_dropout, take

__all__ = ["ExactFallback", "coverage_message", "model_state_kept", "sample_alone"]


class ExactFallback:
    """Per-sample squared norms ``[N]`` or Gram block ``[N, N]`` of some parameters (those no
    tracked layer covers) of the per-sample losses ``loss_fn(model(x_i), y_i)``: the engine's
    rows do not depend on how ``loss_fn`` reduces the batch."""

    def __init__(self, model: nn.Module, loss_fn, budget: int | None):
        self.model, self.loss_fn, self.budget = model, loss_fn, budget
        self.seconds: list[float] = []

    def __call__(self, params: dict[int, Tensor], inputs, labels, mode: str) -> Tensor:
        """One step's contribution of ``params`` (``{id: parameter}``), float64, timed into
        :attr:`seconds`."""
        start = time.perf_counter()
        with _only(self.model, params), model_state_kept(self.model):
            if mode == "gram":
                got = gradient_gram(self.model, self.loss_fn, inputs, labels, budget=self.budget)
            else:
                got = per_sample_norms(self.model, self.loss_fn, inputs, labels,
                                       budget=self.budget).square()
        self.seconds.append(time.perf_counter() - start)
        return got.detach().double()

    def first_cost(self, names: list[str], step_seconds: float) -> dict:
        """What ``meta.json`` records of the first call against the step's own forward and
        backward (``step_seconds``)."""
        return {"parameters": names, "first_step_seconds": self.seconds[0],
                "step_seconds": step_seconds,
                "ratio_to_step": self.seconds[0] / max(step_seconds, 1e-9)}

    def cost_message(self, names: list[str], step_seconds: float) -> str:
        """The first call's cost, and what the numbers are where the model drops at random
        (the fallback's forward draws other masks than the step's own)."""
        cost = self.first_cost(names, step_seconds)
        dropout = active_dropout(self.model)
        return (f"Tracker: the exact fallback for {names} cost {cost['first_step_seconds']:.3g} s "
                f"on the first step, {cost['ratio_to_step']:.2g}x the step's own forward and "
                f"backward ({step_seconds:.3g} s; the first call includes the engine's checks)"
                + (f"; {dropout} drop at random, so its rows are per-sample gradients under "
                   "other masks than the step's" if dropout else ""))


@contextlib.contextmanager
def _only(model: nn.Module, params: dict[int, Tensor]):
    """Every other trainable parameter frozen for the call, then unfrozen."""
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in params]
    try:
        for p in frozen:
            p.requires_grad_(False)
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


@contextlib.contextmanager
def model_state_kept(model: nn.Module):
    """The buffers and the RNGs as they were before (the engine takes gradients by
    ``torch.autograd.grad``: ``.grad`` is never written)."""
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])


def sample_alone(model: nn.Module, loss_fn, inputs, labels,
                 params: dict[int, Tensor]) -> dict[int, Tensor]:
    """Sample 0's gradient of its loss alone (plain autograd; one forward and backward of one
    sample), flat per parameter of ``params`` (``{id: p}``); the model's RNGs and buffers are
    left as they were. The first step's probe (:mod:`gradkit.track.capture`)."""
    with model_state_kept(model):
        out = model(take(inputs, slice(0, 1)))
        loss = loss_fn(out, take(labels, slice(0, 1)))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {pid: (g if g is not None else torch.zeros_like(p)).detach().reshape(-1)
            for (pid, p), g in zip(params.items(), grads, strict=True)}


def coverage_message(untracked: dict[str, str], missing: list[str], fallback: bool) -> str:
    """What the tracker says at its start of the modules the hooks cannot read."""
    if fallback:
        return (f"Tracker: the hooks cannot read {untracked} from the backward; their "
                f"parameters {missing} are taken by the exact fallback: one extra forward and "
                "backward of each step's batch through gradkit.grads (its cost is timed on the "
                "first step and reported then); pass step(inputs=x)")
    return (f"Tracker: no per-sample rule inside the loop for {untracked}; the per-sample "
            "norms, Gram matrices and noise scale cover only the tracked layers' parameters, "
            f"not {missing} (listed in meta.json; grad_norm covers every parameter). Give "
            "Tracker(loss_fn=...) and step(inputs=x) for an exact fallback (one extra forward "
            "and backward per step)")
