"""Seeded randomness that never leaks: the one seeding helper of gradkit.

Library code never calls ``torch.manual_seed`` on the caller's global generator: it draws inside
:func:`seeded`, which forks the CPU RNG (``torch.random.fork_rng``), seeds the fork and restores
the caller's state on exit, also on an exception. Data orders come from :func:`generator`, a
``torch.Generator`` of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["generator", "seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with the global CPU RNG seeded by ``seed``; the caller's state comes back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def generator(*keys: int | Sequence[int]) -> torch.Generator:
    """A ``torch.Generator`` seeded from one or more integers, e.g. ``generator(seed, epoch)``.

    The keys pass through ``numpy.random.SeedSequence``, so ``(1, 2)`` and ``(2, 1)`` give
    unrelated streams.
    """
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
