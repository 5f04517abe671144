"""Seeded, resumable training runs of :class:`~gradkit.models.ResNetAudioRanker`, found again by
their configuration.

**Objectives** (``TrainConfig.objective``), on a batch with logits ``z``, labels ``y``, scores
``s`` and angles ``a`` (``lambda = rank_weight``):

- ``"raw"``: ``CE(z, y) + lambda * R(s, a)`` with ``R`` the smooth pairwise ranking loss
  (:func:`gradkit.losses.pairwise_ranking_loss`, margin ``margin``);
- ``"ghm"``: ``GHMC(z, y) + lambda * GHMRanking(s, a)`` (:mod:`gradkit.losses`).

Every epoch logs both values (``*_raw_loss`` and ``*_ghm_loss``) on the training batches (their
sample-weighted mean over the epoch, as computed at each step) and on the validation set (one
pass after the epoch; evaluation never updates the GHM EMA). A raw run also carries a pair of
*shadow* GHM modules: they see the raw run's detached outputs at every step and move their EMA
exactly as the GHM run's modules do, but never enter the gradient. Its GHM loss values and
diagnostics are therefore the same quantities as the GHM run's, measured along the raw run's
trajectory. (A GHM module that never updated would keep its EMA at zero and inflate every weight
by ``1 / (1 - momentum)``.)

**GHM diagnostics** (``Run.ghm_history``): one dict per epoch with the classification ``g``
of every training sample of that epoch in data order (``g = 1 - p_true``; ``index`` gives the
sample indices), their GHM weights ``w``, and per batch (row 0 = batch 0, row -1 = last batch) the
bin ``counts``, the EMA counts ``acc`` after that batch and the per-bin weights ``bin_weights``;
the same for the ranking pairs under ``rank_*``.

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
  config, config hash, metrics (list of dicts), ``ghm_history``; loadable with
  ``torch.load(weights_only=True)``;
- ``metrics_<label>_<run>.csv``: the metrics up to the latest checkpoint;
- ``run_<label>_<run>.json``: the run's config and its identity hash, for finding it again.

All are written atomically; a new run never writes into another run's files, so a failed run
cannot destroy an earlier good one.

**Identity.** :func:`get_run` hashes the config dict, the data (a fingerprint of the split's
tensors) and :data:`TRAIN_VERSION`: a finished run with that hash is reused, an unfinished one
resumed from its latest checkpoint, otherwise a new run is trained.

**Prompt tuning** (``mode="prompt"``, the study's set-up for the gradient-noise-scale analysis):
the trunk is initialised from the finished ``raw`` full run of the same condition (obtained
through :func:`get_run` with ``epochs=base_epochs``, trained first if needed) and frozen; the
classifier head is re-initialised (seeded), the score head keeps its trained weights, and a
learnable additive input prompt (zero-initialised) is added to every input. Trainable: the
prompt, the classifier and the score head. Its ``epochs`` default to 30 (the study's run);
a full run's to 60.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gradkit.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gradkit.core.device import pick_device
from gradkit.core.io import atomic_write_text
from gradkit.core.paths import checkpoints_dir
from gradkit.data.features import load_split
from gradkit.models import ResNetAudioRanker
from gradkit.training.config import TRAIN_VERSION, TrainConfig, run_key, split_fingerprint
from gradkit.training.loop import TrainState, cpu_threads, evaluate, new_state, train_epoch

__all__ = ["Run", "find_runs", "get_run"]


def _load_split(config: TrainConfig):
    """The data of ``config`` (tests replace this to train on tiny fake data)."""
    return load_split(config.material, config.freq_hz, root=config.data_root,
                      seed=config.split_seed)



# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def _checkpoint_name(label: str, epoch: int, run_id: str) -> str:
    return f"model_{label}_epoch_{epoch}_{run_id}.pt"


def _checkpoint_files(folder: Path, label: str, run_id: str) -> dict[int, Path]:
    pattern = re.compile(rf"^model_{re.escape(label)}_epoch_(\d+)_{re.escape(run_id)}\.pt$")
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            m = pattern.match(path.name)
            if m:
                found[int(m.group(1))] = path
    return dict(sorted(found.items()))


def _new_run_id(folder: Path) -> str:
    """The start time ``YYYYmmdd_HHMMSS``, moved on by seconds while the folder already uses it."""
    t = time.time()
    while True:
        run_id = time.strftime("%Y%m%d_%H%M%S", time.localtime(t))
        if not folder.is_dir() or not any(folder.glob(f"*_{run_id}.*")):
            return run_id
        t += 1


def _payload(state: TrainState, run: Run) -> dict[str, Any]:
    return {
        "format": f"gradkit.training/{TRAIN_VERSION}",
        "arch": state.model.arch_config(),
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "ghm": {"ghmc": state.ghmc.state_dict(), "ghm_ranking": state.ghm_rank.state_dict()},
        "epoch": state.epoch,
        "config": state.config.to_dict(),
        "config_hash": run.key,
        "data_hash": run.data_hash,
        "run_id": run.run_id,
        "metrics": [dict(r) for r in state.metrics],
        "ghm_history": state.ghm_history,
    }


def _restore(state: TrainState, payload: dict[str, Any], path: Path) -> None:
    """Load model, optimiser, GHM state, epoch, metrics and history from a checkpoint payload."""
    try:
        state.optimizer.load_state_dict(payload["optimizer"])
        state.ghmc.load_state_dict(payload["ghm"]["ghmc"])
        state.ghm_rank.load_state_dict(payload["ghm"]["ghm_ranking"])
        state.epoch = int(payload["epoch"])
        state.metrics = [dict(r) for r in payload["metrics"]]
        state.ghm_history = list(payload["ghm_history"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} cannot resume this run: {err}") from err
    if len(state.metrics) != state.epoch:
        raise CheckpointError(f"checkpoint {path} holds {len(state.metrics)} metric rows "
                              f"for epoch {state.epoch}")


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
class Run:
    """One training run on disk: its config, folder, id, checkpoints, metrics, data.

    ``metrics`` and ``ghm_history`` come from the latest checkpoint; ``load_model(epoch)`` gives
    the model of one checkpoint in eval mode on the CPU (trunk frozen for prompt runs, as it was
    trained, so that gradients cover the trained parameters only).
    """

    def __init__(self, config: TrainConfig, folder: Path, run_id: str, key: str,
                 data_hash: str, split: Any = None):
        self.config, self.dir, self.run_id = config, Path(folder), run_id
        self.key, self.data_hash = key, data_hash
        self._split = split
        self._latest: tuple[int, dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return (f"Run({self.config.folder_name}, run_id={self.run_id!r}, "
                f"epochs={self.last_epoch}/{self.config.epochs})")

    # -- files ----------------------------------------------------------------------------------
    @property
    def checkpoint_epochs(self) -> list[int]:
        return list(_checkpoint_files(self.dir, self.config.label, self.run_id))

    def checkpoint_path(self, epoch: int) -> Path:
        return self.dir / _checkpoint_name(self.config.label, epoch, self.run_id)

    @property
    def metrics_path(self) -> Path:
        return self.dir / f"metrics_{self.config.label}_{self.run_id}.csv"

    @property
    def meta_path(self) -> Path:
        return self.dir / f"run_{self.config.label}_{self.run_id}.json"

    @property
    def last_epoch(self) -> int:
        epochs = self.checkpoint_epochs
        return epochs[-1] if epochs else 0

    @property
    def finished(self) -> bool:
        return self.last_epoch >= self.config.epochs

    # -- contents -------------------------------------------------------------------------------
    def load_checkpoint(self, epoch: int | None = None) -> dict[str, Any]:
        """The payload of checkpoint ``epoch`` (default: the latest), checked to be this run's."""
        if epoch is None:
            epoch = self.last_epoch
            if epoch == 0:
                raise CheckpointError(f"run {self.run_id} in {self.dir} has no checkpoint yet")
        path = self.checkpoint_path(epoch)
        if epoch not in self.checkpoint_epochs:
            raise CheckpointError(f"checkpoint {path} does not exist; this run has epochs "
                                  f"{self.checkpoint_epochs}")
        payload = load_checkpoint(path)
        if payload.get("config_hash") != self.key:
            raise CheckpointError(f"checkpoint {path} belongs to another configuration "
                                  f"({payload.get('config_hash')} != {self.key})")
        return payload

    def _latest_payload(self) -> dict[str, Any]:
        epoch = self.last_epoch
        if self._latest is None or self._latest[0] != epoch:
            self._latest = (epoch, self.load_checkpoint(epoch))
        return self._latest[1]

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
        """One row per epoch: train and validation raw / GHM loss, accuracy, ranking terms."""
        return pd.DataFrame(self._latest_payload()["metrics"])

    @property
    def ghm_history(self) -> list[dict[str, Any]]:
        """Per-epoch GHM diagnostics (see the module docstring)."""
        return self._latest_payload()["ghm_history"]

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
            try:
                info = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue  # unreadable sidecar: not a run we can identify
            if info.get("config_hash") == key:
                files = _checkpoint_files(folder, config.label, info["run_id"])
                found.append((info["run_id"], max(files, default=0)))
    return found


def _train(run: Run, state: TrainState, device: torch.device, progress: bool,
           stop_after: int | None) -> None:
    from tqdm.auto import tqdm

    cfg = run.config
    split = run.split
    data = {k: getattr(split, k).to(device) for k in
            ("x_train", "y_train", "angles_train", "x_val", "y_val", "angles_val")}
    data["angles_train"] = data["angles_train"].float()
    data["angles_val"] = data["angles_val"].float()
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    bar = tqdm(range(state.epoch + 1, last + 1), desc=f"{cfg.folder_name} {run.run_id}",
               initial=state.epoch, total=cfg.epochs, disable=not progress, leave=False)
    for epoch in bar:
        out = train_epoch(state, data, epoch)
        val = evaluate(state, data["x_val"], data["y_val"], data["angles_val"])
        state.metrics.append({**out["row"], **{f"val_{k}": v for k, v in val.items()}})
        state.ghm_history.append(out["history"])
        state.epoch = epoch
        bar.set_postfix(loss=f"{out['row']['train_loss']:.3f}", val_acc=f"{val['acc']:.2f}")
        if epoch % cfg.save_every == 0 or epoch == cfg.epochs:
            save_checkpoint(run.checkpoint_path(epoch), _payload(state, run))
            atomic_write_text(run.metrics_path, pd.DataFrame(state.metrics).to_csv(index=False))
    bar.close()


def get_run(config: TrainConfig, progress: bool = True, *, stop_after: int | None = None
            ) -> Run:
    """The finished run of ``config`` on its data: reused if stored, resumed if unfinished,
    trained otherwise (see the module docstring).

    ``stop_after``: train at most up to that epoch in this call (the run stays unfinished and a
    later call resumes it), e.g. to spread a long run over sessions.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"get_run needs a TrainConfig, got {type(config).__name__}")
    split = _load_split(config)
    config = config.sized_for(len(split.y_train))  # batch_size=None: sized to this split
    data_hash = split_fingerprint(split)
    key = run_key(config, data_hash)
    folder = checkpoints_dir() / config.folder_name
    runs = find_runs(config, key)
    finished = [r for r in runs if r[1] >= config.epochs]
    if finished:
        return Run(config, folder, finished[-1][0], key, data_hash, split)

    base_state = None
    if config.mode == "prompt":
        base = get_run(config.base_config(), progress=progress)
        base_state = base.load_checkpoint(base.last_epoch)["model"]
    device = pick_device()
    with cpu_threads(device):
        if runs:  # resume the most recent unfinished run from its latest checkpoint
            run_id, last = runs[-1]
            run = Run(config, folder, run_id, key, data_hash, split)
            state = new_state(config, split, device, base_state)
            if last > 0:
                payload = run.load_checkpoint(last)
                load_checkpoint(run.checkpoint_path(last),
                                expected_arch=state.model.arch_config(), model=state.model)
                _restore(state, payload, run.checkpoint_path(last))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            run = Run(config, folder, _new_run_id(folder), key, data_hash, split)
            meta = {"run_id": run.run_id, "config_hash": key, "data_hash": data_hash,
                    "train_version": TRAIN_VERSION, "config": config.to_dict(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
            atomic_write_text(run.meta_path, json.dumps(meta, indent=2) + "\n")
            state = new_state(config, split, device, base_state)
        _train(run, state, device, progress, stop_after)
    return run
