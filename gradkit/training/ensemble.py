"""Many runs of one objective trained at once: a vectorised ensemble of seeds and folds.

Member ``m`` of an ensemble is the run of :func:`gradkit.training.loop.train_epoch` /
:func:`~gradkit.training.loop.evaluate` with ``TrainConfig(seed=seed_m)`` on split ``split_m``:
the same initial weights (:func:`~gradkit.training.build_model`), the same data order
(:func:`~gradkit.training.epoch_order` of ``(seed_m, epoch)``), the same objective and its GHM
EMA state, Adam with the same settings. The members' parameters are stacked
(``torch.func.stack_module_state``) and the forward pass is ``vmap(functional_call(model, ...))``
over them, each member on its own batch; the objective is computed for all members at once by
the single run's definitions with a leading member dimension (the cross-entropy vmapped,
:func:`gradkit.losses.ghm.ghmc_softmax_loss`, :func:`~gradkit.losses.ghm.ghm_ranking_loss` and
:func:`~gradkit.losses.ranking.pairwise_ranking_loss`, combined by
:func:`gradkit.training.objective.combine_terms`), the GHM state batched per member
(``acc_sum`` of shape ``[members, bins]``). Members share no parameter, so the gradient of
the summed loss with respect to member ``m``'s slice is member ``m``'s own gradient, and Adam,
being elementwise, moves each slice exactly as a separate optimiser would. What differs is
floating-point rounding (batched convolutions sum in another order): ``tests/training/
test_ensemble_training.py`` checks every member against its separate run.

**Stored results.** :func:`get_ensemble` trains with :func:`plateau_stop` once and afterwards
finds the result again in ``checkpoints/ensembles/`` by a hash of the config (without
``seed``, ``data_root``), every member's seed, fold and data fingerprint, the stopping rule's
settings, :data:`~gradkit.training.TRAIN_VERSION` and :data:`ENSEMBLE_VERSION` (one JSON file,
written atomically).

**Stopping.** ``stop`` (e.g. :func:`plateau_stop`) is asked after every epoch with a member's
metrics so far; a stopped member's record ends at that epoch and the ensemble goes on without it
(its slices of parameters, Adam moments, GHM state and data are dropped: the other members do not
depend on it, so this is exactly early stopping). Training ends when every member has stopped or
at ``epochs``.

Limits: ``mode="full"`` only (prompt runs reuse a base run's trunk); the members of one call
must have equally many training and validation clips (:func:`train_ensemble` groups members by
shape and trains one ensemble per group).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from gradkit.core.device import pick_device
from gradkit.core.io import atomic_write_text
from gradkit.core.paths import checkpoints_dir
from gradkit.losses.ghm import bin_edges, ghm_ranking_loss, ghmc_softmax_loss
from gradkit.losses.ranking import pairwise_ranking_loss
from gradkit.stats import plateau_test
from gradkit.training.config import TRAIN_VERSION, TrainConfig, split_fingerprint
from gradkit.training.loop import cpu_threads, epoch_order
from gradkit.training.objective import combine_terms, ghm_context, ghm_inputs, sample_loss
from gradkit.training.state import build_model

__all__ = ["ENSEMBLE_VERSION", "EnsembleResult", "Member", "get_ensemble",
           "ensemble_key", "plateau_stop", "train_ensemble"]

#: Bump when the ensemble's semantics change, so that stored results are not reused.
ENSEMBLE_VERSION = 3  # 3: the validation terms (val_ce, val_rank, val_ghmc, val_ghm_rank)


@dataclass(frozen=True)
class Member:
    """One run of an ensemble: its seed (weights and data order), fold label and split."""

    seed: int
    fold: int
    split: Any


@dataclass
class EnsembleResult:
    """``metrics``: one row per (member, epoch) with ``seed``, ``fold``, ``objective``,
    ``epoch`` and the columns of a run's metrics; ``stopped``: ``{(seed, fold): (epoch, why)}``
    with ``why`` ``"plateau"`` or ``"cap"``; ``seconds``: wall time of the training."""

    config: TrainConfig
    metrics: pd.DataFrame
    stopped: dict[tuple[int, int], tuple[int, str]]
    seconds: float


def plateau_stop(metrics: Sequence[dict[str, float]], window: int = 10, min_epochs: int = 20,
                 alpha: float = 0.05) -> bool:
    """Stop when validation has stopped improving: after at least ``min_epochs`` epochs (and
    ``window``), neither the validation accuracy nor the raw validation loss of the last
    ``window`` epochs is ``"still improving"`` by :func:`gradkit.stats.plateau_test` (OLS slope,
    level ``alpha``). ``min_epochs`` guards the first epochs, where the ranking term holds the
    loss flat before it falls (without it a 10-epoch window stops runs too early; the numbers
    are in ``benchmarks/README.md``)."""
    if len(metrics) < max(window, min_epochs, 3):
        return False
    acc = [r["val_acc"] for r in metrics[-window:]]
    loss = [r["val_raw_loss"] for r in metrics[-window:]]
    return (plateau_test(acc, window, True, alpha).verdict != "still improving"
            and plateau_test(loss, window, False, alpha).verdict != "still improving")


def _objective(cfg: TrainConfig, edges: Tensor, acc: dict[str, Tensor], logits: Tensor,
               scores: Tensor, y: Tensor, a: Tensor) -> tuple[Tensor, dict[str, Tensor],
                                                              dict[str, Tensor]]:
    """Per-member loss ``[M]`` (in the graph), detached terms ``[M]`` and the new EMA state:
    :func:`gradkit.training.objective.objective_terms` with a leading member dimension, through
    the same loss functions (``gradkit.losses``, batched over members)."""
    ce = vmap(sample_loss)(logits, y)
    rank = pairwise_ranking_loss(scores, a, cfg.margin)
    every = torch.ones_like(y, dtype=torch.bool)
    with ghm_context(cfg):
        logits, scores = ghm_inputs(cfg, logits, scores)
        ghmc, out_c = ghmc_softmax_loss(logits, y, every, edges, acc["cls"], cfg.momentum)
        ghm_rank, out_r = ghm_ranking_loss(scores, a, cfg.margin, edges, acc["rank"],
                                           cfg.momentum)
    loss, terms = combine_terms(cfg, ce, rank, ghmc, ghm_rank)
    return loss, terms, {"cls": out_c["acc"], "rank": out_r["acc"]}


class _Ensemble:
    """Stacked parameters, Adam and GHM state of members that share their data shapes."""

    def __init__(self, config: TrainConfig, members: Sequence[Member], device: torch.device):
        self.cfg, self.members, self.device = config, list(members), device
        models = [build_model(dataclasses.replace(config, seed=mb.seed), mb.split).to(device)
                  for mb in members]
        self.params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta")
        self.opt = torch.optim.Adam(list(self.params.values()), lr=config.learning_rate,
                                    weight_decay=config.weight_decay)
        self.edges = bin_edges(config.bins).to(device)
        zeros = torch.zeros(len(members), config.bins, device=device)
        self.acc = {"cls": zeros.clone(), "rank": zeros.clone()}
        stack = lambda name: torch.stack([getattr(mb.split, name) for mb in members]).to(device)  # noqa: E731
        self.data = {k: stack(k) for k in ("x_train", "y_train", "x_val", "y_val")}
        self.data["a_train"] = stack("angles_train").float()
        self.data["a_val"] = stack("angles_val").float()

    def keep(self, rows: Sequence[int]) -> None:
        """Go on with members ``rows`` only: their slices of the parameters, of Adam's moments
        (its step count is shared: every member has taken every step), of the GHM state and of
        the data. The kept members continue exactly as before."""
        idx = torch.as_tensor(list(rows), device=self.device)
        old = {k: (p, self.opt.state.get(p, {})) for k, p in self.params.items()}
        self.members = [self.members[i] for i in rows]
        self.params = {k: p.detach()[idx].clone().requires_grad_(p.requires_grad)
                       for k, (p, _) in old.items()}
        self.buffers = {k: b[idx] for k, b in self.buffers.items()}
        self.opt = torch.optim.Adam(list(self.params.values()), lr=self.cfg.learning_rate,
                                    weight_decay=self.cfg.weight_decay)
        for k, p in self.params.items():
            state = old[k][1]
            if state:
                self.opt.state[p] = {name: (v.clone() if name == "step" else v[idx].clone())
                                     for name, v in state.items()}
        self.acc = {k: v[idx] for k, v in self.acc.items()}
        self.data = {k: v[idx] for k, v in self.data.items()}

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        call = lambda p, bf, xb: functional_call(self.base, (p, bf), (xb,))  # noqa: E731
        return vmap(call)(self.params, self.buffers, x)

    def epoch(self, epoch: int) -> list[dict[str, float]]:
        d, cfg, n_m = self.data, self.cfg, len(self.members)
        n = d["x_train"].shape[1]
        order = torch.stack([epoch_order(n, mb.seed, epoch) for mb in self.members]).to(self.device)
        rows = torch.arange(n_m, device=self.device)[:, None]
        sums = {k: torch.zeros(n_m, device=self.device) for k in ("loss", "raw", "ghm", "ce",
                                                                  "rank", "ghmc", "ghm_rank",
                                                                  "correct")}
        for start in range(0, n, cfg.batch_size):
            idx = order[:, start:start + cfg.batch_size]
            y = d["y_train"][rows, idx]
            logits, scores = self.forward(d["x_train"][rows, idx])
            loss, terms, self.acc = _objective(cfg, self.edges, self.acc, logits, scores, y,
                                               d["a_train"][rows, idx])
            self.opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            self.opt.step()
            for k, v in terms.items():
                sums[k] += v * idx.shape[1]
            sums["correct"] += (logits.detach().argmax(-1) == y).sum(1)
        with torch.no_grad():
            logits, scores = self.forward(d["x_val"])
            _, val, _ = _objective(cfg, self.edges, self.acc, logits, scores, d["y_val"],
                                   d["a_val"])
            correct = (logits.argmax(-1) == d["y_val"]).sum(1)
        out = []
        for i, mb in enumerate(self.members):
            out.append({"seed": mb.seed, "fold": mb.fold, "objective": cfg.objective,
                        "epoch": epoch, "train_loss": float(sums["loss"][i] / n),
                        "train_raw_loss": float(sums["raw"][i] / n),
                        "train_ghm_loss": float(sums["ghm"][i] / n),
                        "train_acc": float(sums["correct"][i] / n),
                        **{f"val_{k}": float(v[i]) for k, v in (
                            ("loss", val["loss"]), ("raw_loss", val["raw"]),
                            ("ghm_loss", val["ghm"]), ("ce", val["ce"]), ("rank", val["rank"]),
                            ("ghmc", val["ghmc"]), ("ghm_rank", val["ghm_rank"]))},
                        "val_acc": float(correct[i]) / d["y_val"].shape[1],
                        "val_correct": int(correct[i]), "n_val": int(d["y_val"].shape[1])})
        return out


def train_ensemble(config: TrainConfig, members: Sequence[Member],
                   stop: Callable[[list[dict[str, float]]], bool] | None = None,
                   progress: bool = False) -> EnsembleResult:
    """Train every member of ``members`` for at most ``config.epochs`` (see the module doc)."""
    if config.mode != "full":
        raise ValueError(f"train_ensemble trains full runs only, got mode={config.mode!r}")
    if members:
        config = config.sized_for(min(len(mb.split.y_train) for mb in members))
    if not members:
        raise ValueError("train_ensemble needs at least one member")
    keys = [(mb.seed, mb.fold) for mb in members]
    if len(set(keys)) != len(keys):
        raise ValueError(f"members must have distinct (seed, fold), got {keys}")
    groups: dict[tuple, list[Member]] = {}
    for mb in members:
        shape = (tuple(mb.split.x_train.shape), tuple(mb.split.x_val.shape))
        groups.setdefault(shape, []).append(mb)
    device, start = pick_device(), time.perf_counter()
    rows, stopped = [], {}
    with cpu_threads(device):  # one thread, as a single run (gradkit.training.loop)
        for group in groups.values():
            rows += _train_group(config, group, device, stop, stopped, progress)
    return EnsembleResult(config, pd.DataFrame(rows), stopped, time.perf_counter() - start)


def _train_group(config, group, device, stop, stopped, progress) -> list[dict[str, float]]:
    from tqdm.auto import tqdm

    ens = _Ensemble(config, group, device)
    history: dict[tuple[int, int], list[dict[str, float]]] = {(m.seed, m.fold): [] for m in group}
    for epoch in tqdm(range(1, config.epochs + 1), disable=not progress, leave=False,
                      desc=f"{config.objective} ensemble of {len(group)}"):
        for row in ens.epoch(epoch):
            key = (row["seed"], row["fold"])
            if key in stopped:
                continue
            history[key].append(row)
            if stop is not None and stop(history[key]):
                stopped[key] = (epoch, "plateau")
        active = [i for i, m in enumerate(ens.members) if (m.seed, m.fold) not in stopped]
        if not active:
            break
        if len(active) < len(ens.members):
            ens.keep(active)  # stopped members cost nothing from here on
    for key, rows in history.items():
        stopped.setdefault(key, (rows[-1]["epoch"], "cap"))
    return [r for rows in history.values() for r in rows]


def ensemble_key(config: TrainConfig, members: Sequence[Member], window: int,
                 min_epochs: int) -> str:
    """The identity of a stored ensemble result (16 hex digits; see the module doc)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("seed", "data_root")}
    blob = json.dumps({"config": settings, "window": window, "min_epochs": min_epochs,
                       "members": [[mb.seed, mb.fold, split_fingerprint(mb.split)]
                                   for mb in members],
                       "versions": [TRAIN_VERSION, ENSEMBLE_VERSION]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_ensemble(config: TrainConfig, members: Sequence[Member], window: int = 10,
                 min_epochs: int = 20, progress: bool = False) -> EnsembleResult:
    """:func:`train_ensemble` with :func:`plateau_stop`, stored and found again (module doc).

    ``seconds`` of a stored result is the time it took to train, not to load.
    """
    if members:
        config = config.sized_for(min(len(mb.split.y_train) for mb in members))
    key = ensemble_key(config, members, window, min_epochs)
    path = checkpoints_dir() / "ensembles" / f"{config.folder_name}_{key}.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            return EnsembleResult(config, pd.DataFrame(stored["metrics"]),
                                  {(s, f): (e, why) for s, f, e, why in stored["stopped"]},
                                  float(stored["seconds"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"stored ensemble {path} is unreadable ({err}); delete it to "
                             f"train again") from err
    stop = functools.partial(plateau_stop, window=window, min_epochs=min_epochs)
    result = train_ensemble(config, members, stop=stop, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({
        "key": key, "config": config.to_dict(), "seconds": result.seconds,
        "stopped": [[s, f, e, why] for (s, f), (e, why) in result.stopped.items()],
        "metrics": result.metrics.to_dict(orient="records")}) + "\n")
    return result
