"""Per-sample gradients on the default model: gradkit against its peers, in one command.

    python benchmarks/per_sample_grads.py          # all models; writes the tables in the READMEs
    python benchmarks/per_sample_grads.py --quick  # 2 rounds, every exactness check, no README

Models: ``ResNetAudioRanker`` at N = 32 and 128, and the foreign models of
``benchmarks/foreign_models.py`` (TransformerEncoder, LSTM, torchaudio's Conformer and
Wav2Letter), each against the same methods.

The ranker: ``ResNetAudioRanker()`` (eval mode) on inputs of the default feature size
(``gradkit.data.features``: one 0.5 s clip -> ``[1, 40 mels, 32 frames]``), random normal inputs and
labels (timing does not depend on the values). Loss: cross-entropy of the class logits plus
``0.1 (score - angle/180)^2`` for the score head, so that every parameter of both heads gets a
gradient (hook-based peers stumble over a head whose output is unused). Every method must give the
same ``[N, P]`` per-sample gradients as the per-sample autograd loop (checked; max abs difference
in the table).

Methods: the plain batch backward (the unit: one forward + backward of the mean loss, what a
training step costs), gradkit (``method="auto"``, whose warm-up call learns the model: timed
rounds are its steady state, as in a training run; its first call on a model, with the
reference pass, probes and consistency check, is timed separately after ``forget``; and the
plain ``torch.func`` vmap recipe), a per-sample autograd loop, BackPACK (``BatchGrad``), Opacus
(``GradSampleModule``) and PyTorch's own ExpandedWeights (``call_for_per_sample_grads``). Peers
that are not installed (see ``benchmarks/requirements.txt``) or that cannot handle the model are
reported as skipped.

Timing: ``rounds`` rounds, each running every method once in turn (so a slow spell of this
shared machine hits all methods alike); reported are the median wall time and the median over
rounds of the time relative to that round's plain backward. The verdict compares gradkit with
the fastest exact alternative by a paired t-test of the log times over the rounds
(``gradkit.stats.compare_paired``): faster, slower, or no detectable difference. Peak memory:
the peak of tensor memory allocated during one call (``torch.profiler`` with
``profile_memory=True``), including the ``[N, P]`` result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from gradkit.grads import per_sample_grads  # noqa: E402
from gradkit.models import ResNetAudioRanker  # noqa: E402
from gradkit.stats import compare_paired  # noqa: E402
from gradkit.stats.text import p_text  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from foreign_models import MODELS  # noqa: E402
from peers import Skip, make  # noqa: E402

README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- per-sample-summary:begin -->", "<!-- per-sample-summary:end -->"
AGREE_TOL = 1e-5
METHODS = ("plain", "gradkit", "gradkit-first", "gradkit-floor", "gradkit-noconv",
           "gradkit-vmap", "loop", "backpack", "opacus", "expanded-weights")
# gradkit's own rows that are not alternatives to it (its first call, ablations)
NOT_ALTERNATIVES = ("plain", "gradkit", "gradkit-first", "gradkit-floor", "gradkit-noconv")
LABELS = {
    "plain": "plain batch backward (unit)",
    "gradkit": "gradkit `per_sample_grads` (auto)",
    "gradkit-first": "(gradkit auto, a model's first call: reference pass, probes, check)",
    "gradkit-floor": "(gradkit's pass without any per-sample product: the floor)",
    "gradkit-noconv": "(gradkit without the conv per-sample products)",
    "gradkit-vmap": "gradkit, `torch.func` vmap recipe",
    "loop": "per-sample autograd loop",
    "backpack": "BackPACK `BatchGrad`",
    "opacus": "Opacus `GradSampleModule`",
    "expanded-weights": "PyTorch ExpandedWeights",
}


def input_shape() -> tuple[int, int, int]:
    """One sample's feature shape, from the feature pipeline itself."""
    from gradkit.data import CLIP_SECONDS, SAMPLE_RATE
    from gradkit.data.features import log_mel

    return tuple(log_mel(torch.zeros(1, int(SAMPLE_RATE * CLIP_SECONDS))).shape[1:])


def loss_sum(outputs, targets):
    """``Σ_n CE(logits_n, label_n) + 0.1 (score_n - angle_n / 180)^2``."""
    (logits, score), (labels, angles) = outputs, targets
    return (F.cross_entropy(logits, labels, reduction="sum")
            + 0.1 * (score - angles / 180).pow(2).sum())


def loss_mean(outputs, targets):
    """The same, averaged over the batch (what a training step minimises)."""
    return loss_sum(outputs, targets) / targets[0].shape[0]


def setup(n: int, seed: int = 0):
    torch.manual_seed(seed)
    model = ResNetAudioRanker().eval()
    x = torch.randn(n, *input_shape())
    y = (torch.randint(0, model.n_classes, (n,)), torch.rand(n) * 180)
    return model, x, y


def ce_sum(outputs, targets):
    return F.cross_entropy(outputs, targets, reduction="sum")


def ce_mean(outputs, targets):
    return F.cross_entropy(outputs, targets)


@dataclass
class Case:
    """One model and batch: ``loss_sum`` for the peers (sum reduction), ``loss_mean`` else."""

    name: str
    model: torch.nn.Module
    x: object
    y: object
    loss_sum: Callable
    loss_mean: Callable
    n: int
    ablations: bool = False


def resnet_case(n: int) -> Case:
    model, x, y = setup(n)
    return Case("ResNetAudioRanker (workbook)", model, x, y, loss_sum, loss_mean, n, True)


def foreign_case(name: str) -> Case:
    build, n = MODELS[name]
    torch.manual_seed(0)
    model, x, y = build(n)
    return Case(name, model, x, y, ce_sum, ce_mean, n)


def peak_memory_mib(fn: Callable[[], object]) -> float:
    """Peak of tensor memory allocated by one call above what was allocated before it.

    From ``torch.profiler`` (``profile_memory=True``): every allocation and free, netted per
    operator, summed in time order; the result (the call's return value) is kept until the end.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    steps = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                   if e.self_cpu_memory_usage)
    level = peak = 0
    for _, delta in steps:
        level += delta
        peak = max(peak, level)
    del out
    return peak / 2**20


# A method whose warm-up call takes longer than this is timed in one round only (vmap on
# Wav2Letter's Conv1d(250, 2000, 32) takes ~24 s a call): the run stays under ~10 minutes.
SLOW_S = 8.0


def agreement(out: torch.Tensor, ref: torch.Tensor, row: dict) -> None:
    """Max abs difference to the loop; by per-sample norms where a peer reorders parameters."""
    if out.shape != ref.shape:
        row["skipped"] = f"result of shape {tuple(out.shape)}, not {tuple(ref.shape)}"
        return
    covered = ~out.isnan().any(0)
    diff = float((out - ref)[:, covered].abs().max())
    if diff > AGREE_TOL and covered.all():  # Opacus' DP layers order parameters differently
        by_norm = float((out.norm(dim=1) - ref.norm(dim=1)).abs().max())
        if by_norm <= AGREE_TOL * max(1.0, float(ref.norm(dim=1).max())):
            diff, row["partial"] = by_norm, "compared by per-sample norms (parameter order)"
    row["max_abs_diff"] = diff
    row["agrees"] = diff <= AGREE_TOL * max(1.0, float(ref.abs().max()))
    if not covered.all():
        row["partial"] = f"only {int(covered.sum())} of {covered.numel()} parameters"


def bench(case: Case, rounds: int, memory: bool) -> list[dict]:
    n = case.n
    fns, rows = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = per_sample_grads(case.model, case.loss_mean, case.x, case.y, method="loop")
    for method in METHODS:
        row = rows[method] = {"model": case.name, "N": n, "method": method,
                              "label": LABELS[method]}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn = make(method, case)
                t0 = time.perf_counter()
            out = fn()  # warm-up, and the agreement check
            row["warmup_s"] = time.perf_counter() - t0
        except Skip as why:
            row["skipped"] = str(why)
            continue
        except Exception as err:  # noqa: BLE001 - a peer that cannot handle the model
            row["skipped"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:90]}"
            continue
        if out is not None:
            agreement(out.detach(), ref, row)
            if "skipped" in row:
                continue
        fns[method] = fn
    times = {m: [] for m in fns}
    for r in range(rounds):
        for method, fn in fns.items():
            if r and rows[method]["warmup_s"] > SLOW_S:
                continue
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()
            times[method].append(time.perf_counter() - t0)
    for method, ts in times.items():
        row = rows[method]
        base = times["plain"][: len(ts)]
        row["median_ms"] = 1e3 * statistics.median(ts)
        row["ratio"] = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        row["ratio_min"] = min(ts) / min(times["plain"])
        row["rounds"] = len(ts)
        row["times_s"] = ts
        if memory:
            row["peak_mib"] = peak_memory_mib(fns[method])
    return list(rows.values())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:  # the vector units matter: oneDNN's kernels differ between AVX2 and AVX-512 CPUs
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(x.split(":", 1)[1].strip() for x in info if x.startswith("model name"))
        flags = set(next(x for x in info if x.startswith("flags")).split(":", 1)[1].split())
        cpu += " (" + ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else
                       "no AVX2") + ")"
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")


def table(rows: list[dict]) -> str:
    lines = ["| model | N | method | median time (ms) | x plain backward (median) | x plain (best)"
             " | peak memory (MiB) | max abs diff vs loop |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        head = f"| {r['model']} | {r['N']} | {r['label']}"
        if "skipped" in r:
            lines.append(f"{head} | — | — | — | — | skipped: {r['skipped']} |")
            continue
        mem = r.get("peak_mib")
        mem = "—" if mem is None else f"{mem:.0f}"
        diff = ("(reference)" if r["method"] == "loop" else
                "—" if "max_abs_diff" not in r else
                f"{r['max_abs_diff']:.1e}" + ("" if r["agrees"] else " **DISAGREES**"))
        if "partial" in r:
            diff += f"; {r['partial']}"
        once = " (1 round)" if r.get("rounds") == 1 else ""
        lines.append(f"{head} | {r['median_ms']:.1f}{once} | {r['ratio']:.2f} | "
                     f"{r['ratio_min']:.2f} | {mem} | {diff} |")
    return "\n".join(lines)


def against(g: dict, alt: dict) -> str:
    """gradkit against one alternative: the paired t-test (``gradkit.stats``) of the log time
    ratio over the rounds both ran, as a ratio with its 95 % interval and a verdict."""
    k = min(len(g["times_s"]), len(alt["times_s"]))
    a, b = np.log(g["times_s"][:k]), np.log(alt["times_s"][:k])
    c = compare_paired(a, b, higher_is_better=False, label_a="gradkit", label_b=alt["method"],
                       what="rounds")
    if math.isnan(c.p_value):
        return f"{math.exp(c.diff):.2f}x its time ({c.reason})"
    word = {"better": "faster than", "worse": "SLOWER than",
            "no detectable difference": "no detectable difference from"}[c.verdict]
    lo, hi = (math.exp(v) for v in c.ci)
    return (f"{math.exp(c.diff):.2f}x its time [{lo:.2f}, {hi:.2f}] over {c.n} rounds "
            f"({p_text(c.p_value, c.alpha)}): {word} it")


def verdict(rows: list[dict]) -> str:
    """One generated sentence per model and N: gradkit against the fastest exact alternative
    (by median ratio), compared by :func:`against`."""
    out = []
    for key in dict.fromkeys((r["model"], r["N"]) for r in rows):
        timed = {r["method"]: r for r in rows if (r["model"], r["N"]) == key and "ratio" in r}
        if "gradkit" not in timed:
            out.append(f"{key[0]}, N = {key[1]}: gradkit did not run.")
            continue
        g = timed["gradkit"]
        s = f"{key[0]}, N = {key[1]}: gradkit takes {g['ratio']:.2f}x a plain batch backward"
        s += ", exact" if g.get("agrees") else ", NOT exact (max abs diff above 1e-5)"
        if "gradkit-first" in timed:
            s += f" ({timed['gradkit-first']['ratio']:.2f}x on a model's first call)"
        exact = {m: r["ratio"] for m, r in timed.items()
                 if m not in NOT_ALTERNATIVES and r.get("agrees")
                 and "only" not in r.get("partial", "")}
        if exact:
            best = min(exact, key=exact.get)
            s += (f"; the fastest exact alternative, {LABELS[best]}, takes {exact[best]:.2f}x: "
                  f"gradkit {against(g, timed[best])}")
        if key[0].startswith("ResNet") and key[1] == 128:
            s += "; target <= 1.2x " + ("met" if g["ratio"] <= 1.2 else "NOT met")
        if "gradkit-floor" in timed and "gradkit-noconv" in timed:
            floor, noconv = timed["gradkit-floor"]["ratio"], timed["gradkit-noconv"]["ratio"]
            s += (f". Of gradkit's {g['ratio']:.2f}x, {floor:.2f}x is the forward + backward "
                  f"without weight gradients, {g['ratio'] - noconv:+.2f}x the conv per-sample "
                  f"products and {noconv - floor:+.2f}x the other layers' (GroupNorm, Linear)")
        out.append(s + ".")
    return "\n".join(f"- {s}" for s in out)


def write_readme(text: str, path: Path = README, begin: str = BEGIN, end: str = END) -> None:
    """Replace the text between ``begin`` and ``end`` in ``path`` (appended if absent)."""
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = old[: old.index(begin)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--foreign-rounds", type=int, default=7)
    ap.add_argument("--models", nargs="*", default=list(MODELS),
                    help="the foreign models to run (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="2 rounds, no memory, no README (every exactness check still runs)")
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args(argv)
    rounds = 2 if args.quick else args.rounds
    frounds = 2 if args.quick else args.foreign_rounds
    rows = []
    for n in args.sizes:
        print(f"ResNetAudioRanker, N = {n}: {rounds} rounds", flush=True)
        rows += bench(resnet_case(n), rounds, memory=not args.quick)
    for name in args.models:
        print(f"{name}: {frounds} rounds", flush=True)
        rows += bench(foreign_case(name), frounds, memory=False)
    text = "\n".join([
        BEGIN,
        f"Measured by `python benchmarks/per_sample_grads.py` on {machine()}; "
        f"ResNetAudioRanker input {list(input_shape())}, {rounds} interleaved rounds; the "
        f"foreign models ({', '.join(args.models)}; `benchmarks/foreign_models.py`) "
        f"{frounds} rounds, a method whose first call took over {SLOW_S:.0f} s once. "
        "Ratios are relative to the plain batch backward of the same round.",
        "",
        table(rows),
        "",
        verdict(rows),
        END,
    ])
    print(text)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "per_sample_grads.json").write_text(json.dumps(rows, indent=1))
    summary = "\n".join([
        SUMMARY_BEGIN,
        f"Generated by `benchmarks/per_sample_grads.py` ({rounds} interleaved rounds for the "
        f"ranker, {frounds} for the others; {machine()}); the unit is a plain batch forward + "
        "backward of the mean loss, the full table is in `benchmarks/README.md`:",
        "",
        verdict(rows),
        SUMMARY_END,
    ])
    if not (args.quick or args.no_readme):
        write_readme(text)
        write_readme(summary, ROOT / "README.md", SUMMARY_BEGIN, SUMMARY_END)
        print(f"wrote {README} and the summary in README.md")
    wrong = [r for r in rows if r["method"] == "gradkit" and not r.get("agrees")]
    disagree = [r for r in rows if r.get("agrees") is False]
    if disagree:
        print("methods disagree with the per-sample loop:",
              [(r["model"], r["N"], r["method"], r["max_abs_diff"]) for r in disagree])
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
