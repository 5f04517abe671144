"""The DDP-vs-exact comparison: pooling, intervals, the agreement sentence and the figure."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from gradkit.distributed.compare import agreement, pooled_b_simple  # noqa: E402
from gradkit.grads import NoiseScale  # noqa: E402
from gradkit.viz.distributed import plot_ddp_b_simple  # noqa: E402


def _history(n=40, seed=0):
    rng = np.random.default_rng(seed)
    tr = 50.0 + rng.normal(0, 5, n)
    gsq = 1.0 + rng.normal(0, 0.3, n)
    return pd.DataFrame({"step": np.arange(n), "epoch": np.repeat([1, 2], n // 2),
                         "trace_sigma": tr, "grad_sq": gsq,
                         "b_simple": pd.Series(tr).expanding().mean()
                         / pd.Series(gsq).expanding().mean()})


def _exact(b, lo, hi):
    return NoiseScale(grad_sq=1.0, trace_sigma=b, gns=0.0, b_simple=b, gns_ci=(0, 0),
                      b_simple_ci=(lo, hi), n=100, batch_size=32, confidence=0.95, n_boot=100)


def test_pooled_is_the_ratio_of_means_of_the_epoch_with_a_bracketing_interval():
    h = _history()
    last = h[h.epoch == 2]
    est, (lo, hi) = pooled_b_simple(h)
    assert est == pytest.approx(last.trace_sigma.mean() / last.grad_sq.mean())
    assert lo < est < hi
    both, _ = pooled_b_simple(h, epochs=2)
    assert both == pytest.approx(h.trace_sigma.mean() / h.grad_sq.mean())
    with pytest.raises(ValueError, match="steps"):
        pooled_b_simple(h.iloc[:1])


def test_agreement_says_agree_only_when_the_intervals_overlap():
    pooled = (50.0, (40.0, 60.0))
    assert "agree" in agreement(pooled, _exact(55.0, 45.0, 70.0))
    far = agreement(pooled, _exact(200.0, 150.0, 260.0))
    assert "disagree" in far and "higher" in far


def test_the_figure_draws_on_a_log_axis_with_every_part_labelled():
    fig = plt.figure()
    h = _history()
    plot_ddp_b_simple(fig, h, 32, exact=_exact(55.0, 45.0, math.inf), pooled=pooled_b_simple(h))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("exact" in t for t in labels) and any("global batch" in t for t in labels)
    plt.close(fig)
