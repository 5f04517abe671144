"""One epoch of training and one evaluation pass, on the state of a run.

The data order of epoch ``e`` is :func:`epoch_order` (a generator seeded by ``(seed, e)``), so a
resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradkit.core.checkpoint import CheckpointError
from gradkit.core.params import trainable_parameters
from gradkit.core.seeding import generator, seeded
from gradkit.losses.ghm import GHMC, GHMRanking
from gradkit.models import ResNetAudioRanker
from gradkit.training.config import TrainConfig
from gradkit.training.objective import ghm_diagnostics, ghm_modules, objective_terms, pair_accuracy

__all__ = ["TrainState", "build_model", "cpu_threads", "epoch_order", "evaluate", "new_state",
           "train_epoch"]


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The data order of ``epoch``: ``randperm(n)`` from a generator seeded by ``(seed, epoch)``.

    Depends on nothing else, so a resumed run sees exactly the batches it would have seen.
    """
    return torch.randperm(n, generator=generator(seed, epoch))


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int = 1) -> Iterator[None]:
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
    config: TrainConfig
    model: ResNetAudioRanker
    optimizer: torch.optim.Optimizer
    ghmc: GHMC
    ghm_rank: GHMRanking
    epoch: int = 0
    metrics: list[dict[str, float]] = field(default_factory=list)
    ghm_history: list[dict[str, Any]] = field(default_factory=list)


def new_state(config: TrainConfig, split: Any, device: torch.device,
               base_state: dict[str, Tensor] | None) -> TrainState:
    model = build_model(config, split, base_state).to(device)
    params = trainable_parameters(model)
    optimizer = torch.optim.Adam(params, lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    ghmc, ghm_rank = (m.to(device) for m in ghm_modules(config))
    return TrainState(config, model, optimizer, ghmc, ghm_rank)


def train_epoch(state: TrainState, data: dict[str, Tensor], epoch: int) -> dict[str, Any]:
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
        loss, terms = objective_terms(state, logits, scores, y, a, update_state=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        cls.append(ghm_diagnostics(state.ghmc))
        rnk.append(ghm_diagnostics(state.ghm_rank))
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
def evaluate(state: TrainState, x: Tensor, y: Tensor, angles: Tensor) -> dict[str, float]:
    """Raw and GHM objective on ``(x, y, angles)`` as one batch; never updates the GHM EMA."""
    state.model.eval()
    logits, scores = state.model(x)
    with state.ghmc.frozen(), state.ghm_rank.frozen():
        _, terms = objective_terms(state, logits, scores, y, angles, update_state=False)
    return {"loss": float(terms["loss"]), "raw_loss": float(terms["raw"]),
            "ghm_loss": float(terms["ghm"]), "ce": float(terms["ce"]),
            "rank": float(terms["rank"]), "acc": float((logits.argmax(1) == y).float().mean()),
            "pair_acc": pair_accuracy(scores, angles)}
