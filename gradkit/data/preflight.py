"""Preflight: look at a folder of recordings before anything trains on it.

:func:`preflight` reads every clip of one condition and returns one row per class — its clips,
how the split divides them, their sample rates, channels, durations, sample formats and peak
level — or raises one :class:`~gradkit.data.DataError` listing **every** problem found (each
offending file or folder on its own line), not only the first. The table travels with the error
(``err.table``), so a notebook can show what was read next to what was refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gradkit.data.features import log_mel, split_problems
from gradkit.data.recordings import (
    CLIP_SECONDS,
    SAMPLE_RATE,
    condition_dir,
    problems_error,
    scan_condition,
    stratified_split,
)
from gradkit.data.synthetic import data_root

__all__ = ["preflight"]


def _values(series: pd.Series) -> str:
    return ", ".join(str(v) for v in sorted(series.unique()))


def _class_table(files: pd.DataFrame, is_val: np.ndarray, seconds: float) -> pd.DataFrame:
    files = files.assign(val=is_val)
    rows = []
    for name, group in files.groupby("class", sort=True):
        rows.append({
            "class": name, "angle_deg": int(group["angle_deg"].iloc[0]), "clips": len(group),
            "train": int((~group["val"]).sum()), "val": int(group["val"].sum()),
            "sample_rate_hz": _values(group["sample_rate"]),
            "channels": _values(group["channels"]),
            "seconds": f"{group['seconds'].min():.3g}–{group['seconds'].max():.3g}",
            "zero_padded": int((group["seconds"] < seconds).sum()),
            "format": _values(group["subtype"]),
            "peak": float(group["peak"].max()),
        })
    return pd.DataFrame(rows).sort_values("angle_deg").set_index("class")


def preflight(root: str | Path | None, material: str, freq_hz: int, *, seed: int = 42,
              val_fraction: float = 1 / 3, sample_rate: int = SAMPLE_RATE,
              seconds: float = CLIP_SECONDS, follow_links: bool = True) -> pd.DataFrame:
    """One row per class of ``root/<material>/<freq_hz>hz`` (``root=None``: the synthetic set).

    Columns: ``angle_deg``, ``clips`` and their ``train`` / ``val`` counts under the seeded
    stratified split, ``sample_rate_hz``, ``channels``, ``seconds`` (shortest–longest as
    recorded), ``zero_padded`` (clips shorter than ``seconds``, padded with zeros), ``format``
    (sample type), ``peak`` (largest ``|sample|`` of the part used; full scale is 1).
    ``attrs["notes"]``: one line per entry not read, with the reason (hidden or non-WAV files,
    dangling links, folders not named ``deg<angle:03d>``, …), and per symbolic link followed
    out of the data folder; ``attrs["skipped"]`` the paths not read; ``attrs["folder"]`` the
    folder read. ``follow_links=False`` refuses links leading outside the data folder.

    Raises one :class:`DataError` naming every offending file or folder: everything
    :func:`gradkit.data.load_recordings` refuses, a class of fewer than two clips, clips whose
    features are not finite. The error's ``table`` holds the rows of what could be read (and
    the notes).
    """
    root = data_root(root)
    folder = condition_dir(root, material, freq_hz, follow_links)
    rec, problems, notes = scan_condition(root, material, freq_hz, sample_rate, seconds,
                                          follow_links)
    table = pd.DataFrame()
    if rec is not None:
        problems += split_problems(rec, log_mel(rec.waveforms, rec.sample_rate))
        is_val = stratified_split(rec.labels.numpy(), val_fraction, seed)
        table = _class_table(rec.files, is_val, seconds)
    table.attrs["skipped"] = list(rec.skipped) if rec is not None else []
    table.attrs["notes"] = list(notes)
    table.attrs["folder"] = str(folder)
    if problems:
        err = problems_error(folder, problems)
        err.table = table
        raise err
    return table
