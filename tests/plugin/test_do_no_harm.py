"""At its defaults the plugin changes no test outcome: what it notices unasked is a warning.

Each suite here runs twice, with ``-p no:migsafe`` and with the plugin at its defaults,
and the outcomes must be the same; what the plugin noticed shows as a warning.
"""

from __future__ import annotations

import os
import textwrap

import pytest

URL = os.environ["MIGSAFE_POSTGRES_URL"]
DSN = os.environ["MIGSAFE_TEST_POSTGRES_DSN"]
REDIS_URL = os.environ["MIGSAFE_REDIS_URL"]

HEADER = f"""
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

URL = {URL!r}
DSN = {DSN!r}
ENGINE = create_engine(URL, pool_size=3)
"""


def outcomes(pytester: pytest.Pytester, *args: str) -> dict[str, int]:
    """The outcomes of a subprocess run (errors included)."""
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    return outcomes_of(result)


def outcomes_of(result: pytest.RunResult) -> dict[str, int]:
    """passed / failed / errors / skipped ...: the outcomes, without the count of warnings."""
    return {key: value for key, value in result.parseoutcomes().items() if key not in ("warnings", "warning")}


def same_outcomes_with_and_without(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Assert the suite's outcomes equal those without the plugin; the plugin's run result."""
    without = outcomes(pytester, "-p", "no:migsafe", *args)
    with_plugin = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    assert outcomes_of(with_plugin) == without
    return with_plugin


SESSION_OWNERS = {
    "session_fixture": """
        @pytest.fixture(scope="session")
        def db():
            with Session(ENGINE) as session:
                yield session
                session.commit()
    """,
    "module_fixture": """
        @pytest.fixture(scope="module")
        def db():
            with Session(ENGINE) as session:
                yield session
                session.commit()
    """,
    "class_fixture": """
        @pytest.fixture(scope="class")
        def db():
            with Session(ENGINE) as session:
                yield session
                session.commit()
    """,
    "function_fixture_closed_in_teardown": """
        @pytest.fixture
        def db():
            session = Session(ENGINE)
            yield session
            session.close()
    """,
    "module_level_session": """
        SESSION = Session(ENGINE)

        @pytest.fixture
        def db():
            return SESSION
    """,
    "scoped_session": """
        from sqlalchemy.orm import scoped_session, sessionmaker
        REGISTRY = scoped_session(sessionmaker(bind=ENGINE))

        @pytest.fixture
        def db():
            return REGISTRY()
    """,
}


@pytest.mark.parametrize("asked", [True, False], ids=["leak check asked", "defaults"])
@pytest.mark.parametrize("owner", sorted(SESSION_OWNERS))
def test_a_session_that_outlives_the_test_holds_its_connection_without_a_leak(
        pytester: pytest.Pytester, owner: str, asked: bool) -> None:
    pytester.makepyfile(test_owner=HEADER + textwrap.dedent(SESSION_OWNERS[owner]) + textwrap.dedent("""
        class TestInOrder:
            def test_first(self, db):
                db.execute(text("select 1"))   # the Session keeps this connection until its next commit

            def test_second(self, db):
                db.commit()                    # ... which happens here, in the next test
    """))
    # asked for (a pool observation) or at the defaults (the leak watch alone): a connection
    # a live Session holds is not a leak
    asking = ("-o", "migsafe_fail_on_leaks=true") if asked else ()
    result = pytester.runpytest_subprocess("-p", "no:randomly", *asking, "-W", "error")
    result.assert_outcomes(passed=2)
    assert "leaked" not in result.stdout.str()


def test_an_async_session_closed_in_teardown_is_not_a_leak(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_async_owner=f"""
        import pytest
        import pytest_asyncio
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

        ENGINE = create_async_engine({URL!r})

        @pytest_asyncio.fixture
        async def db():
            session = AsyncSession(ENGINE)
            yield session
            await session.close()

        @pytest.mark.asyncio
        async def test_reads(db):
            await db.execute(text("select 1"))
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-o", "migsafe_fail_on_leaks=true",
                                           "-o", "asyncio_default_fixture_loop_scope=function")
    result.assert_outcomes(passed=1)


TRUE_LEAKS = """
    HELD = []

    def test_keeps_a_connection_in_a_global():
        HELD.append(ENGINE.connect())  # LEAK-GLOBAL
        HELD[-1].execute(text("select 1"))

    def test_keeps_a_pool_checkout():
        HELD.append(ENGINE.pool.connect())  # LEAK-RAW
"""


def test_a_true_leak_is_a_warning_with_its_call_site_at_defaults(pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(test_leaks=HEADER + textwrap.dedent(TRUE_LEAKS))
    result = same_outcomes_with_and_without(pytester)
    result.assert_outcomes(passed=2, warnings=2)
    lines = path.read_text().splitlines()
    global_line = next(n for n, line in enumerate(lines, 1) if "LEAK-GLOBAL" in line)
    raw_line = next(n for n, line in enumerate(lines, 1) if "LEAK-RAW" in line)
    result.stdout.fnmatch_lines([f"*migsafe: connection leaked: checked out at test_leaks.py:{global_line} *",
                                 f"*migsafe: connection leaked: checked out at test_leaks.py:{raw_line} *"])


def test_with_the_report_each_leak_is_a_report_line_too(pytester: pytest.Pytester) -> None:
    """README: a leak nobody asked to fail on is "a warning and a report line"; the report had
    no line of it (only -v's per-test table and the JSON): now a block like the N+1 suspects'
    and a count on the pool line."""
    path = pytester.makepyfile(test_leaks=HEADER + textwrap.dedent(TRUE_LEAKS))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report")
    result.assert_outcomes(passed=2, warnings=2)
    lines = path.read_text().splitlines()
    global_line = next(n for n, line in enumerate(lines, 1) if "LEAK-GLOBAL" in line)
    raw_line = next(n for n, line in enumerate(lines, 1) if "LEAK-RAW" in line)
    result.stdout.fnmatch_lines([
        "connections leaked: 2",
        f"  test_leaks.py::test_keeps_a_connection_in_a_global  at test_leaks.py:{global_line}  *QueuePool*",
        f"  test_leaks.py::test_keeps_a_pool_checkout           at test_leaks.py:{raw_line}  *QueuePool*",
        "pool: * created, 2 leaked",
    ])


CLOSED_AT_TEARDOWN = """
    class TestXunit:
        conn = None

        def teardown_method(self):
            self.conn.close()

        def test_opens_in_body_closed_in_teardown_method(self):
            self.conn = ENGINE.connect()
            self.conn.execute(text("select 1"))


    @pytest.fixture
    def holder():
        held = {}
        yield held
        held["conn"].close()


    def test_opens_in_body_closed_by_a_fixture_teardown(holder):
        holder["conn"] = ENGINE.connect()
        holder["conn"].execute(text("select 1"))


    HELD = []

    def test_keeps_a_connection_in_a_global():
        HELD.append(ENGINE.connect())  # LEAK-GLOBAL
"""


@pytest.mark.parametrize("extra", [(), ("--migsafe-report", "--migsafe-report-json=report.json"), ("-n", "2")],
                         ids=["defaults", "report", "xdist"])
def test_a_connection_the_tests_teardown_closes_is_no_leak(pytester: pytest.Pytester, extra: tuple[str, ...]) -> None:
    """A connection the test body opened and its teardown (``teardown_method``, a function
    fixture's teardown) closed was warned as leaked (a new user's finding: 14 warnings on
    alembic's suite): the leak nobody asked about is told after the test's teardown, if the
    connection is still out then; one kept in a global still is, with its call site."""
    import json

    path = pytester.makepyfile(test_teardown=HEADER + textwrap.dedent(CLOSED_AT_TEARDOWN))
    plugin_only = [arg for arg in extra if arg.startswith("--migsafe")]
    result = same_outcomes_with_and_without(pytester, *[arg for arg in extra if arg not in plugin_only])
    if plugin_only:
        result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *extra)
    result.assert_outcomes(passed=3, warnings=1)
    leak_line = next(n for n, line in enumerate(path.read_text().splitlines(), 1) if "LEAK-GLOBAL" in line)
    result.stdout.fnmatch_lines([f"*migsafe: connection leaked: checked out at test_teardown.py:{leak_line} *"])
    assert result.stdout.str().count("connection leaked") == 1
    if "--migsafe-report" in extra:
        tests = json.loads((pytester.path / "report.json").read_text())["tests"]
        leaks = {nodeid.split("::")[-1]: record["pool"]["leaks"] for nodeid, record in tests.items() if record["pool"]}
        assert leaks == {"test_opens_in_body_closed_in_teardown_method": [],
                         "test_opens_in_body_closed_by_a_fixture_teardown": [],
                         "test_keeps_a_connection_in_a_global": [
                             {"pool": leaks["test_keeps_a_connection_in_a_global"][0]["pool"],
                              "call_site": f"test_teardown.py:{leak_line}", "dropped": False}]}


CLOSED_BY_A_WIDER_SCOPE = """
    class TestClass:
        conns = []

        @classmethod
        def teardown_class(cls):
            for conn in cls.conns:
                conn.close()

        def test_first(self):
            self.conns.append(ENGINE.connect())  # LEAK-FIRST

        def test_last(self):
            self.conns.append(ENGINE.connect())  # LEAK-LAST


    OPENED = []

    @pytest.fixture(scope="module", autouse=True)
    def close_at_module_end():
        yield
        for conn in OPENED:
            conn.close()

    def test_module_last():
        OPENED.append(ENGINE.connect())  # LEAK-MODULE
"""


def test_a_connection_a_wider_scope_closes_is_a_leak_even_in_its_last_test(pytester: pytest.Pytester) -> None:
    """The test's own code checked these out and a class's or module's teardown returns them:
    leaks, told after the test's own teardown; the last test of the scope, in whose teardown
    that closer runs, was let off (the break-it helper's finding), and JUnit's property of a
    connection the test's teardown returned still counted it."""
    path = pytester.makepyfile(test_scopes=HEADER + textwrap.dedent(CLOSED_BY_A_WIDER_SCOPE))
    pytester.makepyfile(test_teardown=HEADER + textwrap.dedent(CLOSED_AT_TEARDOWN))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "--migsafe-report",
                                           "--junitxml=junit.xml")
    result.assert_outcomes(passed=6, warnings=4)
    lines = path.read_text().splitlines()
    for mark in ("LEAK-FIRST", "LEAK-LAST", "LEAK-MODULE"):
        line = next(n for n, text in enumerate(lines, 1) if mark in text)
        result.stdout.fnmatch_lines([f"*migsafe: connection leaked: checked out at test_scopes.py:{line} *"])
    result.stdout.fnmatch_lines(["pool: * created, 4 leaked"])
    junit = (pytester.path / "junit.xml").read_text()
    for name, leaks in (("test_opens_in_body_closed_in_teardown_method", 0), ("test_last", 1)):
        case = junit.split(f'name="{name}"', 1)[1].split("</testcase>", 1)[0]
        assert f'name="migsafe_pool_leaks" value="{leaks}"' in case, case


def test_a_true_leak_fails_when_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaks=HEADER + textwrap.dedent(TRUE_LEAKS))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-o", "migsafe_fail_on_leaks=true")
    result.assert_outcomes(failed=2)


APP_LOOP = """
def per_row(engine, n):
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text("select :i"), {"i": i})  # one shape, n times, one line
"""

N_PLUS_ONE = """
    from app_loops import per_row

    def test_loops():
        per_row(ENGINE, 12)
"""


@pytest.mark.parametrize("error_filter", [("-W", "error"), ("-o", "filterwarnings=error")])
def test_unasked_notices_never_fail_under_warnings_as_errors(pytester: pytest.Pytester,
                                                             error_filter: tuple[str, str]) -> None:
    pytester.makepyfile(app_loops="from sqlalchemy import text\n" + APP_LOOP)
    pytester.makepyfile(test_noticed=HEADER + textwrap.dedent(N_PLUS_ONE) + textwrap.dedent(TRUE_LEAKS))
    result = same_outcomes_with_and_without(pytester, *error_filter)
    result.assert_outcomes(passed=3, warnings=3)
    result.stdout.fnmatch_lines(["*NPlusOneWarning: N+1 suspected*", "*connection leaked*"])


STRICT_RECORDERS = """
    import warnings

    @pytest.fixture
    def no_warnings_at_all(recwarn):
        yield
        assert not recwarn.list, [str(w.message) for w in recwarn.list]

    @pytest.fixture
    def own_recorder():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield
        assert not seen, [str(w.message) for w in seen]

    def test_loops_under_recwarn(no_warnings_at_all):
        per_row(ENGINE, 12)

    def test_loops_under_a_recorder(own_recorder):
        per_row(ENGINE, 12)

    def test_leaks_under_recwarn(no_warnings_at_all):
        HELD.append(ENGINE.connect())
"""


@pytest.mark.parametrize("extra", [(), ("-p", "no:warnings"), ("-n", "2")])
def test_a_fixture_that_records_warnings_never_sees_the_notices(pytester: pytest.Pytester,
                                                                extra: tuple[str, ...]) -> None:
    """A test's own warning recorder (``recwarn``, ``catch_warnings(record=True)``) asserting at
    its teardown that nothing was warned passes: the notices go to pytest's summary alone."""
    pytester.makepyfile(app_loops="from sqlalchemy import text\n" + APP_LOOP)
    pytester.makepyfile(test_strict=HEADER + "from app_loops import per_row\nHELD = []\n"
                        + textwrap.dedent(STRICT_RECORDERS))
    result = same_outcomes_with_and_without(pytester, *extra, "-rP")
    if "no:warnings" in extra:
        # a project that turns pytest's warnings plugin off gets no warnings summary (it got one,
        # of the plugin's notices alone): they are written as Python writes a warning pytest does
        # not capture, on the test's stderr
        result.assert_outcomes(passed=3)
        assert "warnings summary" not in result.stdout.str()
        result.stdout.fnmatch_lines(["*Captured stderr call*", "*NPlusOneWarning: N+1 suspected*",
                                     "*Captured stderr call*", "*NPlusOneWarning: N+1 suspected*"])
        # (a leak is told once the test's own teardown is over: in its teardown's output)
        result.stdout.fnmatch_lines(["*Captured stderr teardown*", "*ConnectionLeakWarning: migsafe: connection leaked*"])
        return
    result.assert_outcomes(passed=3, warnings=3)
    result.stdout.fnmatch_lines(["*NPlusOneWarning: N+1 suspected*", "*connection leaked*"])


def test_a_project_filter_that_ignores_the_notice_is_respected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(app_loops="from sqlalchemy import text\n" + APP_LOOP)
    pytester.makepyfile(test_noticed=HEADER + textwrap.dedent(N_PLUS_ONE))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error",
                                           "-W", "ignore::pytest_migsafe.NPlusOneWarning")
    result.assert_outcomes(passed=1)


EVERY_PART = f"""
    import asyncio
    import redis
    from psycopg_pool import ConnectionPool
    from pytest_migsafe.shadow.experiment import Shadow

    REDIS = redis.Redis.from_url({REDIS_URL!r})
    POOL = ConnectionPool(DSN, min_size=1, max_size=2, open=False)
    HELD = []

    @pytest.fixture(scope="module", autouse=True)
    def opened_pool():
        POOL.open(wait=True)
        yield
        for conn in HELD:
            POOL.putconn(conn)
        POOL.close()

    def test_queries_and_n_plus_one():
        from app_loops import per_row
        per_row(ENGINE, 15)

    def test_a_leaked_pool_connection():
        HELD.append(POOL.getconn())

    def test_cache_reads():
        REDIS.set("harm:key", "1")
        assert REDIS.get("harm:key") == b"1" and REDIS.get("harm:missing") is None

    def test_a_shadow_experiment_used_as_a_library():
        assert Shadow(seed=1).run("same", lambda: 1, lambda: 1) == 1

    def test_an_async_statement():
        async def main():
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine(URL)
            async with engine.connect() as conn:
                await conn.execute(text("select 1"))
            await engine.dispose()
        asyncio.run(main())

    def test_a_real_failure():
        assert 1 == 2

    @pytest.mark.skip(reason="skipped on purpose")
    def test_skipped():
        pass
"""


def test_a_suite_using_every_part_without_markers_has_the_same_outcomes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(app_loops="from sqlalchemy import text\n" + APP_LOOP)
    pytester.makepyfile(test_every_part=HEADER + textwrap.dedent(EVERY_PART))
    result = same_outcomes_with_and_without(pytester)
    result.assert_outcomes(passed=5, failed=1, skipped=1, warnings=2)


def test_lazy_objects_in_the_heap_are_never_evaluated(pytester: pytest.Pytester) -> None:
    """Django's settings are a lazy object: evaluating it unconfigured raises ImproperlyConfigured."""
    pytester.makeconftest(f"""
        from django.conf import settings  # imported, never configured
        from psycopg_pool import ConnectionPool
        from sqlalchemy import create_engine

        ENGINE = create_engine({URL!r})  # created before any hook
        POOL = ConnectionPool({DSN!r}, min_size=1, max_size=1, open=False)
    """)
    pytester.makepyfile(test_lazy="""
        from sqlalchemy import text
        from conftest import ENGINE

        def test_runs():
            with ENGINE.connect() as conn:
                assert conn.execute(text("select 1")).scalar() == 1
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)


def test_the_sql_parser_loads_only_when_a_shape_is_shown(pytester: pytest.Pytester) -> None:
    """Statements are grouped without a parser: at the defaults, a suite that runs SQL and
    shows no shape never imports sqlglot (about 0.1 s and a larger heap); the report does,
    for the shapes it shows, at the end (no test's record works out its shapes as it runs)."""
    pytester.makeconftest("""
        import sys

        def pytest_sessionfinish(session):
            print("sqlglot imported by the tests:", "sqlglot" in sys.modules)

        def pytest_unconfigure(config):
            print("sqlglot imported:", "sqlglot" in sys.modules)
    """)
    pytester.makepyfile(dashboard="""
        from sqlalchemy import text

        def dashboard(conn):  # ten statements from one function, each of its own shape: no N+1
            for name in "abcdefghij":
                conn.execute(text(f"SELECT 1 AS {name}_col"))
    """)
    pytester.makepyfile(test_sql="""
        from sqlalchemy import create_engine, text
        from dashboard import dashboard

        def test_reads():
            engine = create_engine("sqlite://")
            with engine.connect() as conn:
                for i in range(3):
                    conn.execute(text(f"SELECT {i} + 1"))

        def test_dashboard():
            with create_engine("sqlite://").connect() as conn:
                dashboard(conn)

        def test_a_long_batched_insert():  # over 4 kB: grouped by its digest, not its parsed shape
            rows = ", ".join(f"({i}, 'name {i}')" for i in range(300))
            with create_engine("sqlite://").connect() as conn:
                conn.execute(text("CREATE TABLE items (id INTEGER, name TEXT)"))
                conn.execute(text(f"INSERT INTO items (id, name) VALUES {rows}"))
    """)
    at_defaults = pytester.runpytest_subprocess("-p", "no:randomly", "-s")
    at_defaults.assert_outcomes(passed=3)
    at_defaults.stdout.fnmatch_lines(["*sqlglot imported by the tests: False*", "*sqlglot imported: False*"])
    # (a text over counter.PENDING_TEXT_CHARS, the long insert, has its shape worked out as its test ends)
    with_report = pytester.runpytest_subprocess("-p", "no:randomly", "-s", "--migsafe-report", "-k", "not long")
    with_report.assert_outcomes(passed=2, deselected=1)
    with_report.stdout.fnmatch_lines(["*sqlglot imported by the tests: False*", "*migsafe report*",
                                      "*heaviest*", "*SELECT ? + ?*", "*sqlglot imported: True*"])
    # a file written at the end (JSON, SARIF, a baseline) has every shape worked out as its test
    # ends, not all at the end, where an interrupt (a CI runner's SIGTERM) would lose the file
    with_json = pytester.runpytest_subprocess("-p", "no:randomly", "-s", "--migsafe-report-json=out.json",
                                              "-k", "not long")
    with_json.assert_outcomes(passed=2, deselected=1)
    with_json.stdout.fnmatch_lines(["*sqlglot imported by the tests: True*"])


# the parts a session loads only when it uses them (a marker, an option, a fixture)
OPTIONAL_MODULES = ("pytest_migsafe.queries.explain", "pytest_migsafe.report.render",
                    "pytest_migsafe.report.regressions", "pytest_migsafe.report.baseline",
                    "pytest_migsafe.shadow.experiment", "pytest_migsafe.cache.stats",
                    "pytest_migsafe.servers.postgres", "pytest_migsafe.servers.redis")


def test_parts_a_session_does_not_use_are_not_imported_at_start_up(pytester: pytest.Pytester) -> None:
    """Start-up cost: a session with SQL but no index check, report, shadow experiment, cache
    figures or server imports none of their modules (about 14 ms of imports and 80 M
    instructions a session once); each loads when asked for."""
    pytester.makeconftest(f"""
        import sys

        OPTIONAL = {OPTIONAL_MODULES!r}

        def pytest_sessionfinish(session):
            print("optional imported:", sorted(name for name in OPTIONAL if name in sys.modules))
    """)
    pytester.makepyfile(test_sql="""
        import pytest
        from sqlalchemy import create_engine, text

        def test_reads():
            with create_engine("sqlite://").connect() as conn:
                conn.execute(text("SELECT 1"))

        @pytest.mark.min_cache_hit_rate(0.5)
        def test_a_marker_checked_at_collection_only():
            pass
    """)
    plain = pytester.runpytest_subprocess("-p", "no:randomly", "-s", "-k", "reads")
    plain.assert_outcomes(passed=1)
    plain.stdout.fnmatch_lines(["*optional imported: []*"])
    asked = pytester.runpytest_subprocess("-p", "no:randomly", "-s", "-k", "reads", "--migsafe-report",
                                          "--migsafe-explain=warn")
    asked.assert_outcomes(passed=1)
    asked.stdout.fnmatch_lines(["*optional imported: [[]'pytest_migsafe.queries.explain', "
                                "'pytest_migsafe.report.baseline', 'pytest_migsafe.report.regressions', "
                                "'pytest_migsafe.report.render'[]]*"])


def test_statements_in_tasks_without_a_user_frame_change_no_outcome(pytester: pytest.Pytester) -> None:
    """An asyncio task made from a library coroutine (``asyncio.gather(session.scalar(...))``)
    has no user frame on its stack, nor on its greenlets' stacks: the call-site walk once
    recursed there until RecursionError, failing the test. Now its site is the framework's."""
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_tasks=f"""
        import asyncio
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

        async def test_gathered_session_queries():
            engine = create_async_engine({URL!r})
            try:
                async with AsyncSession(engine) as first, AsyncSession(engine) as second:
                    values = await asyncio.gather(first.scalar(text("SELECT 1")),
                                                  second.scalar(text("SELECT 2")))
                assert values == [1, 2]
            finally:
                await engine.dispose()

        async def test_a_task_on_a_checked_out_connection():
            engine = create_async_engine("sqlite+aiosqlite:///:memory:")
            try:
                async with engine.connect() as conn:
                    assert await asyncio.create_task(conn.scalar(text("SELECT 1"))) == 1
            finally:
                await engine.dispose()
    """)
    result = same_outcomes_with_and_without(pytester)
    result.assert_outcomes(passed=2)
    report = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report")
    report.assert_outcomes(passed=2)
    # counted, at the framework's frame (no user frame sent them)
    report.stdout.fnmatch_lines(["*test_gathered_session_queries*x2 SELECT ? at <*>*",
                                 "*test_a_task_on_a_checked_out_connection*x1 SELECT ? at <*>*"])


@pytest.mark.parametrize("core_plugin", ["python", "terminal", "logging", "junitxml", "unittest", "skipping"])
def test_a_core_pytest_plugin_turned_off_changes_no_outcome(pytester: pytest.Pytester, core_plugin: str) -> None:
    """``-p no:python`` (a suite of doctests alone) was an INTERNALERROR: the plugin read the
    ``python_files`` ini key, which only pytest's python plugin registers."""
    pytester.makefile(".txt", doc=">>> 1 + 1\n2\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    args = ("-p", f"no:{core_plugin}", "--doctest-glob=*.txt", "-p", "no:randomly")
    off = pytester.runpytest_subprocess("-p", "no:migsafe", *args)
    for extra in ((), ("--migsafe-report",)):
        on = pytester.runpytest_subprocess(*args, *extra)
        assert on.ret == off.ret == pytest.ExitCode.OK, on.stdout.str() + on.stderr.str()
        assert "INTERNALERROR" not in on.stdout.str() + on.stderr.str()


JUNIT_CONFTEST = """
import pytest

@pytest.fixture
def ticket(request):
    request.node.user_properties.append(("ticket", "ABC-1"))
    yield
    assert request.node.user_properties == [("ticket", "ABC-1")]

def pytest_runtest_logreport(report):
    if report.when == "call":
        assert [name for name, _ in report.user_properties] == ["ticket"], report.user_properties
"""


def test_junitxml_alone_adds_nothing_to_a_tests_user_properties(pytester: pytest.Pytester) -> None:
    """``--junitxml`` alone (no report asked for) leaves each test's ``user_properties`` as the
    project made them (the plugin once added its ``migsafe_*`` figures there: a fixture
    checking its own properties failed at teardown); the figures go into the XML when asked:
    ini ``migsafe_junit_properties = true`` (or a report option)."""
    import xml.etree.ElementTree as ET

    pytester.makeconftest(JUNIT_CONFTEST)
    pytester.makepyfile(test_props="""
        from sqlalchemy import create_engine, text

        def test_query(ticket):
            with create_engine("sqlite://").connect() as conn:
                assert conn.execute(text("select 1")).scalar() == 1
    """)
    for plugin in ("-p", "no:migsafe"), ():
        result = pytester.runpytest_subprocess("-p", "no:randomly", "--junitxml=out.xml", *plugin)
        result.assert_outcomes(passed=1)
        names = [p.get("name") for p in ET.parse(pytester.path / "out.xml").iter("property")]
        assert names == ["ticket"]
    (pytester.path / "conftest.py").write_text(JUNIT_CONFTEST.replace("assert", "pass  #"))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--junitxml=out.xml",
                                           "-o", "migsafe_junit_properties=true")
    result.assert_outcomes(passed=1)
    names = [p.get("name") for p in ET.parse(pytester.path / "out.xml").iter("property")]
    assert names[0] == "ticket" and "migsafe_queries" in names and "migsafe_pool_peak_checked_out" in names
