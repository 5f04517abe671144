"""Per-sample norms, Gram matrices and sketches without ``[N, P]``: time and memory against a
plain batch backward, on the benchmark models of ``per_sample_grads.py``.

    python benchmarks/gram.py            # the five models, and the 25 M-parameter encoder;
                                         # writes the table and the README summary
    python benchmarks/gram.py --quick    # tiny sizes, one round, every exactness check, no README

Rows per model: the plain batch backward (the unit), ``per_sample_norms``, ``gradient_gram``,
``gradient_sketch`` (k = 256), the materialised path (``per_sample_grads`` then ``G Gᵀ``,
skipped where ``[N, P]`` would exceed ``--max-g-gib``) and Opacus's ghost clipping
(``GradSampleModuleFastGradientClipping``: one forward and backward, then its per-sample norms;
Opacus's own DP layers replace torch's LSTM and attention, ``ModuleValidator.fix``), skipped
with the reason where Opacus is not importable or cannot run the model. Exactness: the Gram
matrix and the norms against the materialised ones (max relative difference; where ``[N, P]``
is skipped, Opacus's norms against gradkit's). Timing: ``rounds`` rounds, each running every
method once in turn; reported are the median time and the median over rounds of the time
relative to that round's plain backward.
Peak memory: tensor memory allocated during one call (``torch.profiler``), as a ratio to the
plain backward's. The large model: 8 ``TransformerEncoderLayer`` of width 512 (25 M
parameters), N = 32, T = 128, the issue's size, where ``[N, P]`` is 3.2 GB.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from per_sample_grads import (  # noqa: E402
    README,
    Case,
    against,
    foreign_case,
    machine,
    peak_memory_mib,
    resnet_case,
    write_readme,
)

from gradkit.core.params import num_trainable  # noqa: E402
from gradkit.grads import (  # noqa: E402
    gradient_gram,
    gradient_sketch,
    per_sample_grads,
    per_sample_norms,
)

BEGIN, END = "<!-- gram:begin -->", "<!-- gram:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- gram-summary:begin -->", "<!-- gram-summary:end -->"
METHODS = ("plain", "norms", "gram", "sketch", "materialised", "opacus-norms")
LABELS = {"plain": "plain batch backward (unit)", "norms": "`per_sample_norms`",
          "gram": "`gradient_gram`", "sketch": "`gradient_sketch` (k = 256)",
          "materialised": "`per_sample_grads` then `G Gᵀ`",
          "opacus-norms": "Opacus ghost clipping (`GradSampleModuleFastGradientClipping`) norms"}
TARGETS = {"norms": 1.1, "gram": 1.3}  # the targets, x a plain backward


class LargeEncoder(nn.Module):
    """8 encoder layers of width 512 (8 heads, 2048 feed-forward), mean-pooled, a 10-way head."""

    def __init__(self, layers: int = 8, d: int = 512):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 8, 4 * d, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        return self.head(self.body(x).mean(1))


def large_case(n: int, t: int, layers: int, d: int) -> Case:
    torch.manual_seed(0)
    model = LargeEncoder(layers, d).eval()
    x, y = torch.randn(n, t, d), torch.randint(0, 10, (n,))
    return Case(f"TransformerEncoder {layers}x{d} (T = {t})", model, x, y,
                lambda o, y: F.cross_entropy(o, y, reduction="sum"), F.cross_entropy, n)


def methods(case: Case, max_g_bytes: float) -> dict:
    model, x, y, loss = case.model, case.x, case.y, case.loss_mean

    def plain():
        model.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        model.zero_grad(set_to_none=True)

    def materialised():
        G = per_sample_grads(model, loss, x, y).double()
        return G @ G.T

    fns = {"plain": plain,
           "norms": lambda: per_sample_norms(model, loss, x, y),
           "gram": lambda: gradient_gram(model, loss, x, y),
           "sketch": lambda: gradient_sketch(model, loss, x, y, k=256)}
    if case.n * num_trainable(model) * 4 <= max_g_bytes:
        fns["materialised"] = materialised
    fns["opacus-norms"] = opacus_norms(case)
    return fns


def opacus_norms(case: Case):
    """Opacus's ghost clipping on a copy of the model -> a call returning its per-sample
    gradient norms (loss summed: ``loss_reduction="sum"``), or why it cannot run (a string)."""
    try:
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
        from opacus.validators import ModuleValidator
    except ImportError as err:
        return f"Opacus not installed ({err.name})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Opacus records activations only in training mode (no model here drops at random);
            # its DPLSTM / DPMultiheadAttention replace torch's (weights copied by the fix).
            fixed = ModuleValidator.fix(copy.deepcopy(case.model)).train()
            gsm = GradSampleModuleFastGradientClipping(fixed, loss_reduction="sum",
                                                       use_ghost_clipping=True)
        with torch.no_grad():  # the same function? (its replacement layers may differ)
            want = torch.utils._pytree.tree_leaves(case.model(case.x))
            got = torch.utils._pytree.tree_leaves(fixed(case.x))
    except Exception as err:  # noqa: BLE001 - a model Opacus cannot wrap
        return f"Opacus cannot wrap it: {type(err).__name__}: {str(err).splitlines()[0][:90]}"
    diff = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
               for a, b in zip(got, want, strict=True))
    if diff > 1e-4:
        return (f"not the same model: Opacus's replacement layers (ModuleValidator.fix) change "
                f"its outputs by {diff:.1e} relative")

    def run():
        gsm.zero_grad(set_to_none=True)
        case.loss_sum(gsm(case.x), case.y).backward()
        norms = gsm.get_norm_sample().detach()
        gsm.zero_grad(set_to_none=True)
        return norms

    return run


def bench(case: Case, rounds: int, memory: bool, max_g_bytes: float) -> list[dict]:
    fns = methods(case, max_g_bytes)
    rows = {m: {"model": case.name, "N": case.n, "method": m, "label": LABELS[m]}
            for m in METHODS}
    outs = {}
    for m, fn in list(fns.items()):  # warm-up (learns the model) and the checks
        if isinstance(fn, str):
            rows[m]["skipped"], fns[m] = fn, None
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outs[m] = fn()
        except Exception as err:  # noqa: BLE001 - a peer that cannot run the model
            if m != "opacus-norms":
                raise
            rows[m]["skipped"] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:90]}"
            fns[m] = None
    fns = {m: fn for m, fn in fns.items() if fn is not None}
    norms = outs["norms"]
    if "materialised" in outs:
        K = outs["materialised"]
        scale = float(K.abs().max())
        rows["gram"]["max_rel_diff"] = float((outs["gram"] - K).abs().max()) / scale
        norms = K.diagonal().sqrt()
        rows["norms"]["max_rel_diff"] = float((outs["norms"] - norms).abs().max() / norms.max())
    else:
        rows["materialised"]["skipped"] = (
            f"[N, P] would take {case.n * num_trainable(case.model) * 4 / 2**30:.1f} GiB")
    if "opacus-norms" in outs:
        got = outs["opacus-norms"].double()
        rows["opacus-norms"]["max_rel_diff"] = float((got - norms).abs().max() / norms.max())
        if "materialised" not in outs:
            rows["opacus-norms"]["against"] = "gradkit's norms"
    times = {m: [] for m in fns}
    for _ in range(rounds):
        for m, fn in fns.items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn()
            times[m].append(time.perf_counter() - t0)
    for m, ts in times.items():
        rows[m]["times_s"] = ts
        rows[m]["median_ms"] = 1e3 * statistics.median(ts)
        rows[m]["ratio"] = statistics.median(t / b for t, b in zip(ts, times["plain"],
                                                                    strict=True))
        if memory:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows[m]["peak_mib"] = peak_memory_mib(fns[m])
    if memory:
        for m in times:
            rows[m]["mem_ratio"] = rows[m]["peak_mib"] / rows["plain"]["peak_mib"]
    return list(rows.values())


def table(rows: list[dict]) -> str:
    lines = ["| model | N | method | median time (ms) | x plain backward | peak memory (MiB) "
             "| x plain's memory | max rel. diff vs materialised |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['model']} | {r['N']} | {r['label']} | skipped: {r['skipped']} "
                         "| | | | |")
            continue
        mem = f"{r['peak_mib']:.0f} | {r['mem_ratio']:.2f}" if "peak_mib" in r else "— | —"
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "—"
        diff += f" (vs {r['against']})" if "against" in r else ""
        lines.append(f"| {r['model']} | {r['N']} | {r['label']} | {r['median_ms']:.1f} | "
                     f"{r['ratio']:.2f} | {mem} | {diff} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """One generated sentence per model: norms and Gram against the issue's targets, peak
    memory, and gradkit's norms against Opacus's ghost clipping (:func:`against`: the paired
    t-test of the log times over the rounds, ``gradkit.stats``)."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        timed = {r["method"]: r for r in rows if r["model"] == model and "ratio" in r}
        parts = []
        for m, target in TARGETS.items():
            if m in timed:
                r = timed[m]
                met = "met" if r["ratio"] <= target else "NOT met"
                mem = f", memory {r['mem_ratio']:.2f}x" if "mem_ratio" in r else ""
                parts.append(f"{LABELS[m]} {r['ratio']:.2f}x (target <= {target}x {met}){mem}")
        if "opacus-norms" in timed and "norms" in timed:
            o = timed["opacus-norms"]
            parts.append(f"Opacus's ghost-clipping norms take {o['ratio']:.2f}x (max rel. diff "
                         f"{o.get('max_rel_diff', float('nan')):.1e}); gradkit's norms "
                         f"{against(timed['norms'], o)}")
        else:
            skipped = next((r["skipped"] for r in rows if r["model"] == model
                            and r["method"] == "opacus-norms" and "skipped" in r), None)
            if skipped:
                parts.append(f"Opacus: {skipped}")
        out.append(f"- {model}: " + "; ".join(parts) + ".")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes, 1 round, no memory profile, no README")
    ap.add_argument("--no-large", action="store_true", help="skip the 25 M-parameter encoder")
    ap.add_argument("--max-g-gib", type=float, default=1.0,
                    help="skip the materialised path where [N, P] exceeds this")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.quick:
        cases = [resnet_case(8), large_case(4, 8, 1, 64)]
        rounds, memory = 1, False
    else:
        cases = [resnet_case(32), resnet_case(128),
                 *(foreign_case(name) for name in ("TransformerEncoder", "LSTM",
                                                   "Conformer (torchaudio)",
                                                   "Wav2Letter (torchaudio)"))]
        if not args.no_large:
            cases.append(large_case(32, 128, 8, 512))
        rounds, memory = args.rounds, True
    rows = []
    for case in cases:
        rows += bench(case, rounds, memory, args.max_g_gib * 2**30)
        print(table([r for r in rows if r["model"] == case.name]), flush=True)
    bad = [r for r in rows if r.get("max_rel_diff", 0) > 1e-5 and r["method"] != "opacus-norms"]
    text = "\n".join([
        BEGIN,
        f"Measured by `python benchmarks/gram.py` on {machine()}, {rounds} interleaved rounds; "
        "ratios are relative to the plain batch backward of the same round.",
        "",
        table(rows),
        "",
        summary(rows),
        END,
    ])
    print(text)
    brief = "\n".join([
        SUMMARY_BEGIN,
        f"Generated by `benchmarks/gram.py` ({rounds} interleaved rounds; {machine()}); the "
        "unit is a plain batch forward + backward, the full table is in `benchmarks/README.md`:",
        "",
        summary(rows),
        SUMMARY_END,
    ])
    if not args.quick:
        write_readme(text, README, BEGIN, END)
        write_readme(brief, ROOT / "README.md", SUMMARY_BEGIN, SUMMARY_END)
        print(f"wrote {README} and the summary in README.md")
    if bad:
        print(f"NOT EXACT: {[(r['model'], r['method'], r['max_rel_diff']) for r in bad]}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
