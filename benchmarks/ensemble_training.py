"""Time the vectorised ensemble of notebook 01 against the loop of separate runs.

``python benchmarks/ensemble_training.py [epochs] [rounds]`` trains the 15 (seed, fold) runs of
one objective (5 seeds × 3 folds of plastic / 3000 Hz, the notebook's default design) for
``epochs`` epochs, once as one ensemble (:func:`gradkit.training.ensemble.train_ensemble`) and
once as 15 separate runs of :func:`gradkit.training.state.train_epoch` + ``evaluate`` (what
``get_run`` does, without its checkpoint files), both single-threaded, alternating in
``rounds`` rounds so that a slow spell of the shared machine hits both. Prints wall and CPU
seconds (``time.process_time``: less sensitive to the other processes) per round, and the
largest difference of any logged metric between the two.
"""

from __future__ import annotations

import sys
import time

import pandas as pd
import torch

from gradkit.data.folds import fold_splits, load_features
from gradkit.training import TrainConfig
from gradkit.training.ensemble import Member, train_ensemble
from gradkit.training.state import evaluate_state, new_state, train_epoch

SEEDS = (42, 0, 1, 2, 3)
COLUMNS = ["train_loss", "train_raw_loss", "train_ghm_loss", "val_raw_loss", "val_ghm_loss"]


def loop(config: TrainConfig, members: list[Member]) -> pd.DataFrame:
    rows = []
    for mb in members:
        cfg = TrainConfig(**{**config.to_dict(), "seed": mb.seed})
        state = new_state(cfg, mb.split, torch.device("cpu"), None)
        d = {k: getattr(mb.split, k) for k in ("x_train", "y_train", "x_val", "y_val")}
        d["angles_train"] = mb.split.angles_train.float()
        val_angles = mb.split.angles_val.float()
        for epoch in range(1, cfg.epochs + 1):
            row, _ = train_epoch(state, d, epoch)
            val = evaluate_state(state, d["x_val"], d["y_val"], val_angles)
            rows.append({"seed": mb.seed, "fold": mb.fold, **row, **val})
    return pd.DataFrame(rows)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(epochs: int = 5, rounds: int = 2) -> None:
    torch.set_num_threads(1)
    data = load_features("plastic", 3000)
    members = [Member(s, f, split) for s in SEEDS
               for f, split in enumerate(fold_splits(data, 3, s).splits)]
    config = TrainConfig(objective="ghm", epochs=epochs)
    for r in range(rounds):
        ens, ens_wall, ens_cpu = timed(lambda: train_ensemble(config, members).metrics)
        sep, sep_wall, sep_cpu = timed(lambda: loop(config, members))
        key = ["seed", "fold", "epoch"]
        both = ens.merge(sep, on=key, suffixes=("_ens", "_sep"))
        gap = max(float((both[f"{c}_ens"] - both[f"{c}_sep"]).abs().max()) for c in COLUMNS)
        print(f"round {r}: {len(members)} runs x {epochs} epochs: ensemble {ens_wall:.1f} s wall "
              f"/ {ens_cpu:.1f} s CPU, separate runs {sep_wall:.1f} s / {sep_cpu:.1f} s CPU "
              f"(x{sep_cpu / ens_cpu:.2f} CPU); largest metric gap {gap:.1e}", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
