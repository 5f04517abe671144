"""Training a run's epochs into its folder: the write probe, the guarded epochs, the
checkpoints, the record of a failure (used by :func:`gradkit.training.runs.get_run`; ``run`` is a
:class:`~gradkit.training.runs.Run`).

**The write probe** (:func:`probe_run`) sizes the checkpoints a run is about to write from the
objects that will be saved: the model, the optimiser's state as it is after a step (taken on a
copy), the GHM state, and the records of every epoch up to the save (the epochs still to come
shaped as :func:`~gradkit.training.state.train_epoch` will shape them: its batches, its ranking
pairs). Before any epoch it writes a file the size of the largest checkpoint into the run's
folder and checks free space for all of them; a folder that cannot take them fails then, with
the folder and the sizes named. A new run that stops before its first checkpoint is written
leaves no sidecar behind (:func:`forget_unwritten`).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import time
from typing import Any

import pandas as pd
import torch

from gradkit.core.checkpoint import save_checkpoint
from gradkit.core.io import StorageError, atomic_write_text, probe_writable
from gradkit.losses.ranking import ranking_pairs
from gradkit.training.config import TRAIN_VERSION
from gradkit.training.guard import DivergenceGuard, TrainingDiverged
from gradkit.training.loop import epoch_batches
from gradkit.training.payload import build_payload
from gradkit.training.records import EpochMetrics, GHMRecord, HeadDiagnostics
from gradkit.training.state import TrainState, evaluate_state, train_epoch
from gradkit.training.store import read_meta, write_meta

__all__ = ["checkpoint_plan", "clear_failure", "forget_unwritten", "probe_run",
           "record_failure", "save_run", "start_run", "train_run"]


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


def _stepped_optimizer(state: TrainState) -> torch.optim.Optimizer:
    """A copy of the run's optimiser after one step with zero gradients: its state holds what
    a checkpoint's will (moments, step counts); the run's own model and optimiser are
    untouched."""
    _, optimizer = copy.deepcopy((state.model, state.optimizer))
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    return optimizer


def _planned_record(state: TrainState, angles: torch.Tensor, epoch: int) -> GHMRecord:
    """A record of ``epoch`` shaped as :func:`~gradkit.training.state.train_epoch` makes it
    (the epoch's batches and their ranking pairs; the values are zeros): what it adds to a
    checkpoint."""
    cfg = state.config
    batches = epoch_batches(len(angles), cfg.batch_size, cfg.seed, epoch)

    def head(sizes: list[int]) -> HeadDiagnostics:
        rows = torch.zeros(len(sizes), cfg.bins)
        return HeadDiagnostics(torch.zeros(sum(sizes)), torch.zeros(sum(sizes)), sizes,
                               rows, rows.clone(), rows.clone())

    pairs = [int(ranking_pairs(angles[b])[0].numel()) for b in batches]
    return GHMRecord(epoch, torch.cat(batches), head([len(b) for b in batches]), head(pairs))


def _planned_metrics(epoch: int) -> EpochMetrics:
    """Distinct floats of full precision, as a run's are (their size in the table and the
    checkpoint is a real row's)."""
    values = [math.pi * (epoch + k) / 7 for k in range(len(dataclasses.fields(EpochMetrics)))]
    return EpochMetrics(epoch, *values[1:])


def checkpoint_plan(run: Any, state: TrainState, last: int) -> tuple[dict[int, int], int]:
    """``({epoch: bytes}, table bytes)``: the checkpoints the run writes from ``state.epoch``
    up to epoch ``last`` (every ``save_every`` epochs and the final one), sized as written —
    the payloads of the first and of the last save built from the run's objects (see the
    module docstring), those in between interpolated (a checkpoint grows by one epoch's
    records per epoch) — and the metrics table at the last save."""
    cfg = state.config
    saves = [e for e in range(state.epoch + 1, last + 1)
             if e % cfg.save_every == 0 or e == cfg.epochs]
    if not saves:
        return {}, 0
    optimizer = _stepped_optimizer(state)
    angles = run.split.angles_train.float().cpu()
    metrics, history = list(state.metrics), list(state.ghm_history)
    sizes = {}
    for epoch in range(state.epoch + 1, saves[-1] + 1):
        metrics.append(_planned_metrics(epoch))
        history.append(_planned_record(state, angles, epoch))
        if epoch in (saves[0], saves[-1]):
            planned = dataclasses.replace(state, optimizer=optimizer, epoch=epoch,
                                          metrics=metrics, ghm_history=history)
            buffer = io.BytesIO()
            torch.save(build_payload(planned, run), buffer)
            sizes[epoch] = buffer.getbuffer().nbytes
    first, final = saves[0], saves[-1]
    slope = (sizes[final] - sizes[first]) / max(final - first, 1)
    table = len(pd.DataFrame([m.to_dict() for m in metrics]).to_csv(index=False).encode())
    return {e: sizes.get(e, math.ceil(sizes[first] + slope * (e - first))) for e in saves}, table


def probe_run(run: Any, state: TrainState, last: int) -> None:
    """Before any epoch: the folder takes a write the size of the run's largest checkpoint,
    and has room for all of them (:func:`checkpoint_plan`; plus one checkpoint's temporary
    file while it is written, and the metrics table); else :class:`StorageError` naming the
    folder and the sizes."""
    plan, table = checkpoint_plan(run, state, last)
    largest = max(plan.values(), default=1)
    needed = sum(plan.values()) + largest + table
    try:
        probe_writable(run.dir, largest, needed_bytes=needed)
    except StorageError as err:
        raise StorageError(f"{err} (this run writes {len(plan)} checkpoint(s) of up to "
                           f"{largest / 1e3:.0f} kB each, {needed / 1e6:.2f} MB in all)") from err


def start_run(run: Any, state: TrainState, last: int) -> None:
    """A new run: the write probe, then its sidecar (identity, config)."""
    probe_run(run, state, last)
    write_meta(run.meta_path, {
        "run_id": run.run_id, "config_hash": run.key, "data_hash": run.data_hash,
        "train_version": TRAIN_VERSION, "config": run.config.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def forget_unwritten(run: Any) -> None:
    """A new run stopped before its first checkpoint (a failed write, an interrupt): its
    sidecar goes, so that nothing claims a run that has no file (a divergence is recorded
    instead, by :func:`record_failure`)."""
    if not run.checkpoint_epochs:
        run.meta_path.unlink(missing_ok=True)


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
