"""Every notebook is a jupytext pair kept in sync, committed without outputs."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# The notebooks are whatever numbered pairs the folder holds: a sixth needs no edit here.
EXPECTED = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_every_notebook_is_a_numbered_pair_in_order():
    assert len(EXPECTED) >= 5, EXPECTED
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == EXPECTED
    assert [int(name[:2]) for name in EXPECTED] == list(range(1, len(EXPECTED) + 1))


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
