"""The acoustic data set: a deterministic synthetic stand-in, and the loader for real recordings.

The study probed one material with a tone from six angles (deg000 … deg180) and recorded what came
back. :func:`make_dataset` synthesises such recordings from a small physical model, one clip at a
time, each from its own seeded random stream (same seed, same bytes, whatever subset is made):

1. **Probe.** A Hann-windowed tone burst at the probe frequency ``f`` (60 ms), swept slightly
   (``f`` ± 3 %) like a short chirp, starting 40–50 ms into the clip.
2. **Direct path.** The burst itself, scaled by the microphone placement: the distance jitters
   by about ten per cent, i.e. ± ~1 dB of level.
3. **Specular reflection.** A delayed copy ``a(θ) s(t - τ(θ))``. The extra path grows with the
   angle, ``τ(θ) = 3 ms + 60 ms · θ/180°``, and the reflection weakens away from normal
   incidence, ``a(θ) = R · (0.25 + 0.75 cos²(θ/2))``. Summing the two gives comb filtering across
   the swept band and a tail whose length and level depend on the angle.
4. **Material.** Absorption sets the reflectance ``R`` and rises with frequency
   (``R(f) = R0 · exp(-f / f_abs)``); the surface rings at its modal frequency with its own decay
   time, excited the more the further the probe is from normal incidence (``∝ sin²(θ/2)``) —
   metal rings long, wood hardly at all.
5. **Room.** Low-passed (pinkish) room noise at a random SNR: most clips 18–30 dB, one in five a
   hard clip at 0–8 dB.
6. **Placement jitter.** The true angle deviates from the nominal one by N(0, 4°), so
   neighbouring classes (36° apart) overlap a little: they are genuinely confusable.

A fixed global gain maps the signal to 16-bit PCM without per-clip normalisation (levels carry
information about the angle, as they do in a real recording chain).

:func:`load_recordings` reads the generated set or the user's own recordings in the same layout
``<root>/<material>/<freq>hz/deg<angle:03d>/*.wav`` (see ``data/README.md``).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from scipy.signal import lfilter

from gradkit.core.paths import data_dir

ANGLES: tuple[int, ...] = (0, 36, 72, 108, 144, 180)
MATERIALS: tuple[str, ...] = ("plastic", "metal", "wood")
FREQS_HZ: tuple[int, ...] = (500, 1000, 3000)
SAMPLE_RATE = 16000
CLIP_SECONDS = 0.5
MANIFEST = "manifest.csv"

# Per material: reflectance at 0 Hz, absorption corner (Hz),
# modal ringing frequency (Hz), ring decay time (s), ring level.
_MATERIALS = {
    "plastic": dict(r0=0.65, f_abs=9000.0, f_ring=2300.0, t_ring=0.045, ring=0.5),
    "metal": dict(r0=0.92, f_abs=30000.0, f_ring=4100.0, t_ring=0.160, ring=0.30),
    "wood": dict(r0=0.45, f_abs=5000.0, f_ring=1300.0, t_ring=0.020, ring=0.25),
}
_GAIN = 0.2  # global recording gain: keeps every clip well inside 16-bit range
_CLASS_DIR = re.compile(r"^deg(\d{3})$")


class DataError(ValueError):
    """Bad input data; the message names the offending file or folder."""


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def _clip_rng(seed: int, material: str, freq_hz: int, angle: int, index: int):
    """An independent random stream per clip, so any subset of the set is byte-identical."""
    key = [seed, zlib.crc32(material.encode()), int(freq_hz), int(angle), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def _burst(t: np.ndarray, f: float, onset: float, length: float, phase: float) -> np.ndarray:
    """A Hann-windowed tone burst swept linearly from 0.97 f to 1.03 f."""
    local = t - onset
    inside = (local >= 0) & (local < length)
    sweep = 0.06 * f / length  # Hz per second
    phi = 2 * np.pi * (0.97 * f * local + 0.5 * sweep * local**2) + phase
    window = np.where(inside, 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(local / length, 0, 1)), 0.0)
    return window * np.sin(phi)


def synthesize_clip(material: str, freq_hz: float, angle_deg: float, rng, *, hard: bool,
                    sample_rate: int = SAMPLE_RATE, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """One recording of ``material`` probed at ``freq_hz`` from ``angle_deg`` (see module doc)."""
    m = _MATERIALS[material]
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    theta = np.deg2rad(np.clip(angle_deg + rng.normal(0.0, 4.0), 0.0, 180.0))
    onset = 0.040 + rng.uniform(0.0, 0.010)
    length = 0.060
    level = 10 ** (rng.normal(0.0, 1.0) / 20)  # placement distance jitter
    phase = rng.uniform(0, 2 * np.pi)

    direct = _burst(t, freq_hz, onset, length, phase)
    reflectance = m["r0"] * np.exp(-freq_hz / m["f_abs"])
    a = reflectance * (0.25 + 0.75 * np.cos(theta / 2) ** 2)
    tau = 0.003 + 0.060 * theta / np.pi
    reflection = a * _burst(t, freq_hz, onset + tau, length, phase)

    ring_t = t - (onset + length)
    ring_amp = m["ring"] * np.sin(theta / 2) ** 2 * (0.5 + 0.5 * reflectance)
    ringing = np.where(
        ring_t >= 0,
        ring_amp * np.exp(-np.maximum(ring_t, 0) / m["t_ring"])
        * np.sin(2 * np.pi * m["f_ring"] * ring_t + rng.uniform(0, 2 * np.pi)),
        0.0,
    )
    signal = level * (direct + reflection + ringing)

    noise = rng.normal(0.0, 1.0, t.size)
    noise = lfilter([1.0], [1.0, -0.7], noise)  # one-pole low-pass: pinkish room noise
    snr_db = rng.uniform(0.0, 8.0) if hard else rng.uniform(18.0, 30.0)
    signal_power = np.mean(signal[signal != 0] ** 2)
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / np.mean(noise**2))
    return _GAIN * (signal + noise)


def stratified_split(labels: Sequence[int], val_fraction: float = 1 / 3, seed: int = 42
                     ) -> np.ndarray:
    """Boolean mask of validation samples: ``round(val_fraction · n_c)`` per class, seeded."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(labels.size, dtype=bool)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_val = max(1, int(round(val_fraction * members.size))) if members.size > 1 else 0
        is_val[rng.permutation(members)[:n_val]] = True
    return is_val


def _write_wav_atomic(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(tmp, samples, sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)


def make_dataset(root: str | Path | None = None, materials: Sequence[str] = MATERIALS,
                 freqs_hz: Sequence[int] = FREQS_HZ, per_class: int = 9, seed: int = 42,
                 hard_fraction: float = 0.2) -> pd.DataFrame:
    """Write ``root/<material>/<freq>hz/deg<angle:03d>/<nn>.wav`` and ``root/manifest.csv``.

    Six angles (0…180° in 36° steps), ``per_class`` clips each, 16-bit PCM at 16 kHz. Returns the
    manifest (path relative to ``root``, material, freq_hz, angle_deg, label, split). The same
    seed gives the same bytes. ``hard_fraction`` of the clips are recorded at low SNR.
    """
    root = Path(root) if root is not None else data_dir()
    unknown = [m for m in materials if m not in _MATERIALS]
    if unknown:
        raise ValueError(f"unknown material(s) {unknown}; choose from {sorted(_MATERIALS)}")
    if per_class < 2:
        raise ValueError(f"per_class must be >= 2, got {per_class}")
    rows = []
    for material in materials:
        for freq in freqs_hz:
            if not 0 < freq < SAMPLE_RATE / 2:
                raise ValueError(f"freq_hz {freq} is outside (0, {SAMPLE_RATE // 2}) Hz")
            for label, angle in enumerate(ANGLES):
                folder = root / material / f"{int(freq)}hz" / f"deg{angle:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    rng = _clip_rng(seed, material, freq, angle, i)
                    hard = rng.uniform() < hard_fraction
                    clip = synthesize_clip(material, freq, angle, rng, hard=hard)
                    path = folder / f"{i:02d}.wav"
                    _write_wav_atomic(path, clip, SAMPLE_RATE)
                    rows.append(dict(path=path.relative_to(root).as_posix(), material=material,
                                     freq_hz=int(freq), angle_deg=angle, label=label, hard=hard))
    manifest = pd.DataFrame(rows)
    manifest["split"] = "train"
    for _, group in manifest.groupby(["material", "freq_hz"]):
        is_val = stratified_split(group["label"].to_numpy(), seed=seed)
        manifest.loc[group.index[is_val], "split"] = "val"
    tmp = root / f".{MANIFEST}.tmp"
    manifest.to_csv(tmp, index=False)
    tmp.replace(root / MANIFEST)
    return manifest


def ensure_dataset(root: str | Path | None = None) -> Path:
    """Generate the default data set under ``root`` (default ``data/``) unless it is there."""
    root = Path(root) if root is not None else data_dir()
    if not (root / MANIFEST).exists():
        make_dataset(root)
    return root


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
@dataclass
class Recordings:
    """Clips of one material and probe frequency, fixed length, mono, one sample rate."""

    waveforms: torch.Tensor  # [N, T] float32
    labels: torch.Tensor  # [N] int64, index into ``classes``
    angles_deg: torch.Tensor  # [N] float32
    paths: list[str]
    sample_rate: int
    classes: list[str]


def read_wav(path: Path, sample_rate: int, seconds: float = CLIP_SECONDS) -> torch.Tensor:
    """One WAV file as mono float32 at ``sample_rate``, exactly ``seconds`` long.

    Any sample rate (resampled with torchaudio), any channel count (averaged to mono), integer
    or float samples. Length policy: a probe recording starts with its probe, so the first
    ``seconds`` are kept and shorter clips are zero-padded at the end.
    """
    import torchaudio.functional as AF

    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for corrupt files
        raise DataError(f"cannot read audio file {path}: {err}") from err
    if samples.size == 0:
        raise DataError(f"audio file {path} holds no samples")
    if not np.isfinite(samples).all():
        raise DataError(f"audio file {path} contains NaN or infinite samples")
    mono = torch.from_numpy(samples.mean(axis=1))
    if rate != sample_rate:
        mono = AF.resample(mono, orig_freq=rate, new_freq=sample_rate)
    n = int(round(seconds * sample_rate))
    return torch.nn.functional.pad(mono[:n], (0, max(0, n - mono.numel())))


def load_recordings(root: str | Path, material: str, freq_hz: int,
                    sample_rate: int = SAMPLE_RATE, seconds: float = CLIP_SECONDS) -> Recordings:
    """Read ``root/<material>/<freq_hz>hz/deg<angle>/*.wav`` (read-only; nothing is modified).

    Raises :class:`DataError` naming the folder or file for: a missing material or frequency
    folder, an empty class folder, fewer than two classes, an unreadable or corrupt file.
    """
    root = Path(root)
    material_dir = root / material
    if not material_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DataError(f"material folder {material_dir} not found (found: {found})")
    freq_dir = material_dir / f"{int(freq_hz)}hz"
    if not freq_dir.is_dir():
        found = sorted(p.name for p in material_dir.iterdir() if p.is_dir())
        raise DataError(f"frequency folder {freq_dir} not found (found: {found})")
    folders = sorted(p for p in freq_dir.iterdir() if p.is_dir())
    class_dirs = [p for p in folders if _CLASS_DIR.match(p.name)]
    if len(class_dirs) < 2:
        ignored = [p.name for p in folders if not _CLASS_DIR.match(p.name)]
        raise DataError(f"{freq_dir} needs at least two class folders deg<angle:03d>, "
                        f"found {[p.name for p in class_dirs]}"
                        + (f" (ignored, not named deg<angle:03d>: {ignored})" if ignored else ""))
    waves, labels, angles, paths = [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() == ".wav")
        if not files:
            raise DataError(f"class folder {class_dir} holds no .wav files")
        angle = int(_CLASS_DIR.match(class_dir.name).group(1))
        for f in files:
            waves.append(read_wav(f, sample_rate, seconds))
            labels.append(label)
            angles.append(angle)
            paths.append(str(f))
    return Recordings(
        waveforms=torch.stack(waves).float(),
        labels=torch.tensor(labels, dtype=torch.long),
        angles_deg=torch.tensor(angles, dtype=torch.float32),
        paths=paths,
        sample_rate=sample_rate,
        classes=[p.name for p in class_dirs],
    )



_FREQ_DIR = re.compile(r"^(\d+)hz$")


def list_conditions(root: str | Path | None = None) -> list[tuple[str, int]]:
    """``(material, freq_hz)`` of every ``root/<material>/<freq>hz/`` that holds at least one
    class folder ``deg<angle:03d>``, sorted; ``root=None`` is the default data set. Reads only."""
    root = ensure_dataset(root) if root is None else Path(root)
    found = []
    for material in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for freq in sorted(p for p in material.iterdir() if p.is_dir()):
            m = _FREQ_DIR.match(freq.name)
            if m and any(_CLASS_DIR.match(c.name) for c in freq.iterdir() if c.is_dir()):
                found.append((material.name, int(m.group(1))))
    return sorted(found, key=lambda c: (c[0], c[1]))
