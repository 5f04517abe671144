"""What defines a training run, and the identity that finds it again.

:class:`TrainConfig` holds every setting of a run; :func:`run_key` hashes it together with the
data's fingerprint (:func:`split_fingerprint`) and :data:`TRAIN_VERSION`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_EPOCHS", "MODES", "OBJECTIVES", "TRAIN_VERSION", "TrainConfig",
           "batch_size_for", "run_key", "split_fingerprint"]

#: Bump when training semantics change, so that runs cached by an older version are not reused.
TRAIN_VERSION = 1
#: raw = CE + λ R, ghm = GHM-C + λ GHM-R, and the two halves for notebook 01's ablation:
#: ghmc_rank = GHM-C + λ R, ce_ghmrank = CE + λ GHM-R (see `training.objective.combine_terms`).
OBJECTIVES = ("raw", "ghm", "ghmc_rank", "ce_ghmrank")
MODES = ("full", "prompt")
DEFAULT_EPOCHS = {"full": 60, "prompt": 30}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


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
    ``batch_size=None`` is :func:`batch_size_for` the training split, resolved by ``get_run``:
    12 for the default set's 36 training clips, three equal batches (no ragged last batch whose
    GHM histogram would rest on a handful of samples). ``lr=3e-3`` (Adam) for full
    training; prompt tuning trains only the prompt and the heads and uses ``prompt_lr``.
    ``rank_weight=0.1`` puts both terms on the same scale at the start: an untrained model has
    ``CE ~ ln 6 = 1.8`` and ranking loss ``~ softplus(margin) = 10``. (Both tuned on plastic /
    3000 Hz: with ``rank_weight=1`` the ranking term drowns the classification signal.)
    ``split_seed`` seeds the train/validation split, ``seed`` the initial weights and the data
    order. ``base_epochs``: length of the raw full run whose trunk prompt tuning reuses.
    ``data_root``: the folder of recordings (``<material>/<freq>hz/deg<angle>/``); ``None`` is
    the synthetic default set.
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
    batch_size: int | None = None
    rank_weight: float = 0.1
    weight_decay: float = 0.0
    widths: tuple[int, ...] = (8, 16, 32)
    base_epochs: int = 60
    data_root: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.material, str) or not _NAME.match(self.material):
            raise ValueError(f"TrainConfig.material must be a plain name like 'plastic', "
                             f"got {self.material!r}")
        _check_int("freq_hz", self.freq_hz, 1)
        if self.data_root is not None:
            if not isinstance(self.data_root, str | os.PathLike) or not str(self.data_root):
                raise ValueError(f"TrainConfig.data_root must be a folder path or None, "
                                 f"got {self.data_root!r}")
            object.__setattr__(self, "data_root", str(Path(self.data_root).expanduser().resolve()))
        if self.objective not in OBJECTIVES:
            raise ValueError(f"TrainConfig.objective must be one of {OBJECTIVES}, "
                             f"got {self.objective!r}")
        if self.mode not in MODES:
            raise ValueError(f"TrainConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.epochs is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS[self.mode])
        for name, minimum in [("epochs", 1), ("save_every", 1), ("seed", 0), ("split_seed", 0),
                              ("bins", 1), ("base_epochs", 1)]:
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
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size, 1)
            object.__setattr__(self, "batch_size", int(self.batch_size))
        for name in ("freq_hz", "epochs", "save_every", "seed", "split_seed", "bins",
                     "base_epochs"):
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

    def sized_for(self, n_train: int) -> TrainConfig:
        """This config with ``batch_size=None`` resolved for ``n_train`` training clips
        (:func:`batch_size_for`); an explicit batch size is kept."""
        if self.batch_size is not None:
            return self
        return dataclasses.replace(self, batch_size=batch_size_for(n_train))

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


def batch_size_for(n_train: int, target: int = 12) -> int:
    """The batch size of a run on ``n_train`` training clips: all of them when
    ``n_train <= 4/3 · target`` (one batch), else the size ``B`` in ``[3/4 · target, 4/3 ·
    target]`` (9…16) whose last batch is fullest, ties to the one nearest ``target`` (36 -> 12,
    48 -> 12, 30 -> 10, 17 -> 9): the last batch always holds at least ~45 % of a full one."""
    lo, hi = math.ceil(0.75 * target), math.floor(4 * target / 3)
    if n_train <= hi:
        return max(1, int(n_train))
    last = lambda b: (n_train - (math.ceil(n_train / b) - 1) * b) / b  # noqa: E731
    return max(range(lo, hi + 1), key=lambda b: (last(b), -abs(b - target), -b))


def split_fingerprint(split: Any) -> str:
    """SHA-256 over the split's tensors (features, labels, angles of train and validation)."""
    h = hashlib.sha256()
    for name in ("x_train", "y_train", "angles_train", "x_val", "y_val", "angles_val"):
        t = getattr(split, name).detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def run_key(config: TrainConfig, data_hash: str) -> str:
    """A run's identity: SHA-256 of ``{config, data fingerprint, TRAIN_VERSION}`` (16 hex).

    ``data_root`` is left out: the fingerprint already identifies the data by content, so the
    same recordings moved to another folder find their runs again, and two folders with
    different recordings never share one.
    """
    settings = {k: v for k, v in config.to_dict().items() if k != "data_root"}
    blob = json.dumps({"config": settings, "data": data_hash, "version": TRAIN_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
