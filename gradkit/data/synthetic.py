"""The synthetic default data set: a deterministic stand-in for the study's recordings.

The study probed one material with a tone from six angles (deg000 … deg180) and recorded what came
back. :func:`make_dataset` synthesises such recordings from a small physical model, one clip at a
time, each from its own seeded random stream (same seed, same bytes, whatever subset is made):

1. **Probe.** A Hann-windowed tone burst at the probe frequency ``f`` (0.06 s), swept slightly
   (``f`` ± 3 %) like a short chirp, starting 0.040–0.050 s into the clip.
2. **Direct path.** The burst itself, scaled by the microphone placement: the distance jitters
   by about ten per cent, i.e. ± ~1 dB of level.
3. **Specular reflection.** A delayed copy ``a(θ) s(t - τ(θ))``. The extra path grows with the
   angle, ``τ(θ) = 0.003 s + 0.060 s · θ/180°``, and the reflection weakens away from normal
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

**Ownership.** The set lives in a folder gradkit owns (default ``data/synthetic/``, see
:func:`gradkit.core.paths.synthetic_dir`), marked by :data:`MARKER` (a JSON list of the files
written). :func:`make_dataset` writes only into an empty or missing folder or its own marked set,
and refuses with a :class:`~gradkit.data.DataError` listing the files it did not write:
recordings of yours are never overwritten, moved or deleted.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import lfilter

from gradkit.core.io import atomic_write_text
from gradkit.core.paths import synthetic_dir
from gradkit.data.recordings import (
    CLIP_SECONDS,
    SAMPLE_RATE,
    DataError,
    list_conditions_in,
    stratified_split,
)

ANGLES: tuple[int, ...] = (0, 36, 72, 108, 144, 180)
MATERIALS: tuple[str, ...] = ("plastic", "metal", "wood")
FREQS_HZ: tuple[int, ...] = (500, 1000, 3000)
MANIFEST = "manifest.csv"
#: the marker file of a folder written by :func:`make_dataset`
MARKER = ".gradkit-synthetic"

# Per material: reflectance at 0 Hz, absorption corner (Hz),
# modal ringing frequency (Hz), ring decay time (s), ring level.
_MATERIALS = {
    "plastic": dict(r0=0.65, f_abs=9000.0, f_ring=2300.0, t_ring=0.045, ring=0.5),
    "metal": dict(r0=0.92, f_abs=30000.0, f_ring=4100.0, t_ring=0.160, ring=0.30),
    "wood": dict(r0=0.45, f_abs=5000.0, f_ring=1300.0, t_ring=0.020, ring=0.25),
}
_GAIN = 0.2  # global recording gain: keeps every clip well inside 16-bit range


# ---------------------------------------------------------------------------------------------
# Signal model
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


# ---------------------------------------------------------------------------------------------
# The set on disk, in a folder gradkit owns
# ---------------------------------------------------------------------------------------------
def _is_temp(rel: str) -> bool:
    """A temporary file of an interrupted write of ours (``.<name>.tmp``, ``.<name>.<x>.tmp``)."""
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(".tmp")


def owned_files(root: Path) -> set[str] | None:
    """The files (relative, POSIX) :func:`make_dataset` wrote under ``root`` per its marker, or
    ``None`` if ``root`` carries no readable marker."""
    try:
        info = json.loads((root / MARKER).read_text(encoding="utf-8"))
        return set(info["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_writable(root: Path) -> set[str]:
    """Refuse (:class:`DataError`) unless ``root`` is missing, empty, or a set of ours holding
    only files we wrote; returns the files we wrote before (empty for a new folder)."""
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a folder: the synthetic set needs a folder")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} \
        if root.is_dir() else set()
    if not present:
        return set()
    owned = owned_files(root)
    foreign = sorted(p for p in present - (owned or set()) - {MARKER, MANIFEST} if not _is_temp(p))
    if owned is None or foreign:
        shown = ", ".join(foreign[:8]) + (f" … ({len(foreign)} in all)" if len(foreign) > 8 else "")
        raise DataError(
            f"refusing to write the synthetic data set into {root}: it holds files gradkit did "
            f"not write ({shown}). The generator writes only into an empty folder or its own set "
            f"(marked by {MARKER}); your recordings are never touched. Pass another folder, or "
            f"read this one with load_recordings / load_split(root=...).")
    return owned


def _write_wav_atomic(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(tmp, samples, sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)


def make_dataset(root: str | Path | None = None, materials: Sequence[str] = MATERIALS,
                 freqs_hz: Sequence[int] = FREQS_HZ, per_class: int = 9, seed: int = 42,
                 hard_fraction: float = 0.2) -> pd.DataFrame:
    """Write ``root/<material>/<freq>hz/deg<angle:03d>/<nn>.wav``, ``root/manifest.csv`` and the
    marker ``root/.gradkit-synthetic`` (``root=None``: ``data/synthetic/``).

    Six angles (0…180° in 36° steps), ``per_class`` clips each, 16-bit PCM at 16 kHz. Returns the
    manifest (path relative to ``root``, material, freq_hz, angle_deg, label, hard, split). The
    same seed gives the same bytes. ``hard_fraction`` of the clips are recorded at low SNR.
    Refuses a folder holding files it did not write (see the module docstring); files of an
    earlier set of ours that the new one does not have are removed.
    """
    root = Path(root) if root is not None else synthetic_dir()
    unknown = [m for m in materials if m not in _MATERIALS]
    if unknown:
        raise ValueError(f"unknown material(s) {unknown}; choose from {sorted(_MATERIALS)}")
    if per_class < 2:
        raise ValueError(f"per_class must be >= 2, got {per_class}")
    bad = [f for f in freqs_hz if not 0 < f < SAMPLE_RATE / 2]
    if bad:
        raise ValueError(f"freq_hz {bad} outside (0, {SAMPLE_RATE // 2}) Hz")
    before = check_writable(root)
    plan = [(m, int(f), label, angle, i) for m in materials for f in freqs_hz
            for label, angle in enumerate(ANGLES) for i in range(per_class)]
    rel = [f"{m}/{f}hz/deg{angle:03d}/{i:02d}.wav" for m, f, _, angle, i in plan]
    root.mkdir(parents=True, exist_ok=True)
    # the marker first: an interrupted run leaves a folder that is still recognisably ours
    atomic_write_text(root / MARKER, json.dumps(
        {"generator": "gradkit.data.make_dataset", "seed": seed,
         "files": sorted(before | set(rel))}, indent=0) + "\n")
    rows = []
    for (material, freq, label, angle, i), path in zip(plan, rel, strict=True):
        rng = _clip_rng(seed, material, freq, angle, i)
        hard = rng.uniform() < hard_fraction
        clip = synthesize_clip(material, freq, angle, rng, hard=hard)
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        _write_wav_atomic(root / path, clip, SAMPLE_RATE)
        rows.append(dict(path=path, material=material, freq_hz=freq, angle_deg=angle,
                         label=label, hard=hard))
    for stale in sorted(before - set(rel)):  # ours, listed by our marker
        (root / stale).unlink(missing_ok=True)
        for folder in (root / stale).parents:  # and the folders that leaves empty
            if folder == root or any(folder.iterdir()):
                break
            folder.rmdir()
    manifest = pd.DataFrame(rows)
    manifest["split"] = "train"
    for _, group in manifest.groupby(["material", "freq_hz"]):
        is_val = stratified_split(group["label"].to_numpy(), seed=seed)
        manifest.loc[group.index[is_val], "split"] = "val"
    atomic_write_text(root / MARKER, json.dumps(
        {"generator": "gradkit.data.make_dataset", "seed": seed, "files": sorted(rel)},
        indent=0) + "\n")
    atomic_write_text(root / MANIFEST, manifest.to_csv(index=False))
    return manifest


def is_complete(root: Path) -> bool:
    """``root`` holds a finished set of ours: marker, manifest, every clip it lists."""
    if owned_files(root) is None or not (root / MANIFEST).is_file():
        return False
    try:
        paths = pd.read_csv(root / MANIFEST)["path"]
    except (OSError, ValueError, KeyError):
        return False
    return all((root / p).is_file() for p in paths)


def ensure_dataset(root: str | Path | None = None) -> Path:
    """The default set under ``root`` (``None``: ``data/synthetic/``), generated unless a
    complete set of ours is there; refuses a folder of someone else's files."""
    root = Path(root) if root is not None else synthetic_dir()
    if not is_complete(root):
        make_dataset(root)
    return root


def data_root(root: str | Path | None = None) -> Path:
    """The folder to read: ``root`` as given (never written to), or for ``None`` the synthetic
    default set (generated the first time)."""
    return ensure_dataset() if root is None else Path(root).expanduser()


def list_conditions(root: str | Path | None = None) -> list[tuple[str, int]]:
    """``(material, freq_hz)`` of every ``root/<material>/<freq>hz/`` that holds at least one
    class folder ``deg<angle:03d>``, sorted; ``root=None`` is the synthetic default set."""
    return list_conditions_in(data_root(root))
