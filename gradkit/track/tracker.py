"""``Tracker``: gradient statistics of the user's own training loop, from its own backward.

Per step (``with tracker.step(labels=y, epoch=e):`` around forward and backward), one row of
``scalars``: the columns are defined in :mod:`gradkit.track.record`.

The per-sample columns (norms, ``grad_sq``, ``trace_sigma``, ``b_simple``, Gram) cover the
parameters of the tracked layers (:mod:`gradkit.track.capture`), read from the step's own
backward, and, with ``loss_fn`` and ``step(inputs=x)``, the other parameters by the exact
fallback (:mod:`gradkit.track.fallback`: one extra forward and backward per step, its cost
timed on the first step and stated in a warning and ``meta.json``). Without them an untracked
module's parameters are named in a warning and in ``meta.json`` (``missing_parameters``).
"""

from __future__ import annotations

import math
import platform
import time
import warnings
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

import gradkit
from gradkit.core.params import trainable_named_parameters
from gradkit.grads.noise import StreamingNoiseScale, b_simple, trace_sigma_of_norms
from gradkit.track.board import Board, writer_class
from gradkit.track.capture import Capture, batch_statistics
from gradkit.track.curvature import HessianSchedule
from gradkit.track.fallback import ExactFallback, coverage_message, sample_alone
from gradkit.track.record import FORMAT, RunFolder

__all__ = ["Tracker"]

_QUANTILES = (0.1, 0.5, 0.9)


class Tracker:
    """Records gradient statistics of ``model``'s training into the run folder ``out``.

    ``gram_every``: write the ``N x N`` per-sample Gram matrix every that many steps (0: never);
    ``reduction``: how the loss combines the samples ("mean" or "sum"); ``ema``: decay of
    ``b_simple_ema``; ``loss_fn``: ``loss_fn(outputs, labels)``, optional: with it and
    ``step(inputs=x)`` the first step also checks that the samples do not interact (sample 0's
    loss alone, one extra forward and backward of one sample, that step only); ``resume``:
    continue the record of an existing run folder (its step numbering goes on after its last
    recorded step, or from ``start_step``, whose later rows of earlier sessions are then
    superseded: pass the step of the checkpoint the training resumes from); ``flush_every``:
    rows kept in memory before they are written (a kill loses at most these); ``budget``: bytes
    one layer may materialise (:mod:`gradkit.grads.gramsink`); ``update_size``: record
    ``||θ_{t+1} - θ_t||`` (keeps a copy of the trainable parameters between steps; False: NaN);
    ``tensorboard``: also write every finite column as a scalar ``gradkit/<column>`` and the
    per-sample norms as a histogram ``gradkit/per_sample_norm``, at the row's step: True to
    ``out/tensorboard`` (``torch.utils.tensorboard``; needs ``tensorboard``; a session hides
    the earlier sessions' events from its first step on, as ``load_run`` hides their rows), or
    a ``SummaryWriter`` of the caller's (a Lightning ``TensorBoardLogger.experiment``; not
    closed by the tracker), then :attr:`writer`. TensorBoard keeps scalars in float32;
    ``sketch_k``: with each Gram matrix also the ``[N, sketch_k]`` gradient sketch of
    :func:`~gradkit.grads.gradient_sketch` of the tracked layers (seeded by ``sketch_seed``;
    ``Run.sketches``); ``fallback``: take the parameters the hooks cannot read by the exact
    fallback when ``loss_fn`` and ``step(inputs=...)`` are given (False: leave them out);
    ``hessian_every``: the loss Hessian's top eigenvalue (``hessian_top``) every that many steps
    (0: never; needs ``loss_fn`` and ``inputs``), by at most ``hessian_iters`` Hessian-vector
    products, each about two backward passes (:mod:`gradkit.track.curvature`).
    ``local_grads``: take the batch gradient from this process's own backward (hooks on the
    parameters) instead of ``.grad``, which ``DistributedDataParallel`` replaces by the mean
    over every process's batch (:class:`gradkit.distributed.DDPTracker` sets it): every column
    then describes this process's batch.
    """

    def __init__(self, model: nn.Module, out: str | Path, *, gram_every: int = 50,
                 reduction: str = "mean", ema: float = 0.9, loss_fn=None, resume: bool = True,
                 start_step: int | None = None, flush_every: int = 20,
                 budget: int | None = None, update_size: bool = True,
                 tensorboard=False, sketch_k: int | None = None, sketch_seed: int = 0,
                 fallback: bool = True, hessian_every: int = 0, hessian_iters: int = 20,
                 local_grads: bool = False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        for name, v, low in (("gram_every", gram_every, 0), ("flush_every", flush_every, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if sketch_k is not None and (isinstance(sketch_k, bool) or not isinstance(sketch_k, int)
                                     or sketch_k < 1):
            raise ValueError(f"sketch_k must be a positive integer or None, got {sketch_k!r}")
        if start_step is not None and (not isinstance(start_step, int) or start_step < 0):
            raise ValueError(f"start_step must be a non-negative integer, got {start_step!r}")
        self.model, self.gram_every, self.reduction = model, gram_every, reduction
        self.loss_fn, self.flush_every, self.update_size = loss_fn, flush_every, update_size
        self.local_grads, self._local = bool(local_grads), {}
        self.sketch = None if sketch_k is None else (sketch_k, int(sketch_seed))
        self.capture = Capture(model, budget)
        self.hessian = HessianSchedule(hessian_every, hessian_iters, loss_fn)
        self.fallback = ExactFallback(model, loss_fn, budget) if fallback and loss_fn else None
        if not self.capture.modules and self.fallback is None:
            raise ValueError(f"{type(model).__name__} has no layer the tracker reads from the "
                             f"backward ({self.capture.untracked}): give Tracker(loss_fn=...) "
                             "and step(inputs=x) for the exact fallback")
        writer = writer_class(tensorboard)
        self.folder = RunFolder(out, resume)
        last = self.folder.last_step()
        self.step_index = (0 if last is None else last + 1) if start_step is None else start_step
        self.noise = StreamingNoiseScale(ema=ema)
        self._replay_ema(self.folder.scalars())
        self.session = len(self.folder.meta.get("sessions", []))
        self.interacting: list[str] = []  # modules through which the samples interact
        self._fell_back: dict[int, Tensor] = {}  # the parameters the last step's fallback took
        self._write_meta(start=True, budget=budget, ema=ema)
        if self.capture.untracked:
            warnings.warn(coverage_message(self.capture.untracked, self.capture.missing(),
                                           self.fallback is not None), RuntimeWarning,
                          stacklevel=2)
        self._rows: list[dict] = []  # finished rows, not yet written
        self._pending: dict | None = None  # the last row, waiting for its update size
        self._theta: list[Tensor] | None = None
        self._checked, self._closed, self._said_no_inputs = False, False, False
        self.board = Board(tensorboard, writer, self.folder.path, self.step_index)
        self.writer = self.board.writer

    # -- the meta data and the EMA across sessions -------------------------------------------
    def _write_meta(self, start: bool = False, **params) -> None:
        meta = dict(self.folder.meta)
        named = trainable_named_parameters(self.model)
        model = {"class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
                 "parameters": sum(p.numel() for p in self.model.parameters()),
                 "trainable": sum(p.numel() for _, p in named)}
        if meta and start and (meta["model"]["class"], meta["model"]["trainable"]) != (
                model["class"], model["trainable"]):
            raise ValueError(f"{self.folder.path / 'meta.json'}: the run was recorded for "
                             f"{meta['model']['class']} with {meta['model']['trainable']} "
                             f"trainable parameters, not {model['class']} with "
                             f"{model['trainable']}: give the tracker another out=")
        model.update({
            "tracked_modules": {n: type(m).__name__ for m, n in self.capture.modules.items()},
            "untracked_modules": dict(self.capture.untracked),
            "disabled_modules": dict(self.capture.disabled),
            "interacting_modules": list(self.interacting),
            "missing_parameters": [] if self._fell_back else self.capture.missing(),
            "fallback_parameters": self.capture.names_of(self._fell_back)})
        meta.update(format=FORMAT, model=model)
        if start:
            meta["tracker"] = {"gram_every": self.gram_every, "reduction": self.reduction,
                               "flush_every": self.flush_every,
                               "update_size": self.update_size,
                               "sketch": None if self.sketch is None else list(self.sketch),
                               "loss_fn": getattr(self.loss_fn, "__name__", None)
                               if self.loss_fn is not None else None, **params}
            meta.setdefault("sessions", []).append({
                "session": len(meta.get("sessions", [])), "start_step": self.step_index,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": {"torch": torch.__version__, "gradkit": gradkit.__version__,
                             "python": platform.python_version()}})
        self.folder.write_meta(meta)

    def _replay_ema(self, frame) -> None:
        """The EMA state of the earlier sessions, from their recorded rows (before this one)."""
        for tr, gsq, n, step in zip(frame["trace_sigma"], frame["grad_sq"], frame["n"],
                                    frame["step"], strict=True):
            if step < self.step_index and n >= 2 and math.isfinite(tr) and math.isfinite(gsq):
                self.noise.update(tr + gsq, gsq, 1, int(n))

    # -- one step ------------------------------------------------------------------------------
    def step(self, labels=None, epoch: int | None = None, inputs=None,
             grad_scale: float = 1.0) -> _Step:
        """The context of one training step: enter it before the forward, leave it after
        ``loss.backward()`` (before ``optimizer.step()``). ``labels`` (dim 0: the samples) are
        stored with the Gram matrices and give ``N``; ``inputs`` only serve the first step's
        coupling check (with ``loss_fn``); ``grad_scale``: the factor the loss was multiplied by
        before ``backward`` (``scaler.get_scale()`` of a ``torch.amp.GradScaler``), divided out
        of every recorded number. A step whose gradients are not finite (an overflow the
        scaler skips) is recorded with NaN statistics."""
        if self._closed:
            raise RuntimeError("this Tracker is closed; create a new one to continue the run")
        if not (isinstance(grad_scale, int | float) and math.isfinite(grad_scale)
                and grad_scale > 0):
            raise ValueError(f"grad_scale must be a positive finite number, got {grad_scale!r}")
        return _Step(self, labels, epoch, inputs, grad_scale)

    def _begin(self, s: _Step) -> None:
        self._settle()
        labels = s.labels
        n = None if labels is None else len(labels)
        check = not self._checked
        want = None
        self._warn_interacting()  # the samples interact: no sample alone to compare with
        if check and self.loss_fn is not None and s.inputs is not None and labels is not None \
                and not self.interacting and self.capture.covered():
            want = sample_alone(self.model, self.loss_fn, s.inputs, labels,
                                self.capture.covered())
        s.probed = want is not None
        s.mode = "gram" if self.gram_every and self.step_index % self.gram_every == 0 else "norms"
        self.capture.begin(n, s.mode, self.reduction == "mean", check, want, s.grad_scale,
                           self.sketch if s.mode == "gram" else None)
        self._local = {}
        if self.local_grads:  # removed with the capture's hooks
            self.capture.handles += [p.register_hook(partial(self._keep, id(p)))
                                     for _, p in trainable_named_parameters(self.model)]
        s.started = time.perf_counter()

    def _warn_interacting(self) -> None:
        bn = batch_statistics(self.model, self.interacting, stacklevel=5)
        if bn:
            self.interacting = bn
            self._write_meta()

    def _keep(self, pid: int, g: Tensor) -> None:
        self._local[pid] = g if pid not in self._local else self._local[pid] + g

    def _finish(self, s: _Step) -> None:
        named = trainable_named_parameters(self.model)
        local, held = self._local if self.local_grads else None, {}
        if local is not None and not self._checked:  # the check reads .grad: this process's
            held = {id(p): p.grad for _, p in named}
            for _, p in named:
                p.grad = local.get(id(p))
        try:
            outs = self.capture.end(stacklevel=4)
        finally:
            for _, p in named if held else ():
                p.grad = held[id(p)]
        outs.update(self._fall_back(s))
        if not self._checked and self.capture.checked:
            self.folder.meta["sessions"][-1]["checks"] = {
                "per_sample_sum_vs_grad": True,
                "sample_alone_vs_batch": s.probed or "not run: give Tracker(loss_fn=...) and "
                "step(inputs=...) to check the loss's reduction and that samples do not interact"}
            self._write_meta()
        elif any(k not in self.folder.meta["model"]["disabled_modules"]
                 for k in self.capture.disabled):
            self._write_meta()
        self._checked = self._checked or self.capture.checked or not self.capture.modules
        n = self.capture.n
        factor = (1.0 if self.reduction == "mean" else 1.0 / max(n or 1, 1)) / s.grad_scale
        covered = {**self.capture.covered(), **self._fell_back}
        with torch.no_grad():  # one transfer to the host, not one per parameter
            grads = [(local.get(id(p)) if local is not None else p.grad, id(p) in covered)
                     for _, p in named]
            sq = [(g.double().square().sum(), c) for g, c in grads if g is not None]
            both = torch.stack([torch.stack([v, v * c]) for v, c in sq]).sum(0).tolist() \
                if sq else [0.0, 0.0]
        gsq_all, gsq = both[0] * factor ** 2, both[1] * factor ** 2
        row = dict.fromkeys(("norm_min", "norm_q10", "norm_q50", "norm_q90", "norm_max",
                             "trace_sigma", "b_simple"), math.nan)
        parts = list(outs.values())
        K = sum(parts) if parts and n and s.mode == "gram" else None
        sq = (K.diagonal() if K is not None else sum(parts)).cpu() if parts and n else None
        if sq is not None and math.isfinite(gsq) and bool(torch.isfinite(sq).all()):
            sq = sq.clamp_min(0)
            norms = sq.sqrt()
            qs = torch.quantile(norms, torch.tensor(_QUANTILES, dtype=torch.float64)).tolist()
            tr = trace_sigma_of_norms(sq, gsq)
            row.update(norm_min=float(norms.min()), norm_q10=qs[0], norm_q50=qs[1],
                       norm_q90=qs[2], norm_max=float(norms.max()), trace_sigma=tr,
                       b_simple=b_simple(tr, gsq))
            if n >= 2:
                self.noise.update(float(sq.mean()), gsq, 1, n)
            self.board.norms(norms, self.step_index)
            if K is not None:
                self.folder.write_gram(self.step_index, self.session, s.epoch, K,
                                       s.labels,
                                       [k for pid, k in self.capture.names.items()
                                        if pid in covered],
                                       self.capture.sketch)
        loss = s.loss if s.loss is not None else (
            None if s.captured is None else s.captured / s.grad_scale)
        total = sum(p.numel() for _, p in named)
        row.update(step=self.step_index, epoch=s.epoch, session=self.session, n=n,
                   loss=math.nan if loss is None else float(loss), grad_norm=gsq_all ** 0.5,
                   grad_sq=gsq, b_simple_ema=self.noise.b_simple, update_size=math.nan,
                   covered=sum(p.numel() for p in covered.values()) / max(total, 1),
                   gram=int(K is not None and math.isfinite(row["trace_sigma"])))
        if self.hessian.due(self.step_index):
            row.update(self.hessian(self.model, s.inputs, s.labels))
        self._pending, self._local = row, {}
        self._theta = [p.detach().clone() for _, p in named] if self.update_size else None
        self.step_index += 1

    def _fall_back(self, s: _Step) -> dict[str, Tensor]:
        """The exact fallback's part for the parameters the hooks did not take this step; the
        first time, its cost against the step's own, in a warning and ``meta.json``."""
        own = time.perf_counter() - s.started
        covered = self.capture.covered()
        missing = {id(p): p for _, p in trainable_named_parameters(self.model)
                   if id(p) not in covered}
        self._fell_back = {}
        if self.fallback is None or not missing:
            return {}
        names = self.capture.names_of(missing)
        if s.labels is None or s.inputs is None:
            if not self._said_no_inputs:
                self._said_no_inputs = True
                warnings.warn(f"Tracker: step(labels=..., inputs=...) not given: the exact "
                              f"fallback for {names} cannot run, so they are missing from this "
                              "step's per-sample statistics", RuntimeWarning, stacklevel=4)
            return {}
        try:
            got = self.fallback(missing, s.inputs, s.labels, s.mode)
        except (ValueError, RuntimeError) as err:  # the engine refused: training goes on
            self.fallback = None
            self._write_meta()
            warnings.warn(f"Tracker: the exact fallback for {names} stopped ({err}); from this "
                          "step on they are missing from the per-sample statistics (meta.json)",
                          RuntimeWarning, stacklevel=4)
            return {}
        self._fell_back = missing
        if len(self.fallback.seconds) == 1:
            self.folder.meta["fallback"] = self.fallback.first_cost(names, own)
            self._write_meta()
            warnings.warn(self.fallback.cost_message(names, own), RuntimeWarning, stacklevel=4)
        return {"fallback": got}

    def _settle(self) -> None:
        """The pending row's update size (the parameters moved since its backward), then the
        rows written when ``flush_every`` are waiting."""
        if self._pending is not None:
            now = [p.detach() for _, p in trainable_named_parameters(self.model)]
            if self._theta is not None and len(now) == len(self._theta):
                self._pending["update_size"] = float(sum(
                    (a.double() - b.double()).square().sum() for a, b in zip(
                        now, self._theta, strict=True))) ** 0.5
            self._rows.append(self._pending)
            self.board.row(self._pending)
            self._pending, self._theta = None, None
        if len(self._rows) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write the finished rows now (one part file)."""
        self.folder.write_rows(self.session, self._rows)
        self._rows = []

    def close(self) -> None:
        """Measure the last update, write every row. The run folder is complete."""
        if self._closed:
            return
        self._settle()
        self.flush()
        self.board.close()
        self._closed = True

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Step:
    """One step's context (:meth:`Tracker.step`); ``loss`` may be set inside it, otherwise the
    value ``backward()`` was called on is recorded."""

    def __init__(self, tracker: Tracker, labels, epoch, inputs, grad_scale: float):
        self.tracker, self.labels, self.epoch, self.inputs = tracker, labels, epoch, inputs
        self.grad_scale = float(grad_scale)
        self.loss, self.captured, self.mode, self.probed = None, None, "norms", False
        self.started = 0.0

    def __enter__(self) -> _Step:
        self.tracker._begin(self)
        self._backward = torch.Tensor.backward
        step, own = self, self._backward

        def backward(t, *args, **kwargs):  # the loss, as the user's backward sees it
            if t.numel() == 1:
                step.captured = t.detach()
            return own(t, *args, **kwargs)

        torch.Tensor.backward = backward
        return self

    def __exit__(self, kind, err, tb) -> None:
        torch.Tensor.backward = self._backward
        if kind is not None:  # the user's step failed: unhook, record nothing
            for h in self.tracker.capture.handles:
                h.remove()
            self.tracker.capture.handles = []
            return
        self.tracker._finish(self)

