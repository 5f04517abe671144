"""The gradient statistics and the tracker on an accelerator agree with the CPU.

    python benchmarks/device_check.py [DEVICE]   # cuda (or mps) if present; exits 1 on a mismatch

CI has no accelerator, so this is run by hand where one is present. On a small transformer (its
attention written with ``nn.Linear``, a GRU head and a learned positional offset, so that the
ghost, materialised, replay and free-parameter forms and the tracker's fallback all run):
``per_sample_norms``, ``gradient_gram`` and ``gradient_sketch`` on the device against the same
calls on the CPU in float64, and three tracked SGD steps on each, whose recorded norms,
``b_simple`` and Gram matrices must agree. Tolerance: float32 on the device against float64,
relative ``1e-4`` of the largest entry.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradkit.grads import gradient_gram, gradient_sketch, per_sample_norms  # noqa: E402
from gradkit.track import Tracker, load_run  # noqa: E402

RTOL = 1e-4


class _Model(nn.Module):
    def __init__(self, d: int = 32, t: int = 12):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(t, d) * 0.1)
        self.norm, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.conv = nn.Conv1d(d, d, 3, padding=1)
        self.gru, self.head = nn.GRU(d, 16, batch_first=True), nn.Linear(16, 5)

    def forward(self, x):
        x = x + self.pos
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(n, t, 3, 4, -1).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d))
        x = x + self.conv(x.transpose(1, 2)).transpose(1, 2)
        return self.head(self.gru(x)[0][:, -1])


def _close(name: str, got: torch.Tensor, want: torch.Tensor) -> bool:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    err = float((got - want).abs().max()) / max(float(want.abs().max()), 1e-30)
    ok = err <= RTOL
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max relative difference {err:.2e}")
    return ok


def _tracked(model, batches, folder: Path):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    device = next(model.parameters()).device
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracker = Tracker(model, folder, gram_every=1, loss_fn=F.cross_entropy)
        for x, y in batches:
            x, y = x.to(device, next(model.parameters()).dtype), y.to(device)
            with tracker.step(labels=y, inputs=x):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
            opt.step()
        tracker.close()
    return load_run(folder)


def main(argv: list[str]) -> int:
    device = argv[0] if argv else ("cuda" if torch.cuda.is_available() else
                                   "mps" if torch.backends.mps.is_available() else None)
    if device is None:
        print("no accelerator: nothing to check")
        return 0
    print(f"device {device}: {torch.cuda.get_device_name() if device == 'cuda' else device}")
    torch.manual_seed(0)
    cpu = _Model().double()
    dev = copy.deepcopy(cpu).float().to(device)
    x, y = torch.randn(16, 12, 32, dtype=torch.float64), torch.randint(0, 5, (16,))
    ok = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ok &= _close("per_sample_norms", per_sample_norms(dev, F.cross_entropy, x.float().to(
            device), y.to(device)), per_sample_norms(cpu, F.cross_entropy, x, y))
        ok &= _close("gradient_gram", gradient_gram(dev, F.cross_entropy, x.float().to(device),
                                                    y.to(device)),
                     gradient_gram(cpu, F.cross_entropy, x, y))
        ok &= _close("gradient_sketch (same seed)", gradient_sketch(
            dev, F.cross_entropy, x.float().to(device), y.to(device), k=64, seed=3),
            gradient_sketch(cpu, F.cross_entropy, x, y, k=64, seed=3))
    batches = [(torch.randn(8, 12, 32, dtype=torch.float64), torch.randint(0, 5, (8,)))
               for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        a = _tracked(cpu, batches, Path(tmp) / "cpu")
        b = _tracked(dev, batches, Path(tmp) / "dev")
    for col in ("norm_max", "norm_q50", "trace_sigma", "grad_sq", "b_simple"):
        ok &= _close(f"tracker {col}", torch.tensor(b.scalars[col].to_numpy()),
                     torch.tensor(a.scalars[col].to_numpy()))
    for step in a.grams:
        ok &= _close(f"tracker Gram at step {step}", b.grams[step], a.grams[step])
    print("all agree" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
