"""How fast a run learns, apart from where it ends: notebook 01's learning-speed result.

Per run (one (objective, seed, fold) of an ensemble's metrics), :func:`speed_summary` gives

- ``epochs_to_leave_chance``: the first epoch whose validation accuracy is above chance by
  :func:`gradkit.stats.above_chance` (``val_correct`` of ``n_val`` clips against ``1 /
  classes``), and stays above it at the next epoch (one lucky epoch is not leaving chance);
  ``upto + 1`` when that never happens within the first ``upto`` epochs (censored: the run
  did not leave chance in the window; ``left_chance`` says which);
- ``val_acc_area``: the area under the validation-accuracy curve over epochs ``1 … upto``,
  divided by ``upto`` (the mean accuracy over the window, 0 … 1). Every run is read over the
  same window, so runs stopped later are not favoured; ``upto`` must not exceed the shortest
  run (the plateau test's first stop, ``min_epochs``, is the natural window).

Both are compared pair by pair as notebook 01's other metrics are
(:func:`gradkit.analysis.verdicts.compare_objectives`): this is a result about the speed of
learning at the chosen learning rate, labelled as such, not about the trained model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradkit.stats import above_chance

__all__ = ["speed_summary"]


def _left_chance(correct: np.ndarray, n_val: np.ndarray, chance: float, alpha: float
                 ) -> np.ndarray:
    return np.array([above_chance(int(k), int(n), chance, alpha).verdict == "above chance"
                     for k, n in zip(correct, n_val, strict=True)])


def speed_summary(metrics: pd.DataFrame, n_classes: int, upto: int, alpha: float = 0.05
                  ) -> pd.DataFrame:
    """One row per (objective, seed, fold) of ``metrics`` with ``epochs_to_leave_chance``,
    ``left_chance`` and ``val_acc_area`` over epochs ``1 … upto`` (see the module doc)."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if isinstance(upto, bool) or not isinstance(upto, int) or upto < 2:
        raise ValueError(f"upto must be an int >= 2 epochs, got {upto!r}")
    rows = []
    for (objective, seed, fold), run in metrics.groupby(["objective", "seed", "fold"], sort=True):
        run = run.sort_values("epoch")
        window = run[run["epoch"] <= upto]
        if list(window["epoch"]) != list(range(1, upto + 1)):
            raise ValueError(f"run ({objective}, seed {seed}, fold {fold}) does not log every "
                             f"epoch 1 … {upto} (it has {len(window)}); choose a shorter upto")
        above = _left_chance(window["val_correct"].to_numpy(), window["n_val"].to_numpy(),
                             1 / n_classes, alpha)
        stays = above[:-1] & above[1:]
        first = int(np.argmax(stays)) + 1 if stays.any() else upto + 1
        rows.append({"objective": objective, "seed": int(seed), "fold": int(fold),
                     "epochs_to_leave_chance": first, "left_chance": bool(stays.any()),
                     "val_acc_area": float(window["val_acc"].mean())})
    return pd.DataFrame(rows)
