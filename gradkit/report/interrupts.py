"""Ctrl-C and ``kill`` stop a report at once, its kernel with it.

:class:`StopOnSignal` turns SIGINT and SIGTERM into :class:`Interrupted` (a ``BaseException``,
like ``KeyboardInterrupt``: no ``except Exception`` of a notebook step swallows it) in the main
thread. Inside :meth:`StopOnSignal.deferred` a signal is held until the block ends, so that a
finished notebook's report and its index entry are written together.

:func:`execute_stoppably` runs a notebook with nbclient in a worker thread: nbclient's own signal
handlers, which only work in the main thread, then stay off (they shut the kernel down but let
the run go on, to fail as an ``AssertionError`` with no word of the interrupt). On a signal the
main thread cancels the execution, which kills the kernel's process group (nbclient's
``shutdown_kernel="immediate"``), and kills it itself if it is still alive after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator

__all__ = ["SIGNALS", "Interrupted", "StopOnSignal", "execute_stoppably"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: How long the execution thread may take to shut the kernel down before it is killed here.
CLEANUP_S = 15.0


class Interrupted(BaseException):  # noqa: N818 (named like KeyboardInterrupt, its kin)
    """The report was stopped by ``signum``; the exit status is ``128 + signum`` (130, 143).

    >>> try:                                                          # doctest: +SKIP
    ...     build_reports()
    ... except Interrupted as stopped:
    ...     print(stopped.notebook, stopped.exit_status)              # 02_noise_scale 130
    """

    def __init__(self, signum: int, notebook: str = ""):
        self.signum, self.notebook = signum, notebook
        super().__init__(f"interrupted by {self.signal_name}"
                         + (f" during {notebook}" if notebook else ""))

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopOnSignal:
    """Within ``with StopOnSignal() as stop:``, SIGINT/SIGTERM raise :class:`Interrupted` in
    the main thread (elsewhere, or off the main thread, nothing changes); the previous
    handlers are restored on exit. ``stop.received`` is the first signal seen (``None``)."""

    def __init__(self):
        self.received: int | None = None
        self._deferring = 0
        self._pending = False  # a signal held by deferred(), to raise when it ends
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # the stop is under way already: finish it
            return
        self.received = signum
        if self._deferring:
            self._pending = True
        else:
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold signals until the block ends, then raise :class:`Interrupted` for one that came
        meanwhile (unless the block raises already)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if not self._deferring and self._pending:
            self._pending = False
            raise Interrupted(self.received)


def _kill_kernel(client) -> None:
    """SIGKILL the kernel's process group if the kernel is still alive (last resort)."""
    km = getattr(client, "km", None)
    provisioner = getattr(km, "provisioner", None)
    process = getattr(provisioner, "process", None)
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(OSError):
        os.killpg(getattr(provisioner, "pgid", None) or process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        process.wait(timeout=CLEANUP_S)


def execute_stoppably(client, stop: StopOnSignal) -> None:
    """``client.execute()`` (an nbclient ``NotebookClient``) in a worker thread, waiting in the
    main thread where ``stop`` turns a signal into :class:`Interrupted`. On that interrupt the
    execution is cancelled and the kernel killed before :class:`Interrupted` propagates; any
    other failure of the execution is raised as nbclient raised it."""
    started, finished = threading.Event(), threading.Event()
    state: dict = {}

    def work() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            state["loop"] = loop
            state["task"] = loop.create_task(client.async_execute())
            started.set()
            loop.run_until_complete(state["task"])
        except BaseException as err:  # handed to the main thread
            state["error"] = err
        finally:
            started.set()
            with contextlib.suppress(BaseException):  # nbclient's pollers, left by a cancel
                left = asyncio.all_tasks(loop)
                for task in left:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            finished.set()

    worker = threading.Thread(target=work, name="gradkit-report-notebook", daemon=True)
    try:
        worker.start()
        # Event.wait, not Thread.join: a join that a signal interrupts may mark the thread as
        # stopped while it still runs (CPython 3.11's _wait_for_tstate_lock).
        while not finished.wait(0.5):
            pass  # interruptible: the handler raises Interrupted here
    except Interrupted:
        with stop.deferred():
            client.shutdown_kernel = "immediate"  # SIGKILL to the kernel's process group
            started.wait(CLEANUP_S)
            loop, task = state.get("loop"), state.get("task")
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to cancel
                    loop.call_soon_threadsafe(task.cancel)
            finished.wait(CLEANUP_S)
            _kill_kernel(client)
        raise
    if "error" in state:
        raise state["error"]
