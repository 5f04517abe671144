"""The workbook's reading of a tracked run (:func:`gradkit.track.load_run`): did it learn, its
noise scale over steps and epochs with intervals, and its logged Gram matrices' similarities.

- :func:`check_run`          a run folder fit for the workbook, or an error naming the path;
- :func:`loss_learned`       did the loss fall: the step losses of the last epoch against those
  of the first (:func:`gradkit.stats.compare_paired`, paired by position in the epoch);
- :func:`loss_status`        :class:`~gradkit.analysis.advice.RunStatus` from the loss, for
  :func:`~gradkit.analysis.advice.batch_advice` (failed: the loss did not fall; trend: the OLS
  slope test of the epoch-mean loss over the last epochs, :func:`gradkit.stats.plateau_test`),
  and :func:`run_advice_sentence`, the advice said in terms of the loss;
- :func:`gram_noise_scales`  ``B_simple`` of each logged batch with its bootstrap interval
  (:func:`gradkit.grads.noise_scale` on the Gram matrix);
- :func:`epoch_noise_scales` ``B_simple`` per epoch from every step's unbiased ``|G|²`` and
  ``S`` (:func:`gradkit.grads.noise.two_batch_estimates`, the estimates behind the run's
  ``b_simple_ema``), pooled with equal weights, and a percentile bootstrap over the steps;
- :func:`step_similarity`    similarity matrix, statistics, t-SNE map and conflicts of every
  logged Gram matrix (no ``[N, P]``: the tracker never kept one);
- :func:`conflicting_samples` the samples whose gradient opposes their batch or class.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gradkit.analysis import conflicts
from gradkit.analysis.advice import RunStatus, advice_sentence
from gradkit.grads import Gram, noise_scale, tsne
from gradkit.grads import similarity as sim
from gradkit.grads.noise import two_batch_estimates
from gradkit.stats import compare_paired, plateau_test
from gradkit.track import load_run

__all__ = ["MIN_SAMPLES", "LossVerdict", "check_run", "conflicting_samples",
           "epoch_noise_scales", "gram_noise_scales", "logged_steps", "loss_learned",
           "loss_status", "run_advice_sentence", "step_similarity"]


#: the smallest logged batch read (a t-SNE map needs 3 points, a noise scale 2)
MIN_SAMPLES = 3


def logged_steps(run) -> list[int]:
    """The steps of ``run``'s logged Gram matrices of at least :data:`MIN_SAMPLES` samples (a
    smaller last batch of an epoch is left out of the per-batch readings)."""
    return [s for s, K in sorted(run.grams.items()) if K.shape[0] >= MIN_SAMPLES]


def check_run(path):
    """:func:`gradkit.track.load_run` of ``path``, refused with a ``ValueError`` naming the path
    when the folder is missing, holds no ``meta.json``, no recorded step or no logged Gram
    matrix (the workbook's similarity section needs one: ``Tracker(gram_every=k)``)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"run folder {path} not found")
    if not (path / "meta.json").is_file():
        raise ValueError(f"{path}: no meta.json; not a run folder written by gradkit.track."
                         f"Tracker")
    run = load_run(path)
    if not len(run.scalars):
        raise ValueError(f"{path}: no recorded step (scalars/ holds no row)")
    if not run.grams:
        raise ValueError(f"{path}: no logged Gram matrix (grams/step-*.pt); record with "
                         f"Tracker(..., gram_every=k), k > 0")
    if not logged_steps(run):
        raise ValueError(f"{path}: every logged Gram matrix holds fewer than {MIN_SAMPLES} "
                         f"samples (steps {sorted(run.grams)})")
    return run


@dataclass(frozen=True)
class LossVerdict:
    """``learned``: the last epoch's step losses are lower than the first's (paired t-test at
    ``alpha``); ``verdict``: ``"learned"``, ``"loss rose"``, ``"no detectable change"`` or
    ``"too short to test"``; ``sentence``: the comparison with its interval."""

    learned: bool
    verdict: str
    start: float
    end: float
    sentence: str

    @property
    def untrained(self) -> bool:
        """The loss was tested and did not fall: the statistics describe an untrained model
        (not said of a run too short to test)."""
        return self.verdict in ("loss rose", "no detectable change")

    @property
    def caveat(self) -> str:
        """What the run's statistics describe, for the notebooks' sentences ("" if it learned)."""
        return ("" if self.learned else " They describe an untrained model." if self.untrained
                else " Whether the run learned could not be tested.")


def _first_and_last(scalars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str, str]:
    frame = scalars[np.isfinite(scalars["loss"].to_numpy(dtype=float))]
    epochs = frame["epoch"].dropna().unique()
    if len(epochs) >= 2:
        first, last = frame[frame.epoch == epochs.min()], frame[frame.epoch == epochs.max()]
        return (first.loss.to_numpy(float), last.loss.to_numpy(float),
                f"epoch {int(epochs.min())}", f"epoch {int(epochs.max())}")
    quarter = len(frame) // 4
    loss = frame.loss.to_numpy(float)
    return loss[:quarter], loss[len(loss) - quarter:], "first quarter", "last quarter"


def loss_learned(scalars: pd.DataFrame, alpha: float = 0.05) -> LossVerdict:
    """Whether the recorded loss fell from the start of the run to its end.

    The step losses of the first epoch against those of the last (without epochs: the first and
    last quarter of the steps), the ``k``-th step of one paired with the ``k``-th of the other
    (``min`` of the two counts; batches are shuffled, so the pairing is arbitrary and the test
    only conservative), by :func:`gradkit.stats.compare_paired` with lower loss better. Fewer
    than 3 pairs: ``"too short to test"``, not learned.
    """
    start, end, a, b = _first_and_last(scalars)
    n = min(len(start), len(end))
    if n < 3:
        return LossVerdict(False, "too short to test", float(np.mean(start)) if len(start)
                           else math.nan, float(np.mean(end)) if len(end) else math.nan,
                           f"only {n} step(s) to compare between the start and the end of the "
                           f"run: whether it learned cannot be tested")
    cmp = compare_paired(end[:n], start[:n], higher_is_better=False, alpha=alpha,
                         label_a=f"loss ({b})", label_b=f"loss ({a})", what="step pairs")
    verdict = {"better": "learned", "worse": "loss rose"}.get(cmp.verdict,
                                                                "no detectable change")
    return LossVerdict(verdict == "learned", verdict, float(start.mean()), float(end.mean()),
                       cmp.sentence(digits=3))


def loss_status(scalars: pd.DataFrame, last: int = 10, alpha: float = 0.05) -> RunStatus:
    """The :class:`~gradkit.analysis.advice.RunStatus` of a tracked run from its loss (module
    docstring): ``accuracy`` and ``chance`` are NaN (the tracker records no accuracy)."""
    learned = loss_learned(scalars, alpha)
    per_epoch = scalars.dropna(subset=["epoch"]).groupby("epoch").loss.mean()
    if len(per_epoch) >= 3:
        plateau = plateau_test(per_epoch.to_numpy(float), last=min(last, len(per_epoch)),
                               higher_is_better=False, alpha=alpha, step="epoch")
        trend, text = plateau.verdict, "epoch-mean loss " + plateau.sentence(digits=3)
    else:
        trend, text = "too short to test", f"{len(per_epoch)} epoch(s): no trend test"
    return RunStatus(failed=learned.untrained, trend=trend, accuracy=math.nan,
                     chance=math.nan, sentence=f"{learned.sentence}; {text}")


_BY_LOSS = {  # the advice words that the study reads from validation accuracy, read from loss
    "failed run": "the loss did not fall from the first epoch to the last: no advice",
    "still improving": "the epoch-mean loss is still falling: keep training before tuning B",
    "getting worse": "the epoch-mean loss is rising: look at the learning rate first",
    "too short to test": "too few epochs to test the loss for a plateau: no advice",
}


def run_advice_sentence(word: str, b_simple: float, lo: float, hi: float,
                        batch_size: int) -> str:
    """:func:`~gradkit.analysis.advice.advice_sentence` for a :func:`loss_status` run: the words
    decided by the loss say so; those decided by ``B_simple``'s interval are the study's."""
    text = advice_sentence(word, b_simple, lo, hi, batch_size)  # checks the word
    if word not in _BY_LOSS:
        return text
    return (f"{_BY_LOSS[word][0].upper()}{_BY_LOSS[word][1:]} (B_simple {b_simple:.3g} "
            f"[{lo:.3g}, {hi:.3g}], B = {batch_size}).")


def gram_noise_scales(run, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per logged Gram matrix (:func:`logged_steps`): ``step``, ``epoch``, ``n``,
    ``b_simple`` with its 95 % bootstrap interval over the batch's samples (``b_simple_lo``,
    ``b_simple_hi``; :func:`gradkit.grads.noise_scale`), ``grad_sq``, ``trace_sigma``."""
    rows = []
    for step in logged_steps(run):
        ns = noise_scale(Gram(run.grams[step]), 1, n_boot=n_boot, seed=seed)
        rows.append({"step": step, "epoch": run.epochs.get(step), "n": ns.n,
                     "b_simple": ns.b_simple, "b_simple_lo": ns.b_simple_ci[0],
                     "b_simple_hi": ns.b_simple_ci[1], "grad_sq": ns.grad_sq,
                     "trace_sigma": ns.trace_sigma})
    return pd.DataFrame(rows)


def _pooled(signal: np.ndarray, noise: np.ndarray) -> float:
    g = float(signal.mean())
    return float(noise.mean()) / g if g > 0 else math.inf


def epoch_noise_scales(scalars: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> pd.DataFrame:
    """``B_simple`` per epoch (module docstring): each step's ``|G|²_t``, ``S_t`` from its
    ``E ||G_i||² = grad_sq + trace_sigma`` (batch of 1) and ``||g_D||² = grad_sq`` (batch of
    ``n``), ``B_simple = mean S_t / mean |G|²_t`` over the epoch's steps, and the percentile
    interval of ``n_boot`` resamples of the steps (a resample with ``mean |G|²_t <= 0`` counts
    as infinite, as in :func:`gradkit.grads.noise_scale`). Steps are treated as independent
    draws within an epoch. Rows: ``epoch``, ``steps``, ``b_simple``, ``b_simple_lo``,
    ``b_simple_hi``, ``batch_size`` (the epoch's median ``n``)."""
    frame = scalars.dropna(subset=["epoch", "grad_sq", "trace_sigma"])
    frame = frame[frame.n >= 2]
    rng = np.random.default_rng(int(seed))
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    rows = []
    for epoch, part in frame.groupby("epoch"):
        est = np.array([two_batch_estimates(tr + gsq, gsq, 1, n) for tr, gsq, n in
                        zip(part.trace_sigma, part.grad_sq, part.n, strict=True)])
        signal, noise = est[:, 0], est[:, 1]
        lo = hi = math.nan
        if n_boot > 0 and len(part) >= 2:
            idx = rng.integers(0, len(part), size=(n_boot, len(part)))
            reps = np.array([_pooled(signal[i], noise[i]) for i in idx])
            lo, hi = (float(v) for v in np.quantile(reps, q, method="inverted_cdf"))
        rows.append({"epoch": int(epoch), "steps": len(part), "b_simple": _pooled(signal, noise),
                     "b_simple_lo": lo, "b_simple_hi": hi,
                     "batch_size": int(part.n.median())})
    return pd.DataFrame(rows)


def class_labels(labels, n: int, where: str):
    """``labels`` as class indices ``[n]`` when they are class labels (integers ``>= 0``, one
    per sample); None with a warning naming ``where`` otherwise (regression targets, one-hot
    rows): the statistics then treat the batch as one group rather than invent classes."""
    if labels is None:
        return None
    y = torch.as_tensor(labels)
    if y.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8) \
            and y.shape == (n,) and bool((y >= 0).all()):
        return y.long()
    warnings.warn(f"{where}: the recorded labels ({y.dtype}, shape {tuple(y.shape)}) are not "
                  f"{n} class indices; the batch is read as one group", RuntimeWarning,
                  stacklevel=3)
    return None


def step_similarity(run, seed: int = 0) -> dict[int, dict]:
    """``{step: {...}}`` for every logged Gram matrix (:func:`logged_steps`): ``"gram"``,
    ``"labels"`` (a tensor or None), ``"epoch"``, ``"sample_matrix"``
    (:func:`gradkit.grads.similarity.similarity_matrix`, grouped by label; without labels one
    group in batch order),
    ``"sample_stats"``, ``"sample_map"`` (t-SNE from its PCA start: each step holds other
    samples, so no map is warm-started from, or aligned to, another) and ``"conflict"``
    (:func:`gradkit.analysis.conflicts.conflict_cosines`: each sample's cosine to the rest of
    its class, NaN without labels, and to the rest of its batch)."""
    out = {}
    for step in logged_steps(run):
        G, labels = Gram(run.grams[step]), run.labels.get(step)
        y = class_labels(labels, G.n, f"{run.path}, step {step}")
        one_group = torch.zeros(G.n, dtype=torch.long)  # without labels: a single group
        conflict = conflicts.conflict_cosines(G, one_group if y is None else y,
                                              np.ones(G.n, bool))
        if y is None:
            conflict = (np.full(G.n, np.nan), conflict[1])
        out[step] = {"gram": G, "labels": y, "epoch": run.epochs.get(step),
                     "sample_matrix": sim.similarity_matrix(G, one_group if y is None else y),
                     "sample_stats": sim.similarity_stats(G, y, top_k=5),
                     "sample_map": tsne.tsne_directions(G, seed=seed),
                     "conflict": conflict}
    return out


def conflicting_samples(results: dict[int, dict], ids: dict | None = None) -> pd.DataFrame:
    """The samples of :func:`step_similarity` whose gradient opposes the rest of their batch or
    of their class (``cos < 0``), most opposed first. Without ``ids`` a sample is named by its
    step and position in the batch; with ``ids`` (``{step: [id of each sample]}``) the rows are
    pooled per id: the share of its logged steps at which it conflicted."""
    rows = []
    for step, r in results.items():
        cos_class, cos_batch = r["conflict"]
        y = r["labels"]
        for i in range(len(cos_batch)):
            rows.append({"step": step, "position": i,
                         "id": None if ids is None else ids[step][i],
                         "label": None if y is None else int(y[i]),
                         "cos to its class (LOO)": float(cos_class[i]),
                         "cos to its batch (LOO)": float(cos_batch[i])})
    frame = pd.DataFrame(rows)
    frame["conflicts"] = (frame["cos to its class (LOO)"] < 0) | (frame["cos to its batch (LOO)"]
                                                                   < 0)
    if ids is not None:
        frame = frame.groupby("id", as_index=False).agg(
            label=("label", "first"), steps=("step", "count"),
            **{"conflict share": ("conflicts", "mean"),
               "mean cos to its batch": ("cos to its batch (LOO)", "mean")})
        return frame.sort_values(["conflict share", "mean cos to its batch"],
                                 ascending=[False, True], kind="stable").reset_index(drop=True)
    frame = frame[frame.conflicts].drop(columns=["id", "conflicts"])
    return frame.sort_values("cos to its batch (LOO)", kind="stable").reset_index(drop=True)
