"""``DDPTracker`` in two real gloo processes: rank 0 alone writes the run; its rows are the
per-sample statistics of rank 0's local batch (a per-sample loop on the same batch, 1e-5
relative), and the DDP noise hook's measurement sits beside them (``tables["ddp_noise"]``).

One spawn per test run (module fixture, as in ``test_ddp_noise.py``) runs a few SGD steps on
fixed per-rank batches, one with unequal local sizes (7 and 3); the parent replays rank 0's
batches at the saved weights.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from gradkit.distributed import DDPNoiseScale, DDPTracker, NoiseStep, spawn
from gradkit.grads.noise import noise_scale
from gradkit.track import Tracker, TrackerCheckError, load_run

STEPS = [([0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]),
         ([12, 13, 14, 15, 16, 17, 18], [19, 20, 21]),  # unequal local sizes
         ([22, 23, 24, 25, 26, 27], [28, 29, 30, 31, 32, 33])]


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _loop_grads(model, x, y):
    """``G[N, P]``: each sample's gradient of its own loss, one backward per sample."""
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), list(model.parameters()))])
        for i in range(len(y))]
    return torch.stack(rows)


def _worker(rank: int, world: int, base: str) -> dict:
    x, y = _data()
    model = _model()
    ddp = DDP(model)
    noise = DDPNoiseScale(ddp, ema=0.5)
    tracker = DDPTracker(ddp, Path(base) / f"rank{rank}", noise=noise, gram_every=2,
                         flush_every=2, tensorboard=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    states = []
    for batches in STEPS:
        idx = batches[rank]
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        with tracker.step(labels=y[idx], epoch=0):
            loss = F.cross_entropy(ddp(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
        opt.step()
    states.append({k: v.clone() for k, v in model.state_dict().items()})
    tracker.close()
    hist = noise.history
    # the plain tracker reads DDP's reduced .grad: its first-step check refuses that
    plain, refused = Tracker(model, Path(base) / f"plain{rank}") if rank == 0 else None, None
    idx = STEPS[0][rank]
    noise.step(batch_size=len(idx))
    try:
        with plain.step(labels=y[idx]) if plain is not None else _nothing():
            opt.zero_grad()
            F.cross_entropy(ddp(x[idx]), y[idx]).backward()
    except TrackerCheckError as err:
        refused = str(err)
    return dict(states=states, hist=hist, refused=refused)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


@pytest.fixture(scope="module")
def out() -> Path:
    folder = Path(tempfile.gettempdir()) / f"gradkit-ddp-track-{os.environ['GRADKIT_TEST_RUN']}"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def ranks(out) -> list[dict]:
    """Spawned once per test run (the first xdist worker to ask, under a lock)."""
    with FileLock(str(out / "ranks.lock")):
        kept = out / "ranks.pkl"
        if not kept.is_file():
            kept.write_bytes(pickle.dumps(spawn(_worker, 2, (str(out),), timeout=180)))
        return pickle.loads(kept.read_bytes())


def _close(got, want, rtol=1e-5):
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want,
                                                                           dtype=torch.float64)
    assert float((got - want).abs().max()) <= rtol * float(want.abs().max()), (got, want)


def test_rank0_alone_writes_its_local_batchs_statistics(ranks, out):
    assert (out / "rank0" / "meta.json").is_file()
    assert not (out / "rank1").exists()  # a non-zero rank never writes the run folder
    run = load_run(out / "rank0")
    assert list(run.scalars["step"]) == [0, 1, 2] and list(run.scalars["n"]) == [6, 7, 6]
    assert run.meta["sessions"][0]["checks"]["per_sample_sum_vs_grad"] is True
    x, y = _data()
    model = _model()
    states = ranks[0]["states"]
    for k, (_, row) in enumerate(run.scalars.iterrows()):
        idx = STEPS[k][0]
        model.load_state_dict(states[k])
        G = _loop_grads(model, x[idx], y[idx])
        ns = noise_scale(G, batch_size=len(idx), n_boot=0)
        norms = G.norm(dim=1)
        q = torch.quantile(norms, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        _close([row.norm_min, row.norm_q10, row.norm_q50, row.norm_q90, row.norm_max],
               [norms.min(), *q, norms.max()])
        # the local batch's gradient, not DDP's reduced one
        _close([row.grad_sq, row.grad_norm, row.trace_sigma, row.b_simple],
               [ns.grad_sq, ns.grad_sq ** 0.5, ns.trace_sigma, ns.b_simple])
        moved = sum(float((states[k + 1][n] - states[k][n]).square().sum())
                    for n in states[k]) ** 0.5  # the step taken, from the reduced gradient
        _close(row.update_size, moved)
        if k in run.grams:
            _close(run.grams[k], G @ G.T)
    assert sorted(run.grams) == [0, 2]


def test_the_noise_hooks_measurement_is_recorded_beside_each_step(ranks, out):
    table = load_run(out / "rank0").tables["ddp_noise"]
    hist = ranks[0]["hist"].iloc[:3]
    assert list(table["step"]) == [0, 1, 2] and list(table["session"]) == [0, 0, 0]
    for field in list(NoiseStep.__dataclass_fields__)[1:]:
        _close(list(table[field]), list(hist[field]), rtol=1e-12)
    assert list(table["b_big"]) == [12, 10, 12]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "rank0" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for field in ("b_simple", "small_sq", "big_sq", "b_small"):
        assert [(e.step, e.value) for e in acc.Scalars(f"gradkit/ddp/{field}")] == [
            (k, np.float32(v)) for k, v in enumerate(table[field])], field


def test_a_later_session_supersedes_a_tables_rows_from_its_start_step(tmp_path):
    model = _model()
    for start, steps, value in ((None, range(4), 0.0), (2, range(2, 5), 1.0)):
        tracker = Tracker(model, tmp_path / "run", start_step=start)
        tracker.folder.write_rows(tracker.session, [{"step": k, "v": value} for k in steps],
                                  table="extra")
        tracker.close()
    table = load_run(tmp_path / "run").tables["extra"]
    assert list(table["step"]) == [0, 1, 2, 3, 4] and list(table["v"]) == [0, 0, 1, 1, 1]
    assert list(table["session"]) == [0, 0, 1, 1, 1]


def test_the_plain_tracker_refuses_ddps_reduced_grad(ranks):
    assert "first-step check failed" in ranks[0]["refused"]
    assert ranks[1]["refused"] is None


def test_local_grads_in_one_process_equal_the_default(tmp_path):
    x, y = _data()
    runs = []
    for local in (False, True):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = Tracker(model, tmp_path / f"run{local}", gram_every=2, local_grads=local)
        for idx, _ in STEPS:
            with tracker.step(labels=y[idx]):
                opt.zero_grad()
                F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        tracker.close()
        runs.append(load_run(tmp_path / f"run{local}").scalars)
    assert runs[0].equals(runs[1])


def test_ddp_tracker_rejects_a_plain_model(tmp_path):
    with pytest.raises(TypeError, match="DistributedDataParallel"):
        DDPTracker(nn.Linear(2, 2), tmp_path / "run")
