"""Every notebook is a jupytext pair kept in sync, committed without outputs."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXPECTED = ["01_train_ghm", "02_gns_trend", "03_similarity_tsne", "04_gradnorm_multitask",
            "05_optimizer_notes"]


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_the_five_notebooks_exist_as_pairs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_pair_in_sync(name):
    ipynb = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert _cells(ipynb) == _cells(py), (
        f"{name}.ipynb and {name}.py differ: run `make sync` (jupytext --sync)")


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_without_outputs_and_with_the_gradkit_kernel(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{name}.ipynb holds outputs: commit it stripped")
    assert nb.metadata.kernelspec.name == "gradkit"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
