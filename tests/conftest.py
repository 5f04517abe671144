"""Shared test hygiene, and the smoke reports every test of one run shares."""

import json
import os
import uuid
from dataclasses import asdict

import pytest

# Under pytest-xdist each worker has a core of its own: one intra-op thread per worker (and per
# kernel or process it starts, which inherit this). OpenMP threads that outnumber the cores spin
# while they wait, which cost the default tier several times the CPU time of the tests
# themselves (benchmarks/README.md). Set before any test module imports torch.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _no_condition_from_an_earlier_test():
    """``gradkit.report.parameters.use_condition`` sets ``GRADKIT_CONDITION`` for the rest of a
    session, as a notebook run by hand wants; every test starts and ends without it."""
    os.environ.pop("GRADKIT_CONDITION", None)
    yield
    os.environ.pop("GRADKIT_CONDITION", None)


def pytest_collection_modifyitems(items):
    """The smoke notebooks first, the browser tests last: with ``--maxschedchunk`` small (the
    Makefile), xdist hands the notebooks to both workers at the start, and the browser tests
    find their reports built instead of waiting for them."""
    def rank(item) -> int:
        if item.nodeid.startswith("tests/notebooks/test_smoke_notebooks.py::test_notebook_runs"):
            return 0
        return 2 if item.get_closest_marker("browser") else 1

    items.sort(key=rank)  # stable: the collection order within each rank


# One id per test run, shared by the xdist workers (the controller's, which they inherit).
os.environ.setdefault("GRADKIT_TEST_RUN", os.environ.get("PYTEST_XDIST_TESTRUNUID")
                      or uuid.uuid4().hex)


@pytest.fixture(scope="session")
def smoke_report():
    """``ensure(name) -> NotebookResult``: notebook ``name`` executed with the smoke parameter
    set (:mod:`gradkit.report.smoke`) in *this* test run, exactly once across the xdist workers.

    The notebook tests and the browser tests both need the smoke reports; whichever asks first
    builds that notebook's report under a per-notebook file lock, the others wait and reuse its
    result (xdist's ``xdist_group`` is not honoured under pytest 9.2, so no test order is
    relied on). A report left by an earlier run is always rebuilt: CI executes every notebook.
    """
    from filelock import FileLock

    from gradkit.core.io import atomic_write_text
    from gradkit.core.paths import project_root
    from gradkit.report import build_reports
    from gradkit.report.index import NotebookResult
    from gradkit.report.smoke import SMOKE_OUTPUT

    folder = project_root() / SMOKE_OUTPUT
    run = os.environ["GRADKIT_TEST_RUN"]

    def ensure(name: str) -> NotebookResult:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = folder / f".tested-{name}.json"
        with FileLock(str(folder / f".tested-{name}.lock")):
            if stamp.is_file():
                record = json.loads(stamp.read_text(encoding="utf-8"))
                if record.pop("run") == run:
                    return NotebookResult(**record)
            results = build_reports([name], smoke=True)
            assert [r.name for r in results] == [name], [r.name for r in results]
            atomic_write_text(stamp, json.dumps({"run": run, **asdict(results[0])}))
            return results[0]

    return ensure
