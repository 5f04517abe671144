"""make report's runner: execution in report mode, offline HTML, the index, failure handling."""

import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gradkit.report import export
from gradkit.report import runner as report
from gradkit.report.headlines import collect_headlines


def _notebook(path, *sources, title="# A title"):
    nb = new_notebook(cells=[new_markdown_cell(title), *[new_code_cell(s) for s in sources]])
    nb.metadata["kernelspec"] = {"name": "gradkit", "display_name": "gradkit", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    return tmp_path


def test_build_reports_exports_offline_html_and_an_index(root):
    _notebook(root / "notebooks/01_ok.ipynb",
              "import os, numpy as np\nfrom gradkit.viz.scrubber import Scrubber\n"
              "Scrubber(lambda fig, v: fig.add_subplot().plot([0, v]), [1, 2])",
              "import matplotlib.pyplot as plt\nfrom IPython.display import Image, display\n"
              "from gradkit.viz.figures import save_figure\nfig = plt.figure()\n"
              "fig.add_subplot().plot([0, 1])\n"
              "display(Image(filename=str(save_figure(fig, 'saved_figure.png'))))",
              "from gradkit.report.headlines import show_headlines\n"
              "show_headlines(best_accuracy='75 %', mode=os.environ['GRADKIT_REPORT'])")
    (root / "reports").mkdir()
    (root / "reports/02_broken.html").write_text("previous good report")
    _notebook(root / "notebooks/02_broken.ipynb", "raise RuntimeError('boom in cell')")

    results = report.build_reports()

    ok, broken = results
    assert ok.ok and ok.title == "A title" and ok.seconds > 0
    assert ok.headlines == {"best accuracy": "75 %", "mode": "1"}
    page = (root / "reports/01_ok.html").read_text()
    assert "gradkit-scrubber" in page and "data:image/png;base64" in page
    assert "<script src=" not in page.replace(" ", " ")
    # figures are embedded, never linked: every <img> carries its PNG inline
    sources = re.findall(r"<img[^>]*\ssrc=[\"']([^\"']*)", page)
    assert len(sources) >= 2 and all(src.startswith("data:image/png;base64,") for src in sources)
    assert (root / "reports/01_ok.html").stat().st_mode & 0o777 == 0o644, "readable by all"
    assert not broken.ok and "boom in cell" in broken.error
    assert (root / "reports/02_broken.html").read_text() == "previous good report"
    index = (root / "reports/index.html").read_text()
    assert "01_ok.html" in index and "75 %" in index and "failed" in index
    assert report.main([]) == 1, "a failed notebook makes the command fail"


def test_strip_widgets_and_collect_headlines():
    nb = new_notebook(cells=[new_code_cell("x")])
    nb.metadata["widgets"] = {"state": {}}
    nb.cells[0].outputs = [
        nbformat.v4.new_output("display_data", data={export.WIDGET_MIME: {}, "text/plain": "w"}),
        nbformat.v4.new_output("display_data", data={"text/html": "<b>kept</b>"},
                               metadata={"gradkit_headlines": {"gns": "0.1"}}),
    ]
    export.strip_widgets(nb)
    assert "widgets" not in nb.metadata
    assert [o["data"].get("text/html") for o in nb.cells[0].outputs] == ["<b>kept</b>"]
    assert collect_headlines(nb) == {"gns": "0.1"}


def test_a_partial_run_keeps_the_other_entries_of_the_index(root):
    _notebook(root / "notebooks/01_a.ipynb", "from gradkit.report.headlines import show_headlines\n"
              "show_headlines(value='first')")
    _notebook(root / "notebooks/02_b.ipynb", "from gradkit.report.headlines import show_headlines\n"
              "show_headlines(value='second')")
    report.build_reports()
    (root / "notebooks/02_b.ipynb").unlink()
    _notebook(root / "notebooks/02_b.ipynb", "from gradkit.report.headlines import show_headlines\n"
              "show_headlines(value='second, again')")
    results = report.build_reports(only=["02"])
    assert [r.name for r in results] == ["02_b"]
    index = (root / "reports/index.html").read_text()
    assert "01_a.html" in index and "first" in index and "second, again" in index


def test_a_failing_notebook_is_reported_with_its_cell_and_a_stale_report(root, capsys):
    _notebook(root / "notebooks/01_fails.ipynb",
              "from gradkit.report.headlines import show_headlines\nx = 1",
              "show_headlines(accuracy='81 %')\nif x == 1:\n    total = 1 / (x - 1)\nmore = 2")
    # A good run first (x = 1 is harmless when the division is guarded) ...
    nb = nbformat.read(str(root / "notebooks/01_fails.ipynb"), as_version=4)
    good = nb.cells[2].source.replace("if x == 1", "if x == 2")
    _notebook(root / "notebooks/01_fails.ipynb", nb.cells[1].source, good)
    (ok,) = report.build_reports()
    assert ok.ok and ok.report_date and ok.headlines == {"accuracy": "81 %"}
    # ... then the same notebook fails in its second code cell.
    _notebook(root / "notebooks/01_fails.ipynb", nb.cells[1].source, nb.cells[2].source)
    capsys.readouterr()
    (failed,) = report.build_reports()
    printed = capsys.readouterr().out
    assert "01_fails: FAILED after" in printed and "in code cell 2" in printed
    assert "show_headlines(accuracy='81 %')" in printed and "if x == 1:" in printed
    assert "ZeroDivisionError: division by zero" in printed
    assert failed.failed_cell == 2 and failed.stale and failed.report_date == ok.report_date
    assert failed.headlines == {"accuracy": "81 %"}, "the previous headline numbers are kept"
    index = (root / "reports/index.html").read_text()
    assert "\x1b[" not in index and "[0;31m" not in index, "no raw ANSI escape codes"
    assert "ZeroDivisionError" in index and "code cell 2" in index
    assert f"stale report of {ok.report_date}" in index
    assert f"81 % <span class='stale'>(stale, {ok.report_date})" in index
    # A notebook that never had a report links nothing.
    (root / "reports/01_fails.html").unlink()
    (again,) = report.build_reports()
    assert not again.stale and "no report yet" in (root / "reports/index.html").read_text()
