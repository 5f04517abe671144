"""Seeded, resumable training runs of :class:`~gradkit.models.ResNetAudioRanker`, found again by
their configuration.

**Objectives and records** (:mod:`gradkit.training.objective`, :mod:`gradkit.training.records`):
``"raw"`` (CE + ranking) or ``"ghm"`` (GHM-C + GHM ranking); every epoch logs both values on the
training batches and on the validation set (evaluation never updates the GHM EMA; a raw run's
GHM values come from shadow GHM modules). ``Run.metrics`` is a DataFrame of
:class:`~gradkit.training.records.EpochMetrics` rows, ``Run.ghm_history`` a list of
:class:`~gradkit.training.records.GHMRecord` (one epoch's GHM diagnostics of both heads).

**Determinism.** The initial weights come from ``torch.manual_seed(seed)``; the data order of
epoch ``e`` from a ``torch.Generator`` seeded by ``(seed, e)``; there is no other randomness. On
the CPU, training runs single-threaded (the model is tiny: one thread is as fast, never fights
the other processes for cores, and makes results independent of the machine's thread count).
Together with model, optimiser and GHM state in every checkpoint this makes a resumed run
bit-identical to an uninterrupted one.

**Files.** A run lives in ``checkpoints/<material>_<freq>hz_<label>/`` where ``label`` is the
objective (``raw`` / ``ghm``) for full training and ``prompt_<objective>`` for prompt tuning:

- ``model_<label>_epoch_<N>_<run>.pt`` every ``save_every`` epochs and at the last epoch
  (``<run>`` = start time ``YYYYmmdd_HHMMSS``): arch, model, optimiser and GHM state, epoch,
  config, config hash, data hash, run id, metrics and ``ghm_history`` (as dicts: the records'
  ``to_dict()``); loadable with ``torch.load(weights_only=True)``;
- ``metrics_<label>_<run>.csv``: the metrics up to the latest checkpoint;
- ``run_<label>_<run>.json``: the run's config, its identity hash and its status (failed or
  not), for finding it again; rebuilt from the checkpoints when missing or damaged.

All are written atomically; a new run never writes into another run's files, so a failed run
cannot destroy an earlier good one. :mod:`gradkit.training.store` holds the folder's lock,
removes stale temporary files, sets corrupt files aside and rebuilds sidecars.

**Identity.** :func:`get_run` hashes the config dict, the data (a fingerprint of the split's
tensors) and :data:`TRAIN_VERSION`: a finished run with that hash is reused, an unfinished one
resumed from its latest checkpoint, otherwise a new run is trained.

**Surviving damage and divergence.** Under the folder's lock, :func:`get_run`

1. removes temporary files of killed writes, rebuilds missing sidecars from the checkpoints;
2. refuses a run recorded as failed: it raises its :class:`~gradkit.training.guard.TrainingDiverged`
   again (``retry_failed=True`` resumes it from its last finite checkpoint instead);
3. reads the newest checkpoint of the run; an unreadable one is moved aside (``*.corrupt``) with
   a warning and the next older one is used: the run then resumes from there; a run whose
   checkpoints are all unreadable is trained again from the start, after a warning. A finished
   run whose final checkpoint holds non-finite values (written before the guard existed) is
   recorded as failed;
4. before training, probes the folder with a write the size of the run's largest checkpoint and
   checks free space for all of them (:func:`gradkit.training.session.probe_run`); a new run
   stopped before its first checkpoint (a failed write, an interrupt) leaves no sidecar;
5. trains with a :class:`~gradkit.training.guard.DivergenceGuard`: a non-finite or unbounded loss
   or a non-finite parameter stops the run with ``TrainingDiverged`` (naming epoch and batch,
   the run attached as ``err.run``); the sidecar records the failure, the checkpoints written so
   far (all finite) are kept. A notebook catches it and prints ``err.summary``.

**Prompt tuning** (``mode="prompt"``, the study's set-up for the gradient-noise-scale analysis):
the trunk is initialised from the finished ``raw`` full run of the same condition (obtained
through :func:`get_run` with ``epochs=base_epochs``, trained first if needed) and frozen; the
classifier head is re-initialised (seeded), the score head keeps its trained weights, and a
learnable additive input prompt (zero-initialised) is added to every input. Trainable: the
prompt, the classifier and the score head. Its ``epochs`` default to 30 (the study's run);
a full run's to 60.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from gradkit.core.checkpoint import (
    CheckpointError,
    CorruptCheckpoint,
    load_checkpoint,
)
from gradkit.core.device import pick_device
from gradkit.core.io import remove_stale_temps
from gradkit.core.paths import checkpoints_dir
from gradkit.data.features import load_split
from gradkit.models import ResNetAudioRanker
from gradkit.training import session
from gradkit.training.config import TrainConfig, run_key, split_fingerprint
from gradkit.training.guard import TrainingDiverged
from gradkit.training.loop import cpu_threads
from gradkit.training.payload import is_finite, read_records, restore_state
from gradkit.training.records import EpochMetrics, GHMRecord
from gradkit.training.state import new_state
from gradkit.training.store import (
    checkpoint_files,
    checkpoint_name,
    folder_lock,
    meta_name,
    new_run_id,
    read_meta,
    recover_sidecars,
    set_aside,
)

__all__ = ["Run", "find_runs", "get_run"]

_COLUMNS = [f for f in EpochMetrics.__dataclass_fields__]


def _load_split(config: TrainConfig):
    """The data of ``config`` (tests replace this to train on tiny fake data)."""
    return load_split(config.material, config.freq_hz, root=config.data_root,
                      seed=config.split_seed)


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
class Run:
    """One training run on disk: its config, folder, id, checkpoints, metrics, data.

    ``metrics`` and ``ghm_history`` come from the newest readable checkpoint (an unreadable one
    is set aside as ``*.corrupt`` with a warning); ``load_model(epoch)`` gives the model of one
    checkpoint in eval mode on the CPU (trunk frozen for prompt runs, as it was trained, so
    that gradients cover the trained parameters only). ``failed`` / ``failure``: the run
    diverged (see :class:`~gradkit.training.guard.TrainingDiverged`); it is never ``finished``.
    """

    def __init__(self, config: TrainConfig, folder: Path, run_id: str, key: str,
                 data_hash: str, split: Any = None):
        self.config, self.dir, self.run_id = config, Path(folder), run_id
        self.key, self.data_hash = key, data_hash
        self._split = split
        self._latest: tuple[int, dict[str, Any], list[EpochMetrics], list[GHMRecord]] | None
        self._latest = None

    def __repr__(self) -> str:
        state = " failed" if self.failed else ""
        return (f"Run({self.config.folder_name}, run_id={self.run_id!r}, "
                f"epochs={self.last_epoch}/{self.config.epochs}{state})")

    @property
    def name(self) -> str:
        return f"run {self.config.folder_name} {self.run_id}"

    # -- files ----------------------------------------------------------------------------------
    @property
    def checkpoint_epochs(self) -> list[int]:
        return list(checkpoint_files(self.dir, self.config.label, self.run_id))

    def checkpoint_path(self, epoch: int) -> Path:
        return self.dir / checkpoint_name(self.config.label, epoch, self.run_id)

    @property
    def metrics_path(self) -> Path:
        return self.dir / f"metrics_{self.config.label}_{self.run_id}.csv"

    @property
    def meta_path(self) -> Path:
        return self.dir / meta_name(self.config.label, self.run_id)

    @property
    def last_epoch(self) -> int:
        epochs = self.checkpoint_epochs
        return epochs[-1] if epochs else 0

    @property
    def failure(self) -> dict[str, Any] | None:
        """The recorded divergence (epoch, batch, reason, lr, summary), or ``None``."""
        info = read_meta(self.meta_path) or {}
        return info.get("failure") if info.get("status") == "failed" else None

    @property
    def failed(self) -> bool:
        return self.failure is not None

    @property
    def finished(self) -> bool:
        return self.last_epoch >= self.config.epochs and not self.failed

    def divergence(self) -> TrainingDiverged:
        """The recorded failure as the exception ``get_run`` raises (``None`` if not failed)."""
        f = self.failure
        if f is None:
            return None
        err = TrainingDiverged(int(f["epoch"]), f.get("batch"), str(f["reason"]),
                               math.nan if f.get("value") is None else float(f["value"]),
                               f.get("lr"))
        return err.attach(self, self.name)

    # -- contents -------------------------------------------------------------------------------
    def _check(self, payload: dict[str, Any], path: Path) -> None:
        if payload.get("config_hash") != self.key:
            raise CheckpointError(f"checkpoint {path} belongs to another configuration "
                                  f"({payload.get('config_hash')} != {self.key})")

    def _read_latest(self):
        """``(epoch, payload, metrics, history)`` of the newest readable checkpoint (``None``
        without checkpoints); unreadable ones are set aside, newest first."""
        epochs = self.checkpoint_epochs
        if self._latest is not None and epochs and self._latest[0] == epochs[-1]:
            return self._latest
        self._latest = None
        for epoch in reversed(epochs):
            path = self.checkpoint_path(epoch)
            try:
                payload = load_checkpoint(path)
                metrics, history = read_records(payload, path)
            except CorruptCheckpoint as err:
                set_aside(path, f"{err}; {self.name} falls back to its previous checkpoint")
                continue
            self._check(payload, path)
            self._latest = (epoch, payload, metrics, history)
            return self._latest
        if epochs:
            raise CorruptCheckpoint(f"none of the checkpoints of {self.name} in {self.dir} is "
                                    f"readable (epochs {epochs}, set aside as *.corrupt)")
        return None

    def load_checkpoint(self, epoch: int | None = None) -> dict[str, Any]:
        """The payload of checkpoint ``epoch``, checked to be this run's; default: the newest
        readable one (older ones are used when newer ones are unreadable, see the class)."""
        if epoch is None:
            latest = self._read_latest()
            if latest is None:
                raise CheckpointError(f"{self.name} in {self.dir} has no checkpoint yet")
            return latest[1]
        path = self.checkpoint_path(epoch)
        if epoch not in self.checkpoint_epochs:
            raise CheckpointError(f"checkpoint {path} does not exist; this run has epochs "
                                  f"{self.checkpoint_epochs}")
        payload = load_checkpoint(path)
        self._check(payload, path)
        return payload

    def load_model(self, epoch: int | None = None) -> ResNetAudioRanker:
        """The model of checkpoint ``epoch`` (default: the latest), eval mode, on the CPU."""
        payload = self.load_checkpoint(epoch)
        path = self.checkpoint_path(int(payload["epoch"]))
        try:
            model = ResNetAudioRanker(**payload["arch"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path} has an unusable 'arch': {err}") from err
        # The payload's own 'arch' only rebuilds what the file holds; the run's config says what
        # it must hold, so a file of another architecture is refused rather than loaded.
        expected = {"widths": list(self.config.widths),
                    "prompt": self.config.mode == "prompt"}
        found = {"widths": list(model.widths), "prompt": model.prompt is not None}
        if found != expected:
            raise CheckpointError(f"checkpoint {path} is of another architecture: {found} != "
                                  f"{expected} of run {self.run_id} ({self.config.folder_name})")
        load_checkpoint(path, expected_arch=model.arch_config(), model=model)
        if self.config.mode == "prompt":
            model.freeze_trunk()
        return model.eval()

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per epoch (:class:`~gradkit.training.records.EpochMetrics`): train and
        validation raw / GHM loss, accuracy, ranking terms; no rows before the first
        checkpoint."""
        latest = self._read_latest()
        rows = [m.to_dict() for m in latest[2]] if latest else []
        return pd.DataFrame(rows, columns=None if rows else _COLUMNS)

    @property
    def ghm_history(self) -> list[GHMRecord]:
        """Per-epoch GHM diagnostics (:class:`~gradkit.training.records.GHMRecord`)."""
        latest = self._read_latest()
        return list(latest[3]) if latest else []

    @property
    def split(self):
        """The run's data (:class:`gradkit.features.AudioSplit`)."""
        if self._split is None:
            self._split = _load_split(self.config)
        return self._split

    @property
    def base_run(self) -> Run | None:
        """Prompt mode: the raw full run whose trunk this run reuses."""
        if self.config.mode != "prompt":
            return None
        return get_run(self.config.base_config(), progress=False)


def find_runs(config: TrainConfig, key: str) -> list[tuple[str, int]]:
    """``(run_id, last checkpoint epoch)`` of the runs stored for ``key``, oldest first."""
    folder = checkpoints_dir(create=False) / config.folder_name
    found = []
    if folder.is_dir():
        for meta in sorted(folder.glob(f"run_{config.label}_*.json")):
            info = read_meta(meta)
            if info is not None and info["config_hash"] == key:
                files = checkpoint_files(folder, config.label, info["run_id"])
                found.append((info["run_id"], max(files, default=0)))
    return found


_train = session.train_run  # one name to patch in tests


def _warn_rebuild(run: Run, err: Exception) -> None:
    warnings.warn(f"{err}: {run.name} is trained again from the start", RuntimeWarning,
                  stacklevel=3)


def _existing_run(runs: list[Run], retry_failed: bool) -> Run | None:
    """The stored run to reuse or resume: a finished one (newest first, checked), else the
    newest one; a failed run raises its divergence unless ``retry_failed``."""
    for run in reversed(runs):
        if run.failed or run.last_epoch < run.config.epochs:
            continue
        try:
            latest = run._read_latest()
        except CorruptCheckpoint as err:
            _warn_rebuild(run, err)
            return run
        if latest is not None and latest[0] >= run.config.epochs:
            if not is_finite(latest[1], latest[2]):
                bad = next((m.epoch for m in latest[2] if not m.finite()), latest[0])
                session.record_failure(run, TrainingDiverged(
                    bad, None, "non-finite values in its checkpoint", lr=run.config.learning_rate))
                raise run.divergence()
            return run
        return run  # its final checkpoint was set aside: resume from the one before
    if not runs:
        return None
    run = runs[-1]
    if run.failed:
        if not retry_failed:
            raise run.divergence()
        session.clear_failure(run)
    return run


def get_run(config: TrainConfig, progress: bool = True, *, stop_after: int | None = None,
            retry_failed: bool = False) -> Run:
    """The finished run of ``config`` on its data: reused if stored, resumed if unfinished,
    trained otherwise (see the module docstring, also for what survives what).

    ``stop_after``: train at most up to that epoch in this call (the run stays unfinished and a
    later call resumes it), e.g. to spread a long run over sessions. Raises
    :class:`~gradkit.training.guard.TrainingDiverged` (``err.run``, ``err.summary``) for a run
    that diverged, now or before (``retry_failed=True``: resume it from its last finite
    checkpoint instead of refusing), and :class:`~gradkit.core.io.StorageError` for a folder
    that cannot take the checkpoints, before any epoch is trained.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"get_run needs a TrainConfig, got {type(config).__name__}")
    split = _load_split(config)
    config = config.sized_for(len(split.y_train))  # batch_size=None: sized to this split
    data_hash = split_fingerprint(split)
    key = run_key(config, data_hash)
    folder = checkpoints_dir() / config.folder_name
    with folder_lock(folder):
        removed = remove_stale_temps(folder)
        if removed:
            warnings.warn(f"removed {len(removed)} temporary file(s) of interrupted writes in "
                          f"{folder}: {[p.name for p in removed]}", RuntimeWarning, stacklevel=2)
        recover_sidecars(folder, config.label)
        runs = [Run(config, folder, run_id, key, data_hash, split)
                for run_id, _ in find_runs(config, key)]
        run = _existing_run(runs, retry_failed)
        if run is not None and run.finished:
            return run
        base_state = None
        if config.mode == "prompt":
            base = get_run(config.base_config(), progress=progress)
            base_state = base.load_checkpoint()["model"]
        device = pick_device()
        with cpu_threads(device):
            state = new_state(config, split, device, base_state)
            last = config.epochs if stop_after is None else min(config.epochs, stop_after)
            created = run is None
            if created:
                run = Run(config, folder, new_run_id(folder), key, data_hash, split)
                session.start_run(run, state, last)  # the write probe, then the sidecar
            else:
                try:
                    latest = run._read_latest()
                except CorruptCheckpoint as err:
                    _warn_rebuild(run, err)
                    latest = None
                if latest is not None:
                    path = run.checkpoint_path(latest[0])
                    load_checkpoint(path, expected_arch=state.model.arch_config(),
                                    model=state.model)
                    restore_state(state, *latest[1:], path)
                session.probe_run(run, state, last)
            try:
                _train(run, state, device, progress, stop_after)
            except TrainingDiverged as err:
                session.record_failure(run, err)
                raise err.attach(run, run.name) from None
            except BaseException:
                if created:
                    session.forget_unwritten(run)  # no checkpoint: no sidecar claims it
                raise
    return run
