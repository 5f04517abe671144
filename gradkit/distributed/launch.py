"""Start a few gloo processes on this machine from Python, with a timeout and clean-up.

:func:`spawn` runs ``fn(rank, world_size, *args)`` in ``world_size`` fresh processes
(``torch.multiprocessing`` with the ``spawn`` start method), each inside an initialised gloo
process group on a free localhost port, and returns their return values in rank order. A child
that raises makes :func:`spawn` raise (the others are terminated); a run that has not finished
after ``timeout`` seconds is killed and raises :class:`TimeoutError`, so a hang fails instead of
blocking. ``fn`` must be importable by name (a module-level function).
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["free_port", "spawn"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(rank: int, fn: Callable, world_size: int, port: int, out: str, timeout: float,
           threads: int, args: tuple) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=timeout))
    try:
        result = fn(rank, world_size, *args)
        tmp = Path(out) / f".rank{rank}.pkl.tmp"
        tmp.write_bytes(pickle.dumps(result))
        tmp.replace(Path(out) / f"rank{rank}.pkl")
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], world_size: int = 2, args: tuple = (), timeout: float = 120.0,
          threads: int = 1) -> list[Any]:
    """``[fn(0, world_size, *args), …, fn(world_size - 1, …)]``, each run in its own process.

    Every child uses ``threads`` CPU threads (default 1: two ranks on a 2-core machine).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="gradkit-ddp-") as out:
        ctx = mp.start_processes(
            _entry, args=(fn, world_size, free_port(), out, timeout, threads, tuple(args)),
            nprocs=world_size, join=False, start_method="spawn")
        try:
            while not ctx.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{world_size} processes of {fn.__name__} did not finish "
                                       f"within {timeout:.0f} s (killed)")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                p.join(5)
        return [pickle.loads((Path(out) / f"rank{r}.pkl").read_bytes())
                for r in range(world_size)]
