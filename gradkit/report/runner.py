"""``make report``: execute the notebooks in order and export self-contained HTML reports.

Each notebook runs in a fresh ``gradkit`` kernel with ``GRADKIT_REPORT=1`` (scrubbers then render
as kernel-free players, see :mod:`gradkit.viz.scrubber`), from the ``notebooks/`` folder like
Jupyter would. Its HTML goes to ``reports/<name>.html`` with every image inline and no external
script: widget state is dropped (there is no kernel behind a report) and the MathJax tag is left
out, so a report opens with the network off. ``reports/index.html`` links them with each notebook's
headline numbers (:mod:`gradkit.report.headlines`) and run time. A notebook that fails keeps its
previous report; the index marks it failed and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from gradkit.core.io import atomic_write_text
from gradkit.core.paths import project_root, reports_dir
from gradkit.report.headlines import collect_headlines

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
KERNEL = "gradkit"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def notebook_paths() -> list[Path]:
    """The numbered notebooks, in the order they run."""
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


@dataclass
class NotebookResult:
    name: str
    title: str
    seconds: float
    ok: bool
    headlines: dict[str, str] = field(default_factory=dict)
    error: str = ""


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def strip_widgets(nb) -> None:
    """Drop live-widget outputs and widget state: without a kernel they are dead pictures."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            outputs = cell.get("outputs", [])
            cell.outputs = [o for o in outputs if WIDGET_MIME not in o.get("data", {})]


def execute(path: Path, timeout: int = 900):
    """Run one notebook top to bottom in report mode; returns the executed notebook."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
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


def to_html(nb) -> str:
    """Self-contained HTML: inline images, no widget manager, no CDN MathJax."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(embed_images=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.mathjax_url = ""
    body, _ = exporter.from_notebook_node(nb)
    return _drop_external_scripts(body)


def _drop_external_scripts(page: str) -> str:
    """Remove ``<script src=...>`` tags: a report must not reach for the network."""
    import re

    return re.sub(r"<script[^>]*\ssrc=[\"'][^\"']*[\"'][^>]*>\s*</script>", "", page)


def run_notebook(path: Path, out_dir: Path, executed_dir: Path) -> NotebookResult:
    name = path.stem
    start = time.perf_counter()
    print(f"[report] {name}: executing …", flush=True)
    try:
        nb = execute(path)
    except Exception as err:  # keep going: the index shows what failed, the old report stays
        seconds = time.perf_counter() - start
        message = str(err).strip().splitlines()
        print(f"[report] {name}: FAILED after {seconds:.0f} s", flush=True)
        return NotebookResult(name, name, seconds, ok=False, error="\n".join(message[-20:]))
    seconds = time.perf_counter() - start
    strip_widgets(nb)
    nbformat.write(nb, str(executed_dir / path.name))
    atomic_write_text(out_dir / f"{name}.html", to_html(nb))
    print(f"[report] {name}: {seconds:.0f} s -> {out_dir / (name + '.html')}", flush=True)
    return NotebookResult(name, _title(nb) or name, seconds, ok=True,
                          headlines=collect_headlines(nb))


def index_html(results: list[NotebookResult]) -> str:
    """``reports/index.html``: one row per notebook with its headline numbers and run time."""
    rows = []
    for r in results:
        link = f"<a href='{r.name}.html'>{html.escape(r.name)}</a>"
        status = "ok" if r.ok else "<b style='color:#b00'>failed</b>"
        heads = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                        for k, v in r.headlines.items())
        error = f"<pre>{html.escape(r.error)}</pre>" if r.error else ""
        rows.append(f"<tr><td>{link}<br>{html.escape(r.title)}</td><td>{status}</td>"
                    f"<td>{r.seconds:.0f} s</td><td><ul>{heads}</ul>{error}</td></tr>")
    total = sum(r.seconds for r in results)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>gradkit reports</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{border-bottom:1px solid #ddd;padding:.5em;vertical-align:top;text-align:left}}
table{{border-collapse:collapse}}</style></head>
<body><h1>gradkit reports</h1>
<p>Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; notebooks ran in {total:.0f} s in all.</p>
<table><tr><th>notebook</th><th>status</th><th>run time</th><th>headline numbers</th></tr>
{''.join(rows)}</table></body></html>
"""


def _previous_results(out_dir: Path) -> list[NotebookResult]:
    """The entries of the last run's ``index.json`` (none if missing or unreadable)."""
    try:
        return [NotebookResult(**entry)
                for entry in json.loads((out_dir / "index.json").read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        return []


def build_reports(only: list[str] | None = None) -> list[NotebookResult]:
    """Execute the notebooks (all, or those whose names contain one of ``only``) and export."""
    out_dir = reports_dir()
    executed_dir = project_root() / "build" / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    paths = [p for p in notebook_paths() if not only or any(o in p.stem for o in only)]
    results = [run_notebook(p, out_dir, executed_dir) for p in paths]
    # A partial run (``only``) keeps the other notebooks' entries from the last run.
    entries = {r.name: r for r in _previous_results(out_dir)}
    entries.update({r.name: r for r in results})
    ordered = [entries[p.stem] for p in notebook_paths() if p.stem in entries]
    atomic_write_text(out_dir / "index.json",
                      json.dumps([asdict(r) for r in ordered], indent=1, ensure_ascii=False))
    atomic_write_text(out_dir / "index.html", index_html(ordered))
    print(f"[report] index -> {out_dir / 'index.html'}")
    for r in results:
        print(f"[report] {r.name:<28} {'ok' if r.ok else 'FAILED':<6} {r.seconds:6.0f} s")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only notebooks whose name contains this")
    args = parser.parse_args(argv)
    results = build_reports(args.only or None)
    return 0 if all(r.ok for r in results) else 1

