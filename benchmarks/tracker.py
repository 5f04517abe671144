"""Tracked training step against the untracked step of the same loop (issue 27).

``python benchmarks/tracker.py [--quick] [--rounds R] [--steps K] [--device cpu|cuda]``

Per model three copies with the same initial weights and the same batches: untracked, tracked
with per-sample norms and noise scale every step (``gram_every=0``), tracked with the Gram
matrix every step (``gram_every=1``, the cost of a logged step). A step is the whole loop body:
``zero_grad``, forward, backward, ``optimizer.step`` (AdamW), and for the tracked copies the
tracker's own work (its statistics, the update size, the rows it writes). Each round runs ``K``
steps of every variant, the order rotated from round to round so that a slow spell of a shared
machine hits all alike; reported are the medians over rounds of the step time and of the
per-round ratio to the untracked step, and on CUDA the peak memory ratio.

Models: the workbook's ``ResNetAudioRanker`` at N = 128 and a ``TransformerEncoder`` (its
attention is not tracked by the tracker's layers: the table says which share of the parameters
the tracked columns cover). ``--quick``: small batches and models, two rounds (checks that the
script runs; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradkit.core.params import count_parameters
from gradkit.distributed.train import ranker_loss
from gradkit.models import ResNetAudioRanker
from gradkit.track import Tracker

VARIANTS = ("untracked", "norms + noise scale every step", "Gram every step")


class _Encoder(nn.Module):
    def __init__(self, d: int, layers: int, classes: int = 6):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.body(x).mean(1))


def _cases(quick: bool):
    """``(name, make_model, inputs, labels, loss)``."""
    g = torch.Generator().manual_seed(0)
    n = 16 if quick else 128
    yield ("ResNetAudioRanker", ResNetAudioRanker, torch.randn(n, 1, 40, 32, generator=g),
           torch.randint(6, (n,), generator=g), ranker_loss)
    d, layers, t = (32, 1, 16) if quick else (256, 4, 64)
    n = 8 if quick else 64
    yield (f"TransformerEncoder (d={d}, {layers} layers, T={t})", lambda: _Encoder(d, layers),
           torch.randn(n, t, d, generator=g), torch.randint(6, (n,), generator=g),
           F.cross_entropy)


def _measure(make, x, y, loss_fn, rounds: int, steps: int, device: str, folder: Path):
    models, opts, trackers = [], [], []
    for k in range(len(VARIANTS)):
        torch.manual_seed(0)
        model = make().to(device)
        models.append(model)
        opts.append(torch.optim.AdamW(model.parameters(), lr=1e-4))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # untracked layers: the coverage is printed
            trackers.append(None if k == 0 else Tracker(
                model, folder / f"v{k}", gram_every=0 if k == 1 else 1, flush_every=50))
    x, y = x.to(device), y.to(device)

    def step(k: int) -> None:
        model, opt, tracker = models[k], opts[k], trackers[k]
        if tracker is None:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
        else:
            with tracker.step(labels=y):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
        opt.step()

    def run(k: int) -> tuple[float, int]:
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for _ in range(steps):
            step(k)
        if device == "cuda":
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
        return (time.perf_counter() - t) / steps, peak

    for k in range(len(VARIANTS)):
        run(k)  # warm-up (and the tracker's first, checked step)
    times, peaks = [[] for _ in VARIANTS], [[] for _ in VARIANTS]
    for r in range(rounds):
        for k in [(r + j) % len(VARIANTS) for j in range(len(VARIANTS))]:
            t, p = run(k)
            times[k].append(t)
            peaks[k].append(p)
    covered = trackers[1].capture.covered()
    share = sum(p.numel() for p in covered.values()) / count_parameters(models[0])
    for tracker in trackers[1:]:
        tracker.close()
    return times, peaks, share


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    rounds = a.rounds or (2 if a.quick else 15)
    steps = a.steps or (1 if a.quick else 4)
    print(f"torch {torch.__version__}, {a.device}, {rounds} rounds x {steps} steps\n")
    print("| model | N | tracked share of parameters | variant | median step (ms) | "
          "x untracked (median) | peak memory x untracked |")
    print("|---|---:|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make, x, y, loss_fn) in enumerate(_cases(a.quick)):
            times, peaks, share = _measure(make, x, y, loss_fn, rounds, steps, a.device,
                                           Path(tmp) / str(i))
            base = times[0]
            for k, variant in enumerate(VARIANTS):
                ratio = statistics.median(t / b for t, b in zip(times[k], base, strict=True))
                mem = (f"{max(peaks[k]) / max(peaks[0]):.2f}" if a.device == "cuda" else "n/a")
                print(f"| {name} | {len(y)} | {share:.2f} | {variant} | "
                      f"{1000 * statistics.median(times[k]):.1f} | {ratio:.2f} | {mem} |",
                      flush=True)


if __name__ == "__main__":
    main()
