"""The example runs, and its record survives a kill: a restarted training continues it."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.track import Tracker, load_run

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "track_your_training.py"


def _example():
    spec = importlib.util.spec_from_file_location("track_your_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_whole(run, sessions):
    steps = list(run.scalars["step"])
    assert steps == list(range(len(steps))), steps  # contiguous, each step once
    assert sorted(set(run.scalars["session"])) == sessions
    for col in ("loss", "grad_norm", "norm_q50", "trace_sigma", "b_simple"):
        assert run.scalars[col].notna().all(), col
    assert run.grams and all(K.shape[0] == K.shape[1] for K in run.grams.values())
    assert not list(run.path.rglob("*.tmp"))


def test_the_example_runs_and_resumes_from_its_checkpoint(tmp_path):
    ex = _example()
    out = ex.main(tmp_path / "run", epochs=2, clips=24, batch_size=8, gram_every=2)
    run = load_run(out)
    assert list(run.scalars["step"]) == list(range(6))
    assert sorted(run.grams) == [0, 2, 4] and tuple(run.labels[2].shape) == (8,)
    assert list(run.scalars["epoch"]) == [0] * 3 + [1] * 3
    assert run.scalars["update_size"].notna().all() and (run.scalars["update_size"] > 0).all()
    ex.main(tmp_path / "run", epochs=3, clips=24, batch_size=8, gram_every=2)  # one more epoch
    run = load_run(out)
    _assert_whole(run, [0, 1])
    assert list(run.scalars["step"]) == list(range(9)) and sorted(run.grams) == [0, 2, 4, 6, 8]
    assert [s["start_step"] for s in run.meta["sessions"]] == [0, 6]


def test_a_restart_at_an_earlier_step_supersedes_the_lost_steps(tmp_path):
    """A tracker dropped without close() (as by a kill): its unflushed rows are lost, a
    temporary file is left; a new one started at the checkpoint's step replaces what the
    first recorded after it, removes the temporary file and carries on."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def train(tracker, steps):
        for _ in range(steps):
            x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
            with tracker.step(labels=y, epoch=0):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
            opt.step()

    first = Tracker(model, tmp_path / "run", gram_every=2, flush_every=2)
    train(first, 7)  # rows 0-5 written (0-1, 2-3, 4-5), 6 pending; grams 0, 2, 4, 6
    del first
    stale = tmp_path / "run" / "scalars" / ".part-000-00000006.csv.abc12345.tmp"
    stale.write_text("half a file")
    second = Tracker(model, tmp_path / "run", gram_every=2, flush_every=2, start_step=3)
    assert not stale.exists()
    train(second, 4)  # steps 3-6 again
    second.close()
    run = load_run(tmp_path / "run")
    assert list(run.scalars["step"]) == list(range(7))
    assert list(run.scalars["session"]) == [0, 0, 0, 1, 1, 1, 1]
    assert sorted(run.grams) == [0, 2, 4, 6]
    continued = Tracker(model, tmp_path / "run")  # no start_step: after the last step
    assert continued.step_index == 7


@pytest.mark.slow
def test_the_record_survives_sigkill_mid_training(tmp_path):
    """The example, killed with SIGKILL while it trains, then started again: every file
    reads back, the record continues from the training's checkpoint, no step twice."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(EXAMPLE), "--out", str(out), "--epochs", "1000", "--clips", "64",
           "--batch-size", "16", "--flush-every", "1", "--gram-every", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "run.checkpoint.pt"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists() and len(list((out / "scalars").glob("part-*.csv"))) >= 10:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    killed = load_run(out)  # every file complete
    assert len(killed.scalars) >= 10
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    _example().main(out, epochs=epoch + 3, clips=64, batch_size=16, gram_every=2)
    run = load_run(out)
    _assert_whole(run, [0, 1])
    restart = run.meta["sessions"][1]["start_step"]
    assert restart == (epoch + 1) * 4
    assert len(run.scalars) == (epoch + 3) * 4
    assert (run.scalars["session"] == (run.scalars["step"] >= restart)).all()
