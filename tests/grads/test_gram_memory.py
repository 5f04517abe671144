"""The Gram path's memory: peak resident memory of gradient_gram against a plain batch backward,
each in a fresh process (torch on CPU has no allocator statistics; ``ru_maxrss`` is the peak)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("_peak_memory.py")
ROOT = Path(__file__).resolve().parents[2]


def peak(mode: str, n: int, t: int, layers: int, width: int) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, str(SCRIPT), mode, str(n), str(t), str(layers),
                          str(width)], capture_output=True, text=True, env=env, timeout=1200,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def check(n: int, t: int, layers: int, width: int, share_of_g: float) -> None:
    """Peak RSS of the Gram ≤ 1.3x a plain backward's, and what the Gram adds to the process
    well below ``[N, P]`` in float32 (``share_of_g`` of ``N · P · 4`` bytes)."""
    back, gram = peak("backward", n, t, layers, width), peak("gram", n, t, layers, width)
    g_bytes = n * gram["params"] * 4
    added = gram["peak"] - gram["base"]
    what = (f"N = {n}, T = {t}, P = {gram['params']:,}: peak RSS backward "
            f"{back['peak'] / 2**20:.0f} MiB (+{(back['peak'] - back['base']) / 2**20:.0f}), "
            f"Gram {gram['peak'] / 2**20:.0f} MiB (+{added / 2**20:.0f}); [N, P] would be "
            f"{g_bytes / 2**20:.0f} MiB")
    print(what)
    assert gram["peak"] <= 1.3 * back["peak"], what
    assert added <= share_of_g * g_bytes, what


def test_gram_memory_stays_near_a_backward_on_a_wide_layer():
    """One 3 M-parameter encoder layer at N = 64: materialising G would take 0.8 GB."""
    check(64, 8, 1, 512, 0.4)


@pytest.mark.slow
def test_gram_memory_on_a_25m_parameter_transformer_encoder():
    """The issue's benchmark size: 8 layers of width 512 (25 M parameters), N = 32, T = 128
    (``[N, P]`` in float32: 3.1 GiB); the test prints what it measured."""
    check(32, 128, 8, 512, 0.6)
