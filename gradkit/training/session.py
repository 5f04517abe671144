"""Training a run's epochs into its folder: the write probe, the guarded epochs, the
checkpoints, the record of a failure (used by :func:`gradkit.training.runs.get_run`; ``run`` is a
:class:`~gradkit.training.runs.Run`).
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import pandas as pd
import torch

from gradkit.core.checkpoint import save_checkpoint
from gradkit.core.io import StorageError, atomic_write_text, probe_writable
from gradkit.training.guard import DivergenceGuard, TrainingDiverged
from gradkit.training.payload import build_payload
from gradkit.training.records import EpochMetrics
from gradkit.training.state import TrainState, evaluate_state, train_epoch
from gradkit.training.store import read_meta, write_meta

__all__ = ["clear_failure", "probe_run", "record_failure", "save_run", "train_run"]


def save_run(run: Any, state: TrainState) -> None:
    path = run.checkpoint_path(state.epoch)
    try:
        save_checkpoint(path, build_payload(state, run))
        atomic_write_text(run.metrics_path,
                          pd.DataFrame([m.to_dict() for m in state.metrics]).to_csv(index=False))
    except OSError as err:
        raise StorageError(f"could not write {path.name} in {run.dir} ({err}); the earlier "
                           f"checkpoints (epochs {run.checkpoint_epochs}) are kept, and the run "
                           f"resumes from the last one") from err


def probe_run(run: Any, state: TrainState, last: int) -> None:
    """Before any epoch: the folder takes a checkpoint's write, and has room for all of them."""
    buffer = io.BytesIO()
    torch.save(build_payload(state, run), buffer)
    size = buffer.getbuffer().nbytes
    cfg = run.config
    saves = sum(1 for e in range(state.epoch + 1, last + 1)
                if e % cfg.save_every == 0 or e == cfg.epochs)
    # The history grows with the epochs: budget twice the present size per checkpoint.
    probe_writable(run.dir, size, needed_bytes=2 * size * saves)


def train_run(run: Any, state: TrainState, device: torch.device, progress: bool,
           stop_after: int | None) -> None:
    from tqdm.auto import tqdm

    cfg = run.config
    split = run.split
    data = {k: getattr(split, k).to(device) for k in
            ("x_train", "y_train", "angles_train", "x_val", "y_val", "angles_val")}
    data["angles_train"] = data["angles_train"].float()
    data["angles_val"] = data["angles_val"].float()
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    guard = DivergenceGuard(lr=cfg.learning_rate)
    bar = tqdm(range(state.epoch + 1, last + 1), desc=f"{cfg.folder_name} {run.run_id}",
               initial=state.epoch, total=cfg.epochs, disable=not progress, leave=False)
    try:
        for epoch in bar:
            train, record = train_epoch(state, data, epoch, guard)
            val = evaluate_state(state, data["x_val"], data["y_val"], data["angles_val"])
            state.metrics.append(EpochMetrics(epoch=epoch, **train, **val))
            state.ghm_history.append(record)
            state.epoch = epoch
            bar.set_postfix(loss=f"{train['train_loss']:.3f}", val_acc=f"{val['val_acc']:.2f}")
            if epoch % cfg.save_every == 0 or epoch == cfg.epochs:
                save_run(run, state)
    finally:
        bar.close()


def record_failure(run: Any, err: TrainingDiverged) -> None:
    info = read_meta(run.meta_path) or {}
    info.update(status="failed", failed_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                failure={"epoch": err.epoch, "batch": err.batch, "reason": err.reason,
                         "value": err.value if math.isfinite(err.value) else None,
                         "lr": err.lr, "summary": err.attach(run, run.name).summary})
    write_meta(run.meta_path, info)


def clear_failure(run: Any) -> None:
    info = read_meta(run.meta_path) or {}
    for k in ("status", "failed_at", "failure"):
        info.pop(k, None)
    write_meta(run.meta_path, info)
