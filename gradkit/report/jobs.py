"""``--jobs N``: the notebooks of one ``make report`` as separate processes, at most ``N`` at once.

Each notebook's kernel trains single-threaded (:func:`gradkit.training.loop.cpu_threads`, for
results that do not depend on the machine), so one notebook at a time leaves all cores but one
idle. With ``--jobs 2`` (``make report`` passes the machine's core count) the notebooks are
taken in their order by whichever slot is free: each one a ``python -m gradkit.report ... NAME``
of its own, with the same arguments, so every notebook's numbers are those of a run alone.
What the notebooks share stays consistent: a training run is trained once under its folder's
lock (:func:`gradkit.training.store.folder_lock`; a second notebook that asks for it waits and
reuses it), and each notebook's index entry is merged under the reports folder's lock
(:func:`gradkit.report.index.index_lock`).

Ctrl-C or SIGTERM: the signal is passed to every running notebook process (each kills its
kernel, records its notebook as interrupted and exits), no further notebook starts, and the
command exits with 130 (143 for SIGTERM), naming what was stopped and what did not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from gradkit.report.interrupts import Interrupted, StopOnSignal

__all__ = ["JOB_ENV", "default_jobs", "forwarded_arguments", "run_jobs"]

#: Set in a notebook's own process: it runs what it is given, never splits again.
JOB_ENV = "GRADKIT_REPORT_JOB"


def default_jobs() -> int:
    """The cores this process may use (``make report``'s ``--jobs``)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def forwarded_arguments(args) -> list[str]:
    """The options of parsed ``gradkit.report`` arguments, as a notebook's process gets them."""
    out = []
    for flag in ("data", "material", "freq", "run", "name"):
        value = getattr(args, flag, None)
        if value is not None:
            out += [f"--{flag}", str(value)]
    for p in args.param:
        out += ["--param", p]
    return out + (["--smoke"] if args.smoke else [])


def run_jobs(names: list[str], arguments: list[str], jobs: int) -> int:
    """Run each notebook of ``names`` as ``python -m gradkit.report *arguments NAME``, in order,
    at most ``jobs`` at once; the worst exit status (130 / 143 after a signal)."""
    pending, running, status = list(names), {}, 0
    print(f"[report] {len(names)} notebooks, {jobs} at a time: {', '.join(names)}", flush=True)
    env = {**os.environ, JOB_ENV: "1"}
    with StopOnSignal():
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    name = pending.pop(0)
                    running[name] = subprocess.Popen(
                        [sys.executable, "-m", "gradkit.report", *arguments, name], env=env)
                time.sleep(0.2)  # a signal arrives here
                for name, process in list(running.items()):
                    if process.poll() is not None:
                        status = max(status, process.returncode)
                        del running[name]
        except Interrupted as stopped:
            for process in running.values():
                process.send_signal(stopped.signum)
            for process in running.values():
                process.wait()
            print(f"[report] interrupted by {stopped.signal_name}: stopped "
                  f"{', '.join(running) or 'nothing'}; no further notebook runs"
                  + (f" (not run: {', '.join(pending)})" if pending else ""), flush=True)
            return stopped.exit_status
    return status
