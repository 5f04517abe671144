"""The workbook on your run: ``python -m gradkit.report --run runs/my_experiment``.

A folder written by :class:`gradkit.track.Tracker` is read (never written: :func:`gradkit.track.
load_run` only reads) by the notebooks whose ``parameters`` cell assigns ``RUN`` (02 and 03),
with ``RUN`` injected as the folder's absolute path. Their reports and figures go to
``reports/<run name>/`` and ``figures/<run name>/`` (the folder's name, or ``--name``), as a
condition's do (:mod:`gradkit.report.parameters`). A folder that is missing, has no
``meta.json`` or no logged Gram matrix is refused before any notebook starts
(:func:`gradkit.analysis.runs.check_run`).

**Which cells run.** A notebook's cells tagged ``run`` read ``RUN``; the others are the
built-in study. The runner executes, for a run, the ``parameters`` cell, the injected one and
the ``run`` cells only; for the study (``RUN = None``) every cell but the ``run`` ones, so the
study's reports are as they were (:func:`select_cells`). Run by hand in Jupyter, the ``run``
cells do nothing while ``RUN`` is ``None``, and with a folder they write their figures to
``figures/<run name>/`` too (:func:`use_run`).

``reports/<run name>/run.json`` records the folder; a name already used for another folder is
refused, never overwritten. ``reports/index.html`` lists every run (:func:`runs_html`): its
name, links to its reports, and the headline numbers of its notebooks.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from gradkit.core.io import atomic_write_text
from gradkit.core.paths import check_condition_name, output_root
from gradkit.report.index import index_html, previous_results

__all__ = ["RUN_FILE", "RUN_TAG", "check_run_target", "runs_html", "select_cells", "use_run",
           "write_run_indexes"]

RUN_TAG = "run"
RUN_FILE = "run.json"
_KEEP = ("parameters", "injected-parameters")


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def select_cells(nb, run: bool) -> int:
    """Keep, for a run, the ``parameters``, injected and ``run`` cells; for the study, every cell
    but the ``run`` ones (module docstring). Returns how many cells were dropped."""
    before = len(nb.cells)
    if run:
        nb.cells = [c for c in nb.cells if RUN_TAG in _tags(c) or any(t in _tags(c) for t in _KEEP)]
    else:
        nb.cells = [c for c in nb.cells if RUN_TAG not in _tags(c)]
    return before - len(nb.cells)


def use_run(folder) -> str:
    """For the run cells executed by hand (Jupyter): send their figures to ``figures/<run
    name>/`` as the runner would (keeping a name the runner already chose through
    ``GRADKIT_CONDITION``); returns that name."""
    import os

    from gradkit.core.paths import CONDITION_ENV

    chosen = os.environ.get(CONDITION_ENV)
    if chosen:
        return check_condition_name(chosen)
    name = check_condition_name(Path(folder).expanduser().resolve().name)
    os.environ[CONDITION_ENV] = name
    return name


def check_run_target(folder, name: str | None = None) -> tuple[Path, str]:
    """``(absolute run folder, output name)``, checked: the folder is a tracked run with a
    logged Gram matrix (``ValueError`` naming the path otherwise), the name a plain folder name
    not already holding the reports of another run folder or of a data condition."""
    from gradkit.analysis.runs import check_run

    path = Path(folder).expanduser().resolve()
    check_run(path)
    name = check_condition_name(name or path.name)
    out = output_root() / "reports" / name
    if (out / "condition.json").is_file():
        raise ValueError(f"reports/{name}/ holds the reports of a data condition: pass --name "
                         f"to name the run's reports (e.g. --name {name}_run)")
    record = out / RUN_FILE
    if record.is_file():
        before = json.loads(record.read_text(encoding="utf-8")).get("run")
        if before != str(path):
            raise ValueError(f"reports/{name}/ holds the reports of run folder {before}, not "
                             f"{path}: pass --name to keep both (e.g. --name {name}_2)")
    return path, name


def write_run_indexes(out_dir: Path, ordered: list, folder: Path, parameters: dict) -> Path:
    """A run's ``index.html`` and ``run.json``, then ``reports/index.html``."""
    from gradkit.report.parameters import with_section, write_top_index

    record = {"run": str(folder), "name": out_dir.name, "parameters": parameters,
              "updated": time.strftime("%Y-%m-%d %H:%M:%S"), "ok": all(r.ok for r in ordered)}
    atomic_write_text(out_dir / RUN_FILE, json.dumps(record, indent=1, default=str) + "\n")
    note = (f"<p>Your run <b>{html.escape(out_dir.name)}</b>: the tracked folder "
            f"<code>{html.escape(str(folder))}</code>; <a href='../index.html'>all reports</a>"
            f"</p>")
    atomic_write_text(out_dir / "index.html", with_section(index_html(ordered), note))
    return write_top_index(out_dir.parent)


def runs_html(reports_root: Path) -> str:
    """The "Your runs" section of ``reports/index.html``: one row per run reported."""
    rows = []
    for record in sorted(reports_root.glob(f"*/{RUN_FILE}")):
        try:
            r = json.loads(record.read_text(encoding="utf-8"))
            results = previous_results(record.parent)
        except (OSError, ValueError):
            continue
        name = html.escape(record.parent.name)
        links = " · ".join(
            (f"<a href='{name}/{html.escape(n.name)}.html'>{html.escape(n.name)}</a>"
             if n.ok or n.stale else html.escape(n.name))
            + ("" if n.ok else " <b style='color:#b00'>failed</b>") for n in results)
        heads = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                        for n in results for k, v in n.headlines.items())
        rows.append(f"<tr><td><a href='{name}/index.html'>{name}</a><br><code>"
                    f"{html.escape(str(r.get('run', '')))}</code></td><td>{links}</td>"
                    f"<td><ul>{heads}</ul></td><td>{html.escape(str(r.get('updated', '')))}"
                    f"</td></tr>")
    if not rows:
        return ""
    return ("<h2>Your runs</h2><p>Notebooks 02 and 03 on folders recorded by "
            "<code>gradkit.track.Tracker</code> (<code>make report RUN=&lt;folder&gt;</code>); "
            "each has its own <code>reports/&lt;name&gt;/</code> and <code>figures/&lt;name&gt;/"
            "</code>.</p><table><tr><th>run</th><th>reports</th><th>headline numbers</th>"
            f"<th>updated</th></tr>{''.join(rows)}</table>")
