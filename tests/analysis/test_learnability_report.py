"""Notebook 01 on a folder of pure-noise recordings: the report says "not comparable", no verdict.

Every class folder holds white noise from one distribution, so nothing can be learned; the
workbook runs on it as a user would run it (``python -m gradkit.report --data …``, short runs
injected through the ``parameters`` cell). The fast equivalent, the gate function on the same
folder's features, is ``test_a_folder_of_pure_noise_recordings_is_not_learnable`` in
``test_learnability.py``.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.analysis.test_learnability import noise_recordings

REPO = Path(__file__).resolve().parents[2]
SHORT = ["EPOCHS=3", "STUDY_EPOCHS=3", "SEEDS=[42, 0]", "FOLDS=3", "LRS=[3e-3, 1e-2]"]
VERDICT_WORDS = ("GHM \u2212 raw = ", ": better", ": worse", "no detectable difference")


def report_on_pure_noise(tmp_path, notebook: str, params: list[str]):
    """``python -m gradkit.report`` of ``notebook`` on a folder of pure-noise recordings, in a
    copy of the project under ``tmp_path``; returns that copy's root."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns("*.py", ".ipynb_checkpoints"))
    data = noise_recordings(tmp_path / "noise")
    env = {k: v for k, v in os.environ.items() if k != "GRADKIT_CONDITION"}
    env.update(GRADKIT_ROOT=str(root), PYTHONPATH=str(REPO))
    args = ["--data", str(data), "--material", "m", "--freq", "700", notebook]
    for p in params:
        args += ["--param", p]
    done = subprocess.run([sys.executable, "-m", "gradkit.report", *args], env=env,
                          capture_output=True, text=True, timeout=1200)
    print(done.stdout[-4000:], done.stderr[-3000:])
    assert done.returncode == 0
    return root


@pytest.mark.slow
def test_notebook_01_on_pure_noise_compares_nothing(tmp_path):
    root = report_on_pure_noise(tmp_path, "01_train_ghm", SHORT)
    report = (root / "reports/m_700hz/01_train_ghm.html").read_text()
    assert "not comparable: no run learned" in report
    assert "not learnable: no run learned" in report
    found = [w for w in VERDICT_WORDS if w in report]
    assert not found, f"verdict words in a report on pure noise: {found}"
    index = json.loads((root / "reports/m_700hz/index.json").read_text())
    heads = next(e["headlines"] for e in index if e["name"] == "01_train_ghm")
    assert heads["learnability"].startswith("not learnable")
    assert heads["GHM \u2212 raw"] == "not comparable: no run learned"
