"""GHM statistics, run comparisons and figures of gradkit.analysis.ghm on hand-made histories."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gradkit.analysis import ghm as ga
from gradkit.losses import GHMC  # noqa: E402
from gradkit.training.records import GHMRecord, HeadDiagnostics  # noqa: E402
from gradkit.viz import ghm as gv  # noqa: E402


def _record(epoch: int, g, w, rank_g, rank_w, sizes=(2, 2), rank_sizes=(1, 2)):
    """A ghm_history record (typed, as training records it): two batches, counts / acc /
    bin_weights per batch."""
    def per_batch(values, weights, batch_sizes):
        counts, bin_weights, start = [], [], 0
        for size in batch_sizes:
            part = torch.tensor(values[start:start + size])
            c = torch.bincount((part * 10).long().clamp(max=9), minlength=10).float()
            bw = torch.zeros(10)
            for v, wt in zip(values[start:start + size], weights[start:start + size], strict=True):
                bw[min(int(v * 10), 9)] = wt
            counts.append(c)
            bin_weights.append(bw)
            start += size
        return torch.stack(counts), torch.stack(bin_weights)

    counts, bin_weights = per_batch(g, w, sizes)
    rank_counts, rank_bin_weights = per_batch(rank_g, rank_w, rank_sizes)
    return GHMRecord(
        epoch, torch.arange(len(g)),
        HeadDiagnostics(torch.tensor(g), torch.tensor(w), list(sizes), counts,
                        counts.cumsum(0) * 0.25, bin_weights),
        HeadDiagnostics(torch.tensor(rank_g), torch.tensor(rank_w), list(rank_sizes),
                        rank_counts, rank_counts * 0.25, rank_bin_weights),
    )


HISTORY = [
    # batch 0 = g 0.05 (w 2.0), 0.95 (w 1.0); batch 1 = 0.92 (w 0.5), 0.97 (w 0.5)
    _record(1, [0.05, 0.95, 0.92, 0.97], [2.0, 1.0, 0.5, 0.5], [0.99, 0.98, 0.02], [1, 2, 3]),
    _record(2, [0.05, 0.25, 0.25, 0.95], [1.5, 0.75, 3.0, 1.5], [0.5, 0.55, 0.6], [1, 1, 1]),
]


def test_bin_shares_use_ghm_bins():
    assert ga.bin_shares([0.0, 0.05, 0.15, 1.0]).tolist() == [0.5, 0.25] + [0.0] * 7 + [0.25]
    assert ga.bin_shares([]).tolist() == [0.0] * 10
    assert ga.bin_shares([1.5, 0.5], bins=2).tolist() == [0.0, 0.5]  # 1.5 is in no bin
    # the same binning as the loss: shares * N reproduce GHMC's counts
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)) * 3
    ghm = GHMC(momentum=0.0)
    ghm(logits, torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(1)))
    assert np.allclose(ga.bin_shares(ghm.last_g) * 50, ghm.last_counts.numpy())


def test_g_statistics_hand_computed():
    s = ga.g_statistics([0.05, 0.25, 0.25, 0.95])
    assert s["count"] == 4
    assert s["mean"] == pytest.approx(0.375)
    assert s["median"] == pytest.approx(0.25)
    assert (s["min"], s["max"]) == pytest.approx((0.05, 0.95))
    assert s["std"] == pytest.approx(math.sqrt(0.4675 / 4))  # population std
    assert (s["most_bin"], s["most_share"]) == (2, 0.5)
    assert (s["least_bin"], s["least_share"]) == (1, 0.0)
    # shares [.25, 0, .5, 0 x6, .25]: mean .1, variance (.15^2*2 + .4^2 + .1^2*7) / 10
    assert s["share_spread"] == pytest.approx(math.sqrt(0.275 / 10))


def test_share_spread_extremes_and_empty():
    assert ga.g_statistics([0.55] * 7)["share_spread"] == pytest.approx(math.sqrt(9) / 10)
    even = (np.arange(10) + 0.5) / 10
    assert ga.g_statistics(even)["share_spread"] == pytest.approx(0.0)
    empty = ga.g_statistics([])
    assert empty["count"] == 0 and math.isnan(empty["mean"])


def test_ghm_stats_and_density_tables():
    table = ga.ghm_stats_table(HISTORY)
    assert table.index.tolist() == [1, 2] and table.index.name == "epoch"
    assert table.loc[2, "mean"] == pytest.approx(0.375)
    assert table.loc[1, "most_bin"] == 9 and table.loc[1, "most_share"] == 0.75
    rank = ga.ghm_stats_table(HISTORY, head="rank_")
    assert rank.loc[2, "count"] == 3 and rank.loc[2, "most_bin"] == 5
    density = ga.density_table(HISTORY)
    assert density.shape == (2, 10)
    assert density.iloc[1].tolist() == [0.25, 0, 0.5] + [0] * 6 + [0.25]
    with pytest.raises(ValueError, match=r"ghm_history\[0\].*lacks"):
        ga.ghm_stats_table([{"epoch": 1}])


def test_flat_checkpoint_records_and_typed_records_agree():
    """The checkpoint form (flat dict) round-trips and gives the same statistics."""
    flat = [r.to_dict() for r in HISTORY]
    assert set(flat[0]) == set(HISTORY[0]) and flat[0]["rank_batch_sizes"] == [1, 2]
    rebuilt = ga.history_by_epoch(flat)
    assert all(isinstance(r, GHMRecord) for r in rebuilt.values())
    pd.testing.assert_frame_equal(ga.ghm_stats_table(flat), ga.ghm_stats_table(HISTORY))
    assert torch.equal(rebuilt[1].rank.g, HISTORY[0]["rank_g"])
    assert HISTORY[0].head("rank_") is HISTORY[0].rank
    with pytest.raises(KeyError):
        HISTORY[0].head("detection_")


def test_batch_values_and_epoch_bin_weights():
    b0 = ga.batch_values(HISTORY[0], 0)
    assert b0["g"].tolist() == pytest.approx([0.05, 0.95])
    b1 = ga.batch_values(HISTORY[0], -1)
    assert b1["g"].tolist() == pytest.approx([0.92, 0.97]) and b1["counts"][9] == 2
    assert ga.batch_values(HISTORY[0], 1, head="rank_")["g"].tolist() == pytest.approx(
        [0.98, 0.02])
    with pytest.raises(IndexError, match="2 batches"):
        ga.batch_values(HISTORY[0], 2)
    weights = ga.epoch_bin_weights(HISTORY[0])
    # bin 9 is used in both batches (weights 1.0 and 0.5) -> 0.75; bin 0 only in batch 0
    assert weights[9] == pytest.approx(0.75) and weights[0] == pytest.approx(2.0)
    assert np.isnan(weights[1:9]).all()


def test_hard_easy_weights_and_stages():
    he = ga.hard_easy_weights(HISTORY[1])
    assert he == {"hard_mean_w": 1.5, "easy_mean_w": pytest.approx(1.75), "n_hard": 1,
                  "n_easy": 3}
    assert ga.stage_epochs([3, 1, 2, 4]) == {"early": 1, "middle": 3, "late": 4}
    with pytest.raises(ValueError):
        ga.stage_epochs([])


def _metrics(val_acc, train_acc=None):
    n = len(val_acc)
    return pd.DataFrame({
        "epoch": np.arange(1, n + 1), "val_acc": val_acc,
        "train_acc": train_acc if train_acc is not None else np.linspace(0, 1, n),
        "train_raw_loss": np.linspace(3, 1, n), "train_ghm_loss": np.linspace(5, 2, n),
        "val_raw_loss": np.linspace(4, 2, n), "val_ghm_loss": np.linspace(6, 3, n),
    })


def test_best_epoch_gain_and_loss_change():
    m = _metrics([0.2, 0.6, 0.6, 0.4], train_acc=[0.1, 0.5, 0.7, 0.9])
    best = ga.best_epoch_summary(m)
    assert best["epoch"] == 2 and best["best_val_acc"] == 0.6 and best["train_acc"] == 0.5
    assert best["val_raw_loss"] == pytest.approx(4 - 2 / 3)
    gains = ga.accuracy_gain_table({"raw": m, "ghm": _metrics([0.5, 0.5, 0.5, 0.3])})
    assert gains.loc["raw", "gain"] == pytest.approx(0.2)
    assert gains.loc["ghm", "gain"] == pytest.approx(-0.2)
    assert gains.loc["ghm", "final_epoch"] == 4
    assert ga.loss_change(m) == pytest.approx({"raw": 2.0, "ghm": 3.0})


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


@pytest.mark.parametrize("draw", [
    lambda fig: gv.plot_training_comparison(fig, {"raw": _metrics([0.1, 0.5]),
                                                  "ghm": _metrics([0.2, 0.4])}),
    lambda fig: gv.plot_loss_comparison_detailed(fig, _metrics([0.1, 0.5])),
    lambda fig: gv.plot_accuracy_trend(fig, {"raw": _metrics([0.1, 0.5])}),
    lambda fig: gv.plot_gradient_density_evolution(fig, HISTORY),
    lambda fig: gv.plot_density_epoch(fig, {"raw": HISTORY, "ghm": HISTORY}, 2),
    lambda fig: gv.plot_ghm_weights_comparison(fig, HISTORY),
    lambda fig: gv.plot_batch_distribution(fig, HISTORY[0]),
    lambda fig: gv.plot_ghm_stats(fig, HISTORY[1]),
])
def test_figures_have_labelled_axes(draw):
    fig = plt.figure()
    try:
        draw(fig)
        main_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]
        assert main_axes
        for ax in main_axes:
            assert ax.get_ylabel(), f"unlabelled y axis in {_titles(fig)}"
        assert any(ax.get_xlabel() for ax in main_axes)
        assert any(_titles(fig))
    finally:
        plt.close(fig)


def test_density_scrubber_frames_draw_without_layout_warnings():
    """The notebook's epoch scrubber draws on a constrained-layout figure: no warning per frame,
    and every epoch gives a different picture."""
    import warnings

    from gradkit.viz.scrubber import Scrubber

    scrubber = Scrubber(lambda fig, e: gv.plot_density_epoch(fig, {"ghm": HISTORY}, e), [1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frames = [scrubber.render_png(e) for e in (1, 2)]
    assert frames[0] != frames[1]
