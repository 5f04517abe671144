"""save_figure writes SVG for '*.svg' names (the lecture's decision diagram)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gradkit.viz import figures  # noqa: E402


def test_svg_names_write_svg(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = figures.save_figure(fig, "diagram.svg")
    plt.close(fig)
    assert path == tmp_path / "figures" / "diagram.svg"
    assert b"<svg" in path.read_bytes()[:500]
