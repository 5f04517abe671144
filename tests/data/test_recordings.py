"""The synthetic data set and the loader: determinism, odd-but-valid input, every bad input."""

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from gradkit.data import (
    ANGLES,
    CLIP_SECONDS,
    SAMPLE_RATE,
    DataError,
    load_recordings,
    make_dataset,
    stratified_split,
)
from gradkit.data.features import load_split, log_mel


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    manifest = make_dataset(root, materials=["plastic"], freqs_hz=[3000], per_class=3)
    return root, manifest


def test_layout_and_manifest(small_set):
    root, manifest = small_set
    assert len(manifest) == 6 * 3
    assert list(manifest.columns) == ["path", "material", "freq_hz", "angle_deg", "label",
                                      "hard", "split"]
    on_disk = pd.read_csv(root / "manifest.csv")
    pd.testing.assert_frame_equal(on_disk, manifest)
    assert all((root / p).is_file() for p in manifest["path"])
    for angle in ANGLES:
        files = sorted((root / "plastic" / "3000hz" / f"deg{angle:03d}").glob("*.wav"))
        assert [f.name for f in files] == ["00.wav", "01.wav", "02.wav"]
    info = sf.info(str(root / "plastic/3000hz/deg000/00.wav"))
    assert (info.samplerate, info.subtype, info.channels) == (SAMPLE_RATE, "PCM_16", 1)
    assert set(manifest["split"]) == {"train", "val"}
    assert (manifest.groupby("label")["split"].apply(lambda s: (s == "val").sum()) == 1).all()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, small_set):
    root, _ = small_set
    again = make_dataset(tmp_path / "a", materials=["plastic"], freqs_hz=[3000], per_class=3)
    assert _digest(tmp_path / "a") == _digest(root)
    assert len(again) == 18
    make_dataset(tmp_path / "b", materials=["plastic"], freqs_hz=[3000], per_class=3, seed=7)
    wav = "plastic/3000hz/deg036/01.wav"
    assert (tmp_path / "b" / wav).read_bytes() != (root / wav).read_bytes()


def test_subset_is_byte_identical_to_the_full_set(tmp_path, small_set):
    root, _ = small_set
    make_dataset(tmp_path, materials=["metal", "plastic"], freqs_hz=[500, 3000], per_class=3)
    wav = "plastic/3000hz/deg108/02.wav"
    assert (tmp_path / wav).read_bytes() == (root / wav).read_bytes()


def test_some_clips_are_hard_and_the_angle_changes_the_sound(tmp_path):
    manifest = make_dataset(tmp_path, materials=["plastic"], freqs_hz=[3000], per_class=9)
    assert 0 < manifest["hard"].mean() < 0.5
    rec = load_recordings(tmp_path, "plastic", 3000)
    mel = log_mel(rec.waveforms).flatten(1)
    mel = (mel - mel.mean(1, keepdim=True)) / mel.std(1, keepdim=True)
    # leave-one-out nearest class mean: the angle is audible (far above chance, 1/6) but the
    # classes are not trivially separable (a linear rule gets many clips wrong)
    hits = []
    for i in range(len(mel)):
        keep = torch.arange(len(mel)) != i
        means = torch.stack([mel[keep & (rec.labels == c)].mean(0) for c in range(6)])
        hits.append(((means - mel[i]).norm(dim=1).argmin() == rec.labels[i]).item())
    print("nearest-mean accuracy", np.mean(hits))
    assert 0.35 < np.mean(hits) < 0.95, np.mean(hits)


def test_loader_reads_the_generated_set(small_set):
    root, _ = small_set
    rec = load_recordings(root, "plastic", 3000)
    assert rec.waveforms.shape == (18, int(CLIP_SECONDS * SAMPLE_RATE))
    assert rec.classes == [f"deg{a:03d}" for a in ANGLES]
    assert rec.labels.tolist() == [c for c in range(6) for _ in range(3)]
    assert rec.angles_deg.tolist() == [float(a) for a in ANGLES for _ in range(3)]
    assert all(os.path.exists(p) for p in rec.paths)


def _user_set(tmp_path: Path) -> Path:
    """Two classes of odd-but-valid recordings: 44.1 kHz stereo float, 8 kHz int32, short, long."""
    root = tmp_path / "mine"
    t = lambda sr, s: np.arange(int(sr * s)) / sr  # noqa: E731
    a, b = root / "wood/1000hz/deg000", root / "wood/1000hz/deg090"
    a.mkdir(parents=True), b.mkdir(parents=True)
    tone = np.sin(2 * np.pi * 1000 * t(44100, 0.7))
    sf.write(a / "stereo_float.wav", np.stack([tone, 0.5 * tone], 1).astype(np.float32), 44100,
             subtype="FLOAT")
    sf.write(a / "short_int32.wav", (0.3 * np.sin(2 * np.pi * 1000 * t(8000, 0.2)) * 2**30)
             .astype(np.int32), 8000, subtype="PCM_32")
    sf.write(b / "mono16.WAV", 0.1 * np.sin(2 * np.pi * 1000 * t(16000, 0.5)), 16000)
    (b / "notes.txt").write_text("ignored: not a wav")
    return root


def test_loader_accepts_odd_but_valid_files(tmp_path):
    root = _user_set(tmp_path)
    before = _digest(root)
    rec = load_recordings(root, "wood", 1000)
    assert rec.waveforms.shape == (3, int(CLIP_SECONDS * SAMPLE_RATE))
    assert rec.classes == ["deg000", "deg090"]
    assert rec.angles_deg.tolist() == [0.0, 0.0, 90.0]
    by_name = {Path(p).name: w for p, w in zip(rec.paths, rec.waveforms, strict=True)}
    # stereo averaged to mono (amplitude 0.75), resampled, cropped to the clip length
    assert 0.7 < by_name["stereo_float.wav"].abs().max() < 0.8
    short = by_name["short_int32.wav"]  # 0.2 s clip, zero-padded at the end
    assert short[: int(0.19 * SAMPLE_RATE)].abs().max() > 0.1
    assert short[int(0.21 * SAMPLE_RATE):].abs().max() == 0
    assert _digest(root) == before, "the loader must never modify the data folder"


@pytest.mark.parametrize("case, needle", [
    ("missing_material", "material folder"),
    ("missing_frequency", "frequency folder"),
    ("empty_class", "deg090"),
    ("one_class", "at least two class folders"),
    ("corrupt_file", "broken.wav"),
    ("empty_file", "empty.wav"),
    ("nan_file", "nan.wav"),
    ("misnamed_class", r"ignored, not named deg<angle:03d>: \['deg90'\]"),
])
def test_bad_input_names_the_culprit(tmp_path, case, needle):
    root = _user_set(tmp_path)
    material, freq = "wood", 1000
    if case == "missing_material":
        material = "glass"
    elif case == "missing_frequency":
        freq = 3000
    elif case == "empty_class":
        for f in (root / "wood/1000hz/deg090").glob("*.WAV"):
            f.unlink()
    elif case == "one_class":
        shutil.rmtree(root / "wood/1000hz/deg090")
    elif case == "corrupt_file":
        (root / "wood/1000hz/deg000/broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    elif case == "empty_file":
        sf.write(root / "wood/1000hz/deg000/empty.wav", np.zeros(0), 16000)
    elif case == "nan_file":
        sf.write(root / "wood/1000hz/deg000/nan.wav", np.full(800, np.nan, np.float32), 16000,
                 subtype="FLOAT")
    elif case == "misnamed_class":
        (root / "wood/1000hz/deg090").rename(root / "wood/1000hz/deg90")
    before = _digest(root)
    with pytest.raises(DataError, match=needle) as err:
        load_recordings(root, material, freq)
    assert str(root) in str(err.value)
    assert _digest(root) == before


def test_stratified_split_is_seeded_and_balanced():
    labels = np.repeat(np.arange(6), 9)
    a, b = stratified_split(labels, seed=42), stratified_split(labels, seed=42)
    assert (a == b).all() and a.sum() == 18
    assert all(a[labels == c].sum() == 3 for c in range(6))
    assert not (stratified_split(labels, seed=1) == a).all()
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, val_fraction=1.5)


def test_features_are_normalised_with_training_statistics(small_set):
    root, manifest = small_set
    split = load_split("plastic", 3000, root=root)
    assert split.x_train.shape[1:] == (1, 40, 32)
    assert abs(split.x_train.mean().item()) < 1e-4
    assert abs(split.x_train.std().item() - 1) < 1e-3
    assert len(split.paths_train) == len(split.y_train) == 12
    val_paths = {str(root / p) for p in manifest.loc[manifest["split"] == "val", "path"]}
    assert set(split.paths_val) == val_paths, "features use the manifest's split"


def test_list_conditions_finds_each_material_and_frequency_with_class_folders(tmp_path):
    from gradkit.data import list_conditions

    for folder in ("wood/1000hz/deg000", "wood/500hz/deg036", "metal/3000hz/deg000",
                   "metal/3000hz/notes", "glass/250hz/other", ".hidden/100hz/deg000"):
        (tmp_path / folder).mkdir(parents=True)
    assert list_conditions(tmp_path) == [("metal", 3000), ("wood", 500), ("wood", 1000)]
