"""Notebook parameters and conditions: one workbook, any folder of recordings.

**Parameters** (the papermill convention). A notebook's first code cell tagged ``parameters``
holds its defaults (``DATA_ROOT = None``, ``MATERIAL``, ``FREQ_HZ``, ``EPOCHS``, …); every later
cell derives from them. :func:`inject` inserts, right after that cell, a code cell tagged
``injected-parameters`` that assigns the overrides (``# Parameters`` then ``NAME = value``
lines, as papermill writes it), so the executed notebook and its report show what was changed.
A notebook without a ``parameters`` cell is left as it is; a name that the ``parameters`` cell
does not assign is injected all the same (an unused variable: harmless) and reported.

**Conditions.** A condition is a data folder (``DATA_ROOT``; ``None`` = the synthetic default
set), a material and a probe frequency. The default condition is the synthetic set at
:class:`~gradkit.training.TrainConfig`'s default material and frequency (plastic, 3000 Hz): its
outputs are ``figures/`` and ``reports/``. Any other condition is named ``<material>_<freq>hz``
(or ``--name``) and writes ``figures/<name>/`` and ``reports/<name>/`` (the runner sets
``GRADKIT_CONDITION``, see :mod:`gradkit.core.paths`); only the notebooks whose ``parameters``
cell assigns ``DATA_ROOT`` run per condition (notebook 04 has its own synthetic task). A name
already used by another data folder is refused, never overwritten. ``reports/index.html`` lists
every condition run (:func:`write_top_index`). A notebook run by hand calls
:func:`use_condition` after its ``parameters`` cell to get the same folders.
"""

from __future__ import annotations

import ast
import contextlib
import html
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradkit.core.io import atomic_write_text
from gradkit.core.paths import CONDITION_ENV, check_condition_name, output_root
from gradkit.data import DataError, list_conditions
from gradkit.report.index import index_html, previous_results

__all__ = ["Condition", "active", "active_parameters", "add_arguments", "conditions_html",
           "declared_parameters", "from_arguments", "inject", "inject_active",
           "notebook_parameters", "parameters_cell", "parse_param", "resolve_condition",
           "select_notebooks", "use_condition", "write_indexes", "write_top_index"]

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
CONDITION_FILE = "condition.json"


# ---------------------------------------------------------------------------------------------
# Parameters cells
# ---------------------------------------------------------------------------------------------
def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def parameters_cell(nb) -> int | None:
    """Index of the first code cell tagged ``parameters`` (``None`` if there is none)."""
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and PARAMETERS_TAG in _tags(cell):
            return i
    return None


def declared_parameters(nb) -> list[str]:
    """The names the ``parameters`` cell assigns, in order (empty without one)."""
    i = parameters_cell(nb)
    if i is None:
        return []
    names = []
    for node in ast.parse(nb.cells[i].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def inject(nb, parameters: dict[str, Any]) -> list[str]:
    """Insert the ``injected-parameters`` cell after the ``parameters`` cell (replacing an earlier
    injected one). Returns the injected names the notebook does not declare. Does nothing (and
    returns ``[]``) without parameters or without a ``parameters`` cell."""
    import nbformat

    i = parameters_cell(nb)
    if not parameters or i is None:
        return []
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in _tags(c)]
    i = parameters_cell(nb)
    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": [INJECTED_TAG]})
    nb.cells.insert(i + 1, cell)
    declared = set(declared_parameters(nb))
    return [k for k in parameters if k not in declared]


def parse_param(text: str) -> tuple[str, Any]:
    """``"EPOCHS=4"`` -> ``("EPOCHS", 4)``: the value as a Python literal (``4``, ``[42, 7]``,
    ``None``, ``'x'``), else as the plain string."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ValueError(f"--param needs NAME=VALUE with NAME a Python identifier, got {text!r}")
    try:
        return name, ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return name, value.strip()


_ACTIVE: dict[str, Any] = {}
_BY_NOTEBOOK: dict[str, dict[str, Any]] = {}


@contextlib.contextmanager
def active(parameters: dict[str, Any], condition: str | None,
           by_notebook: dict[str, dict[str, Any]] | None = None) -> Iterator[None]:
    """Within the block, :func:`inject_active` injects ``by_notebook[<notebook stem>]`` (the smoke
    set, :mod:`gradkit.report.smoke`) updated by ``parameters``, and the kernels inherit
    ``GRADKIT_CONDITION=condition`` (restored afterwards, even on failure)."""
    previous_env, previous = os.environ.get(CONDITION_ENV), dict(_ACTIVE)
    previous_by_notebook = dict(_BY_NOTEBOOK)
    if condition is None:
        os.environ.pop(CONDITION_ENV, None)
    else:
        os.environ[CONDITION_ENV] = check_condition_name(condition)
    _ACTIVE.clear()
    _ACTIVE.update(parameters)
    _BY_NOTEBOOK.clear()
    _BY_NOTEBOOK.update(by_notebook or {})
    try:
        yield
    finally:
        _ACTIVE.clear()
        _ACTIVE.update(previous)
        _BY_NOTEBOOK.clear()
        _BY_NOTEBOOK.update(previous_by_notebook)
        if previous_env is None:
            os.environ.pop(CONDITION_ENV, None)
        else:
            os.environ[CONDITION_ENV] = previous_env


def active_parameters(name: str = "") -> dict[str, Any]:
    """What :func:`inject_active` injects into notebook ``name`` (empty outside :func:`active`)."""
    return {**_BY_NOTEBOOK.get(name, {}), **_ACTIVE}


def inject_active(nb, name: str = "") -> None:
    """:func:`inject` the parameters of the enclosing :func:`active` block, saying what it did."""
    parameters = active_parameters(name)
    if not parameters:
        return
    if parameters_cell(nb) is None:
        print(f"[report] {name}: no 'parameters' cell, nothing injected", flush=True)
        return
    extra = inject(nb, parameters)
    print(f"[report] {name}: parameters {', '.join(f'{k}={v!r}' for k, v in parameters.items())}"
          + (f" (not parameters of this notebook, unused: {', '.join(extra)})" if extra else ""),
          flush=True)


# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------
@dataclass
class Condition:
    """A data folder (``None``: the synthetic set), material, frequency and output name."""

    data_root: str | None
    material: str
    freq_hz: int
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def notebook_parameters(self) -> dict[str, Any]:
        return {"DATA_ROOT": self.data_root, "MATERIAL": self.material, "FREQ_HZ": self.freq_hz}


def _default_condition() -> tuple[str, int]:
    from gradkit.training import TrainConfig

    d = TrainConfig()
    return d.material, d.freq_hz


def resolve_condition(data: str | None = None, material: str | None = None,
                      freq_hz: int | None = None, name: str | None = None) -> Condition | None:
    """The condition asked for, checked against the folders present (``None``: the default).

    A missing ``material`` or ``freq_hz`` is taken from the data folder when only one condition
    there matches; otherwise the error lists the conditions found. A ``name`` already used for
    another data folder is refused.
    """
    root = None if data is None else Path(data).expanduser().resolve()
    if root is not None and not root.is_dir():
        raise DataError(f"data folder {root} not found")
    if root is None and material is None and freq_hz is None:
        return None
    found = list_conditions(root)
    match = [c for c in found if material in (None, c[0]) and freq_hz in (None, int(c[1]))]
    if len(match) != 1:
        where = root if root is not None else "the synthetic set"
        raise DataError(f"{'no' if not match else 'several'} condition(s) match material "
                        f"{material!r}, frequency {freq_hz!r} in {where}: found "
                        f"{[f'{m}/{f}hz' for m, f in found]}; pass --material and --freq")
    material, freq_hz = match[0]
    if root is None and (material, freq_hz) == _default_condition() and name is None:
        return None
    cond = Condition(None if root is None else str(root), material, int(freq_hz),
                     check_condition_name(name or f"{material}_{int(freq_hz)}hz"))
    from gradkit.report.runs import RUN_FILE

    if (output_root() / "reports" / cond.name / RUN_FILE).is_file():
        raise ValueError(f"reports/{cond.name}/ holds the reports of a tracked run: pass --name "
                         f"to give this condition another folder (e.g. --name {cond.name}_data)")
    record = output_root() / "reports" / cond.name / CONDITION_FILE
    if record.is_file():
        before = json.loads(record.read_text(encoding="utf-8")).get("data_root")
        if before != cond.data_root:
            raise ValueError(f"reports/{cond.name}/ holds the report of data folder {before}, "
                             f"not {cond.data_root}: pass --name to keep both (e.g. --name "
                             f"{cond.name}_2)")
    return cond


def use_condition(data_root: str | None, material: str, freq_hz: int) -> str | None:
    """For a notebook run by hand (Jupyter, nbmake): send a non-default condition's figures to
    ``figures/<material>_<freq>hz/`` as the runner would, so editing the ``parameters`` cell
    never overwrites the default set's figures. Keeps a condition the runner already chose
    (``GRADKIT_CONDITION`` set); returns the condition name (``None``: the default outputs)."""
    chosen = os.environ.get(CONDITION_ENV)
    if chosen:
        return check_condition_name(chosen)
    if data_root is None and (material, int(freq_hz)) == _default_condition():
        return None
    name = check_condition_name(f"{material}_{int(freq_hz)}hz")
    os.environ[CONDITION_ENV] = name
    return name


def write_condition(cond: Condition, out_dir: Path, results: list) -> None:
    """``reports/<name>/condition.json``: what this condition ran on and how it went."""
    record = {**asdict(cond), "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
              "ok": all(r.ok for r in results)}
    atomic_write_text(out_dir / CONDITION_FILE, json.dumps(record, indent=1) + "\n")


def conditions_html(reports_root: Path) -> str:
    """The "Conditions" section of ``reports/index.html``: one row per condition run."""
    rows = []
    for record in sorted(reports_root.glob(f"*/{CONDITION_FILE}")):
        try:
            c = json.loads(record.read_text(encoding="utf-8"))
            runs = previous_results(record.parent)
        except (OSError, ValueError):
            continue
        n_ok = sum(r.ok for r in runs)
        status = f"{n_ok} of {len(runs)} ok" if n_ok == len(runs) else \
            f"<b style='color:#b00'>{len(runs) - n_ok} of {len(runs)} failed</b>"
        rows.append(
            f"<tr><td><a href='{html.escape(record.parent.name)}/index.html'>"
            f"{html.escape(record.parent.name)}</a></td><td>{html.escape(str(c['material']))}"
            f"</td><td>{int(c['freq_hz'])} Hz</td>"
            f"<td>{html.escape(str(c['data_root'] or 'synthetic set'))}"
            f"</td><td>{status}</td><td>{html.escape(str(c.get('updated', '')))}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Conditions</h2><p>Above: the default condition (the synthetic set). Each "
            "condition below has its own reports and figures (<code>reports/&lt;name&gt;/"
            "</code>, <code>figures/&lt;name&gt;/</code>).</p><table><tr><th>condition</th>"
            "<th>material</th><th>frequency</th><th>data folder</th><th>notebooks</th>"
            f"<th>run</th></tr>{''.join(rows)}</table>")


def with_section(page: str, section: str) -> str:
    """``page`` (an index page) with ``section`` added at the end of its body."""
    return page.replace("</body>", section + "</body>", 1) if section else page


def write_top_index(reports_root: Path) -> Path:
    """``reports/index.html``: the default condition's notebooks, then every condition run and
    every tracked run reported (:func:`gradkit.report.runs.runs_html`)."""
    default = previous_results(reports_root)
    page = index_html(default)
    if not default:
        page = with_section(page, "<p>No run of the default condition yet (<code>make report"
                                  "</code>).</p>")
    from gradkit.report.runs import runs_html

    target = reports_root / "index.html"
    page = with_section(page, conditions_html(reports_root))
    atomic_write_text(target, with_section(page, runs_html(reports_root)))
    return target


# ---------------------------------------------------------------------------------------------
# The runner's plumbing: arguments, which notebooks, the indexes
# ---------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    """``--data``, ``--material``, ``--freq``, ``--run``, ``--name``, ``--param`` of
    ``gradkit.report``."""
    parser.add_argument("--data", metavar="FOLDER", help="folder of recordings (default: the "
                        "synthetic set), laid out <material>/<freq>hz/deg<angle:03d>/*.wav")
    parser.add_argument("--material", help="material folder to analyse")
    parser.add_argument("--freq", type=int, metavar="HZ", help="probe frequency folder, in Hz")
    parser.add_argument("--run", metavar="FOLDER", help="a run folder recorded by gradkit.track."
                        "Tracker: notebooks 02 and 03 on it, into reports/<name>/ and "
                        "figures/<name>/ (name: the folder's, or --name)")
    parser.add_argument("--name", help="output folder name (default <material>_<freq>hz, or "
                        "the run folder's name)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a notebook parameter, e.g. --param EPOCHS=4 (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="the test tier's smoke parameter "
                        "set (notebooks/smoke.toml), outputs in build/smoke/: checks that every "
                        "cell runs; its numbers are not results")


def from_arguments(args) -> tuple[Condition | None, dict[str, Any]]:
    """The condition and parameter overrides of parsed :func:`add_arguments` arguments."""
    parameters = dict(parse_param(p) for p in args.param)
    if "RUN" in parameters:
        raise ValueError("--param RUN=...: give the run folder as --run FOLDER (it is checked "
                         "first and reported in reports/<run name>/, not over the study's)")
    return resolve_condition(args.data, args.material, args.freq, args.name), parameters


def notebook_parameters(condition: Condition | None, parameters: dict | None) -> dict[str, Any]:
    """What to inject: the condition's ``DATA_ROOT``/``MATERIAL``/``FREQ_HZ``, then overrides."""
    return {**(condition.notebook_parameters if condition else {}), **(parameters or {})}


def select_notebooks(paths: list[Path], condition: Condition | None) -> list[Path]:
    """For a condition: print its preflight table (raising :class:`DataError` on bad data) and
    keep the notebooks whose ``parameters`` cell assigns ``DATA_ROOT``."""
    import nbformat

    from gradkit.data import preflight

    if condition is None:
        return paths
    print(preflight(condition.data_root, condition.material, condition.freq_hz).to_string())
    keep = [p for p in paths
            if "DATA_ROOT" in declared_parameters(nbformat.read(p, as_version=4))]
    skipped = [p.stem for p in paths if p not in keep]
    if skipped:
        print(f"[report] not repeated per condition (no DATA_ROOT parameter): {skipped}")
    if not keep:
        raise ValueError(f"none of the notebooks {[p.stem for p in paths]} reads recordings "
                         f"(a cell tagged 'parameters' assigning DATA_ROOT): nothing to run on "
                         f"{condition.name}")
    return keep


def write_indexes(out_dir: Path, ordered: list, condition: Condition | None,
                  parameters: dict | None) -> Path:
    """A condition's ``index.html`` and ``condition.json``, then ``reports/index.html``."""
    if condition is None:
        return write_top_index(out_dir)
    condition.parameters = dict(parameters or {})
    write_condition(condition, out_dir, ordered)
    note = (f"<p>Condition <b>{html.escape(condition.name)}</b>: "
            f"{html.escape(condition.material)}, {condition.freq_hz} Hz, data "
            f"{html.escape(condition.data_root or 'synthetic set')}; "
            f"<a href='../index.html'>all reports</a></p>")
    atomic_write_text(out_dir / "index.html", with_section(index_html(ordered), note))
    return write_top_index(out_dir.parent)
