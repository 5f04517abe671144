"""The report export: formulas found only where they are formulas, MathML in their place."""

import re
import warnings

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gradkit.report.export import find_math, to_html


@pytest.mark.parametrize("text, expected", [
    ("rate $\\eta$ and $x_1$.", [("\\eta", False), ("x_1", False)]),
    ("$$\n\\theta = \\eta g\n$$", [("\\theta = \\eta g", True)]),
    ("inline $a$ then $$b$$", [("b", True), ("a", False)][::-1]),
    ("costs $5 and $10 today", []),  # a price opens, but "$10" has a space before its "$"
    ("from $5-$10", []),  # a closing $ before a digit is no closing $
    ("escaped \\$x\\$ stays", []),
    ("spaces $ x $ are text", []),
    ("`code $x$` and\n```\n$y$\n```\nthen $z$", [("z", False)]),
    ("~~~python\nprint('$a$')\n~~~", []),
])
def test_find_math(text, expected):
    assert sorted(find_math(text)) == sorted(expected)


def test_to_html_puts_mathml_in_markdown_only_and_keeps_dollars_elsewhere():
    code = new_code_cell("print('$x$ and $5')")
    code.outputs = [new_output("stream", name="stdout", text="$x$ and $5\n"),
                    new_output("display_data", data={"text/html": "<b>$y$</b>"})]
    nb = new_notebook(cells=[new_markdown_cell("## Step $\\eta$\n\n$$\\frac{a}{b}$$"), code])
    page = to_html(nb)
    assert page.count("<math") == 2 and 'display="block"' in page and "<mfrac>" in page
    assert "GKMATH" not in page, "every placeholder is replaced"
    assert re.search(r'<h2 id="Step-math"', page), "a heading's anchor gets plain text"
    assert "<b>$y$</b>" in page and "$x$ and $5" in page, "outputs are left alone"
    assert nb.cells[0].source.startswith("## Step $\\eta$"), "the notebook itself is unchanged"
    assert '<details class="gradkit-code">' in page and "<details class=\"gradkit-code\" open" \
        not in page
    assert "<script src=" not in page and "mathjax" not in page.lower()


def test_a_formula_latex2mathml_cannot_read_is_shown_as_tex_with_a_warning(monkeypatch):
    import latex2mathml.converter

    def refuse(tex, display):
        raise ValueError("unknown command")

    monkeypatch.setattr(latex2mathml.converter, "convert", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = to_html(new_notebook(cells=[new_markdown_cell("see $\\foo$")]), where="nb.ipynb")
    assert any("nb.ipynb" in str(w.message) and "\\foo" in str(w.message) for w in caught)
    assert "gradkit-math-error" in page and "\\foo" in page


def test_the_reserved_placeholder_text_is_refused():
    with pytest.raises(ValueError, match="nb.ipynb.*GKMATH"):
        to_html(new_notebook(cells=[new_markdown_cell("GKMATH0X")]), where="nb.ipynb")
