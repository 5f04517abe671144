"""The state of a GHM training run and its epoch, on the shared loop of :mod:`~.loop`.

:func:`train_epoch` runs one epoch through :func:`gradkit.training.loop.fit_epoch` (the step:
the model's outputs, :func:`~gradkit.training.objective.objective_terms` with the GHM EMA
updated, the batch's sums and GHM diagnostics) and returns the epoch's training means and its
:class:`~gradkit.training.records.GHMRecord`; :func:`evaluate_state` is the validation pass
through :func:`gradkit.training.loop.evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradkit.core.checkpoint import CheckpointError
from gradkit.core.params import trainable_parameters
from gradkit.core.seeding import seeded
from gradkit.losses.ghm import GHMC, GHMRanking
from gradkit.models import ResNetAudioRanker
from gradkit.training.config import TrainConfig
from gradkit.training.guard import DivergenceGuard
from gradkit.training.loop import epoch_order, evaluate, fit_epoch
from gradkit.training.objective import ghm_diagnostics, ghm_modules, objective_terms, pair_accuracy
from gradkit.training.records import EpochMetrics, GHMRecord, HeadDiagnostics

__all__ = ["TrainState", "build_model", "evaluate_state", "new_state", "train_epoch"]

_SUMS = ("loss", "raw", "ghm", "ce", "rank")


def build_model(config: TrainConfig, split: Any, base_state: dict[str, Tensor] | None = None
                ) -> ResNetAudioRanker:
    """The run's initial model: seeded weights (``torch.manual_seed(config.seed)``).

    Prompt mode: an :class:`~gradkit.models.InputPrompt` of the input's shape, the trunk and
    score head loaded from ``base_state`` (the base run's final weights), the classifier re-drawn
    (seeded) and the trunk frozen. Two configs with the same seed and sizes start identical.
    """
    prompt = config.mode == "prompt"
    with seeded(config.seed):  # seeded without disturbing the caller's RNG
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
    with seeded(config.seed):  # the classifier drawn from the seed alone
        model.reset_classifier()
    model.freeze_trunk()


@dataclass
class TrainState:
    """Everything a checkpoint restores: model, optimiser, GHM modules, epoch, the records."""

    config: TrainConfig
    model: ResNetAudioRanker
    optimizer: torch.optim.Optimizer
    ghmc: GHMC
    ghm_rank: GHMRanking
    epoch: int = 0
    metrics: list[EpochMetrics] = field(default_factory=list)
    ghm_history: list[GHMRecord] = field(default_factory=list)


def new_state(config: TrainConfig, split: Any, device: torch.device,
              base_state: dict[str, Tensor] | None) -> TrainState:
    model = build_model(config, split, base_state).to(device)
    params = trainable_parameters(model)
    optimizer = torch.optim.Adam(params, lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    ghmc, ghm_rank = (m.to(device) for m in ghm_modules(config))
    return TrainState(config, model, optimizer, ghmc, ghm_rank)


def train_epoch(state: TrainState, data: dict[str, Tensor], epoch: int,
                guard: DivergenceGuard | None = None) -> tuple[dict[str, float], GHMRecord]:
    """One epoch of the run: its training means (``train_*`` of
    :class:`~gradkit.training.records.EpochMetrics`) and its GHM record."""
    cfg = state.config
    x_all = data["x_train"]
    n = x_all.shape[0]
    order = epoch_order(n, cfg.seed, epoch)
    state.ghmc.train()
    state.ghm_rank.train()
    sums = dict.fromkeys((*_SUMS, "correct"), 0.0)
    cls, rnk = [], []

    def step(idx: Tensor) -> Tensor:
        idx = idx.to(x_all.device)
        y, a = data["y_train"][idx], data["angles_train"][idx]
        logits, scores = state.model(x_all[idx])
        loss, terms = objective_terms(state, logits, scores, y, a, update_state=True)
        cls.append(ghm_diagnostics(state.ghmc))
        rnk.append(ghm_diagnostics(state.ghm_rank))
        for k in _SUMS:
            sums[k] += float(terms[k]) * len(idx)
        sums["correct"] += float((logits.detach().argmax(1) == y).sum())
        return loss

    batches = [order[i:i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    fit_epoch(state.model, state.optimizer, batches, step, epoch=epoch, guard=guard)
    record = GHMRecord(epoch, order.clone(), HeadDiagnostics.from_batches(cls),
                       HeadDiagnostics.from_batches(rnk))
    train = {"train_loss": sums["loss"] / n, "train_raw_loss": sums["raw"] / n,
             "train_ghm_loss": sums["ghm"] / n, "train_ce": sums["ce"] / n,
             "train_rank": sums["rank"] / n, "train_acc": sums["correct"] / n}
    return train, record


def evaluate_state(state: TrainState, x: Tensor, y: Tensor, angles: Tensor) -> dict[str, float]:
    """Raw and GHM objective on ``(x, y, angles)`` as one batch (``val_*`` of
    :class:`~gradkit.training.records.EpochMetrics`); never updates the GHM EMA."""
    def measure() -> dict[str, float]:
        logits, scores = state.model(x)
        with state.ghmc.frozen(), state.ghm_rank.frozen():
            _, terms = objective_terms(state, logits, scores, y, angles, update_state=False)
        return {"val_loss": float(terms["loss"]), "val_raw_loss": float(terms["raw"]),
                "val_ghm_loss": float(terms["ghm"]), "val_ce": float(terms["ce"]),
                "val_rank": float(terms["rank"]),
                "val_acc": float((logits.argmax(1) == y).float().mean()),
                "val_pair_acc": pair_accuracy(scores, angles)}
    return evaluate(state.model, measure)
