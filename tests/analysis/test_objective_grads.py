"""Per-sample gradients of the trained objective: their batch means are the training gradient."""

from types import SimpleNamespace

import pytest
import torch

import gradkit.training.runs as T
from gradkit.analysis.objective_grads import objective_coefficients, objective_sample_grads
from gradkit.core.params import flat_grad, trainable_parameters
from gradkit.training import TrainConfig, epoch_order, get_run
from gradkit.training.objective import ghm_modules, objective_terms

ANGLES = torch.tensor([0.0, 36, 72, 108, 144, 180])


def fake_split(n_train=12, n_val=6, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def part(n):
        y = torch.arange(n) % 6
        return torch.randn(n, 1, 8, 8, generator=gen) + y.view(-1, 1, 1, 1) * 0.4, y, ANGLES[y]

    (xt, yt, at), (xv, yv, av) = part(n_train), part(n_val)
    return SimpleNamespace(x_train=xt, y_train=yt, angles_train=at, x_val=xv, y_val=yv,
                           angles_val=av, paths_train=[f"t{i}" for i in range(n_train)],
                           paths_val=[f"v{i}" for i in range(n_val)],
                           classes=[f"deg{int(a):03d}" for a in ANGLES], mean=0.0, std=1.0)


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("GRADKIT_DEVICE", "cpu")
    split = fake_split()
    monkeypatch.setattr(T, "_load_split", lambda config: split)
    base = dict(epochs=4, save_every=2, batch_size=4, widths=(4, 8))
    return {o: get_run(TrainConfig(objective=o, **base), progress=False) for o in ("ghm", "raw")}


def training_gradient(run, epoch, idx):
    """The gradient of the run's objective on batch ``idx`` with the checkpoint's GHM state."""
    cfg, split = run.config, run.split
    ghmc, rank = ghm_modules(cfg)
    state = run.load_checkpoint(epoch)["ghm"]
    ghmc.load_state_dict(state["ghmc"])
    rank.load_state_dict(state["ghm_ranking"])
    model = run.load_model(epoch)
    logits, scores = model(split.x_train[idx])
    holder = SimpleNamespace(config=cfg, ghmc=ghmc, ghm_rank=rank)
    loss, _ = objective_terms(holder, logits, scores, split.y_train[idx],
                              split.angles_train[idx].float(), update_state=False)
    return flat_grad(loss, trainable_parameters(model))


@pytest.mark.parametrize("objective", ["ghm", "raw"])
def test_batch_means_of_the_rows_are_the_training_gradient(runs, objective):
    run = runs[objective]
    epoch = run.checkpoint_epochs[-1]
    G = objective_sample_grads(run, epoch)
    for idx in epoch_order(len(run.split.y_train), run.config.seed, epoch + 1).split(4):
        expected = training_gradient(run, epoch, idx)
        assert torch.allclose(G[idx].mean(0), expected, atol=1e-5, rtol=1e-4)


def test_ghm_weights_come_from_the_frozen_ema_and_pairs_give_score_gradients(runs):
    run = runs["ghm"]
    epoch = run.checkpoint_epochs[-1]
    before = run.load_checkpoint(epoch)["ghm"]["ghmc"]["acc_sum"].clone()
    _, w, c = objective_coefficients(run, epoch)
    assert not torch.allclose(w, torch.ones_like(w))  # GHM weights, not plain CE
    assert c.abs().sum() > 0  # the ranking term reaches the scores
    assert torch.equal(run.load_checkpoint(epoch)["ghm"]["ghmc"]["acc_sum"], before)
    _, w_raw, _ = objective_coefficients(runs["raw"], epoch)
    assert torch.equal(w_raw, torch.ones_like(w_raw))
