"""The tracker's TensorBoard side (``Tracker(tensorboard=...)``): every finite column of a row
as the scalar ``gradkit/<column>`` and each step's per-sample norms as a histogram, through
``torch.utils.tensorboard`` (the ``tensorboard`` package) or a writer the caller gives."""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor

__all__ = ["Board", "writer_class"]

_NOT_SCALARS = ("step", "session", "gram")


def writer_class(tensorboard):
    """``SummaryWriter`` for ``tensorboard=True``, None for False or a caller's writer; a
    clear error for anything else, or when the package is missing (before any folder is
    made)."""
    if not (isinstance(tensorboard, bool) or all(
            callable(getattr(tensorboard, f, None)) for f in ("add_scalar", "add_histogram"))):
        raise TypeError(f"tensorboard must be True, False or a SummaryWriter, got "
                        f"{type(tensorboard).__name__}")
    if tensorboard is not True:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError("Tracker(tensorboard=True) needs the tensorboard package "
                          "(pip install tensorboard), which torch.utils.tensorboard "
                          f"uses: {err}") from err
    return SummaryWriter


class Board:
    """The writer (:attr:`writer`, None without TensorBoard). One the tracker opens itself
    lives in ``folder/tensorboard``, purged from ``purge_step`` on (events of earlier sessions
    from the restart step on are stale), and is closed by :meth:`close`; a caller's writer is
    left open."""

    def __init__(self, tensorboard, cls, folder: Path, purge_step: int):
        self.writer, self.own = (None if tensorboard is False else tensorboard), False
        if cls is not None:
            self.writer, self.own = cls(log_dir=str(folder / "tensorboard"),
                                        purge_step=purge_step), True

    def row(self, row: dict) -> None:
        if self.writer is None:
            return
        for col, v in row.items():
            if col not in _NOT_SCALARS and isinstance(v, int | float) and math.isfinite(v):
                self.writer.add_scalar(f"gradkit/{col}", v, row["step"])

    def norms(self, norms: Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_histogram("gradkit/per_sample_norm", norms, step)

    def close(self) -> None:
        if self.own:
            self.writer.close()
