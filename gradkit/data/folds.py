"""Stratified k-fold cross-validation of one material and probe frequency.

For labels ``y`` and a seed: per class ``c`` the clips of ``c`` are shuffled by
``numpy.random.default_rng(seed)`` (classes in increasing order, one permutation each, exactly as
:func:`gradkit.data.stratified_split` draws them) and dealt into ``k`` consecutive chunks
(``numpy.array_split``); fold ``j`` validates chunk ``j`` of every class and trains on the rest.
Every clip is validated exactly once per seed.

When ``k = 3`` and every class holds a multiple of 3 clips, fold 0 of ``seed`` is exactly the
validation set of ``stratified_split(y, 1/3, seed)``, so fold 0 of :func:`fold_splits` equals
``load_split(..., seed=seed)`` tensor for tensor (same order, same normalisation): the single
runs of :func:`gradkit.training.get_run` are fold 0 of their ``split_seed``. :func:`fold_splits`
checks this and says so in ``FoldSet.fold0_is_load_split``.

Features are normalised per fold with the mean and standard deviation of that fold's training
clips only (as :func:`gradkit.data.load_split`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradkit.data.features import AudioSplit, load_split, log_mel
from gradkit.data.recordings import load_recordings, stratified_split
from gradkit.data.synthetic import data_root

__all__ = ["ConditionFeatures", "FoldSet", "fold_splits", "load_features", "split_of",
           "stratified_folds"]


#: The validation fraction of :func:`gradkit.data.load_split` (the single runs' split).
LOAD_SPLIT_FRACTION = inspect.signature(load_split).parameters["val_fraction"].default


def stratified_folds(labels: Sequence[int], k: int = 3, seed: int = 42) -> np.ndarray:
    """The fold index (``0 … k-1``) of every sample: stratified, seeded (see the module doc).

    Raises ValueError when ``k < 2`` or a class has fewer than ``k`` samples (a fold would
    validate none of it).
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
        raise ValueError(f"k (folds) must be an int >= 2, got {k!r}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.full(labels.size, -1, dtype=int)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if members.size < k:
            raise ValueError(f"class {c} has {members.size} clips, fewer than the {k} folds")
        for j, chunk in enumerate(np.array_split(rng.permutation(members), k)):
            fold[chunk] = j
    return fold


@dataclass
class ConditionFeatures:
    """Un-normalised log-mel features of one condition, in file order."""

    features: torch.Tensor
    labels: torch.Tensor
    angles: torch.Tensor
    paths: list[str]
    classes: list[str]


def load_features(material: str, freq_hz: int, root: str | Path | None = None
                  ) -> ConditionFeatures:
    """Recordings of ``root/<material>/<freq_hz>hz`` (the default set if None) as log-mel."""
    root = data_root(root)
    rec = load_recordings(root, material, freq_hz)
    return ConditionFeatures(log_mel(rec.waveforms, rec.sample_rate), rec.labels,
                             rec.angles_deg, list(rec.paths), list(rec.classes))


def split_of(data: ConditionFeatures, is_val: np.ndarray) -> AudioSplit:
    """The split validating ``is_val``, normalised with its training clips' mean and std."""
    val = torch.from_numpy(np.asarray(is_val, dtype=bool))
    train = ~val
    mean = data.features[train].mean().item()
    std = data.features[train].std().item() or 1.0
    x = (data.features - mean) / std
    pick = lambda mask: [p for p, keep in zip(data.paths, mask.tolist(), strict=True) if keep]  # noqa: E731
    return AudioSplit(
        x_train=x[train], y_train=data.labels[train], angles_train=data.angles[train],
        paths_train=pick(train), x_val=x[val], y_val=data.labels[val],
        angles_val=data.angles[val], paths_val=pick(val), classes=data.classes,
        mean=mean, std=std)


@dataclass
class FoldSet:
    """The ``k`` splits of one seed; ``fold0_is_load_split``: fold 0 equals ``load_split``'s."""

    seed: int
    folds: np.ndarray
    splits: list[AudioSplit]
    fold0_is_load_split: bool


def fold_splits(data: ConditionFeatures, k: int = 3, seed: int = 42) -> FoldSet:
    """The ``k`` stratified folds of ``data`` for ``seed`` as :class:`AudioSplit` objects."""
    folds = stratified_folds(data.labels.numpy(), k, seed)
    reference = stratified_split(data.labels.numpy(), LOAD_SPLIT_FRACTION, seed)
    return FoldSet(seed=int(seed), folds=folds,
                   splits=[split_of(data, folds == j) for j in range(k)],
                   fold0_is_load_split=bool(np.array_equal(folds == 0, reference)))
