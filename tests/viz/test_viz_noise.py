"""Smoke tests of notebook 02's figures: they draw, label their axes and mark failed runs."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from gradkit.viz import noise as vnoise  # noqa: E402


def table(scale=1.0):
    return pd.DataFrame({"epoch": [5, 10], "gns": [1.0 * scale, 2.0 * scale],
                         "gns_lo": [0.5, 1.0], "gns_hi": [2.0, math.inf],
                         "b_simple": [10.0, 20.0], "b_simple_lo": [5.0, 8.0],
                         "b_simple_hi": [30.0, math.inf]})


def test_trend_figure_has_both_kinds_and_log_axes():
    fig = vnoise.plot_gns_trend({"run": {"objective": table(), "ce": table(0.5)},
                                 "bad": {"objective": table()}}, 12, 36, study={5: 1e-5},
                                failed=["bad"])
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "GNS" in ax.get_ylabel()
    labels = ax.get_legend_handles_labels()[1]
    assert "run: trained objective" in labels and "run: cross-entropy only" in labels
    assert "bad (failed run): trained objective" in labels
    plt.close(fig)


def test_condition_figure_marks_failed_runs_and_draws_points_not_bars():
    ends = pd.concat([table().iloc[[1]].assign(material="wood", freq_hz=1000, failed=True),
                      table().iloc[[0]].assign(material="metal", freq_hz=500, failed=False)])
    fig = vnoise.plot_gns_by_condition(ends, 12, 36)
    ax = fig.axes[0]
    assert not ax.patches  # no bars on a log axis
    assert "failed" in [t.get_text() for t in ax.texts]
    assert "failed run (at chance)" in ax.get_legend_handles_labels()[1]
    plt.close(fig)


def test_norms_histogram():
    fig, ax = plt.subplots()
    vnoise.plot_norms(ax, [0.1, 0.2, 0.5], 0.01, [0.05, 0.1, 0.3, 1.0], 4, "t")
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "training clips"
    plt.close(fig)
