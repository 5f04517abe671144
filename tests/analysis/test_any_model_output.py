"""The analysis layer on any model's output: a plain-logits classifier (no ``(logits, score)``
tuple) through notebook 03's ``checkpoint_similarity`` and notebook 02's noise scales with a
user's own loss, drawn by ``plot_gns_trend`` under that loss's name."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.analysis import similarity as asim
from gradkit.analysis.noise import checkpoint_noise_scales, kind_label
from gradkit.grads import per_sample_grads
from gradkit.grads import similarity as sim
from gradkit.viz.noise import plot_gns_trend


class PlainRun:
    """What the two functions use of a training run: checkpoints of a plain-logits MLP."""

    def __init__(self, n: int = 24, classes: int = 3):
        gen = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % classes
        self.x = torch.randn(n, 6, generator=gen) + self.y[:, None].float()
        self.split = type("Split", (), {"x_train": self.x, "y_train": self.y})()
        self.config = type("Config", (), {"batch_size": 6, "save_every": 1, "seed": 0})()
        self.checkpoint_epochs = [1, 2]

    def load_model(self, epoch):
        torch.manual_seed(epoch)
        return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()


def per_sample_ce(outputs, y):
    return F.cross_entropy(outputs, y)


def test_checkpoint_similarity_takes_a_plain_logits_model():
    run = PlainRun()
    x, y = run.x.double(), run.y
    got = asim.checkpoint_similarity(run, 2, x, y, n_train=len(y))
    model = run.load_model(2)
    assert (got["predicted"] == model(x).argmax(1).numpy()).all()
    G = per_sample_grads(model, per_sample_ce, x, y)
    torch.testing.assert_close(got["gram"].K, G.double() @ G.double().T)
    want = sim.similarity_matrix(G, y, level="sample").matrix
    torch.testing.assert_close(got["sample_matrix"].matrix.double(), want.double())
    assert got["silhouette_classifier"] != got["silhouette_classifier"]  # no classifier.: NaN
    assert got["silhouette_trunk"] == pytest.approx(sim.class_silhouette(G, y), rel=1e-6)


def test_checkpoint_similarity_takes_a_function_that_extracts_the_logits():
    run = PlainRun()

    class Wrapped(nn.Module):  # a model whose output is a dict
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return {"logits": self.inner(x)}

    wrapped = type("WrappedRun", (PlainRun,), {
        "load_model": lambda self, e: Wrapped(PlainRun.load_model(self, e))})()
    x, y = run.x.double(), run.y
    got = asim.checkpoint_similarity(wrapped, 2, x, y, len(y), logits=lambda out: out["logits"])
    plain = asim.checkpoint_similarity(run, 2, x, y, len(y))
    torch.testing.assert_close(got["gram"].K, plain["gram"].K)
    with pytest.raises(ValueError, match="logits="):
        asim.checkpoint_similarity(wrapped, 2, x, y, len(y))


def test_noise_scales_with_a_users_loss_are_named_and_drawn():
    run = PlainRun()
    run.split.x_train = run.x.double()
    table, _ = checkpoint_noise_scales(run, per_sample_ce, n_boot=50)
    assert set(table.kind) == {"per_sample_ce"} and kind_label(lambda o, t: 0) == "custom"
    fig = plot_gns_trend({"my run": {k: t for k, t in table.groupby("kind")}}, 6, 24)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
    assert "my run: loss per_sample_ce" in labels
    custom, _ = checkpoint_noise_scales(run, lambda o, t: F.cross_entropy(o, t), n_boot=0)
    plot_gns_trend({"my run": {"custom": custom}}, 6, 24)  # the old label draws too
