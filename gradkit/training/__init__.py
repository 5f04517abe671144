"""Training: seeded, resumable runs found again by their configuration, and the shorter
trainings of notebooks 04 and 05.

- :mod:`~gradkit.training.config`     ``TrainConfig`` and a run's identity
- :mod:`~gradkit.training.objective`  raw and GHM objectives, the per-sample loss
- :mod:`~gradkit.training.loop`       one epoch, one evaluation, the data order of an epoch
- :mod:`~gradkit.training.runs`       ``get_run``: reuse, resume or train; ``Run`` on disk
- :mod:`~gradkit.training.short`      ``train_short``: a short timed training of any classifier
- :mod:`~gradkit.training.multitask`  ``train_multitask``: detection + classification, measured
"""

from gradkit.training.config import (
    MODES,
    OBJECTIVES,
    TRAIN_VERSION,
    TrainConfig,
    run_key,
    split_fingerprint,
)
from gradkit.training.loop import build_model, epoch_order
from gradkit.training.multitask import MultitaskConfig, MultitaskRun, train_multitask
from gradkit.training.objective import sample_loss
from gradkit.training.runs import Run, find_runs, get_run
from gradkit.training.short import train_short

__all__ = [
    "MODES", "OBJECTIVES", "TRAIN_VERSION", "MultitaskConfig", "MultitaskRun", "Run",
    "TrainConfig", "build_model", "epoch_order", "find_runs", "get_run", "run_key",
    "sample_loss", "split_fingerprint", "train_multitask", "train_short",
]
