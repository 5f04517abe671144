"""Figures are written atomically under figures/, readable, and recorded."""

import stat

import matplotlib.pyplot as plt
import pytest

from gradkit.viz import figures


def test_save_figure_writes_a_png_under_the_project_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = figures.save_figure(fig, "demo.png")
    plt.close(fig)
    assert path == tmp_path / "figures" / "demo.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert figures.figures_written()[-1] == "demo.png"
    assert [p.name for p in path.parent.iterdir()] == ["demo.png"], "no temp file left"


def test_a_failed_save_keeps_the_previous_figure(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    fig, _ = plt.subplots()
    good = figures.save_figure(fig, "keep.png").read_bytes()
    monkeypatch.setattr(fig, "savefig", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        figures.save_figure(fig, "keep.png")
    plt.close(fig)
    assert (tmp_path / "figures" / "keep.png").read_bytes() == good


@pytest.mark.parametrize("bad", ["../x.png", "sub/x.png", "x.jpg"])
def test_bad_figure_names_are_refused(bad):
    with pytest.raises(ValueError, match="bare"):
        figures.save_figure(plt.figure(), bad)
