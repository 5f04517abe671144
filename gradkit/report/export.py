"""A notebook as a self-contained HTML report that reads as a report, offline.

- every image inline, widget state dropped (:func:`strip_widgets`), no ``<script src=…>``;
- the markdown's LaTeX (``$…$`` inline, ``$$…$$`` display) turned into MathML at export time
  (``latex2mathml``), which the browser renders natively: no MathJax, no network. Only markdown
  cells are read, and in them neither fenced code nor ``code spans``; a ``$`` that cannot open
  or close a formula (``$5 and $10``, ``\\$``) stays text (:func:`find_math`);
- code cells collapsed behind a "code" toggle (``<details>``: the input is still in the page);
- outputs bounded by the page: a wide table scrolls inside its own output area, images shrink.
"""

from __future__ import annotations

import copy
import html
import re
import warnings

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

__all__ = ["WIDGET_MIME", "find_math", "markdown_math_to_mathml", "strip_widgets", "to_html"]

# A fenced code block, or an inline code span: never searched for formulas.
_CODE = re.compile(r"^([ \t]*)(```+|~~~+)[^\n]*\n.*?(?:^\1?\2[ \t]*$|\Z)"  # fenced
                   r"|(`+)(?:.|\n)*?(?<!`)\3(?!`)",  # a code span
                   re.MULTILINE | re.DOTALL)
_DISPLAY = re.compile(r"(?<!\\)\$\$(.+?)(?<!\\)\$\$", re.DOTALL)
# Inline: the opening $ is followed by a non-space, the closing $ preceded by a non-space and not
# followed by a digit (pandoc's rule), on one line; so "$5 and $10" is no formula.
_INLINE = re.compile(r"(?<![\\$])\$(?![\s$])((?:\\.|[^$\\\n])+?)(?<![\s\\])\$(?![\d$])")
_TOKEN = re.compile(r"GKMATH(\d+)X")
_TAG = re.compile(r"<[^>]+>")

_CSS = """
body.jp-Notebook { max-width: 1280px; margin: 0 auto; box-sizing: border-box; }
.jp-Cell, .jp-OutputArea-child, .jp-OutputArea-output { min-width: 0; max-width: 100%; }
.jp-OutputArea-output { overflow-x: auto; }
.jp-OutputArea-output img, .jp-RenderedMarkdown img { max-width: 100%; height: auto; }
details.gradkit-code > summary { cursor: pointer; color: #666; font: 12px monospace;
  padding: 2px 0; user-select: none; }
details.gradkit-code:not([open]) { margin-bottom: 2px; }
math { font-size: 1.12em; }
math[display="block"] { margin: .6em 0; }
.gradkit-math-error { color: #b00; }
"""

_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block extra_css %}<style type="text/css">""" + _CSS + """</style>{% endblock extra_css %}
{% block input_group -%}
<details class="gradkit-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""


def strip_widgets(nb) -> None:
    """Drop live-widget outputs and widget state: without a kernel they are dead pictures."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            outputs = cell.get("outputs", [])
            cell.outputs = [o for o in outputs if WIDGET_MIME not in o.get("data", {})]


def find_math(markdown: str) -> list[tuple[str, bool]]:
    """The formulas of one markdown text, in order: ``(tex, display)``."""
    return _protect(markdown, [])[1]


def _protect(markdown: str, found: list[tuple[str, bool]]) -> tuple[str, list[tuple[str, bool]]]:
    """``markdown`` with each formula replaced by a token ``GKMATH<n>X`` (n indexes ``found``)."""

    def token(tex: str, display: bool) -> str:
        found.append((tex.strip(), display))
        return f"GKMATH{len(found) - 1}X"

    def in_text(text: str) -> str:
        text = _DISPLAY.sub(lambda m: token(m.group(1), True), text)
        return _INLINE.sub(lambda m: token(m.group(1), False), text)

    pieces, last = [], 0
    for code in _CODE.finditer(markdown):
        pieces += [in_text(markdown[last:code.start()]), code.group(0)]
        last = code.end()
    pieces.append(in_text(markdown[last:]))
    return "".join(pieces), found


def _mathml(tex: str, display: bool, where: str) -> str:
    import latex2mathml.converter

    try:
        return latex2mathml.converter.convert(tex, display="block" if display else "inline")
    except Exception as err:  # never silently wrong: the source stays visible, marked
        warnings.warn(f"{where}: cannot convert the formula {tex!r} to MathML ({err}); "
                      "it is shown as TeX", stacklevel=2)
        return f"<code class='gradkit-math-error'>{html.escape(tex)}</code>"


def markdown_math_to_mathml(nb, where: str = "notebook") -> list[str]:
    """Replace the markdown cells' formulas by tokens; returns the MathML for each token."""
    if any("GKMATH" in c.source for c in nb.cells if c.cell_type == "markdown"):
        raise ValueError(f"{where}: a markdown cell contains the reserved text 'GKMATH'")
    found: list[tuple[str, bool]] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source, _ = _protect(cell.source, found)
    return [_mathml(tex, display, where) for tex, display in found]


def _restore_math(page: str, mathml: list[str]) -> str:
    # In an attribute (a heading's id) a token becomes plain text; elsewhere, the MathML.
    page = _TAG.sub(lambda tag: _TOKEN.sub("math", tag.group(0)), page)
    return _TOKEN.sub(lambda m: mathml[int(m.group(1))], page)


def to_html(nb, where: str = "notebook") -> str:
    """Self-contained HTML: inline images and MathML, collapsed code, no script from outside."""
    import jinja2
    from nbconvert import HTMLExporter

    nb = copy.deepcopy(nb)
    mathml = markdown_math_to_mathml(nb, where)
    exporter = HTMLExporter(
        embed_images=True, exclude_input_prompt=True, exclude_output_prompt=True,
        extra_loaders=[jinja2.DictLoader({"gradkit_report.html.j2": _TEMPLATE})],
        template_file="gradkit_report.html.j2",
    )
    exporter.mathjax_url = ""
    body, _ = exporter.from_notebook_node(nb)
    return _restore_math(_drop_external_scripts(body), mathml)


def _drop_external_scripts(page: str) -> str:
    """Remove ``<script src=...>`` tags: a report must not reach for the network."""
    return re.sub(r"<script[^>]*\ssrc=[\"'][^\"']*[\"'][^>]*>\s*</script>", "", page)
