"""``reports/index.html``: one row per notebook with its headline numbers and run time.

A notebook that failed keeps its previous report. Its row then says so: the failing cell (its
number among the code cells, ``In [n]`` of a top-to-bottom run, and its first lines), the
exception and a clean traceback (terminal colour codes stripped, :func:`strip_ansi`); the link
goes to the kept report, marked **stale** with that report's date, and the previous run's
headline numbers stay, marked stale too (:func:`keep_previous`).

``index.json`` is shared by every report run on the same folder (a run on some notebooks keeps
the others' entries): :func:`update_index` reads, merges and rewrites it (atomically) as one step
under the reports folder's inter-process lock (:func:`index_lock`), so concurrent runs lose no
entry. The runner updates it as soon as each notebook's report is written, so that the index
tells what is on disk even after the run is interrupted or killed.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from gradkit.core.io import atomic_write_text

__all__ = ["Failure", "NotebookResult", "describe_failure", "index_html", "index_lock",
           "keep_previous", "merge_index", "previous_results", "strip_ansi", "update_index"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_DASHES = re.compile(r"^-{5,}\s*$", re.MULTILINE)


@dataclass
class NotebookResult:
    name: str
    title: str
    seconds: float
    ok: bool
    headlines: dict[str, str] = field(default_factory=dict)
    error: str = ""
    failed_cell: int | None = None    # number among the code cells (1-based), if known
    failed_source: str = ""           # the failing cell's first lines
    report_date: str = ""             # when the linked report was written ("" = no report)
    stale: bool = False               # the linked report and headlines are from an earlier run


@dataclass
class Failure:
    """What went wrong in a notebook: the cell (number among the code cells, first lines),
    the exception (``"ZeroDivisionError: division by zero"``) and the clean traceback."""

    cell: int | None
    source: str
    exception: str
    traceback: str

    def lines(self, name: str) -> list[str]:
        """What the runner prints: notebook, cell, its first lines, the exception."""
        where = f"code cell {self.cell}" if self.cell else "an unknown cell"
        out = [f"{name}: FAILED in {where}:"]
        out += [f"    {line}" for line in self.source.splitlines()]
        out.append(f"  {self.exception}")
        return out


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (IPython colours its tracebacks)."""
    return _ANSI.sub("", text)


def describe_failure(path: Path, err: BaseException, first_lines: int = 3) -> Failure:
    """The failure of notebook ``path`` from nbclient's exception: the failing cell is the one
    whose source nbclient quotes between dashed lines (found again in the notebook file)."""
    text = strip_ansi(str(err)).strip()
    quoted = ""
    parts = _DASHES.split(text, maxsplit=2)
    if len(parts) == 3:
        quoted = parts[1].strip("\n")
    cell = None
    if quoted:
        try:
            nb = nbformat.read(str(path), as_version=4)
            code = [c.source for c in nb.cells if c.cell_type == "code"]
            head = quoted.splitlines()[0]
            cell = next((k for k, s in enumerate(code, 1) if s.strip("\n") == quoted), None) \
                or next((k for k, s in enumerate(code, 1) if s.startswith(head)), None)
        except (OSError, ValueError):
            cell = None
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    exception = f"{ename}: {evalue}" if ename else f"{type(err).__name__}: " + (
        text.splitlines()[0] if text else "")
    source = "\n".join(quoted.splitlines()[:first_lines])
    return Failure(cell, source, strip_ansi(exception), "\n".join(text.splitlines()[-40:]))


def keep_previous(result: NotebookResult, previous: NotebookResult | None, report: Path) -> None:
    """A failed notebook's row: link the kept report (``report``, if it exists) as stale with
    its date, and keep the previous run's title and headline numbers, marked stale."""
    if result.ok or not report.is_file():
        return
    result.stale = True
    result.report_date = (previous.report_date if previous and previous.report_date else
                          time.strftime("%Y-%m-%d %H:%M", time.localtime(report.stat().st_mtime)))
    if previous is not None:
        result.headlines = dict(previous.headlines)
        result.title = previous.title or result.title


def _row(r: NotebookResult) -> str:
    name = html.escape(r.name)
    if r.ok:
        link, status = f"<a href='{name}.html'>{name}</a>", "ok"
    elif r.stale:
        link = f"<a href='{name}.html'>{name}</a>"
        status = (f"<b style='color:#b00'>failed</b><br><span class='stale'>showing the stale "
                  f"report of {html.escape(r.report_date)}</span>")
    else:
        link, status = name, "<b style='color:#b00'>failed</b><br>no report yet"
    mark = f" <span class='stale'>(stale, {html.escape(r.report_date)})</span>" if r.stale else ""
    heads = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}{mark}</li>"
                    for k, v in r.headlines.items())
    error = ""
    if r.error:
        where = f"code cell {r.failed_cell}" if r.failed_cell else "the notebook"
        source = f"<pre class='cell'>{html.escape(r.failed_source)}</pre>" if r.failed_source \
            else ""
        error = (f"<p>failed in {where}:</p>{source}"
                 f"<pre class='traceback'>{html.escape(strip_ansi(r.error))}</pre>")
    return (f"<tr><td>{link}<br>{html.escape(r.title)}</td><td>{status}</td>"
            f"<td>{r.seconds:.0f} s</td><td><ul>{heads}</ul>{error}</td></tr>")


def index_html(results: list[NotebookResult]) -> str:
    """``reports/index.html``: one row per notebook with its headline numbers and run time."""
    rows = [_row(r) for r in results]
    total = sum(r.seconds for r in results)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>gradkit reports</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{border-bottom:1px solid #ddd;padding:.5em;vertical-align:top;text-align:left}}
table{{border-collapse:collapse}} .stale{{color:#a60;font-style:italic}}
pre{{white-space:pre-wrap;font-size:85%}} pre.cell{{background:#f6f6f6}}</style></head>
<body><h1>gradkit reports</h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; notebooks ran in {total:.0f} s in all.</p>
<table><tr><th>notebook</th><th>status</th><th>run time</th><th>headline numbers</th></tr>
{''.join(rows)}</table></body></html>
"""


def previous_results(out_dir: Path) -> list[NotebookResult]:
    """The entries of the last run's ``index.json`` (none if missing or unreadable)."""
    try:
        return [NotebookResult(**entry)
                for entry in json.loads((out_dir / "index.json").read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        return []


@contextlib.contextmanager
def index_lock(reports_root: Path) -> Iterator[None]:
    """Hold the inter-process lock of ``reports_root`` (every condition's index below it). The
    lock file lives in ``build/locks/`` beside it: the reports folder holds only reports, and a
    condition's run leaves the default reports as they were."""
    from gradkit.training.store import folder_lock

    reports_root = Path(reports_root)
    with folder_lock(reports_root.parent / "build" / "locks" / reports_root.name):
        yield


def merge_index(out_dir: Path, results: list[NotebookResult],
                names: list[str] | None = None) -> list[NotebookResult]:
    """Merge ``results`` into ``out_dir/index.json`` and rewrite it atomically; returns its
    entries. A failed result keeps its previous report and numbers (:func:`keep_previous`).
    ``names``: the notebooks, in order (entries of other names are dropped); ``None``: every
    entry, by name. Call it under :func:`index_lock` (or use :func:`update_index`)."""
    entries = {r.name: r for r in previous_results(out_dir)}
    for r in results:
        keep_previous(r, entries.get(r.name), out_dir / f"{r.name}.html")
    entries.update({r.name: r for r in results})
    ordered = [entries[n] for n in (sorted(entries) if names is None else names) if n in entries]
    atomic_write_text(out_dir / "index.json",
                      json.dumps([asdict(r) for r in ordered], indent=1, ensure_ascii=False))
    return ordered


def update_index(out_dir: Path, results: list[NotebookResult], names: list[str] | None = None,
                 reports_root: Path | None = None) -> list[NotebookResult]:
    """:func:`merge_index` under the lock of ``reports_root`` (default ``out_dir``).

    >>> update_index(reports_dir(), [NotebookResult("01_x", "X", 3.0, ok=True)])  # doctest: +SKIP
    """
    with index_lock(reports_root or out_dir):
        return merge_index(out_dir, results, names)
