"""Shared test hygiene."""

import pytest


@pytest.fixture(autouse=True)
def _no_condition_from_an_earlier_test(monkeypatch):
    """``gradkit.report.parameters.use_condition`` sets ``GRADKIT_CONDITION`` for the rest of a
    session, as a notebook run by hand wants; every test starts without it."""
    monkeypatch.delenv("GRADKIT_CONDITION", raising=False)
