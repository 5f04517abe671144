"""Label-induced against data-induced class structure: each statistic against its label-permuted
control (gradkit.analysis.control, gradkit.stats.compare_to_control)."""

import numpy as np
import pytest
import torch

from gradkit.analysis.control import (
    STATISTICS,
    control_epochs,
    excess_table,
    label_control,
    neighbour_class_share,
    structure_stats,
    within_split_permutation,
)
from gradkit.grads import Gram, gradient_gram
from gradkit.stats import compare_to_control
from gradkit.training import TrainConfig, get_run, sample_loss
from tests.analysis.test_learnability import noise_recordings

C, PER_CLASS, R = 3, 10, 6


def labels() -> np.ndarray:
    return np.repeat(np.arange(C), PER_CLASS)


def label_gradients(y, rng, spread=0.05) -> torch.Tensor:
    """A class head's CE gradients at a uniform output: ``(1/C - onehot(y)) h_i^T`` with
    features ``h_i`` that know nothing of the class: all structure comes from the labels."""
    h = 1.0 + spread * rng.standard_normal((len(y), 8))
    head = np.full((len(y), C), 1 / C) - np.eye(C)[y]
    return torch.tensor(np.einsum("nc,nd->ncd", head, h).reshape(len(y), -1))


def data_gradients(y, rng) -> torch.Tensor:
    """Gradients that cluster by the recordings' class whatever label they are read under."""
    centres = rng.standard_normal((C, 12)) * 3
    return torch.tensor(centres[y] + rng.standard_normal((len(y), 12)))


def test_purely_label_induced_structure_is_at_its_control_level():
    rng = np.random.default_rng(0)
    y = labels()
    observed = {1: structure_stats(Gram.of_rows(label_gradients(y, rng)), y)}
    assert observed[1]["silhouette"] > 0.9  # strong blocks, from the labels alone
    controls = []
    for r in range(R):
        y_r = y[within_split_permutation(len(y), len(y), r)]
        controls.append({1: structure_stats(Gram.of_rows(label_gradients(y_r, rng)), y_r)})
    table = excess_table(observed, controls)
    assert sorted(table.statistic) == sorted(STATISTICS)
    assert (table.verdict == "at its control level").all(), table[["statistic", "verdict"]]
    assert table.sentence.str.contains("at its label-permuted control level").all()


def test_data_induced_structure_exceeds_its_control_with_an_interval_above_zero():
    rng = np.random.default_rng(1)
    y = labels()
    G = data_gradients(y, rng)
    observed = {1: structure_stats(G, y)}
    # the recordings stay, the labels move: the data's clusters no longer follow the classes
    controls = [{1: structure_stats(G, y[within_split_permutation(len(y), len(y), r)])}
                for r in range(R)]
    table = excess_table(observed, controls).set_index("statistic")
    for name in ("silhouette", "class_gap", "within_class", "tsne_silhouette",
                 "tsne_same_class"):
        row = table.loc[name]
        assert row.verdict == "exceeds its control", (name, row.sentence)
        assert row.ci_low > 0 and row.excess > 0.2, (name, row.sentence)
        assert row.sentence.startswith(f"the {STATISTICS[name]} exceeds its label-permuted "
                                       "control by ")
    assert table.loc["between_class", "verdict"] == "lies below its control"


def test_compare_to_control_counts_the_observations_own_spread():
    # one draw of the control's own distribution is called "exceeds" at about rate alpha
    rng = np.random.default_rng(2)
    draws = rng.standard_normal((4000, 5))
    calls = np.mean([compare_to_control(d[0], d[1:]).detected for d in draws])
    assert 0.03 < calls < 0.07, calls
    # a control without spread cannot show an excess below 20 draws (rank test)
    assert compare_to_control(0.7, [0.46] * 4).verdict == "at its control level"
    assert compare_to_control(0.7, [0.46] * 20).verdict == "at its control level"  # p = 2/21
    assert compare_to_control(0.7, [0.46] * 40).verdict == "exceeds its control"
    assert compare_to_control(0.5, [0.4]).verdict == "not testable"
    with pytest.raises(ValueError, match=r"control\[1\]"):
        compare_to_control(0.5, [0.4, np.nan])


def test_within_split_permutation_keeps_each_split_and_checks_its_input():
    order = within_split_permutation(6, 10, 3)
    assert sorted(order[:6]) == list(range(6)) and sorted(order[6:]) == list(range(6, 10))
    assert not np.array_equal(order, np.arange(10))
    with pytest.raises(ValueError, match="n_train"):
        within_split_permutation(0, 10, 0)
    assert control_epochs([5, 10, 15, 20, 25]) == [5, 15, 25]
    assert control_epochs([5, 6]) == [5, 6]


def test_neighbour_class_share_reads_a_map():
    emb = np.array([[0, 0], [0, 1], [10, 0], [10, 1]], dtype=float)
    assert neighbour_class_share(emb, [0, 0, 1, 1], k=1) == 1.0
    assert neighbour_class_share(emb, [0, 1, 0, 1], k=1) == 0.0
    with pytest.raises(ValueError, match="k must"):
        neighbour_class_share(emb, [0, 0, 1, 1], k=4)


def test_on_a_no_signal_folder_the_statistics_are_at_their_control_level(tmp_path,
                                                                        monkeypatch):
    """Every class folder drawn from one distribution: whatever blocks the gradients show, the
    label-permuted control shows them too, and the sentences say so."""
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path / "project"))
    (tmp_path / "project").mkdir()
    root = noise_recordings(tmp_path / "noise")
    torch.set_num_threads(1)
    run = get_run(TrainConfig(objective="ghm", epochs=10, material="m", freq_hz=700,
                              data_root=str(root)), progress=False)
    split = run.split
    x, y = torch.cat([split.x_train, split.x_val]), torch.cat([split.y_train, split.y_val])
    grams = {e: Gram(gradient_gram(run.load_model(e), sample_loss, x, y))
             for e in control_epochs(run.checkpoint_epochs)}
    table = label_control(run, grams, y, permutations=4)
    assert set(table.epoch) == {5, 10} and len(table) == 2 * len(STATISTICS)
    assert table.loc[table.statistic == "silhouette", "observed"].min() > 0.5  # blocks seen
    assert (table.verdict == "at its control level").all(), table[["epoch", "statistic",
                                                                   "sentence"]]
    assert table.sentence.str.contains("at its label-permuted control level").all()
    assert not table.sentence.str.contains("exceeds").any()
    with pytest.raises(ValueError, match="labels must be"):
        label_control(run, grams, y.flip(0), permutations=2)


def test_the_sentence_helpers_read_one_row_and_compare_two_intervals():
    from gradkit.analysis.control import excess_change, excess_headline, excess_sentence

    def stats(shift):
        return {"silhouette": 0.5 + shift, "share_negative": 0.4}

    observed = {5: stats(0.0), 60: stats(0.6)}
    controls = [{5: stats(d), 60: stats(d)} for d in (-0.02, -0.01, 0.01, 0.02)]
    table = excess_table(observed, controls)
    assert excess_sentence(table, 60, "silhouette").startswith(
        "the class silhouette exceeds its label-permuted control by 0.60 [")
    assert excess_headline(table, 5, "silhouette").endswith("at epoch 5 (at its control level)")
    # an observation equal to a control without spread: the interval (0, 0)
    assert excess_headline(table, 5, "share_negative") == (
        "+0.00 [+0.00, +0.00] at epoch 5 (at its control level)")
    assert excess_change(table, "silhouette", 5, 60).endswith("(higher)")
    assert excess_change(table, "silhouette", 5, 60).startswith("went +0.00 \u2192 +0.60")
    assert excess_change(table, "silhouette", 5, 5) == "was +0.00"
    assert excess_change(table, "share_negative", 5, 60).endswith("(no detectable change)")
    with pytest.raises(KeyError, match="epoch 7"):
        excess_sentence(table, 7, "silhouette")


def test_a_control_without_spread_is_tested_two_sided():
    """All control draws equal: the rank test's p is two-sided like the t-test's, so 20 draws
    cannot show an excess (p = 2/21) and 40 can (p = 2/41)."""
    from gradkit.stats import compare_to_control

    assert compare_to_control(1.0, [0.0] * 20).p_value > 0.05
    assert compare_to_control(1.0, [0.0] * 20).verdict == compare_to_control(
        0.0, [0.0] * 20).verdict
    assert compare_to_control(1.0, [0.0] * 40).p_value < 0.05
