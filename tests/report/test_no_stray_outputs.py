"""No stray ``Out[n]``: a cell ending in ``publish(...)`` or ``show_headlines(...)`` shows its
figure or table once and no raw value after it (no ``PosixPath(...)``, no dict)."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from gradkit.core.paths import project_root
from gradkit.report.runner import notebook_paths


def _raw_results(nb) -> list[str]:
    """The ``Out[n]`` values shown only as their repr (no table, picture or markdown)."""
    return [o["data"]["text/plain"][:80]
            for cell in nb.cells if cell.cell_type == "code"
            for o in cell.get("outputs", [])
            if o["output_type"] == "execute_result" and set(o["data"]) == {"text/plain"}]


def test_publish_and_show_headlines_end_a_cell_without_an_out_value(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    nb = new_notebook(cells=[
        new_code_cell("import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
                      "from gradkit.viz.figures import publish\n"
                      "from gradkit.report.headlines import show_headlines\nfig = plt.figure()\n"
                      "fig.add_subplot().plot([0, 1])\npublish(fig, 'stray.png')"),
        new_code_cell("show_headlines(best_accuracy='75 %')"),
        new_code_cell("1 + 1"),  # the control: a plain value does echo
    ])
    nb.metadata["kernelspec"] = {"name": "gradkit", "display_name": "gradkit", "language": "python"}
    NotebookClient(nb, kernel_name="gradkit", timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    figure, headlines, control = (c.outputs for c in nb.cells)
    assert [o["output_type"] for o in figure] == ["display_data"] and "image/png" in figure[0].data
    assert [o["output_type"] for o in headlines] == ["display_data"]
    assert "text/html" in headlines[0].data
    assert _raw_results(nb) == ["2"], "only the control cell shows an Out[n] value"
    assert (tmp_path / "figures" / "stray.png").exists()


EXECUTED = project_root() / "build" / "executed"


@pytest.mark.parametrize("name", [p.name for p in notebook_paths()])
def test_the_executed_notebooks_show_no_raw_out_values(name):
    path = EXECUTED / name
    if not path.exists():
        pytest.skip(f"{path} not built yet (make report builds it)")
    raw = _raw_results(nbformat.read(path, as_version=4))
    assert raw == [], f"{name}: cells end in a bare value shown as Out[n]: {raw}"
