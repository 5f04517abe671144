"""``Tracker(tensorboard=...)`` with the real ``torch.utils.tensorboard.SummaryWriter``: the event
files, read back by TensorBoard's own ``EventAccumulator``, hold exactly the recorded run."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.track import COLUMNS, Tracker, load_run

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

NORMS = "gradkit/per_sample_norm"
NOT_LOGGED = ("step", "session", "gram")  # the row's coordinates, not measurements


def _events(folder) -> EventAccumulator:
    return EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0}).Reload()


def _train(tracker, model, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        x, y = torch.randn(8, 4, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        with tracker.step(labels=y, epoch=0):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
        opt.step()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def _assert_events_are_the_run(acc, run):
    """Every logged column equals ``run.scalars`` at every step (float32: TensorBoard's scalar
    precision), and each step has one histogram of its ``n`` per-sample norms."""
    frame = run.scalars
    want = {f"gradkit/{c}" for c in COLUMNS if c not in NOT_LOGGED
            and frame[c].map(lambda v: isinstance(v, int | float) and math.isfinite(v)).any()}
    assert set(acc.Tags()["scalars"]) == want
    for tag in want:
        col = tag.split("/", 1)[1]
        got = {e.step: e.value for e in acc.Scalars(tag)}
        expected = {int(s): np.float32(v) for s, v in zip(frame["step"], frame[col], strict=True)
                    if math.isfinite(v)}
        assert got == expected, tag
    hists = acc.Histograms(NORMS)
    assert [e.step for e in hists] == list(frame["step"])
    for e, (_, row) in zip(hists, frame.iterrows(), strict=True):
        h = e.histogram_value
        assert h.num == row.n
        assert h.min == pytest.approx(row.norm_min, rel=1e-12)
        assert h.max == pytest.approx(row.norm_max, rel=1e-12)
        # Σ ||G_i||² = N (tr Σ + ||g_D||²): the histogram holds the norms the row summarises
        assert h.sum_squares == pytest.approx(row.n * (row.trace_sigma + row.grad_sq), rel=1e-9)


def test_the_event_files_hold_the_recorded_scalars_and_a_norm_histogram_per_step(tmp_path):
    model = _model()
    tracker = Tracker(model, tmp_path / "run", tensorboard=True, gram_every=2)
    _train(tracker, model, 4, seed=1)
    tracker.close()
    run = load_run(tmp_path / "run")
    assert list(run.scalars["step"]) == [0, 1, 2, 3]
    _assert_events_are_the_run(_events(tmp_path / "run" / "tensorboard"), run)


def test_a_restart_at_an_earlier_step_hides_the_stale_events(tmp_path):
    """Session 0 logs steps 0-3; session 1 restarts at step 2 (its checkpoint) with other
    batches: TensorBoard shows session 0's steps 0-1 and session 1's 2-4, as ``load_run``."""
    model = _model()
    tracker = Tracker(model, tmp_path / "run", tensorboard=True)
    _train(tracker, model, 4, seed=1)
    tracker.close()
    tracker = Tracker(model, tmp_path / "run", tensorboard=True, start_step=2)
    _train(tracker, model, 3, seed=2)
    tracker.close()
    run = load_run(tmp_path / "run")
    assert list(run.scalars["session"]) == [0, 0, 1, 1, 1]
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.*"))) == 2
    _assert_events_are_the_run(_events(tmp_path / "run" / "tensorboard"), run)


def test_a_callers_writer_is_written_to_and_left_open(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    model = _model()
    tracker = Tracker(model, tmp_path / "run", tensorboard=writer)
    _train(tracker, model, 2, seed=3)
    tracker.close()
    assert writer.file_writer is not None  # still the caller's to use and close
    writer.add_scalar("mine", 1.0, 0)
    writer.close()
    assert not (tmp_path / "run" / "tensorboard").exists()
    acc = _events(tmp_path / "tb")
    assert "mine" in acc.Tags()["scalars"]
    run = load_run(tmp_path / "run")
    assert [e.value for e in acc.Scalars("gradkit/loss")] == [np.float32(v) for v in
                                                               run.scalars["loss"]]
    with pytest.raises(TypeError, match="tensorboard must be True, False or a SummaryWriter"):
        Tracker(model, tmp_path / "other", tensorboard="yes")
