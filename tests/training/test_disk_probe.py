"""The disk-space probe sizes a run's checkpoints as they will be written (issue 26, case 5),
and a run that cannot write leaves no sidecar claiming checkpoints it does not have.

Real files: the planned sizes are compared with the checkpoints a real run writes; the run
under a file-size limit (``RLIMIT_FSIZE`` in a real subprocess, ``SIGXFSZ`` ignored so that a
write beyond it raises ``OSError``) must fail before any epoch, naming the folder and sizes.
"""

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_runs import fake_root, small

import gradkit.training.session as S
from gradkit.core.io import StorageError
from gradkit.training import get_run
from gradkit.training.payload import build_payload, restore_state
from gradkit.training.state import new_state

WORKER = Path(__file__).with_name("run_worker.py")
FOLDER = ("checkpoints", "plastic_3000hz_raw")


@pytest.fixture
def root(tmp_path, monkeypatch):
    return fake_root(tmp_path, monkeypatch)


def _fresh_state(run):
    return new_state(run.config, run.split, torch.device("cpu"), None)


def _payload_bytes(state, run):
    buffer = io.BytesIO()
    torch.save(build_payload(state, run), buffer)
    return buffer.getbuffer().nbytes


@pytest.mark.parametrize("objective", ["raw", "ghm"])
def test_the_planned_checkpoints_are_the_size_of_the_real_ones(root, objective):
    run = get_run(small(epochs=12, save_every=4, objective=objective), progress=False)
    written = {e: run.checkpoint_path(e).stat().st_size for e in run.checkpoint_epochs}
    state = _fresh_state(run)
    plan, table = S.checkpoint_plan(run, state, run.config.epochs)
    assert sorted(plan) == sorted(written) == [4, 8, 12]
    for epoch, size in written.items():
        assert abs(plan[epoch] / size - 1) < 0.10, (epoch, plan[epoch], size)
    assert abs(table / run.metrics_path.stat().st_size - 1) < 0.10
    # what the probe used to write (epoch 0, no optimiser state) is far from it
    assert _payload_bytes(state, run) < 0.5 * written[12]
    # and planning left the run's own state untouched (the optimiser never stepped)
    assert state.optimizer.state_dict()["state"] == {} and state.epoch == 0


def test_a_resumed_run_plans_the_rest_from_its_own_records(root):
    first = get_run(small(epochs=12, save_every=4), progress=False, stop_after=4)
    state = _fresh_state(first)
    latest = first._read_latest()
    restore_state(state, *latest[1:], first.checkpoint_path(4))
    plan, _ = S.checkpoint_plan(first, state, 12)
    done = get_run(small(epochs=12, save_every=4), progress=False)
    assert done.run_id == first.run_id and sorted(plan) == [8, 12]
    for epoch in plan:
        size = done.checkpoint_path(epoch).stat().st_size
        assert abs(plan[epoch] / size - 1) < 0.10, (epoch, plan[epoch], size)


def _run_under_file_size_limit(root, limit):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(WORKER), "fsize", str(root), str(limit)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_file_size_limit_below_a_checkpoint_fails_up_front_and_leaves_no_sidecar(root):
    # small(): checkpoints of about 55 and 66 kB; the old epoch-0 probe wrote about 15 kB
    result = _run_under_file_size_limit(root, 40_000)
    assert result["type"] == "StorageError", result
    message = result["error"]
    assert f"{FOLDER[0]}/{FOLDER[1]} cannot be written" in message
    assert "File too large" in message and "2 checkpoint(s) of up to 66 kB" in message
    folder = root.joinpath(*FOLDER)
    left = sorted(p.name for p in folder.iterdir() if p.name != ".gradkit.lock")
    assert left == [], f"a run that could not write left {left}"


@pytest.mark.slow
def test_a_limit_the_checkpoints_fit_under_lets_the_run_finish(root):
    result = _run_under_file_size_limit(root, 200_000)
    assert "run_id" in result, result
    folder = root.joinpath(*FOLDER)
    assert len(list(folder.glob("model_raw_epoch_6_*.pt"))) == 1


@pytest.mark.parametrize("stop", ["disk full", "interrupt"])
def test_a_new_run_stopped_before_its_first_checkpoint_leaves_no_sidecar(root, monkeypatch,
                                                                        stop):
    real = S.save_checkpoint

    def fail(path, payload):
        if stop == "interrupt":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(S, "save_checkpoint", fail)
    with pytest.raises(KeyboardInterrupt if stop == "interrupt" else StorageError):
        get_run(small(), progress=False)
    folder = root.joinpath(*FOLDER)
    assert list(folder.glob("run_*.json")) == [] and list(folder.glob("*.pt")) == []
    monkeypatch.setattr(S, "save_checkpoint", real)
    assert get_run(small(), progress=False).finished


def test_a_run_that_wrote_checkpoints_keeps_its_sidecar_when_a_later_write_fails(root,
                                                                                  monkeypatch):
    real = S.save_checkpoint

    def disk_full_at_6(path, payload):
        if payload["epoch"] == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, payload)

    monkeypatch.setattr(S, "save_checkpoint", disk_full_at_6)
    with pytest.raises(StorageError):
        get_run(small(), progress=False)
    folder = root.joinpath(*FOLDER)
    (meta,) = folder.glob("run_*.json")
    run_id = json.loads(meta.read_text())["run_id"]
    assert [p.name for p in folder.glob("*.pt")] == [f"model_raw_epoch_3_{run_id}.pt"]
