"""Notebooks 02 and 03 through the Gram path give the numbers of the materialised path (1e-5):
every statistic recomputed here from ``G = per_sample_grads(...)`` on the workbook's model
(ResNetAudioRanker runs trained on a small synthetic split); t-SNE, chaotic, by its inputs."""

import numpy as np
import pytest
import torch
from test_objective_grads import fake_split, runs  # noqa: F401 - the fixture

from gradkit.analysis import conflicts
from gradkit.analysis import similarity as asim
from gradkit.analysis.noise import checkpoint_noise_scales, run_gns_variants, sample_gram
from gradkit.analysis.objective_grads import objective_sample_grads
from gradkit.grads import Gram, batch_means, noise_scale, per_sample_grads, tsne
from gradkit.grads import similarity as sim
from gradkit.grads.noise import gns_monte_carlo
from gradkit.training import sample_loss

REL = dict(rel=1e-5, abs=1e-12)


def close(a, b, rtol=1e-5):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1e-30, np.nanmax(np.abs(b))))


@pytest.mark.parametrize("objective", ["ghm", "raw"])
def test_notebook_02_noise_scales_are_unchanged(runs, objective):  # noqa: F811
    run = runs[objective]
    b = run.config.batch_size
    table, norms = checkpoint_noise_scales(run, "objective", n_boot=200, seed=3)
    ce_table, _ = checkpoint_noise_scales(run, "ce", n_boot=0)
    for i, epoch in enumerate(run.checkpoint_epochs):
        G = objective_sample_grads(run, epoch)
        want = noise_scale(G, b, n_boot=200, seed=3)
        for col, value in [("gns", want.gns), ("b_simple", want.b_simple),
                           ("grad_sq", want.grad_sq), ("trace_sigma", want.trace_sigma),
                           ("gns_lo", want.gns_ci[0]), ("gns_hi", want.gns_ci[1]),
                           ("b_simple_lo", want.b_simple_ci[0]),
                           ("b_simple_hi", want.b_simple_ci[1])]:
            assert table[col][i] == pytest.approx(value, **REL), col
        close(norms[epoch], G.norm(dim=1).double())
        G_ce = per_sample_grads(run.load_model(epoch), sample_loss, run.split.x_train,
                                run.split.y_train)
        assert ce_table.gns[i] == pytest.approx(noise_scale(G_ce, b, n_boot=0).gns, **REL)
    G = objective_sample_grads(run, epoch)
    K = sample_gram(run, epoch, "objective")
    assert gns_monte_carlo(K, b, draws=500, seed=1) == pytest.approx(
        gns_monte_carlo(G, b, draws=500, seed=1), **REL)


def test_notebook_02_variants_are_unchanged(runs):  # noqa: F811
    """gns_variants' definitions on G (the former materialised computation, written out)."""
    run = runs["ghm"]
    epoch, b = run.checkpoint_epochs[-1], run.config.batch_size
    model = run.load_model(epoch)
    G = objective_sample_grads(run, epoch)
    got = run_gns_variants(run, epoch, b, {"head": "classifier."}, p_total=12345)
    exact = noise_scale(G, b, n_boot=0)
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    sizes = [p.numel() for k, p in model.named_parameters() if p.requires_grad]
    mask = torch.cat([torch.full((s,), k.startswith("classifier.")) for k, s in
                      zip(names, sizes, strict=True)])
    unit = G / G.norm(dim=1, keepdim=True).clamp_min(1e-30)
    want = {"exact": exact.gns, "B = N, with replacement": exact.b_simple / G.shape[0],
            "unit directions": noise_scale(unit, b, n_boot=0).gns,
            "per-parameter mean": exact.gns / G.shape[1],
            "per-parameter mean, all parameters": exact.gns / 12345,
            "head only": noise_scale(G[:, mask], b, n_boot=0).gns}
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, **REL), k


def test_notebook_03_statistics_are_unchanged(runs):  # noqa: F811
    run = runs["ghm"]
    split = run.split
    x, y = torch.cat([split.x_train, split.x_val]), torch.cat([split.y_train, split.y_val])
    n_train, epoch = len(split.y_train), run.checkpoint_epochs[-1]
    got = asim.checkpoint_similarity(run, epoch, x, y, n_train)
    model = run.load_model(epoch)
    G = per_sample_grads(model, sample_loss, x, y)
    batches, batch_epoch = asim.window_batches(run, epoch, n_train)
    G_batch = batch_means(G[:n_train], batches)
    close(got["gram"].K, G.double() @ G.double().T)
    close(got["sample_matrix"].matrix, sim.similarity_matrix(G, y, level="sample").matrix)
    close(got["batch_matrix"].matrix,
          sim.similarity_matrix(G_batch, batch_epoch, level="batch").matrix)
    for key, rows, labels, k in [("sample_stats", G, y, 10), ("batch_stats", G_batch, None, 3)]:
        want = sim.similarity_stats(rows, labels, top_k=k)
        for name, v in want.row().items():
            assert got[key].row()[name] == pytest.approx(v, nan_ok=True, **REL), (key, name)
        close(got[key].conflicting_pairs.cosine, want.conflicting_pairs.cosine)
        assert (got[key].conflicting_pairs[["i", "j"]].values.tolist()
                == want.conflicting_pairs[["i", "j"]].values.tolist())
    for a, w in zip(got["conflict"], conflicts.conflict_cosines(G, y, np.arange(len(y)) < n_train),
                    strict=True):
        close(a, w)
    assert got["baseline"] == pytest.approx(conflicts.class_mean_baseline(G, y), **REL)
    for part, mask in asim.part_masks(model).items():
        assert got[f"silhouette_{part}"] == pytest.approx(sim.class_silhouette(G[:, mask], y),
                                                          **REL)
    close(conflicts.within_class_cosines(got["gram"], y, 6),
          conflicts.within_class_cosines(G, y, 6))
    # t-SNE's inputs: the squared distances of the unit directions, from K as from G
    u = sim.unit_directions(G)
    close(tsne.direction_distances(got["gram"]), torch.cdist(u, u).square(), rtol=1e-5)
    close(tsne.direction_distances(batch_means(got["gram"][:n_train], batches)),
          tsne.direction_distances(G_batch))
    assert got["sample_map"].shape == (len(y), 2) and np.isfinite(got["sample_map"]).all()


def test_gram_rows_keep_tiny_rows_exact():
    """A gradient 1e-6 times shorter than the others keeps its norm and cosines in the rows."""
    g = torch.randn(6, 50, dtype=torch.float64)
    g[2] *= 1e-6
    g[4] = 0
    R = Gram.of_rows(g).rows()
    close(R @ R.T, g @ g.T, rtol=1e-10)
    close(R.norm(dim=1), g.norm(dim=1), rtol=1e-10)
    close(sim.cosine_matrix(R), sim.cosine_matrix(g), rtol=1e-10)
