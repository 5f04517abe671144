"""A long recording costs what a clip does (issue 26, case 4): the loader reads only the frames
the first 0.5 s need at the file's own rate, plus the resampling kernel's reach, and resamples
only that window; the clips it gives are the same as from the whole file."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from test_user_recordings import write_user_folder

import gradkit.data.recordings as R
from gradkit.data import CLIP_SECONDS, SAMPLE_RATE, load_recordings, log_mel, read_wav


def whole_file_clip(path):
    """The clip as the loader made it before: the whole file decoded, then converted."""
    samples, info = R.read_clip(path, sample_rate=None)
    return R.fit_clip(samples, info.samplerate)


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000])
@pytest.mark.parametrize("seconds", [0.45, 0.52, 2.3])
def test_the_window_read_gives_the_same_clip_as_the_whole_file(tmp_path, rate, seconds):
    """Bitwise the same for a file that fits the window (every ordinary clip: the whole file is
    read, as before); for a longer one the same up to float32 rounding (the resampling
    convolution blocks its sums by input length: a few values differ in the last bit)."""
    rng = np.random.default_rng(rate)
    path = tmp_path / f"take_{rate}.wav"
    sf.write(path, rng.uniform(-0.5, 0.5, (int(seconds * rate), 2)).astype(np.float32), rate,
             subtype="FLOAT")
    window, whole = read_wav(path), whole_file_clip(path)
    assert window.shape == (int(SAMPLE_RATE * CLIP_SECONDS),)
    if int(seconds * rate) <= R.clip_frames(rate):
        assert torch.equal(window, whole)
    else:
        assert torch.allclose(window, whole, rtol=0, atol=2 * np.finfo(np.float32).eps)


def test_the_reader_asks_soundfile_only_for_the_frames_it_uses(tmp_path, monkeypatch):
    rate = 48000
    path = tmp_path / "one_minute.wav"
    sf.write(path, np.zeros((60 * rate, 1), np.float32), rate, subtype="FLOAT")
    asked = []
    real = R.sf.read

    def spy(file, *args, **kwargs):
        asked.append(kwargs.get("frames", -1))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(R.sf, "read", spy)
    read_wav(path)
    assert asked == [R.clip_frames(rate)]
    assert int(CLIP_SECONDS * rate) < asked[0] < int(CLIP_SECONDS * rate) + 200


def test_features_of_ordinary_clips_are_unchanged(tmp_path):
    root = write_user_folder(tmp_path / "rec", sizes=(3, 3, 3, 3))  # 0.3–0.8 s at 44.1 kHz
    rec = load_recordings(root, "glass", 2500)
    before = torch.stack([whole_file_clip(p) for p in rec.paths])
    assert torch.equal(rec.waveforms, before)
    assert torch.equal(log_mel(rec.waveforms), log_mel(before))


def _peak_rss_kb(folder):
    """Peak resident memory (KiB) of ``python -m gradkit.data --check folder``, measured in
    a wrapper process of its own so that no other child of the test counts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    wrapper = ("import resource, subprocess, sys; "
               "done = subprocess.run([sys.executable, '-m', 'gradkit.data', '--check', "
               "sys.argv[1]], capture_output=True, text=True); "
               "assert done.returncode == 0, done.stderr; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", wrapper, str(folder)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.slow
def test_a_long_file_does_not_raise_the_checks_peak_memory(tmp_path):
    short = write_user_folder(tmp_path / "short", sizes=(3, 3, 3, 3))
    long = write_user_folder(tmp_path / "long", sizes=(3, 3, 3, 3))
    rate, minutes = 48000, 15  # 173 MB of float32 samples: decoding it whole shows at once
    with sf.SoundFile(long / "glass" / "2500hz" / "deg000" / "long.wav", "w", rate, 1,
                      subtype="FLOAT") as f:
        chunk = (0.1 * np.sin(np.arange(60 * rate) * 0.3)).astype(np.float32)
        for _ in range(minutes):
            f.write(chunk)
    base, with_long = _peak_rss_kb(short), _peak_rss_kb(long)
    assert with_long <= 1.2 * base, (with_long, base)
