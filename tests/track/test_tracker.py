"""The tracker's numbers equal a per-sample loop on the same batches of a real training loop,
and its checks catch what would make them wrong."""

import importlib.util
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.grads.noise import StreamingNoiseScale, noise_scale
from gradkit.track import Tracker, TrackerCheckError, load_run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "track_your_training.py"


def _example():
    spec = importlib.util.spec_from_file_location("track_your_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _loop_grads(model, x, y, params=None, loss=F.cross_entropy):
    """``G[N, P]``: each sample's gradient of its own loss, one backward per sample."""
    params = list(model.parameters()) if params is None else params
    rows = []
    for i in range(len(y)):
        g = torch.autograd.grad(loss(model(x[i:i + 1]), y[i:i + 1]), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows).double()


def _close(got, want, rtol=1e-5):
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want,
                                                                           dtype=torch.float64)
    same = (got == want) | (got.isnan() & want.isnan())  # equal infinities (no signal yet)
    got, want = got[~same], want[~same]
    if not want.numel():
        return
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= rtol * scale, (got, want)


def _compare_with_loop(tmp_path, clips: int, batch: int) -> None:
    """The example's model and data, trained by AdamW: at every step the recorded norms,
    grad_sq, trace_sigma, b_simple, their EMA, grad_norm and update size, and the Gram matrix
    at logged steps, equal those of the per-sample loop on the same batch (1e-5 relative)."""
    ex = _example()
    torch.manual_seed(0)
    model = ex.make_model().double()
    x_all, y_all = ex.make_clips(clips, seed=1)
    x_all = x_all.double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tracker = Tracker(model, tmp_path / "run", gram_every=2, flush_every=3)
    want, grams, ema = [], {}, StreamingNoiseScale(ema=0.9)
    for step, i in enumerate(range(0, clips, batch)):
        x, y = x_all[i:i + batch], y_all[i:i + batch]
        G = _loop_grads(model, x, y)
        ns = noise_scale(G, batch_size=len(y), n_boot=0)
        norms = G.norm(dim=1)
        before = [p.detach().clone() for p in model.parameters()]
        ema.update(float(G.square().sum(1).mean()), ns.grad_sq, 1, len(y))
        with tracker.step(labels=y, epoch=0):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
        optimizer.step()
        moved = sum(float((p.detach() - b).square().sum())
                    for p, b in zip(model.parameters(), before, strict=True)) ** 0.5
        want.append((ns, norms, ema.b_simple, moved, float(loss.detach())))
        if step % 2 == 0:
            grams[step] = (G @ G.T, y.clone())
    tracker.close()
    run = load_run(tmp_path / "run")
    assert list(run.scalars["step"]) == list(range(clips // batch))
    for (_, row), (ns, norms, b_ema, moved, loss) in zip(run.scalars.iterrows(), want,
                                                          strict=True):
        q = torch.quantile(norms, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        _close([row.norm_min, row.norm_q10, row.norm_q50, row.norm_q90, row.norm_max],
               [norms.min(), *q, norms.max()])
        _close(row.grad_sq, ns.grad_sq)
        _close(row.grad_norm, math.sqrt(ns.grad_sq))
        _close(row.trace_sigma, ns.trace_sigma)
        _close(row.b_simple, ns.b_simple)
        _close(row.b_simple_ema, b_ema)
        _close(row.update_size, moved)
        assert row.loss == pytest.approx(loss, rel=1e-12)
        assert row.covered == 1.0
    assert sorted(run.grams) == list(range(0, clips // batch, 2))
    for step, (K, y) in grams.items():
        _close(run.grams[step], K)
        assert torch.equal(run.labels[step], y)
    assert run.meta["model"]["missing_parameters"] == []
    assert set(run.meta["model"]["tracked_modules"].values()) == {"Conv2d", "Linear"}


def test_b_simple_ema_equals_the_streaming_estimator_of_the_loop(tmp_path):
    """A strong signal (B_simple < N): the EMA is finite and that of the loop's numbers,
    carried across a restart of the tracker (replayed from the record)."""
    torch.manual_seed(0)
    model = nn.Linear(6, 3).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    ema = StreamingNoiseScale(ema=0.9)
    tracker = Tracker(model, tmp_path / "run", gram_every=0)
    for step in range(6):
        if step == 3:  # a new session on the same folder continues the EMA
            tracker.close()
            tracker = Tracker(model, tmp_path / "run", gram_every=0)
        x = torch.randn(16, 6, dtype=torch.float64) + 2.0
        y = torch.zeros(16, dtype=torch.long)
        G = _loop_grads(model, x, y)
        ema.update(float(G.square().sum(1).mean()), noise_scale(G, 16, n_boot=0).grad_sq, 1, 16)
        optimizer.zero_grad()
        _train_one(tracker, model, x, y, F.cross_entropy)
        optimizer.step()
    tracker.close()
    got = load_run(tmp_path / "run").scalars
    assert list(got["session"]) == [0, 0, 0, 1, 1, 1] and list(got["step"]) == list(range(6))
    assert math.isfinite(ema.b_simple)
    _close(got["b_simple_ema"].iloc[-1], ema.b_simple)


def test_recorded_statistics_equal_a_per_sample_loop(tmp_path):
    _compare_with_loop(tmp_path, clips=24, batch=8)


@pytest.mark.slow
def test_recorded_statistics_equal_a_per_sample_loop_at_a_larger_batch(tmp_path):
    _compare_with_loop(tmp_path, clips=128, batch=32)


class _WithNorm(nn.Module):
    """A LayerNorm (tracked by its rule) and a learned offset ``pos`` added in ``forward``, a
    parameter of no layer (the hooks cannot read it)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(5, 8), nn.LayerNorm(8), nn.Linear(8, 3)
        self.pos = nn.Parameter(torch.randn(8) * 0.1)

    def forward(self, x):
        return self.fc2(torch.tanh(self.norm(self.fc1(x) + self.pos)))


def test_an_untracked_parameter_is_named_and_reported_missing_without_loss_fn(tmp_path):
    torch.manual_seed(0)
    model = _WithNorm().double()
    with pytest.warns(RuntimeWarning, match="'pos'.*Tracker\\(loss_fn") as said:
        tracker = Tracker(model, tmp_path / "run", gram_every=1)
    assert said[0].filename == __file__  # at the user's line
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    covered = [p for name, p in model.named_parameters() if name != "pos"]
    G = _loop_grads(model, x, y, covered)
    with tracker.step(labels=y):
        F.cross_entropy(model(x), y).backward()
    tracker.close()
    run = load_run(tmp_path / "run")
    _close(run.grams[0], G @ G.T)  # the covered parameters' Gram (LayerNorm's too), exactly
    row = run.scalars.iloc[0]
    _close(row.grad_sq, noise_scale(G, 6, n_boot=0).grad_sq)
    assert row.covered == pytest.approx(sum(p.numel() for p in covered) /
                                        sum(p.numel() for p in model.parameters()))
    assert run.meta["model"]["missing_parameters"] == ["pos"]
    assert run.meta["model"]["tracked_modules"] == {"fc1": "Linear", "norm": "LayerNorm",
                                                    "fc2": "Linear"}


class _Recurrent(nn.Module):
    """A GRU (a replay rule: not readable from the backward) between tracked layers, and a
    learned positional offset: both taken by the exact fallback."""

    def __init__(self):
        super().__init__()
        self.inp, self.gru, self.out = nn.Linear(4, 6), nn.GRU(6, 5, batch_first=True), \
            nn.Linear(5, 3)
        self.pos = nn.Parameter(torch.randn(7, 6) * 0.1)

    def forward(self, x):
        h, _ = self.gru(torch.tanh(self.inp(x) + self.pos))
        return self.out(h.mean(1))


def test_the_exact_fallback_covers_every_parameter_and_leaves_training_unchanged(tmp_path):
    """With loss_fn and inputs, the GRU's and ``pos``'s per-sample gradients come from the
    fallback: the recorded Gram and norms are the whole model's (the loop's), the first step
    states the fallback's measured cost, and the training (parameters after AdamW, buffers)
    is exactly that of the same loop without a tracker."""
    torch.manual_seed(0)
    model = _Recurrent().double()
    twin = _Recurrent().double()
    twin.load_state_dict(model.state_dict())
    opt, twin_opt = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (model, twin))
    with pytest.warns(RuntimeWarning, match="'gru'.*exact fallback") as said:
        tracker = Tracker(model, tmp_path / "run", gram_every=2, loss_fn=F.cross_entropy)
    assert said[0].filename == __file__
    grams = {}
    for step in range(3):
        x = torch.randn(5, 7, 4, dtype=torch.float64)
        y = torch.randint(0, 3, (5,))
        G = _loop_grads(model, x, y)
        if step % 2 == 0:
            grams[step] = G @ G.T
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            with tracker.step(labels=y, inputs=x):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
        if step == 0:
            cost = [w for w in got if "cost" in str(w.message)]
            assert cost and cost[0].filename == __file__, [str(w.message) for w in got]
        opt.step()
        twin_opt.zero_grad()
        F.cross_entropy(twin(x), y).backward()
        twin_opt.step()
        norms = G.norm(dim=1)
        want_norms = (norms.min(), norms.max())
    tracker.close()
    run = load_run(tmp_path / "run")
    for step, K in grams.items():
        _close(run.grams[step], K)
    last = run.scalars.iloc[-1]
    _close([last.norm_min, last.norm_max], want_norms)
    assert (run.scalars["covered"] == 1.0).all()
    assert run.meta["model"]["missing_parameters"] == []
    assert set(run.meta["model"]["fallback_parameters"]) >= {"pos", "gru.weight_ih_l0"}
    assert run.meta["fallback"]["ratio_to_step"] > 0
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q), name


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.mid, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(self.mid(torch.tanh(self.fc(torch.tanh(self.fc(x))))))


def test_a_module_called_twice_is_excluded_with_a_warning(tmp_path):
    torch.manual_seed(0)
    model = _Twice().double()
    tracker = Tracker(model, tmp_path / "run", gram_every=1)
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    with pytest.warns(RuntimeWarning, match="'fc': called more than once") as said:
        with tracker.step(labels=y):
            F.cross_entropy(model(x), y).backward()
    assert said[0].filename == __file__
    rest = [model.mid.weight, model.mid.bias, model.out.weight, model.out.bias]
    G = _loop_grads(model, x, y, rest)
    tracker.close()
    run = load_run(tmp_path / "run")
    _close(run.grams[0], G @ G.T)  # fc's contribution is missing, the rest exact
    assert run.meta["model"]["disabled_modules"]["fc"].startswith("called more than once")
    assert run.meta["model"]["missing_parameters"] == ["fc.weight", "fc.bias"]


def _train_one(tracker, model, x, y, loss_fn, inputs=None):
    with tracker.step(labels=y, inputs=inputs):
        loss = loss_fn(model(x), y)
        loss.backward()


def _summed(out, y):
    return F.cross_entropy(out, y, reduction="sum")


def test_a_loss_reduced_otherwise_than_declared_is_refused_with_loss_fn(tmp_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    tracker = Tracker(model, tmp_path / "run", loss_fn=_summed)  # declared: mean
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.raises(TrackerCheckError, match="not reduced as declared"):
        _train_one(tracker, model, x, y, _summed, inputs=x)
    model.zero_grad()
    summed = Tracker(model, tmp_path / "sum", reduction="sum")
    _train_one(summed, model, x, y, _summed)
    summed.close()
    G = _loop_grads(model, x, y)
    _close(load_run(tmp_path / "sum").scalars.iloc[0].trace_sigma,
           noise_scale(G, 8, n_boot=0).trace_sigma, rtol=1e-4)


def test_a_gradient_accumulated_over_two_backwards_is_refused(tmp_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    tracker = Tracker(model, tmp_path / "run")
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    F.cross_entropy(model(x), y).backward()  # an earlier backward, not zeroed
    with pytest.raises(TrackerCheckError, match="accumulated"):
        _train_one(tracker, model, x, y, F.cross_entropy)


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h + F.linear(h, self.a.weight))  # a's weight also used outside its call


def test_a_weight_used_outside_its_layer_is_excluded(tmp_path):
    model = _Tied()
    tracker = Tracker(model, tmp_path / "run")
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with pytest.warns(RuntimeWarning, match="'a': the sum of its per-sample gradients"):
        _train_one(tracker, model, x, y, F.cross_entropy)
    assert "a" in tracker.capture.disabled and "b" not in tracker.capture.disabled


def _coupled(out, y):
    """Cross-entropy plus a penalty on the batch's mean output: the samples interact."""
    return F.cross_entropy(out, y) + out.mean(0).square().sum()


def test_a_loss_coupling_the_samples_is_caught_with_loss_fn(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    plain = Tracker(model, tmp_path / "plain", loss_fn=F.cross_entropy)
    _train_one(plain, model, x, y, F.cross_entropy, inputs=x)  # passes
    plain.close()
    model.zero_grad()
    coupled = Tracker(model, tmp_path / "coupled", loss_fn=_coupled)
    with pytest.raises(TrackerCheckError, match="interact"):
        _train_one(coupled, model, x, y, _coupled, inputs=x)


def test_bad_arguments_and_folders_are_named(tmp_path):
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="reduction"):
        Tracker(model, tmp_path / "a", reduction="none")
    with pytest.raises(ValueError, match="gram_every"):
        Tracker(model, tmp_path / "a", gram_every=-1)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clip.wav").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not empty"):
        Tracker(model, tmp_path / "data")
    Tracker(model, tmp_path / "b").close()
    with pytest.raises(FileExistsError, match="resume=True"):
        Tracker(model, tmp_path / "b", resume=False)
    with pytest.raises(ValueError, match="meta.json"):
        Tracker(nn.Linear(3, 4), tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_run(tmp_path / "data")
    (tmp_path / "b" / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json"):
        load_run(tmp_path / "b")


def test_no_hooks_stay_outside_a_step(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    tracker = Tracker(model, tmp_path / "run")
    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tracker.step(labels=y):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            with torch.no_grad():  # an evaluation inside the step is no second call
                model(x)
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.Tensor.backward.__qualname__ == "Tensor.backward"


def test_a_grad_scaler_scale_is_divided_out_and_an_overflow_recorded_as_nan(tmp_path):
    """The loss multiplied by 1024 before backward (as a GradScaler does) records the same
    numbers as the plain step; a step with an infinite gradient gives NaN, and no error."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    rows = []
    for name, scale in (("plain", 1.0), ("scaled", 1024.0)):
        tracker = Tracker(model, tmp_path / name, gram_every=1)
        model.zero_grad()
        with tracker.step(labels=y, grad_scale=scale):
            (F.cross_entropy(model(x), y) * scale).backward()
        model.zero_grad()
        with tracker.step(labels=y, grad_scale=scale):  # an overflow
            (F.cross_entropy(model(x), y) * float("inf")).backward()
        tracker.close()
        rows.append(load_run(tmp_path / name))
    plain, scaled = rows
    for col in ("loss", "grad_norm", "norm_q50", "trace_sigma", "b_simple"):
        _close(scaled.scalars[col].iloc[0], plain.scalars[col].iloc[0], rtol=1e-12)
    _close(scaled.grams[0], plain.grams[0], rtol=1e-12)
    assert scaled.scalars[["norm_q50", "trace_sigma", "b_simple"]].iloc[1].isna().all()
    assert sorted(scaled.grams) == [0] and scaled.scalars["gram"].tolist() == [1, 0]


def test_batch_statistics_are_named_as_interacting(tmp_path):
    """A BatchNorm in training mode is read with the batch's statistics: its rows are each
    sample's share, summing to the batch gradient (the first step's sum check, which would
    warn otherwise), and every parameter is covered; the interaction is named."""
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    tracker = Tracker(model, tmp_path / "run", loss_fn=F.cross_entropy)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.warns(RuntimeWarning, match=r"\['1'\] normalise with batch statistics") as said:
        _train_one(tracker, model, x, y, F.cross_entropy)
    assert [w.filename for w in said] == [__file__]  # and no other warning (the sum check)
    tracker.close()
    run = load_run(tmp_path / "run")
    assert run.meta["model"]["interacting_modules"] == ["1"]
    assert run.meta["model"]["tracked_modules"]["1"] == "BatchNorm1d"
    assert run.scalars["covered"].tolist() == [1.0]


class _FakeWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter: records what it is given."""

    made: list = []

    def __init__(self, log_dir, purge_step=None):
        self.log_dir, self.scalars, self.hists, self.closed = log_dir, [], [], False
        _FakeWriter.made.append(self)

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_histogram(self, tag, values, step):
        self.hists.append((tag, values.clone(), step))

    def close(self):
        self.closed = True


def test_tensorboard_gets_every_finite_column_and_the_norm_histograms(tmp_path, monkeypatch):
    import sys
    from types import SimpleNamespace

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        SimpleNamespace(SummaryWriter=_FakeWriter))
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    tracker = Tracker(model, tmp_path / "run", tensorboard=True)
    for _ in range(2):
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        model.zero_grad()
        _train_one(tracker, model, x, y, F.cross_entropy)
    tracker.close()
    w = _FakeWriter.made[-1]
    assert w.closed and w.log_dir == str(tmp_path / "run" / "tensorboard")
    run = load_run(tmp_path / "run")
    got = {(tag, step): v for tag, v, step in w.scalars}
    for step, row in run.scalars.iterrows():
        for col in ("loss", "grad_norm", "b_simple", "update_size"):
            assert got[(f"gradkit/{col}", step)] == pytest.approx(row[col], rel=1e-12)
    assert [(tag, step) for tag, _, step in w.hists] == [("gradkit/per_sample_norm", 0),
                                                         ("gradkit/per_sample_norm", 1)]
    assert float(w.hists[1][1].quantile(0.5)) == pytest.approx(run.scalars["norm_q50"][1],
                                                               rel=1e-9)


def test_tensorboard_missing_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ImportError, match="pip install tensorboard"):
        Tracker(nn.Linear(3, 2), tmp_path / "run", tensorboard=True)
    assert not (tmp_path / "run").exists()


class _Seq(nn.Module):
    """Conv1d (strided, grouped) then a Linear applied at every position of [N, T, C]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2)
        self.per_t = nn.Linear(6, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.per_t(torch.tanh(self.conv(x)).transpose(1, 2)))  # [N, T, 5]
        return self.head(h.mean(1))


def test_conv1d_and_a_linear_over_positions_equal_the_loop(tmp_path):
    torch.manual_seed(0)
    model = _Seq().double()
    x, y = torch.randn(7, 4, 11, dtype=torch.float64), torch.randint(0, 3, (7,))
    G = _loop_grads(model, x, y)
    tracker = Tracker(model, tmp_path / "run", gram_every=1, loss_fn=F.cross_entropy)
    _train_one(tracker, model, x, y, F.cross_entropy, inputs=x)
    tracker.close()
    run = load_run(tmp_path / "run")
    _close(run.grams[0], G @ G.T)
    assert run.meta["sessions"][0]["checks"]["sample_alone_vs_batch"] is True


def test_the_sketch_at_logged_steps_is_gradient_sketchs(tmp_path):
    """With sketch_k, each Gram step also holds gradkit.grads.gradient_sketch's sketch of the
    same batch (same seed), from the step's own backward."""
    from gradkit.grads import gradient_sketch

    ex = _example()
    torch.manual_seed(0)
    model = ex.make_model().double()
    x, y = ex.make_clips(8, seed=2)
    x = x.double()
    want = gradient_sketch(model, F.cross_entropy, x, y, k=32, seed=5)
    tracker = Tracker(model, tmp_path / "run", gram_every=2, sketch_k=32, sketch_seed=5)
    _train_one(tracker, model, x, y, F.cross_entropy)
    model.zero_grad()
    _train_one(tracker, model, x, y, F.cross_entropy)  # step 1: no Gram, no sketch
    tracker.close()
    run = load_run(tmp_path / "run")
    assert sorted(run.sketches) == [0]
    _close(run.sketches[0], want)


class _Shared(nn.Module):
    """One weight in two Linear layers; the first layer's weight frozen in a second model."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.h = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.h(torch.tanh(self.b(torch.tanh(self.a(x)))))


@pytest.mark.parametrize("frozen", [False, True])
def test_a_weight_shared_by_two_layers_or_frozen_is_exact(tmp_path, frozen):
    torch.manual_seed(0)
    model = _Shared().double()
    model.a.weight.requires_grad_(not frozen)
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    G = _loop_grads(model, x, y, [p for p in model.parameters() if p.requires_grad])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker = Tracker(model, tmp_path / "run", gram_every=1, loss_fn=F.cross_entropy)
        _train_one(tracker, model, x, y, F.cross_entropy, inputs=x)
    tracker.close()
    _close(load_run(tmp_path / "run").grams[0], G @ G.T)


def test_a_model_the_hooks_cannot_read_at_all_runs_on_the_fallback(tmp_path):
    """Only a GRU and a head the user froze: nothing tracked, no first-step probe (nothing to
    compare), the fallback covers every trainable parameter at every step."""
    torch.manual_seed(0)
    gru, head = nn.GRU(3, 4, batch_first=True).double(), nn.Linear(4, 2).double()
    head.requires_grad_(False)
    model = nn.Sequential(gru, _Last(), head)
    tracker = Tracker(model, tmp_path / "run", gram_every=1, loss_fn=F.cross_entropy)
    for _ in range(2):
        x, y = torch.randn(5, 6, 3, dtype=torch.float64), torch.randint(0, 2, (5,))
        G = _loop_grads(model, x, y, list(gru.parameters()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tracker.step(labels=y, inputs=x):
                F.cross_entropy(model(x), y).backward()
    tracker.close()
    run = load_run(tmp_path / "run")
    _close(run.grams[1], G @ G.T)
    assert (run.scalars["covered"] == 1.0).all()


class _Last(nn.Module):
    def forward(self, out):
        return out[0][:, -1]
