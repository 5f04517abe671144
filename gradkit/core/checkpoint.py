"""Checkpoints that are written atomically and loaded safely.

- :func:`save_checkpoint` writes through :func:`gradkit.core.io.atomic_write` (temporary file,
  ``fsync``, ``os.replace``): a crash half-way leaves the previous file untouched.
- :func:`load_checkpoint` uses ``torch.load(..., weights_only=True)``: no arbitrary code runs
  while loading, so a payload may hold only tensors and primitive containers (dict, list, tuple,
  str, int, float, bool, None). Store configs as dicts and metrics as lists of dicts.
- Anything wrong with a file (missing, truncated, corrupt, not a checkpoint, another
  architecture, other state-dict keys or shapes) raises :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from gradkit.core.io import atomic_write

__all__ = [
    "CheckpointError",
    "check_state_dict",
    "load_checkpoint",
    "save_checkpoint",
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Save ``payload`` (tensors and primitive containers only) to ``path`` atomically.

    The payload is serialised in memory first, so an unpicklable payload fails before any file
    is touched; then the bytes go through :func:`atomic_write_bytes`.
    """
    if not isinstance(payload, Mapping):
        raise TypeError(f"checkpoint payload must be a mapping, got {type(payload).__name__}")

    def write(f: BinaryIO) -> None:
        buffer = io.BytesIO()
        torch.save(dict(payload), buffer)
        f.write(buffer.getbuffer())

    return atomic_write(path, write)


def check_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module, path: str | Path = "<memory>"
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``model``'s keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(
                f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            )
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}{' ...' if len(wrong) > 5 else ''}")
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(model).__name__}: " + "; ".join(parts)
        )


def _normalise(value: Any) -> Any:
    """Tuples -> lists, recursively, so that architecture dicts compare as saved."""
    if isinstance(value, Mapping):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def load_checkpoint(
    path: str | Path,
    expected_arch: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on the CPU).

    ``expected_arch``: if given, the payload's ``"arch"`` entry must equal it (tuples and lists
    compare equal). ``model``: if given, the payload's ``"model"`` state dict must have exactly
    its keys and shapes, and is then loaded into it. Any problem raises :class:`CheckpointError`
    naming ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, disallowed global, ...
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(payload).__name__}, not a checkpoint dict"
        )
    if expected_arch is not None:
        found = payload.get("arch")
        if found is None:
            raise CheckpointError(f"checkpoint {path} records no architecture ('arch')")
        if _normalise(found) != _normalise(expected_arch):
            raise CheckpointError(
                f"checkpoint {path} is of another architecture: {_normalise(found)} "
                f"!= expected {_normalise(expected_arch)}"
            )
    if model is not None:
        state = payload.get("model")
        if not isinstance(state, Mapping):
            raise CheckpointError(f"checkpoint {path} holds no model state dict ('model')")
        check_state_dict(state, model, path)
        model.load_state_dict(state)
    return payload
