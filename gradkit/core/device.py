"""Pick the compute device by itself: CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import os

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """Return ``prefer`` (or ``$GRADKIT_DEVICE``) if given, else the best device available."""
    prefer = prefer or os.environ.get("GRADKIT_DEVICE")
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
