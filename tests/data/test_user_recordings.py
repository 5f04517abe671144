"""Your own recordings: never a byte changed, any angle set and size, every bad file named.

The folders here are what a user brings: a non-default material and frequency, angle classes
other than the default six, unequal clip counts, 44.1 kHz stereo float WAVs of unequal lengths,
no manifest, and the odd files of real life (macOS ``._*`` forks, truncated copies, one absurd
sample, FLAC under a ``.wav`` name).
"""

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gradkit.data import (
    MARKER,
    DataError,
    DataNote,
    ensure_dataset,
    list_conditions,
    load_recordings,
    load_split,
    make_dataset,
    preflight,
)
from gradkit.losses.ranking import ranking_pairs
from gradkit.training.config import batch_size_for

ANGLES = (0, 30, 60, 90)
SIZES = (5, 6, 7, 8)  # clips per class: unequal on purpose


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) -> its SHA-256."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_user_folder(root: Path, material="glass", freq=2500, angles=ANGLES, sizes=SIZES,
                      rate=44100) -> Path:
    """Stereo float WAVs at ``rate``, lengths 0.3–0.8 s, a level that depends on the angle."""
    rng = np.random.default_rng(0)
    for angle, n in zip(angles, sizes, strict=True):
        folder = root / material / f"{freq}hz" / f"deg{angle:03d}"
        folder.mkdir(parents=True)
        for i in range(n):
            t = np.arange(int(rate * rng.uniform(0.3, 0.8))) / rate
            tone = (0.2 + 0.6 * angle / 90) * np.sin(2 * np.pi * freq * t) * np.exp(-8 * t)
            noise = 0.05 * rng.standard_normal((t.size, 2))
            sf.write(folder / f"take{i}.wav", (tone[:, None] + noise).astype(np.float32), rate,
                     subtype="FLOAT")
    return root


@pytest.fixture
def user(tmp_path):
    return write_user_folder(tmp_path / "recordings")


def cond_dir(root, angle=0):
    return root / "glass/2500hz" / f"deg{angle:03d}"


# -- data safety ------------------------------------------------------------------------------
def test_the_default_set_lives_in_its_own_marked_folder_and_user_data_is_untouched(
        tmp_path, monkeypatch):
    """The reported bug: WAVs in data/plastic/3000hz/ without a manifest were regenerated."""
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    mine = tmp_path / "data/plastic/3000hz/deg000"
    mine.mkdir(parents=True)
    sf.write(mine / "00.wav", np.full(4000, 0.25, np.float32), 16000, subtype="FLOAT")
    (tmp_path / "data/README.md").write_text("my notes")
    before = digest(tmp_path / "data")

    split = load_split("plastic", 3000)  # root=None: the synthetic default set

    assert len(split.y_train) == 36 and len(split.classes) == 6
    synthetic = tmp_path / "data/synthetic"
    assert (synthetic / MARKER).is_file() and (synthetic / "manifest.csv").is_file()
    after = digest(tmp_path / "data")
    assert {k: v for k, v in after.items() if not k.startswith("synthetic/")} == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["README.md", "plastic",
                                                                      "synthetic"]


def test_the_generator_refuses_a_folder_holding_files_it_did_not_write(user, tmp_path):
    before = digest(user)
    for make in (lambda: make_dataset(user, materials=["plastic"], freqs_hz=[3000], per_class=2),
                 lambda: ensure_dataset(user)):
        with pytest.raises(DataError, match="refusing to write the synthetic data set") as err:
            make()
        assert "glass/2500hz/deg000/take0.wav" in str(err.value)
    assert digest(user) == before
    # its own folder: regenerated in place (same bytes); one foreign file and it refuses too
    own = tmp_path / "own"
    make_dataset(own, materials=["wood"], freqs_hz=[500], per_class=2)
    first = digest(own)
    make_dataset(own, materials=["wood"], freqs_hz=[500], per_class=2)
    assert digest(own) == first
    (own / "wood/500hz/deg000/mine.wav").write_bytes(b"not ours")
    with pytest.raises(DataError, match="wood/500hz/deg000/mine.wav"):
        make_dataset(own, materials=["wood"], freqs_hz=[500], per_class=2)
    assert (own / "wood/500hz/deg000/mine.wav").read_bytes() == b"not ours"


def test_a_smaller_set_of_ours_replaces_the_larger_one_cleanly(tmp_path):
    make_dataset(tmp_path, materials=["wood"], freqs_hz=[500, 1000], per_class=3)
    make_dataset(tmp_path, materials=["wood"], freqs_hz=[500], per_class=2)
    assert list_conditions(tmp_path) == [("wood", 500)]
    assert not (tmp_path / "wood/1000hz").exists()
    assert len(list((tmp_path / "wood/500hz/deg000").glob("*.wav"))) == 2


# -- any angle set and size -------------------------------------------------------------------
def test_four_classes_of_unequal_size_split_batch_and_rank(user):
    before = digest(user)
    split = load_split("glass", 2500, root=user)
    assert split.classes == ["deg000", "deg030", "deg060", "deg090"]
    val_per_class = torch.bincount(split.y_val, minlength=4).tolist()
    train_per_class = torch.bincount(split.y_train, minlength=4).tolist()
    assert val_per_class == [round(n / 3) for n in SIZES] == [2, 2, 2, 3]
    assert [a + b for a, b in zip(val_per_class, train_per_class, strict=True)] == list(SIZES)
    assert split.x_train.shape[1:] == (1, 40, 32) and torch.isfinite(split.x_train).all()
    n_train = len(split.y_train)  # 17
    assert batch_size_for(n_train) == 9  # 9 + 8, not 12 + 5
    i, j = ranking_pairs(split.angles_train)
    counts = torch.bincount(split.y_train, minlength=4)
    expected = sum(int(counts[a] * counts[b]) for a in range(4) for b in range(a + 1, 4))
    assert len(i) == expected and (split.angles_train[i] < split.angles_train[j]).all()
    assert digest(user) == before


@pytest.mark.parametrize("n_train, expected", [(36, 12), (48, 12), (30, 10), (17, 9), (16, 16),
                                               (6, 6), (1, 1), (157, 16)])
def test_batch_size_rule(n_train, expected):
    b = batch_size_for(n_train)
    assert b == expected
    last = n_train - (-(-n_train // b) - 1) * b
    assert last >= 0.44 * b, "never a ragged last batch of a handful of clips"


def test_a_run_on_eight_classes_sizes_its_model_and_batches(tmp_path, monkeypatch):
    from gradkit.training import TrainConfig, get_run

    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("GRADKIT_DEVICE", "cpu")
    root = write_user_folder(tmp_path / "rec", "steel", 800, angles=range(0, 160, 20),
                             sizes=(3, 3, 4, 3, 5, 3, 3, 4), rate=16000)
    before = digest(root)
    run = get_run(TrainConfig(material="steel", freq_hz=800, data_root=str(root), epochs=2,
                              widths=(4,)), progress=False)
    n_train = len(run.split.y_train)
    assert n_train == 19 and run.config.batch_size == batch_size_for(n_train) == 10
    assert run.ghm_history[0]["batch_sizes"] == [10, 9]
    assert run.load_model(2).n_classes == 8
    assert len(run.metrics) == 2
    assert digest(root) == before


# -- every bad file, named --------------------------------------------------------------------
def test_a_truncated_wav_is_refused_naming_the_file(user):
    path = cond_dir(user) / "cut.wav"
    sf.write(path, np.zeros((8000, 1), np.float32) + 0.1, 16000, subtype="FLOAT")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - (8000 - 3989) * 4])
    assert sf.info(str(path)).frames in (3989, 8000), "libsndfile reads it without complaint"
    with pytest.raises(DataError, match=r"cut\.wav is truncated: its header says 8000 frames, "
                                        r"the file holds 3989"):
        load_recordings(user, "glass", 2500)


def test_one_absurd_sample_is_refused_by_its_features(user):
    path = cond_dir(user, 60) / "spike.wav"
    clip = np.full((4000, 2), 0.1, np.float32)
    clip[1000, 0] = 1e30
    sf.write(path, clip, 44100, subtype="FLOAT")
    with pytest.raises(DataError, match=r"spike\.wav: its log-mel features are not finite"):
        load_split("glass", 2500, root=user)
    with pytest.raises(DataError, match=r"spike\.wav"):
        preflight(user, "glass", 2500)


def test_hidden_and_non_wav_files_are_skipped_with_a_note(user):
    (cond_dir(user) / "._take0.wav").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    (cond_dir(user) / ".DS_Store").write_bytes(b"Bud1")
    (cond_dir(user, 30) / "notes.txt").write_text("session log")
    with pytest.warns(DataNote, match=r"skipped 3 .*deg000/\._take0\.wav.*deg030/notes\.txt"):
        rec = load_recordings(user, "glass", 2500)
    assert len(rec.paths) == sum(SIZES) and not any("/." in p for p in rec.paths)
    assert {Path(p).name for p in rec.skipped} == {"._take0.wav", ".DS_Store", "notes.txt"}


@pytest.mark.parametrize("fmt, subtype", [("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                                         ("MP3", "MPEG_LAYER_III")])
def test_compressed_audio_under_a_wav_name_is_refused(user, fmt, subtype):
    path = cond_dir(user, 90) / "exported.wav"
    sf.write(path, 0.1 * np.ones(8000), 16000, format=fmt, subtype=subtype)
    with pytest.raises(DataError, match=rf"exported\.wav holds {fmt} audio .*not WAV"):
        load_recordings(user, "glass", 2500)


def test_every_problem_is_listed_at_once_and_the_preflight_table_comes_along(user):
    (cond_dir(user, 0) / "broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    sf.write(cond_dir(user, 30) / "empty.wav", np.zeros(0), 16000)
    lonely = user / "glass/2500hz/deg120"
    lonely.mkdir()
    sf.write(lonely / "only.wav", 0.1 * np.ones(8000), 16000)
    before = digest(user)
    with pytest.raises(DataError) as err:
        preflight(user, "glass", 2500)
    message = str(err.value)
    assert message.startswith("3 problems in ")
    for needle in ("broken.wav", "empty.wav holds no samples", "class deg120 has 1 clip(s)"):
        assert needle in message
    assert list(err.value.table.index) == ["deg000", "deg030", "deg060", "deg090", "deg120"]
    with pytest.raises(DataError, match="broken.wav") as loaded:
        load_split("glass", 2500, root=user)
    assert "empty.wav" in str(loaded.value)
    assert digest(user) == before


def test_preflight_table(user):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to skip here: no note
        table = preflight(user, "glass", 2500)
    assert list(table.index) == ["deg000", "deg030", "deg060", "deg090"]
    assert table["clips"].tolist() == list(SIZES)
    assert (table["train"] + table["val"]).tolist() == list(SIZES)
    assert table["angle_deg"].tolist() == list(ANGLES)
    assert set(table["sample_rate_hz"]) == {"44100"} and set(table["channels"]) == {"2"}
    assert set(table["format"]) == {"FLOAT"}
    assert (table["zero_padded"] > 0).any(), "clips under 0.5 s are zero-padded, and counted"
    assert table.attrs["skipped"] == []
