"""The notes' recipe: model bias, optimisation or overfitting?"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["diagnose"]


def diagnose(names: Sequence[str], depths: Sequence[int], train_loss: Sequence[float],
             val_loss: Sequence[float], bias_level: float, gap_level: float) -> list[str]:
    """The notes' decision recipe, one verdict per model (listed shallow to deep).

    - **optimisation**: a deeper model reaches a *higher* training loss than a shallower one.
      A deeper model can represent everything the shallower one can (its extra blocks could
      be identities), so its higher loss is the optimiser's failure, not a lack of flexibility
      and not overfitting (overfitting shows on *validation* data, not training data).
    - **model bias**: the training loss stays above ``bias_level`` (e.g. a share of the
      chance-level loss) and no shallower model did better.
    - **overfitting**: training loss low but ``val_loss − train_loss > gap_level``.
    - **fine** otherwise.
    """
    n = len(names)
    if not n == len(depths) == len(train_loss) == len(val_loss):
        raise ValueError("names, depths, train_loss and val_loss must have the same length")
    verdicts = []
    for i in range(n):
        shallower = [j for j in range(n) if depths[j] < depths[i]]
        best = min(shallower, key=lambda j: train_loss[j], default=None)
        if best is not None and train_loss[i] > train_loss[best]:
            verdicts.append(
                f"{names[i]}: optimisation — training loss {train_loss[i]:.3f} is higher than "
                f"{train_loss[best]:.3f} of the shallower '{names[best]}'")
        elif train_loss[i] > bias_level:
            verdicts.append(f"{names[i]}: model bias (or too little training) — training loss "
                            f"{train_loss[i]:.3f} > {bias_level:.3f}")
        elif val_loss[i] - train_loss[i] > gap_level:
            verdicts.append(f"{names[i]}: overfitting — validation loss {val_loss[i]:.3f} exceeds "
                            f"training loss {train_loss[i]:.3f} by more than {gap_level:.3f}")
        else:
            verdicts.append(f"{names[i]}: fine — training loss {train_loss[i]:.3f}, validation "
                            f"loss {val_loss[i]:.3f}")
    return verdicts
