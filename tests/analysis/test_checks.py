"""Notebook 01's consistency checks raise clear errors; the study's stage epochs are 1 / 31 / 60."""

import pytest
import torch

from gradkit.analysis.checks import (
    check_epochs_logged,
    check_figures_written,
    check_same_start,
    study_stage_epochs,
)
from gradkit.analysis.ghm import stage_epochs


def test_same_start_passes_for_identical_runs_and_names_the_one_that_differs():
    w = {"a": torch.ones(3)}
    assert check_same_start({"raw": "h", "ghm": "h"}, {"raw": w, "ghm": {"a": torch.ones(3)}})
    with pytest.raises(ValueError, match=r"data differs from 'raw' for \['ghm'\]"):
        check_same_start({"raw": "h", "ghm": "x"}, {"raw": w, "ghm": w})
    with pytest.raises(ValueError, match=r"initial weights for \['ghm'\]"):
        check_same_start({"raw": "h", "ghm": "h"}, {"raw": w, "ghm": {"a": torch.zeros(3)}})
    with pytest.raises(ValueError, match="same >= 2 runs"):
        check_same_start({"raw": "h"}, {"raw": w})


def test_epochs_logged_and_figures_written_list_what_is_missing():
    check_epochs_logged({"ghm": {1: 0, 31: 0}}, [1, 31])
    with pytest.raises(ValueError, match=r"\('ghm', 60\)"):
        check_epochs_logged({"ghm": {1: 0, 31: 0}}, [1, 31, 60])
    check_figures_written(["a.png"], ["b.png", "a.png"])
    with pytest.raises(ValueError, match=r"\['c.png'\]"):
        check_figures_written(["a.png", "c.png"], ["a.png"])


def test_study_stage_epochs_are_the_reports_names_and_stage_epochs_middle():
    assert study_stage_epochs(60) == (1, 31, 60)
    for n in (1, 2, 4, 7, 60):
        assert study_stage_epochs(n) == tuple(stage_epochs(range(1, n + 1)).values())
    with pytest.raises(ValueError, match="study_epochs"):
        study_stage_epochs(0)
