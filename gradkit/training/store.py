"""A run folder on disk: file names, the sidecar JSON, the lock, recovery from damage.

A folder ``checkpoints/<material>_<freq>hz_<label>/`` holds the runs of one condition and label
(their files are told apart by the run id). What protects it:

- **Lock** (:func:`folder_lock`): an inter-process lock (``filelock``, ``fcntl.flock`` on POSIX)
  on ``.gradkit.lock``; ``get_run`` holds it while it decides, trains and writes, so a second
  process asking for the same run waits and then reuses the result. The operating system drops
  the lock of a process that dies, so a killed process never blocks the next one.
- **Stale temporary files**: a write killed half-way leaves ``.<name>.<random>.tmp``;
  :func:`gradkit.core.io.remove_stale_temps` removes those (and only those) under the lock.
- **Corrupt checkpoints** (:func:`set_aside`): a file that cannot be read is renamed to
  ``<name>.corrupt`` (``.corrupt.1``, … if taken) with a warning naming it; never deleted.
- **Sidecar JSON** ``run_<label>_<run>.json``: the run's identity (config, config hash, data
  hash, run id) and its status (``"failed"`` with the failure, see
  :class:`~gradkit.training.guard.TrainingDiverged`). Every checkpoint holds the same identity,
  so a missing or unreadable JSON is rebuilt from the newest readable checkpoint
  (:func:`recover_sidecars`), never answered by training a second run.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from gradkit.core.checkpoint import CheckpointError, load_checkpoint
from gradkit.core.io import atomic_write_text

__all__ = ["LOCK_NAME", "checkpoint_files", "checkpoint_name", "folder_lock", "meta_name",
           "new_run_id", "read_meta", "recover_sidecars", "set_aside", "write_meta"]

LOCK_NAME = ".gradkit.lock"


def checkpoint_name(label: str, epoch: int, run_id: str) -> str:
    return f"model_{label}_epoch_{epoch}_{run_id}.pt"


def meta_name(label: str, run_id: str) -> str:
    return f"run_{label}_{run_id}.json"


def _checkpoint_pattern(label: str, run_id: str | None = None) -> re.Pattern:
    rid = re.escape(run_id) if run_id else r"(?P<run>\d{8}_\d{6})"
    return re.compile(rf"^model_{re.escape(label)}_epoch_(?P<epoch>\d+)_{rid}\.pt$")


def checkpoint_files(folder: Path, label: str, run_id: str) -> dict[int, Path]:
    """``{epoch: path}`` of a run's checkpoints, by epoch (``*.corrupt`` files are not)."""
    pattern = _checkpoint_pattern(label, run_id)
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            m = pattern.match(path.name)
            if m:
                found[int(m.group("epoch"))] = path
    return dict(sorted(found.items()))


def new_run_id(folder: Path) -> str:
    """The start time ``YYYYmmdd_HHMMSS``, moved on by seconds while the folder already uses it."""
    t = time.time()
    while True:
        run_id = time.strftime("%Y%m%d_%H%M%S", time.localtime(t))
        if not folder.is_dir() or not any(folder.glob(f"*_{run_id}.*")):
            return run_id
        t += 1


@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float = -1, poll: float = 0.2) -> Iterator[None]:
    """Hold the inter-process lock of ``folder`` (waiting, with a message, if another process
    holds it; ``timeout`` seconds at most, ``-1`` = as long as that process works)."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"[gradkit] another process is working on {folder}: waiting for it to finish "
              f"(lock {folder / LOCK_NAME})", flush=True)
        try:
            lock.acquire(timeout=timeout, poll_interval=poll)
        except Timeout:
            raise TimeoutError(f"{folder} stayed locked by another process for {timeout} s "
                               f"(lock {folder / LOCK_NAME})") from None
    except OSError as err:  # a read-only folder: finished runs can still be read
        warnings.warn(f"cannot lock {folder} ({err}): going on without the lock; reading "
                      f"finished runs works, training would fail the write probe",
                      RuntimeWarning, stacklevel=3)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def set_aside(path: Path, reason: str) -> Path:
    """Rename an unusable file to ``<name>.corrupt`` (never deleting anything) and warn."""
    target = path.with_name(path.name + ".corrupt")
    k = 0
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.corrupt.{k}")
    try:
        path.rename(target)
    except FileNotFoundError:  # another process set it aside first
        return target
    warnings.warn(f"{reason}; moved it aside to {target.name} (kept, not deleted)",
                  RuntimeWarning, stacklevel=3)
    return target


def read_meta(path: Path) -> dict[str, Any] | None:
    """A sidecar's contents, or ``None`` if it is missing or unreadable (not a dict with a run
    id and config hash)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("run_id"), str) \
            or not isinstance(info.get("config_hash"), str):
        return None
    return info


def write_meta(path: Path, info: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")


def _meta_from_payload(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    fmt = str(payload.get("format", ""))
    return {"run_id": payload["run_id"], "config_hash": payload["config_hash"],
            "data_hash": payload["data_hash"], "config": payload["config"],
            "train_version": int(fmt.rsplit("/", 1)[-1]) if "/" in fmt else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "recovered_from": path.name}


def recover_sidecars(folder: Path, label: str) -> list[Path]:
    """Rebuild the sidecar JSON of every run in ``folder`` that has checkpoints but no readable
    JSON (a damaged one is set aside first), from its newest readable checkpoint; returns the
    JSON files written. Call it while holding the folder's lock."""
    if not folder.is_dir():
        return []
    by_run: dict[str, dict[int, Path]] = {}
    pattern = _checkpoint_pattern(label)
    for path in folder.iterdir():
        m = pattern.match(path.name)
        if m:
            by_run.setdefault(m.group("run"), {})[int(m.group("epoch"))] = path
    written = []
    for run_id, files in sorted(by_run.items()):
        meta = folder / meta_name(label, run_id)
        if read_meta(meta) is not None:
            continue
        info = None
        for epoch in sorted(files, reverse=True):
            try:
                payload = load_checkpoint(files[epoch])
                info = _meta_from_payload(payload, files[epoch])
            except (CheckpointError, KeyError, TypeError, ValueError):
                continue
            if info["run_id"] == run_id:
                break
            info = None
        if info is None:
            continue  # no readable checkpoint: nothing identifies this run
        if meta.exists():
            set_aside(meta, f"run file {meta} is unreadable")
        write_meta(meta, info)
        warnings.warn(f"run {run_id} in {folder} had no readable {meta.name}: rebuilt it from "
                      f"{info['recovered_from']} (the run is reused, not retrained)",
                      RuntimeWarning, stacklevel=2)
        written.append(meta)
    return written
