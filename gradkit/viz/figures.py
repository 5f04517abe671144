"""Saving figures: one place, under ``figures/``, written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt

from gradkit.core.io import atomic_write_bytes
from gradkit.core.paths import figures_dir

_written: list[str] = []  # figure names saved in this process, in order


def save_figure(fig: plt.Figure, name: str, dpi: int = 110) -> Path:
    """Write ``fig`` to ``figures/<name>`` (PNG, or SVG for ``*.svg``) through a temporary
    file and a rename.

    A crash half-way through never leaves a truncated PNG where a good one was.
    """
    if Path(name).name != name or Path(name).suffix not in (".png", ".svg"):
        raise ValueError(f"figure name must be a bare '*.png' or '*.svg' file name, got {name!r}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(name).suffix[1:], dpi=dpi, bbox_inches="tight")
    target = figures_dir() / name
    atomic_write_bytes(target, buffer.getvalue())
    _written.append(name)
    return target


def publish(fig: plt.Figure, name: str) -> None:
    """Save ``fig`` as ``figures/<name>``, close it and show that PNG (drawn once, not twice).

    Returns ``None`` so that a cell ending in ``publish(...)`` shows the figure and nothing else
    (no ``Out[n]: PosixPath(...)``); :func:`figures_written` lists what was saved.
    """
    from IPython.display import SVG, Image, display

    path = save_figure(fig, name)
    plt.close(fig)
    display(SVG(filename=str(path)) if path.suffix == ".svg" else Image(filename=str(path)))


def figures_written() -> list[str]:
    """Names of the figures this process saved, in order (a notebook checks its list with it)."""
    return list(_written)
