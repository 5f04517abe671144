"""Analysis of GHM training runs: per-epoch gradient-norm statistics and run comparisons.

Inputs are what :mod:`gradkit.training` records:

- ``metrics``: a DataFrame with one row per epoch (``epoch``, ``train_raw_loss``,
  ``train_ghm_loss``, ``train_acc``, ``val_raw_loss``, ``val_ghm_loss``, ``val_acc``, ...);
- ``ghm_history``: one :class:`~gradkit.training.records.GHMRecord` per epoch; its heads
  (``record.head("")`` classification, ``g = 1 - p_true``; ``record.head("rank_")`` ranking
  pairs, ``g = sigmoid(-z)``) hold ``g`` of every term batch after batch, ``w`` (their GHM
  weights), ``batch_sizes``, and per batch (rows) the bin ``counts``, EMA counts ``acc`` and
  per-bin weights ``bin_weights``. A record in the flat dict form of a checkpoint is accepted
  too (rebuilt with :meth:`GHMRecord.from_dict`).

The ``head`` argument of the functions below is that key prefix: ``""`` or ``"rank_"``.

Bins are GHM's own (:func:`gradkit.losses.ghm.bin_edges`: ``[i/bins, (i+1)/bins)``, the last one
closed at 1), so a "bin" here is exactly the bin whose weight GHM computes.

Their figures: :mod:`gradkit.viz.ghm`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from gradkit.losses.ghm import bin_edges, bin_index
from gradkit.training.records import GHMRecord

__all__ = [
    "HEADS",
    "accuracy_gain_table",
    "as_record",
    "batch_values",
    "best_epoch_summary",
    "bin_shares",
    "density_table",
    "epoch_bin_weights",
    "g_statistics",
    "ghm_stats_table",
    "hard_easy_weights",
    "history_by_epoch",
    "loss_change",
    "stage_epochs",
]

#: The two harmonised quantities: head prefix (:meth:`GHMRecord.head`) -> readable name.
HEADS = {"": "classification (g = 1 - p_true)", "rank_": "ranking pairs (g = sigmoid(-z))"}


# -- statistics -----------------------------------------------------------------------------------
def as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def bin_shares(g: Any, bins: int = 10) -> np.ndarray:
    """Share of the values ``g`` in each GHM bin: ``count_i / len(g)`` (zeros if ``g`` is empty).

    Values outside ``[0, 1 + 1e-6)`` belong to no bin (as in GHM), so the shares then sum to < 1.
    """
    g = torch.as_tensor(as_numpy(g), dtype=torch.float64)
    if g.numel() == 0:
        return np.zeros(bins)
    idx = bin_index(g, bin_edges(bins))
    idx = idx[(idx >= 0) & (idx < bins)]
    return torch.bincount(idx, minlength=bins).double().numpy() / g.numel()


def g_statistics(g: Any, bins: int = 10) -> dict[str, float]:
    """Summary of one set of gradient norms ``g``.

    ``count``; ``mean``, ``median``, ``min``, ``max``, ``std`` (population, ``ddof=0``) of ``g``;
    ``most_bin`` / ``most_share``: the most populated GHM bin (lowest index on ties) and its
    share of ``g``; ``least_bin`` / ``least_share`` likewise for the least populated bin (empty
    bins count, share 0); ``share_spread``: the standard deviation of the ``bins`` shares (0 when
    ``g`` is spread evenly over the bins, ``sqrt(bins - 1) / bins`` when all of it is in one).
    NaN statistics for an empty ``g``.
    """
    values = as_numpy(g)
    shares = bin_shares(values, bins)
    if values.size == 0:
        nan = float("nan")
        return {"count": 0, "mean": nan, "median": nan, "min": nan, "max": nan, "std": nan,
                "most_bin": -1, "most_share": nan, "least_bin": -1, "least_share": nan,
                "share_spread": nan}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
        "std": float(values.std()),
        "most_bin": int(np.argmax(shares)),
        "most_share": float(shares.max()),
        "least_bin": int(np.argmin(shares)),
        "least_share": float(shares.min()),
        "share_spread": float(shares.std()),
    }


def as_record(record: GHMRecord | Mapping[str, Any]) -> GHMRecord:
    """``record`` as a :class:`GHMRecord` (a flat checkpoint dict is rebuilt; an incomplete one
    raises ``ValueError`` naming the missing keys)."""
    return GHMRecord.from_dict(record)


def history_by_epoch(history: Sequence[GHMRecord | Mapping[str, Any]]) -> dict[int, GHMRecord]:
    """``{epoch: record}`` of a ``ghm_history`` list (each record checked to be complete)."""
    out = {}
    for k, record in enumerate(history):
        try:
            record = as_record(record)
        except ValueError as err:
            raise ValueError(f"ghm_history[{k}]: {err}") from None
        out[record.epoch] = record
    return out


def ghm_stats_table(history: Sequence[GHMRecord | Mapping[str, Any]], bins: int = 10,
                    head: str = "") -> pd.DataFrame:
    """:func:`g_statistics` of every epoch's ``<head>g`` (all batches), one row per epoch."""
    rows = {e: g_statistics(r.head(head).g, bins) for e, r in history_by_epoch(history).items()}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "epoch"
    return table


def density_table(history: Sequence[GHMRecord | Mapping[str, Any]], bins: int = 10,
                  head: str = "") -> pd.DataFrame:
    """Bin shares of ``<head>g`` per epoch: rows epochs, columns the bins' ``[lo, hi)`` labels."""
    edges = bin_edges(bins).tolist()
    columns = [f"[{edges[i]:.1f}, {min(edges[i + 1], 1.0):.1f})" for i in range(bins)]
    rows = {e: bin_shares(r.head(head).g, bins) for e, r in history_by_epoch(history).items()}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = "epoch"
    return table


def batch_values(record: GHMRecord | Mapping[str, Any], batch: int = 0, head: str = ""
                 ) -> dict[str, Any]:
    """One batch of an epoch record: its ``g`` and ``w`` (sliced by the batch sizes) and its
    ``counts``, ``acc`` and ``bin_weights`` rows."""
    h = as_record(record).head(head)
    sizes = list(h.batch_sizes)
    if not -len(sizes) <= batch < len(sizes):
        raise IndexError(f"batch {batch} out of range: the epoch has {len(sizes)} batches")
    batch %= len(sizes)
    start = int(sum(sizes[:batch]))
    stop = start + int(sizes[batch])
    return {
        "g": as_numpy(h.g)[start:stop],
        "w": as_numpy(h.w)[start:stop],
        "counts": as_numpy(h.counts[batch]),
        "acc": as_numpy(h.acc[batch]),
        "bin_weights": as_numpy(h.bin_weights[batch]),
    }


def epoch_bin_weights(record: GHMRecord | Mapping[str, Any], head: str = "") -> np.ndarray:
    """GHM weight per bin over one epoch: the mean of ``bin_weights`` over the batches in which
    the bin was non-empty (NaN for a bin empty in every batch)."""
    h = as_record(record).head(head)
    weights = np.asarray(h.bin_weights, dtype=np.float64)
    counts = np.asarray(h.counts, dtype=np.float64)
    used = counts > 0
    total = np.where(used, weights, 0.0).sum(axis=0)
    n = used.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def hard_easy_weights(record: GHMRecord | Mapping[str, Any], threshold: float = 0.5,
                      head: str = "") -> dict[str, float]:
    """Mean GHM weight of the hard (``g >= threshold``) and easy (``g < threshold``) terms of an
    epoch, and how many of each there were (NaN mean when a group is empty)."""
    h = as_record(record).head(head)
    g, w = as_numpy(h.g), as_numpy(h.w)
    hard = g >= threshold
    mean = lambda a: float(a.mean()) if a.size else float("nan")  # noqa: E731
    return {"hard_mean_w": mean(w[hard]), "easy_mean_w": mean(w[~hard]),
            "n_hard": int(hard.sum()), "n_easy": int((~hard).sum())}


def stage_epochs(epochs: Sequence[int]) -> dict[str, int]:
    """Early / middle / late: the first, the middle (``epochs[len // 2]``) and the last epoch."""
    epochs = sorted(int(e) for e in epochs)
    if not epochs:
        raise ValueError("stage_epochs needs at least one epoch")
    return {"early": epochs[0], "middle": epochs[len(epochs) // 2], "late": epochs[-1]}


# -- run comparisons ------------------------------------------------------------------------------
def best_epoch_summary(metrics: pd.DataFrame) -> dict[str, float]:
    """The epoch of best validation accuracy (the first one on ties) and, at that epoch, the
    train accuracy and the raw / GHM validation losses."""
    row = metrics.loc[metrics["val_acc"].idxmax()]
    return {"best_val_acc": float(row["val_acc"]), "epoch": int(row["epoch"]),
            "train_acc": float(row["train_acc"]), "val_raw_loss": float(row["val_raw_loss"]),
            "val_ghm_loss": float(row["val_ghm_loss"])}


def accuracy_gain_table(runs: Mapping[str, pd.DataFrame], column: str = "val_acc"
                        ) -> pd.DataFrame:
    """Per run: ``initial`` (first logged epoch), ``final`` (last epoch) and ``gain`` = final -
    initial of ``column``."""
    rows = {}
    for name, m in runs.items():
        m = m.sort_values("epoch")
        first, last = float(m[column].iloc[0]), float(m[column].iloc[-1])
        rows[name] = {"initial": first, "final": last, "gain": last - first,
                      "initial_epoch": int(m["epoch"].iloc[0]),
                      "final_epoch": int(m["epoch"].iloc[-1])}
    return pd.DataFrame.from_dict(rows, orient="index")


def loss_change(metrics: pd.DataFrame) -> dict[str, float]:
    """First-epoch minus last-epoch training raw and GHM loss (positive = the loss went down)."""
    m = metrics.sort_values("epoch")
    return {k: float(m[f"train_{k}_loss"].iloc[0] - m[f"train_{k}_loss"].iloc[-1])
            for k in ("raw", "ghm")}

