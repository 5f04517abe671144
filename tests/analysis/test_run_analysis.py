"""The workbook's reading of a tracked run (gradkit.analysis.runs): the learned rule on the
recorded loss, the noise scale per logged batch and per epoch with intervals, the similarity of
each logged Gram matrix, and the refusals of a folder that is not a usable run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.analysis import runs
from gradkit.grads import Gram, noise_scale
from gradkit.grads import similarity as sim
from gradkit.track import COLUMNS, Tracker


def tracked(tmp_path, epochs=3, steps=6, gram_every=3, lr=0.2, labels=True):
    torch.manual_seed(0)
    x = torch.randn(48, 5)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    tracker = Tracker(model, tmp_path / "run", gram_every=gram_every, flush_every=5)
    for epoch in range(epochs):
        for s in range(steps):
            xb, yb = x[s * 8:(s + 1) * 8], y[s * 8:(s + 1) * 8]
            with tracker.step(labels=yb if labels else None, epoch=epoch):
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
            opt.step()
    tracker.close()
    return tmp_path / "run"


def frame(losses, epochs=None, **cols):
    rows = pd.DataFrame({c: np.nan for c in COLUMNS}, index=range(len(losses)))
    rows["step"], rows["loss"] = range(len(losses)), losses
    rows["epoch"] = epochs if epochs is not None else np.nan
    for k, v in cols.items():
        rows[k] = v
    return rows


def test_loss_learned_reads_the_first_and_last_epoch():
    rng = np.random.default_rng(0)
    epochs = np.repeat([0, 1, 2], 8)
    falling = np.repeat([2.0, 1.5, 1.0], 8) + 0.05 * rng.standard_normal(24)
    v = runs.loss_learned(frame(falling, epochs))
    assert v.learned and v.verdict == "learned" and v.end < v.start and "epoch 2" in v.sentence
    flat = 1.0 + 0.05 * rng.standard_normal(24)
    assert runs.loss_learned(frame(flat, epochs)).verdict == "no detectable change"
    assert runs.loss_learned(frame(falling[::-1].copy(), epochs)).verdict == "loss rose"
    # no epochs: the first against the last quarter of the steps
    assert runs.loss_learned(frame(falling)).learned
    short = runs.loss_learned(frame([2.0, 1.0, 0.5, 0.2], [0, 0, 1, 1]))
    assert short.verdict == "too short to test" and not short.learned


def test_loss_status_feeds_the_batch_advice():
    from gradkit.analysis.advice import batch_advice

    epochs = np.repeat(np.arange(5), 6)
    plateau = np.repeat([2.0, 1.0, 0.6, 0.6, 0.6], 6) + np.tile([0.01, -0.01], 15)
    st = runs.loss_status(frame(plateau, epochs), last=3)
    assert not st.failed and st.trend == "plateaued" and math.isnan(st.accuracy)
    assert batch_advice(st, 50.0, 40.0, 60.0, 8) == "larger batch"
    flat = runs.loss_status(frame(np.full(30, 1.0) + np.tile([0.01, -0.01], 15), epochs))
    assert flat.failed and batch_advice(flat, 50.0, 40.0, 60.0, 8) == "failed run"


def test_epoch_noise_scales_pool_the_steps_unbiased_estimates():
    gsq = np.array([3.0, 4.0, 3.0, 2.0])
    tr = np.array([8.0, 10.0, 12.0, 6.0])
    f = frame(np.ones(4), [0, 0, 0, 0], grad_sq=gsq, trace_sigma=tr, n=8)
    got = runs.epoch_noise_scales(f, n_boot=400)
    s = tr * 8 / 7                          # S_t from the batch of 1 and of 8: unbiased tr Σ
    signal = tr + gsq - s                   # |G|²_t = E||G_i||² - S_t
    assert got.b_simple[0] == pytest.approx(s.mean() / signal.mean())
    assert got.b_simple_lo[0] <= got.b_simple[0] <= got.b_simple_hi[0] and got.steps[0] == 4
    assert got.batch_size[0] == 8


def test_gram_steps_follow_the_trackers_record(tmp_path):
    run = runs.check_run(tracked(tmp_path))
    table = runs.gram_noise_scales(run, n_boot=200)
    assert list(table.step) == sorted(run.grams)
    for _, row in table.iterrows():
        want = noise_scale(Gram(run.grams[row.step]), 1, n_boot=200)
        assert row.b_simple == pytest.approx(want.b_simple)
        assert (row.b_simple_lo, row.b_simple_hi) == pytest.approx(want.b_simple_ci)
        recorded = run.scalars.set_index("step").b_simple[row.step]
        assert row.b_simple == pytest.approx(recorded, rel=1e-6)
    per_epoch = runs.epoch_noise_scales(run.scalars, n_boot=100)
    assert list(per_epoch.epoch) == [0, 1, 2] and (per_epoch.steps == 6).all()


def test_step_similarity_and_conflicts(tmp_path):
    run = runs.check_run(tracked(tmp_path, epochs=1))
    got = runs.step_similarity(run)
    assert sorted(got) == sorted(run.grams)
    step = sorted(got)[0]
    K = run.grams[step]
    want = sim.similarity_matrix(Gram(K), run.labels[step], level="sample").matrix
    torch.testing.assert_close(got[step]["sample_matrix"].matrix, want)
    assert got[step]["sample_map"].shape == (K.shape[0], 2)
    table = runs.conflicting_samples(got)
    assert ((table["cos to its class (LOO)"] < 0) | (table["cos to its batch (LOO)"] < 0)).all()
    ids = {s: [f"clip{(s * 8 + i) % 16}" for i in range(K.shape[0])] for s in got}
    pooled = runs.conflicting_samples(got, ids)
    assert set(pooled.id) <= {f"clip{i}" for i in range(16)}
    assert pooled["conflict share"].between(0, 1).all()


def test_a_bad_run_folder_is_refused_naming_its_path(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nowhere")):
        runs.check_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no meta.json"):
        runs.check_run(tmp_path / "empty")
    no_gram = tracked(tmp_path / "g", epochs=1, gram_every=0)
    with pytest.raises(ValueError, match="no logged Gram matrix"):
        runs.check_run(no_gram)


def test_a_run_without_labels(tmp_path):
    run = runs.check_run(tracked(tmp_path, epochs=1, labels=False))
    got = runs.step_similarity(run)
    r = next(iter(got.values()))
    assert r["labels"] is None and np.isnan(r["conflict"][0]).all()
    assert np.isfinite(r["conflict"][1]).all()


def test_a_logged_batch_too_small_to_read_is_left_out(tmp_path):
    run = runs.check_run(tracked(tmp_path, epochs=1))
    small = sorted(run.grams)[0]
    run.grams[small] = run.grams[small][:2, :2]
    run.labels[small] = run.labels[small][:2]
    assert small not in runs.logged_steps(run)
    assert small not in set(runs.gram_noise_scales(run, n_boot=0).step)
    assert small not in runs.step_similarity(run)


def test_the_advice_of_a_run_speaks_of_its_loss():
    from gradkit.analysis.advice import advice_sentence

    for word in ("failed run", "still improving", "getting worse", "too short to test"):
        text = runs.run_advice_sentence(word, 50.0, 40.0, 60.0, 8)
        assert "loss" in text and "accuracy" not in text and "B = 8" in text
    assert runs.run_advice_sentence("larger batch", 50.0, 40.0, 60.0, 8) == advice_sentence(
        "larger batch", 50.0, 40.0, 60.0, 8)
    with pytest.raises(ValueError, match="unknown advice"):
        runs.run_advice_sentence("bigger", 50.0, 40.0, 60.0, 8)


def test_a_run_too_short_to_test_is_not_called_failed_or_untrained():

    short = frame([2.0, 1.0, 0.5, 0.25], [0, 0, 1, 1])
    verdict = runs.loss_learned(short)
    assert not verdict.untrained and "could not be tested" in verdict.caveat
    st = runs.loss_status(short)
    assert not st.failed and st.trend == "too short to test"
    flat = runs.loss_learned(frame(np.full(24, 1.0) + np.tile([0.01, -0.01], 12),
                                   np.repeat([0, 1, 2], 8)))
    assert flat.untrained and "untrained model" in flat.caveat


def test_an_epoch_of_one_step_gives_no_interval_and_no_zero_gradient_call():
    from gradkit.analysis.advice import RunStatus, batch_advice

    ok = RunStatus(False, "plateaued", math.nan, math.nan, "")
    assert batch_advice(ok, 2.1, math.nan, math.nan, 64) == "too short to test"
    assert batch_advice(ok, 2.1, 1.0, math.inf, 64) == "mean gradient ~ 0"


def test_labels_that_are_not_class_indices_are_read_as_one_group(tmp_path):
    with pytest.warns(RuntimeWarning, match="step 3: the recorded labels .*float32"):
        assert runs.class_labels(torch.tensor([[0.5], [1.5]]), 2, "run, step 3") is None
    with pytest.warns(RuntimeWarning, match="not 2 class indices"):
        assert runs.class_labels(torch.tensor([-4, 1]), 2, "run, step 0") is None
    assert runs.class_labels(torch.tensor([2, 0]), 2, "run").tolist() == [2, 0]
