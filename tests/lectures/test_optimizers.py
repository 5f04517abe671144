"""The notes' update rules are asserted equal to torch.optim on the same problems."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradkit.grads.hessian import flat_loss
from gradkit.lectures import optimizers as op

STEPS = 25


START = torch.tensor([0.3, 0.8], dtype=torch.float64)
CASES = [
    ("gd", lambda g, t0, n=STEPS: op.gradient_descent(g, t0, n, lr=0.02),
     lambda ps: torch.optim.SGD(ps, lr=0.02)),
    ("momentum", lambda g, t0, n=STEPS: op.momentum(g, t0, n, lr=0.01, mu=0.8),
     lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.8)),
    ("adagrad", lambda g, t0, n=STEPS: op.adagrad(g, t0, n, lr=0.1, eps=1e-10),
     lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10)),
    ("rmsprop", lambda g, t0, n=STEPS: op.rmsprop(g, t0, n, lr=0.01, alpha=0.9, eps=1e-8),
     lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8)),
    ("adam", lambda g, t0, n=STEPS: op.adam(g, t0, n, lr=0.05, betas=(0.8, 0.95), eps=1e-8),
     lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.95), eps=1e-8)),
]


@pytest.mark.parametrize("name,mine,theirs", CASES, ids=[c[0] for c in CASES])
def test_rule_equals_torch_optim_on_the_saddle_valley(name, mine, theirs):
    ours = mine(op.saddle_valley_grad, START)
    ref = op.torch_path(theirs, op.saddle_valley_grad, START, STEPS)
    assert ours.shape == (STEPS + 1, 2)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert not torch.equal(ours[-1], ours[0])  # it moved: the comparison means something


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("name,mine,theirs", CASES, ids=[c[0] for c in CASES])
def test_rule_equals_torch_optim_on_a_network(name, mine, theirs):
    torch.manual_seed(0)
    model = Tiny().double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    loss, theta0 = flat_loss(model, nn.functional.cross_entropy, x, y)
    grad = torch.func.grad(loss)

    ours = mine(grad, theta0, 10)
    # torch.optim on the module's own parameters (10 steps: each is a full network step)
    opt = theirs(list(model.parameters()))
    ref = [theta0.clone()]
    for _ in range(10):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        ref.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(ours, torch.stack(ref), rtol=1e-10, atol=1e-12)


def test_rmsprop_notes_start_is_torch_seeded_with_first_squared_gradient():
    ours = op.rmsprop(op.saddle_valley_grad, START, STEPS, lr=0.01, alpha=0.9, start="notes")
    ref = op.torch_path(
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9), op.saddle_valley_grad, START,
        STEPS, init_state=lambda g: {"step": torch.tensor(0.0), "square_avg": g.clone() ** 2},
    )
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # and it differs from torch's default zero start by 1/sqrt(1 - alpha) on the first step
    zero = op.rmsprop(op.saddle_valley_grad, START, 1, lr=0.01, alpha=0.9, start="zero")
    ratio = (zero[1] - START) / (ours[1] - START)
    torch.testing.assert_close(ratio, torch.full((2,), 1 / math.sqrt(0.1), dtype=torch.float64),
                               rtol=1e-6, atol=0)


def test_root_mean_square_with_sqrt_decay_is_adagrad():
    rms = op.root_mean_square(op.saddle_valley_grad, START, STEPS,
                              lr=lambda t: 0.1 / math.sqrt(t + 1))
    ada = op.adagrad(op.saddle_valley_grad, START, STEPS, lr=0.1, eps=0.0)
    torch.testing.assert_close(rms, ada, rtol=1e-12, atol=1e-14)
    # without the decay the RMS rule takes larger steps than AdaGrad after the first
    plain = op.root_mean_square(op.saddle_valley_grad, START, 2, lr=0.1)
    assert torch.allclose(plain[1], ada[1])
    assert (plain[2] - plain[1]).norm() > (ada[2] - ada[1]).norm()


def test_warmup_cosine_equals_torch_sequential_lr():
    W, T, eta, floor = 5, 30, 0.1, 0.1
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=eta)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [torch.optim.lr_scheduler.LinearLR(opt, 1 / W, 1.0, total_iters=W - 1),
         torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T - W, eta_min=floor * eta)],
        milestones=[W],
    )
    theirs = []
    for _ in range(T + 1):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [eta * op.warmup_cosine(t, W, T, floor) for t in range(T + 1)]
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)
    assert max(ours) == pytest.approx(eta) and ours[0] == pytest.approx(eta / W)


def test_scheduled_adam_equals_torch_adam_with_lambda_lr():
    f = op.warmup_cosine_schedule(4, STEPS, 0.0)
    ours = op.adam(op.saddle_valley_grad, START, STEPS, lr=lambda t: 0.05 * f(t))
    ref = op.torch_path(lambda ps: torch.optim.Adam(ps, lr=0.05), op.saddle_valley_grad, START,
                        STEPS, lambda o: torch.optim.lr_scheduler.LambdaLR(o, f))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_saddle_valley_gradient_and_critical_points():
    theta = torch.tensor([[0.7, -0.2], [0.0, 0.0], [1.0, 0.0]], dtype=torch.float64,
                         requires_grad=True)
    loss = op.saddle_valley(theta).sum()
    (auto,) = torch.autograd.grad(loss, theta)
    torch.testing.assert_close(auto, op.saddle_valley_grad(theta.detach()))
    H0 = torch.autograd.functional.hessian(lambda t: op.saddle_valley(t), theta[1].detach())
    torch.testing.assert_close(torch.linalg.eigvalsh(H0),
                               torch.tensor([-1.0, 40.0], dtype=torch.float64))


def test_rules_reject_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        op.adam(op.saddle_valley_grad, START, -1, lr=0.1)
    with pytest.raises(ValueError, match="floating"):
        op.momentum(op.saddle_valley_grad, torch.tensor([1, 2]), 3, lr=0.1)
    with pytest.raises(ValueError, match="start"):
        op.rmsprop(op.saddle_valley_grad, START, 3, lr=0.1, start="ones")
    with pytest.raises(ValueError, match="warmup"):
        op.warmup_cosine(0, 0, 10)


def test_adam_step_is_global_times_schedule_times_adaptive_factor():
    f = op.warmup_cosine_schedule(5, STEPS, 0.1)
    hist: dict = {}
    ours = op.adam(op.saddle_valley_grad, START, STEPS, lr=lambda t: 0.05 * f(t), history=hist)
    for t in range(STEPS):
        expected = -hist["lr"][t] * hist["adaptive"][t] * hist["m_hat"][t]
        torch.testing.assert_close(ours[t + 1] - ours[t], expected, rtol=1e-9, atol=1e-15)
    assert hist["lr"][0] == pytest.approx(0.05 / 5)
    ref = op.torch_path(lambda ps: torch.optim.Adam(ps, lr=0.05), op.saddle_valley_grad, START,
                        STEPS, lambda o: torch.optim.lr_scheduler.LambdaLR(o, f))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
