"""Rendering helpers, and the rule that gradkit.stats stands on numpy/scipy/pandas alone."""

import ast
import math
import pathlib
import sys

import pytest

import gradkit.stats as gs
from gradkit.stats.text import number, p_text


def test_number():
    assert number(-4.1234) == "−4.1"
    assert number(-0.04) == "0.0"
    assert number(0.04, 2) == "0.04"
    assert number(math.nan) == "n/a"


@pytest.mark.parametrize("p, alpha, text", [(0.14, None, "p = 0.14"), (0.0871, None, "p = 0.087"),
                                            (1.0, None, "p = 1"), (0.0004, None, "p < 0.001"),
                                            (0.0, None, "p = 0"), (math.nan, None, "p = n/a"),
                                            (0.0496, 0.05, "p = 0.0496"),
                                            (0.0504, 0.05, "p = 0.05"),
                                            (0.04996, 0.05, "p = 0.04996"),
                                            (0.0496, None, "p = 0.05"),
                                            (0.0004, 0.0001, "p = 0.0004")])
def test_p_text(p, alpha, text):
    assert p_text(p, alpha) == text


def test_sentence_rejects_other_objects():
    with pytest.raises(TypeError, match="gradkit.stats result"):
        gs.sentence(3.0)


def test_public_api_is_exported_and_documented():
    for name in gs.__all__:
        assert hasattr(gs, name)
        assert getattr(gs, name).__doc__
    for name in ["compare_paired", "wilson_interval", "above_chance", "plateau_test",
                 "interval_change", "compare_proportions", "sentence"]:
        assert name in gs.__doc__


ALLOWED = {"numpy", "scipy", "pandas", "__future__"} | set(sys.stdlib_module_names)


def test_stats_imports_nothing_else_from_gradkit():
    folder = pathlib.Path(gs.__file__).parent
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:          # relative: inside gradkit.stats
                    continue
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in ALLOWED, f"{path.name} imports {root}"


def test_stats_modules_stay_small():
    folder = pathlib.Path(gs.__file__).parent
    for path in folder.glob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) < 250, path.name
