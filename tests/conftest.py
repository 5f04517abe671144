"""Shared test hygiene."""

import os

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
