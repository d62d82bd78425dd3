"""Every migsafe marker on a test, its class or its module is checked at collection: a bad
argument is a usage error naming the test and the marker, before any test runs."""

from __future__ import annotations

import pytest

OUTER_BAD = {
    "pool": ("pool(max_created=-1)", "pool(max_created=3)"),
    "min_cache_hit_rate": ("min_cache_hit_rate(5)", "min_cache_hit_rate(0.5)"),
    "no_seq_scan": ("no_seq_scan(bogus=1)", "no_seq_scan()"),
    "max_queries": ("max_queries('x')", "max_queries(3)"),
}


@pytest.mark.parametrize("name", list(OUTER_BAD))
def test_a_bad_marker_on_the_class_is_an_error_even_under_a_good_one_on_the_method(
        pytester: pytest.Pytester, name: str) -> None:
    outer, inner = OUTER_BAD[name]
    pytester.makepyfile(test_marks=f"""
        import pytest

        @pytest.mark.{outer}
        class TestMarked:
            @pytest.mark.{inner}
            def test_inner(self):
                pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: test_marks.py::TestMarked::test_inner: @pytest.mark.{name}: *"])
    result.stdout.no_fnmatch_line("*passed*")


@pytest.mark.parametrize("marker", [
    "max_queries(100, match=b'SELECT')",
    "max_queries(100, ignore=re.compile(b'SELECT'))",
    "allow_n_plus_one(re.compile(b'SELECT'), 3)",
])
def test_a_bytes_pattern_is_an_error_at_collection(pytester: pytest.Pytester, marker: str) -> None:
    """The SQL is text: a bytes pattern passed the check and raised TypeError in the test."""
    pytester.makepyfile(test_marks=f"""
        import re
        import pytest

        @pytest.mark.{marker}
        def test_marked():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: test_marks.py::test_marked: @pytest.mark.*: *SQL text*"])


def test_a_filter_that_matched_nothing_never_fails_a_test_under_warnings_as_errors(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_filter="""
        from sqlalchemy import create_engine, text

        def test_filtered(assert_num_queries):
            engine = create_engine("sqlite://")
            with engine.connect() as conn, assert_num_queries(0, match="zzz"):
                conn.execute(text("select 1"))
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*FilterMatchedNothingWarning: count_queries(match='zzz') matched none*"])


def test_a_budget_filter_that_matched_nothing_is_a_warning_naming_the_test(pytester: pytest.Pytester) -> None:
    """@pytest.mark.max_queries(0, using="shpo.db") (a misspelt database) holds whatever the
    test runs: it passed without a word; now a warning in the summary (never failing the test,
    even under -W error) names the test and the filter, as count_queries() does. A filter
    that matched something, or a test that ran nothing, says nothing."""
    pytester.makepyfile(test_filter="""
        import pytest
        from sqlalchemy import create_engine, text

        @pytest.mark.max_queries(0, using="shpo.db")
        def test_misspelt(tmp_path):
            engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
            with engine.connect() as conn:
                conn.execute(text("select 1"))
                conn.execute(text("select 2"))
            engine.dispose()

        @pytest.mark.max_queries(5, using="shop.db")
        def test_right(tmp_path):
            engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
            with engine.connect() as conn:
                conn.execute(text("select 1"))
            engine.dispose()

        @pytest.mark.max_queries(0, match="zzz")
        def test_nothing_ran():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines(["*FilterMatchedNothingWarning: migsafe: @pytest.mark.max_queries(0, using='shpo.db') "
                                 "of test_filter.py::test_misspelt matched none of the 2 statements the test ran*"])


def test_an_empty_database_name_in_a_budget_is_an_error_at_collection(pytester: pytest.Pytester) -> None:
    """using="" named no database and filtered nothing (every statement counted); no_seq_scan
    already refused it."""
    pytester.makepyfile(test_marks="""
        import pytest

        @pytest.mark.max_queries(3, using="")
        def test_marked():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: test_marks.py::test_marked: @pytest.mark.max_queries: "
                                 "using= expects a database name, got ''*"])


PROJECT_OWN = {  # a project's own marker named like one of migsafe's, with arguments of its own
    "pool": ('pool(name): tests that need the worker pool named NAME', 'pool("threads")'),
    "max_queries": ("max_queries(kind): the project's query-plan fixture", 'max_queries("slow")'),
    "min_cache_hit_rate": ("min_cache_hit_rate(service): the project's cache tests", 'min_cache_hit_rate("users")'),
    "no_seq_scan": ("no_seq_scan(table): the project's own", 'no_seq_scan("t")'),
    "allow_n_plus_one": ("allow_n_plus_one(ticket): the project's own", 'allow_n_plus_one("JIRA-1")'),
}


@pytest.mark.parametrize("name", list(PROJECT_OWN))
def test_a_marker_the_project_registers_for_itself_is_left_alone(pytester: pytest.Pytester, name: str) -> None:
    """A project that registers a marker of its own named like one of migsafe's (``pool`` for
    its worker pools) runs as without the plugin, with a warning naming ``migsafe_<name>``
    (the plugin once stopped the run at collection: ``pool() takes 0 positional arguments``);
    without the project's registration the same marker is still a usage error."""
    line, use = PROJECT_OWN[name]
    pytester.makeini(f"[pytest]\nmarkers =\n    {line}\n")
    pytester.makepyfile(test_own=f"""
        import pytest

        @pytest.mark.{use}
        def test_marked():
            pass

        @pytest.mark.{use}
        def test_marked_too():
            pass

        def test_other():
            pass
    """)
    for plugin in ("-p", "no:migsafe"), ():
        result = pytester.runpytest_subprocess("-p", "no:randomly", "--strict-markers", *plugin)
        result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([f"*migsafe: @pytest.mark.{name} on test_own.py::test_marked is taken for the "
                                 f"project's own marker*write @pytest.mark.migsafe_{name}(...)*"])
    assert result.stdout.str().count(f"migsafe: @pytest.mark.{name} on") == 1  # once per marker name
    (pytester.path / "tox.ini").unlink()
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: test_own.py::test_marked*: @pytest.mark.{name}: *"])


def test_migsafe_markers_work_under_their_migsafe_names(pytester: pytest.Pytester) -> None:
    """``@pytest.mark.migsafe_<name>`` is migsafe's marker ``<name>`` (registered for
    ``--strict-markers``), also beside a project's own ``pool`` and ``max_queries``: the
    budget and the pool limit fail their tests; a bad argument under that name is an error."""
    pytester.makeini("[pytest]\nmarkers =\n    pool(name): the project's worker pools\n"
                     "    max_queries(kind): the project's own\n")
    pytester.makepyfile(test_alias="""
        import pytest
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import QueuePool

        ENGINE = create_engine("sqlite://", poolclass=QueuePool)

        @pytest.mark.pool("threads")
        @pytest.mark.migsafe_max_queries(1)
        def test_over_budget():
            with ENGINE.connect() as conn:
                conn.execute(text("select 1"))
                conn.execute(text("select 2"))

        @pytest.mark.max_queries("slow")
        @pytest.mark.migsafe_pool(max_checked_out=0)
        def test_over_pool_limit():
            with ENGINE.connect() as conn:
                conn.execute(text("select 1"))

        @pytest.mark.migsafe_max_queries(2)
        def test_within_budget():
            with ENGINE.connect() as conn:
                conn.execute(text("select 1"))
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--strict-markers", "-rf")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["max_queries: expected at most 1 query, 2 ran", "pool limits exceeded: max_checked_out=0*",
                                 "FAILED test_alias.py::test_over_budget - *",
                                 "FAILED test_alias.py::test_over_pool_limit - *"])
    pytester.makepyfile(test_alias="""
        import pytest

        @pytest.mark.migsafe_pool("threads")
        def test_bad():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: test_alias.py::test_bad: @pytest.mark.migsafe_pool: *"])


# an argument whose reading raises: its __repr__ (a check's message shows the value), its
# iteration (a list of tables), its comparison
RAISING_ARGUMENTS = {
    "max_queries": "max_queries(Raising())",
    "pool": "pool(leaks=Raising())",
    "min_cache_hit_rate": "min_cache_hit_rate(Raising())",
    "no_seq_scan": "no_seq_scan(tables=Raising())",
    "allow_n_plus_one": "allow_n_plus_one(Raising(), 3)",
}


@pytest.mark.parametrize("name", list(RAISING_ARGUMENTS))
def test_an_argument_that_raises_as_it_is_read_is_a_usage_error_not_an_internal_error(
        pytester: pytest.Pytester, name: str) -> None:
    pytester.makepyfile(test_marks=f"""
        import pytest

        class Raising:
            def __repr__(self):
                raise RuntimeError("repr boom")
            __str__ = __repr__
            def __iter__(self):
                raise RuntimeError("iteration boom")
            def __eq__(self, other):
                raise RuntimeError("comparison boom")
            __lt__ = __le__ = __gt__ = __ge__ = __eq__
            __hash__ = object.__hash__

        @pytest.mark.{RAISING_ARGUMENTS[name]}
        def test_marked():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines([f"ERROR: test_marks.py::test_marked: @pytest.mark.{name}: *"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("name", list(OUTER_BAD))
def test_a_bad_marker_under_xdist_errors_its_test_with_the_message(pytester: pytest.Pytester, name: str) -> None:
    """A usage error raised on an xdist worker at collection was lost: the controller stopped on
    an internal error of its own naming neither the test nor the marker."""
    pytest.importorskip("xdist")
    bad, _ = OUTER_BAD[name]
    pytester.makepyfile(test_marks=f"""
        import pytest

        @pytest.mark.parametrize("x", [1, pytest.param(2, marks=pytest.mark.{bad})])
        def test_marked(x):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2")
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*test_marks.py::test_marked?2?: @pytest.mark.{name}: *"])
