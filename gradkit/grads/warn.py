"""Warnings of :mod:`gradkit.grads` reported at the user's line, not at gradkit's.

A fixed ``stacklevel`` is wrong as soon as a warning is raised at a different call depth (a
fallback inside a chunk, a check inside the pass), or when gradkit calls itself (an analysis
calling :func:`~gradkit.grads.per_sample_grads`): :func:`warn_user` counts the frames up to the
first one outside the ``gradkit`` package and warns there.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

__all__ = ["warn_user"]

_PACKAGE = str(Path(__file__).resolve().parents[1])  # .../gradkit


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside the gradkit package, counted from the
    caller of :func:`warn_user` (level 1)."""
    frame, level = sys._getframe(2), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(
            _PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def warn_user(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """``warnings.warn(message, category)`` at the user's line (module docstring)."""
    warnings.warn(message, category, stacklevel=_user_stacklevel() + 1)
