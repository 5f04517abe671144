"""GHM-C (softmax, sigmoid), pairwise ranking and GHMRanking against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gradkit.losses import (
    GHMC,
    GHMRanking,
    bin_edges,
    bin_index,
    ghm_weights,
    pairwise_ranking_loss,
    ranking_margins,
    ranking_pairs,
)

# -- a hand-made softmax batch: 4 samples, 3 classes, probabilities chosen away from bin edges --
# rows are softmax outputs; g = 1 - p_true = 0.05 (bin 0), 0.15 (bin 1), 0.18 (bin 1), 0.75 (bin 7)
PROBS_A = torch.tensor(
    [[0.95, 0.03, 0.02], [0.10, 0.85, 0.05], [0.08, 0.10, 0.82], [0.25, 0.40, 0.35]],
    dtype=torch.float64,
)
TARGET_A = torch.tensor([0, 1, 2, 0])
# g = 0.05 (bin 0) and 0.95 (bin 9)
PROBS_B = torch.tensor([[0.95, 0.03, 0.02], [0.05, 0.90, 0.05]], dtype=torch.float64)
TARGET_B = torch.tensor([0, 0])

CE = {p: -math.log(p) for p in (0.95, 0.85, 0.82, 0.25, 0.05)}


def _logits(probs: torch.Tensor) -> torch.Tensor:
    return probs.log().clone().requires_grad_(True)


def test_edges_and_g_equal_one_lands_in_last_bin():
    edges = bin_edges(10)
    assert edges[0] == 0 and edges[5] == pytest.approx(0.5)
    assert edges[-1] == pytest.approx(1.0 + 1e-6, abs=1e-7) and edges[-1] > 1.0
    g = torch.tensor([0.0, 0.05, 0.5, 0.999, 1.0, 1.01, -0.1])
    assert bin_index(g, edges).tolist() == [0, 0, 5, 9, 9, 10, -1]
    out = ghm_weights(g, torch.ones_like(g, dtype=torch.bool), edges, None, momentum=0.0)
    # 1.01 and -0.1 fall outside every bin: counted in tot (7) but weighted 0, like mmdetection
    assert out["counts"].tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert out["tot"] == 7 and out["nonempty"] == 3
    assert out["weights"][-2:].tolist() == [0.0, 0.0]
    assert out["weights"][4] == pytest.approx(7 / 2 / 3)


def test_softmax_g_one_in_last_bin():
    ghm = GHMC(bins=10, momentum=0.0)
    logits = torch.tensor([[0.0, -200.0, 0.0], [5.0, 0.0, 0.0]])  # p_true = 0 for sample 0
    ghm(logits, torch.tensor([1, 0]))
    assert ghm.last_g[0] == 1.0
    assert ghm.last_counts[-1] == 1 and ghm.last_counts.sum() == 2


def test_softmax_no_momentum_hand_computed():
    ghm = GHMC(bins=10, momentum=0.0)
    logits = _logits(PROBS_A)
    loss = ghm(logits, TARGET_A)
    assert torch.allclose(ghm.last_g, torch.tensor([0.05, 0.15, 0.18, 0.75], dtype=torch.float64))
    assert ghm.last_counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 1, 0, 0]
    # tot = 4 samples, n = 3 non-empty bins, w = tot / count / n
    w = [4 / 1 / 3, 4 / 2 / 3, 4 / 2 / 3, 4 / 1 / 3]
    assert ghm.last_weights[[0, 1, 7]].tolist() == pytest.approx([4 / 3, 2 / 3, 4 / 3])
    expected = (w[0] * CE[0.95] + w[1] * CE[0.85] + w[2] * CE[0.82] + w[3] * CE[0.25]) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(0.539357, abs=1e-5)  # the same number worked by hand
    assert ghm.acc_sum.abs().sum() == 0  # no EMA without momentum
    loss.backward()  # g is detached: the gradient is the weighted CE gradient
    p = PROBS_A.clone()
    onehot = F.one_hot(TARGET_A, 3).double()
    expected_grad = torch.tensor(w, dtype=torch.float64)[:, None] * (p - onehot) / 4
    assert torch.allclose(logits.grad, expected_grad, atol=1e-6)


def test_softmax_momentum_three_steps_hand_computed():
    ghm = GHMC(bins=10, momentum=0.75)
    assert ghm.acc_sum.tolist() == [0.0] * 10  # zero-initialised like mmdetection
    # step 1 (batch A): acc = 0.25 * count for bins 0, 1, 7
    ghm(_logits(PROBS_A), TARGET_A)
    assert ghm.acc_sum[[0, 1, 7]].tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert ghm.last_weights[[0, 1, 7]].tolist() == pytest.approx([16 / 3, 8 / 3, 16 / 3])
    # step 2 (batch B, bins 0 and 9): untouched bins keep their EMA
    ghm(_logits(PROBS_B), TARGET_B)
    assert ghm.acc_sum[[0, 1, 7, 9]].tolist() == pytest.approx([0.4375, 0.5, 0.25, 0.25])
    assert ghm.last_weights[[0, 9]].tolist() == pytest.approx([2 / 0.4375 / 2, 2 / 0.25 / 2])
    # step 3 (batch A again)
    loss = ghm(_logits(PROBS_A), TARGET_A)
    acc = [0.578125, 0.875, 0, 0, 0, 0, 0, 0.4375, 0, 0.25]
    assert ghm.acc_sum.tolist() == pytest.approx(acc)
    w0, w1, w7 = 4 / 0.578125 / 3, 4 / 0.875 / 3, 4 / 0.4375 / 3
    expected = (w0 * CE[0.95] + w1 * (CE[0.85] + CE[0.82]) + w7 * CE[0.25]) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert ghm.last_acc.tolist() == pytest.approx(acc)


def test_loss_weight_scales():
    a = GHMC(momentum=0.0)(_logits(PROBS_A), TARGET_A)
    b = GHMC(momentum=0.0, loss_weight=2.5)(_logits(PROBS_A), TARGET_A)
    assert b.item() == pytest.approx(2.5 * a.item())


@pytest.mark.parametrize("mode", ["eval", "flag", "frozen"])
def test_evaluation_never_updates_ema(mode):
    ghm = GHMC(momentum=0.75)
    ghm(_logits(PROBS_A), TARGET_A)
    before = ghm.acc_sum.clone()
    if mode == "eval":
        ghm.eval()
        ghm(_logits(PROBS_B), TARGET_B)
    elif mode == "flag":
        ghm(_logits(PROBS_B), TARGET_B, update_state=False)
    else:
        with ghm.frozen():
            ghm(_logits(PROBS_B), TARGET_B, update_state=True)
    assert torch.equal(ghm.acc_sum, before)
    # the evaluation weights are those of a hypothetical next step: acc_0 = 0.75*0.25 + 0.25
    assert ghm.last_acc[0].item() == pytest.approx(0.4375)
    ghm.train()
    ghm(_logits(PROBS_B), TARGET_B)  # training again updates
    assert ghm.acc_sum[0].item() == pytest.approx(0.4375)


def test_state_dict_round_trip():
    ghm = GHMC(momentum=0.75)
    ghm(_logits(PROBS_A), TARGET_A)
    state = ghm.state_dict()
    assert set(state) == {"edges", "acc_sum"}
    fresh = GHMC(momentum=0.75)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.acc_sum, ghm.acc_sum)
    assert fresh(_logits(PROBS_B), TARGET_B).item() == ghm(_logits(PROBS_B), TARGET_B).item()


def test_softmax_bad_input_errors():
    ghm = GHMC()
    with pytest.raises(ValueError, match="target values"):
        ghm(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="target must be integer"):
        ghm(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="pred must be"):
        ghm(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="momentum"):
        GHMC(momentum=1.0)
    with pytest.raises(ValueError, match="bins"):
        GHMC(bins=0)


def test_empty_batch_is_zero_with_grad():
    logits = torch.zeros(0, 3, requires_grad=True)
    loss = GHMC()(logits, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0


# -- sigmoid mode ---------------------------------------------------------------------------------
# sigmoid(pred) = P; g = |P - T| = .08 (b0), .35 (b3), .33 (b3), .65 (b6), [.80 masked], .04 (b0)
P_SIG = torch.tensor([[0.92, 0.35, 0.33], [0.65, 0.20, 0.04]], dtype=torch.float64)
T_SIG = torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=torch.float64)
LW_SIG = torch.tensor([[1.0, 1, 1], [1, 0, 1]], dtype=torch.float64)


def test_sigmoid_hand_computed_with_and_without_momentum():
    pred = torch.logit(P_SIG)
    bce = -(math.log(0.92) + math.log(0.96)), -(math.log(0.65) + math.log(0.67)), -math.log(0.35)
    # tot = 5 valid elements, counts b0 = 2, b3 = 2, b6 = 1, n = 3
    plain = (5 / 2 / 3 * bce[0] + 5 / 2 / 3 * bce[1] + 5 / 1 / 3 * bce[2]) / 5
    ghm0 = GHMC(momentum=0.0, use_sigmoid=True)
    assert ghm0(pred, T_SIG, LW_SIG).item() == pytest.approx(plain, rel=1e-6)
    assert ghm0.last_counts.tolist() == [2, 0, 0, 2, 0, 0, 1, 0, 0, 0]
    assert ghm0.last_tot == 5
    # first step with momentum 0.75: acc = 0.25 * count, so every weight is 4x
    ghm = GHMC(momentum=0.75, use_sigmoid=True)
    assert ghm(pred, T_SIG, LW_SIG).item() == pytest.approx(4 * plain, rel=1e-6)
    # the label weight is only a mask: its value does not scale the loss
    assert ghm0(pred, T_SIG, 3 * LW_SIG).item() == pytest.approx(plain, rel=1e-6)


def _mmdet_formula(pred, target, label_weight, bins, momentum, acc):
    """A direct, element-by-element transcription of mmdetection's GHM-C definition."""
    edges = [i / bins for i in range(bins + 1)]
    edges[-1] += 1e-6
    p = torch.sigmoid(pred).detach()
    g = (p - target).abs()
    valid = label_weight > 0
    tot = max(float(valid.sum()), 1.0)
    weights = torch.zeros_like(pred)
    filled = 0
    for b in range(bins):
        members = [
            (r, c)
            for r in range(pred.shape[0])
            for c in range(pred.shape[1])
            if valid[r, c] and edges[b] <= g[r, c] < edges[b + 1]
        ]
        if not members:
            continue
        filled += 1
        if momentum > 0:
            acc[b] = momentum * acc[b] + (1 - momentum) * len(members)
            denominator = acc[b]
        else:
            denominator = len(members)
        for r, c in members:
            weights[r, c] = tot / denominator
    if filled:
        weights = weights / filled
    loss = F.binary_cross_entropy_with_logits(pred, target, weights, reduction="sum") / tot
    return loss, acc


@pytest.mark.parametrize("momentum", [0.0, 0.75])
def test_sigmoid_matches_mmdet_formula_over_steps(momentum):
    gen = torch.Generator().manual_seed(0)
    ghm = GHMC(bins=10, momentum=momentum, use_sigmoid=True, loss_weight=0.7)
    acc = [0.0] * 10
    for _ in range(4):
        pred = (torch.randn(6, 5, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
        target = (torch.rand(6, 5, generator=gen) < 0.3).double()
        label_weight = (torch.rand(6, 5, generator=gen) < 0.8).double()
        ours = ghm(pred, target, label_weight)
        ref, acc = _mmdet_formula(pred, target, label_weight, 10, momentum, acc)
        assert ours.item() == pytest.approx(0.7 * ref.item(), rel=1e-6)
        if momentum > 0:
            assert ghm.acc_sum.tolist() == pytest.approx(acc, rel=1e-6)
        (g_ours,) = torch.autograd.grad(ours, pred)
        (g_ref,) = torch.autograd.grad(0.7 * ref, pred)
        assert torch.allclose(g_ours, g_ref, atol=1e-8)


def test_sigmoid_index_targets_expand_to_onehot():
    pred = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 2, 3, 1])  # 3 is out of range: an all-zero row, like mmdetection
    lw = torch.tensor([1.0, 1.0, 1.0, 0.0])
    a = GHMC(momentum=0.0, use_sigmoid=True)(pred, labels, lw)
    onehot = torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]])
    b = GHMC(momentum=0.0, use_sigmoid=True)(pred, onehot, lw[:, None].expand(4, 3))
    assert a.item() == pytest.approx(b.item())


# -- ranking --------------------------------------------------------------------------------------
SCORES = torch.tensor([0.0, 5.0, 30.0, 12.0], dtype=torch.float64)
ANGLES = torch.tensor([0.0, 36.0, 72.0, 36.0], dtype=torch.float64)
# pairs (0,1) (0,2) (0,3) (1,2) (3,2); z = s_j - s_i - 10 = -5, 20, 2, 15, 8


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_ranking_pairs_and_margins():
    i, j = ranking_pairs(ANGLES)
    pairs = list(zip(i.tolist(), j.tolist(), strict=True))
    assert pairs == [(0, 1), (0, 2), (0, 3), (1, 2), (3, 2)]
    assert ranking_margins(SCORES, ANGLES, 10.0).tolist() == [-5.0, 20.0, 2.0, 15.0, 8.0]


def test_ranking_loss_value_and_gradient_norm():
    scores = SCORES.clone().requires_grad_(True)
    loss = pairwise_ranking_loss(scores, ANGLES, margin=10.0)
    z = [-5.0, 20.0, 2.0, 15.0, 8.0]
    assert loss.item() == pytest.approx(sum(_softplus(-v) for v in z) / 5, rel=1e-12)
    assert loss.item() == pytest.approx(1.026796, abs=1e-6)  # worked by hand
    # per-pair gradient norm |d softplus(-z)/dz| = sigmoid(-z), checked by autograd on z
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    (dz,) = torch.autograd.grad(F.softplus(-zt).sum(), zt)
    assert torch.allclose(dz.abs(), torch.sigmoid(-zt.detach()))
    # and the gradient on the scores by central finite differences
    loss.backward()
    eps = 1e-6
    for k in range(4):
        up, down = SCORES.clone(), SCORES.clone()
        up[k] += eps
        down[k] -= eps
        fd = (pairwise_ranking_loss(up, ANGLES) - pairwise_ranking_loss(down, ANGLES)) / (2 * eps)
        assert scores.grad[k].item() == pytest.approx(fd.item(), abs=1e-7)
    leaf = SCORES.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: pairwise_ranking_loss(s, ANGLES), (leaf,))


def test_ranking_no_pairs_is_zero_with_grad():
    scores = torch.tensor([1.0, 2.0], requires_grad=True)
    same = torch.tensor([36.0, 36.0])
    loss = pairwise_ranking_loss(scores, same)
    loss.backward()
    assert loss.item() == 0.0 and scores.grad.tolist() == [0.0, 0.0]
    ghm = GHMRanking()
    loss = ghm(scores, same)
    loss.backward()
    assert loss.item() == 0.0 and ghm.acc_sum.sum() == 0 and ghm.last_tot == 1


def test_ghm_ranking_hand_computed():
    # g = sigmoid(-z) = 0.9933 (b9), ~2e-9 (b0), 0.1192 (b1), ~3e-7 (b0), 3.4e-4 (b0)
    sp = {v: _softplus(-v) for v in (-5.0, 20.0, 2.0, 15.0, 8.0)}
    ghm = GHMRanking(bins=10, momentum=0.0, margin=10.0)
    loss = ghm(SCORES.clone().requires_grad_(True), ANGLES)
    assert ghm.last_counts.tolist() == [3, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    # tot = 5 pairs, n = 3 bins: w_b0 = 5/3/3, w_b1 = w_b9 = 5/1/3
    expected = (5 / 3 * (sp[-5.0] + sp[2.0]) + 5 / 9 * (sp[20.0] + sp[15.0] + sp[8.0])) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    assert torch.allclose(ghm.last_g, torch.sigmoid(-torch.tensor([-5.0, 20, 2, 15, 8])).double())


def test_ghm_ranking_momentum_and_eval_mirror_ghmc():
    """GHMRanking on z harmonises exactly like GHM-C: same EMA, same weights for the same g."""
    gen = torch.Generator().manual_seed(3)
    rank = GHMRanking(bins=10, momentum=0.75, margin=10.0)
    acc = torch.zeros(10)
    for _ in range(3):
        scores = torch.randn(8, generator=gen) * 10
        angles = torch.randint(0, 6, (8,), generator=gen).float() * 36
        rank(scores, angles)
        g = torch.sigmoid(-ranking_margins(scores, angles, 10.0))
        ref = ghm_weights(g, torch.ones_like(g, dtype=torch.bool), bin_edges(10), acc, 0.75)
        acc = ref["acc"]
        assert torch.allclose(rank.acc_sum, acc)
        assert torch.allclose(rank.last_weights, ref["bin_weights"])
    before = rank.acc_sum.clone()
    rank(scores, angles, update_state=False)
    rank.eval()
    rank(scores, angles)
    assert torch.equal(rank.acc_sum, before)
    assert set(rank.state_dict()) == {"edges", "acc_sum"}
    assert rank.diagnostics()["counts"].sum() == rank.last_tot


def test_ranking_bad_input():
    with pytest.raises(ValueError, match="scores and angles"):
        pairwise_ranking_loss(torch.zeros(3), torch.zeros(4))
