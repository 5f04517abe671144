"""``python -m gradkit.report --jobs N``: the notebooks side by side, each in its own process,
and a signal stops every one of them."""

import argparse
import signal
import time

import pytest

from gradkit.report import runner
from gradkit.report.jobs import forwarded_arguments
from tests.report.test_report_interrupts import (  # noqa: F401
    OLD,
    _gone,
    _index,
    _start_report,
    project,
)


def test_the_options_reach_each_notebooks_process_unchanged():
    args = argparse.Namespace(data="/d", material="m", freq=700, run=None, name="n",
                              param=["EPOCHS=4", "SEEDS=[1, 2]"], smoke=True)
    assert forwarded_arguments(args) == ["--data", "/d", "--material", "m", "--freq", "700",
                                         "--name", "n", "--param", "EPOCHS=4", "--param",
                                         "SEEDS=[1, 2]", "--smoke"]


def test_jobs_split_the_selected_notebooks_and_one_job_runs_here(project, monkeypatch):  # noqa: F811
    monkeypatch.setenv("GRADKIT_ROOT", str(project))
    monkeypatch.delenv("GRADKIT_REPORT_JOB", raising=False)
    called = []
    monkeypatch.setattr(runner, "run_jobs", lambda names, arguments, jobs:
                        called.append((names, arguments, jobs)) or 0)
    assert runner.main(["--jobs", "2", "--param", "X=1", "01", "03"]) == 0
    assert called == [(["01_quick", "03_after"], ["--param", "X=1"], 2)]
    monkeypatch.setenv("GRADKIT_REPORT_JOB", "1")  # inside a job: never split again
    monkeypatch.setattr(runner, "build_reports", lambda *a, **k: [])
    assert runner.main(["--jobs", "2", "01", "03"]) == 0 and len(called) == 1
    assert runner.main(["--jobs", "0"]) == 2


@pytest.mark.slow
def test_two_notebooks_run_at_once_and_a_signal_stops_both(project):  # noqa: F811
    report = _start_report(project, "--jobs", "2")
    try:
        pid_file, deadline = project / "kernel.pid", time.monotonic() + 240
        while not (pid_file.is_file() and pid_file.read_text()
                   and _index(project)["03_after"]["report_date"] != OLD):
            assert report.poll() is None and time.monotonic() < deadline, report.communicate()
            time.sleep(0.2)
        kernel = int(pid_file.read_text())  # 02 still sleeps: 03 ran and ended beside it
        report.send_signal(signal.SIGTERM)
        out, _ = report.communicate(timeout=60)
    finally:
        if report.poll() is None:
            report.kill()
    assert report.returncode == 143, out
    assert "interrupted by SIGTERM during 02_sleeps" in out, out
    assert _gone(kernel), "no kernel process left behind"
    index = _index(project)
    assert index["01_quick"]["ok"] and index["03_after"]["ok"] and not index["03_after"]["stale"]
    assert not index["02_sleeps"]["ok"] and index["02_sleeps"]["stale"]
