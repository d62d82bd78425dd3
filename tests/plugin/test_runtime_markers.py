"""Markers added while a test runs (``request.applymarker`` in a fixture) are honoured and
checked like written ones: they were ignored (markers were read once, at collection), so a
budget a fixture applied never failed, and a bad one raised no error."""

from __future__ import annotations

import pytest

SUITE = """
import pytest
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")


@pytest.fixture
def no_queries(request):
    request.applymarker(pytest.mark.max_queries(0))


@pytest.fixture
def bad_budget(request):
    request.applymarker(pytest.mark.max_queries("x"))


@pytest.fixture
def bad_pool(request):
    request.applymarker(pytest.mark.pool(max_created="q"))


def test_budget_from_a_fixture(no_queries):
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def test_budget_from_a_fixture_kept(no_queries):
    pass


def test_bad_budget_from_a_fixture(bad_budget):
    pass


def test_bad_pool_limit_from_a_fixture(bad_pool):
    pass


@pytest.mark.max_queries(1)
def test_written_budget(request):
    request.applymarker(pytest.mark.no_n_plus_one)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
"""


def test_markers_a_fixture_adds_are_honoured_and_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_dynamic=SUITE)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines([
        "max_queries: expected at most 0 queries, 1 ran",
        "test_dynamic.py::test_bad_budget_from_a_fixture: @pytest.mark.max_queries: *got 'x' "
        "(a marker added while the test ran)",
        "test_dynamic.py::test_bad_pool_limit_from_a_fixture: @pytest.mark.pool: *got 'q'* "
        "(a marker added while the test ran)",
    ], consecutive=False)
    assert "During handling" not in result.stdout.str()
