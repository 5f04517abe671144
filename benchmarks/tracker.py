"""Tracked training step against the untracked step of the same loop (issue 27).

    python benchmarks/tracker.py            # the three models, writes the table to README.md
    python benchmarks/tracker.py --quick    # tiny sizes, two rounds: checks that it runs
    python benchmarks/tracker.py --device cuda --no-readme

Per model, copies with the same initial weights and the same batches: untracked; tracked with
per-sample norms and the noise scale every step (``gram_every=0``); tracked with the Gram
matrix and the k = 256 sketch every step (``gram_every=1, sketch_k=256``: the cost of a logged
step); and, where the hooks cannot read some layers, tracked with the exact fallback for them
(``loss_fn`` and ``step(inputs=x)``). A step is the whole loop body: ``zero_grad``, forward,
backward, ``optimizer.step`` (AdamW), and for the tracked copies the tracker's own work (its
statistics, the update size, the rows it writes). Each round runs ``K`` steps of every variant,
the order rotated from round to round so that a slow spell of a shared machine hits all alike;
reported are the medians over rounds of the step time and of the per-round ratio to the
untracked step. Peak memory: tensor memory allocated during one step above what was allocated
before it (``torch.profiler`` on CPU, ``max_memory_allocated`` on CUDA), as a ratio to the
untracked step's.

Models: the workbook's ``ResNetAudioRanker`` at N = 128; ``nn.TransformerEncoder`` (d = 256,
4 layers, T = 64, N = 64), whose ``MultiheadAttention`` the hooks cannot read (the table says
which share of the parameters the hooks cover, and the fallback row covers the rest); and a
25 M-parameter transformer whose attention is written with ``nn.Linear`` projections and
``F.scaled_dot_product_attention`` (8 blocks of width 512, T = 128, N = 32), as many users'
models are, which the hooks cover whole.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from per_sample_grads import machine, peak_memory_mib, write_readme  # noqa: E402

from gradkit.core.params import count_parameters  # noqa: E402
from gradkit.distributed.train import ranker_loss  # noqa: E402
from gradkit.models import ResNetAudioRanker  # noqa: E402
from gradkit.track import Tracker, load_run  # noqa: E402

README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- tracker:begin -->", "<!-- tracker:end -->"
VARIANTS = {"untracked": None,
            "norms + noise scale every step": dict(gram_every=0),
            "Gram + sketch (k = 256) every step": dict(gram_every=1, sketch_k=256),
            "norms + exact fallback every step": dict(gram_every=0, fallback=True)}


class _Encoder(nn.Module):
    def __init__(self, d: int, layers: int, classes: int = 6):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.body(x).mean(1))


class _Block(nn.Module):
    """Pre-norm attention and feed-forward, the projections as ``nn.Linear``."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.norm2, self.up, self.down = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        x = x + self.proj(a)
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class LinearAttentionTransformer(nn.Module):
    """``layers`` blocks of width ``d``, mean-pooled, a ``classes``-way head."""

    def __init__(self, d: int = 512, layers: int = 8, heads: int = 8, classes: int = 10):
        super().__init__()
        self.blocks = nn.Sequential(*[_Block(d, heads) for _ in range(layers)])
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        return self.head(self.blocks(x).mean(1))


def _cases(quick: bool):
    """``(name, make_model, inputs, labels, loss, variants)``."""
    g = torch.Generator().manual_seed(0)
    n = 16 if quick else 128
    plain = [v for v in VARIANTS if "fallback" not in v]
    yield ("ResNetAudioRanker", ResNetAudioRanker, torch.randn(n, 1, 40, 32, generator=g),
           torch.randint(6, (n,), generator=g), ranker_loss, list(VARIANTS))
    d, layers, t, n = (32, 1, 16, 8) if quick else (256, 4, 64, 64)
    yield (f"nn.TransformerEncoder (d = {d}, {layers} layers, T = {t})",
           lambda: _Encoder(d, layers), torch.randn(n, t, d, generator=g),
           torch.randint(6, (n,), generator=g), F.cross_entropy, list(VARIANTS))
    d, layers, t, n = (32, 2, 16, 4) if quick else (512, 8, 128, 32)
    yield (f"Linear-projection transformer (d = {d}, {layers} blocks, T = {t})",
           lambda: LinearAttentionTransformer(d, layers), torch.randn(n, t, d, generator=g),
           torch.randint(10, (n,), generator=g), F.cross_entropy, plain)


def _measure(make, x, y, loss_fn, variants, rounds: int, steps: int, device: str,
             folder: Path, memory: bool):
    models, opts, trackers = [], [], []
    for k, variant in enumerate(variants):
        torch.manual_seed(0)
        model = make().to(device)
        models.append(model)
        opts.append(torch.optim.AdamW(model.parameters(), lr=1e-4))
        spec = dict(VARIANTS[variant] or {})
        fallback = spec.pop("fallback", False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # untracked layers: the coverage is printed
            trackers.append(None if VARIANTS[variant] is None else Tracker(
                model, folder / f"v{k}", flush_every=50,
                loss_fn=loss_fn if fallback else None, **spec))
    x, y = x.to(device), y.to(device)

    def step(k: int) -> None:
        model, opt, tracker = models[k], opts[k], trackers[k]
        if tracker is None:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
        else:
            with tracker.step(labels=y, inputs=x):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
        opt.step()

    def run(k: int) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            step(k)
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / steps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(len(variants)):
            run(k)  # warm-up (and the tracker's first, checked step)
        times = [[] for _ in variants]
        for r in range(rounds):
            for k in [(r + j) % len(variants) for j in range(len(variants))]:
                times[k].append(run(k))
        peaks = [_peak(lambda k=k: step(k), device) for k in range(len(variants))] \
            if memory else None
    shares = []
    for k, tracker in enumerate(trackers):
        if tracker is not None:
            tracker.close()
        shares.append(None if tracker is None else
                      float(load_run(folder / f"v{k}").scalars["covered"].iloc[-1]))
    return times, peaks, shares


def _peak(fn, device: str) -> float:
    if device != "cuda":
        return peak_memory_mib(fn)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--only", type=int, nargs="+", default=None,
                   help="the models to run, by position (0: ResNet, 1: nn.TransformerEncoder, "
                        "2: the 25 M transformer); with --no-readme, to run them side by side")
    a = p.parse_args()
    rounds = a.rounds or (2 if a.quick else 9)
    steps = a.steps or (1 if a.quick else 2)
    head = (f"Measured on {machine()}, device {a.device}: {rounds} rounds x {steps} steps "
            "(the 25 M transformer: 3 rounds x 1 step).")
    lines = [head, "", "| model | N | parameters | variant | share of parameters covered | "
             "median step (ms) | x untracked (median) | peak memory x untracked |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make, x, y, loss_fn, variants) in enumerate(_cases(a.quick)):
            large = name.startswith("Linear-projection") and not a.quick
            if a.only is not None and i not in a.only:
                continue
            times, peaks, shares = _measure(
                make, x, y, loss_fn, variants, 3 if large else rounds, 1 if large else steps,
                a.device, Path(tmp) / str(i), memory=not a.quick)
            size = count_parameters(make())
            for k, variant in enumerate(variants):
                ratio = statistics.median(t / b for t, b in zip(times[k], times[0], strict=True))
                mem = f"{peaks[k] / peaks[0]:.2f}" if peaks else "—"
                share = "—" if shares[k] is None else f"{shares[k]:.2f}"
                line = (f"| {name} | {len(y)} | {size / 1e6:.2f} M | {variant} | {share} | "
                        f"{1000 * statistics.median(times[k]):.1f} | {ratio:.2f} | {mem} |")
                lines.append(line)
                print(line, flush=True)
    if not a.quick and not a.no_readme:
        write_readme("\n".join([BEGIN, *lines, END]), README, BEGIN, END)


if __name__ == "__main__":
    main()
