"""``make report``: execute the notebooks in order and export self-contained HTML reports.

Each notebook runs in a fresh ``gradkit`` kernel with ``GRADKIT_REPORT=1`` (scrubbers then render
as kernel-free players, see :mod:`gradkit.viz.scrubber`), from the ``notebooks/`` folder like
Jupyter would. Its HTML goes to ``reports/<name>.html`` with every image inline and no external
script: widget state is dropped (there is no kernel behind a report) and the MathJax tag is left
out, so a report opens with the network off. ``reports/index.html`` links them with each notebook's
headline numbers (:mod:`gradkit.report.headlines`) and run time. A notebook that fails keeps its
previous report; the command prints the failing cell and the exception, the index marks it
failed with a clean traceback and shows the kept report as stale (:mod:`gradkit.report.index`),
and the command exits non-zero.

``--data FOLDER --material NAME --freq HZ`` runs the workbook on another condition, ``--param
NAME=VALUE`` overrides any notebook parameter (:mod:`gradkit.report.parameters`: the injected
``parameters`` cell, the condition's own ``figures/<name>/`` and ``reports/<name>/``). A data
folder is preflighted first (:func:`gradkit.data.preflight`): nothing runs on bad data.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import nbformat

from gradkit.core.io import atomic_write_text
from gradkit.core.paths import OUTPUT_ENV, build_dir, project_root, reports_dir
from gradkit.report.export import strip_widgets, to_html
from gradkit.report.headlines import collect_headlines
from gradkit.report.index import (
    NotebookResult,
    describe_failure,
    keep_previous,
    previous_results,
)
from gradkit.report.parameters import (
    Condition,
    active,
    add_arguments,
    from_arguments,
    inject_active,
    notebook_parameters,
    select_notebooks,
    write_indexes,
)

KERNEL = "gradkit"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def notebook_paths() -> list[Path]:
    """The numbered notebooks, in the order they run."""
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def execute(path: Path, timeout: int = 900):
    """Run one notebook top to bottom in report mode; returns the executed notebook."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    inject_active(nb, path.stem)  # the parameters of build_reports' condition, if any
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout,
                            resources={"metadata": {"path": str(path.parent)}})
    previous = os.environ.get("GRADKIT_REPORT")
    os.environ["GRADKIT_REPORT"] = "1"  # inherited by the kernel
    try:
        client.execute()
    finally:
        if previous is None:
            os.environ.pop("GRADKIT_REPORT", None)
        else:
            os.environ["GRADKIT_REPORT"] = previous
    return nb


def run_notebook(path: Path, out_dir: Path, executed_dir: Path) -> NotebookResult:
    name = path.stem
    start = time.perf_counter()
    print(f"[report] {name}: executing …", flush=True)
    try:
        nb = execute(path)
    except Exception as err:  # keep going: the index shows what failed, the old report stays
        seconds = time.perf_counter() - start
        failure = describe_failure(path, err)
        lines = failure.lines(name)
        lines[0] = lines[0].replace("FAILED", f"FAILED after {seconds:.0f} s", 1)
        print("\n".join(f"[report] {line}" for line in lines), flush=True)
        return NotebookResult(name, name, seconds, ok=False, error=failure.traceback,
                              failed_cell=failure.cell, failed_source=failure.source)
    seconds = time.perf_counter() - start
    strip_widgets(nb)
    nbformat.write(nb, str(executed_dir / path.name))
    atomic_write_text(out_dir / f"{name}.html", to_html(nb, where=str(path)))
    print(f"[report] {name}: {seconds:.0f} s -> {out_dir / (name + '.html')}", flush=True)
    return NotebookResult(name, _title(nb) or name, seconds, ok=True,
                          headlines=collect_headlines(nb),
                          report_date=time.strftime("%Y-%m-%d %H:%M"))


def build_reports(only: list[str] | None = None, *, condition: Condition | None = None,
                  parameters: dict | None = None, smoke: bool = False) -> list[NotebookResult]:
    """Execute the notebooks (all, or those whose names contain one of ``only``) and export.

    ``condition`` (:func:`gradkit.report.parameters.resolve_condition`; ``None``: the default)
    runs the notebooks that read recordings on it, after its preflight, into its own folders;
    ``parameters`` are injected into each notebook's ``parameters`` cell. ``smoke`` injects the
    smoke parameter set first and writes into ``build/smoke/`` (:mod:`gradkit.report.smoke`).
    """
    if smoke:
        return _smoke(build_reports, only, condition=condition, parameters=parameters)
    paths = [p for p in notebook_paths() if not only or any(o in p.stem for o in only)]
    paths = select_notebooks(paths, condition)
    with active(notebook_parameters(condition, parameters), condition and condition.name,
                by_notebook=_SMOKE_SET.get("set")):
        out_dir = reports_dir()
        executed_dir = build_dir() / "executed" / (condition.name if condition else "")
        executed_dir.mkdir(parents=True, exist_ok=True)
        results = [run_notebook(p, out_dir, executed_dir) for p in paths]
    # A partial run (``only``) keeps the other notebooks' entries from the last run; a failed
    # notebook keeps its previous report and headline numbers, marked stale.
    entries = {r.name: r for r in previous_results(out_dir)}
    for r in results:
        keep_previous(r, entries.get(r.name), out_dir / f"{r.name}.html")
    entries.update({r.name: r for r in results})
    ordered = [entries[p.stem] for p in notebook_paths() if p.stem in entries]
    atomic_write_text(out_dir / "index.json",
                      json.dumps([asdict(r) for r in ordered], indent=1, ensure_ascii=False))
    top = write_indexes(out_dir, ordered, condition, parameters)
    print(f"[report] index -> {out_dir / 'index.html'}" + (f", {top}" if condition else ""))
    for r in results:
        print(f"[report] {r.name:<28} {'ok' if r.ok else 'FAILED':<6} {r.seconds:6.0f} s")
    return results


_SMOKE_SET: dict[str, dict] = {}


def _smoke(build, *args, **kwargs) -> list[NotebookResult]:
    """``build(*args, **kwargs)`` with the smoke parameter set, its outputs in ``build/smoke/``
    (an output folder already chosen by ``GRADKIT_OUTPUT`` is kept)."""
    from gradkit.report.smoke import SMOKE_OUTPUT, smoke_parameters

    previous = os.environ.get(OUTPUT_ENV)
    os.environ.setdefault(OUTPUT_ENV, SMOKE_OUTPUT)
    _SMOKE_SET["set"] = smoke_parameters()
    print(f"[report] smoke parameter set (notebooks/smoke.toml) -> {reports_dir(create=False)}",
          flush=True)
    try:
        return build(*args, **kwargs)
    finally:
        _SMOKE_SET.clear()
        if previous is None:
            os.environ.pop(OUTPUT_ENV, None)


def main(argv: list[str] | None = None) -> int:
    from gradkit.data import DataError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only notebooks whose name contains this")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        condition, parameters = from_arguments(args)  # bad arguments or folder: ValueError
        results = build_reports(args.only or None, condition=condition, parameters=parameters,
                                smoke=args.smoke)
    except (DataError, ValueError) as err:  # raised before any notebook runs
        print(f"[report] refused: {err}", flush=True)
        return 2
    return 0 if all(r.ok for r in results) else 1
