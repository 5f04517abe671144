"""The loader of recordings: ``<root>/<material>/<freq>hz/deg<angle:03d>/*.wav``, read-only.

Layout (see ``data/README.md``): one folder per class named ``deg<angle:03d>`` (any angles, at
least two classes, any number of clips each). What the loader does with each file:

- **reads** WAV containers only (RIFF WAV, WAVE_FORMAT_EXTENSIBLE, RF64, Wave64), with integer or
  float samples, any sample rate (resampled to :data:`SAMPLE_RATE`) and any channel count
  (averaged to mono); the first :data:`CLIP_SECONDS` are kept, shorter clips are zero-padded;
  only the frames those seconds need are read (:func:`clip_frames`), so an hour-long file
  costs what a clip does;
- **skips**, each with its reason in a :class:`DataNote` warning and ``Recordings.notes``
  (:mod:`gradkit.data.entries`): hidden entries (names starting with ``.``, e.g. macOS
  ``._*.wav`` resource forks and ``.DS_Store``), files not ending in ``.wav``, dangling
  symbolic links, folders not named ``deg<angle:03d>``, files beside the class folders and
  folders inside them; it also notes every symbolic link it follows out of the data folder;
- **refuses** with a :class:`DataError` naming each offending file, all of them at once: a file
  that cannot be decoded; audio of another format under a ``.wav`` name (FLAC, OGG, MP3, …:
  convert it, e.g. ``ffmpeg -i in.flac out.wav``; lossy codecs also shift the onset); a WAV
  truncated mid-data (its header promises more frames than the file holds); a file without
  samples; NaN or infinite samples; a class folder whose angle is outside ``[0, 360)``
  (``deg360`` … ``deg999``: a typo, not a class); with ``follow_links=False``, a symbolic link
  leading outside the data folder.

Nothing is ever written, moved or deleted under the data folder.
"""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from gradkit.data.entries import (
    CLASS_DIR,
    FREQ_DIR,
    MAX_ANGLE,
    link_outside,
    outside_message,
    why_not_read,
)

SAMPLE_RATE = 16000
CLIP_SECONDS = 0.5
#: libsndfile's names of the WAV containers the loader reads
WAV_FORMATS = ("WAV", "WAVEX", "RF64", "W64")
#: torchaudio's ``resample`` defaults, which fix how far its kernel reaches (see clip_frames)
_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99


class DataError(ValueError):
    """Bad input data; the message names the offending file or folder (every one found)."""


class DataNote(UserWarning):
    """Something in the data folder was skipped (hidden or non-WAV files); nothing is wrong."""


def problems_error(where: Path, problems: Sequence[str]) -> DataError:
    """One :class:`DataError` listing every problem found under ``where``."""
    if len(problems) == 1:
        return DataError(problems[0])
    lines = "\n".join(f"  - {p}" for p in problems)
    return DataError(f"{len(problems)} problems in {where}:\n{lines}")


def stratified_split(labels: Sequence[int], val_fraction: float = 1 / 3, seed: int = 42
                     ) -> np.ndarray:
    """Boolean mask of validation samples: ``max(1, round(val_fraction · n_c))`` of each class
    ``c`` with ``n_c >= 2`` clips (at least one stays in training), seeded.

    A class of one clip has no validation clip; :func:`gradkit.data.load_split` refuses it.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(labels.size, dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_val = min(members.size - 1, max(1, int(round(val_fraction * members.size))))
        is_val[rng.permutation(members)[:n_val]] = True
    return is_val


# ---------------------------------------------------------------------------------------------
# One file
# ---------------------------------------------------------------------------------------------
def _riff_data_check(path: Path) -> str | None:
    """For a RIFF WAV: a message if the ``data`` chunk is cut short, else ``None``.

    Walks the chunks to ``data`` and compares its declared size with the bytes that follow.
    Sizes ``0`` and ``0xFFFFFFFF`` (streamed or RF64 files) carry no length and are not checked.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        order = "<" if head[:4] == b"RIFF" else ">"
        block_align = 0
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack(order + "4sI", f.read(8))
            if chunk_id == b"fmt " and chunk_size >= 14:
                block_align = struct.unpack(order + "H", f.read(14)[12:14])[0]
            if chunk_id == b"data":
                available = size - offset - 8
                if chunk_size in (0, 0xFFFFFFFF) or chunk_size <= available:
                    return None
                if block_align:
                    return (f"{path} is truncated: its header says {chunk_size // block_align} "
                            f"frames, the file holds {available // block_align}")
                return (f"{path} is truncated: its header says {chunk_size} bytes of samples, "
                        f"the file holds {available}")
            offset += 8 + chunk_size + (chunk_size & 1)
    return f"{path} is truncated: the file ends before its data chunk"


def clip_frames(rate: int, sample_rate: int = SAMPLE_RATE, seconds: float = CLIP_SECONDS) -> int:
    """How many frames at a file's own ``rate`` the first ``seconds`` at ``sample_rate`` depend
    on: ``ceil(seconds · rate)``, plus, when resampling, the reach of torchaudio's windowed-sinc
    kernel past the last output kept (its half-width ``ceil(6 · orig / (0.99 · min(orig,
    new)))`` and one stride ``orig``, with ``orig / new = rate / sample_rate`` in lowest terms).

    Reading these frames only gives the same clip as reading the whole file: a long recording
    costs what a short one does.
    """
    n = int(round(seconds * sample_rate))
    if rate == sample_rate:
        return n
    g = math.gcd(int(rate), int(sample_rate))
    orig, new = int(rate) // g, int(sample_rate) // g
    width = math.ceil(_LOWPASS_WIDTH * orig / (min(orig, new) * _ROLLOFF))
    return math.ceil(n * orig / new) + width + orig


def read_clip(path: str | Path, sample_rate: int | None = SAMPLE_RATE,
              seconds: float = CLIP_SECONDS) -> tuple[np.ndarray, sf._SoundFileInfo]:
    """The samples ``[frames, channels]`` (float32) of one WAV file and its ``soundfile`` info,
    after every check of the module docstring (:class:`DataError` naming the file).

    Only the frames that :func:`fit_clip` at ``sample_rate`` and ``seconds`` uses are read
    (:func:`clip_frames`; the sample checks apply to them); ``sample_rate=None`` reads all.
    """
    path = Path(path)
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for corrupt files
        raise DataError(f"cannot read audio file {path}: {err}") from err
    if info.format not in WAV_FORMATS:
        raise DataError(f"{path} holds {info.format} audio ({info.format_info}), not WAV: "
                        f"the loader reads WAV only; convert it (e.g. ffmpeg -i in out.wav)")
    truncated = _riff_data_check(path)
    if truncated:
        raise DataError(truncated)
    frames = -1 if sample_rate is None else clip_frames(info.samplerate, sample_rate, seconds)
    try:
        samples, _ = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)
    except Exception as err:
        raise DataError(f"cannot read audio file {path}: {err}") from err
    if samples.size == 0:
        raise DataError(f"audio file {path} holds no samples")
    if not np.isfinite(samples).all():
        raise DataError(f"audio file {path} contains NaN or infinite samples")
    return samples, info


def fit_clip(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE,
             seconds: float = CLIP_SECONDS) -> torch.Tensor:
    """``[frames, channels]`` at ``rate`` -> mono float32 at ``sample_rate``, exactly ``seconds``
    long: channels averaged, resampled with torchaudio, the first ``seconds`` kept (a probe
    recording starts with its probe), a shorter clip zero-padded at the end."""
    import torchaudio.functional as AF

    mono = torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1), dtype=np.float32))
    if rate != sample_rate:
        mono = AF.resample(mono, orig_freq=rate, new_freq=sample_rate)
    n = int(round(seconds * sample_rate))
    return torch.nn.functional.pad(mono[:n], (0, max(0, n - mono.numel())))


def read_wav(path: Path, sample_rate: int = SAMPLE_RATE, seconds: float = CLIP_SECONDS
             ) -> torch.Tensor:
    """One WAV file as mono float32 at ``sample_rate``, exactly ``seconds`` long (see
    :func:`read_clip` for the checks, :func:`fit_clip` for the conversion)."""
    samples, info = read_clip(path, sample_rate, seconds)
    return fit_clip(samples, info.samplerate, sample_rate, seconds)


# ---------------------------------------------------------------------------------------------
# One condition
# ---------------------------------------------------------------------------------------------
@dataclass
class Recordings:
    """Clips of one material and probe frequency, fixed length, mono, one sample rate.

    ``files``: one row per clip as found on disk (path, class, angle_deg, sample_rate,
    channels, seconds, subtype, peak of the part read); ``skipped``: the entries passed over
    (hidden or non-WAV files, dangling links, folders not named ``deg<angle:03d>``, …);
    ``notes``: one line per skipped entry with its reason, and per symbolic link read that
    leads outside the data folder.
    """

    waveforms: torch.Tensor  # [N, T] float32
    labels: torch.Tensor  # [N] int64, index into ``classes``
    angles_deg: torch.Tensor  # [N] float32
    paths: list[str]
    sample_rate: int
    classes: list[str]
    files: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def condition_dir(root: str | Path, material: str, freq_hz: int, follow_links: bool = True
                  ) -> Path:
    """``root/<material>/<freq_hz>hz``, or a :class:`DataError` saying what is there instead
    (or, with ``follow_links=False``, naming a link on the way that leads outside ``root``)."""
    root = Path(root)
    material_dir = root / str(material)
    if not material_dir.is_dir():
        found = sorted(p.name for p in root.iterdir()
                       if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        raise DataError(f"material folder {material_dir} not found (found: {found})")
    freq_dir = material_dir / f"{int(freq_hz)}hz"
    if not freq_dir.is_dir():
        found = sorted(p.name for p in material_dir.iterdir() if p.is_dir())
        raise DataError(f"frequency folder {freq_dir} not found (found: {found})")
    if not follow_links:
        real_root = root.resolve()
        for level in (material_dir, freq_dir):
            target = link_outside(level, real_root)
            if target is not None:
                raise DataError(outside_message(level, target, real_root))
    return freq_dir


def scan_condition(root: str | Path, material: str, freq_hz: int, sample_rate: int = SAMPLE_RATE,
                   seconds: float = CLIP_SECONDS, follow_links: bool = True
                   ) -> tuple[Recordings | None, list[str], list[str]]:
    """Read every clip of a condition; returns ``(recordings or None, problems, notes)``: every
    problem found (one line each, naming the file or folder) instead of stopping at the first,
    and one note per entry not read (with the reason) or read through a link that leads
    outside ``root`` (``follow_links=False``: such a link is a problem instead, and not read).

    A missing material or frequency folder raises at once (there is nothing else to check).
    """
    root = Path(root)
    freq_dir = condition_dir(root, material, freq_hz, follow_links)
    real_root = root.resolve()
    problems: list[str] = []
    notes: list[str] = []
    skipped: list[str] = []

    def outside(path: Path) -> bool:
        """Note a link leading outside (or refuse it); True if it is not to be read."""
        target = link_outside(path, real_root)
        if target is None:
            return False
        if not follow_links:
            problems.append(outside_message(path, target, real_root))
            return True
        notes.append(f"{path.relative_to(root).as_posix()}: read through a symbolic link to "
                     f"{target}, outside the data folder")
        return False

    for level in (root / str(material), freq_dir):
        outside(level)
    class_dirs, ignored = [], []
    for entry in sorted(freq_dir.iterdir()):
        reason = why_not_read(entry, in_class_dir=False)
        if reason is None and int(CLASS_DIR.match(entry.name).group(1)) >= MAX_ANGLE:
            problems.append(f"class folder {entry}: angle {int(entry.name[3:])} is outside "
                            f"[0, {MAX_ANGLE}) degrees (name each class deg<angle:03d> with "
                            f"0 <= angle < {MAX_ANGLE}, e.g. deg000 for 360)")
        elif reason is not None:
            ignored += [entry.name] if entry.is_dir() and not entry.name.startswith(".") else []
            skipped.append(str(entry))
            notes.append(f"{entry.relative_to(root).as_posix()}: not read, {reason}")
        elif not outside(entry):
            class_dirs.append(entry)
    if len(class_dirs) < 2:
        problems.append(f"{freq_dir} needs at least two class folders deg<angle:03d> (angles "
                        f"0–{MAX_ANGLE - 1}), found {[p.name for p in class_dirs]}"
                        + (f" (ignored, not named deg<angle:03d>: {ignored})" if ignored else ""))
    waves, labels, angles, paths, rows = [], [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = []
        for entry in sorted(class_dir.iterdir()):
            reason = why_not_read(entry, in_class_dir=True)
            if reason is not None:
                skipped.append(str(entry))
                notes.append(f"{entry.relative_to(root).as_posix()}: not read, {reason}")
            elif not outside(entry):
                files.append(entry)
        if not files:
            problems.append(f"class folder {class_dir} holds no .wav files")
        angle = int(CLASS_DIR.match(class_dir.name).group(1))
        for f in files:
            try:
                samples, info = read_clip(f, sample_rate, seconds)
            except DataError as err:
                problems.append(str(err))
                continue
            waves.append(fit_clip(samples, info.samplerate, sample_rate, seconds))
            labels.append(label)
            angles.append(angle)
            paths.append(str(f))
            rows.append(dict(path=str(f), **{"class": class_dir.name}, angle_deg=angle,
                             sample_rate=info.samplerate, channels=info.channels,
                             seconds=info.frames / info.samplerate, subtype=info.subtype,
                             peak=float(np.abs(samples).max())))
    if notes:
        warnings.warn(f"{freq_dir}: skipped {len(skipped)} entr"
                      f"{'y' if len(skipped) == 1 else 'ies'}; " + "; ".join(notes),
                      DataNote, stacklevel=3)
    if not waves:
        return None, problems, notes
    rec = Recordings(
        waveforms=torch.stack(waves).float(),
        labels=torch.tensor(labels, dtype=torch.long),
        angles_deg=torch.tensor(angles, dtype=torch.float32),
        paths=paths, sample_rate=sample_rate, classes=[p.name for p in class_dirs],
        files=pd.DataFrame(rows), skipped=skipped, notes=notes,
    )
    return rec, problems, notes


def load_recordings(root: str | Path, material: str, freq_hz: int,
                    sample_rate: int = SAMPLE_RATE, seconds: float = CLIP_SECONDS, *,
                    follow_links: bool = True) -> Recordings:
    """Read ``root/<material>/<freq_hz>hz/deg<angle>/*.wav`` (read-only; nothing is modified).

    Raises one :class:`DataError` listing every problem (see the module docstring): a missing
    material or frequency folder, an empty class folder, fewer than two classes, an angle
    outside ``[0, 360)``, each file that is unreadable, not WAV, truncated, empty or not finite;
    with ``follow_links=False``, each symbolic link that leads outside ``root``. What is not
    read is listed in a :class:`DataNote` warning and ``Recordings.notes``.
    """
    rec, problems, _ = scan_condition(root, material, freq_hz, sample_rate, seconds,
                                      follow_links)
    if problems or rec is None:
        raise problems_error(condition_dir(root, material, freq_hz), problems)
    return rec


def list_conditions_in(root: str | Path) -> list[tuple[str, int]]:
    """``(material, freq_hz)`` of every ``root/<material>/<freq>hz/`` that holds at least one
    class folder ``deg<angle:03d>``, sorted. Reads only."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} not found")
    found = []
    for material in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for freq in sorted(p for p in material.iterdir() if p.is_dir()):
            m = FREQ_DIR.match(freq.name)
            if m and any(CLASS_DIR.match(c.name) for c in freq.iterdir() if c.is_dir()):
                found.append((material.name, int(m.group(1))))
    return sorted(found, key=lambda c: (c[0], c[1]))
