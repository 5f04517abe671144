"""Notebook 02's figure of the noise scale estimated inside DDP training."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["plot_ddp_b_simple"]


def plot_ddp_b_simple(fig, history: pd.DataFrame, global_batch: int, exact=None,
                      pooled: tuple[float, tuple[float, float]] | None = None) -> None:
    """Per-step ``B_simple = trace_sigma / grad_sq`` (dots; steps without a positive estimate
    are left out), its EMA (line), the global batch (dashed) and, at the last step, the exact
    per-sample value with its interval (``exact``, a NoiseScale) and the hook's pooled last
    epoch (``pooled``), on a log axis."""
    ax = fig.subplots()
    step = history["step"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = history["trace_sigma"].to_numpy(float) / history["grad_sq"].to_numpy(float)
    ok = np.isfinite(raw) & (raw > 0)
    ax.plot(step[ok], raw[ok], ".", color="tab:gray", alpha=0.5, ms=4,
            label=f"one step ({ok.sum()} of {len(raw)} positive)")
    ema = history["b_simple"].to_numpy(float)
    good = np.isfinite(ema) & (ema > 0)
    ax.plot(step[good], ema[good], color="tab:blue", lw=2, label="EMA of the hook")
    ax.axhline(global_batch, color="k", ls="--", lw=1, label=f"global batch {global_batch}")
    end = step.max() + 1
    if pooled is not None:
        est, (lo, hi) = pooled
        ax.errorbar([end], [est], yerr=[[est - lo], [max(hi - est, 0)]], fmt="s",
                    color="tab:blue", capsize=4, label="hook, last epoch (95 % CI)")
    if exact is not None:
        lo, hi = exact.b_simple_ci
        hi = hi if np.isfinite(hi) else exact.b_simple * 10
        ax.errorbar([end + max(2, len(step) // 30)], [exact.b_simple],
                    yerr=[[exact.b_simple - lo], [hi - exact.b_simple]], fmt="o",
                    color="tab:red", capsize=4, label="exact per-sample (95 % CI)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("B_simple (samples)")
    ax.set_title("Critical batch size estimated inside DDP training (2 gloo processes)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
