"""Overhead of the DDPNoiseScale hook against plain DDP (2 gloo processes on the CPU).

``python benchmarks/ddp_overhead.py [--rounds R] [--steps K] [--batch 32 128]``

Both ranks build three DDP models with the same initial weights: plain DDP (its built-in C++
all-reduce), DDP with PyTorch's own ``allreduce_hook`` registered from Python (what any Python
comm hook costs), and DDP with :class:`gradkit.distributed.DDPNoiseScale`. A step is what the
hook touches: ``zero_grad``, forward, backward of the mean loss (including the all-reduce); the
optimiser step, which the hook does not change, is left out, so the ratio is the stricter one.
Each round runs ``K`` steps of every variant on the same batches, the order rotated from round
to round, so that a slow spell of the shared machine hits all variants alike; reported are the
medians over rounds of the per-step time and of the per-round ratio to plain DDP (rank 0).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP

from gradkit.core.params import count_parameters
from gradkit.distributed import DDPNoiseScale, spawn
from gradkit.distributed.train import ranker_loss
from gradkit.models import ResNetAudioRanker

VARIANTS = ("plain DDP", "DDP + Python allreduce_hook", "DDP + DDPNoiseScale")


def _worker(rank: int, world: int, batch: int, rounds: int, steps: int) -> dict:
    import torch.distributed as dist

    models, hooks = [], []
    for k in range(len(VARIANTS)):
        torch.manual_seed(0)
        ddp = DDP(ResNetAudioRanker())
        if k == 1:
            ddp.register_comm_hook(dist.group.WORLD, allreduce_hook)
        hooks.append(DDPNoiseScale(ddp) if k == 2 else None)
        models.append(ddp)
    g = torch.Generator().manual_seed(rank)
    x, y = torch.randn(batch, 1, 40, 32, generator=g), torch.randint(6, (batch,), generator=g)

    def run(k: int) -> float:
        t = time.perf_counter()
        for _ in range(steps):
            if hooks[k] is not None:
                hooks[k].step(batch_size=batch)
            models[k].zero_grad(set_to_none=True)
            ranker_loss(models[k](x), y).backward()
        return (time.perf_counter() - t) / steps

    for k in range(len(VARIANTS)):  # warm-up (DDP rebuilds its buckets after the first step)
        run(k)
    times = [[] for _ in VARIANTS]
    for r in range(rounds):
        for k in [(r + j) % len(VARIANTS) for j in range(len(VARIANTS))]:
            times[k].append(run(k))
    same = all(torch.equal(a.grad, b.grad) for a, b in
               zip(models[0].parameters(), models[2].parameters(), strict=True))
    diff = max(float((a.grad - b.grad).abs().max()) for a, b in
               zip(models[0].parameters(), models[2].parameters(), strict=True))
    return dict(times=times, same=same, diff=diff, b_simple=hooks[2].b_simple)


def hook_arithmetic_us(n: int, reps: int = 2000) -> float:
    """Median µs of the tensor work the hook adds to one bucket of ``n`` float32 gradients
    (copy out, two float64 norms, the three-scalar tail, scale, unscale, copy back), without
    the all-reduce that plain DDP runs too: a load-independent bound on the hook's own cost."""
    buf, b = torch.randn(n), 32
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        send = torch.empty(n + 3)
        send[:n].copy_(buf)
        send[n + 2] = torch.linalg.vector_norm(send[:n], dtype=torch.float64).square()
        send[n:n + 2] = torch.tensor([b, 1.0 / b])
        send[:n].mul_(b)
        grad = send[:n].div_(send[n])
        big = torch.linalg.vector_norm(grad, dtype=torch.float64).square()
        torch.stack([torch.cat([send[n:].double(), big.reshape(1)])]).cpu().tolist()
        buf.copy_(grad)
        times.append(time.perf_counter() - t)
    return 1e6 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, nargs="+", default=[32, 128], help="per rank")
    a = p.parse_args()
    print(f"ResNetAudioRanker ({count_parameters(ResNetAudioRanker())} parameters), 2 gloo "
          f"processes x 1 thread, torch {torch.__version__}, {a.rounds} rounds x {a.steps} steps\n")
    print("| batch per rank (global) | variant | median step (ms) | x plain DDP (median) |")
    print("|---:|---|---:|---:|")
    torch.set_num_threads(1)
    us = hook_arithmetic_us(count_parameters(ResNetAudioRanker()))
    for batch in a.batch:
        res = spawn(_worker, 2, (batch, a.rounds, a.steps), timeout=1800)[0]
        plain = res["times"][0]
        ms_plain = 1000 * statistics.median(plain)
        for k, name in enumerate(VARIANTS):
            ratio = statistics.median(t / p0 for t, p0 in zip(res["times"][k], plain,
                                                               strict=True))
            ms = 1000 * statistics.median(res["times"][k])
            print(f"| {batch} ({2 * batch}) | {name} | {ms:.1f} | {ratio:.3f} |", flush=True)
        print(f"<!-- batch {batch}: plain step {ms_plain:.1f} ms; hook arithmetic alone "
              f"{us:.0f} µs = {us / 10 / ms_plain:.2f} % of it -->")
        print(f"<!-- batch {batch}: gradients identical to plain DDP: {res['same']} "
              f"(max abs diff {res['diff']:.1e}); B_simple {res['b_simple']:.3g} -->")


if __name__ == "__main__":
    main()
