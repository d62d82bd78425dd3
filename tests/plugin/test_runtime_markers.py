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
    # a marker the test's body adds comes after the markers were read: a warning says it checked nothing
    result.stdout.fnmatch_lines(["*migsafe: @pytest.mark.no_n_plus_one was added inside the body of "
                                 "test_dynamic.py::test_written_budget*checked nothing*"])


def test_a_marker_added_inside_the_test_body_is_told_to_have_checked_nothing(pytester: pytest.Pytester) -> None:
    """pool(max_created=0), pool(max_created=-5) and max_queries("five") applied in the body
    passed with no word: README said such a marker was honoured."""
    pytester.makepyfile(test_late="""
        import pytest

        def test_late(request):
            request.applymarker(pytest.mark.max_queries("five"))
            request.applymarker(pytest.mark.migsafe_pool(max_created=-5))
            request.applymarker(pytest.mark.skipif(False, reason="not ours"))
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error")
    result.assert_outcomes(passed=1)  # (never a failure, even under -W error)
    result.stdout.fnmatch_lines(["*@pytest.mark.max_queries, @pytest.mark.migsafe_pool was added inside the body*"])
    assert "mark.skipif" not in result.stdout.str()
