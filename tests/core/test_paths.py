"""Nothing generated lands in the package, whatever the working directory.

The synthetic data set and the figures were once written into ``gradkit/data/`` and
``gradkit/figures/``: the project root was found by counting parent folders, and the count went
stale when ``paths.py`` moved into ``core/``. These tests run the data generator and the figure
writer from inside the package and from another folder, and compare the package tree before and
after.
"""

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import gradkit.core.paths as paths  # noqa: E402
from gradkit.data.synthetic import make_dataset  # noqa: E402
from gradkit.viz.figures import publish, save_figure  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[2] / "gradkit"


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (but byte-code caches) with the hash of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def _write_outputs(tag: str) -> None:
    """The smallest data set the generator makes (12 clips) and one figure, by default paths."""
    make_dataset(materials=("wood",), freqs_hz=(500,), per_class=2)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    save_figure(fig, f"{tag}.png")
    fig, ax = plt.subplots(figsize=(2, 2))
    publish(fig, f"{tag}-published.png")
    plt.close("all")


def _fake_project(tmp_path: Path, monkeypatch) -> Path:
    """A project in ``tmp_path/project`` whose ``paths.py`` is ours: the default root (no
    ``GRADKIT_ROOT``) is resolved from the module's location, as in a real checkout."""
    project = tmp_path / "project"
    (project / "gradkit" / "core").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'gradkit'\n")
    (project / "gradkit" / "__init__.py").write_text("")
    (project / "gradkit" / "core" / "paths.py").write_text("# stands in for gradkit.core.paths\n")
    monkeypatch.setattr(paths, "__file__", str(project / "gradkit" / "core" / "paths.py"))
    monkeypatch.delenv("GRADKIT_ROOT", raising=False)
    return project


def test_the_default_root_is_the_folder_above_the_package(tmp_path, monkeypatch):
    project = _fake_project(tmp_path, monkeypatch)
    assert paths.package_dir() == project / "gradkit"
    assert paths.project_root() == project
    assert paths.synthetic_dir() == project / "data" / "synthetic"
    assert paths.figures_dir(create=False) == project / "figures"


@pytest.mark.parametrize("where", ["inside the package", "another folder"])
def test_generator_and_figures_leave_the_package_unchanged(tmp_path, monkeypatch, where):
    project = _fake_project(tmp_path, monkeypatch)
    fake_before, real_before = _tree(project / "gradkit"), _tree(PACKAGE)
    cwd = project / "gradkit" if where == "inside the package" else tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    _write_outputs("probe")

    assert _tree(project / "gradkit") == fake_before, "something was written into the package"
    assert _tree(PACKAGE) == real_before, "something was written into the real package"
    assert (project / "data" / "synthetic" / "manifest.csv").is_file()
    assert len(list((project / "data" / "synthetic").rglob("*.wav"))) == 12
    assert sorted(p.name for p in (project / "figures").iterdir()) == [
        "probe-published.png", "probe.png"]
    if where == "another folder":
        assert not any(cwd.iterdir()), "something was written into the working directory"


@pytest.mark.parametrize("where", ["inside the package", "another folder"])
def test_gradkit_root_is_honoured_from_any_working_directory(tmp_path, monkeypatch, where):
    root = tmp_path / "root"
    monkeypatch.setenv("GRADKIT_ROOT", str(root))
    before = _tree(PACKAGE)
    cwd = PACKAGE if where == "inside the package" else tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    _write_outputs("probe")

    assert _tree(PACKAGE) == before, "something was written into the package"
    assert len(list((root / "data" / "synthetic").rglob("*.wav"))) == 12
    assert (root / "figures" / "probe.png").is_file()


def test_a_root_inside_the_package_is_refused(monkeypatch):
    for inside in (PACKAGE, PACKAGE / "data"):
        monkeypatch.setenv("GRADKIT_ROOT", str(inside))
        with pytest.raises(ValueError, match="inside the package"):
            paths.figures_dir(create=False)


def test_a_relative_gradkit_root_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADKIT_ROOT", "outputs")
    with pytest.raises(ValueError, match="GRADKIT_ROOT must be an absolute path"):
        paths.data_dir()
    assert not (tmp_path / "outputs").exists()
