"""Gradient noise scale for free inside torch.distributed DistributedDataParallel training.

Public API:

- :class:`DDPNoiseScale` ``(ddp_model, ema=0.95)``: registers a DDP communication hook that
  measures, at every step and identically on every rank, ``b_small``, ``b_big``, ``small_sq``,
  ``big_sq``, the unbiased ``grad_sq`` and ``trace_sigma`` and the EMA ``b_simple``
  (McCandlish et al. 2018, Appendix A; definitions in :mod:`gradkit.distributed.noise_hook`).
  Call ``noise.step(batch_size=len(x))`` before each training forward; read ``noise.last``
  (a :class:`NoiseStep`) after ``loss.backward()`` and ``noise.history`` (a DataFrame) any time.
- :class:`DDPTracker` ``(ddp_model, out, noise=None, **tracker_kwargs)``: the
  :class:`gradkit.track.Tracker` under DDP; rank 0 writes the run (its local batch's
  per-sample statistics, the hook's measurement beside them; :mod:`gradkit.distributed.track`).
- :func:`critical_batch_advice` ``(b_simple, global_batch)``: the one-line verdict
  ("B_simple ≈ 410 [EMA], global batch 64: larger batches would still use their samples well").
- :func:`run_short_ddp` ``(clips=600, epochs=2, batch_size=16, ...)``: a short 2-process gloo
  training of ``ResNetAudioRanker`` launched from Python (for a notebook); returns the per-step
  history DataFrame of rank 0 (under a minute on a 2-core CPU).
- :func:`spawn` ``(fn, world_size=2, args=(), timeout=120)``: run ``fn(rank, world_size, *args)``
  in fresh gloo processes with a timeout and clean-up.

The full training run is ``torchrun --nproc_per_node=2 -m gradkit.distributed.train`` (or
``make ddp``); see :mod:`gradkit.distributed.train`.
"""

from gradkit.distributed.launch import free_port, spawn
from gradkit.distributed.noise_hook import (
    DDPNoiseScale,
    NoiseStep,
    critical_batch_advice,
    estimates,
)
from gradkit.distributed.track import DDPTracker


def __getattr__(name: str):
    # Lazy, so that ``python -m gradkit.distributed.train`` does not import train twice.
    if name == "run_short_ddp":
        from gradkit.distributed.train import run_short_ddp

        return run_short_ddp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["DDPNoiseScale", "DDPTracker", "NoiseStep", "critical_batch_advice", "estimates",
           "free_port", "run_short_ddp", "spawn"]
