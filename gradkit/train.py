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

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from gradkit.checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from gradkit.device import pick_device
from gradkit.losses import GHMC, GHMRanking, bin_index, pairwise_ranking_loss, ranking_pairs
from gradkit.models import ResNetAudioRanker
from gradkit.paths import checkpoints_dir

__all__ = [
    "OBJECTIVES",
    "MODES",
    "TRAIN_VERSION",
    "Run",
    "TrainConfig",
    "build_model",
    "epoch_order",
    "find_runs",
    "get_run",
    "run_key",
    "sample_loss",
    "split_fingerprint",
]

#: Bump when training semantics change, so that runs cached by an older version are not reused.
TRAIN_VERSION = 1
OBJECTIVES = ("raw", "ghm")
MODES = ("full", "prompt")
DEFAULT_EPOCHS = {"full": 60, "prompt": 30}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"TrainConfig.{name} must be an int >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float = math.inf,
                 low_open: bool = False, high_open: bool = True) -> None:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"TrainConfig.{name} must be a number in {lo}{low}, {high}{hi}, "
                         f"got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and, with the data, identifies it).

    ``epochs=None`` means 60 for ``mode="full"`` and 30 for ``mode="prompt"``.
    ``batch_size=12`` cuts the 36 training clips into three equal batches (no ragged last batch
    whose GHM histogram would rest on a handful of samples). ``lr=3e-3`` (Adam) for full
    training; prompt tuning trains only the prompt and the heads and uses ``prompt_lr``.
    ``rank_weight=0.1`` puts both terms on the same scale at the start: an untrained model has
    ``CE ~ ln 6 = 1.8`` and ranking loss ``~ softplus(margin) = 10``. (Both tuned on plastic /
    3000 Hz: with ``rank_weight=1`` the ranking term drowns the classification signal.)
    ``split_seed`` seeds the train/validation split, ``seed`` the initial weights and the data
    order. ``base_epochs``: length of the raw full run whose trunk prompt tuning reuses.
    """

    material: str = "plastic"
    freq_hz: int = 3000
    objective: str = "raw"
    mode: str = "full"
    epochs: int | None = None
    save_every: int = 5
    seed: int = 42
    split_seed: int = 42
    bins: int = 10
    momentum: float = 0.75
    margin: float = 10.0
    lr: float = 3e-3
    prompt_lr: float = 1e-2
    batch_size: int = 12
    rank_weight: float = 0.1
    weight_decay: float = 0.0
    widths: tuple[int, ...] = (8, 16, 32)
    base_epochs: int = 60

    def __post_init__(self) -> None:
        if not isinstance(self.material, str) or not _NAME.match(self.material):
            raise ValueError(f"TrainConfig.material must be a plain name like 'plastic', "
                             f"got {self.material!r}")
        _check_int("freq_hz", self.freq_hz, 1)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"TrainConfig.objective must be one of {OBJECTIVES}, "
                             f"got {self.objective!r}")
        if self.mode not in MODES:
            raise ValueError(f"TrainConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.epochs is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS[self.mode])
        for name, minimum in [("epochs", 1), ("save_every", 1), ("seed", 0), ("split_seed", 0),
                              ("bins", 1), ("batch_size", 1), ("base_epochs", 1)]:
            _check_int(name, getattr(self, name), minimum)
        _check_float("momentum", self.momentum, 0.0, 1.0)
        _check_float("margin", self.margin, 0.0)
        _check_float("lr", self.lr, 0.0, low_open=True)
        _check_float("prompt_lr", self.prompt_lr, 0.0, low_open=True)
        _check_float("rank_weight", self.rank_weight, 0.0)
        _check_float("weight_decay", self.weight_decay, 0.0)
        widths = self.widths
        if (isinstance(widths, str | bytes) or not isinstance(widths, Sequence) or not widths
                or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths)):
            raise ValueError(f"TrainConfig.widths must be a non-empty sequence of positive ints, "
                             f"got {widths!r}")
        object.__setattr__(self, "widths", tuple(int(w) for w in widths))
        # Canonical Python types, so that equal configs hash equally (3000 vs np.int64(3000)).
        for name in ("freq_hz", "epochs", "save_every", "seed", "split_seed", "bins",
                     "batch_size", "base_epochs"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("momentum", "margin", "lr", "prompt_lr", "rank_weight", "weight_decay"):
            object.__setattr__(self, name, float(getattr(self, name)))

    # -- names ----------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """``raw`` / ``ghm`` (full training), ``prompt_raw`` / ``prompt_ghm`` (prompt tuning)."""
        return self.objective if self.mode == "full" else f"prompt_{self.objective}"

    @property
    def folder_name(self) -> str:
        """``<material>_<freq>hz_<label>``, e.g. ``plastic_3000hz_ghm``."""
        return f"{self.material}_{self.freq_hz}hz_{self.label}"

    @property
    def learning_rate(self) -> float:
        """The Adam step size actually used: ``lr`` (full) or ``prompt_lr`` (prompt)."""
        return self.lr if self.mode == "full" else self.prompt_lr

    def base_config(self) -> TrainConfig:
        """Prompt mode: the raw full run whose trunk is reused (same data, seeds, sizes)."""
        return dataclasses.replace(self, objective="raw", mode="full", epochs=self.base_epochs)

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Primitives only (``widths`` as a list), for JSON and ``weights_only`` checkpoints."""
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**d)


def split_fingerprint(split: Any) -> str:
    """SHA-256 over the split's tensors (features, labels, angles of train and validation)."""
    h = hashlib.sha256()
    for name in ("x_train", "y_train", "angles_train", "x_val", "y_val", "angles_val"):
        t = getattr(split, name).detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def run_key(config: TrainConfig, data_hash: str) -> str:
    """A run's identity: SHA-256 of ``{config, data fingerprint, TRAIN_VERSION}`` (16 hex)."""
    blob = json.dumps({"config": config.to_dict(), "data": data_hash, "version": TRAIN_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Pieces of a training step
# ---------------------------------------------------------------------------------------------
def sample_loss(outputs: Tensor | tuple[Tensor, Tensor], targets: Tensor) -> Tensor:
    """Cross-entropy of the class logits, mean over the batch: ``mean_n -log p_n[y_n]``.

    ``outputs`` is the model's ``(logits, score)`` tuple (or the logits alone). With mean
    reduction, the gradient of a batch is the mean of its per-sample gradients, which is what
    :mod:`gradkit.grads` relies on.
    """
    logits = outputs[0] if isinstance(outputs, tuple | list) else outputs
    return F.cross_entropy(logits, targets)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The data order of ``epoch``: ``randperm(n)`` from a generator seeded by ``(seed, epoch)``.

    Depends on nothing else, so a resumed run sees exactly the batches it would have seen.
    """
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randperm(n, generator=gen)


@contextlib.contextmanager
def _cpu_threads(device: torch.device, threads: int = 1) -> Iterator[None]:
    """Run single-threaded on the CPU (see the module docstring); restore afterwards."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _load_split(config: TrainConfig):
    """The data of ``config`` (tests replace this to train on tiny fake data)."""
    from gradkit.features import load_split

    return load_split(config.material, config.freq_hz, seed=config.split_seed)


def build_model(config: TrainConfig, split: Any, base_state: dict[str, Tensor] | None = None
                ) -> ResNetAudioRanker:
    """The run's initial model: seeded weights (``torch.manual_seed(config.seed)``).

    Prompt mode: an :class:`~gradkit.models.InputPrompt` of the input's shape, the trunk and
    score head loaded from ``base_state`` (the base run's final weights), the classifier re-drawn
    (seeded) and the trunk frozen. Two configs with the same seed and sizes start identical.
    """
    prompt = config.mode == "prompt"
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(config.seed)
        model = ResNetAudioRanker(
            n_classes=len(split.classes),
            widths=config.widths,
            in_channels=int(split.x_train.shape[1]),
            prompt_shape=tuple(split.x_train.shape[1:]) if prompt else None,
        )
        if prompt:
            _load_base(model, config, base_state)
    return model


def _load_base(model: ResNetAudioRanker, config: TrainConfig,
               base_state: dict[str, Tensor] | None) -> None:
    """Prompt mode: base weights everywhere but the prompt, classifier re-drawn, trunk frozen."""
    if base_state is None:
        raise ValueError("prompt mode needs the base run's weights (base_state)")
    state = model.state_dict()
    missing = [k for k in state if not k.startswith("prompt.") and k not in base_state]
    if missing:
        raise CheckpointError(f"base run weights lack {missing[:5]}")
    state.update({k: v for k, v in base_state.items() if k in state})
    model.load_state_dict(state)
    torch.manual_seed(config.seed)
    model.reset_classifier()
    model.freeze_trunk()


def _ghm_modules(config: TrainConfig) -> tuple[GHMC, GHMRanking]:
    return (GHMC(bins=config.bins, momentum=config.momentum),
            GHMRanking(bins=config.bins, momentum=config.momentum, margin=config.margin))


def _pair_accuracy(scores: Tensor, angles: Tensor) -> float:
    """Share of pairs ``angle_i < angle_j`` ordered correctly, ``s_i < s_j`` (nan if none)."""
    i, j = ranking_pairs(angles)
    if i.numel() == 0:
        return float("nan")
    return float((scores[i] < scores[j]).float().mean())


# ---------------------------------------------------------------------------------------------
# Training state and one epoch
# ---------------------------------------------------------------------------------------------
@dataclass
class _State:
    config: TrainConfig
    model: ResNetAudioRanker
    optimizer: torch.optim.Optimizer
    ghmc: GHMC
    ghm_rank: GHMRanking
    epoch: int = 0
    metrics: list[dict[str, float]] = field(default_factory=list)
    ghm_history: list[dict[str, Any]] = field(default_factory=list)


def _new_state(config: TrainConfig, split: Any, device: torch.device,
               base_state: dict[str, Tensor] | None) -> _State:
    model = build_model(config, split, base_state).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    ghmc, ghm_rank = (m.to(device) for m in _ghm_modules(config))
    return _State(config, model, optimizer, ghmc, ghm_rank)


def _objective_terms(state: _State, logits: Tensor, scores: Tensor, y: Tensor, angles: Tensor,
                     update_state: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss to minimise and the detached raw / GHM terms of one batch."""
    cfg = state.config
    ce = F.cross_entropy(logits, y)
    rank = pairwise_ranking_loss(scores, angles, cfg.margin)
    raw = ce + cfg.rank_weight * rank
    # An explicit all-ones label weight (same result: every sample counts) keeps GHMC's sample
    # mask on the batch's device; its default mask is created on the CPU.
    ones = torch.ones_like(y, dtype=torch.float32)
    if cfg.objective == "ghm":
        ghm = (state.ghmc(logits, y, ones, update_state=update_state)
               + cfg.rank_weight * state.ghm_rank(scores, angles, update_state=update_state))
        loss = ghm
    else:  # shadow GHM modules: same EMA bookkeeping, outside the graph
        with torch.no_grad():
            ghm = (state.ghmc(logits.detach(), y, ones, update_state=update_state)
                   + cfg.rank_weight * state.ghm_rank(scores.detach(), angles,
                                                      update_state=update_state))
        loss = raw
    terms = {"loss": loss, "raw": raw, "ghm": ghm, "ce": ce, "rank": rank}
    return loss, {k: v.detach() for k, v in terms.items()}


def _diag(module: GHMC | GHMRanking) -> dict[str, Tensor]:
    d = module.diagnostics()
    g = d["g"].float().cpu()
    weights = d["bin_weights"].float().cpu()
    idx = bin_index(g, module.edges.cpu()).clamp(0, module.bins - 1)
    return {"g": g, "w": weights[idx] if g.numel() else g.clone(),
            "counts": d["counts"].float().cpu(), "acc": d["acc"].float().cpu(),
            "bin_weights": weights}


def _train_epoch(state: _State, data: dict[str, Tensor], epoch: int) -> dict[str, Any]:
    cfg, model, opt = state.config, state.model, state.optimizer
    n = data["x_train"].shape[0]
    order = epoch_order(n, cfg.seed, epoch)
    model.train()
    state.ghmc.train()
    state.ghm_rank.train()
    sums = dict.fromkeys(("loss", "raw", "ghm", "ce", "rank", "correct"), 0.0)
    cls, rnk = [], []
    for start in range(0, n, cfg.batch_size):
        idx = order[start:start + cfg.batch_size].to(data["x_train"].device)
        x, y, a = data["x_train"][idx], data["y_train"][idx], data["angles_train"][idx]
        logits, scores = model(x)
        loss, terms = _objective_terms(state, logits, scores, y, a, update_state=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        cls.append(_diag(state.ghmc))
        rnk.append(_diag(state.ghm_rank))
        b = len(idx)
        for k in ("loss", "raw", "ghm", "ce", "rank"):
            sums[k] += float(terms[k]) * b
        sums["correct"] += float((logits.detach().argmax(1) == y).sum())
    history = {"epoch": epoch, "index": order.clone(),
               "batch_sizes": [int(d["g"].numel()) for d in cls]}
    for prefix, diags in (("", cls), ("rank_", rnk)):
        history[prefix + "g"] = torch.cat([d["g"] for d in diags])
        history[prefix + "w"] = torch.cat([d["w"] for d in diags])
        for k in ("counts", "acc", "bin_weights"):
            history[prefix + k] = torch.stack([d[k] for d in diags])
    history["rank_batch_sizes"] = [int(d["g"].numel()) for d in rnk]
    row = {"epoch": epoch, "train_loss": sums["loss"] / n, "train_raw_loss": sums["raw"] / n,
           "train_ghm_loss": sums["ghm"] / n, "train_ce": sums["ce"] / n,
           "train_rank": sums["rank"] / n, "train_acc": sums["correct"] / n}
    return {"row": row, "history": history}


@torch.no_grad()
def _evaluate(state: _State, x: Tensor, y: Tensor, angles: Tensor) -> dict[str, float]:
    """Raw and GHM objective on ``(x, y, angles)`` as one batch; never updates the GHM EMA."""
    state.model.eval()
    logits, scores = state.model(x)
    with state.ghmc.frozen(), state.ghm_rank.frozen():
        _, terms = _objective_terms(state, logits, scores, y, angles, update_state=False)
    return {"loss": float(terms["loss"]), "raw_loss": float(terms["raw"]),
            "ghm_loss": float(terms["ghm"]), "ce": float(terms["ce"]),
            "rank": float(terms["rank"]), "acc": float((logits.argmax(1) == y).float().mean()),
            "pair_acc": _pair_accuracy(scores, angles)}


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


def _payload(state: _State, run: Run) -> dict[str, Any]:
    return {
        "format": f"gradkit.train/{TRAIN_VERSION}",
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


def _restore(state: _State, payload: dict[str, Any], path: Path) -> None:
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


def _train(run: Run, state: _State, device: torch.device, progress: bool,
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
        out = _train_epoch(state, data, epoch)
        val = _evaluate(state, data["x_val"], data["y_val"], data["angles_val"])
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
    with _cpu_threads(device):
        if runs:  # resume the most recent unfinished run from its latest checkpoint
            run_id, last = runs[-1]
            run = Run(config, folder, run_id, key, data_hash, split)
            state = _new_state(config, split, device, base_state)
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
            state = _new_state(config, split, device, base_state)
        _train(run, state, device, progress, stop_after)
    return run
