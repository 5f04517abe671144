"""The learnability gate: pure noise is not learnable, separable classes are; on real WAV files."""

import numpy as np
import pytest
import soundfile as sf
import torch

from gradkit.analysis.learnability import (
    NOT_COMPARABLE,
    baseline_accuracy,
    chance_verdict,
    condition_baseline,
    flat_features,
    gate_markdown,
    learnability_gate,
    run_verdicts,
    runs_at_chance,
)
from gradkit.data.folds import ConditionFeatures, fold_splits, load_features

CLASSES = 4
PER_CLASS = 12


def condition(shift: float, seed: int = 0) -> ConditionFeatures:
    """``[N, 1, 8, 6]`` Gaussian clips; class ``c`` moved by ``shift`` in its own mel band ``c``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    x = rng.standard_normal((labels.size, 1, 8, 6))
    x[np.arange(labels.size), 0, labels, :] += shift
    return ConditionFeatures(torch.tensor(x, dtype=torch.float32), torch.tensor(labels),
                             torch.tensor(labels * 30.0), [f"c{i}.wav" for i in range(labels.size)],
                             [f"deg{30 * c:03d}" for c in range(CLASSES)])


def test_flat_features_keep_one_row_per_clip():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    out = flat_features(x)
    assert out.shape == (2, 12) and out.dtype == np.float64
    assert np.array_equal(out[1], np.arange(12, 24))
    with pytest.raises(ValueError, match="shape"):
        flat_features(np.zeros(3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pure_noise_is_not_learnable(seed):
    data = condition(shift=0.0, seed=seed)
    base = baseline_accuracy(fold_splits(data, 3, seed).splits, CLASSES)
    assert base.n == CLASSES * PER_CLASS  # one seed's folds validate every clip once
    gate = learnability_gate(base, ["at chance"] * 9 + ["above chance"])
    assert base.chance.verdict == "at chance", base.chance.sentence()
    assert not gate.comparable and gate.verdict == "not learnable: no run learned"
    assert gate.sentence().startswith("not learnable") and "did not learn" in gate.sentence()
    assert gate.share_at_chance == pytest.approx(0.9)


def test_separable_classes_are_learnable_by_the_baseline_alone():
    data = condition(shift=4.0)
    base = baseline_accuracy(fold_splits(data, 3, 42).splits, CLASSES)
    assert base.accuracy > 0.9 and base.chance.verdict == "above chance"
    gate = learnability_gate(base, ["at chance"] * 10)
    assert gate.comparable and gate.verdict == "learnable" and not gate.runs_learned
    assert "the runs did not learn" in gate.sentence()
    assert "signal that the runs did not learn" in gate.sentence()


def test_runs_that_learned_open_the_gate_even_when_the_baseline_does_not():
    base = baseline_accuracy(fold_splits(condition(0.0), 3, 0).splits, CLASSES)
    assert not learnability_gate(base, ["above chance"] + ["at chance"] * 19).comparable
    # 4 of 20 above chance is more than the 5 % luck gives (p < 0.05)
    gate = learnability_gate(base, ["above chance"] * 4 + ["at chance"] * 16)
    assert gate.runs_learned and gate.comparable
    assert "16 of 20 runs ended at chance" in gate.sentence()


def test_before_training_the_gate_reads_the_baseline_only():
    gate = learnability_gate(baseline_accuracy(fold_splits(condition(0.0), 3, 0).splits, CLASSES))
    assert gate.runs is None and gate.share_at_chance is None and not gate.comparable
    assert "runs" not in gate.headline()


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="verdicts must be"):
        runs_at_chance(["at chance", "learned"])
    with pytest.raises(ValueError, match="at least one"):
        runs_at_chance([])
    with pytest.raises(ValueError, match="n_classes"):
        baseline_accuracy(fold_splits(condition(0.0), 3, 0).splits, 1)
    assert NOT_COMPARABLE == "not comparable: no run learned"


def noise_recordings(root, material="m", freq=700, angles=(0, 45, 90), per_class=8):
    """Real WAV files where every class folder is drawn from one distribution: no signal."""
    rng = np.random.default_rng(3)
    rate = 16000
    for angle in angles:
        folder = root / material / f"{freq}hz" / f"deg{angle:03d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            sf.write(folder / f"{i:02d}.wav", 0.1 * rng.standard_normal(rate // 4), rate)
    return root


def test_a_folder_of_pure_noise_recordings_is_not_learnable(tmp_path):
    root = noise_recordings(tmp_path / "noise")
    data = load_features("m", 700, root=root)
    assert len(data.classes) == 3 and len(data.labels) == 24
    base = baseline_accuracy(fold_splits(data, 3, 42).splits, len(data.classes))
    gate = learnability_gate(base, ["at chance"] * 6)
    assert base.chance.verdict == "at chance", base.chance.sentence()
    assert not gate.comparable and gate.headline().startswith("not learnable")


def test_one_run_above_chance_counts_as_learned_and_none_does_not():
    assert runs_at_chance(["above chance"]).verdict == "above chance"
    assert runs_at_chance(["at chance"]).verdict == "at chance"
    # 2 of 20: P(Bin(20, 0.05) >= 2) = 0.26, luck
    assert runs_at_chance(["above chance"] * 2 + ["at chance"] * 18).verdict == "at chance"


def test_chance_verdict_reads_a_runs_last_accuracy():
    assert chance_verdict(10 / 18, 18, 6) == "above chance"
    assert chance_verdict(3 / 18, 18, 6) == "at chance"
    with pytest.raises(ValueError, match="whole number"):
        chance_verdict(0.5, 7, 6)


def test_condition_baseline_on_a_noise_folder_equals_the_gate_on_its_folds(tmp_path):
    root = noise_recordings(tmp_path / "noise")
    data = load_features("m", 700, root=root)
    direct = baseline_accuracy(fold_splits(data, 3, 5).splits, 3)
    assert condition_baseline("m", 700, root, folds=3, seed=5) == direct


class _Run:
    def __init__(self, accs, n_val, classes):
        import pandas as pd
        self.metrics = pd.DataFrame({"val_acc": accs})
        self.split = type("S", (), {"y_val": [0] * n_val, "classes": list(range(classes))})()


def test_run_verdicts_and_the_gate_text_say_untrained_where_no_run_learned():
    runs = [_Run([0.1, 12 / 18], 18, 6), _Run([0.5, 3 / 18], 18, 6)]
    assert run_verdicts(runs) == ["above chance", "at chance"]
    base = baseline_accuracy(fold_splits(condition(0.0), 3, 0).splits, CLASSES)
    learned = learnability_gate(base, run_verdicts(runs[:1]))
    assert "untrained" not in gate_markdown(learned, "the statistics describe an untrained model")
    text = gate_markdown(learnability_gate(base, run_verdicts(runs[1:])),
                         "the statistics describe an untrained model")
    assert "untrained model" in text and NOT_COMPARABLE in text
