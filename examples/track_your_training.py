"""Track your own training with gradkit: a small audio classifier, an ordinary PyTorch loop.

The model and the data use torch alone (log-mel-like clips generated with class structure:
each class has its own frequency bands and tempo); the lines marked ``# gradkit`` are all the
tracker needs. Run it, then read the record:

    python examples/track_your_training.py --out runs/my_experiment
    python -c "from gradkit.track import load_run; print(load_run('runs/my_experiment').scalars)"

Killed and started again with the same ``--out``, it resumes from its last epoch's checkpoint,
and the tracker continues the record from that step (``start_step``).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradkit.core.io import atomic_write_bytes
from gradkit.track import Tracker, load_run  # gradkit


def make_clips(n: int, classes: int = 4, mels: int = 32, frames: int = 40, seed: int = 0):
    """``n`` log-mel-like clips ``[n, 1, mels, frames]`` and their labels: class ``c`` raises a
    band of mel bins around its own centre, pulsing at its own rate, under noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    mel = torch.arange(mels, dtype=torch.float32)[:, None]
    t = torch.arange(frames, dtype=torch.float32)[None, :]
    clips = torch.randn(n, 1, mels, frames, generator=gen)
    for c in range(classes):
        centre, rate = (c + 0.5) * mels / classes, 0.15 + 0.1 * c
        band = torch.exp(-((mel - centre) ** 2) / 8.0) * (1 + torch.sin(rate * t))
        clips[labels == c, 0] += 0.5 * band
    return clips, labels


def make_model(classes: int = 4) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((4, 1)), nn.Flatten(),
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes))


def main(out: str | Path = "runs/my_experiment", epochs: int = 3, batch_size: int = 32,
         clips: int = 256, gram_every: int = 8, flush_every: int = 20, seed: int = 0) -> Path:
    out = Path(out)
    torch.manual_seed(seed)
    x_all, y_all = make_clips(clips, seed=seed)
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    start_epoch, step = 0, 0
    ckpt = out.parent / f"{out.name}.checkpoint.pt"  # the training's own checkpoint
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = state["epoch"] + 1, state["step"]
    tracker = Tracker(model, out, gram_every=gram_every, start_step=step,  # gradkit
                      flush_every=flush_every)
    for epoch in range(start_epoch, epochs):
        order = torch.randperm(clips, generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(0, clips, batch_size):
            x, y = x_all[order[i:i + batch_size]], y_all[order[i:i + batch_size]]
            with tracker.step(labels=y, epoch=epoch):  # gradkit
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            step += 1
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "step": step}, buf)
        atomic_write_bytes(ckpt, buf.getvalue())
    tracker.close()  # gradkit
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/my_experiment")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--gram-every", type=int, default=8)
    parser.add_argument("--flush-every", type=int, default=20)
    args = parser.parse_args()
    run = load_run(main(args.out, args.epochs, args.batch_size, args.clips, args.gram_every,
                        args.flush_every))  # gradkit
    print(run.scalars[["step", "epoch", "loss", "grad_norm", "b_simple", "b_simple_ema"]]
          .to_string(index=False))
