"""``reports/index.html``: one row per notebook with its headline numbers and run time."""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NotebookResult", "index_html", "previous_results"]


@dataclass
class NotebookResult:
    name: str
    title: str
    seconds: float
    ok: bool
    headlines: dict[str, str] = field(default_factory=dict)
    error: str = ""


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


def previous_results(out_dir: Path) -> list[NotebookResult]:
    """The entries of the last run's ``index.json`` (none if missing or unreadable)."""
    try:
        return [NotebookResult(**entry)
                for entry in json.loads((out_dir / "index.json").read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        return []


