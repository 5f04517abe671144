"""Top Hessian eigenvalue: Lanczos (gradkit.grads.hessian) vs PyHessian's power iteration.

Model: the default ``ResNetAudioRanker`` (widths 8/16/32) on N = 128 log-mel clips (plastic at
500, 1000 and 3000 Hz, train + validation, a seeded subset), cross-entropy on the class logits.
Two points: the seeded initial weights and the same network after a few full-batch Adam steps.

- Reference: Lanczos in float64 to ``tol = 1e-10`` (error bound relative to the eigenvalue).
- PyHessian: ``pyhessian.hessian.eigenvalues(maxIter=100, tol=1e-3, top_n=1)``, re-implemented
  below step for step (the same random start from the global torch RNG, the same normalisation
  with ``+1e-6``, the same stopping rule on the relative change of the Rayleigh quotient, the
  same returned value: the estimate *before* the last product). With ``--check-pyhessian`` and
  PyHessian importable, the real package is run too and must return the same number.
- Lanczos: ``gradkit.hessian.top_eigenvalues(k=1)`` at its default ``tol = 1e-4``.

Each method is measured by the relative error of its answer against the reference and by the
number of Hessian-vector products (HVPs) it used; the error after every product is recorded too.
Writes ``benchmarks/HESSIAN.md``. Run: ``.venv/bin/python benchmarks/hessian_eigs.py``.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gradkit.core.params import count_parameters
from gradkit.core.paths import project_root
from gradkit.data.features import load_split
from gradkit.grads import hessian as hs
from gradkit.models import ResNetAudioRanker

TARGET_ERROR, TARGET_HVPS = 1e-4, 12  # issue 7: 1e-4 in at most 12 products


def loss_fn(outputs, targets):
    """Cross-entropy on the class logits (the first output of ResNetAudioRanker)."""
    return F.cross_entropy(outputs[0], targets)


def audio_batch(n: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` clips drawn without replacement from plastic at 500/1000/3000 Hz (162 clips)."""
    xs, ys = [], []
    for freq in (500, 1000, 3000):
        split = load_split("plastic", freq)
        xs += [split.x_train, split.x_val]
        ys += [split.y_train, split.y_val]
    x, y = torch.cat(xs), torch.cat(ys)
    if n > len(x):
        raise ValueError(f"asked for n={n} clips, only {len(x)} available")
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[pick], y[pick]


def trained_copy(model, x, y, steps: int, lr: float = 1e-2, seed: int = 0):
    """The model after ``steps`` full-batch Adam steps (a point past the initial transient)."""
    torch.manual_seed(seed)
    model = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model


def pyhessian_power_iteration(op: hs.HessianOperator, seed: int, max_iter: int = 100,
                              tol: float = 1e-3):
    """PyHessian 0.1 ``hessian.eigenvalues(maxIter, tol, top_n=1)`` on a flat operator.

    Returns (eigenvalue, products used, Rayleigh quotient after each product).
    """
    torch.manual_seed(seed)
    v = [torch.randn(p.size()) for p in op.params]  # as PyHessian: one randn per parameter
    v = torch.cat([t.reshape(-1) for t in v]).to(op.dtype)
    v = v / (float(v.norm()) + 1e-6)  # PyHessian's normalization() adds 1e-6 to the norm
    eigenvalue, history = None, []
    for _ in range(max_iter):
        Hv = op(v)
        tmp = float(Hv @ v)
        history.append(tmp)
        v = Hv / (float(Hv.norm()) + 1e-6)
        if eigenvalue is None:
            eigenvalue = tmp
        elif abs(eigenvalue - tmp) / (abs(eigenvalue) + 1e-6) < tol:
            break  # PyHessian returns the previous estimate here, not tmp
        else:
            eigenvalue = tmp
    return eigenvalue, len(history), history


def real_pyhessian(model, x, y, seed: int) -> float:
    """The installed PyHessian package, same start (global RNG seeded the same way)."""
    from pyhessian import hessian as PyHessian

    comp = PyHessian(model, loss_fn, data=(x, y), cuda=False)
    torch.manual_seed(seed)
    eigenvalues, _ = comp.eigenvalues(maxIter=100, tol=1e-3, top_n=1)
    model.zero_grad(set_to_none=True)
    return eigenvalues[0]


def first_reaching(errors: list[float], level: float) -> str:
    """1-based number of products after which the error first drops to ≤ level."""
    hit = next((i + 1 for i, e in enumerate(errors) if e <= level), None)
    return "—" if hit is None else str(hit)


def run(n: int, seeds: list[int], train_steps: int, check_pyhessian: bool) -> str:
    x, y = audio_batch(n)
    torch.manual_seed(0)
    init = ResNetAudioRanker()
    # The loss does not use the score head: freeze it, so that no method carries its zero block
    # (PyHessian also fails on parameters whose gradient is None).
    init.score_head.requires_grad_(False)
    points = {"initial weights": init,
              f"after {train_steps} Adam steps": trained_copy(init, x, y, train_steps)}
    rows, curves = [], []
    for point, model in points.items():
        model.eval()
        ref_model = ResNetAudioRanker().double()
        ref_model.load_state_dict(model.state_dict())
        ref_model.score_head.requires_grad_(False)
        t0 = time.perf_counter()
        ref = hs.top_eigenvalues(ref_model, loss_fn, x.double(), y, tol=1e-10, seed=123)
        ref_val = float(ref.eigenvalues[0])
        print(f"[{point}] reference λ_max = {ref_val:.10g} ({ref.n_hvp} HVPs, "
              f"bound {float(ref.error_bounds[0]):.1e}, {time.perf_counter() - t0:.0f} s)")
        for seed in seeds:
            op = hs.HessianOperator(model, loss_fn, x, y)
            t0 = time.perf_counter()
            value, used, hist = pyhessian_power_iteration(op, seed)
            secs = time.perf_counter() - t0
            errs = [abs(h - ref_val) / abs(ref_val) for h in hist]
            if check_pyhessian:
                real = real_pyhessian(model, x, y, seed)
                assert abs(real - value) <= 1e-5 * abs(value), (real, value)
                print(f"  PyHessian package agrees: {real:.8g} vs {value:.8g}")
            rows.append((point, "PyHessian power iteration (tol 1e-3)", seed, used,
                         abs(value - ref_val) / abs(ref_val), secs, errs))
            op = hs.HessianOperator(model, loss_fn, x, y)
            t0 = time.perf_counter()
            res = hs.top_eigenvalues(None, None, None, None, hvp=op, seed=seed)
            secs = time.perf_counter() - t0
            errs = [abs(float(h) - ref_val) / abs(ref_val) for h in res.history[:, 0]]
            rows.append((point, "gradkit Lanczos (tol 1e-4)", seed, res.n_hvp,
                         abs(float(res.eigenvalues[0]) - ref_val) / abs(ref_val), secs, errs))
            for r in rows[-2:]:
                print(f"  {r[1]:<38} seed {seed}: {r[3]:3d} HVPs, rel. error {r[4]:.2e}, "
                      f"{r[5]:.1f} s")
        curves.append((point, ref_val, ref.n_hvp))

    lines = [
        "# Top Hessian eigenvalue: Lanczos vs PyHessian's power iteration",
        "",
        f"Generated by `benchmarks/hessian_eigs.py` on {platform.processor() or platform.machine()}"
        f" ({torch.get_num_threads()} torch thread(s), torch {torch.__version__}).",
        f"Model: `ResNetAudioRanker()` ({count_parameters(init, trainable_only=True)} parameters; "
        f"the score head, unused by the loss, frozen), N = {n} log-mel "
        "clips (plastic, 500/1000/3000 Hz), cross-entropy on the class logits, float32.",
        "Reference: Lanczos in float64, error bound ≤ 1e-10 relative.",
        "",
        "| point | reference λ_max | reference HVPs |",
        "|---|---:|---:|",
    ]
    lines += [f"| {p} | {v:.8g} | {k} |" for p, v, k in curves]
    lines += [
        "",
        "| point | method | seed | HVPs used | rel. error of answer | wall s | HVPs to 1e-2 "
        "| to 1e-3 | to 1e-4 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point, method, seed, used, err, secs, errs in rows:
        lines.append(
            f"| {point} | {method} | {seed} | {used} | {err:.1e} | {secs:.1f} | "
            f"{first_reaching(errs, 1e-2)} | {first_reaching(errs, 1e-3)} | "
            f"{first_reaching(errs, 1e-4)} |"
        )
    summary = {}
    for _, method, _, used, err, _, _ in rows:
        s = summary.setdefault(method, {"used": [], "err": []})
        s["used"].append(used)
        s["err"].append(err)
    lines += ["", "Summary over points and seeds:", ""]
    for method, s in summary.items():
        lines.append(
            f"- {method}: {min(s['used'])}–{max(s['used'])} HVPs, relative error "
            f"{min(s['err']):.1e}–{max(s['err']):.1e}; "
            f"{sum(e <= 1e-4 for e in s['err'])}/{len(s['err'])} answers within 1e-4."
        )
    lanczos = summary["gradkit Lanczos (tol 1e-4)"]
    hits = sum(e <= TARGET_ERROR and u <= TARGET_HVPS
               for u, e in zip(lanczos["used"], lanczos["err"], strict=True))
    lines += ["", f"Target: relative error ≤ {TARGET_ERROR:g} in at most {TARGET_HVPS} HVPs. "
              + (f"Met by all {hits} Lanczos answers." if hits == len(lanczos["err"]) else
                 f"**Missed**: met by {hits} of {len(lanczos['err'])} Lanczos answers.")]
    lines += ["", "\"HVPs to 1e-k\": products after which the running estimate was first within "
              "that relative error (— : never, within the products the method used).", ""]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="number of clips (default 128)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--check-pyhessian", action="store_true",
                        help="also run the installed pyhessian package and compare")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = run(args.n, args.seeds, args.train_steps, args.check_pyhessian)
    out = project_root() / "benchmarks" / "HESSIAN.md"
    write_atomic(out, text)
    print(f"\nwrote {out}\n")
    print(text)


if __name__ == "__main__":
    main()
