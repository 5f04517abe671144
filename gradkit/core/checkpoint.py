"""Checkpoints that are written atomically and loaded safely.

- :func:`save_checkpoint` writes through :func:`gradkit.core.io.atomic_write` (temporary file,
  ``fsync``, ``os.replace``): a crash half-way leaves the previous file untouched.
- :func:`load_checkpoint` uses ``torch.load(..., weights_only=True)``: no arbitrary code runs
  while loading, so a payload may hold only tensors and primitive containers (dict, list, tuple,
  str, int, float, bool, None). Store configs as dicts and metrics as lists of dicts.
- Anything wrong with a file (missing, truncated, corrupt, not a checkpoint, another
  architecture, other state-dict keys or shapes) raises :class:`CheckpointError` naming it;
  a file that cannot be read as a checkpoint at all (truncated, garbage, a pickle holding other
  objects) raises its subclass :class:`CorruptCheckpoint`, which callers may set aside and
  replace. A refused pickle is reported as "not a gradkit checkpoint"; the message never
  suggests loading it unsafely.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from gradkit.core.io import atomic_write

__all__ = [
    "CheckpointError",
    "CorruptCheckpoint",
    "check_state_dict",
    "load_checkpoint",
    "save_checkpoint",
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


class CorruptCheckpoint(CheckpointError):
    """A file that cannot be read as a gradkit checkpoint (truncated, garbage, foreign pickle)."""


def _unreadable(path: Path, err: Exception) -> CorruptCheckpoint:
    """The error for a file ``torch.load(weights_only=True)`` refused, in gradkit's words.

    torch's own message for a refused pickle advises re-running with ``weights_only=False``,
    which would execute the file's code: it is never passed on. Only the name of the refused
    global (``GLOBAL module.name``), if torch reports one, is kept.
    """
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return CorruptCheckpoint(
            f"checkpoint {path} is not a gradkit checkpoint: it holds objects other than "
            f"tensors and plain containers (it asks for {found.group(1)}); it was refused "
            f"without running any of its code. Delete it or move it away; never load it unsafely")
    # Keep torch's diagnosis, drop its advice (every line that mentions weights_only).
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not re.search(r"weights_only|Weights only|documentation|file an issue", line)]
    detail = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return CorruptCheckpoint(f"checkpoint {path} is corrupt or unreadable, not a gradkit "
                             f"checkpoint ({detail})")


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
        raise _unreadable(path, err) from None  # torch's advice must not travel in __cause__
    if not isinstance(payload, dict):
        raise CorruptCheckpoint(
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
