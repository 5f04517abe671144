"""Is a condition learnable at all? The gate before any comparison of objectives.

Two witnesses, each tested against chance ``1 / classes`` by :func:`gradkit.stats.above_chance`:

- **the baseline**: a cross-validated logistic regression (scikit-learn, L2, standardised inputs)
  on the same log-mel features and the same folds as the runs, each clip flattened to one vector
  (``flat_features``: the echo's delay lives in time, which pooling over time would erase; on
  the default set the pooled version stays near chance). Over one seed's ``k`` folds every clip
  is validated exactly once, so the ``n`` trials of the exact binomial test are the ``n`` clips;
- **the runs**: the share of runs whose last-epoch validation accuracy is *not* above chance
  (each by its own exact test, as :func:`gradkit.analysis.verdicts.run_summary` reports). With
  ``α = 0.05`` about one run in twenty beats chance by luck alone, so the runs count as having
  learned only when the number above chance is itself above that rate
  (``above_chance(k_above, n_runs, α)``).

The rule (:func:`learnability_gate`): the condition is **learnable** when the baseline or the
runs beat chance; otherwise it is **not learnable: no run learned**, and an objective comparison
on it would compare two models that learned nothing (``comparable`` is False: the notebooks
print ``NOT_COMPARABLE`` instead of a verdict).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from gradkit.data.features import AudioSplit
from gradkit.data.folds import fold_splits, load_features
from gradkit.stats import ChanceResult, above_chance

__all__ = ["NOT_COMPARABLE", "Baseline", "LearnabilityGate", "baseline_accuracy",
           "chance_verdict", "condition_baseline", "flat_features", "gate_markdown",
           "learnability_gate", "run_verdicts", "runs_at_chance"]

#: What a notebook prints in place of an objective comparison on a condition nothing learned.
NOT_COMPARABLE = "not comparable: no run learned"


def flat_features(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[N, ...]`` log-mel clips as ``[N, D]`` float64 vectors, one row per clip."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"features must be [N, ...] with N >= 1, got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


@dataclass(frozen=True)
class Baseline:
    """The cross-validated baseline: ``correct`` of ``n`` validation clips, per fold and tested."""

    correct: int
    n: int
    fold_accuracies: tuple[float, ...]
    chance: ChanceResult

    @property
    def accuracy(self) -> float:
        return self.correct / self.n


def baseline_accuracy(splits: Sequence[AudioSplit], n_classes: int, alpha: float = 0.05,
                      c: float = 1.0, seed: int = 0) -> Baseline:
    """Logistic regression on :func:`flat_features`, fitted on each split's training clips and
    scored on its validation clips; the correct clips summed over the splits are tested against
    ``1 / n_classes``. The splits must validate every clip at most once (one seed's folds) for
    the binomial test's trials to be distinct clips."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if not splits:
        raise ValueError("baseline_accuracy needs at least one split")
    correct, n, per_fold = 0, 0, []
    for split in splits:
        y_train, y_val = np.asarray(split.y_train), np.asarray(split.y_val)
        if np.unique(y_train).size < 2:
            raise ValueError("a split's training clips hold a single class: nothing to fit")
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000,
                                                                   random_state=seed))
        model.fit(flat_features(split.x_train), y_train)
        hits = int((model.predict(flat_features(split.x_val)) == y_val).sum())
        correct, n = correct + hits, n + y_val.size
        per_fold.append(hits / y_val.size)
    return Baseline(correct, n, tuple(per_fold), above_chance(correct, n, 1 / n_classes, alpha))


def condition_baseline(material: str, freq_hz: int, root: str | Path | None = None,
                       folds: int = 3, seed: int = 42, alpha: float = 0.05) -> Baseline:
    """:func:`baseline_accuracy` of one condition's recordings over ``seed``'s ``folds``
    stratified folds (:func:`gradkit.data.folds.fold_splits`, as notebook 01's)."""
    data = load_features(material, freq_hz, root=root)
    return baseline_accuracy(fold_splits(data, folds, seed).splits, len(data.classes), alpha)


def chance_verdict(val_acc: float, n_val: int, n_classes: int, alpha: float = 0.05) -> str:
    """``"above chance"`` / ``"at chance"``: a run's validation accuracy ``val_acc`` over
    ``n_val`` clips, by the exact test against ``1 / n_classes``; ValueError when ``val_acc *
    n_val`` is not a whole number of clips."""
    correct = round(float(val_acc) * n_val)
    if abs(correct - float(val_acc) * n_val) > 1e-6 * max(n_val, 1):
        raise ValueError(f"val_acc = {val_acc!r} over n_val = {n_val} clips is not a whole "
                         "number of correct clips")
    return above_chance(correct, n_val, 1 / n_classes, alpha).verdict


def runs_at_chance(verdicts: Sequence[str], alpha: float = 0.05) -> ChanceResult:
    """The runs' own witness: of ``verdicts`` (``"above chance"`` / ``"at chance"``, one per run),
    is the number above chance more than ``alpha`` of them, the rate luck alone gives? The
    level is ``p <= alpha`` (not ``<``) so that one run above chance, whose own test held at
    ``alpha``, counts as a run that learned (``P(Bin(1, alpha) >= 1) = alpha``)."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("runs_at_chance needs at least one run's verdict")
    unknown = sorted(set(verdicts) - {"above chance", "at chance"})
    if unknown:
        raise ValueError(f"verdicts must be 'above chance' or 'at chance', got {unknown}")
    above = sum(v == "above chance" for v in verdicts)
    result = above_chance(above, len(verdicts), alpha, alpha)
    learned = above > 0 and result.p_value <= alpha * (1 + 1e-9)  # P(Bin(1, a) >= 1) rounds
    return replace(result, verdict="above chance" if learned else "at chance")


@dataclass(frozen=True)
class LearnabilityGate:
    """The gate's verdict (see the module doc); ``runs`` is None before any run is trained."""

    baseline: Baseline
    runs: ChanceResult | None

    @property
    def baseline_learned(self) -> bool:
        return self.baseline.chance.verdict == "above chance"

    @property
    def runs_learned(self) -> bool:
        return self.runs is not None and self.runs.verdict == "above chance"

    @property
    def comparable(self) -> bool:
        return self.baseline_learned or self.runs_learned

    @property
    def verdict(self) -> str:
        return "learnable" if self.comparable else "not learnable: no run learned"

    @property
    def share_at_chance(self) -> float | None:
        return None if self.runs is None else 1 - self.runs.accuracy

    def sentence(self) -> str:
        """E.g. ``learnable: the cross-validated baseline ... ; 3 of 30 runs ended at chance``."""
        b = self.baseline
        text = (f"{self.verdict}: a cross-validated logistic regression on the same features "
                f"reaches {b.chance.sentence()}")
        if self.runs is not None:
            n, above = self.runs.n, self.runs.successes
            text += (f"; {n - above} of {n} runs ended at chance ({self.share_at_chance:.0%}), "
                     f"{above} above it (luck alone gives {self.runs.chance:.0%}, "
                     f"p = {self.runs.p_value:.2g}: the runs "
                     + ("learned" if self.runs_learned else "did not learn") + ")")
        if self.comparable and not self.runs_learned and self.runs is not None:
            text += "; the data carries signal that the runs did not learn"
        return text

    def headline(self) -> str:
        """A short form for the report index."""
        b = self.baseline
        runs = "" if self.runs is None else (
            f", runs at chance {self.runs.n - self.runs.successes} of {self.runs.n}")
        return (f"{self.verdict} (baseline {b.accuracy:.1%} [{b.chance.ci[0]:.1%}, "
                f"{b.chance.ci[1]:.1%}] vs chance {b.chance.chance:.1%}{runs})")


def learnability_gate(baseline: Baseline, run_verdicts: Sequence[str] | None = None,
                      alpha: float = 0.05) -> LearnabilityGate:
    """The gate from a :class:`Baseline` and, once trained, each run's chance verdict."""
    runs = None if run_verdicts is None else runs_at_chance(run_verdicts, alpha)
    return LearnabilityGate(baseline, runs)


def run_verdicts(runs) -> list[str]:
    """:func:`chance_verdict` of each trained run at its last epoch (``run.metrics`` with a
    ``val_acc`` column, ``run.split`` with ``y_val`` and ``classes``, as a
    :class:`gradkit.training.Run`)."""
    return [chance_verdict(run.metrics["val_acc"].iloc[-1], len(run.split.y_val),
                           len(run.split.classes)) for run in runs]


def gate_markdown(gate: LearnabilityGate, untrained: str = "") -> str:
    """The gate's sentence in bold; where no run learned, ``untrained`` (e.g. "the statistics
    below describe an untrained model") follows it, and where nothing learned,
    :data:`NOT_COMPARABLE`."""
    text = f"**Learnability: {gate.sentence()}.**"
    if untrained and not gate.runs_learned:
        text += f" **No run here beat chance: {untrained}.**"
    if not gate.comparable:
        text += f" **{NOT_COMPARABLE}.**"
    return text
