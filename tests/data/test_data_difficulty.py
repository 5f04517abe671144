"""The default data set is neither trivial nor hopeless: what GHM needs to matter.

A plain cross-entropy ResNet (the raw run of notebook 01) on plastic / 3000 Hz must reach a
validation accuracy between 60 % and 95 %: neighbouring angles confusable, some clips hard.
"""

import pytest

from gradkit.training import TrainConfig, get_run


@pytest.mark.slow
def test_plain_resnet_on_plastic_3000hz_is_between_60_and_95_percent(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    metrics = get_run(TrainConfig(objective="raw"), progress=False).metrics
    final = metrics["val_acc"].iloc[-1]
    last10 = metrics["val_acc"].tail(10).mean()
    print(f"raw run, plastic/3000 Hz: final val acc {final:.3f}, last-10 mean {last10:.3f}")
    assert 0.60 <= last10 <= 0.95
    assert 0.60 <= final <= 0.95


def test_a_short_plain_run_leaves_chance(tmp_path, monkeypatch):
    """The default tier's check of the same data: 25 epochs of the plain ResNet beat chance
    (1 / 6) on the held-out clips, by an exact binomial test. Learnable at all is this test's
    half; neither trivial nor hopeless at the full 60 epochs is the slow test's."""
    from gradkit.stats import above_chance

    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    run = get_run(TrainConfig(objective="raw", epochs=25), progress=False)
    n_val = len(run.split.y_val)
    correct = round(float(run.metrics["val_acc"].iloc[-1]) * n_val)
    result = above_chance(correct, n_val, chance=1 / len(run.split.classes))
    assert result.verdict == "above chance", result
