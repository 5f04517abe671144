"""Exactness of gradkit.grads against a per-sample autograd loop written out here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.core.params import num_trainable, param_slices
from gradkit.grads import (
    CoupledLossError,
    batch_grads,
    batch_index,
    choose_method,
    full_grad,
    layers_supported,
    per_sample_grads,
    per_sample_losses,
    sketch,
)

METHODS = ("auto", "vmap", "loop", "layers")
TOL = dict(atol=1e-5, rtol=1e-5)


def reference(model, loss_fn, x, y):
    """The definition: one autograd call per sample, gradients of the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        out = model(x[i : i + 1])
        target = tuple(t[i : i + 1] for t in y) if isinstance(y, tuple) else y[i : i + 1]
        g = torch.autograd.grad(loss_fn(out, target), params, allow_unused=True)
        rows.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten()
                               for gi, p in zip(g, params, strict=True)]))
    return torch.stack(rows)


def ce(out, y):
    return F.cross_entropy(out, y)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """GroupNorm, in-place ReLU after a norm, a strided grouped conv, a residual, a Conv1d."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.g1 = nn.GroupNorm(4, 8)
        self.relu = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(8, 8, (3, 2), stride=(2, 1), padding=(1, 0), groups=2, bias=False)
        self.g2 = nn.GroupNorm(2, 8)
        self.c3 = nn.Conv1d(8, 4, 3, padding=2, dilation=2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.relu(self.g1(self.c1(x)))
        h = self.relu(self.g2(self.c2(h)) + h[:, :, ::2, : h.shape[-1] - 1])
        h = self.c3(h.mean(2))
        return self.fc(h.mean(2))


class BNFrozen(nn.Module):
    """BatchNorm (eval mode, running statistics), a frozen conv, LayerNorm, a sequence Linear."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4)
        self.seq = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.head.bias.requires_grad_(False)

    def forward(self, x):
        h = F.relu(self.bn(self.frozen(x)))  # [N, 4, H, W]
        t = self.ln(h.flatten(2).transpose(1, 2))  # a sequence [N, HW, 4]
        return self.head(torch.tanh(self.seq(t)).mean(1))


def bn_model():
    torch.manual_seed(1)
    m = BNFrozen()
    m.train()
    with torch.no_grad():  # give the running statistics non-trivial values
        for _ in range(3):
            m(torch.randn(16, 2, 5, 6) * 2 + 1)
    return m.eval()


def ranker_loss(out, y):
    logits, score = out
    labels, angles = y
    return F.cross_entropy(logits, labels) + 0.1 * (score - angles / 180).pow(2).mean()


def ranker_case(prompt: bool):
    from gradkit.models import ResNetAudioRanker

    torch.manual_seed(2)
    shape = (1, 40, 32)
    m = ResNetAudioRanker(prompt_shape=shape if prompt else None)
    if prompt:
        with torch.no_grad():
            m.prompt.prompt.normal_(0, 0.1)
        m.freeze_trunk()
    x = torch.randn(6, *shape)
    y = (torch.randint(0, 6, (6,)), torch.rand(6) * 180)
    return m.eval(), ranker_loss, x, y


def cases():
    torch.manual_seed(0)
    yield "mlp", MLP().eval(), ce, torch.randn(9, 5), torch.randint(0, 3, (9,))
    yield "cnn", SmallCNN().eval(), ce, torch.randn(7, 1, 9, 8), torch.randint(0, 3, (7,))
    yield "bn_frozen", bn_model(), ce, torch.randn(6, 2, 5, 6), torch.randint(0, 3, (6,))
    yield ("ranker", *ranker_case(prompt=False))
    yield ("ranker_prompt", *ranker_case(prompt=True))


CASES = {name: rest for name, *rest in cases()}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", list(CASES))
def test_per_sample_grads_equal_autograd_loop(case, method):
    model, loss_fn, x, y = CASES[case]
    ref = reference(model, loss_fn, x, y)
    got = per_sample_grads(model, loss_fn, x, y, method=method)
    assert got.shape == (x.shape[0], num_trainable(model))
    assert ref.abs().max() > 1e-3  # the comparison is not between zeros
    torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", list(CASES))
def test_sum_reduced_losses_pass_the_coupling_check(case, method):
    """The grid with each loss summed over the batch (``N`` times its mean): the coupling check
    reads the reduction from the values (c = 1 instead of 1/N) and passes."""
    model, loss_fn, x, y = CASES[case]

    def summed(out, t):
        return loss_fn(out, t) * (t[0] if isinstance(t, tuple) else t).shape[0]

    got = per_sample_grads(model, summed, x, y, method=method)
    torch.testing.assert_close(got, reference(model, loss_fn, x, y), **TOL)


@pytest.mark.parametrize("case", ["cnn", "ranker"])
def test_chunking_does_not_change_the_result(case):
    model, loss_fn, x, y = CASES[case]
    whole = per_sample_grads(model, loss_fn, x, y, chunk_size=x.shape[0])
    for chunk in (1, 4):
        torch.testing.assert_close(per_sample_grads(model, loss_fn, x, y, chunk), whole, **TOL)


def test_frozen_parameters_are_excluded_and_slices_match():
    model, loss_fn, x, y = CASES["bn_frozen"]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "frozen.weight" not in names and "head.bias" not in names
    slices = param_slices(model)
    assert list(slices) == names
    assert slices[names[-1]].stop == num_trainable(model)
    g = per_sample_grads(model, loss_fn, x, y)
    # bn.weight's column block is the gradient of the BatchNorm scale for each sample
    ref = reference(model, loss_fn, x, y)
    torch.testing.assert_close(g[:, slices["bn.weight"]], ref[:, slices["bn.weight"]], **TOL)


def test_buffers_are_used_not_differentiated():
    model, loss_fn, x, y = CASES["bn_frozen"]
    before = model.bn.running_mean.clone()
    per_sample_grads(model, loss_fn, x, y, method="layers")
    per_sample_grads(model, loss_fn, x, y, method="vmap")
    assert torch.equal(model.bn.running_mean, before)


def test_batchnorm_in_training_mode_is_refused():
    model, loss_fn, x, y = CASES["bn_frozen"]
    model.train()
    try:
        with pytest.raises(ValueError, match="BatchNorm"):
            per_sample_grads(model, loss_fn, x, y)
    finally:
        model.eval()


def test_shared_module_called_twice_sums_its_contributions():
    torch.manual_seed(3)
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.Tanh(), lin).eval()
    x, y = torch.randn(5, 4), torch.randint(0, 4, (5,))
    ref = reference(model, ce, x, y)
    torch.testing.assert_close(per_sample_grads(model, ce, x, y, method="layers"), ref, **TOL)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(6, 4, 1, stride=(2, 3)),  # 1x1 without padding: the bmm path
    nn.Conv1d(6, 4, 1, stride=2, bias=False),
    nn.Conv2d(6, 4, 1, padding=1),  # 1x1 with padding: the grouped path
    nn.Conv2d(6, 4, 1, groups=2),  # 1x1 grouped: the grouped path
    nn.Conv2d(2, 6, 3, stride=2, groups=2),  # one input channel per group: repeated input
    nn.Conv2d(6, 6, (3, 2), padding=1, dilation=(1, 2), groups=6),  # depthwise
    nn.Conv2d(1, 5, 3, padding=1),  # the 1-channel stem: one bmm per kernel tap
    nn.Conv2d(1, 4, (3, 2), stride=(2, 3), padding=(1, 2), dilation=(2, 1)),
    nn.Conv1d(1, 6, 3, stride=2, dilation=2),
    nn.Conv1d(1, 3, 4, stride=2, padding=3, bias=False),
    nn.Conv3d(2, 3, 2, stride=(1, 2, 1)),
], ids=lambda c: repr(c))
def test_every_conv_path_matches_the_loop(conv):
    torch.manual_seed(4)
    model = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(5, conv.in_channels, *([7, 9, 4][: conv.weight.dim() - 2]))
    model(x)  # materialise the lazy layer
    model.eval()
    y = torch.randint(0, 3, (5,))
    ref = reference(model, ce, x, y)
    torch.testing.assert_close(per_sample_grads(model, ce, x, y, method="layers"), ref, **TOL)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(6, 4, 1, stride=(2, 3)),  # 1x1: input gradient by one matmul
    nn.Conv1d(6, 4, 1, stride=2, bias=False),
    nn.Conv3d(6, 4, 1, stride=(1, 2, 3)),
    nn.Conv2d(6, 4, 1),
    nn.Conv2d(6, 6, 3, padding=1),  # few input channels, stride 1: one grouped call
    nn.Conv2d(6, 4, 3, stride=2, padding=1),  # strided: autograd's input gradient
], ids=lambda c: repr(c))
def test_conv_taking_its_input_gradient_matches_the_loop(conv):
    """A conv whose input needs a gradient (a layer before it): where it takes that gradient
    itself (FusedConv), the layer before gets exact per-sample gradients through it."""
    import gradkit.grads.rules.conv as C

    torch.manual_seed(6)
    before = type(conv)(6, 6, 1, bias=False)
    model = nn.Sequential(before, nn.Tanh(), conv, nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(5, 6, *([7, 9, 5][: conv.weight.dim() - 2]))
    model(x)
    model.eval()
    a = torch.randn(5, 6, *x.shape[2:], requires_grad=True)
    fused = C.fuses(conv, a)
    assert fused == (conv.kernel_size[0] == 1 or conv.stride[0] == 1)
    y = torch.randint(0, 3, (5,))
    ref = reference(model, ce, x, y)
    torch.testing.assert_close(per_sample_grads(model, ce, x, y, method="layers"), ref, **TOL)
    if fused and conv.kernel_size[0] == 1:  # the input gradient itself, against autograd
        d = torch.randn_like(conv(a))
        (want,) = torch.autograd.grad(conv(a), a, d)
        torch.testing.assert_close(C._pointwise_input_grad(conv, a.detach(), d), want, **TOL)


class GroupNormCases(nn.Module):
    """GroupNorm as the first layer (input without grad), shared (called twice), on 2-D, 3-D
    and channels_last inputs, with a frozen weight and an in-place ReLU after it."""

    def __init__(self):
        super().__init__()
        self.first = nn.GroupNorm(2, 4)
        self.conv = nn.Conv1d(4, 6, 3, padding=1)
        self.shared = nn.GroupNorm(3, 6)
        self.frozen = nn.GroupNorm(1, 6)
        self.frozen.weight.requires_grad_(False)
        self.flat = nn.GroupNorm(2, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.conv(self.first(x))
        h = torch.relu_(self.shared(h))
        h = self.frozen(self.shared(h)).mean(2)
        return self.head(self.flat(h))


def test_group_norm_replay_matches_the_loop():
    import gradkit.grads.rules.norm as L

    torch.manual_seed(7)
    model = GroupNormCases()
    for m in model.modules():  # non-trivial affine parameters
        if isinstance(m, nn.GroupNorm):
            m.weight.data.normal_(1, 0.3)
            m.bias.data.normal_(0, 0.3)
    x, y = torch.randn(6, 4, 9) * 2 + 3, torch.randint(0, 3, (6,))
    calls = []
    original = L._GroupNorm.backward
    try:
        L._GroupNorm.backward = staticmethod(lambda ctx, dy: calls.append(1) or original(ctx, dy))
        got = per_sample_grads(model, ce, x, y, method="layers")
    finally:
        L._GroupNorm.backward = original
    assert len(calls) == 5  # every call of every GroupNorm went through the replay
    torch.testing.assert_close(got, reference(model, ce, x, y), **TOL)
    conv2d = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(3))
    x2 = torch.randn(5, 2, 6, 7).to(memory_format=torch.channels_last)
    conv2d(x2)
    y2 = torch.randint(0, 3, (5,))
    torch.testing.assert_close(per_sample_grads(conv2d, ce, x2, y2, method="layers"),
                               reference(conv2d, ce, x2, y2), **TOL)


def test_fused_conv_with_inplace_relu_shared_layer_and_input_needing_grad():
    """Convs with few input channels take both gradients in one call (FusedConv): an in-place
    ReLU on their output, a conv applied twice, and an input that itself requires grad."""
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(inplace=True), conv,
                          nn.ReLU(inplace=True), conv, nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(5, 2, 6, 5)
    model(x)
    model.eval()
    y = torch.randint(0, 3, (5,))
    ref = reference(model, ce, x, y)
    torch.testing.assert_close(per_sample_grads(model, ce, x, y, method="layers"), ref, **TOL)
    got = per_sample_grads(model, ce, x.clone().requires_grad_(), y, method="layers")
    torch.testing.assert_close(got, ref, **TOL)


class Scale(nn.Module):
    """A layer no rule knows: the auto method must fall back, 'layers' must refuse."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.tensor([1.5, -0.5, 2.0]))

    def forward(self, x):
        return x * self.s


def test_unknown_layer_falls_back_and_layers_refuses():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 3), Scale()).eval()
    x, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    assert not layers_supported(model)
    assert choose_method(model, 6) in ("vmap", "loop")
    torch.testing.assert_close(per_sample_grads(model, ce, x, y), reference(model, ce, x, y),
                               **TOL)
    with pytest.raises(ValueError, match="Scale"):
        per_sample_grads(model, ce, x, y, method="layers")


def test_loss_that_vmap_cannot_trace_still_works():
    def picky(out, y):  # data-dependent Python control flow
        loss = F.cross_entropy(out, y)
        return loss * 2 if loss.item() > 1.0 else loss

    model, _, x, y = CASES["mlp"]
    losses = per_sample_losses(picky, model(x), y)
    assert losses.shape == (x.shape[0],)
    # doubling the batch mean is not doubling the samples' own losses: a coupled loss
    with pytest.raises(CoupledLossError, match="picky"):
        per_sample_grads(model, picky, x, y, method="layers")
    torch.testing.assert_close(per_sample_grads(model, picky, x, y, method="layers", check=False),
                               reference(model, picky, x, y), **TOL)


def test_bad_arguments_are_named():
    model, loss_fn, x, y = CASES["mlp"]
    with pytest.raises(ValueError, match="targets have 3"):
        per_sample_grads(model, loss_fn, x, y[:3])
    with pytest.raises(ValueError, match="chunk_size"):
        per_sample_grads(model, loss_fn, x, y, chunk_size=0)
    with pytest.raises(ValueError, match="method"):
        per_sample_grads(model, loss_fn, x, y, method="fast")


def test_batch_grads_are_means_of_per_sample_rows():
    model, loss_fn, x, y = CASES["cnn"]
    G = per_sample_grads(model, loss_fn, x, y)
    gen_batches = batch_index(x.shape[0], 3, generator=7)
    B = batch_grads(model, loss_fn, x, y, 3, generator=7)
    assert B.shape == (3, G.shape[1])  # 7 samples -> batches of 3, 3, 1
    for row, idx in zip(B, gen_batches, strict=True):
        torch.testing.assert_close(row, G[idx].mean(0), **TOL)
    # the same seed gives the same epoch; an explicit ordering is followed exactly
    torch.testing.assert_close(batch_grads(model, loss_fn, x, y, 3, generator=7), B)
    order = torch.arange(6, -1, -1)
    Bo = batch_grads(model, loss_fn, x, y, 3, ordering=order, drop_last=True)
    assert Bo.shape[0] == 2
    torch.testing.assert_close(Bo[0], G[order[:3]].mean(0), **TOL)
    with pytest.raises(ValueError, match="permutation"):
        batch_grads(model, loss_fn, x, y, 3, ordering=[0, 0, 1, 2, 3, 4, 5])


def test_full_grad_is_mean_of_per_sample_grads_whatever_the_chunks():
    model, loss_fn, x, y = CASES["ranker"]
    G = per_sample_grads(model, loss_fn, x, y)
    for chunk in (None, 4):
        torch.testing.assert_close(full_grad(model, loss_fn, x, y, chunk), G.mean(0), **TOL)


def test_sketch_is_seeded_chunk_invariant_and_preserves_inner_products():
    torch.manual_seed(5)
    G = torch.randn(4, 9000)  # wider than one generated block of R
    assert sketch(G, None) is G
    S = sketch(G, 64, seed=3)
    assert S.shape == (4, 64)
    torch.testing.assert_close(sketch(G, 64, seed=3), S)
    torch.testing.assert_close(torch.cat([sketch(G[:1], 64, 3), sketch(G[1:], 64, 3)]), S,
                               atol=1e-3, rtol=1e-4)  # float32 sums of 9000 terms
    assert not torch.allclose(sketch(G, 64, seed=4), S)
    exact = G @ G.T
    sketches = [sketch(G, 64, seed=s) for s in range(100)]
    mean = torch.stack([s @ s.T for s in sketches]).mean(0)
    # E[<G_i R, G_j R>] = <G_i, G_j>: one seed is off by ~sqrt(2/64) = 18 %, the mean of 100
    # by ~2 %; a sketch without the 1/sqrt(k) scale or with a biased R would be far off
    err = (mean - exact).abs().max() / exact.diagonal().max()
    assert err < 0.06
    with pytest.raises(ValueError, match="k must be"):
        sketch(G, 0)


def test_per_sample_grads_can_sketch_chunk_by_chunk():
    model, loss_fn, x, y = CASES["ranker"]
    G = per_sample_grads(model, loss_fn, x, y)
    S = per_sample_grads(model, loss_fn, x, y, chunk_size=2, sketch_dim=32, sketch_seed=9)
    torch.testing.assert_close(S, sketch(G, 32, seed=9), atol=1e-5, rtol=1e-4)


def test_auto_rule_follows_the_measured_thresholds():
    model = CASES["cnn"][0]
    assert choose_method(model, 1) == "loop"  # a few samples: plain backward passes win
    assert choose_method(model, 32) == "layers"
    odd = nn.Sequential(nn.Linear(3, 3), Scale())
    assert choose_method(odd, 8) == "loop" and choose_method(odd, 64) == "vmap"


def test_register_rule_docstring_example_runs():
    import doctest

    from gradkit.grads import register_rule

    tests = doctest.DocTestFinder().find(register_rule, "register_rule", globs={})
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 8 and result.failed == 0


def test_public_names_of_the_grads_package():
    import gradkit.grads as grads
    from gradkit.grads.hessian import top_eigenvalues
    from gradkit.grads.tsne import tsne_directions

    assert grads.top_eigenvalues is top_eigenvalues and grads.tsne_directions is tsne_directions
    assert {"top_eigenvalues", "tsne_directions", "CoupledLossError"} <= set(grads.__all__)
