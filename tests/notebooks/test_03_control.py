"""Notebook 03 separates label-induced from data-induced structure: its class-structure sentences
and headlines state the excess over the label-permuted control (gradkit.analysis.control).

The fast checks read the smoke report of this test run (the ``smoke_report`` fixture, shared
with ``test_smoke_notebooks.py``); the slow one runs the notebook on a folder of pure noise as a
user would (``python -m gradkit.report --data …``). Its fast equivalent, the notebook's control
function on a run of the same kind of folder, is
``tests/analysis/test_control.py::test_on_a_no_signal_folder_the_statistics_are_at_their_control_level``.
"""

import html
import re
from pathlib import Path

import pytest

from gradkit.stats.control import CONTROL_VERDICTS
from tests.analysis.test_learnability_report import report_on_pure_noise

REPO = Path(__file__).resolve().parents[2]
NAME = "03_similarity_tsne"
HEADLINES = ("class silhouette over its label-permuted control",
             "opposed sample pairs over their label-permuted control")
# the readings of raw statistics that the control replaced
RAW_READINGS = ("class structure (silhouette", "strong class structure", "clear class blocks",
                "share beyond the class structure",
                "the class silhouette of the gradient directions")


def report_text(path: Path) -> str:
    """The text a reader sees in an exported report (code cells included)."""
    page = re.sub(r"<script.*?</script>|<style.*?</style>", "", path.read_text(encoding="utf-8"),
                  flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_the_notebook_source_uses_the_sketch_without_the_per_sample_tensor():
    source = (REPO / "notebooks" / f"{NAME}.py").read_text(encoding="utf-8")
    assert "gradient_sketch(model, sample_loss, x, y, k=k, seed=0)" in source
    assert "sketch_dim" not in source and "per_sample_grads" not in source


def test_the_smoke_report_states_the_excess_over_the_control(smoke_report):
    from gradkit.core.paths import project_root
    from gradkit.report.smoke import SMOKE_OUTPUT

    result = smoke_report(NAME)
    assert result.ok, f"{NAME} failed in cell {result.failed_cell}:\n{result.error}"
    for key in HEADLINES:
        value = result.headlines[key]
        assert re.search(r"[+-]\d\.\d\d .*at epoch \d+ \(", value), value
        assert any(v in value for v in CONTROL_VERDICTS[:3]), value
    assert "class silhouette (gradients)" not in result.headlines
    text = report_text(project_root() / SMOKE_OUTPUT / "reports" / f"{NAME}.html")
    found = [r for r in RAW_READINGS if r in text]
    assert not found, f"readings of raw statistics left in the report: {found}"
    assert re.search(r"the class silhouette (is at its label-permuted control level \(excess|"
                     r"exceeds its label-permuted control by|lies below its label-permuted "
                     r"control by)", text)


@pytest.mark.slow
def test_notebook_03_on_pure_noise_says_its_structure_is_at_the_control_level(tmp_path):
    root = report_on_pure_noise(tmp_path, NAME, ["EPOCHS=10"])
    text = report_text(root / "reports/m_700hz" / f"{NAME}.html")
    assert "not learnable: no run learned" in text
    said = re.findall(r"the ([a-zA-Z -]+?) (is at its label-permuted control level|exceeds its "
                      r"label-permuted control|lies below its label-permuted control)", text)
    assert said, "no sentence about the control"
    off = sorted({(what, verdict) for what, verdict in said
                  if verdict != "is at its label-permuted control level"})
    assert not off, f"on pure noise a statistic was called beyond its control: {off}"
    assert "the early class structure is no more than the labels alone give" in text
