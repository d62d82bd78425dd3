"""Drivers older than migsafe supports are left unhooked, said in the summary, never an error."""

from __future__ import annotations

import pytest

from pytest_migsafe import versions

pytest_plugins = ["pytester"]


def test_release_of_reads_the_leading_numbers() -> None:
    assert versions.release_of("2.0.20") == (2, 0, 20)
    assert versions.release_of("3.1.12.dev1") == (3, 1, 12)
    assert versions.release_of("2.1.0b1") == (2, 1, 0)
    assert versions.release_of("unknown") == ()


def test_a_driver_older_than_supported_is_not_hooked_and_said(pytester: pytest.Pytester) -> None:
    # a real SQLAlchemy whose oldest supported release is set above it: the plugin must leave it
    # unhooked (a budget of 0 holds over 3 statements: nothing is counted), say so in the
    # summary, and change no outcome; with the real floor the same budget fails
    pytester.makeconftest("""
        import os
        from pytest_migsafe import versions
        if os.environ.get("RAISE_FLOOR"):
            versions.OLDEST["sqlalchemy"] = ("SQLAlchemy", (99, 0, 0), versions.OLDEST["sqlalchemy"][2])
    """)  # (SQLAlchemy first imported by the test module: under xdist, by the workers only)
    pytester.makepyfile(test_old="""
        import pytest
        from sqlalchemy import create_engine, text

        @pytest.mark.max_queries(0)
        def test_three():
            engine = create_engine("sqlite://")
            with engine.connect() as conn:
                for _ in range(3):
                    conn.execute(text("select 1"))
    """)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAISE_FLOOR", "1")
        result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*migsafe: not measured*",
                                 "migsafe: SQLAlchemy * is older than 99.0.0, the oldest migsafe hooks: its statements*"])
    with pytest.MonkeyPatch.context() as patch:  # under pytest-xdist: each worker's, on the controller
        patch.setenv("RAISE_FLOOR", "1")
        workers = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "-n", "2")
    workers.assert_outcomes(passed=1)
    workers.stdout.fnmatch_lines(["migsafe: SQLAlchemy * is older than 99.0.0, the oldest migsafe hooks: its statements*"])
    supported = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    supported.assert_outcomes(failed=1)
    supported.stdout.fnmatch_lines(["*max_queries: expected at most 0 queries, 3 ran*"])
    assert "not measured" not in supported.stdout.str()


STUBBED = {
    "conftest": """
        import sys, types
        from unittest import mock
        sys.modules.setdefault("psycopg", mock.MagicMock())  # unit tests that never touch a database
        sys.modules.setdefault("psycopg_pool", types.ModuleType("psycopg_pool"))
    """,
    "test_units": """
        import sys, types
        import pytest

        def test_one():
            assert 1 + 1 == 2

        def test_stub_in_a_test(monkeypatch):
            monkeypatch.setitem(sys.modules, "sqlalchemy.orm", types.ModuleType("sqlalchemy.orm"))
            import sqlalchemy  # the import watcher installs the hooks now, over the stubbed ORM
            assert sqlalchemy.__version__

        @pytest.mark.parametrize("n", range(3))
        def test_more(n):
            assert n < 3
    """,
}


def test_stubbed_drivers_change_no_outcome_and_are_said(pytester: pytest.Pytester) -> None:
    # stubs of a driver in sys.modules (a MagicMock, an empty module) used to fail every test
    # (AttributeError from the hooks) or end the session with an INTERNALERROR at configure
    pytester.makeconftest(STUBBED["conftest"])
    pytester.makepyfile(test_units=STUBBED["test_units"])
    plain = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:migsafe")
    plain.assert_outcomes(passed=5)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*migsafe: not measured*",
                                 "migsafe: psycopg: sys.modules?'psycopg'? is a MagicMock, not the library*",
                                 "migsafe: psycopg-pool: migsafe could not hook it (AttributeError*"])
    # the ORM stubbed for one test: hooked again once the stub is gone, so not listed
    assert "SQLAlchemy" not in result.stdout.str().split("migsafe: not measured")[1]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_with_the_report_what_was_not_measured_is_a_report_note_and_in_the_json(
        pytester: pytest.Pytester, workers: list[str]) -> None:
    """With --migsafe-report, the drivers left unhooked were a section of their own and the
    report said nothing at all (a run that measured nothing printed no report), and the JSON's
    notes had no word of it: now they are the report's notes, in the terminal and the JSON."""
    import json

    pytester.makeconftest(STUBBED["conftest"])
    pytester.makepyfile(test_units=STUBBED["test_units"])
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report",
                                           "--migsafe-report-json=report.json", *workers)
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*- migsafe report -*",
                                 "note: not measured: psycopg: sys.modules?'psycopg'? is a MagicMock, not the library*",
                                 "note: not measured: psycopg-pool: migsafe could not hook it (AttributeError*"])
    assert "migsafe: not measured" not in result.stdout.str()  # (said once)
    notes = json.loads((pytester.path / "report.json").read_text())["notes"]
    # (with xdist, the worker that ran the test stubbing the ORM may end before it looks again)
    named = {note.split(":")[1] for note in notes if note.startswith("not measured: ")}
    assert {name for name in named if not name.startswith(" SQLAlchemy (")} == {" psycopg", " psycopg-pool"}


def test_a_failed_check_says_what_was_not_measured(pytester: pytest.Pytester) -> None:
    # a cache check failing on a redis-py migsafe leaves unhooked must not read as "no reads"
    pytester.makeconftest("""
        from pytest_migsafe import versions
        versions.OLDEST["redis"] = ("redis", (99, 0, 0), versions.OLDEST["redis"][2])
    """)
    pytester.makepyfile(test_cache="""
        import pytest

        @pytest.mark.min_cache_hit_rate(0.5)
        def test_reads(migsafe_redis):
            migsafe_redis.set("k", 1)
            for _ in range(10):
                migsafe_redis.get("k")
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "--migsafe-redis=fake")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*migsafe could not measure everything in this session:",
                                 "*redis * is older than 99.0.0, the oldest migsafe hooks: Redis commands are not counted*"])



def test_stubbed_submodules_fail_no_fixture(pytester: pytest.Pytester) -> None:
    # a stub of a submodule (redis.asyncio.client, psycopg_pool.pool) made migsafe_redis and
    # pool_stats error inside the plugin ("metaclass conflict", KeyError) in tests that never
    # touched those libraries
    pytester.makeconftest("""
        import sys
        from unittest import mock
        sys.modules["redis.asyncio.client"] = mock.MagicMock()
        sys.modules["psycopg_pool.pool"] = mock.MagicMock()
    """)
    pytester.makepyfile(test_parts="""
        def test_pool(pool_stats):
            pass

        def test_redis(migsafe_redis):
            migsafe_redis.set("k", 1)
            assert migsafe_redis.get("k") == b"1"

        def test_again(migsafe_redis):
            assert migsafe_redis.get("k") is None
    """)
    # on a real Redis (fakeredis itself cannot be imported with redis.asyncio.client stubbed)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "--migsafe-redis=real")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*migsafe: not measured*", "migsafe: redis: migsafe could not hook it*"])


def test_a_part_left_unhooked_is_named_with_what_it_loses(pytester: pytest.Pytester) -> None:
    # the ORM stubbed: SQLAlchemy's statements are still counted (the budget fails), and the
    # summary names the ORM loaders alone, not "nothing counted" for all of SQLAlchemy
    pytester.makeconftest("""
        import sys
        from unittest import mock
        sys.modules["sqlalchemy.orm"] = mock.MagicMock()
    """)
    pytester.makepyfile(test_core="""
        import pytest
        from sqlalchemy import create_engine, text

        @pytest.mark.max_queries(0)
        def test_one():
            with create_engine("sqlite://").connect() as conn:
                conn.execute(text("select 1"))
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*max_queries: expected at most 0 queries, 1 ran*",
                                 "migsafe: SQLAlchemy (ORM loaders): migsafe could not hook it*: its statements are "
                                 "counted, but lazy loads are not told apart*"])
    assert "migsafe: SQLAlchemy:" not in result.stdout.str()
