"""What a data folder holds besides recordings: which entries are read, which are not and why,
and which lead outside the folder through a symbolic link.

A condition folder ``<root>/<material>/<freq>hz/`` is read as class folders ``deg<angle:03d>``
(``0 <= angle <`` :data:`MAX_ANGLE`) holding ``*.wav`` files. :func:`why_not_read` gives the
reason an entry is passed over (the loader lists each one in its notes, never silently);
:func:`link_outside` the target of a link that leaves the data folder (noted when followed,
refused with ``follow_links=False``). Only names and links are looked at here; the audio
itself is checked by :mod:`gradkit.data.recordings`.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CLASS_DIR", "FREQ_DIR", "MAX_ANGLE", "link_outside", "outside_message",
           "unread_folders", "why_not_read"]

CLASS_DIR = re.compile(r"^deg(\d{3})$")
FREQ_DIR = re.compile(r"^(\d+)hz$")
#: class angles are degrees in ``[0, MAX_ANGLE)``; ``deg360`` … ``deg999`` are refused
MAX_ANGLE = 360


def link_outside(path: Path, root: Path) -> Path | None:
    """Where ``path`` leads when it is a symbolic link whose target lies outside ``root`` (a
    resolved folder), else ``None`` (not a link, or a link within the folder)."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # a loop of links: it leads nowhere, not outside
        return None
    return None if target.is_relative_to(root) else target


def outside_message(path: Path, target: Path, root: Path) -> str:
    """The refusal of a link leading outside the data folder (``follow_links=False``)."""
    return (f"{path} is a symbolic link to {target}, outside the data folder {root}: refused "
            f"(follow_links=False, --no-follow-links)")


def why_not_read(path: Path, in_class_dir: bool) -> str | None:
    """Why an entry of a frequency folder (``in_class_dir=False``) or of a class folder is not
    read, or ``None`` if it is (a class folder ``deg<angle:03d>``, resp. a ``.wav`` file)."""
    if path.is_symlink() and not path.exists():
        try:
            target = path.readlink()
        except OSError:
            target = "?"
        return f"a symbolic link to {target}, which does not exist (dangling, or a loop)"
    if path.name.startswith("."):
        return "hidden"
    if in_class_dir:
        if path.is_dir():
            return "a folder inside a class folder (only files are read)"
        if path.suffix.lower() != ".wav":
            return "not a .wav file"
        return None
    if not path.is_dir():
        return "a file beside the class folders (only folders deg<angle:03d> are read)"
    if not CLASS_DIR.match(path.name):
        return "a folder not named deg<angle:03d> (three digits, e.g. deg090)"
    return None


def unread_folders(root: Path) -> list[str]:
    """Notes on the folders under ``root`` that hold no condition, so that a check of the
    whole folder names them: a material folder without ``<freq>hz/deg<angle:03d>/`` inside, a
    folder beside the ``<freq>hz`` ones, a frequency folder without class folders, a dangling
    link. Hidden entries and plain files at these two levels (a manifest, notes) are not
    listed."""
    notes = []

    def note(path: Path, reason: str) -> None:
        notes.append(f"{path.relative_to(root).as_posix()}: not read, {reason}")

    for material in sorted(root.iterdir()):
        if material.name.startswith("."):
            continue
        if material.is_symlink() and not material.exists():
            note(material, why_not_read(material, in_class_dir=False))
            continue
        if not material.is_dir():
            continue
        inside = [f for f in sorted(material.iterdir())
                  if not f.name.startswith(".") and (f.is_dir() or f.is_symlink())]
        if not inside:
            note(material, "no <freq>hz/deg<angle:03d>/ folders inside")
        for freq in inside:
            if not freq.exists():
                note(freq, why_not_read(freq, in_class_dir=False))
            elif not FREQ_DIR.match(freq.name):
                note(freq, "a folder not named <freq>hz (e.g. 2500hz)")
            elif not any(CLASS_DIR.match(c.name) and c.is_dir() for c in freq.iterdir()):
                note(freq, "no class folder deg<angle:03d> inside")
    return notes
