"""Saving figures: one place, under ``figures/``, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from gradkit.paths import figures_dir


def save_figure(fig: plt.Figure, name: str, dpi: int = 110) -> Path:
    """Write ``fig`` to ``figures/<name>`` (PNG) through a temporary file and a rename.

    A crash half-way through never leaves a truncated PNG where a good one was.
    """
    if Path(name).name != name or not name.endswith(".png"):
        raise ValueError(f"figure name must be a bare '*.png' file name, got {name!r}")
    target = figures_dir() / name
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a figure is for everyone to read
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
