"""The notes' recipe: model bias, optimisation or overfitting — decided only on trained models."""

from __future__ import annotations

from collections.abc import Sequence

from gradkit.stats import plateau_test

__all__ = ["diagnose", "training_trend"]


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
