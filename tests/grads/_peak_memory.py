"""Peak resident memory of one gradient computation on a transformer encoder, in a fresh process.

``python _peak_memory.py MODE N T LAYERS WIDTH`` prints a JSON line: the peak RSS (bytes) after the
model and inputs were built (``base``), after ``MODE`` ran (``peak``), and the parameter count.
MODE: ``backward`` (a plain batch backward of the summed loss) or ``gram``
(:func:`gradkit.grads.gradient_gram`). Run by ``test_gram_memory.py``; not a test itself.
"""

import json
import resource
import sys

import torch
import torch.nn.functional as F
from torch import nn


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class Encoder(nn.Module):
    def __init__(self, layers: int, d: int = 512, heads: int = 8, ff: int = 2048):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        return self.head(self.body(x).mean(1))


def main(mode: str, n: int, t: int, layers: int, d: int) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = Encoder(layers, d, 8, 4 * d).eval()
    x, y = torch.randn(n, t, d), torch.randint(0, 10, (n,))
    loss_fn = F.cross_entropy
    base = peak()
    if mode == "backward":
        F.cross_entropy(model(x), y, reduction="sum").backward()
    elif mode == "gram":
        from gradkit.grads import gradient_gram

        K = gradient_gram(model, loss_fn, x, y)
        assert K.shape == (n, n) and bool(torch.isfinite(K).all())
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"mode": mode, "base": base, "peak": peak(), "params": params}))


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:6]))
