"""The five notebooks, every cell, with the smoke parameter set: the default tier's notebook run.

Each notebook is executed by the report runner (nbclient, a fresh ``gradkit`` kernel, as nbmake
does) with its overrides from ``notebooks/smoke.toml`` injected into its ``parameters`` cell
(:mod:`gradkit.report.smoke`), and exported to ``build/smoke/reports/``, once per test run
(the ``smoke_report`` fixture of ``tests/conftest.py``): the browser tests
(``tests/report/test_reports_browser.py``, ``tests/viz/test_scrubber_lab.py``) read the same
reports, built by whichever test asks first.
The notebooks with their own (full) parameters are ``make report`` and ``make test-full``.
"""

import pytest

from gradkit.report import notebook_paths
from gradkit.report.smoke import smoke_parameters

NAMES = [p.stem for p in notebook_paths()]


def test_the_smoke_set_names_existing_notebooks_and_their_parameters():
    table = smoke_parameters()
    assert sorted(table) == NAMES, "give every notebook a section in notebooks/smoke.toml"


def test_a_typo_in_the_smoke_set_is_refused_naming_it(tmp_path):
    notebooks = notebook_paths()[0].parent
    bad = notebooks / "smoke.toml"
    text = bad.read_text(encoding="utf-8").replace("FOLDS = 2", "FOLD = 2", 1)
    assert text != bad.read_text(encoding="utf-8")
    copy = tmp_path / "smoke.toml"
    copy.write_text(text, encoding="utf-8")
    for p in notebooks.glob("*.ipynb"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ValueError, match=r"\[01_train_ghm\] sets \['FOLD'\]"):
        smoke_parameters(copy)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_with_the_smoke_parameters(name, smoke_report):
    result = smoke_report(name)
    assert result.ok, f"{name} failed in cell {result.failed_cell}:\n{result.error}"
    if name == "01_train_ghm":  # the default data is learnable: the gate opens, verdicts appear
        heads = result.headlines
        assert heads["learnability"].startswith("learnable"), heads["learnability"]
        assert "GHM \u2212 raw, val accuracy (last epoch)" in heads
        assert "not comparable" not in " ".join(heads.values())
