"""Training: seeded, resumable runs found again by their configuration, and the shorter
trainings of notebooks 04 and 05.

- :mod:`~gradkit.training.config`     ``TrainConfig`` and a run's identity
- :mod:`~gradkit.training.objective`  raw and GHM objectives, the per-sample loss
- :mod:`~gradkit.training.loop`       the one training loop (``fit_epoch``) and evaluation pass of
  every training, the data order of an epoch
- :mod:`~gradkit.training.guard`      the divergence guard, ``TrainingDiverged``
- :mod:`~gradkit.training.records`    typed records: ``EpochMetrics``, ``GHMRecord``
- :mod:`~gradkit.training.state`      a GHM run's state and epoch (on the shared loop)
- :mod:`~gradkit.training.payload`    a run's checkpoint payload, written and read back
- :mod:`~gradkit.training.store`      a run folder: lock, sidecar JSON, recovery from damage
- :mod:`~gradkit.training.session`    training a run's epochs into its folder
- :mod:`~gradkit.training.runs`       ``get_run``: reuse, resume or train; ``Run`` on disk
- :mod:`~gradkit.training.short`      ``train_short``: a short timed training of any classifier
- :mod:`~gradkit.training.multitask`  ``train_multitask``: detection + classification, with
  per-step diagnostics
- :mod:`~gradkit.training.ensemble`   many seeds x folds of one objective as one vectorised
  ensemble (notebook 01)
"""

from gradkit.training.config import (
    MODES,
    OBJECTIVES,
    TRAIN_VERSION,
    TrainConfig,
    run_key,
    split_fingerprint,
)
from gradkit.training.guard import DivergenceGuard, TrainingDiverged
from gradkit.training.loop import epoch_batches, epoch_order, evaluate, fit_epoch
from gradkit.training.multitask import MultitaskConfig, MultitaskRun, train_multitask
from gradkit.training.objective import sample_loss
from gradkit.training.records import EpochMetrics, GHMRecord, HeadDiagnostics
from gradkit.training.runs import Run, find_runs, get_run
from gradkit.training.short import train_short
from gradkit.training.state import build_model

__all__ = [
    "MODES", "OBJECTIVES", "TRAIN_VERSION", "DivergenceGuard", "EpochMetrics", "GHMRecord",
    "HeadDiagnostics", "MultitaskConfig", "MultitaskRun", "Run", "TrainConfig",
    "TrainingDiverged", "build_model", "epoch_batches", "epoch_order", "evaluate",
    "find_runs", "fit_epoch", "get_run", "run_key", "sample_loss", "split_fingerprint",
    "train_multitask", "train_short",
]
