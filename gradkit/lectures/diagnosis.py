"""The notes' recipe: model bias, optimisation or overfitting — decided only on trained models.

- :func:`convergence` / :func:`converged_stop`  has a training-loss curve converged?
- :func:`train_until_converged`  train a network until it has (notebook 05, section 1)
- :func:`diagnose_converged`  the recipe on per-clip losses with intervals
- :func:`diagnose`  the recipe on single numbers (kept for callers of the earlier API)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch.nn.functional as F

from gradkit.stats import compare_paired, interval_change, plateau_test
from gradkit.training.loop import evaluate
from gradkit.training.short import train_short

__all__ = ["convergence", "converged_stop", "diagnose", "diagnose_converged", "mean_interval",
           "per_clip_loss", "train_until_converged", "training_trend"]


def training_trend(train_loss: Sequence[float], last: int = 10, alpha: float = 0.05) -> str:
    """:func:`gradkit.stats.plateau_test` of a training-loss curve (lower is better):
    ``"still improving"``, ``"plateaued"`` or ``"getting worse"`` over its last ``last``
    epochs; ``"too short to test"`` with fewer than 3 epochs."""
    if len(train_loss) < 3:
        return "too short to test"
    return plateau_test(list(train_loss), last=min(last, len(train_loss)),
                        higher_is_better=False, alpha=alpha).verdict


def diagnose(names: Sequence[str], depths: Sequence[int], train_loss: Sequence[float],
             val_loss: Sequence[float], bias_level: float, gap_level: float,
             trends: Sequence[str] | None = None) -> list[str]:
    """The notes' decision recipe, one verdict per model (listed shallow to deep).

    - **under-trained**: the model's training loss is still falling (``trends[i]`` from
      :func:`training_trend` is ``"still improving"``): no verdict until it has plateaued; a
      deeper model is also not compared with an under-trained shallower one.
    - **optimisation**: a deeper (trained) model reaches a *higher* training loss than a
      shallower trained one. A deeper model can represent everything the shallower one can
      (its extra blocks could be identities), so its higher loss is the optimiser's failure,
      not a lack of flexibility and not overfitting (that shows on *validation* data).
    - **model bias**: the training loss stays above ``bias_level`` (e.g. a share of the
      chance-level loss) and no shallower model did better.
    - **overfitting**: training loss low but ``val_loss − train_loss > gap_level``.
    - **fine** otherwise.
    """
    n = len(names)
    trends = list(trends) if trends is not None else ["plateaued"] * n
    if not n == len(depths) == len(train_loss) == len(val_loss) == len(trends):
        raise ValueError("names, depths, train_loss, val_loss and trends must have one entry "
                         "per model")
    trained = [t != "still improving" for t in trends]
    return [_verdict(i, names, depths, train_loss, val_loss, trained, bias_level, gap_level)
            for i in range(n)]


def _verdict(i, names, depths, train_loss, val_loss, trained, bias_level, gap_level) -> str:
    if not trained[i]:
        return (f"{names[i]}: under-trained — training loss {train_loss[i]:.3f} is still "
                f"falling; train to a plateau before the recipe decides")
    shallower = [j for j in range(len(names)) if depths[j] < depths[i] and trained[j]]
    best = min(shallower, key=lambda j: train_loss[j], default=None)
    if best is not None and train_loss[i] > train_loss[best]:
        return (f"{names[i]}: optimisation — training loss {train_loss[i]:.3f} is higher than "
                f"{train_loss[best]:.3f} of the shallower '{names[best]}'")
    if train_loss[i] > bias_level:
        return (f"{names[i]}: model bias — training loss {train_loss[i]:.3f} > "
                f"{bias_level:.3f} after it plateaued")
    if val_loss[i] - train_loss[i] > gap_level:
        return (f"{names[i]}: overfitting — validation loss {val_loss[i]:.3f} exceeds "
                f"training loss {train_loss[i]:.3f} by more than {gap_level:.3f}")
    return (f"{names[i]}: fine — training loss {train_loss[i]:.3f}, validation loss "
            f"{val_loss[i]:.3f}")


def convergence(train_loss: Sequence[float], window: int = 10, tol: float = 0.01,
                alpha: float = 0.05) -> str:
    """Has a training-loss curve converged? ``"converged"`` when, over its last ``window``
    epochs, :func:`gradkit.stats.plateau_test` sees no improvement, or when it still falls but
    its slope's interval bounds the fall over another ``window`` epochs to less than ``tol``
    (a loss creeping from 0.002 to 0.001 is converged for the recipe's purpose, though its
    slope is detectably negative); ``"not converged"`` otherwise; ``"too short to test"``
    before ``window`` epochs."""
    if len(train_loss) < max(window, 3):
        return "too short to test"
    test = plateau_test(list(train_loss), last=window, higher_is_better=False, alpha=alpha)
    if test.verdict != "still improving" or -test.ci[0] * window < tol:
        return "converged"
    return "not converged"


def converged_stop(window: int = 10, tol: float = 0.01, min_epochs: int = 10):
    """A ``stop`` for :func:`gradkit.training.train_short`: True once the ``train_loss``
    column has :func:`convergence` ``"converged"`` after at least ``min_epochs`` epochs."""
    def stop(rows) -> bool:
        return (len(rows) >= min_epochs
                and convergence(rows["train_loss"].to_numpy(), window, tol) == "converged")
    return stop


def mean_interval(values: Sequence[float], alpha: float = 0.05) -> tuple[float, tuple[float,
                                                                                      float]]:
    """The mean of per-clip losses and its t-interval at ``1 - alpha`` (the one-sample t-test
    of :func:`gradkit.stats.compare_paired` against zero): ``(mean, (low, high))``."""
    v = np.asarray(values, dtype=float)
    r = compare_paired(v, np.zeros_like(v), higher_is_better=False, alpha=alpha)
    return r.diff, (float(r.ci[0]), float(r.ci[1]))


def diagnose_converged(names: Sequence[str], depths: Sequence[int],
                       train_losses: Sequence[Sequence[float]],
                       val_losses: Sequence[Sequence[float]], states: Sequence[str],
                       bias_level: float, gap_level: float, alpha: float = 0.05) -> list[str]:
    """The notes' recipe on per-clip losses, one verdict per model (listed shallow to deep).

    ``train_losses[i]`` / ``val_losses[i]``: model ``i``'s loss on every training / validation
    clip (the training clips are the same for every model, so two models pair up clip by clip);
    ``states[i]``: :func:`convergence` of its training curve.

    - **under-trained**: not converged, its training loss is still falling (no verdict);
    - **optimisation**: the model converged, and its mean training loss is detectably *higher*
      than a shallower model's, paired by clip (:func:`gradkit.stats.compare_paired`,
      ``"worse"``): a deeper model can represent everything the shallower one can, so this is
      the optimiser's failure, not overfitting. The shallower model need not have converged:
      training on would only lower its loss, so its current loss is a conservative reference;
    - **model bias**: the training loss's interval lies above ``bias_level``;
    - **overfitting**: the validation loss's interval lies above the training loss's
      (:func:`gradkit.stats.interval_change`) by more than ``gap_level`` in the means;
    - **fine** otherwise. Every loss is stated with its 95 % interval.
    """
    n = len(names)
    if not n == len(depths) == len(train_losses) == len(val_losses) == len(states):
        raise ValueError("names, depths, train_losses, val_losses and states must have one "
                         "entry per model")
    train = [mean_interval(t, alpha) for t in train_losses]
    val = [mean_interval(v, alpha) for v in val_losses]
    text = lambda e: f"{e[0]:.3f} [{e[1][0]:.3f}, {e[1][1]:.3f}]"  # noqa: E731
    out = []
    for i in range(n):
        if states[i] != "converged":
            out.append(f"{names[i]}: under-trained — {states[i]} at its epoch cap, training "
                       f"loss {text(train[i])}; no verdict")
            continue
        worse = [(j, compare_paired(train_losses[i], train_losses[j], higher_is_better=False,
                                    alpha=alpha)) for j in range(n) if depths[j] < depths[i]]
        worse = [(j, r) for j, r in worse if r.verdict == "worse"]
        if worse:
            j, r = max(worse, key=lambda jr: jr[1].diff)
            out.append(f"{names[i]}: optimisation — training loss {text(train[i])} is higher "
                       f"than that of the shallower '{names[j]}', {text(train[j])} (paired by "
                       f"clip, +{r.diff:.3f} [{r.ci[0]:.3f}, {r.ci[1]:.3f}], n = {r.n})")
        elif train[i][1][0] > bias_level:
            out.append(f"{names[i]}: model bias — training loss {text(train[i])} stays above "
                       f"{bias_level:.3f} after it converged")
        elif (interval_change(train[i], val[i]) == "higher"
              and val[i][0] - train[i][0] > gap_level):
            out.append(f"{names[i]}: overfitting — validation loss {text(val[i])} lies above "
                       f"training loss {text(train[i])} by more than {gap_level:.3f}")
        else:
            out.append(f"{names[i]}: fine — training loss {text(train[i])}, validation loss "
                       f"{text(val[i])}")
    return out


def per_clip_loss(model, x, y) -> np.ndarray:
    """Every clip's cross-entropy under ``model`` in evaluation mode (its class logits: the
    first output of a ``(logits, score)`` model), as numpy: what :func:`diagnose_converged`
    reads."""
    def measure():
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        return F.cross_entropy(logits, y, reduction="none").numpy()
    return evaluate(model, measure)


def train_until_converged(model, split, min_epochs: int, max_epochs: int, batch_size: int,
                          lr: float, window: int = 10, tol: float = 0.01):
    """:func:`gradkit.training.train_short` of ``model`` (in place) for at least
    ``min_epochs`` and then until :func:`convergence` says ``"converged"``, at most
    ``max_epochs``. Returns ``(history, {"train": per-clip losses, "val": ...})``."""
    history = train_short(model, split, max(min_epochs, max_epochs), batch_size, lr,
                          stop=converged_stop(window, tol, min_epochs))
    losses = {part: per_clip_loss(model, x, y) for part, x, y in (
        ("train", split.x_train, split.y_train), ("val", split.x_val, split.y_val))}
    return history, losses
