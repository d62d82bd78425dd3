"""A driver first imported inside a test is measured in that test, whatever the test order.

Run in a subprocess with pytest-postgresql disabled, so that nothing imports SQLAlchemy,
psycopg or psycopg_pool before the first test does.
"""

from __future__ import annotations

import os

import pytest

ISOLATED = ("-p", "no:pytest_postgresql", "-p", "no:randomly", "-p", "no:cacheprovider")

SQLALCHEMY_BODY = """
    from sqlalchemy import create_engine, text
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        for _ in range(3):
            conn.execute(text("select 1"))
"""


def failures(result: pytest.RunResult) -> str:
    """The FAILURES section only (with CI set, pytest repeats whole messages in the summary)."""
    return result.stdout.str().split("short test summary info")[0]


def _suite(pytester: pytest.Pytester, name: str, body: str, marker: str) -> None:
    indented = "\n".join("    " + line for line in body.strip("\n").splitlines())
    pytester.makepyfile(**{name: f"""
import sys
import pytest

LOADED_AT_START = {{}}

@pytest.fixture(autouse=True)
def loaded_at_start(request):
    LOADED_AT_START[request.node.name] = sorted(
        m for m in ("sqlalchemy", "psycopg", "psycopg_pool") if m in sys.modules)

{marker}
def test_first():
{indented}

{marker}
def test_second():
{indented}

def test_the_first_test_was_the_importer():
    assert LOADED_AT_START["test_first"] == []
"""})


def test_sqlalchemy_imported_in_the_first_test_counts_toward_its_budget(pytester: pytest.Pytester) -> None:
    _suite(pytester, "test_late_sqlalchemy", SQLALCHEMY_BODY, "@pytest.mark.max_queries(1)")
    result = pytester.runpytest_subprocess(*ISOLATED)
    result.assert_outcomes(failed=2, passed=1)
    assert failures(result).count("max_queries: expected at most 1 query, 3 ran") == 2


def test_psycopg_imported_in_the_first_test_counts_toward_its_budget(pytester: pytest.Pytester) -> None:
    dsn = os.environ["MIGSAFE_TEST_POSTGRES_DSN"]
    body = f"""
    import psycopg
    with psycopg.connect({dsn!r}) as conn:
        for _ in range(3):
            conn.execute("select 1")
"""
    _suite(pytester, "test_late_psycopg", body, "@pytest.mark.max_queries(1)")
    result = pytester.runpytest_subprocess(*ISOLATED)
    result.assert_outcomes(failed=2, passed=1)
    assert failures(result).count("max_queries: expected at most 1 query, 3 ran") == 2


def test_a_pool_imported_in_the_first_test_is_checked_by_its_marker(pytester: pytest.Pytester) -> None:
    body = """
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import QueuePool
    engine = create_engine("sqlite:///:memory:", poolclass=QueuePool, pool_size=3)
    held = [engine.connect() for _ in range(2)]
    for conn in held:
        conn.close()
"""
    _suite(pytester, "test_late_pool", body, "@pytest.mark.pool(max_checked_out=1)")
    result = pytester.runpytest_subprocess(*ISOLATED)
    result.assert_outcomes(failed=2, passed=1)
    assert result.stdout.str().count("max_checked_out=1") >= 2


def test_psycopg_pool_imported_in_the_first_test_is_hooked_in_that_test(pytester: pytest.Pytester) -> None:
    """``psycopg_pool`` imports ``psycopg``: the hooks installed at psycopg's import found
    psycopg_pool half made (no ``ConnectionPool`` yet), and the pool library was then taken for
    hooked: its pools went unmeasured in the test that imported it ("could not hook it")."""
    dsn = os.environ["MIGSAFE_TEST_POSTGRES_DSN"]
    body = f"""
    from psycopg_pool import ConnectionPool
    pool = ConnectionPool({dsn!r}, min_size=1, max_size=2, open=True)
    kept = globals().setdefault("KEPT", [])
    kept.append(pool.getconn())  # a leak
    kept.append(pool)
"""
    # (no marker: the test's pool part waits for a pool library, and starts at psycopg's import)
    _suite(pytester, "test_late_psycopg_pool", body, "")
    result = pytester.runpytest_subprocess(*ISOLATED, "-o", "migsafe_fail_on_leaks=true")
    result.assert_outcomes(failed=2, passed=1)
    assert failures(result).count("leaks=0 (migsafe_fail_on_leaks), 1 connection leaked") == 2
    assert "could not hook" not in result.stdout.str()


def test_a_driver_imported_again_with_as_many_modules_loaded_is_hooked_again(pytester: pytest.Pytester) -> None:
    """A module set restored and imported again (a test that reloads SQLAlchemy; pytester's
    in-process runs, which restore sys.modules after each run) has as many modules loaded as
    before, and new driver classes: they are hooked (the per-test look that skips while
    ``len(sys.modules)`` is unchanged must not hide them)."""
    pytester.makeconftest("import sqlalchemy\n")
    pytester.makepyfile(test_reimport="""
        import sys
        import pytest

        def test_first():
            pass

        @pytest.mark.max_queries(0)
        def test_fresh_sqlalchemy(monkeypatch):
            for name in [n for n in sys.modules if n == "sqlalchemy" or n.startswith("sqlalchemy.")]:
                monkeypatch.delitem(sys.modules, name)
            import sqlalchemy as sa
            with sa.create_engine("sqlite://").connect() as conn:
                conn.execute(sa.text("select 1"))
    """)
    result = pytester.runpytest_subprocess(*ISOLATED)
    result.assert_outcomes(passed=1, failed=1)
    assert "max_queries: expected at most 0 queries, 1 ran" in failures(result)


def test_repeated_in_process_runs_each_count_their_statements(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nested="""
        import sys
        pytest_plugins = ["pytester"]
        INNER = '''
        import pytest
        import sqlalchemy as sa

        @pytest.mark.max_queries(0)
        def test_inner():
            with sa.create_engine("sqlite://").connect() as conn:
                conn.execute(sa.text("select 1"))
        '''

        def test_three_runs(pytester):
            assert "sqlalchemy" not in sys.modules
            pytester.makepyfile(test_inner=INNER)
            runs = [pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider").parseoutcomes()
                    for _ in range(3)]
            assert runs == [{"failed": 1}] * 3, runs
    """)
    # (pytest-postgresql left on, as in a plugin's own suite: what it imports sets the module count)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
