"""The loader of recordings: ``<root>/<material>/<freq>hz/deg<angle:03d>/*.wav``, read-only.

Layout (see ``data/README.md``): one folder per class named ``deg<angle:03d>`` (any angles, at
least two classes, any number of clips each). What the loader does with each file:

- **reads** WAV containers only (RIFF WAV, WAVE_FORMAT_EXTENSIBLE, RF64, Wave64), with integer or
  float samples, any sample rate (resampled to :data:`SAMPLE_RATE`) and any channel count
  (averaged to mono); the first :data:`CLIP_SECONDS` are kept, shorter clips are zero-padded;
- **skips**, with a :class:`DataNote` warning listing them: hidden files (names starting with
  ``.``, e.g. macOS ``._*.wav`` resource forks and ``.DS_Store``) and files not ending in ``.wav``;
- **refuses** with a :class:`DataError` naming each offending file, all of them at once: a file
  that cannot be decoded; audio of another format under a ``.wav`` name (FLAC, OGG, MP3, …:
  convert it, e.g. ``ffmpeg -i in.flac out.wav``; lossy codecs also shift the onset); a WAV
  truncated mid-data (its header promises more frames than the file holds); a file without
  samples; NaN or infinite samples.

Nothing is ever written, moved or deleted under the data folder.
"""

from __future__ import annotations

import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

SAMPLE_RATE = 16000
CLIP_SECONDS = 0.5
#: libsndfile's names of the WAV containers the loader reads
WAV_FORMATS = ("WAV", "WAVEX", "RF64", "W64")
CLASS_DIR = re.compile(r"^deg(\d{3})$")
FREQ_DIR = re.compile(r"^(\d+)hz$")


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


def read_clip(path: str | Path) -> tuple[np.ndarray, sf._SoundFileInfo]:
    """The samples ``[frames, channels]`` (float32) of one WAV file and its ``soundfile`` info,
    after every check of the module docstring (:class:`DataError` naming the file)."""
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
    try:
        samples, _ = sf.read(str(path), dtype="float32", always_2d=True)
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
    samples, info = read_clip(path)
    return fit_clip(samples, info.samplerate, sample_rate, seconds)


# ---------------------------------------------------------------------------------------------
# One condition
# ---------------------------------------------------------------------------------------------
@dataclass
class Recordings:
    """Clips of one material and probe frequency, fixed length, mono, one sample rate.

    ``files``: one row per clip as found on disk (path, class, angle_deg, sample_rate,
    channels, seconds, subtype, peak); ``skipped``: files passed over (hidden or not ``.wav``).
    """

    waveforms: torch.Tensor  # [N, T] float32
    labels: torch.Tensor  # [N] int64, index into ``classes``
    angles_deg: torch.Tensor  # [N] float32
    paths: list[str]
    sample_rate: int
    classes: list[str]
    files: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: list[str] = field(default_factory=list)


def condition_dir(root: str | Path, material: str, freq_hz: int) -> Path:
    """``root/<material>/<freq_hz>hz``, or a :class:`DataError` saying what is there instead."""
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
    return freq_dir


def scan_condition(root: str | Path, material: str, freq_hz: int, sample_rate: int = SAMPLE_RATE,
                   seconds: float = CLIP_SECONDS) -> tuple[Recordings | None, list[str]]:
    """Read every clip of a condition; returns ``(recordings or None, problems)``: every problem
    found (one line each, naming the file or folder) instead of stopping at the first.

    A missing material or frequency folder raises at once (there is nothing else to check).
    """
    freq_dir = condition_dir(root, material, freq_hz)
    folders = sorted(p for p in freq_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs = [p for p in folders if CLASS_DIR.match(p.name)]
    problems: list[str] = []
    if len(class_dirs) < 2:
        ignored = [p.name for p in folders if not CLASS_DIR.match(p.name)]
        problems.append(f"{freq_dir} needs at least two class folders deg<angle:03d>, "
                        f"found {[p.name for p in class_dirs]}"
                        + (f" (ignored, not named deg<angle:03d>: {ignored})" if ignored else ""))
    waves, labels, angles, paths, rows, skipped = [], [], [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        entries = sorted(p for p in class_dir.iterdir() if p.is_file())
        files = [p for p in entries if not p.name.startswith(".") and p.suffix.lower() == ".wav"]
        skipped += [str(p) for p in entries if p not in files]
        if not files:
            problems.append(f"class folder {class_dir} holds no .wav files")
        angle = int(CLASS_DIR.match(class_dir.name).group(1))
        for f in files:
            try:
                samples, info = read_clip(f)
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
    if skipped:
        warnings.warn(f"skipped {len(skipped)} hidden or non-.wav file(s) under {freq_dir}: "
                      + ", ".join(Path(s).relative_to(freq_dir).as_posix() for s in skipped),
                      DataNote, stacklevel=3)
    if not waves:
        return None, problems
    rec = Recordings(
        waveforms=torch.stack(waves).float(),
        labels=torch.tensor(labels, dtype=torch.long),
        angles_deg=torch.tensor(angles, dtype=torch.float32),
        paths=paths, sample_rate=sample_rate, classes=[p.name for p in class_dirs],
        files=pd.DataFrame(rows), skipped=skipped,
    )
    return rec, problems


def load_recordings(root: str | Path, material: str, freq_hz: int,
                    sample_rate: int = SAMPLE_RATE, seconds: float = CLIP_SECONDS) -> Recordings:
    """Read ``root/<material>/<freq_hz>hz/deg<angle>/*.wav`` (read-only; nothing is modified).

    Raises one :class:`DataError` listing every problem (see the module docstring): a missing
    material or frequency folder, an empty class folder, fewer than two classes, each file that
    is unreadable, not WAV, truncated, empty or not finite.
    """
    rec, problems = scan_condition(root, material, freq_hz, sample_rate, seconds)
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
