"""Atomic file writes: every output of gradkit goes through :func:`atomic_write_bytes`.

The bytes go to a temporary file in the target's folder (``.<name>.<random>.tmp``), which is
flushed and ``fsync``-ed, then ``os.replace``-d over the target (atomic on POSIX and Windows within
one file system), and the folder is ``fsync``-ed. A crash or an exception half-way leaves the
previous file untouched and no partial file under the target's name.

A process killed (SIGKILL, power loss) between creating the temporary file and the rename leaves
that temporary file behind: :func:`remove_stale_temps` deletes such files of gradkit's own naming
pattern (:data:`TEMP_PATTERN`) and nothing else; callers run it at start-up while they hold the
folder's lock (see :mod:`gradkit.training.store`). :func:`probe_writable` checks, before work
is spent, that a folder takes a write of a given size.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_PATTERN", "StorageError", "atomic_write", "atomic_write_bytes",
           "atomic_write_text", "probe_writable", "remove_stale_temps"]

#: The temporary files of :func:`atomic_write`: ``.<target name>.<8 random chars>.tmp``
#: (``tempfile.mkstemp``'s random part: lower-case letters, digits, ``_``).
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


class StorageError(OSError):
    """A folder that cannot take gradkit's outputs (unwritable, full); the message names it."""


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target: os.replace is only atomic within one file system.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are for every user to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    return atomic_write_bytes(path, text.encode(encoding))



def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` (only regular files
    matching :data:`TEMP_PATTERN`); returns what was removed. Call it only while no other
    process writes into ``folder`` (hold its lock): a live writer's temporary file matches too.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        if TEMP_PATTERN.match(path.name) and path.is_file() and not path.is_symlink():
            try:
                path.unlink()
            except OSError:  # gone already, or a read-only folder: nothing to clean there
                continue
            removed.append(path)
    return removed


def probe_writable(folder: str | Path, nbytes: int = 1, needed_bytes: int = 0) -> None:
    """Raise :class:`StorageError` naming ``folder`` unless it takes a write of ``nbytes`` (a
    temporary file written, ``fsync``-ed, then removed) and the file system has
    ``needed_bytes`` free (e.g. all the checkpoints a run is about to write)."""
    folder = Path(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError as err:
        raise StorageError(f"cannot use folder {folder}: {err}") from err
    if free < needed_bytes:
        raise StorageError(f"folder {folder} has {free / 1e6:.1f} MB free, but about "
                           f"{needed_bytes / 1e6:.1f} MB will be written: free some space or "
                           f"point GRADKIT_ROOT elsewhere")
    try:
        # Named like atomic_write's temporary files, so that a probe killed half-way is stale
        # by remove_stale_temps' rule and cleaned at the next start.
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".gradkit-write-probe.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * max(int(nbytes), 1))
                f.flush()
                os.fsync(f.fileno())
        finally:
            Path(probe).unlink(missing_ok=True)
    except OSError as err:
        raise StorageError(f"folder {folder} cannot be written "
                           f"({type(err).__name__}: {err.strerror or err}): fix its "
                           f"permissions or free space, or point GRADKIT_ROOT elsewhere") from err
