"""Tests for the multi-task pieces (training, losses, weighting, events): each could fail."""

from __future__ import annotations

import math

import pytest
import torch

from gradkit.analysis.multitask import run_table, summarise
from gradkit.core.params import count_parameters
from gradkit.data.events import CLASSES, make_event_data
from gradkit.grads.similarity import cosine, magnitude_similarity
from gradkit.losses import (
    FixedWeights,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    box_iou,
    classification_loss,
    decode_boxes,
    detection_loss,
    encode_boxes,
    pcgrad_project,
)
from gradkit.models import SharedNet
from gradkit.training.multitask import MultitaskConfig, make_method, train_multitask


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: one intra-op thread is faster, most of all on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the task -------------------------------------------------------------------------------------
def test_event_data_is_deterministic():
    a, b = make_event_data(64, seed=3), make_event_data(64, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.boxes, b.boxes)
    assert torch.equal(a.labels, b.labels)
    c = make_event_data(64, seed=4)
    assert not torch.equal(a.x, c.x)


def test_event_data_boxes_hold_the_event():
    d = make_event_data(200, seed=0, noise=0.0)
    assert d.x.shape == (200, 1, 16, 16)
    assert torch.bincount(d.labels, minlength=len(CLASSES)).tolist() == [50, 50, 50, 50]
    extent = d.boxes[:, 2:] - d.boxes[:, :2]
    assert (extent >= 2).all() and (extent <= 8).all()
    assert (d.boxes[:, :2] >= 0).all() and (d.boxes[:, 2:] <= 16).all()
    for img, (t0, f0, t1, f1) in zip(d.x[:, 0], d.boxes.long().tolist(), strict=True):
        inside = torch.zeros_like(img, dtype=torch.bool)
        inside[f0:f1, t0:t1] = True
        assert img[~inside].abs().max() == 0          # without noise nothing outside the box
        lit = img[inside] > 0
        # the event reaches all four edges of its box (the box is tight)
        box = lit.view(f1 - f0, t1 - t0)
        assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()


def test_event_data_rejects_bad_input():
    with pytest.raises(ValueError, match="max_extent"):
        make_event_data(4, max_extent=20)
    with pytest.raises(ValueError, match="n must be"):
        make_event_data(0)


# -- boxes ----------------------------------------------------------------------------------------
def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2]])
    b = torch.tensor([[0.0, 0, 2, 2], [1, 0, 3, 2], [5, 5, 6, 6]])
    assert torch.allclose(box_iou(a, b), torch.tensor([1.0, 1 / 3, 0.0]))


def test_encode_decode_round_trip():
    boxes = make_event_data(50, seed=1).boxes
    cell, target = encode_boxes(boxes, size=16, grid=4)
    assert ((target >= 0) & (target <= 1)).all()
    det = torch.full((50, 5, 4, 4), -5.0)
    det[:, 0].view(50, -1)[torch.arange(50), cell] = 5.0     # objectness at the responsible cell
    logit = torch.logit(target.clamp(1e-6, 1 - 1e-6))
    det[:, 1:].reshape(50, 4, -1)[torch.arange(50), :, cell] = logit
    assert torch.allclose(decode_boxes(det, size=16), boxes, atol=1e-4)


def test_shared_net_size_is_the_one_the_docstring_quotes():
    """The module docstring says 1,237 parameters (the study's model had 1,224): keep it true."""
    import gradkit.models.multitask as mt

    n = count_parameters(SharedNet())
    assert n == 1237 and f"{n:,} parameters" in mt.__doc__
    assert count_parameters(mt.TwoBackbones()) > n  # nothing shared: more parameters


# -- gradient measurements ------------------------------------------------------------------------
def test_cosine_and_magnitude_similarity():
    g1, g2 = torch.tensor([3.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert cosine(g1, g2) == pytest.approx(-1 / math.sqrt(2))
    assert magnitude_similarity(g1, g2) == pytest.approx(2 * 3 * math.sqrt(2) / (9 + 2))
    assert magnitude_similarity(g1, 2 * g1) == pytest.approx(0.8)
    assert magnitude_similarity(g1, g1) == pytest.approx(1.0)


# -- GradNorm -------------------------------------------------------------------------------------
def _real_losses(model, data):
    det, logits = model(data.x)
    return [detection_loss(det, data.boxes, data.size), classification_loss(logits, data.labels)]


@pytest.mark.parametrize("init, det_scale", [(None, 1.0), ((1.0, 0.01), 1000.0)])
def test_gradnorm_weights_positive_and_sum_to_T_every_step(init, det_scale):
    """Also from the study's starting point with a 1000x louder detection loss: no collapse."""
    torch.manual_seed(0)
    data = make_event_data(32, seed=0)
    model = SharedNet()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gn = GradNorm(2, alpha=1.5, lr=0.025, init_weights=init)
    for _ in range(40):
        opt.zero_grad()
        det, cls = _real_losses(model, data)
        total = gn.backward([det_scale * det, cls], model.last_shared_parameters())
        opt.step()
        assert torch.isfinite(total)
        assert (gn.weights > 0).all(), gn.weights
        assert float(gn.weights.sum()) == pytest.approx(2.0, abs=1e-5)
    assert float(gn.weights.min()) > 1e-3


def test_gradnorm_writes_gradient_of_weighted_total():
    torch.manual_seed(0)
    data = make_event_data(16, seed=0)
    model = SharedNet()
    gn = GradNorm(2, init_weights=(0.5, 1.5))
    losses = _real_losses(model, data)
    expected = torch.autograd.grad(0.5 * losses[0] + 1.5 * losses[1], model.parameters(),
                                   retain_graph=True)
    w_before = gn.weights.clone()
    gn.backward(losses, model.last_shared_parameters())
    for p, e in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, e, atol=1e-6)
    assert not torch.equal(gn.weights, w_before)       # and the weights moved for the next step


def test_gradnorm_alpha0_equalises_weighted_gradient_norms():
    """Raw gradients on W differ 10x; with alpha = 0 GradNorm makes w_1 |g_1| = w_2 |g_2|."""
    W = torch.nn.Parameter(torch.zeros(3))
    u1, u2 = torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0.6, 0.8])
    gn = GradNorm(2, alpha=0.0, lr=0.025)
    ratios = []
    for _ in range(300):
        W.grad = None
        losses = [10 * (u1 @ W) + 5, (u2 @ W) + 5]      # |grad_W L_1| = 10, |grad_W L_2| = 1
        w = gn.weights.clone()
        gn.backward(losses, [W])
        assert torch.allclose(W.grad, w[0] * 10 * u1 + w[1] * u2)
        ratios.append(float(gn.last["G"][0] / gn.last["G"][1]))
    assert ratios[0] == pytest.approx(10.0)
    assert all(0.9 < r < 1.1 for r in ratios[-50:]), ratios[-50:]
    assert gn.weights.tolist() == pytest.approx([2 / 11, 20 / 11], rel=0.06)


def test_gradnorm_validates_arguments():
    with pytest.raises(ValueError, match="init_weights"):
        GradNorm(2, init_weights=(1.0, 0.0))
    with pytest.raises(ValueError, match="expected 2 losses"):
        GradNorm(2).backward([torch.tensor(1.0, requires_grad=True)], [torch.zeros(1)])


# -- PCGrad ---------------------------------------------------------------------------------------
def test_pcgrad_projects_a_conflicting_pair_by_its_formula():
    g1, g2 = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-1.0, 1.0, 0.2])
    assert g1 @ g2 < 0
    out = pcgrad_project(torch.stack([g1, g2]))
    assert torch.allclose(out[0], g1 - (g1 @ g2) / (g2 @ g2) * g2)
    assert torch.allclose(out[1], g2 - (g2 @ g1) / (g1 @ g1) * g1)
    assert abs(float(out[0] @ g2)) < 1e-6 and abs(float(out[1] @ g1)) < 1e-6


def test_pcgrad_leaves_a_non_conflicting_pair_untouched():
    grads = torch.tensor([[1.0, 2.0, 0.0], [0.5, -0.1, 3.0]])
    assert grads[0] @ grads[1] > 0
    assert torch.equal(pcgrad_project(grads), grads)


def test_pcgrad_backward_projects_shared_and_keeps_heads():
    torch.manual_seed(0)
    data = make_event_data(16, seed=0)
    model = SharedNet()
    shared = model.shared_parameters()
    losses = _real_losses(model, data)
    flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])  # noqa: E731
    g = [flat(torch.autograd.grad(loss, shared, retain_graph=True)) for loss in losses]
    heads = [p for p in model.parameters() if all(p is not q for q in shared)]
    head_expected = torch.autograd.grad(losses[0] + losses[1], heads, retain_graph=True)
    PCGrad(2).backward(losses, shared)
    expected = pcgrad_project(torch.stack(g)).sum(0)
    assert torch.allclose(flat([p.grad for p in shared]), expected, atol=1e-6)
    for p, e in zip(heads, head_expected, strict=True):
        assert torch.allclose(p.grad, e, atol=1e-6)


# -- uncertainty weighting and fixed weights ------------------------------------------------------
def test_uncertainty_weighting_formula_and_optimum():
    uw = UncertaintyWeighting(2)
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.3, -1.2]))
    L = [torch.tensor(2.0), torch.tensor(0.5)]
    expected = math.exp(-0.3) * 2.0 + 0.3 + math.exp(1.2) * 0.5 - 1.2
    assert uw.total(L).item() == pytest.approx(expected, rel=1e-6)
    assert uw.weights.tolist() == pytest.approx([math.exp(-0.3), math.exp(1.2)], rel=1e-6)
    # descending on s_i alone finds s_i = log L_i, i.e. weight 1 / L_i
    opt = torch.optim.SGD(uw.parameters(), lr=0.2)
    for _ in range(500):
        opt.zero_grad()
        uw.backward(L)
        opt.step()
    assert uw.weights.tolist() == pytest.approx([0.5, 2.0], rel=1e-3)


def test_fixed_weights_gradient():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    total = FixedWeights([1.0, 0.01]).backward([p.sum() * 3, (p ** 2).sum()])
    assert float(total) == pytest.approx(9 + 0.05)
    assert torch.allclose(p.grad, torch.tensor([3 + 0.02, 3 + 0.04]))


# -- training and summaries -----------------------------------------------------------------------
@pytest.mark.parametrize("method, backbone, last", [
    ("gradnorm", 1, 3), ("pcgrad", 2, 2), ("equal", 1, 1), ("two_backbones", 2, 0)])
def test_train_multitask_records_every_step(method, backbone, last):
    cfg = MultitaskConfig(method=method, epochs=2, n_train=64, n_test=32, batch_size=32)
    run = train_multitask(cfg)
    h = run.history
    assert len(h) == 4 and h["step"].tolist() == [0, 1, 2, 3]
    assert (h[["w_det", "w_cls"]] > 0).all().all()
    assert run.passes == {"backbone": backbone, "last_shared": last}
    assert set(run.metrics) == {"mean_iou", "iou50", "accuracy"}
    assert len(run.epoch_times) == 2 and all(t > 0 for t in run.epoch_times)
    assert run.steps == 4 and run.seconds_per_batch == pytest.approx(sum(run.epoch_times) / 4)
    assert set(run.initial_metrics) == set(run.metrics)
    assert run.initial_metrics != run.metrics                # training moved the network
    # peak step memory: at least parameters + gradients + Adam's two moments (4 copies)
    params = sum(p.numel() * p.element_size() for p in make_method(method)[0].parameters())
    assert run.peak_step_bytes > 4 * params
    if method == "two_backbones":
        assert "cosine" not in h and run.n_params > 1.8 * count_parameters(SharedNet())
    else:
        assert h["cosine"].between(-1, 1).all() and h["magsim"].between(0, 1).all()
        assert torch.allclose(torch.tensor(h["wgnorm_det"].values),
                              torch.tensor((h["w_det"] * h["gnorm_det"]).values))


def test_run_table_and_summarise():
    runs = [train_multitask(MultitaskConfig(method=m, seed=s, epochs=1, n_train=64, n_test=32))
            for m in ("gradnorm", "uncertainty") for s in (0, 1)]
    table = run_table(runs)
    assert table.method.tolist() == ["gradnorm", "gradnorm", "uncertainty", "uncertainty"]
    assert table.adapted_scalars.tolist() == [2, 2, 2, 2]
    summary = summarise(table)
    assert summary.index.tolist() == ["gradnorm", "uncertainty"]
    assert summary[("seeds", "n")].tolist() == [2, 2]
    gn = table[table.method == "gradnorm"].accuracy
    assert summary.loc["gradnorm", ("accuracy", "mean")] == pytest.approx(gn.mean())
    assert summary.loc["gradnorm", ("accuracy", "std")] == pytest.approx(gn.std())
