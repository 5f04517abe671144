"""Headline numbers: a notebook's few key results, shown in place and collected for the index.

A notebook calls ``show_headlines(best_accuracy="87.1 % (epoch 12)", ...)``. The values appear
as a small table in the notebook and travel in the output's metadata, from which
:mod:`gradkit.report` builds ``reports/index.html``: no side files, nothing to keep in sync.
"""

from __future__ import annotations

import html
from typing import Any

METADATA_KEY = "gradkit_headlines"


def headlines_html(values: dict[str, Any]) -> str:
    """The headline values as a two-column HTML table."""
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(str(k))}</th>"
        f"<td>{html.escape(str(v))}</td></tr>"
        for k, v in values.items()
    )
    return f"<table class='gradkit-headlines'>{rows}</table>"


def headline_values(**values: Any) -> dict[str, str]:
    """The names as shown (``best_accuracy`` -> ``best accuracy``), each value as text."""
    return {k.replace("_", " "): str(v) for k, v in values.items()}


def show_headlines(**values: Any) -> None:
    """Display ``values`` (name -> already formatted value) and tag them for the report index.

    Returns ``None``: a cell ending in ``show_headlines(...)`` shows the table once, not the table
    and then the same values again as a raw dict.
    """
    from IPython.display import HTML, display

    values = headline_values(**values)
    display(HTML(headlines_html(values)), metadata={METADATA_KEY: values})


def collect_headlines(notebook) -> dict[str, str]:
    """All headline values found in an executed notebook's outputs (later ones win)."""
    found: dict[str, str] = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            found.update(output.get("metadata", {}).get(METADATA_KEY, {}))
    return found
