"""Ctrl-C, SIGTERM and SIGKILL to a real ``python -m gradkit.report`` process.

The project is a temporary ``GRADKIT_ROOT`` with three tiny notebooks: ``01_quick`` (a headline
number), ``02_sleeps`` (writes its kernel's pid to a file, then sleeps) and ``03_after`` (would
leave a mark file if it ever started). Each signal is sent while ``02_sleeps`` runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from gradkit.core.paths import project_root
from gradkit.report.index import NotebookResult
from gradkit.report.interrupts import Interrupted, StopOnSignal, execute_stoppably

psutil = pytest.importorskip("psutil")
OLD = "2026-01-01 00:00"


def _notebook(path: Path, *sources: str) -> None:
    nb = new_notebook(cells=[new_markdown_cell(f"# {path.stem}"),
                             *[new_code_cell(s) for s in sources]])
    nb.metadata["kernelspec"] = {"name": "gradkit", "display_name": "gradkit", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks/01_quick.ipynb",
              "from gradkit.report.headlines import show_headlines\n"
              "show_headlines(value='fresh')")
    _notebook(tmp_path / "notebooks/02_sleeps.ipynb",
              "import os, pathlib, time\n"
              "pathlib.Path(os.environ['KERNEL_PID_FILE']).write_text(str(os.getpid()))\n"
              "time.sleep(600)")
    _notebook(tmp_path / "notebooks/03_after.ipynb",
              "import os, pathlib\npathlib.Path(os.environ['STARTED_FILE']).write_text('03')")
    # The previous run: 01 failed (a stale report kept), 02 and 03 went well.
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("01_quick", "02_sleeps", "03_after"):
        (reports / f"{name}.html").write_text(f"previous report of {name}")
    before = [NotebookResult("01_quick", "01_quick", 1.0, ok=False, error="old failure",
                             report_date=OLD, stale=True),
              NotebookResult("02_sleeps", "02_sleeps", 2.0, ok=True, report_date=OLD,
                             headlines={"slept": "yes"}),
              NotebookResult("03_after", "03_after", 3.0, ok=True, report_date=OLD)]
    (reports / "index.json").write_text(json.dumps([dataclasses.asdict(r) for r in before]))
    return tmp_path


def _index(root: Path) -> dict[str, dict]:
    return {e["name"]: e for e in json.loads((root / "reports/index.json").read_text())}


def _start_report(root: Path, *only: str) -> subprocess.Popen:
    env = {**os.environ, "GRADKIT_ROOT": str(root), "KERNEL_PID_FILE": str(root / "kernel.pid"),
           "STARTED_FILE": str(root / "03_started"),
           "PYTHONPATH": os.pathsep.join([str(project_root()), os.environ.get("PYTHONPATH", "")])}
    env.pop("GRADKIT_CONDITION", None)
    return subprocess.Popen([sys.executable, "-m", "gradkit.report", *only], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kernel_of_02(root: Path, report: subprocess.Popen, timeout: float = 240) -> int:
    """Wait until 02_sleeps' kernel runs its sleeping cell; return the kernel's pid."""
    pid_file = root / "kernel.pid"
    deadline = time.monotonic() + timeout
    while not (pid_file.is_file() and pid_file.read_text()):
        if report.poll() is not None or time.monotonic() > deadline:
            report.kill()
            pytest.fail(f"02_sleeps never started its cell:\n{report.communicate()[0]}")
        time.sleep(0.2)
    kernel = int(pid_file.read_text())
    assert psutil.Process(kernel).ppid() == report.pid, "the kernel is the runner's child"
    return kernel


def _gone(pid: int, timeout: float = 20) -> bool:
    """No process ``pid`` (a zombie counts as gone) and none left in its process group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in psutil.process_iter(["pid", "status"])
                 if p.info["status"] != psutil.STATUS_ZOMBIE and _pgid(p.info["pid"]) == pid]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "only", "status"), [
    (signal.SIGINT, (), 130),
    (signal.SIGTERM, ("02", "03"), 143),
], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_report_at_once_and_kills_its_kernel(project, signum, only, status):
    report = _start_report(project, *only)
    try:
        kernel = _kernel_of_02(project, report)
        if not only:  # 01 finished: its entry is on disk already, as a kill would leave it
            first = _index(project)["01_quick"]
            assert first["ok"] and not first["stale"] and first["headlines"] == {"value": "fresh"}
        report.send_signal(signum)
        out, _ = report.communicate(timeout=60)
    finally:
        if report.poll() is None:
            report.kill()
    name = signal.Signals(signum).name
    assert report.returncode == status, out
    assert f"interrupted by {name} during 02_sleeps" in out, out
    assert "not run: 03_after" in out and "03_after: executing" not in out, out
    assert not (project / "03_started").exists(), "no further notebook started"
    assert _gone(kernel), "no kernel process left behind"
    index = _index(project)
    stopped = index["02_sleeps"]
    assert not stopped["ok"] and stopped["stale"] and f"interrupted by {name}" in stopped["error"]
    assert stopped["report_date"] == OLD and stopped["headlines"] == {"slept": "yes"}
    assert (project / "reports/02_sleeps.html").read_text() == "previous report of 02_sleeps"
    assert index["03_after"]["ok"] and index["03_after"]["report_date"] == OLD, "untouched"
    assert "interrupted by" in (project / "reports/index.html").read_text()


@pytest.mark.slow
def test_after_a_kill_the_index_tells_what_is_on_disk(project):
    report = _start_report(project, "01", "02")
    kernel = None
    try:
        kernel = _kernel_of_02(project, report)
        report.send_signal(signal.SIGKILL)
        report.wait(timeout=30)
    finally:
        if report.poll() is None:
            report.kill()
        if kernel is not None and not _gone(kernel, timeout=5):  # orphaned by the kill
            os.killpg(kernel, signal.SIGKILL)
    index = _index(project)
    assert index["01_quick"]["ok"] and not index["01_quick"]["stale"], index["01_quick"]
    assert index["01_quick"]["report_date"] != OLD
    assert "previous report" not in (project / "reports/01_quick.html").read_text()
    assert index["02_sleeps"]["ok"] and index["02_sleeps"]["report_date"] == OLD


# --- the same logic, fast: no kernel -------------------------------------------------------
def _signal_soon(signum: int, delay: float = 0.3) -> None:
    threading.Timer(delay, os.kill, (os.getpid(), signum)).start()


def test_stop_on_signal_raises_holds_in_deferred_blocks_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop, pytest.raises(Interrupted) as caught:
        with stop.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            held = True  # reached: the signal waits for the block's end
        pytest.fail("the held signal is raised when the block ends")
    assert held and caught.value.exit_status == 143 and caught.value.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


class _SleepingClient:
    """Stands in for nbclient's NotebookClient: a cell that sleeps, noting its cancellation."""

    def __init__(self, fail: Exception | None = None):
        self.shutdown_kernel, self.fail, self.cancelled = "graceful", fail, False

    async def async_execute(self):
        import asyncio

        if self.fail:
            raise self.fail
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def test_execute_stoppably_cancels_the_execution_on_a_signal():
    client = _SleepingClient()
    start = time.monotonic()
    with StopOnSignal() as stop, pytest.raises(Interrupted) as caught:
        _signal_soon(signal.SIGINT)
        execute_stoppably(client, stop)
    assert caught.value.exit_status == 130 and time.monotonic() - start < 10
    assert client.cancelled and client.shutdown_kernel == "immediate", "kernel killed at once"


def test_execute_stoppably_raises_what_the_execution_raised():
    with StopOnSignal() as stop, pytest.raises(ValueError, match="cell failed"):
        execute_stoppably(_SleepingClient(fail=ValueError("cell failed")), stop)


def test_the_runner_records_an_interrupt_and_starts_nothing_after_it(project, monkeypatch,
                                                                     capsys):
    """The runner's side, fast: ``execute`` stands in for a kernel (01 runs, 02 is stopped)."""
    from gradkit.report import runner

    monkeypatch.setenv("GRADKIT_ROOT", str(project))
    monkeypatch.delenv("GRADKIT_CONDITION", raising=False)
    started = []

    def execute(path, timeout=900, stop=None):
        started.append(path.stem)
        if path.stem == "02_sleeps":
            raise Interrupted(signal.SIGINT)
        return nbformat.read(path, as_version=4)

    monkeypatch.setattr(runner, "execute", execute)
    assert runner.main([]) == 130
    out = capsys.readouterr().out
    assert started == ["01_quick", "02_sleeps"], "no further notebook started"
    assert "interrupted by SIGINT during 02_sleeps" in out and "not run: 03_after" in out
    index = _index(project)
    assert index["01_quick"]["ok"] and not index["01_quick"]["stale"]
    stopped = index["02_sleeps"]
    assert not stopped["ok"] and stopped["stale"] and stopped["report_date"] == OLD
    assert "interrupted by SIGINT" in stopped["error"] and stopped["headlines"] == {"slept": "yes"}
    assert index["03_after"]["ok"] and index["03_after"]["report_date"] == OLD
