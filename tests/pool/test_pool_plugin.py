"""The pool side of the plugin, through pytester: marker, leaks, fixtures, options, summary."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pytest_migsafe.servers import RunningPostgres

pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")


HEADER = '''
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

URL = {url!r}
DSN = {dsn!r}
'''


@pytest.fixture
def write(pytester: pytest.Pytester, postgres: RunningPostgres):  # type: ignore[no-untyped-def]
    """Write a test module whose ``URL``/``DSN`` point at the test server; returns its path."""

    def make(body: str, name: str = "test_inner") -> object:
        source = HEADER.format(url=postgres.url, dsn=postgres.dsn) + textwrap.dedent(body)
        return pytester.makepyfile(**{name: source})

    return make


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run pytest in-process on the pytester directory, quietly about unrelated plugins."""
    return pytester.runpytest("-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function",
                              *args)


def line_of(path: object, marker: str) -> int:
    """The 1-based line of ``path`` that contains ``marker``."""
    for number, line in enumerate(Path(str(path)).read_text(encoding="utf-8").splitlines(), 1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in {path}")


# -- the pool marker -----------------------------------------------------------------
def test_marker_limits_pass_and_fail_naming_each_figure(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write('''
        from sqlalchemy.exc import TimeoutError as PoolTimeout

        def connect_n(engine, n):
            for _ in range(n):
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            engine.dispose()

        @pytest.mark.pool(max_created=3, max_checked_out=1, leaks=0)
        def test_within_limits():
            connect_n(create_engine(URL, poolclass=NullPool), 3)

        @pytest.mark.pool(max_created=2, max_checked_out=5)
        def test_too_many_created():
            connect_n(create_engine(URL, poolclass=NullPool), 3)

        @pytest.mark.pool(max_created=1, max_checked_out=1)
        def test_two_limits_exceeded():
            engine = create_engine(URL, pool_size=2)
            with engine.connect(), engine.connect():
                pass
            engine.dispose()

        @pytest.mark.pool(max_wait_ms=5)
        def test_wait_too_long():
            engine = create_engine(URL, pool_size=1, max_overflow=0, pool_timeout=0.05)
            with engine.connect():
                with pytest.raises(PoolTimeout):
                    engine.connect()
            engine.dispose()
    ''')
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines([
        "*test_too_many_created*",
        "*pool limits exceeded: max_created=2, 3 connections created",
        "*test_two_limits_exceeded*",
        ("*pool limits exceeded: max_created=1, 2 connections created; "
        "max_checked_out=1, 2 checked out at once"),
        "*test_wait_too_long*",
        "*pool limits exceeded: max_wait_ms=5, longest checkout wait * ms",
    ])


@pytest.mark.parametrize(("marker", "message"), [
    ("pool(max_conns=1)", ("pool() got an unexpected keyword argument 'max_conns'; expected any of "
                          "max_created=, max_checked_out=, max_wait_ms=, leaks= with numbers >= 0")),
    ("pool(max_created=-1)", "max_created must be a whole number >= 0, got -1; expected any of *"),
    ("pool(max_wait_ms=-0.5)", "max_wait_ms must be a number >= 0, got -0.5;*"),
    ("pool(leaks='none')", "leaks must be a whole number >= 0, got 'none';*"),
    ("pool(3)", "pool() takes 0 positional arguments but 1 was given;*"),
    ("pool(max_wait_ms=10**400)", "max_wait_ms must be a number >= 0 (milliseconds) a float can hold, "
                                  "got an integer of 1329 bits;*"),
])
def test_bad_marker_is_a_usage_error_at_collection(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(test_marks=f'''
        import pytest

        def test_fine():
            pass

        @pytest.mark.{marker}
        def test_marked():
            pass
    ''')
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: test_marks.py::test_marked: @pytest.mark.pool: {message}"])
    result.stdout.no_fnmatch_line("*passed*")


def test_marker_and_options_are_documented(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines([("@pytest.mark.pool(max_created=None, max_checked_out=None, "
                                 "max_wait_ms=None, leaks=None): fail the test when*")])
    result = run(pytester, "--help")
    # (Python 3.13's argparse names the value once for an option with two spellings)
    result.stdout.fnmatch_lines(["*--migsafe-peak-rps=N*", "*--migsafe-hold-ms*, --migsafe-avg-query-ms=MS*",
                                 "*migsafe_fail_on_leaks*"])


# -- leaks ---------------------------------------------------------------------------
LEAKY = '''
    ENGINE = create_engine(URL, pool_size=2)
    HELD = []

    @pytest.fixture(scope="module", autouse=True)
    def give_back():
        yield
        for conn in HELD:
            conn.close()
        ENGINE.dispose()

    def test_leaks():
        HELD.append(ENGINE.connect())  # LEAK

    def test_clean():
        with ENGINE.connect() as conn:
            conn.execute(text("SELECT 1"))
'''


def test_leaked_connection_fails_the_test_with_its_call_site(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    path = write(LEAKY)
    result = run(pytester, "-o", "migsafe_fail_on_leaks=true")  # asked for: leaks fail
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*pool limits exceeded: leaks=0 (migsafe_fail_on_leaks), 1 connection leaked",
        (f"  checked out at test_inner.py:{line_of(path, '# LEAK')} from postgresql+psycopg://*"
        "(QueuePool): still checked out at the end of the test"),
    ])


@pytest.mark.pool(leaks=1)  # this session's own observer sees the inner test's dropped connection
def test_connection_dropped_without_close_fails_the_test(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    path = write('''
        ENGINE = create_engine(URL, pool_size=2)

        def test_drops():
            conn = ENGINE.connect()  # DROP
            conn.execute(text("SELECT 1"))
    ''')
    result = run(pytester, "-o", "migsafe_fail_on_leaks=true")  # asked for: leaks fail
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        (f"  checked out at test_inner.py:{line_of(path, '# DROP')} from *(QueuePool): "
        "dropped without close(); only the garbage collector returned it"),
    ])


def test_every_part_that_failed_is_named_in_one_failure(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write('''
        ENGINE = create_engine(URL, pool_size=2)
        HELD = []

        @pytest.fixture(autouse=True)
        def warm_engine_and_give_back():
            with ENGINE.connect():
                pass  # the dialect's first-connect statements run here, not in the test
            yield
            for conn in HELD:
                conn.close()
            ENGINE.dispose()

        @pytest.mark.max_queries(1)
        def test_over_budget_and_leaking():
            HELD.append(ENGINE.connect())
            HELD[-1].execute(text("SELECT 1"))
            HELD[-1].execute(text("SELECT 2"))
    ''')
    result = run(pytester, "-o", "migsafe_fail_on_leaks=true")  # asked for: leaks fail
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([  # in the order of the parts: queries, pools, cache, shadow
        "max_queries: expected at most 1 query, 2 ran",
        "*pool limits exceeded: leaks=0 (migsafe_fail_on_leaks), 1 connection leaked",
    ])


def test_a_leak_warning_has_a_class_of_its_own(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    """Leaks were plain PytestWarnings: a filter could not name them apart from others."""
    write(LEAKY)
    result = run(pytester, "-o", "migsafe_fail_on_leaks=false")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*ConnectionLeakWarning: migsafe: connection leaked*"])
    quiet = run(pytester, "-o", "migsafe_fail_on_leaks=false", "-W", "ignore::pytest_migsafe.ConnectionLeakWarning")
    quiet.assert_outcomes(passed=2)
    assert "connection leaked" not in quiet.stdout.str()


def test_marker_can_allow_a_leak(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write(LEAKY.replace("def test_leaks", "@pytest.mark.pool(leaks=1)\n    def test_leaks"))
    run(pytester).assert_outcomes(passed=2)


def test_fail_on_leaks_false_only_warns(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    path = write(LEAKY)
    pytester.makeini("[pytest]\nmigsafe_fail_on_leaks = false\n")
    result = run(pytester)
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines([(f"*ConnectionLeakWarning: migsafe: connection leaked: checked out at "
                                 f"test_inner.py:{line_of(path, '# LEAK')} from *")])


def test_fail_on_leaks_from_the_environment_and_bad_values(pytester: pytest.Pytester, write,  # type: ignore[no-untyped-def]
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    write(LEAKY)
    monkeypatch.setenv("MIGSAFE_FAIL_ON_LEAKS", "0")
    run(pytester).assert_outcomes(passed=2, warnings=1)
    monkeypatch.setenv("MIGSAFE_FAIL_ON_LEAKS", "sometimes")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*MIGSAFE_FAIL_ON_LEAKS='sometimes'*expected true or false*"])


def test_connections_held_by_fixtures_across_tests_are_not_leaks(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write('''
        ENGINE = create_engine(URL, pool_size=3)

        @pytest.fixture(scope="module")
        def shared():
            with ENGINE.connect() as conn:
                yield conn
            ENGINE.dispose()

        @pytest.fixture
        def own():
            with ENGINE.connect() as conn:
                yield conn

        def test_one(shared, own):
            shared.execute(text("SELECT 1"))
            own.execute(text("SELECT 1"))

        def test_two(shared):
            shared.execute(text("SELECT 1"))
    ''')
    run(pytester).assert_outcomes(passed=2)


# a module-scoped connection fixture, and the connections a test keeps (a leak of its own)
# returned at module teardown: once the leak was told, none is left for the test running the suite
MODULE_CONN = """
ENGINE = create_engine(URL, pool_size=3)
KEPT = []

@pytest.fixture(scope="module", autouse=True)
def close_kept():
    yield
    for kept in KEPT:
        kept.close()

@pytest.fixture(scope="module")
def conn():
    with ENGINE.connect() as conn:
        yield conn
    ENGINE.dispose()
"""


def test_a_fixture_set_up_inside_the_test_body_holds_its_connection_no_leak(pytester: pytest.Pytester,
                                                                             write) -> None:  # type: ignore[no-untyped-def]
    """A module-scoped connection fixture first asked for by request.getfixturevalue() in the
    test's body was reported as leaked at the fixture's line (and failed the test with
    migsafe_fail_on_leaks): the fixture returns it at its teardown. The test's own leak in
    the same test is still one."""
    write(MODULE_CONN + textwrap.dedent('''
        def test_lazy(request):
            request.getfixturevalue("conn").execute(text("SELECT 1"))

        def test_lazy_and_own_leak(request):
            request.getfixturevalue("conn").execute(text("SELECT 1"))
            KEPT.append(ENGINE.connect())
    '''))
    result = run(pytester, "-o", "migsafe_fail_on_leaks=true")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_lazy_and_own_leak*", "*1 connection leaked*"])
    assert "FAILED test_a_fixture_set_up_inside_the_test_body_holds_its_connection_no_leak.py::test_lazy " \
        not in result.stdout.str()


def test_a_fixtures_connection_reconnected_in_the_test_is_still_the_fixtures(pytester: pytest.Pytester,
                                                                              write) -> None:  # type: ignore[no-untyped-def]
    """A module-scoped Connection the test invalidated (by hand, or the server ended its
    session) reconnects with a new checkout inside the test: it was reported as leaked at the
    fixture's line, and failed the test with migsafe_fail_on_leaks. A Connection the test made,
    invalidated and kept is still the test's leak."""
    write("from sqlalchemy.exc import DBAPIError\n" + MODULE_CONN + textwrap.dedent('''
        def test_invalidated_by_hand(conn):
            conn.invalidate()
            conn.execute(text("SELECT 1"))

        def test_disconnected_by_the_server(conn):
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            conn.rollback()
            with ENGINE.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError):
                conn.execute(text("SELECT 1"))
            conn.rollback()
            conn.execute(text("SELECT 1"))

        def test_own_connection_reconnected_and_kept():
            own = ENGINE.connect()
            own.invalidate()
            own.execute(text("SELECT 1"))
            KEPT.append(own)
    '''))
    result = run(pytester, "-o", "migsafe_fail_on_leaks=true")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_own_connection_reconnected_and_kept*", "*1 connection leaked*"])


def test_psycopg_pool_leak_fails_the_test(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    path = write('''
        from psycopg_pool import ConnectionPool

        HELD = []

        @pytest.fixture(scope="module")
        def db_pool():
            with ConnectionPool(DSN, min_size=1, max_size=2, open=False, name="app-pool") as p:
                p.wait()
                yield p
                for conn in HELD:
                    p.putconn(conn)

        def test_leaks(db_pool):
            HELD.append(db_pool.getconn())  # LEAK

        def test_clean(db_pool):
            with db_pool.connection() as conn:
                conn.execute("SELECT 1")
    ''')
    result = run(pytester, "-o", "migsafe_fail_on_leaks=true")  # asked for: leaks fail
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([(f"  checked out at test_inner.py:{line_of(path, '# LEAK')} from "
                                 "app-pool (ConnectionPool): still checked out at the end of the test")])


# -- fixtures ------------------------------------------------------------------------
def test_pool_stats_fixture_sees_every_engine_or_one(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write('''
        def test_stats(pool_stats):
            a = create_engine(URL, poolclass=NullPool)
            b = create_engine(URL, pool_size=2)
            with pool_stats(b) as only_b:
                for engine in (a, b, b):
                    with engine.connect() as conn:
                        conn.execute(text("SELECT 1"))
            assert (pool_stats.created, pool_stats.checkouts, pool_stats.closed) == (2, 3, 1)
            assert (only_b.created, only_b.checkouts, only_b.closed) == (1, 2, 0)
            assert pool_stats.figures().checkouts == 3
            b.dispose()

        def test_bad_target(pool_stats):
            with pytest.raises(TypeError, match="accepts a SQLAlchemy Engine"):
                pool_stats(42)
    ''')
    run(pytester).assert_outcomes(passed=2)


def test_assert_pool_warm_fixture(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write('''
        def select_one(engine):
            def action():
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            return action

        def test_nullpool_is_cold(assert_pool_warm):
            engine = create_engine(URL, poolclass=NullPool)
            assert_pool_warm(engine, select_one(engine), warmup=2, repeat=4)

        def test_queuepool_is_warm(assert_pool_warm):
            engine = create_engine(URL, pool_size=1)
            result = assert_pool_warm(engine, select_one(engine))
            assert result.measured_created == 0
            engine.dispose()
    ''')
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*pool is not warm: 4 connections created after warm-up, expected at most 0",
        "  warm-up: 2 created in 2 runs; measured: 4 created in 4 runs",
    ])
    result.stdout.no_fnmatch_line("*Traceback*")


# -- record, report and sizing summary -----------------------------------------------
SIZED = '''
    ENGINE = create_engine(URL, pool_size=2)

    def test_uses_pool():
        with ENGINE.connect() as conn:
            for _ in range(3):
                conn.execute(text("SELECT 1"))

    def test_no_pool():
        assert True
'''


def test_pool_figures_are_recorded_in_the_report(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write(SIZED)
    run(pytester, "--migsafe-report-json=report.json").assert_outcomes(passed=2)
    data = json.loads((pytester.path / "report.json").read_text())
    tests = data["tests"]
    pool = tests["test_inner.py::test_uses_pool"]["pool"]
    assert (pool["checkouts"], pool["checkins"], pool["peak_checked_out"], pool["leaks"]) == (1, 1, 1, [])
    assert list(pool["pool_sizes"].values()) == [2]
    assert tests.get("test_inner.py::test_no_pool", {}).get("pool") is None


TOTALS_SUITE = '''
import gc

from psycopg_pool import ConnectionPool

engine = create_engine(URL, pool_size=2, max_overflow=1)
held = engine.connect()  # out since the import: returned inside a test
psycopg_pool = ConnectionPool(DSN, min_size=1, max_size=2, open=False)
kept = []


def test_queuepool_with_overflow():
    with engine.connect() as one, engine.connect() as two:
        one.execute(text("SELECT 1"))
        two.execute(text("SELECT 1"))


def test_only_a_checkin():
    held.close()


def test_leak_kept():
    kept.append(engine.connect())


def test_leak_dropped():
    nullpool = create_engine(URL, poolclass=NullPool)
    nullpool.connect().execute(text("SELECT 1"))
    gc.collect()


def test_psycopg_pool_grows_and_is_popped():
    psycopg_pool.open(wait=True)
    with psycopg_pool.connection() as one, psycopg_pool.connection() as two:
        one.execute("SELECT 1")
        two.execute("SELECT 1")
    psycopg_pool.pop_stats()
    with psycopg_pool.connection() as conn:
        conn.execute("SELECT 1")


def test_invalidation():
    with engine.connect() as conn:
        conn.invalidate()


def test_no_pool():
    pass


tight = create_engine(URL, pool_size=1, max_overflow=0, pool_timeout=0.05)
tight_held = tight.connect()  # (its only connection, out since the import)
tight_pool = ConnectionPool(DSN, min_size=1, max_size=1, open=False)


def test_only_a_checkout_timeout():
    from sqlalchemy.exc import TimeoutError
    with pytest.raises(TimeoutError):
        tight.connect()


def test_only_a_psycopg_pool_timeout():
    from psycopg_pool import PoolTimeout
    tight_pool.open(wait=True)
    kept.append(tight_pool.getconn())
    with pytest.raises(PoolTimeout):
        tight_pool.getconn(timeout=0.05)
'''

TOTALS_CONFTEST = '''
from pytest_migsafe.plugin.stash import pool_totals_only


def pytest_runtest_call(item):
    with open("modes.txt", "a") as out:
        out.write(f"{pool_totals_only()}\\n")
'''


def test_the_summary_is_the_same_with_pool_totals_counted_or_every_figure_observed(
        pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    """A report whose terminal summary alone reads the pool figures counts the run's totals
    (pool.tally) instead of observing every figure of each test: the summary (tests measured,
    connections created, every leak with its call site) is the same as with a JSON file,
    which takes every figure."""
    write(TOTALS_SUITE)
    pytester.makeconftest(TOTALS_CONFTEST)
    modes = pytester.path / "modes.txt"

    def summary(*args: str) -> tuple[list[str], set[str]]:
        # (a process each: pools are numbered by the order the process first saw them)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--migsafe-report", "-p", "no:randomly",
                                               "-W", "ignore::ResourceWarning", *args)
        result.assert_outcomes(passed=9, warnings=result.parseoutcomes().get("warnings", 0))
        lines = result.stdout.lines
        start = next(n for n, line in enumerate(lines) if "migsafe report" in line)
        seen = set(modes.read_text().split())
        modes.unlink()
        return [line for line in lines[start:] if "report-json" not in line and " passed" not in line], seen

    totals, totals_modes = summary()
    every, every_modes = summary("--migsafe-report-json=out.json")
    assert (totals_modes, every_modes) == ({"True"}, {"False"})
    assert totals == every
    assert any("connections leaked: 3" in line for line in totals)
    assert any("8 tests measured (of 9 run" in line for line in totals)
    pool_line = next(line for line in totals if line.startswith("pool: "))
    data = json.loads((pytester.path / "out.json").read_text())
    created = sum((test.get("pool") or {}).get("created", 0) for test in data["tests"].values())
    assert pool_line.startswith(f"pool: {created} connections created, 3 leaked")
    timeouts = {nodeid.rpartition("::")[2]: test["pool"]["timeouts"] for nodeid, test in data["tests"].items()
                if "timeout" in nodeid}
    assert timeouts == {"test_only_a_checkout_timeout": 1, "test_only_a_psycopg_pool_timeout": 1}


def test_sizing_summary_warns_about_small_pools(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write(SIZED)
    result = run(pytester, "--migsafe-peak-rps", "800",
                                "--migsafe-hold-ms", "12")
    result.stdout.fnmatch_lines([
        "*- migsafe pool sizing -*",
        "recommended pool size 13 for 800 requests/s holding a connection 12 ms each (as given), headroom 1.3",
        ("WARNING postgresql+psycopg://*(QueuePool): pool size 2 (+10 overflow: up to 12) is below the 13 "
         "needed for 800 requests/s holding a connection 12 ms each (ceil(800 x 0.012 s x 1.3) = 13)"),
    ])
    result.stdout.no_fnmatch_line("*local database*")  # a hold time as given is not measured here
    result = run(pytester, "--migsafe-peak-rps", "10")
    result.stdout.fnmatch_lines([("recommended pool size * for 10 requests/s holding a connection * ms each "
                                 "(the p95 hold time over 1 checkouts), headroom 1.3"),
                                 ("WARNING hold times measured against a local database "
                                  "(postgresql+psycopg://*(QueuePool) over unix socket) are far below production's*"),
                                 "every observed pool is at least *"])
    result = run(pytester)
    result.stdout.no_fnmatch_line("*migsafe pool sizing*")


def test_sizing_summary_under_xdist_prints_once(pytester: pytest.Pytester, write) -> None:  # type: ignore[no-untyped-def]
    write(SIZED)
    result = run(pytester, "-n", "2", "--migsafe-peak-rps", "800",
                                "--migsafe-avg-query-ms", "12")  # the old name of --migsafe-hold-ms
    result.assert_outcomes(passed=2)
    assert result.stdout.str().count("migsafe pool sizing") == 1
    result.stdout.fnmatch_lines(["WARNING *(QueuePool): pool size 2 (+10 overflow: up to 12) is below the 13 needed*"])


OVERFLOWING = '''
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import QueuePool

    # made at import, in the same order on every xdist worker: each has the same name on each
    OVERFLOW = create_engine(URL, pool_size=2, max_overflow=20)  # SQLAlchemy: up to 22 connections
    UNLIMITED = create_engine(URL, pool_size=2, max_overflow=-1)  # no limit
    NULL = create_engine(URL, poolclass=NullPool)  # no limit: a new connection per checkout
    TOO_SMALL = create_engine(URL, poolclass=QueuePool, pool_size=2, max_overflow=3)  # up to 5
    ASYNC = create_async_engine(URL, pool_size=2, max_overflow=20)

    def use(engine):
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def test_overflow():
        use(OVERFLOW)

    def test_unlimited_overflow():
        use(UNLIMITED)

    def test_nullpool():
        use(NULL)

    def test_too_small():
        use(TOO_SMALL)

    async def test_async_overflow():
        async with ASYNC.connect() as conn:
            await conn.execute(text("SELECT 1"))
        await ASYNC.dispose()
'''


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_sizing_summary_compares_the_need_with_what_each_pool_can_open(pytester: pytest.Pytester, write,  # type: ignore[no-untyped-def]
                                                                       xdist: list[str]) -> None:
    write(OVERFLOWING)
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    result = run(pytester, *xdist, "--migsafe-peak-rps", "100", "--migsafe-hold-ms", "50")
    result.assert_outcomes(passed=5)
    output = result.stdout.str()
    warnings = [line for line in output.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, output  # only the pool that cannot open 7 connections
    assert "(QueuePool): pool size 2 (+3 overflow: up to 5) is below the 7 needed" in warnings[0]
    result.stdout.fnmatch_lines_random([
        "note *(QueuePool): pool size 2 (+20 overflow: up to 22) covers the 7 needed only with overflow: *",
        "note *(QueuePool): pool size 2 (no overflow limit) covers the 7 needed only with overflow: *",
        "note *(NullPool): NullPool keeps no connection: *",
        "note *(AsyncAdaptedQueuePool): pool size 2 (+20 overflow: up to 22) covers the 7 needed only with *",
    ])


@pytest.mark.parametrize(("args", "message"), [
    (["--migsafe-peak-rps", "0"], "*argument --migsafe-peak-rps: expected a positive number, got '0'"),
    (["--migsafe-avg-query-ms", "12"], "ERROR: --migsafe-hold-ms (--migsafe-avg-query-ms) needs --migsafe-peak-rps"),
    (["--migsafe-hold-ms", "12"], "ERROR: --migsafe-hold-ms (--migsafe-avg-query-ms) needs --migsafe-peak-rps"),
])
def test_sizing_option_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


# -- the test's own checkouts, observations that saw nothing, hold times -------------
def test_max_checked_out_counts_the_tests_own_connections_and_shows_the_split(pytester: pytest.Pytester,  # type: ignore[no-untyped-def]
                                                                              write) -> None:
    write('''
        ENGINE = create_engine(URL, pool_size=5)

        @pytest.fixture
        def held():
            with ENGINE.connect() as conn:  # out since before the test's call phase
                yield conn

        @pytest.mark.pool(max_checked_out=1)
        def test_one_of_its_own(held):
            with ENGINE.connect() as conn:
                conn.execute(text("SELECT 1"))

        @pytest.mark.pool(max_checked_out=1)
        def test_two_of_its_own(held):
            with ENGINE.connect() as a, ENGINE.connect() as b:
                a.execute(text("SELECT 1"))
                b.execute(text("SELECT 1"))

        @pytest.mark.pool(max_checked_out=1)
        def test_two_without_a_fixture():
            with ENGINE.connect() as a, ENGINE.connect() as b:
                a.execute(text("SELECT 1"))
                b.execute(text("SELECT 1"))
    ''')
    result = run(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*pool limits exceeded: max_checked_out=1, 3 at once: 2 the test's own, "
        "1 held since before the test (by a fixture, or left out by an earlier test)",
    ])
    result.stdout.fnmatch_lines(["*pool limits exceeded: max_checked_out=1, 2 checked out at once"])


def test_pool_stats_that_saw_nothing_says_so_and_never_fails_the_test(pytester: pytest.Pytester,  # type: ignore[no-untyped-def]
                                                                       write) -> None:
    path = write('''
        from pytest_migsafe import pool_stats

        ENGINE = create_engine(URL, pool_size=2)
        HELD = ENGINE.connect()  # the application holds a connection from import on

        @pytest.fixture(scope="module", autouse=True)
        def give_back():
            yield
            HELD.close()
            ENGINE.dispose()

        def test_stats_opened_after_the_work():
            with ENGINE.connect() as conn:
                conn.execute(text("SELECT 1"))
            stats = pool_stats(ENGINE)
            assert stats.saw_nothing
            assert (stats.created, stats.checkouts, stats.leaks) == (0, 0, [])  # READ

        def test_block_around_nothing():
            with ENGINE.connect() as conn:
                conn.execute(text("SELECT 1"))
            with pool_stats(ENGINE) as stats:
                pass
            assert stats.saw_nothing and stats.checkouts == 0

        def test_block_around_the_work():
            with pool_stats(ENGINE) as stats:
                with ENGINE.connect() as conn:
                    conn.execute(text("SELECT 1"))
            assert not stats.saw_nothing and stats.checkouts == 1
    ''')
    # in a subprocess: under -W error, garbage of this process's other tests must not count
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-W", "error")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        f"*test_inner.py:{line_of(path, '# READ')}: NothingObservedWarning: migsafe: pool_stats("
        "postgresql+psycopg://*(QueuePool)) was never started, so it saw nothing: its figures are zeros;*",
        "*NothingObservedWarning: migsafe: pool_stats(postgresql+psycopg://*(QueuePool)) saw nothing: no "
        "connection was checked out, returned, opened or closed while it was active*",
    ])
    assert result.stdout.str().count("NothingObservedWarning") == 2
