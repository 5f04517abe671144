"""``reports/index.json`` is read, merged and rewritten as one step under a file lock: reports
run at once on different notebooks lose no entry."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gradkit.core.paths import project_root
from gradkit.report.index import NotebookResult, previous_results, update_index

ROUNDS = 40
MERGER = """
import sys, time
from pathlib import Path
from gradkit.report.index import NotebookResult, update_index
folder, tag, rounds, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.01)
for i in range(rounds):
    update_index(folder, [NotebookResult(f"{tag}_{i:03d}", tag, 1.0, ok=True)])
"""


def _names(folder: Path) -> set[str]:
    return {r.name for r in previous_results(folder)}


@pytest.mark.slow
def test_two_processes_merging_at_once_lose_no_entry(tmp_path):
    go = tmp_path / "go"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(project_root()), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", MERGER, str(tmp_path), tag, str(ROUNDS),
                               str(go)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for tag in ("a", "b")]
    try:
        for proc in procs:  # both imported and waiting: their merges overlap
            assert proc.stdout.readline().strip() == "ready", proc.stdout.read()
        go.touch()
        outs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outs
    expected = {f"{tag}_{i:03d}" for tag in ("a", "b") for i in range(ROUNDS)}
    assert _names(tmp_path) == expected, f"lost: {sorted(expected - _names(tmp_path))}"


def test_threads_merging_at_once_lose_no_entry(tmp_path):
    """The same, fast: each thread takes the lock through its own file descriptor."""
    errors = []

    def merge(tag: str) -> None:
        try:
            for i in range(25):
                update_index(tmp_path, [NotebookResult(f"{tag}_{i:03d}", tag, 1.0, ok=True)])
        except Exception as err:  # handed to the test
            errors.append(err)

    threads = [threading.Thread(target=merge, args=(tag,)) for tag in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert _names(tmp_path) == {f"{tag}_{i:03d}" for tag in "abc" for i in range(25)}


def test_update_index_keeps_a_failed_notebooks_report_stale_and_orders_by_names(tmp_path):
    (tmp_path / "02_b.html").write_text("earlier report")
    update_index(tmp_path, [NotebookResult("02_b", "B", 1.0, ok=True, headlines={"x": "1"},
                                           report_date="2026-01-01 00:00")])
    time.sleep(0.01)
    entries = update_index(tmp_path, [NotebookResult("02_b", "02_b", 2.0, ok=False, error="boom"),
                                      NotebookResult("01_a", "A", 1.0, ok=True),
                                      NotebookResult("09_gone", "G", 1.0, ok=True)],
                           names=["01_a", "02_b"])
    assert [e.name for e in entries] == ["01_a", "02_b"], "notebooks no longer there are dropped"
    failed = entries[1]
    assert failed.stale and failed.report_date == "2026-01-01 00:00"
    assert failed.headlines == {"x": "1"} and failed.title == "B" and failed.error == "boom"
    assert [r.name for r in previous_results(tmp_path)] == ["01_a", "02_b"]
