"""DDPNoiseScale against the single-process engine, in two real gloo processes on the CPU.

One spawn (module fixture) runs three phases in both ranks and returns what they measured:

A. *Equality*: a few SGD steps (lr > 0, so weights change between steps) on fixed per-rank index
   batches, one of them with unequal local sizes (7 and 3). The parent replays each step in one
   process from the saved weights: the gradient of every rank's batch by plain autograd, then
   ``small_sq``, ``big_sq``, ``grad_sq``, ``trace_sigma`` in float64, and the gradient DDP
   should leave in ``.grad`` (the mean over all samples of the step).
B. *Refusals*: a forward under ``no_sync()`` and a training forward without ``step()`` raise.
C. *Agreement* at fixed weights (no optimiser step), ``ema=None`` (running mean).
D. *Training*: :func:`gradkit.distributed.train.train_worker` (what ``torchrun -m
   gradkit.distributed.train`` and ``run_short_ddp`` run) on a tiny generated set, in the same
   two processes (one spawn for everything keeps this file at a few seconds of CPU).
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from filelock import FileLock
from torch.nn.parallel import DistributedDataParallel as DDP

from gradkit.core.checkpoint import load_checkpoint
from gradkit.distributed import (
    DDPNoiseScale,
    NoiseStep,
    critical_batch_advice,
    estimates,
    spawn,
)
from gradkit.distributed.train import DDPConfig, ranker_loss, train_worker
from gradkit.grads import per_sample_grads
from gradkit.grads.noise import noise_scale
from gradkit.models import ResNetAudioRanker

N_DATA, B_LOCAL, AGREE_STEPS = 48, 4, 400
EQUAL_STEPS = [([0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]),
               ([12, 13, 14, 15, 16, 17, 18], [19, 20, 21]),  # unequal local sizes
               ([22, 23, 24, 25, 26, 27], [28, 29, 30, 31, 32, 33])]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_DATA, 1, 12, 10, generator=g)
    y = (x[:, 0, :6].mean((1, 2)) * 6 + 3).clamp(0, 5).long()  # labels the inputs predict
    return x, y


def _model() -> ResNetAudioRanker:
    torch.manual_seed(0)
    return ResNetAudioRanker(n_classes=6, widths=(4, 8))


def _flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()


def _worker(rank: int, world: int, out: str) -> dict:
    x, y = _data()
    model = _model()
    ddp = DDP(model)
    noise = DDPNoiseScale(ddp, ema=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    states, grads = [], []
    for batches in EQUAL_STEPS:
        idx = batches[rank]
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        noise.step(batch_size=len(idx))
        loss = ranker_loss(ddp(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        grads.append(_flat_grad(model))
        opt.step()
    result = dict(hist_a=noise.history, states=states, grads=grads)
    messages = []
    len(noise.history)  # reading the measurement finishes the step; the next one needs step()
    for attempt in ("no_step", "no_sync"):
        try:
            if attempt == "no_sync":
                noise.step(batch_size=4)
                with ddp.no_sync():
                    ddp(x[:4])
            else:
                ddp(x[:4])
            messages.append(None)
        except RuntimeError as err:
            messages.append(str(err))
    result["messages"] = messages
    agree = DDP(_model())
    noise_c = DDPNoiseScale(agree, ema=None)
    gen = torch.Generator().manual_seed(100 + rank)
    t = time.perf_counter()
    for _ in range(AGREE_STEPS):
        idx = torch.randint(N_DATA, (B_LOCAL,), generator=gen)
        noise_c.step(batch_size=B_LOCAL)
        agree.zero_grad()
        ranker_loss(agree(x[idx]), y[idx]).backward()
    result.update(hist_c=noise_c.history, agree_s=time.perf_counter() - t)
    cfg = DDPConfig(epochs=1, batch_size=8, clips=100, out=out, verbose=False)
    result["hist_d"] = train_worker(rank, world, cfg)
    return result


@pytest.fixture(scope="module")
def out() -> Path:
    """One folder per test run, shared by the xdist workers (``GRADKIT_TEST_RUN``)."""
    folder = Path(tempfile.gettempdir()) / f"gradkit-ddp-noise-{os.environ['GRADKIT_TEST_RUN']}"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def ranks(out) -> list[dict]:
    """The 2-process run, spawned once per test run: the first worker to ask spawns it under a
    lock and keeps what the ranks returned; a worker asking later reads that."""
    with FileLock(str(out / "ranks.lock")):
        kept = out / "ranks.pkl"
        if not kept.is_file():
            kept.write_bytes(pickle.dumps(spawn(_worker, 2, (str(out),), timeout=180)))
        return pickle.loads(kept.read_bytes())


def test_ddp_equals_single_process(ranks):
    hist = ranks[0]["hist_a"]
    assert hist.equals(ranks[1]["hist_a"]), "the measurement differs between the ranks"
    model = _model()
    x, y = _data()
    worst = 0.0
    for k, batches in enumerate(EQUAL_STEPS):
        model.load_state_dict(ranks[0]["states"][k])
        g = []
        for idx in batches:
            model.zero_grad()
            ranker_loss(model(x[idx]), y[idx]).backward()
            g.append(_flat_grad(model))
        b = [len(idx) for idx in batches]
        big = sum(bi * gi for bi, gi in zip(b, g, strict=True)) / sum(b)
        small_sq = float(sum(gi.square().sum() for gi in g)) / 2
        big_sq = float(big.square().sum())
        b_small = 2 / sum(1 / bi for bi in b)  # harmonic mean (= the local size when equal)
        gsq, tr = estimates(small_sq, big_sq, b_small, sum(b))
        row = hist.iloc[k]
        assert row.b_big == sum(b) and row.b_small == pytest.approx(b_small, rel=1e-6)
        for name, want in dict(small_sq=small_sq, big_sq=big_sq, grad_sq=gsq,
                               trace_sigma=tr).items():
            assert row[name] == pytest.approx(want, rel=1e-5), (k, name)
            worst = max(worst, abs(row[name] / want - 1))
        for r in range(2):  # DDP's .grad is the mean over all samples of the step, on both ranks
            torch.testing.assert_close(ranks[r]["grads"][k], big, rtol=1e-5, atol=1e-7)
    assert hist.b_small.tolist()[::2] == [6, 6] and hist.b_simple.notna().all()
    print(f"\nlargest relative difference DDP vs one process: {worst:.2g}")


def test_ddp_refuses_no_sync_and_missing_step(ranks):
    no_step, no_sync = ranks[0]["messages"]
    assert no_sync is not None and "no_sync" in no_sync
    assert no_step is not None and "noise.step(batch_size=" in no_step


def test_ddp_b_simple_agrees_with_per_sample_noise_scale(ranks):
    """Batches drawn with replacement make the running means converge to ``noise_scale``'s.

    Each rank draws ``b = 4`` indices i.i.d. uniform from the fixed data set of ``N = 48``, so
    its mean gradient ``g_r`` is the mean of ``b`` i.i.d. rows of ``G`` (the per-sample
    gradients at the fixed weights; no optimiser step, GroupNorm only, so a batch gradient is
    exactly the mean of its per-sample gradients). For i.i.d. rows,
    ``E ||g_b||² = ||g_D||² + trace_sigma / b`` with ``g_D`` and ``trace_sigma = (1/N) Σ
    ||G_i - g_D||²`` exactly as :mod:`gradkit.grads.noise` defines them (population covariance: a
    uniform draw from ``D`` has that covariance). The two ranks' draws are independent, so the
    all-reduced gradient is the mean of ``B = 8`` i.i.d. rows: the two-size estimates of every
    step are unbiased for ``grad_sq(G)`` and ``trace_sigma(G)``, and ``b_simple`` (ratio of
    their running means, ``ema=None``) converges to ``noise_scale(G).b_simple``. (Without
    replacement the expectation would carry the finite-population factor ``(N-b)/(N-1)``.)
    With 400 steps (6,400 draws, >> N) the Monte-Carlo error is well inside the bootstrap
    interval of the data set's own ``b_simple``; the means are also checked by a z-score.
    """
    hist = ranks[0]["hist_c"]
    assert hist.equals(ranks[1]["hist_c"]) and len(hist) == AGREE_STEPS
    x, y = _data()
    G = per_sample_grads(_model(), ranker_loss, x, y)
    exact = noise_scale(G, batch_size=2 * B_LOCAL, n_boot=1000)
    got = float(hist.b_simple.iloc[-1])
    print(f"\nDDP b_simple {got:.4g} vs exact {exact.b_simple:.4g} "
          f"CI {exact.b_simple_ci[0]:.4g}-{exact.b_simple_ci[1]:.4g}; "
          f"{AGREE_STEPS} steps in {ranks[0]['agree_s']:.1f} s")
    lo, hi = exact.b_simple_ci
    assert lo <= got <= hi
    for name, want in (("grad_sq", exact.grad_sq), ("trace_sigma", exact.trace_sigma)):
        v = hist[name].to_numpy()
        z = (v.mean() - want) / (v.std(ddof=1) / math.sqrt(len(v)))
        print(f"{name}: mean {v.mean():.5g} exact {want:.5g} z {z:+.2f}")
        assert abs(z) < 4, (name, z)


def test_ddp_training_writes_history_csv_and_checkpoint(ranks, out):
    hist = ranks[0]["hist_d"]
    assert ranks[1]["hist_d"] is None
    # 108 clips (2 per class and condition), 97 for training, 49 per rank (the sampler pads):
    # 7 steps, 6 of 8 + 8 samples and a last one of 1 + 1
    fields = list(NoiseStep.__dataclass_fields__)
    assert list(hist.columns) == ["step", "epoch", "loss_rank0", *fields[1:]]
    assert len(hist) == 7 and hist.b_big.tolist() == [16] * 6 + [2]
    assert (hist.b_small * 2 == hist.b_big).all()
    csv = pd.read_csv(out / "noise_scale.csv")
    pd.testing.assert_frame_equal(csv, hist, check_dtype=False)
    model = ResNetAudioRanker(n_classes=6)
    payload = load_checkpoint(out / "checkpoints" / "ddp_epoch_001.pt",
                              expected_arch=model.arch_config(), model=model)
    assert payload["epoch"] == 1 and payload["config"]["batch_size"] == 8
    assert (out / "data" / "clips108_seed42" / "wood_3000hz" / "manifest.csv").is_file()
    assert not list(out.rglob("*.tmp"))


def test_estimates_and_advice():
    # E small = G + S/b, E big = G + S/B: the formulas invert this exactly
    gsq, tr = estimates(small_sq=1.0 + 40 / 8, big_sq=1.0 + 40 / 16, b_small=8, b_big=16)
    assert gsq == pytest.approx(1.0) and tr == pytest.approx(40.0)
    with pytest.raises(ValueError):
        estimates(1.0, 1.0, 8, 8)
    assert critical_batch_advice(410, 64) == (
        "B_simple ≈ 410 [EMA], global batch 64: larger batches would still use their samples well")
    assert "waste" in critical_batch_advice(10, 64)
    assert "near the critical" in critical_batch_advice(50, 64)
    assert "undefined" in critical_batch_advice(math.inf, 64)
    assert "no estimate" in critical_batch_advice(np.nan, 64)


def test_ddp_noise_scale_rejects_non_ddp():
    with pytest.raises(TypeError):
        DDPNoiseScale(torch.nn.Linear(2, 2))
