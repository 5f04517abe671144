"""The whole workbook on a user's folder, one command, and never a byte of it changed.

A folder as a user brings it — a non-default material and frequency, four angle classes of
unequal size, 44.1 kHz stereo float WAVs of unequal lengths, no manifest — goes through
``python -m gradkit.report --data … --material … --freq …`` with short runs injected through
the notebooks' ``parameters`` cells. The reports and figures land in their own folders, the
default outputs stay as they were, and every file of the data folder keeps its bytes.

Needs the notebooks' ``parameters`` cells (``DATA_ROOT``, ``MATERIAL``, ``FREQ_HZ``, ``EPOCHS``,
…); names a notebook does not define (``FOLDS`` in 03, say) are injected harmlessly.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[2]
PER_CONDITION = ("01_train_ghm", "02_gns_trend", "03_similarity_tsne", "05_optimizer_notes")
SHORT = ["EPOCHS=4", "SEEDS=[42]", "FOLDS=2", "PROMPT_EPOCHS=2", "N_BOOT=50", "DDP_EPOCHS=0"]


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def recordings(root: Path, material="basalt", freq=1800, sizes=(6, 8, 7, 9)) -> Path:
    """Angles 0/30/60/90: a decaying tone whose echo delay and level follow the angle."""
    rng = np.random.default_rng(7)
    rate = 44100
    for angle, n in zip((0, 30, 60, 90), sizes, strict=True):
        folder = root / material / f"{freq}hz" / f"deg{angle:03d}"
        folder.mkdir(parents=True)
        for i in range(n):
            t = np.arange(int(rate * rng.uniform(0.35, 0.8))) / rate
            burst = np.sin(2 * np.pi * freq * t) * np.exp(-30 * t)
            delay = int(rate * (0.005 + 0.002 * angle / 3))
            echo = np.concatenate([np.zeros(delay), burst[:-delay]]) * (1 - angle / 180)
            mono = 0.3 * (burst + echo) + 0.02 * rng.standard_normal(t.size)
            stereo = np.stack([mono, 0.8 * mono], 1).astype(np.float32)
            sf.write(folder / f"rec_{i:02d}.wav", stereo, rate, subtype="FLOAT")
    return root


@pytest.mark.slow
def test_the_workbook_runs_on_a_user_folder_into_its_own_outputs(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(REPO / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns("*.py", ".ipynb_checkpoints"))
    missing = [n for n in PER_CONDITION if not any(
        "parameters" in c.get("metadata", {}).get("tags", [])
        for c in nbformat.read(root / f"notebooks/{n}.ipynb", as_version=4).cells)]
    assert not missing, f"notebooks without a cell tagged 'parameters': {missing}"
    # the default outputs, as an earlier `make report` left them
    for rel in ("figures/accuracy_trend.png", "figures/gns_by_condition.png",
                "reports/01_train_ghm.html", "reports/index.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"default {rel}")
    default = {d: digest(root / d) for d in ("figures", "reports")}
    data = recordings(tmp_path / "my recordings")
    (data / "basalt/1800hz/deg000/._rec_00.wav").write_bytes(b"\x00\x05\x16\x07 resource fork")
    before = digest(data)

    env = {k: v for k, v in os.environ.items() if k != "GRADKIT_CONDITION"}
    env.update(GRADKIT_ROOT=str(root), PYTHONPATH=str(REPO))
    args = ["--data", str(data), "--material", "basalt", "--freq", "1800"]
    for p in SHORT:
        args += ["--param", p]
    done = subprocess.run([sys.executable, "-m", "gradkit.report", *args], env=env,
                          capture_output=True, text=True, timeout=3000)
    print(done.stdout[-6000:], done.stderr[-3000:])

    assert done.returncode == 0
    assert digest(data) == before, "the data folder is byte-for-byte unchanged"
    out = root / "reports/basalt_1800hz"
    assert sorted(p.stem for p in out.glob("*.html")) == sorted([*PER_CONDITION, "index"])
    figures = sorted(p.name for p in (root / "figures/basalt_1800hz").glob("*.png"))
    assert len(figures) >= 8, figures
    for d in ("figures", "reports"):
        now = {k: v for k, v in digest(root / d).items() if not k.startswith("basalt_1800hz/")}
        assert {k: v for k, v in now.items() if k != "index.html"} == default[d], d
    assert "basalt_1800hz/index.html" in (root / "reports/index.html").read_text()
    assert "not repeated per condition" in done.stdout and "04_gradnorm_multitask" in done.stdout
