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
``--run FOLDER`` runs notebooks 02 and 03 on a run recorded by :class:`gradkit.track.Tracker`
(:mod:`gradkit.report.runs`): checked first, read only, reported in ``reports/<run name>/``.
``--jobs N`` (``make report``: the machine's cores) runs up to ``N`` notebooks at once, each in
a process of its own (:mod:`gradkit.report.jobs`).

Ctrl-C (SIGINT) or SIGTERM stops the run at once (:mod:`gradkit.report.interrupts`): the
running notebook's kernel is killed, no further notebook starts, the command says which notebook
was interrupted and exits with 130 (143 for SIGTERM). The interrupted notebook's previous report
is kept and marked stale, like a failed one's. Each notebook's entry of ``index.json`` is
written with its report, under the reports folder's lock (:func:`gradkit.report.index.
update_index`): concurrent runs lose no entry, and a killed run leaves an index that tells what
is on disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat

from gradkit.core.io import atomic_write_text
from gradkit.core.paths import OUTPUT_ENV, build_dir, output_root, project_root, reports_dir
from gradkit.report.export import strip_widgets, to_html
from gradkit.report.headlines import collect_headlines
from gradkit.report.index import NotebookResult, describe_failure, index_lock, merge_index
from gradkit.report.interrupts import Interrupted, StopOnSignal, execute_stoppably
from gradkit.report.jobs import JOB_ENV, forwarded_arguments, run_jobs
from gradkit.report.parameters import (
    Condition,
    active,
    active_parameters,
    add_arguments,
    declared_parameters,
    from_arguments,
    inject_active,
    notebook_parameters,
    select_notebooks,
    write_indexes,
)
from gradkit.report.runs import check_run_target, select_cells, write_run_indexes

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


def execute(path: Path, timeout: int = 900, stop: StopOnSignal | None = None):
    """Run one notebook top to bottom in report mode; returns the executed notebook. A signal
    that ``stop`` catches (by default one of this call's own) kills the kernel and raises
    :class:`~gradkit.report.interrupts.Interrupted`."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    inject_active(nb, path.stem)  # the parameters of build_reports' condition, if any
    select_cells(nb, run=active_parameters(path.stem).get("RUN") is not None)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=timeout,
                            resources={"metadata": {"path": str(path.parent)}})
    previous = os.environ.get("GRADKIT_REPORT")
    os.environ["GRADKIT_REPORT"] = "1"  # inherited by the kernel
    try:
        with contextlib.nullcontext(stop) if stop else StopOnSignal() as catching:
            execute_stoppably(client, catching)
    finally:
        if previous is None:
            os.environ.pop("GRADKIT_REPORT", None)
        else:
            os.environ["GRADKIT_REPORT"] = previous
    return nb


def run_notebook(path: Path, out_dir: Path, executed_dir: Path, stop: StopOnSignal | None = None,
                 record: Callable[[NotebookResult], object] | None = None) -> NotebookResult:
    """Execute ``path`` and write its report; ``record(result)`` (the index entry) follows the
    report with no signal between them. An interrupt kills the kernel, records the notebook as
    failed (its kept report stale) and raises :class:`Interrupted` naming it."""
    name = path.stem
    record = record or (lambda result: None)
    start = time.perf_counter()
    print(f"[report] {name}: executing …", flush=True)
    try:
        nb = execute(path, stop=stop)
        stop = stop or StopOnSignal()  # not entered: its deferred() only groups the writes
    except Interrupted as stopped:
        stop = stop or StopOnSignal()
        with stop.deferred():
            seconds = time.perf_counter() - start
            stopped.notebook = name
            record(NotebookResult(name, name, seconds, ok=False, error=(
                f"interrupted by {stopped.signal_name} after {seconds:.0f} s, in an unknown "
                f"cell: the run was stopped, its kernel killed")))
        raise
    except Exception as err:  # keep going: the index shows what failed, the old report stays
        stop = stop or StopOnSignal()
        with stop.deferred():
            seconds = time.perf_counter() - start
            failure = describe_failure(path, err)
            lines = failure.lines(name)
            lines[0] = lines[0].replace("FAILED", f"FAILED after {seconds:.0f} s", 1)
            print("\n".join(f"[report] {line}" for line in lines), flush=True)
            result = NotebookResult(name, name, seconds, ok=False, error=failure.traceback,
                                    failed_cell=failure.cell, failed_source=failure.source)
            record(result)
        return result
    with stop.deferred():  # the report and its index entry, both or (killed) the report first
        seconds = time.perf_counter() - start
        strip_widgets(nb)
        nbformat.write(nb, str(executed_dir / path.name))
        atomic_write_text(out_dir / f"{name}.html", to_html(nb, where=str(path)))
        print(f"[report] {name}: {seconds:.0f} s -> {out_dir / (name + '.html')}", flush=True)
        result = NotebookResult(name, _title(nb) or name, seconds, ok=True,
                                headlines=collect_headlines(nb),
                                report_date=time.strftime("%Y-%m-%d %H:%M"))
        record(result)
    return result


def build_reports(only: list[str] | None = None, *, condition: Condition | None = None,
                  parameters: dict | None = None, smoke: bool = False, run=None,
                  name: str | None = None) -> list[NotebookResult]:
    """Execute the notebooks (all, or those whose names contain one of ``only``) and export.

    ``condition`` (:func:`gradkit.report.parameters.resolve_condition`; ``None``: the default)
    runs the notebooks that read recordings on it, after its preflight, into its own folders;
    ``parameters`` are injected into each notebook's ``parameters`` cell. ``smoke`` injects the
    smoke parameter set first and writes into ``build/smoke/`` (:mod:`gradkit.report.smoke`).
    ``run`` (a folder recorded by :class:`gradkit.track.Tracker`) runs the notebooks that read
    one on it, into ``reports/<name>/`` (:mod:`gradkit.report.runs`; ``name``: the folder's).
    """
    with _smoke_outputs() if smoke else contextlib.nullcontext() as by_notebook:
        if run is None:
            return _build(only, condition, parameters, by_notebook)
        if condition is not None:
            raise ValueError("--run and --data/--material/--freq exclude each other: a run "
                             "folder is read as it was recorded")
        folder, name = check_run_target(run, name)
        return _build(only, None, {**(parameters or {}), "RUN": str(folder)}, by_notebook,
                      (folder, name))


def _job_names(args, condition: Condition | None) -> list[str]:
    """The notebooks to run as separate jobs (``--jobs`` above 1, not inside a job): those
    :func:`_build` would run; [] to run them here."""
    if args.jobs < 2 or os.environ.get(JOB_ENV):
        return []
    paths = [p for p in notebook_paths() if not args.only or any(o in p.stem for o in args.only)]
    paths = _run_notebooks(paths) if args.run else select_notebooks(paths, condition)
    return [p.stem for p in paths]


def _run_notebooks(paths: list[Path]) -> list[Path]:
    keep = [p for p in paths if "RUN" in declared_parameters(nbformat.read(p, as_version=4))]
    if not keep:
        raise ValueError(f"none of the notebooks {[p.stem for p in paths]} reads a tracked run "
                         f"(a cell tagged 'parameters' assigning RUN)")
    return keep


def _build(only: list[str] | None, condition: Condition | None, parameters: dict | None,
           by_notebook: dict[str, dict] | None,
           run: tuple[Path, str] | None = None) -> list[NotebookResult]:
    reports_root = output_root() / "reports"
    label = run[1] if run else condition and condition.name
    with StopOnSignal() as stop:
        paths = [p for p in notebook_paths() if not only or any(o in p.stem for o in only)]
        paths = _run_notebooks(paths) if run else select_notebooks(paths, condition)
        with active(notebook_parameters(condition, parameters), label, by_notebook=by_notebook):
            out_dir = reports_dir()
            executed_dir = build_dir() / "executed" / (label or "")
            executed_dir.mkdir(parents=True, exist_ok=True)

            def record(*results: NotebookResult) -> None:
                # Under the lock: read, merge and rewrite index.json, then the index pages. A
                # partial run keeps the other notebooks' entries; a failed notebook its previous
                # report and headline numbers, marked stale.
                with index_lock(reports_root):
                    ordered = merge_index(out_dir, list(results),
                                          [p.stem for p in notebook_paths()])
                    if run:
                        write_run_indexes(out_dir, ordered, run[0], parameters)
                    else:
                        write_indexes(out_dir, ordered, condition, parameters)

            results = []
            try:
                for path in paths:
                    results.append(run_notebook(path, out_dir, executed_dir, stop, record))
                if not paths:
                    record()
            except Interrupted as stopped:
                stopped.told = True
                done = [r.name for r in results]
                left = [p.stem for p in paths if p.stem not in done and p.stem != stopped.notebook]
                where = (f"during {stopped.notebook}" if stopped.notebook else
                         f"after {done[-1]}" if done else "before any notebook ran")
                print(f"[report] interrupted by {stopped.signal_name} {where}: "
                      + ("its kernel was shut down; " if stopped.notebook else "")
                      + "no further notebook runs"
                      + (f" (not run: {', '.join(left)})" if left else "")
                      + f"; index -> {out_dir / 'index.html'}", flush=True)
                raise
    print(f"[report] index -> {out_dir / 'index.html'}"
          + (f", {reports_root / 'index.html'}" if label else ""))
    for r in results:
        print(f"[report] {r.name:<28} {'ok' if r.ok else 'FAILED':<6} {r.seconds:6.0f} s")
    return results


@contextlib.contextmanager
def _smoke_outputs() -> Iterator[dict[str, dict]]:
    """The smoke parameter set, with the outputs in ``build/smoke/`` meanwhile (an output folder
    already chosen by ``GRADKIT_OUTPUT`` is kept)."""
    from gradkit.report.smoke import SMOKE_OUTPUT, smoke_parameters

    previous = os.environ.get(OUTPUT_ENV)
    os.environ.setdefault(OUTPUT_ENV, SMOKE_OUTPUT)
    try:
        by_notebook = smoke_parameters()
        print(f"[report] smoke parameter set (notebooks/smoke.toml) -> "
              f"{reports_dir(create=False)}", flush=True)
        yield by_notebook
    finally:
        if previous is None:
            os.environ.pop(OUTPUT_ENV, None)


def main(argv: list[str] | None = None) -> int:
    from gradkit.data import DataError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only notebooks whose name contains this")
    add_arguments(parser)
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="notebooks run at once, "
                        "each in its own process (make report: the machine's cores)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"[report] refused: --jobs must be at least 1, got {args.jobs}", flush=True)
        return 2
    try:
        with StopOnSignal():
            condition, parameters = from_arguments(args)  # bad arguments or folder: ValueError
            names = _job_names(args, condition)
            if len(names) > 1:
                return run_jobs(names, forwarded_arguments(args), args.jobs)
            results = build_reports(args.only or None, condition=condition,
                                    parameters=parameters, smoke=args.smoke, run=args.run,
                                    name=args.name)
    except (DataError, ValueError) as err:  # raised before any notebook runs
        print(f"[report] refused: {err}", flush=True)
        return 2
    except Interrupted as stopped:  # said where by build_reports, or before any notebook
        if not getattr(stopped, "told", False):
            print(f"[report] {stopped} before any notebook ran", flush=True)
        return stopped.exit_status
    return 0 if all(r.ok for r in results) else 1
