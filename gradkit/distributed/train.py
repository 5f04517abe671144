"""A real DDP training run of :class:`~gradkit.models.ResNetAudioRanker` with the noise hook.

``torchrun --nproc_per_node=2 -m gradkit.distributed.train [--epochs E] [--batch-size B]
[--clips N] [--out DIR]`` (or ``make ddp``):

- **Data**: a larger generated set, all nine conditions (3 materials × 3 probe frequencies) ×
  six angles, ``ceil(clips / 54)`` clips per class and condition (``--clips 5000`` gives 5,022),
  written by :func:`gradkit.data.make_dataset` into ``<out>/data/clips<N>_seed<S>/<material>_
  <freq>hz/`` (never into ``data/``; reused when present; the ranks generate conditions in
  parallel and cache each condition's log-mel features in its ``features.pt``). The task is
  the angle class (6 classes) over all conditions; log-mel features are normalised with the
  training split's mean and std; a seeded 10 % is held out for validation.
- **Training**: ``DistributedDataParallel`` (gloo on the CPU, NCCL with ``--backend nccl`` on
  GPUs: not run here), a ``DistributedSampler`` shards the training set (reshuffled per epoch),
  Adam, loss ``CE(logits, y) + 0.1 · MSE(score, y / 5)`` (mean over the local batch).
- **Noise scale**: :class:`~gradkit.distributed.DDPNoiseScale` measures every step; rank 0
  writes ``<out>/noise_scale.csv`` (one row per step, plus ``epoch`` and rank 0's local loss)
  atomically after every epoch, saves ``<out>/checkpoints/ddp_epoch_<E>.pt`` atomically
  (:func:`gradkit.checkpoint.save_checkpoint`: arch, model, optimiser, epoch, config, metrics),
  and prints the validation accuracy and the critical-batch advice (B_simple against the global
  batch ``batch_size × world_size``).

:func:`run_short_ddp` runs the same training in two spawned gloo processes from Python.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from gradkit.core.checkpoint import load_checkpoint, save_checkpoint
from gradkit.core.io import atomic_write_text
from gradkit.core.paths import project_root
from gradkit.core.seeding import seeded
from gradkit.data import SAMPLE_RATE, load_recordings, make_dataset
from gradkit.data.features import log_mel
from gradkit.distributed.launch import spawn
from gradkit.distributed.noise_hook import DDPNoiseScale, critical_batch_advice
from gradkit.models import ResNetAudioRanker
from gradkit.training.loop import fit_epoch

__all__ = ["DDPConfig", "main", "ranker_loss", "run_short_ddp", "train_worker"]

CONDITIONS = tuple((m, f) for m in ("plastic", "metal", "wood") for f in (500, 1000, 3000))
N_CLASSES = 6


@dataclass
class DDPConfig:
    """Settings of one DDP run (``batch_size`` is per rank; ``out`` defaults to build/ddp)."""

    epochs: int = 12
    batch_size: int = 32
    clips: int = 5000
    out: str | None = None
    lr: float = 2e-3
    seed: int = 42
    ema: float = 0.95
    val_fraction: float = 0.1
    backend: str = "gloo"
    verbose: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "clips"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.backend not in ("gloo", "nccl"):
            raise ValueError(f"backend must be 'gloo' or 'nccl', got {self.backend!r}")

    @property
    def per_class(self) -> int:
        return max(2, math.ceil(self.clips / (len(CONDITIONS) * N_CLASSES)))

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else project_root() / "build" / "ddp"

    @property
    def data_root(self) -> Path:
        n = self.per_class * len(CONDITIONS) * N_CLASSES
        return self.out_dir / "data" / f"clips{n}_seed{self.seed}"


def ranker_loss(outputs: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """``CE(logits, y) + 0.1 · MSE(score, y / (C - 1))``, the mean over the batch."""
    logits, score = outputs
    return F.cross_entropy(logits, y) + 0.1 * F.mse_loss(score, y.float() / (N_CLASSES - 1))


def _prepare_data(cfg: DDPConfig, rank: int, world: int) -> None:
    """Generate the clips and their log-mel features (``features.pt``) of this rank's share of
    the conditions, unless present; then wait for the other ranks."""
    for i, (material, freq) in enumerate(CONDITIONS):
        folder = cfg.data_root / f"{material}_{freq}hz"
        if i % world != rank or (folder / "features.pt").is_file():
            continue
        if not (folder / "manifest.csv").is_file():
            make_dataset(folder, [material], [freq], per_class=cfg.per_class, seed=cfg.seed)
        rec = load_recordings(folder, material, freq)
        save_checkpoint(folder / "features.pt",
                        {"x": log_mel(rec.waveforms, SAMPLE_RATE), "y": rec.labels})
    dist.barrier()


def _features(cfg: DDPConfig) -> dict[str, torch.Tensor]:
    parts = [load_checkpoint(cfg.data_root / f"{m}_{f}hz" / "features.pt") for m, f in CONDITIONS]
    x, y = torch.cat([p["x"] for p in parts]), torch.cat([p["y"] for p in parts])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(1, round(cfg.val_fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(), x[train].std()
    x = (x - mean) / std
    return dict(x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
                mean=mean, std=std)


def training_split(cfg: DDPConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised training features and labels of a run of ``cfg`` (its data must exist)."""
    data = _features(cfg)
    return data["x_train"], data["y_train"]


def _say(cfg: DDPConfig, rank: int, text: str) -> None:
    if cfg.verbose and rank == 0:
        print(text, flush=True)


def train_worker(rank: int, world: int, cfg: DDPConfig) -> pd.DataFrame | None:
    """The training of one rank inside an initialised process group; rank 0 returns the
    per-step history (the other ranks ``None``)."""
    t0 = time.perf_counter()
    device = torch.device("cpu")
    if cfg.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    _prepare_data(cfg, rank, world)
    data = _features(cfg)
    _say(cfg, rank, f"data: {len(data['y_train'])} training + {len(data['y_val'])} validation "
                    f"clips in {cfg.data_root} ({time.perf_counter() - t0:.1f} s)")
    with seeded(cfg.seed):  # the same initial weights on every rank
        model = ResNetAudioRanker(n_classes=N_CLASSES).to(device)
    ddp = DDP(model, device_ids=[device] if device.type == "cuda" else None)
    noise = DDPNoiseScale(ddp, ema=cfg.ema)
    opt = torch.optim.Adam(ddp.parameters(), lr=cfg.lr)
    train_set = TensorDataset(data["x_train"], data["y_train"])
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.seed)
    loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler)
    out = cfg.out_dir
    ckpt_dir = out / "checkpoints"
    global_batch = cfg.batch_size * world  # nominal: an epoch's last batches may be smaller
    epochs_of_steps: list[int] = []
    losses: list[float] = []
    metrics: list[dict] = []
    history = None
    for epoch in range(1, cfg.epochs + 1):
        sampler.set_epoch(epoch)

        def step(batch):
            x, y = (t.to(device) for t in batch)
            noise.step(batch_size=len(x))
            return ranker_loss(ddp(x), y)

        def record(b, batch, loss, epoch=epoch):
            epochs_of_steps.append(epoch)
            losses.append(float(loss.detach()))

        fit_epoch(ddp, opt, loader, step, epoch=epoch, on_step=record)
        if rank == 0:
            model.eval()
            with torch.no_grad():
                logits, _ = model(data["x_val"].to(device))
            acc = float((logits.argmax(1).cpu() == data["y_val"]).float().mean())
            last = noise.last
            metrics.append(dict(epoch=epoch, val_acc=acc, b_simple=last.b_simple,
                                train_loss=sum(losses[-len(loader):]) / len(loader)))
            history = noise.history
            history.insert(1, "epoch", epochs_of_steps)
            history.insert(2, "loss_rank0", losses)
            atomic_write_text(out / "noise_scale.csv", history.to_csv(index=False))
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(ckpt_dir / f"ddp_epoch_{epoch:03d}.pt", {
                "arch": model.arch_config(), "model": model.state_dict(),
                "optimizer": opt.state_dict(), "epoch": epoch, "config": asdict(cfg),
                "metrics": metrics, "feature_mean": float(data["mean"]),
                "feature_std": float(data["std"])})
            _say(cfg, rank, f"epoch {epoch}/{cfg.epochs}: val acc {acc:.3f}, "
                            f"{noise.advice(global_batch)} ({time.perf_counter() - t0:.1f} s)")
    if rank == 0:
        last_epoch = history[history.epoch == cfg.epochs]
        mean = critical_batch_advice(last_epoch.trace_sigma.mean() / last_epoch.grad_sq.mean()
                                     if last_epoch.grad_sq.mean() > 0 else math.inf,
                                     global_batch, "mean of the last epoch")
        _say(cfg, rank, f"critical batch: {noise.advice(global_batch)}\n                {mean}"
                        f"\nper-step noise scale: {out / 'noise_scale.csv'}; checkpoints: "
                        f"{ckpt_dir}")
        return history
    return None


def _parse(argv: list[str] | None) -> DDPConfig:
    d = DDPConfig()
    p = argparse.ArgumentParser(prog="python -m gradkit.distributed.train",
                                description="DDP training with the gradient-noise-scale hook; "
                                            "run with torchrun --nproc_per_node=2")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per rank")
    p.add_argument("--clips", type=int, default=d.clips, help="size of the generated set")
    p.add_argument("--out", default=None, help="output folder (default build/ddp)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--ema", type=float, default=d.ema)
    p.add_argument("--backend", choices=("gloo", "nccl"),
                   default="nccl" if torch.cuda.is_available() else "gloo")
    a = p.parse_args(argv)
    return DDPConfig(epochs=a.epochs, batch_size=a.batch_size, clips=a.clips, out=a.out,
                     lr=a.lr, seed=a.seed, ema=a.ema, backend=a.backend)


def main(argv: list[str] | None = None) -> int:
    """The torchrun entry point (reads RANK / WORLD_SIZE / MASTER_ADDR from the environment)."""
    cfg = _parse(argv)
    if "RANK" not in os.environ:
        print("run under torchrun: torchrun --nproc_per_node=2 -m gradkit.distributed.train",
              file=sys.stderr)
        return 2
    dist.init_process_group(cfg.backend, timeout=timedelta(minutes=10))
    try:
        world = dist.get_world_size()
        if cfg.backend == "gloo":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        train_worker(dist.get_rank(), world, cfg)
    finally:
        dist.destroy_process_group()
    return 0


def run_short_ddp(clips: int = 600, epochs: int = 2, batch_size: int = 16,
                  out: str | Path | None = None, seed: int = 42, ema: float = 0.95,
                  timeout: float = 300.0, verbose: bool = False) -> pd.DataFrame:
    """A short 2-process gloo DDP training launched from Python (``spawn``); returns rank 0's
    per-step history: ``step, epoch, loss_rank0`` and the :class:`NoiseStep` fields.

    Same data, model and hook as the torchrun run (``out`` defaults to ``build/ddp``; the data
    set is generated once and reused). Measured on the shared 2-core CPU with the defaults:
    31-34 s, most of it starting the two processes (each imports torch) and, the first time,
    generating the 648 clips. From a script (not a notebook), call it under
    ``if __name__ == "__main__":``, as any ``spawn`` start method requires. Raises if a rank
    fails, and raises ``TimeoutError`` after ``timeout`` seconds (the processes are killed).
    """
    cfg = DDPConfig(epochs=epochs, batch_size=batch_size, clips=clips,
                    out=str(out) if out is not None else None, seed=seed, ema=ema,
                    verbose=verbose)
    return spawn(train_worker, 2, (cfg,), timeout=timeout)[0]


if __name__ == "__main__":
    raise SystemExit(main())
