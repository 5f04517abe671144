"""`make kernel` for two clones set up one after the other: each keeps a kernel of its own.

The clones are folders in a temporary directory holding the Makefile, the lock and ``gradkit/``,
each with a venv of its own (its own ``bin/python`` and ``pyvenv.cfg``, sharing this venv's
packages so nothing is installed). The user-level kernel folder is a temporary
``JUPYTER_DATA_DIR``: the real one is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradkit.core.paths import project_root

ROOT = project_root()
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _clone(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copytree(ROOT / "gradkit", folder / "gradkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    venv = folder / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text((Path(sys.prefix) / "pyvenv.cfg").read_text())
    (venv / "bin" / "python").symlink_to(sys._base_executable)
    (venv / "lib").symlink_to(Path(sys.prefix) / "lib")
    stamp = venv / ".gradkit-installed"  # newer than the lock: make runs no install
    stamp.touch()
    later = time.time() + 60
    os.utime(stamp, (later, later))
    return folder


def _make_kernel(clone: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(["make", "-s", "-C", str(clone), "kernel"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _run_in_kernel(name: str, code: str) -> str:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name=name, startup_timeout=120)
    try:
        lines = []
        client.execute_interactive(code, timeout=60, output_hook=lambda msg: lines.append(
            msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        return "".join(lines)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.slow
def test_two_clones_set_up_one_after_the_other_each_run_their_own_gradkit(tmp_path, monkeypatch):
    data = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    env = dict(os.environ)
    # Same folder name in two places: the kernel names still differ (checksum of the path).
    first, second = _clone(tmp_path / "a" / "gradkit"), _clone(tmp_path / "b" / "gradkit")
    _make_kernel(first, env)
    _make_kernel(second, env)
    _make_kernel(first, env)  # setting the first clone up again changes nothing for the second

    listed = subprocess.run([sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
                            env=env, capture_output=True, text=True, check=True)
    specs = {name: s for name, s in json.loads(listed.stdout)["kernelspecs"].items()
             if Path(s["resource_dir"]).parent.parent == data}
    assert len(specs) == 2, f"one user-level kernel per clone, got {sorted(specs)}"
    by_clone = {}
    for name, s in specs.items():
        spec = s["spec"]
        clone = Path(spec["env"]["PYTHONPATH"])
        by_clone[clone] = name
        assert name.startswith("gradkit-gradkit-") and name != "gradkit"
        assert spec["argv"][0] == str(clone / ".venv" / "bin" / "python"), "its own venv"
        assert spec["display_name"] == f"Python (gradkit: {clone})", "the clone, in the name"
    assert set(by_clone) == {first, second}

    for clone, name in by_clone.items():
        seen = _run_in_kernel(name, "import gradkit, gradkit.core.paths as p\n"
                                    "print(gradkit.__file__)\nprint(p.figures_dir(create=False))")
        module, figures = seen.split()
        assert Path(module) == clone / "gradkit" / "__init__.py", f"{name} ran {module}"
        assert Path(figures) == clone / "figures"


def test_a_shared_kernel_left_by_an_older_set_up_is_named_in_a_warning(tmp_path, monkeypatch):
    data = tmp_path / "jupyter-data"
    legacy = data / "kernels" / "gradkit"
    legacy.mkdir(parents=True)
    (legacy / "kernel.json").write_text(json.dumps(
        {"argv": ["/elsewhere/.venv/bin/python", "-m", "ipykernel_launcher", "-f", "{x}"],
         "display_name": "Python (gradkit)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    done = _make_kernel(_clone(tmp_path / "c" / "clone-c"), dict(os.environ))
    assert "warning" in done.stderr and str(legacy) in done.stderr
    assert "/elsewhere/.venv/bin/python" in done.stderr
    assert (legacy / "kernel.json").exists(), "the user's files are never removed unasked"
    assert (data / "kernels").joinpath(
        next(p.name for p in (data / "kernels").iterdir() if p.name.startswith("gradkit-clone-c-"))
    ).is_dir()
