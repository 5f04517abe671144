"""Training runs that survive anything: divergence, corrupt or tampered checkpoints, killed
writes, a lost sidecar JSON, two processes at once, a folder that cannot be written.

Same tiny fake data as test_runs.py. Real subprocesses (tests/training/run_worker.py) where the
case is about processes: a SIGKILL mid-write, two processes started together, a lock left by a
killed process. Tests run as root here, where ``chmod`` does not stop writes: the unwritable
folder is simulated by making the operating system's calls fail (``tempfile.mkstemp`` raising
``EROFS``, ``shutil.disk_usage`` reporting a full disk) inside gradkit.core.io.
"""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_runs import assert_same_run, fake_root, fake_split, small

import gradkit.core.io as gio
import gradkit.training.runs as T
import gradkit.training.session as S
import gradkit.training.state as ST
from gradkit.core.checkpoint import CheckpointError, load_checkpoint
from gradkit.core.io import StorageError
from gradkit.training import TrainingDiverged, get_run, train_short
from gradkit.training.state import build_model
from gradkit.training.store import folder_lock

WORKER = Path(__file__).with_name("run_worker.py")


@pytest.fixture
def root(tmp_path, monkeypatch):
    return fake_root(tmp_path, monkeypatch)


FOLDER = ("checkpoints", "plastic_3000hz_raw")


def _folder(root):
    return root.joinpath(*FOLDER)


def _count_epochs(monkeypatch):
    calls = []
    real = S.train_epoch

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "train_epoch", counting)
    return calls


def _worker(*args, env=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, seconds=120):
    deadline = time.time() + seconds
    while not Path(path).exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker ended early: {proc.communicate()}")
        assert time.time() < deadline, "worker never got ready"
        time.sleep(0.05)


# -- divergence -------------------------------------------------------------------------------
def test_a_huge_learning_rate_fails_the_run_and_it_is_never_reused(root, monkeypatch):
    cfg = small(lr=1e20, save_every=1)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, batch \d.*learning rate") as caught:
        get_run(cfg, progress=False)
    err = caught.value
    assert err.epoch == 1 and err.lr == 1e20
    run = err.run
    assert run.failed and not run.finished and "lower the learning rate" in err.summary
    assert err.summary.startswith(f"run plastic_3000hz_raw {run.run_id} diverged at epoch 1")
    assert "\n" not in err.summary  # one line, for a notebook to print instead of NaN plots
    assert run.checkpoint_epochs == []  # nothing non-finite was ever saved
    assert run.metrics.empty and "val_acc" in run.metrics.columns
    info = json.loads(run.meta_path.read_text())
    assert info["status"] == "failed" and info["failure"]["epoch"] == 1
    calls = _count_epochs(monkeypatch)
    with pytest.raises(TrainingDiverged, match="learning rate"):
        get_run(cfg, progress=False)  # refused again, nothing trained, no second run
    assert calls == [] and len(list(_folder(root).glob("run_*.json"))) == 1


def test_a_loss_beyond_the_bound_fails_the_run(root):
    with pytest.raises(TrainingDiverged, match="exceeds the bound"):
        get_run(small(lr=1e6), progress=False)


def test_divergence_later_keeps_the_last_finite_checkpoint(root, monkeypatch):
    real = ST.objective_terms
    steps = []

    def nan_from_epoch_5(state, *args, update_state, **kwargs):  # 3 training batches an epoch
        loss, terms = real(state, *args, update_state=update_state, **kwargs)
        steps.extend([1] if update_state else [])
        return (loss * math.nan, terms) if len(steps) > 12 else (loss, terms)

    monkeypatch.setattr(ST, "objective_terms", nan_from_epoch_5)
    with pytest.raises(TrainingDiverged) as caught:
        get_run(small(epochs=6, save_every=2), progress=False)
    err = caught.value
    assert (err.epoch, err.batch) == (5, 0) and "loss is nan" in err.reason
    assert err.run.checkpoint_epochs == [2, 4] and not err.run.finished
    m = err.run.metrics
    assert list(m.epoch) == [1, 2, 3, 4] and m.notna().all().all()
    for epoch in (2, 4):
        state = load_checkpoint(err.run.checkpoint_path(epoch))["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    monkeypatch.setattr(ST, "objective_terms", real)
    with pytest.raises(TrainingDiverged):  # recorded: refused, not resumed silently
        get_run(small(epochs=6, save_every=2), progress=False)
    resumed = get_run(small(epochs=6, save_every=2), progress=False, retry_failed=True)
    assert resumed.finished and resumed.run_id == err.run.run_id


def test_a_finished_run_with_nan_weights_from_before_the_guard_is_not_reused(root):
    run = get_run(small(), progress=False)
    path = run.checkpoint_path(6)
    payload = torch.load(path, weights_only=True)
    payload["model"]["classifier.weight"].fill_(math.nan)
    payload["metrics"][-1]["train_loss"] = math.nan
    torch.save(payload, path)
    with pytest.raises(TrainingDiverged, match=r"at epoch 6 \(non-finite") as caught:
        get_run(small(), progress=False)
    assert caught.value.run.failed and not caught.value.run.finished


def test_train_short_stops_on_a_non_finite_loss():
    split = fake_split()
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1, batch 1"):
        train_short(build_model(small(), split), split, 3, 4, 1e20)


# -- corrupt and tampered checkpoints ---------------------------------------------------------
def test_a_truncated_newest_checkpoint_falls_back_and_resumes(root, monkeypatch):
    whole = get_run(small(), progress=False)
    monkeypatch.setenv("GRADKIT_ROOT", str(root / "truncated"))
    run = get_run(small(), progress=False)
    path = run.checkpoint_path(6)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match=f"{path.name}.*corrupt.*moved it aside"):
        again = get_run(small(), progress=False)
    aside = path.with_name(path.name + ".corrupt")
    assert aside.read_bytes() == data[: len(data) // 2], "kept, never deleted"
    assert again.run_id == run.run_id and again.finished and again.checkpoint_epochs == [3, 6]
    assert_same_run(whole, again)


def test_a_corrupt_newest_checkpoint_falls_back_for_metrics(root):
    run = get_run(small(), progress=False)
    run.checkpoint_path(6).write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="falls back to its previous checkpoint"):
        m = T.Run(run.config, run.dir, run.run_id, run.key, run.data_hash).metrics
    assert list(m.epoch) == [1, 2, 3]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_payload_does_not_run_and_is_named_not_a_gradkit_checkpoint(root, tmp_path):
    run = get_run(small(), progress=False)
    marker = tmp_path / "pwned"
    path = run.checkpoint_path(6)
    torch.save({"epoch": 6, "evil": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "not a gradkit checkpoint" in message and path.name in message
    assert "weights_only=False" not in message and "weights_only" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.warns(RuntimeWarning, match="not a gradkit checkpoint"):
        again = get_run(small(), progress=False)
    assert not marker.exists(), "the payload must never execute"
    assert again.finished and path.is_file() and path.with_name(path.name + ".corrupt").is_file()


# -- killed writes, lost JSON -------------------------------------------------------------------
def test_a_sigkill_during_a_checkpoint_write_leaves_no_temp_file_behind(root, monkeypatch):
    whole = get_run(small(), progress=False)
    monkeypatch.setenv("GRADKIT_ROOT", str(root / "killed"))
    get_run(small(), progress=False, stop_after=3)
    folder = root / "killed" / FOLDER[0] / FOLDER[1]
    ready = root / "ready"
    proc = _worker("hang-save", root / "killed", ready)
    try:
        _wait_for(ready, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    temps = [p for p in folder.iterdir() if gio.TEMP_PATTERN.match(p.name)]
    assert len(temps) == 1 and temps[0].name.startswith(".model_raw_epoch_6_")
    assert temps[0].stat().st_size == 0
    (folder / ".notes.tmp").write_text("not ours")  # not gradkit's pattern: stays
    (folder / "scratch.tmp").write_text("not ours")
    with pytest.warns(RuntimeWarning, match="removed 1 temporary file"):
        again = get_run(small(), progress=False)
    assert not temps[0].exists()
    assert (folder / ".notes.tmp").exists() and (folder / "scratch.tmp").exists()
    assert_same_run(whole, again)


@pytest.mark.parametrize("damage", ["deleted", "garbage"])
def test_a_lost_sidecar_json_is_rebuilt_from_the_checkpoints(root, monkeypatch, damage):
    run = get_run(small(), progress=False)
    original = json.loads(run.meta_path.read_text())
    if damage == "deleted":
        run.meta_path.unlink()
    else:
        run.meta_path.write_text("{ half a json")
    calls = _count_epochs(monkeypatch)
    with pytest.warns(RuntimeWarning) as caught:
        again = get_run(small(), progress=False)
    messages = " ".join(str(w.message) for w in caught)
    assert "rebuilt it from model_raw_epoch_6_" in messages
    assert ("is unreadable; moved it aside" in messages) == (damage == "garbage")
    assert calls == [] and again.run_id == run.run_id and again.finished
    rebuilt = json.loads(run.meta_path.read_text())
    for key in ("run_id", "config_hash", "data_hash", "config"):
        assert rebuilt[key] == original[key], key
    assert len(list(_folder(root).glob("run_*.json"))) == 1
    if damage == "garbage":
        assert run.meta_path.with_name(run.meta_path.name + ".corrupt").is_file()


# -- two processes ------------------------------------------------------------------------------
def test_two_processes_asking_for_the_same_new_run_train_it_once(root):
    ready = [root / "ready_a", root / "ready_b"]
    procs = [_worker("train", root, 6, ready[0], ready[1]),
             _worker("train", root, 6, ready[1], ready[0])]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert results[0]["run_id"] == results[1]["run_id"]
    assert sorted(r["trained"] for r in results) == [False, True]
    assert all(r["finished"] for r in results)
    assert any("waiting for it to finish" in out for out, _ in outs)
    assert len(list(_folder(root).glob("run_*.json"))) == 1
    assert len(list(_folder(root).glob("model_*.pt"))) == 2


def test_a_lock_left_by_a_killed_process_does_not_block(root):
    folder = _folder(root)
    ready = root / "locked"
    proc = _worker("hold-lock", folder, ready)
    try:
        _wait_for(ready, proc)
        with pytest.raises(TimeoutError, match="locked by another process"):
            with folder_lock(folder, timeout=0.3):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    start = time.monotonic()
    with folder_lock(folder, timeout=10):
        pass
    assert time.monotonic() - start < 5
    assert get_run(small(), progress=False).finished


# -- folders that cannot be written ---------------------------------------------------------------
def test_an_unwritable_folder_fails_before_any_epoch(root, monkeypatch):
    first = get_run(small(), progress=False, stop_after=3)
    before = first.checkpoint_path(3).read_bytes()
    calls = _count_epochs(monkeypatch)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(gio.tempfile, "mkstemp", read_only)
    with pytest.raises(StorageError, match=f"{FOLDER[1]} cannot be written.*Read-only"):
        get_run(small(), progress=False)
    assert calls == [], "no epoch was spent"
    assert first.checkpoint_path(3).read_bytes() == before


def test_a_full_disk_fails_before_any_epoch(root, monkeypatch):
    calls = _count_epochs(monkeypatch)
    usage = gio.shutil.disk_usage(root)
    monkeypatch.setattr(gio.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(StorageError, match="MB free"):
        get_run(small(), progress=False)
    assert calls == []


def test_a_failed_write_mid_run_keeps_every_earlier_checkpoint(root, monkeypatch):
    real = S.save_checkpoint

    def disk_full_at_6(path, payload):
        if payload["epoch"] == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, payload)

    monkeypatch.setattr(S, "save_checkpoint", disk_full_at_6)
    with pytest.raises(StorageError, match=r"epoch_6.*earlier checkpoints \(epochs \[3\]\)"):
        get_run(small(), progress=False)
    monkeypatch.setattr(S, "save_checkpoint", real)
    run = T.Run(small(), _folder(root), *next(
        (json.loads(p.read_text())["run_id"], json.loads(p.read_text())["config_hash"])
        for p in _folder(root).glob("run_*.json")), data_hash="")
    assert run.checkpoint_epochs == [3] and list(run.metrics.epoch) == [1, 2, 3]
    assert get_run(small(), progress=False).finished


def test_a_finished_run_in_a_folder_that_cannot_be_locked_is_still_read(root, monkeypatch):
    import gradkit.training.store as store

    run = get_run(small(), progress=False)

    class ReadOnlyLock:
        def __init__(self, path):
            self.path = path

        def acquire(self, **kwargs):
            raise PermissionError(errno.EROFS, "Read-only file system", self.path)

    monkeypatch.setattr(store, "FileLock", ReadOnlyLock)
    with pytest.warns(RuntimeWarning, match="cannot lock.*without the lock"):
        again = get_run(small(), progress=False)
    assert again.run_id == run.run_id and again.finished
