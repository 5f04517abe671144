"""Where things live. Everything resolves from the project root, never the working directory.

nbmake and nbconvert run a notebook with ``notebooks/`` as its working directory, so a relative
``figures/`` would land in the wrong place. Set ``GRADKIT_ROOT`` to use another root.

**Conditions.** The workbook's default outputs (the synthetic set's plastic / 3000 Hz condition)
are ``figures/`` and ``reports/``. A report of another condition (``python -m gradkit.report
--data … --material … --freq …``) sets ``GRADKIT_CONDITION=<material>_<freq>hz`` for its kernels:
:func:`figures_dir` and :func:`reports_dir` are then ``figures/<condition>/`` and
``reports/<condition>/`` (same file names inside), so no condition overwrites another's outputs.

**Output root.** ``figures/``, ``reports/``, ``checkpoints/`` and ``build/`` live under
:func:`output_root`: the project root, or the folder ``GRADKIT_OUTPUT`` names. The test tier's
smoke reports (``python -m gradkit.report --smoke``) go to ``build/smoke/`` this way, so they
never overwrite or pass for the full reports of ``make report``. The data stay under the root.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: The environment variable naming the condition whose outputs are being written.
CONDITION_ENV = "GRADKIT_CONDITION"
#: The environment variable naming another folder for the outputs (figures, reports, runs).
OUTPUT_ENV = "GRADKIT_OUTPUT"
_CONDITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def package_dir() -> Path:
    """The ``gradkit/`` package folder, found from this module's dotted name.

    Why not a fixed count of parent folders: when this module moved into ``core/`` the count
    went stale, the "root" became the package itself, and the data set and figures were written
    inside ``gradkit/``.
    """
    return Path(__file__).resolve().parents[__name__.count(".") - 1]


def project_root() -> Path:
    """The folder that holds ``gradkit/``, ``notebooks/`` and ``pyproject.toml``, or
    ``GRADKIT_ROOT`` (an absolute path) when set.

    Never the working directory, and never the package folder or a folder inside it: every
    output (``data/``, ``figures/``, ``reports/``, ``checkpoints/``) lives under this root, and
    nothing generated may land in the package. A relative ``GRADKIT_ROOT`` is refused: it would
    name a different folder from each working directory (a notebook runs in ``notebooks/``).
    """
    package = package_dir()
    override = os.environ.get("GRADKIT_ROOT")
    if override:
        given = Path(override).expanduser()
        if not given.is_absolute():
            raise ValueError(f"GRADKIT_ROOT must be an absolute path, got {override!r} (a "
                             f"relative one depends on the working directory)")
        root = given.resolve()
    else:
        root = package.parent
    if root == package or package in root.parents:
        raise ValueError(f"the project root {root} lies inside the package folder {package}: "
                         f"outputs never go into the package; set GRADKIT_ROOT to a folder "
                         f"outside it")
    return root


def output_root() -> Path:
    """The folder that holds ``figures/``, ``reports/``, ``checkpoints/`` and ``build/``: the
    project root, or ``GRADKIT_OUTPUT`` (relative to the project root) where it is set."""
    override = os.environ.get(OUTPUT_ENV)
    if not override:
        return project_root()
    return (project_root() / Path(override).expanduser()).resolve()


def _subdir(name: str, create: bool) -> Path:
    path = (project_root() if name == "data" else output_root()) / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def check_condition_name(name: str) -> str:
    """``name`` if it is a plain folder name (letters, digits, ``_ . -``), else ``ValueError``."""
    if not isinstance(name, str) or not _CONDITION.match(name) or name in {".", ".."}:
        raise ValueError(f"a condition name must be a plain folder name like 'wood_1000hz', "
                         f"got {name!r}")
    return name


def condition() -> str | None:
    """The condition named by ``GRADKIT_CONDITION`` (``None``: the default outputs)."""
    name = os.environ.get(CONDITION_ENV) or None
    return None if name is None else check_condition_name(name)


def _condition_subdir(name: str, create: bool) -> Path:
    path = output_root() / name
    cond = condition()
    if cond is not None:
        path = path / cond
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(create: bool = True) -> Path:
    """``<root>/data``: the synthetic default set's parent, and a place for your recordings."""
    return _subdir("data", create)


def synthetic_dir() -> Path:
    """``<root>/data/synthetic``: the generated default set, owned by gradkit (never created
    here: :func:`gradkit.data.ensure_dataset` makes it)."""
    return data_dir(create=False) / "synthetic"


def build_dir(create: bool = True) -> Path:
    """``<output root>/build``: intermediate products (executed notebooks, DDP runs)."""
    return _subdir("build", create)


def checkpoints_dir(create: bool = True) -> Path:
    """``<output root>/checkpoints``: training runs, one folder per material/frequency/objective."""
    return _subdir("checkpoints", create)


def figures_dir(create: bool = True) -> Path:
    """``<output root>/figures`` (or ``figures/<condition>``): every figure, under the file names of
    the original reports."""
    return _condition_subdir("figures", create)


def reports_dir(create: bool = True) -> Path:
    """``<output root>/reports`` (or ``reports/<condition>``): the HTML reports."""
    return _condition_subdir("reports", create)
