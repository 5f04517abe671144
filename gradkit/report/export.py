"""A notebook as a self-contained HTML report: inline images, no widget state, no network."""

from __future__ import annotations

import re

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

__all__ = ["WIDGET_MIME", "strip_widgets", "to_html"]


def strip_widgets(nb) -> None:
    """Drop live-widget outputs and widget state: without a kernel they are dead pictures."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            outputs = cell.get("outputs", [])
            cell.outputs = [o for o in outputs if WIDGET_MIME not in o.get("data", {})]


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
    return re.sub(r"<script[^>]*\ssrc=[\"'][^\"']*[\"'][^>]*>\s*</script>", "", page)


