"""The smoke parameter set: the five notebooks, every cell, in a short time.

``notebooks/smoke.toml`` holds, per notebook, the overrides of its ``parameters`` cell that the
test tier injects (:mod:`gradkit.report.parameters`, the papermill way): a short epoch cap, fewer
seeds and folds. ``python -m gradkit.report --smoke`` (what ``make test`` runs) executes the
notebooks with them into :data:`SMOKE_OUTPUT` (``build/smoke/``: figures, reports, training
runs; :func:`gradkit.core.paths.output_root`), so smoke reports never overwrite or pass for the
full reports of ``make report``. The unit tests read those reports (``tests/conftest.py`` points
``GRADKIT_OUTPUT`` there).

Example::

    >>> from gradkit.report.smoke import smoke_parameters
    >>> smoke_parameters()["01_train_ghm"]["FOLDS"]
    2
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gradkit.core.paths import project_root

#: Where the smoke outputs go, relative to the project root (``GRADKIT_OUTPUT``).
SMOKE_OUTPUT = "build/smoke"


def smoke_file() -> Path:
    return project_root() / "notebooks" / "smoke.toml"


def smoke_parameters(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """``{notebook stem: {NAME: value}}`` from ``notebooks/smoke.toml``, checked: every section
    names a notebook there and every name is one its ``parameters`` cell assigns (a typo would
    otherwise be injected silently and change nothing)."""
    import nbformat

    from gradkit.report.parameters import declared_parameters

    path = path or smoke_file()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"cannot read the smoke parameter set {path}: {err}") from err
    for stem, overrides in table.items():
        notebook = path.parent / f"{stem}.ipynb"
        if not notebook.is_file():
            raise ValueError(f"{path}: section [{stem}] names no notebook ({notebook} missing)")
        declared = set(declared_parameters(nbformat.read(notebook, as_version=4)))
        unknown = sorted(set(overrides) - declared)
        if unknown:
            raise ValueError(f"{path}: [{stem}] sets {unknown}, which {notebook.name}'s "
                             f"'parameters' cell does not assign (it assigns {sorted(declared)})")
    return table
