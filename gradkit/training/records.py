"""The typed records a training run hands to the rest of gradkit.

- :class:`EpochMetrics`: one row of ``Run.metrics`` (one epoch: training means, validation pass);
- :class:`HeadDiagnostics`: GHM's diagnostics of one head (classification or ranking) over one
  epoch;
- :class:`GHMRecord`: one epoch of ``Run.ghm_history``, both heads.

Checkpoints hold primitives and tensors only (``torch.load(weights_only=True)``): every record
converts with ``to_dict()`` on save and is rebuilt with ``from_dict()`` on load. The dict form
is the checkpoint format of ``TRAIN_VERSION`` 1 (flat keys, ``""`` / ``"rank_"`` prefixes), so
checkpoints written before these types existed load unchanged.

:class:`GHMRecord` is also a read-only mapping with those flat keys (``record["g"]``,
``record["rank_batch_sizes"]``, ``"epoch" in record``), so code written against the dict
records keeps working; new code uses the attributes (``record.head("rank_").g``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["HEAD_PREFIXES", "EpochMetrics", "GHMRecord", "HeadDiagnostics"]

#: Key prefix of each head in the flat (checkpoint) form: classification, ranking pairs.
HEAD_PREFIXES = ("", "rank_")


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch of a run. ``train_*``: the sample-weighted mean over the epoch's batches, each
    as computed at its step (``train_loss`` is the objective optimised: raw or GHM; ``train_ce``
    and ``train_rank`` the two raw terms; ``train_acc`` the share of correctly classified
    training samples at their step). ``val_*``: one pass over the validation set after the
    epoch, as a single batch, GHM EMA frozen; ``val_pair_acc``: share of ranking pairs ordered
    correctly (NaN without pairs)."""

    epoch: int
    train_loss: float
    train_raw_loss: float
    train_ghm_loss: float
    train_ce: float
    train_rank: float
    train_acc: float
    val_loss: float
    val_raw_loss: float
    val_ghm_loss: float
    val_ce: float
    val_rank: float
    val_acc: float
    val_pair_acc: float

    def to_dict(self) -> dict[str, Any]:
        """Primitives only, in column order (the columns of ``Run.metrics``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochMetrics:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"metrics row lacks {missing}")
        return cls(int(d["epoch"]), *(float(d[n]) for n in names[1:]))

    def finite(self) -> bool:
        """Every training value is a finite number (validation may be NaN, e.g. no pairs)."""
        return all(math.isfinite(getattr(self, f.name)) for f in dataclasses.fields(self)
                   if f.name.startswith("train_"))


@dataclass(frozen=True, eq=False)
class HeadDiagnostics:
    """GHM diagnostics of one head over one epoch, batch after batch.

    ``g``: the gradient norm of every term in data order (classification ``g = 1 - p_true``,
    ranking pairs ``g = sigmoid(-z)``), all batches concatenated; ``w``: their GHM weights;
    ``batch_sizes``: the number of terms of each batch (slices ``g`` and ``w``); per batch
    (row 0 = batch 0) the bin ``counts``, the EMA counts ``acc`` after that batch and the per-bin
    weights ``bin_weights`` (``[batches, bins]``)."""

    g: Tensor
    w: Tensor
    batch_sizes: list[int]
    counts: Tensor
    acc: Tensor
    bin_weights: Tensor

    @classmethod
    def from_batches(cls, batches: list[dict[str, Tensor]]) -> HeadDiagnostics:
        """From the per-batch dicts of :func:`gradkit.training.objective.ghm_diagnostics`."""
        return cls(g=torch.cat([d["g"] for d in batches]), w=torch.cat([d["w"] for d in batches]),
                   batch_sizes=[int(d["g"].numel()) for d in batches],
                   **{k: torch.stack([d[k] for d in batches])
                      for k in ("counts", "acc", "bin_weights")})


_HEAD_FIELDS = ("g", "w", "batch_sizes", "counts", "acc", "bin_weights")


@dataclass(frozen=True, eq=False)
class GHMRecord(Mapping):
    """One epoch's GHM diagnostics: ``epoch``, ``index`` (the sample indices in the epoch's data
    order, :func:`gradkit.training.loop.epoch_order`), ``cls`` (classification head) and
    ``rank`` (ranking pairs), each a :class:`HeadDiagnostics`."""

    epoch: int
    index: Tensor
    cls: HeadDiagnostics
    rank: HeadDiagnostics

    def head(self, prefix: str = "") -> HeadDiagnostics:
        """The head of a key prefix: ``""`` classification, ``"rank_"`` ranking pairs."""
        if prefix not in HEAD_PREFIXES:
            raise KeyError(f"unknown head prefix {prefix!r}; use one of {HEAD_PREFIXES}")
        return self.cls if prefix == "" else self.rank

    # -- the flat (checkpoint) form -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Flat primitives and tensors: ``epoch``, ``index`` and ``<prefix><field>``."""
        d: dict[str, Any] = {"epoch": self.epoch, "index": self.index}
        for prefix in HEAD_PREFIXES:
            head = self.head(prefix)
            d.update({prefix + k: getattr(head, k) for k in _HEAD_FIELDS})
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GHMRecord:
        if isinstance(d, GHMRecord):
            return d
        keys = ["epoch", "index"] + [p + k for p in HEAD_PREFIXES for k in _HEAD_FIELDS]
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(f"GHM history record lacks {missing}; keys {sorted(d)}")
        heads = [HeadDiagnostics(**{k: (list(d[p + k]) if k == "batch_sizes" else d[p + k])
                                    for k in _HEAD_FIELDS}) for p in HEAD_PREFIXES]
        return cls(int(d["epoch"]), d["index"], *heads)

    # -- read-only mapping over the flat keys (compatibility with the dict records) -------------
    def __getitem__(self, key: str) -> Any:
        if key == "epoch":
            return self.epoch
        if key == "index":
            return self.index
        prefix = "rank_" if key.startswith("rank_") else ""
        name = key[len(prefix):]
        if name not in _HEAD_FIELDS:
            raise KeyError(key)
        return getattr(self.head(prefix), name)

    def __iter__(self) -> Iterator[str]:
        yield "epoch"
        yield "index"
        for prefix in HEAD_PREFIXES:
            for k in _HEAD_FIELDS:
                yield prefix + k

    def __len__(self) -> int:
        return 2 + len(HEAD_PREFIXES) * len(_HEAD_FIELDS)

    # Tensors inside: a record equals only itself (Mapping's item-wise == would compare tensors).
    __eq__ = object.__eq__
    __hash__ = object.__hash__
