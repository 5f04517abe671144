"""Stratified k folds: every clip validated once, classes balanced, fold 0 = load_split's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradkit.data.folds import ConditionFeatures, fold_splits, split_of, stratified_folds
from gradkit.data.recordings import stratified_split


def test_every_clip_is_validated_once_and_classes_are_balanced():
    labels = np.repeat(np.arange(6), 9)
    folds = stratified_folds(labels, 3, seed=5)
    assert set(folds) == {0, 1, 2}
    for j in range(3):
        assert np.bincount(labels[folds == j], minlength=6).tolist() == [3] * 6
    assert not np.array_equal(folds, stratified_folds(labels, 3, seed=6))   # the seed matters
    np.testing.assert_array_equal(folds, stratified_folds(labels, 3, seed=5))


@pytest.mark.parametrize("seed", [0, 42, 7])
def test_fold0_is_the_validation_set_of_stratified_split(seed):
    labels = np.repeat(np.arange(6), 9)
    np.testing.assert_array_equal(stratified_folds(labels, 3, seed) == 0,
                                  stratified_split(labels, 1 / 3, seed))


def test_uneven_classes_and_bad_input():
    labels = np.array([0] * 10 + [1] * 4)
    folds = stratified_folds(labels, 3, seed=1)
    assert sorted(np.bincount(folds[labels == 0]).tolist()) == [3, 3, 4]
    with pytest.raises(ValueError, match="fewer than the 5 folds"):
        stratified_folds(labels, 5)
    with pytest.raises(ValueError, match="k \\(folds\\)"):
        stratified_folds(labels, 1)


def _features(n_per_class=6, classes=3):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.randn(len(labels), 1, 4, 4, generator=gen) * 3 + 5
    paths = [f"{i}.wav" for i in range(len(labels))]
    return ConditionFeatures(x, labels, labels.float() * 36, paths,
                             [f"deg{36 * c:03d}" for c in range(classes)])


def test_split_normalises_with_the_training_clips_only():
    data = _features()
    is_val = np.zeros(len(data.labels), dtype=bool)
    is_val[::3] = True
    split = split_of(data, is_val)
    assert split.x_train.mean().abs() < 1e-5 and (split.x_train.std() - 1).abs() < 1e-5
    assert len(split.y_val) == is_val.sum() and split.paths_val[0] == "0.wav"
    raw_train = data.features[torch.from_numpy(~is_val)]
    assert split.mean == pytest.approx(raw_train.mean().item())


def test_fold_splits_cover_the_data_and_report_the_load_split_match():
    data = _features()
    fs = fold_splits(data, 3, seed=4)
    assert fs.fold0_is_load_split
    assert sum(len(s.y_val) for s in fs.splits) == len(data.labels)
    assert not fold_splits(data, 2, seed=4).fold0_is_load_split   # halves, not thirds
