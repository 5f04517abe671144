"""The shared loop core (gradkit.training.loop) and the divergence guard, on toy problems."""

import math

import pytest
import torch
from torch import nn

from gradkit.training import DivergenceGuard, TrainingDiverged, epoch_batches, epoch_order
from gradkit.training.loop import evaluate, fit_epoch


def test_epoch_batches_cut_the_epoch_order():
    batches = epoch_batches(10, 4, seed=3, epoch=2)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), epoch_order(10, 3, 2))
    with pytest.raises(ValueError, match="batch_size"):
        epoch_batches(10, 0, 3, 2)


def test_fit_epoch_runs_step_backward_optimiser_scheduler_and_on_step_in_order():
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    events = []

    def step(idx):
        events.append(("step", idx.tolist()))
        return [model(x[idx]).pow(2).mean(), model(x[idx]).abs().mean()]

    def backward(losses):
        events.append(("backward", len(losses)))
        sum(losses).backward()

    model.eval()
    n = fit_epoch(model, opt, epoch_batches(6, 4, 0, 1), step, epoch=1, backward=backward,
                  scheduler=sched, guard=DivergenceGuard(),
                  on_step=lambda b, idx, loss: events.append(("on_step", b)))
    assert n == 2 and model.training
    assert [e[0] for e in events] == ["step", "backward", "on_step"] * 2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 3)
    out = evaluate(model, lambda: model(x))
    assert not model.training and not out.requires_grad


def test_the_guard_names_epoch_and_batch_for_a_loss_and_for_a_parameter():
    model = nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [torch.tensor([0]), torch.tensor([1])]
    values = iter([1.0, math.inf])
    with pytest.raises(TrainingDiverged, match=r"epoch 4, batch 1 \(loss is inf\)") as caught:
        fit_epoch(model, opt, batches, lambda idx: model.weight.sum() * 0 + next(values),
                  epoch=4, guard=DivergenceGuard(lr=0.1))
    assert caught.value.lr == 0.1 and "try 0.01" in str(caught.value)
    with pytest.raises(TrainingDiverged, match="exceeds the bound 10 nats"):
        fit_epoch(model, opt, batches, lambda idx: model.weight.sum() * 0 + 11.0,
                  guard=DivergenceGuard(max_loss=10))
    # A finite loss whose gradient is NaN (sqrt at 0): the parameters after the step are not.
    with pytest.raises(TrainingDiverged, match=r"batch 0 \(2 parameter values are not finite"):
        fit_epoch(model, opt, batches, lambda idx: (model.weight - model.weight.detach())
                  .sqrt().sum() + (model.bias - model.bias.detach()).sqrt().sum(),
                  guard=DivergenceGuard())
