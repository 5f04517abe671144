"""Where things live. Everything resolves from the project root, never the working directory.

nbmake and nbconvert run a notebook with ``notebooks/`` as its working directory, so a relative
``figures/`` would land in the wrong place. Set ``GRADKIT_ROOT`` to use another root.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The folder that holds ``gradkit/``, ``notebooks/`` and ``pyproject.toml``."""
    override = os.environ.get("GRADKIT_ROOT")
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parents[2]  # gradkit/core/paths.py -> the root


def _subdir(name: str, create: bool) -> Path:
    path = project_root() / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(create: bool = True) -> Path:
    """``<root>/data``: the default data set and the user's own recordings."""
    return _subdir("data", create)


def checkpoints_dir(create: bool = True) -> Path:
    """``<root>/checkpoints``: training runs, one folder per material/frequency/objective."""
    return _subdir("checkpoints", create)


def figures_dir(create: bool = True) -> Path:
    """``<root>/figures``: every figure, under the file names of the original reports."""
    return _subdir("figures", create)


def reports_dir(create: bool = True) -> Path:
    """``<root>/reports``: the HTML reports exported by ``make report``."""
    return _subdir("reports", create)
