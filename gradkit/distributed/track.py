"""``DDPTracker``: the :class:`~gradkit.track.Tracker` inside ``DistributedDataParallel``
training, beside the DDP noise hook (:class:`~gradkit.distributed.DDPNoiseScale`); rank 0 alone
writes the run folder.

What the record means under DDP, with ``W`` processes each holding a local batch of ``b_r``:

- The tracker's columns (per-sample norms and their quantiles, ``grad_norm``, ``grad_sq``,
  ``trace_sigma``, ``b_simple``, ``b_simple_ema``, ``loss``, the Gram matrices) describe
  **rank 0's local batch** only: each of its samples' gradient of its own loss, and the batch
  gradient of rank 0's own backward (``Tracker(local_grads=True)``), not the all-reduced
  ``.grad``. ``b_simple`` is then the noise scale of ``b_0`` samples. The other ranks compute
  no per-sample statistic and never write the run folder (their batches are other samples of
  the same distribution). Rank 0 keeps its own backward's gradient (one more copy of the
  trainable parameters' size) until the step ends.
- ``update_size`` is the step the optimizer took, from the reduced gradient (the same on every
  rank).
- With ``noise=DDPNoiseScale(ddp_model)``, the hook's measurement of every step (the global
  batch ``b_big = Σ_r b_r`` against the local ones: ``small_sq``, ``big_sq``, the unbiased
  ``grad_sq`` and ``trace_sigma``, their EMAs and ``b_simple``; definitions in
  :mod:`gradkit.distributed.noise_hook`) is written beside the row of the same step, as the
  table ``ddp_noise`` (``load_run(out).tables["ddp_noise"]``), and with ``tensorboard=`` as
  the scalars ``gradkit/ddp/<field>``. A resumed run starts the hook's EMA afresh (its state
  is not in the record).

>>> # in each of the W processes, after init_process_group:           # doctest: +SKIP
>>> ddp = DistributedDataParallel(model)
>>> noise = DDPNoiseScale(ddp, ema=0.95)
>>> tracker = DDPTracker(ddp, "runs/ddp", noise=noise, gram_every=50)   # same out everywhere
>>> for x, y in loader:                   # a DistributedSampler's shard
...     with tracker.step(labels=y, epoch=epoch):
...         loss = F.cross_entropy(ddp(x), y)
...         opt.zero_grad()
...         loss.backward()
...     opt.step()
>>> tracker.close()
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from gradkit.distributed.noise_hook import DDPNoiseScale, NoiseStep
from gradkit.track import Tracker

__all__ = ["DDPTracker"]

TABLE = "ddp_noise"


class DDPTracker:
    """Records a DDP training's gradient statistics into ``out`` from rank 0 (module docstring).

    ``ddp_model``: the ``DistributedDataParallel`` model; ``noise``: its
    :class:`DDPNoiseScale`, optional (this tracker then calls ``noise.step`` itself); every
    other keyword goes to :class:`~gradkit.track.Tracker` (``gram_every``, ``reduction`` of the
    *local* loss, ``tensorboard``, ...), on rank 0. Call it the same way on every rank.
    """

    def __init__(self, ddp_model: DistributedDataParallel, out: str | Path, *,
                 noise: DDPNoiseScale | None = None, **tracker_kwargs):
        if not isinstance(ddp_model, DistributedDataParallel):
            raise TypeError(f"ddp_model must be a DistributedDataParallel model, got "
                            f"{type(ddp_model).__name__}")
        if noise is not None and (not isinstance(noise, DDPNoiseScale)
                                  or noise.ddp_model is not ddp_model):
            raise ValueError("noise must be the DDPNoiseScale of this ddp_model")
        if "local_grads" in tracker_kwargs:
            raise TypeError("DDPTracker sets local_grads itself (True): do not pass it")
        self.rank = dist.get_rank(ddp_model.process_group)
        self.noise = noise
        self.tracker = (Tracker(ddp_model.module, out, local_grads=True, **tracker_kwargs)
                        if self.rank == 0 else None)
        self._rows: list[dict] = []

    @contextmanager
    def step(self, labels=None, epoch: int | None = None, inputs=None,
             batch_size: int | None = None, grad_scale: float = 1.0):
        """Around one step's forward and backward on every rank (as
        :meth:`Tracker.step <gradkit.track.Tracker.step>`, whose step context it yields on
        rank 0, None elsewhere); ``batch_size``: this rank's number of samples for the noise
        hook (default ``len(labels)``)."""
        if self.noise is not None:
            if batch_size is None and labels is None:
                raise ValueError("give labels= or batch_size=: the noise hook needs this "
                                 "rank's number of samples")
            self.noise.step(batch_size=len(labels) if batch_size is None else batch_size)
        if self.tracker is None:
            yield None
            return
        before = len(self.noise) if self.noise is not None else 0
        with self.tracker.step(labels, epoch, inputs, grad_scale) as s:
            yield s
        if self.noise is not None:
            fresh = len(self.noise) > before  # a step without backward added no row
            hook = asdict(self.noise.last) if fresh else dict.fromkeys(
                NoiseStep.__dataclass_fields__, math.nan)
            hook.pop("step")  # the hook's own count; the row's step is the tracker's
            step = self.tracker.step_index - 1
            self._rows.append({"step": step, **hook})
            if self.tracker.writer is not None:
                for name, v in hook.items():
                    if math.isfinite(v):
                        self.tracker.writer.add_scalar(f"gradkit/ddp/{name}", v, step)
            if len(self._rows) >= self.tracker.flush_every:
                self.flush()

    def flush(self) -> None:
        """Write the rows kept so far (rank 0; nothing elsewhere)."""
        if self.tracker is not None:
            self.tracker.flush()
            self.tracker.folder.write_rows(self.tracker.session, self._rows, table=TABLE)
            self._rows = []

    def close(self) -> None:
        """Write every row; the run folder is complete (rank 0)."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker.folder.write_rows(self.tracker.session, self._rows, table=TABLE)
            self._rows = []

    def __enter__(self) -> DDPTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
