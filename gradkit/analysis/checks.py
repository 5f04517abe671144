"""Consistency checks notebook 01 states before it reads its single pair: each raises a clear error.

- :func:`check_same_start`   two runs share their split (data hash) and their initial weights
- :func:`check_epochs_logged` every (run, epoch) asked for has its GHM diagnostics
- :func:`check_figures_written` every figure a report names was written by this session
- :func:`study_stage_epochs` the study's early / middle / late epochs of a ``study_epochs`` run
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

__all__ = ["check_epochs_logged", "check_figures_written", "check_same_start",
           "study_stage_epochs"]


def check_same_start(data_hashes: Mapping[str, str],
                     initial_weights: Mapping[str, Mapping[str, torch.Tensor]]) -> bool:
    """True when every run has the same data hash and bit-identical initial weights; else
    ValueError naming the runs and what differs (a paired comparison would not be paired)."""
    names = list(data_hashes)
    if len(names) < 2 or set(names) != set(initial_weights):
        raise ValueError(f"need the data hash and initial weights of the same >= 2 runs, got "
                         f"{sorted(data_hashes)} and {sorted(initial_weights)}")
    first = names[0]
    other_data = [n for n in names[1:] if data_hashes[n] != data_hashes[first]]
    ref = initial_weights[first]
    other_init = [n for n in names[1:] if set(initial_weights[n]) != set(ref)
                  or not all(torch.equal(initial_weights[n][k], ref[k]) for k in ref)]
    if other_data or other_init:
        raise ValueError(f"runs do not start alike: data differs from {first!r} for "
                         f"{other_data}, initial weights for {other_init}")
    return True


def check_epochs_logged(by_epoch: Mapping[str, Mapping[int, object]], epochs: Iterable[int]
                        ) -> None:
    """ValueError listing the (run, epoch) pairs of ``epochs`` without GHM diagnostics."""
    epochs = list(epochs)
    missing = [(name, e) for name, logged in by_epoch.items() for e in epochs if e not in logged]
    if missing:
        raise ValueError(f"(run, epoch) without GHM diagnostics: {missing}")


def check_figures_written(expected: Sequence[str], written: Sequence[str]) -> None:
    """ValueError listing the figures of ``expected`` that are not in ``written``."""
    missing = [n for n in expected if n not in set(written)]
    if missing:
        raise ValueError(f"figures not written: {missing}")


def study_stage_epochs(study_epochs: int) -> tuple[int, int, int]:
    """``(1, study_epochs // 2 + 1, study_epochs)``: the first, middle and last epoch of the
    study's single run (1 / 31 / 60 for its 60 epochs, the names of its GHM report's figures);
    the middle one is ``stage_epochs``'s middle of ``1 … study_epochs``."""
    if isinstance(study_epochs, bool) or not isinstance(study_epochs, int) or study_epochs < 1:
        raise ValueError(f"study_epochs must be an int >= 1, got {study_epochs!r}")
    return 1, study_epochs // 2 + 1, study_epochs
