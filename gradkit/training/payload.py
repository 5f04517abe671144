"""A run's checkpoint payload: written from a :class:`~gradkit.training.state.TrainState`, read
back as typed records, restored into a state.

Payloads hold primitives and tensors only (``torch.load(weights_only=True)``): the records go in
as their ``to_dict()`` and come back through ``from_dict()``
(:mod:`gradkit.training.records`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gradkit.core.checkpoint import CheckpointError, CorruptCheckpoint
from gradkit.training.config import TRAIN_VERSION
from gradkit.training.records import EpochMetrics, GHMRecord
from gradkit.training.state import TrainState

__all__ = ["build_payload", "is_finite", "read_records", "restore_state"]


def build_payload(state: TrainState, run: Any) -> dict[str, Any]:
    """Everything to resume ``state`` exactly, and the identity of ``run`` (a ``Run``)."""
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
        "metrics": [m.to_dict() for m in state.metrics],
        "ghm_history": [r.to_dict() for r in state.ghm_history],
    }


def read_records(payload: dict[str, Any], path: Path
                 ) -> tuple[list[EpochMetrics], list[GHMRecord]]:
    """The typed metrics and GHM history of a payload; an incomplete one is corrupt."""
    try:
        epoch = int(payload["epoch"])
        metrics = [EpochMetrics.from_dict(r) for r in payload["metrics"]]
        history = [GHMRecord.from_dict(r) for r in payload["ghm_history"]]
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptCheckpoint(f"checkpoint {path} lacks a run's records: {err}") from err
    if len(metrics) != epoch or len(history) != epoch:
        raise CorruptCheckpoint(f"checkpoint {path} holds {len(metrics)} metric rows and "
                                f"{len(history)} GHM records for epoch {epoch}")
    return metrics, history


def is_finite(payload: dict[str, Any], metrics: list[EpochMetrics]) -> bool:
    """All training metrics and all floating-point weights are finite."""
    weights = [v for v in payload.get("model", {}).values()
               if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return all(m.finite() for m in metrics) and all(bool(torch.isfinite(w).all())
                                                    for w in weights)


def restore_state(state: TrainState, payload: dict[str, Any], metrics: list[EpochMetrics],
                  history: list[GHMRecord], path: Path) -> None:
    """Load optimiser, GHM state, epoch and records from a checkpoint (the model is loaded by
    :func:`gradkit.core.checkpoint.load_checkpoint`, architecture checked)."""
    try:
        state.optimizer.load_state_dict(payload["optimizer"])
        state.ghmc.load_state_dict(payload["ghm"]["ghmc"])
        state.ghm_rank.load_state_dict(payload["ghm"]["ghm_ranking"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {path} cannot resume this run: {err}") from err
    state.epoch, state.metrics, state.ghm_history = int(payload["epoch"]), metrics, history
