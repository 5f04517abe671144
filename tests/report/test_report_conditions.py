"""``python -m gradkit.report --data … --material … --freq …``: the runner's plumbing, on fixture
notebooks that follow the workbook's convention (a ``parameters`` cell, the split loaded from
``DATA_ROOT``/``MATERIAL``/``FREQ_HZ``, a published figure, headline numbers)."""

import hashlib
from pathlib import Path

import nbformat
import numpy as np
import pytest
import soundfile as sf
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gradkit.data import DataError
from gradkit.report import parameters as P
from gradkit.report import runner

PARAMS = 'DATA_ROOT = None\nMATERIAL = "plastic"\nFREQ_HZ = 3000\nEPOCHS = 60\n'
READS_DATA = """import os
import matplotlib.pyplot as plt
import torch
from gradkit.data import load_split, preflight
from gradkit.report.headlines import show_headlines
from gradkit.viz.figures import publish
table = preflight(DATA_ROOT, MATERIAL, FREQ_HZ)
split = load_split(MATERIAL, FREQ_HZ, root=DATA_ROOT)
fig, ax = plt.subplots()
ax.bar(split.classes, torch.bincount(split.y_train).tolist())
ax.set(xlabel="class", ylabel="training clips")
publish(fig, "classes.png")
show_headlines(classes=len(split.classes), epochs=EPOCHS, material=MATERIAL,
               condition=os.environ.get("GRADKIT_CONDITION", "default"))
"""
OWN_DATA = """import matplotlib.pyplot as plt
from gradkit.viz.figures import publish
fig, ax = plt.subplots()
ax.plot([0, 1])
publish(fig, "own_task.png")
"""


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def notebook(path: Path, *cells) -> None:
    nb = new_notebook(cells=[new_markdown_cell(f"# {path.stem}"), *cells])
    nb.metadata["kernelspec"] = {"name": "gradkit", "display_name": "gradkit", "language": "python"}
    nbformat.write(nb, str(path))


def user_folder(root: Path, material="glass", freq=2500, sizes=(3, 4, 2, 5)) -> Path:
    """Four angle classes 0/30/60/90 of unequal size, 44.1 kHz stereo float, unequal lengths."""
    rng = np.random.default_rng(1)
    for angle, n in zip((0, 30, 60, 90), sizes, strict=True):
        folder = root / material / f"{freq}hz" / f"deg{angle:03d}"
        folder.mkdir(parents=True)
        for i in range(n):
            frames = int(44100 * rng.uniform(0.3, 0.7))
            sf.write(folder / f"{i:02d}.wav", (0.1 * rng.standard_normal((frames, 2)) * (1 + angle
                     / 30)).astype(np.float32), 44100, subtype="FLOAT")
    return root


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    monkeypatch.delenv("GRADKIT_CONDITION", raising=False)
    (tmp_path / "notebooks").mkdir()
    params = new_code_cell(PARAMS, metadata={"tags": ["parameters"]})
    notebook(tmp_path / "notebooks/01_reads.ipynb", params, new_code_cell(READS_DATA))
    notebook(tmp_path / "notebooks/02_own.ipynb", new_code_cell(OWN_DATA))
    return tmp_path


def test_a_condition_gets_its_own_folders_and_nothing_else_changes(project, tmp_path):
    assert runner.main([]) == 0  # the default condition: the synthetic set, figures/, reports/
    assert (project / "figures/classes.png").is_file() and (project / "figures/own_task.png")
    default = {d: digest(project / d) for d in ("figures", "reports")}
    data = user_folder(tmp_path / "lab")
    before = digest(data)

    code = runner.main(["--data", str(data), "--material", "glass", "--freq", "2500",
                        "--param", "EPOCHS=4", "--param", "SEEDS=[42]"])

    assert code == 0
    assert digest(data) == before, "the data folder is byte-for-byte unchanged"
    assert sorted(p.name for p in (project / "figures/glass_2500hz").iterdir()) == ["classes.png"]
    assert (project / "reports/glass_2500hz/01_reads.html").is_file()
    assert not (project / "reports/glass_2500hz/02_own.html").exists(), "no DATA_ROOT: not rerun"
    for d in ("figures", "reports"):  # the default outputs: only the top index changes
        now = {k: v for k, v in digest(project / d).items() if not k.startswith("glass_2500hz/")}
        changed = sorted(k for k in now if now[k] != default[d].get(k))
        assert changed == ([] if d == "figures" else ["index.html"])
        assert now.keys() == default[d].keys()
    executed = nbformat.read(project / "build/executed/glass_2500hz/01_reads.ipynb", as_version=4)
    injected = executed.cells[2]
    assert executed.cells[1].metadata["tags"] == ["parameters"]
    assert injected.metadata["tags"] == ["injected-parameters"]
    assert f"DATA_ROOT = {str(data.resolve())!r}" in injected.source
    assert "MATERIAL = 'glass'" in injected.source and "FREQ_HZ = 2500" in injected.source
    assert "EPOCHS = 4" in injected.source and "SEEDS = [42]" in injected.source
    page = (project / "reports/glass_2500hz/index.html").read_text()
    for value in ("<b>classes</b>: 4", "<b>epochs</b>: 4", "<b>condition</b>: glass_2500hz"):
        assert value in page
    top = (project / "reports/index.html").read_text()
    assert "glass_2500hz/index.html" in top and "01_reads.html" in top
    assert str(data.resolve()) in top

    # another folder with the same condition: refused rather than overwritten, kept with --name
    other = user_folder(tmp_path / "lab2", sizes=(2, 2, 2, 2))
    args = ["--data", str(other), "--material", "glass", "--freq", "2500", "--param", "EPOCHS=4"]
    report_before = digest(project / "reports/glass_2500hz")
    assert runner.main(args) == 2
    assert digest(project / "reports/glass_2500hz") == report_before
    assert runner.main([*args, "--name", "glass_2500hz_lab2"]) == 0
    assert (project / "figures/glass_2500hz_lab2/classes.png").is_file()
    top = (project / "reports/index.html").read_text()
    assert "glass_2500hz/index.html" in top and "glass_2500hz_lab2/index.html" in top


def test_bad_data_is_refused_before_any_notebook_runs(project, tmp_path, capsys):
    data = user_folder(tmp_path / "lab")
    cut = data / "glass/2500hz/deg030/01.wav"
    cut.write_bytes(cut.read_bytes()[:-400])
    (data / "glass/2500hz/deg060/01.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    assert runner.main(["--data", str(data)]) == 2  # the only condition there: glass, 2500 Hz
    out = capsys.readouterr().out
    assert "3 problems" in out and "deg030/01.wav is truncated" in out and "deg060/01.wav" in out
    assert "class deg060 has 1 clip(s)" in out  # its other clip is the broken one
    assert not (project / "reports").exists() and not (project / "build").exists()
    good = user_folder(tmp_path / "good")
    assert runner.main(["--data", str(good), "02_own"]) == 2, "02_own reads no recordings"
    assert "none of the notebooks ['02_own'] reads recordings" in capsys.readouterr().out


def test_resolve_condition(project, tmp_path):
    data = user_folder(tmp_path / "lab")
    user_folder(tmp_path / "lab", "glass", 5000)
    with pytest.raises(DataError, match=r"several condition.*glass/2500hz', 'glass/5000hz'"):
        P.resolve_condition(str(data))
    cond = P.resolve_condition(str(data), freq_hz=5000)
    assert (cond.material, cond.freq_hz, cond.name) == ("glass", 5000, "glass_5000hz")
    assert cond.notebook_parameters == {"DATA_ROOT": str(data.resolve()), "MATERIAL": "glass",
                                        "FREQ_HZ": 5000}
    with pytest.raises(DataError, match="no condition"):
        P.resolve_condition(str(data), "wood", 500)
    with pytest.raises(DataError, match="not found"):
        P.resolve_condition(str(tmp_path / "missing"))
    assert P.resolve_condition() is None
    assert P.resolve_condition(None, "plastic", 3000) is None, "the default condition"
    assert P.resolve_condition(None, "metal", 500).name == "metal_500hz"
    with pytest.raises(ValueError, match="plain folder name"):
        P.resolve_condition(str(data), freq_hz=5000, name="../escape")


def test_inject_follows_papermill():
    nb = new_notebook(cells=[new_markdown_cell("# t"), new_code_cell("import os"),
                             new_code_cell("A = 1\nB: int = 2\nC, D = 3, 4",
                                           metadata={"tags": ["parameters"]}),
                             new_code_cell("print(A)")])
    assert P.declared_parameters(nb) == ["A", "B"]
    assert P.inject(nb, {"A": 5, "Z": [1, 2]}) == ["Z"]
    assert P.inject(nb, {"A": 6}) == []  # a second injection replaces the first
    sources = [c.source for c in nb.cells]
    assert sources[3] == "# Parameters\nA = 6\n" and sources[4] == "print(A)" and len(nb.cells) == 5
    assert nb.cells[3].metadata["tags"] == ["injected-parameters"]
    plain = new_notebook(cells=[new_code_cell("x = 1")])
    assert P.inject(plain, {"A": 1}) == [] and len(plain.cells) == 1, "no parameters cell"
    assert P.parse_param("EPOCHS=4") == ("EPOCHS", 4)
    assert P.parse_param("SEEDS=[42, 7]") == ("SEEDS", [42, 7])
    assert P.parse_param("DATA_ROOT=None") == ("DATA_ROOT", None)
    assert P.parse_param("MATERIAL=glass") == ("MATERIAL", "glass")
    with pytest.raises(ValueError, match="NAME=VALUE"):
        P.parse_param("4=EPOCHS")


def test_figures_and_reports_dirs_follow_the_condition(project, monkeypatch):
    from gradkit.core.paths import figures_dir, reports_dir

    assert figures_dir() == project / "figures"
    with P.active({"A": 1}, "wood_500hz"):
        assert figures_dir() == project / "figures/wood_500hz"
        assert reports_dir() == project / "reports/wood_500hz"
    assert reports_dir() == project / "reports"
    monkeypatch.setenv("GRADKIT_CONDITION", "../up")
    with pytest.raises(ValueError, match="plain folder name"):
        figures_dir()


def test_use_condition_for_a_notebook_run_by_hand(project, monkeypatch):
    from gradkit.core.paths import figures_dir

    # use_condition sets the variable for the session; monkeypatch restores it to unset after
    monkeypatch.delenv("GRADKIT_CONDITION", raising=False)

    assert P.use_condition(None, "plastic", 3000) is None and figures_dir() == project / "figures"
    assert P.use_condition("/my/recordings", "plastic", 3000) == "plastic_3000hz"
    assert figures_dir() == project / "figures/plastic_3000hz"
    monkeypatch.setenv("GRADKIT_CONDITION", "chosen_by_runner")
    assert P.use_condition(None, "wood", 500) == "chosen_by_runner"
