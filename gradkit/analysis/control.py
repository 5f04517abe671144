"""Is the class structure of the gradients in the data, or put there by the labels?

At a near-uniform output ``p`` a clip's cross-entropy gradient is dominated by its label: the
class head's is ``(p - onehot(y)) h^T``, so two clips of one class share the direction
``-onehot(y)`` whatever their recordings hold, and clips of two classes point apart. The block
structure of notebook 03's cosine matrices, its class silhouette and its t-SNE clusters then
appear on recordings with no class signal at all. This module measures each statistic against
a control that has the labels' share and nothing of the data's, and reports only the excess.

**The control: labels permuted, the run trained again** (:func:`permuted_run_stats`). The labels
(with their angles, which the ranking term reads) are permuted within the training split and,
separately, within the held-out split (seeded, :func:`within_split_permutation`): every clip
keeps its recording, every split its class counts, and any link between recording and class is
cut. The run's own :class:`~gradkit.training.TrainConfig` is trained again on them by the same
code (:func:`gradkit.training.state.train_epoch`: the same architecture, optimiser, epochs and
GHM objective), and at the same checkpoints the same per-sample CE gradients (of the permuted
labels) give the same statistics (:func:`structure_stats`). Where the recordings carry no
class signal the real labels are one such permutation, so the observed statistic is a draw
from the control's distribution; several permutations measure that distribution, and
:func:`gradkit.stats.compare_to_control` tests the observation against it (one observation
against ``R`` draws, with the observation's own spread counted).

Each permutation also gets its own seed (initial weights and batch order: ``seed + 1 + r``):
the observed statistic varies with the seed as much as with the labelling, and a control that
kept the run's seed would measure only the second. On a folder of pure noise it does not
suffice: the share of opposed pairs and the different-class cosine jump between a few values
as one pair of classes crosses ``cos = 0``, and four permutations of one seed can all land on
one value while the real labels land on another, an "excess" that a control over seeds too
shows to be spread.

**Why not the untrained model.** The gradients of the initial weights (which never saw a label)
with permuted labels would be an exact control and cost no training, but of epoch 0 only: a
trained checkpoint's features and outputs were fitted to its labels (a small run memorises
them), which shapes its gradients in ways the initial model lacks, so they would not control the
statistics of trained checkpoints. Retraining costs one run per permutation, so the notebook
checks a few checkpoints (the first, middle and last), not all.

**The statistics** (:data:`STATISTICS`), each a function of the per-sample gradients' Gram
matrix and the labels (:mod:`gradkit.grads.similarity`, :mod:`gradkit.grads.tsne`): the class
silhouette under ``1 - cos``, the same- and different-class mean cosines and their gap, the
share of opposed pairs (``cos < 0``), and of a t-SNE map of the directions (cold start, seed 0,
the same for observation and control) its class silhouette and the share of each clip's
``k`` nearest map neighbours of its own class (:func:`neighbour_class_share`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from gradkit.grads import Gram, gradient_gram, tsne
from gradkit.grads import similarity as sim
from gradkit.stats import compare_to_control, interval_change
from gradkit.training import DivergenceGuard, sample_loss
from gradkit.training.state import new_state, train_epoch

__all__ = ["CONTROL", "STATISTICS", "control_epochs", "excess_change", "excess_headline",
           "excess_sentence", "excess_table", "label_control", "neighbour_class_share",
           "permuted_run_stats", "structure_stats", "within_split_permutation"]

#: The control's name in every sentence.
CONTROL = "label-permuted control"

#: Each statistic's name in a sentence.
STATISTICS = {
    "silhouette": "class silhouette",
    "within_class": "same-class mean cosine",
    "between_class": "different-class mean cosine",
    "class_gap": "same- minus different-class cosine",
    "share_negative": "share of opposed pairs",
    "tsne_silhouette": "t-SNE class silhouette",
    "tsne_same_class": "share of t-SNE neighbours of the same class",
}


def neighbour_class_share(emb, labels, k: int = 5) -> float:
    """Mean share of each point's ``k`` nearest neighbours in ``emb`` (Euclidean, itself
    excluded) that carry its label: about ``(n_c - 1) / (N - 1)`` for a map blind to the
    classes, 1 when every neighbourhood is of one class."""
    e = np.asarray(emb, dtype=float)
    y = np.asarray(labels)
    n = e.shape[0]
    if e.ndim != 2 or y.shape != (n,):
        raise ValueError(f"emb must be [N, d] with one label per row, got {e.shape} and "
                         f"{y.shape}")
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, N-1] = [1, {n - 1}], got {k}")
    d = ((e[:, None] - e[None]) ** 2).sum(-1) + np.diag(np.full(n, np.inf))
    near = np.argsort(d, axis=1, kind="stable")[:, :k]
    return float((y[near] == y[:, None]).mean())


def structure_stats(G, labels, k: int = 5, seed: int = 0) -> dict[str, float]:
    """The statistics of :data:`STATISTICS` of gradients ``G`` (rows or a
    :class:`~gradkit.grads.Gram`) under ``labels``; the t-SNE map is a cold start with
    ``seed``, and ``k`` is capped at ``N - 2``."""
    y = np.asarray(labels)
    row = sim.similarity_stats(G, y, top_k=1).row()
    emb = tsne.tsne_directions(G, seed=seed)
    return {"silhouette": row["silhouette"], "within_class": row["within_class"],
            "between_class": row["between_class"],
            "class_gap": row["within_class"] - row["between_class"],
            "share_negative": row["share_negative"],
            "tsne_silhouette": tsne.embedding_silhouette(emb, y),
            "tsne_same_class": neighbour_class_share(emb, y, max(1, min(k, len(y) - 2)))}


def within_split_permutation(n_train: int, n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` that maps ``[0, n_train)`` onto itself and
    ``[n_train, n)`` onto itself: ``labels[order]`` permutes within each split."""
    if not 0 < n_train <= n:
        raise ValueError(f"need 0 < n_train <= n, got n_train = {n_train}, n = {n}")
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(n_train), n_train + rng.permutation(n - n_train)])


def control_epochs(epochs: Sequence[int]) -> list[int]:
    """The checkpoints the control is trained to: the first, the middle and the last."""
    e = sorted(int(v) for v in epochs)
    if not e:
        raise ValueError("control_epochs needs at least one checkpoint epoch")
    return sorted({e[0], e[len(e) // 2], e[-1]})


def permuted_run_stats(run, epochs: Sequence[int], order, k: int = 5, seed: int = 0,
                       train_seed: int | None = None) -> dict[int, dict[str, float]]:
    """``{epoch: structure_stats}`` of ``run``'s configuration trained again with its labels
    (and angles) permuted by ``order`` (:func:`within_split_permutation` over train + held out,
    in that order), at each of ``epochs``, from the per-sample CE gradients of all clips under
    the permuted labels (module doc). Trains on the CPU, in memory: nothing is written."""
    cfg, split = run.config, run.split
    if cfg.mode != "full":
        raise ValueError(f"the label-permuted control retrains a full run; {cfg.folder_name} "
                         f"is a {cfg.mode!r} run")
    n_train = len(split.y_train)
    y = torch.cat([split.y_train, split.y_val])
    angles = torch.cat([split.angles_train, split.angles_val])
    order = torch.as_tensor(np.asarray(order), dtype=torch.long)
    if sorted(order[:n_train].tolist()) != list(range(n_train)) or \
            sorted(order.tolist()) != list(range(len(y))):
        raise ValueError(f"order must permute the {n_train} training clips among themselves and "
                         f"the {len(y) - n_train} held-out ones among themselves")
    y, angles = y[order], angles[order]
    permuted = replace(split, y_train=y[:n_train], angles_train=angles[:n_train],
                       y_val=y[n_train:], angles_val=angles[n_train:])
    wanted = sorted({int(e) for e in epochs})
    if not wanted or wanted[0] < 1 or wanted[-1] > cfg.epochs:
        raise ValueError(f"epochs must lie in 1..{cfg.epochs} (the run's), got {list(epochs)}")
    if train_seed is not None:
        cfg = replace(cfg, seed=int(train_seed))
    state = new_state(cfg, permuted, torch.device("cpu"), None)
    data = {"x_train": permuted.x_train, "y_train": permuted.y_train,
            "angles_train": permuted.angles_train.float()}
    guard = DivergenceGuard(lr=cfg.learning_rate)
    x = torch.cat([split.x_train, split.x_val])
    out = {}
    for epoch in range(1, wanted[-1] + 1):
        train_epoch(state, data, epoch, guard)
        if epoch in wanted:
            model = state.model.eval()
            out[epoch] = structure_stats(Gram(gradient_gram(model, sample_loss, x, y)), y, k,
                                         seed)
    return out


def excess_table(observed: dict[int, dict[str, float]],
                 control: Sequence[dict[int, dict[str, float]]],
                 alpha: float = 0.05) -> pd.DataFrame:
    """One row per checkpoint and statistic: the observed value, the control's values, the
    excess with its interval and verdict (:func:`gradkit.stats.compare_to_control`) and the
    sentence, which speaks only of the excess. ``observed``: ``{epoch: {statistic: value}}``;
    ``control``: one such dict per permutation, with the same epochs and statistics."""
    if not control:
        raise ValueError("excess_table needs at least one control (a permutation's statistics)")
    rows = []
    for epoch, values in observed.items():
        missing = [i for i, c in enumerate(control) if epoch not in c]
        if missing:
            raise ValueError(f"controls {missing} lack epoch {epoch}")
        for name, value in values.items():
            draws = [c[epoch][name] for c in control]
            try:
                result = compare_to_control(value, draws, alpha, label=CONTROL,
                                            what="permutations")
            except ValueError as err:
                raise ValueError(f"{name} at epoch {epoch}: {err}") from err
            text = STATISTICS.get(name, name)
            rows.append({"epoch": int(epoch), "statistic": name, "observed": value,
                         "control_mean": result.control_mean, "control_sd": result.control_sd,
                         "control": tuple(draws), "excess": result.excess,
                         "ci_low": result.ci[0], "ci_high": result.ci[1],
                         "p_value": result.p_value, "verdict": result.verdict,
                         "sentence": f"the {text} {result.sentence()}"})
    return pd.DataFrame(rows)


def label_control(run, grams: dict, labels, permutations: int = 4, seed: int = 0,
                  k: int = 5, alpha: float = 0.05) -> pd.DataFrame:
    """:func:`excess_table` of ``run``'s statistics against its label-permuted control at the
    checkpoints of ``grams`` (``{epoch: Gram}`` of the per-sample CE gradients of all clips,
    training then held out, under ``labels``, as notebook 03 computes them): ``permutations``
    runs, permutation ``r`` by :func:`within_split_permutation` with ``seed + r`` and trained
    with seed ``run.config.seed + 1 + r`` (module doc)."""
    split = run.split
    y = torch.as_tensor(np.asarray(labels)).long()
    if not torch.equal(y, torch.cat([split.y_train, split.y_val])):
        raise ValueError("labels must be the run's training labels followed by its held-out "
                         "labels, as the Gram matrices' rows are")
    if permutations < 2:
        raise ValueError(f"permutations must be at least 2 (the control's spread), got "
                         f"{permutations}")
    epochs = sorted(int(e) for e in grams)
    observed = {e: structure_stats(grams[e], y, k, seed) for e in epochs}
    n_train = len(split.y_train)
    controls = [permuted_run_stats(run, epochs, within_split_permutation(n_train, len(y),
                                                                         seed + r),
                                   k, seed, train_seed=run.config.seed + 1 + r)
                for r in range(permutations)]
    return excess_table(observed, controls, alpha)


def _row(table: pd.DataFrame, epoch: int, name: str) -> pd.Series:
    hit = table[(table.epoch == int(epoch)) & (table.statistic == name)]
    if len(hit) != 1:
        raise KeyError(f"no single row for statistic {name!r} at epoch {epoch} in the control "
                       f"table (epochs {sorted(set(table.epoch))})")
    return hit.iloc[0]


def excess_sentence(table: pd.DataFrame, epoch: int, name: str) -> str:
    """The generated sentence of statistic ``name`` at ``epoch`` in an :func:`excess_table`."""
    return str(_row(table, epoch, name).sentence)


def excess_headline(table: pd.DataFrame, epoch: int, name: str) -> str:
    """The short form for a report index: ``+0.25 [-0.27, +0.77] at epoch 60 (at its control
    level)`` (no interval where the control had no spread)."""
    r = _row(table, epoch, name)
    finite = np.isfinite([r.ci_low, r.ci_high]).all()
    interval = f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]" if finite else ""
    return f"{r.excess:+.2f}{interval} at epoch {int(epoch)} ({r.verdict})"


def excess_change(table: pd.DataFrame, name: str, first: int, last: int) -> str:
    """How the excess of ``name`` moved from checkpoint ``first`` to ``last``, as a predicate:
    ``went +0.02 → +0.25 (no detectable change)`` by :func:`gradkit.stats.interval_change`
    (non-overlap of the two intervals; without two finite intervals no change is called), or
    ``was +0.02`` when ``first == last``."""
    a, b = _row(table, first, name), _row(table, last, name)
    if int(first) == int(last):
        return f"was {a.excess:+.2f}"
    moved = f"went {a.excess:+.2f} \u2192 {b.excess:+.2f}"
    if not np.isfinite([a.ci_low, a.ci_high, b.ci_low, b.ci_high]).all():
        return f"{moved} (no two intervals to compare)"
    word = interval_change((a.excess, (a.ci_low, a.ci_high)), (b.excess, (b.ci_low, b.ci_high)))
    return f"{moved} ({word})"
