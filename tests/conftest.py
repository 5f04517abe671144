"""Shared test hygiene."""

import os

import pytest


@pytest.fixture(autouse=True)
def _no_condition_from_an_earlier_test():
    """``gradkit.report.parameters.use_condition`` sets ``GRADKIT_CONDITION`` for the rest of a
    session, as a notebook run by hand wants; every test starts and ends without it."""
    os.environ.pop("GRADKIT_CONDITION", None)
    yield
    os.environ.pop("GRADKIT_CONDITION", None)
