"""Query capture against the real PostgreSQL (and SQLite): each statement exactly once."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
from collections.abc import Iterator

import loops
import psycopg
import pytest
from loops import run_driver_sql, run_statements
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine

from pytest_migsafe import count_queries
from pytest_migsafe.queries import counter as capture
from pytest_migsafe.queries import dispatch
from pytest_migsafe.queries.budgets import (
    QueryBudgetExceeded,
    assert_max_queries,
    assert_num_queries,
)

PG_URL = os.environ.get("MIGSAFE_POSTGRES_URL", "")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = create_engine(PG_URL)
    with eng.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS cap_items"))
        conn.execute(text("CREATE TABLE cap_items (id serial primary key, name text, n int)"))
    yield eng
    with eng.begin() as conn:
        conn.execute(text("DROP TABLE cap_items"))
    eng.dispose()


def server_calls(dsn: str) -> int:
    """Calls in pg_stat_statements for this database, transaction control and our own query excluded."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        (calls,) = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = current_database()"
            " AND s.query !~* '^\\s*(begin|commit|rollback|savepoint|release|start transaction|end)'"
            " AND s.query NOT LIKE '%pg_stat_statements%'"
        ).fetchone()
    return int(calls)


def test_sqlalchemy_on_psycopg_counts_each_statement_once(engine: Engine) -> None:
    with engine.connect() as conn, count_queries() as counter:
        for i in range(3):
            conn.execute(text("SELECT :i"), {"i": i})
    assert counter.count == 3
    assert [q.shape for q in counter.queries] == [counter.queries[0].shape] * 3


def test_texts_of_one_shape_are_one_shape_however_they_are_written(engine: Engine, pg_dsn: str) -> None:
    """Statements are grouped as they run by a key made without a parser, and shown by their
    readable shape: texts differing in literals, list lengths, case, spacing and comments are
    one shape, counted as often as the server ran them."""
    from pytest_migsafe.queries.normalize import normalize

    texts = ["SELECT count(*) FROM cap_items WHERE n IN (1, 2) AND id = 1::int",
             "select COUNT(*) from cap_items where n in (3, 4, 5) and id = 2::INT",
             "SELECT count(*)\n  FROM cap_items WHERE n IN (6) -- one\n AND id = CAST(3 AS int)"]
    before = server_calls(pg_dsn)
    with engine.connect() as conn, count_queries() as counter:
        for sql in texts:
            conn.execute(text(sql))
    ran = server_calls(pg_dsn) - before
    assert len(counter._shapes) == 3  # grouped by text as they ran, merged when shown
    (stats,) = counter.summary()
    assert stats.count == counter.count == ran == 3
    assert stats.shape == normalize(texts[0]) == "SELECT COUNT(*) FROM cap_items WHERE n IN (?) AND id = CAST(? AS INT)"
    assert {q.shape for q in counter.queries} == {stats.shape}


@pytest.mark.parametrize("first, second", [
    ("SELECT '{}'::jsonb ->> 'email' WHERE :i >= 0", "SELECT '{}'::jsonb ->> 'name' WHERE :i >= 0"),
    (r"SELECT name FROM cap_items WHERE name LIKE 'a\_%' ESCAPE '\' AND n > :i",
     r"SELECT name FROM cap_items WHERE name LIKE 'a\_%' ESCAPE '\' ORDER BY n DESC LIMIT :i"),
    ("SELECT now() - interval '1 day' WHERE :i >= 0", "SELECT now() - interval '2 hours' WHERE :i >= 0"),
], ids=["json keys", "backslash strings", "interval units"])
def test_statements_that_differ_are_never_one_shape(engine: Engine, first: str, second: str) -> None:
    """Two statements whose readable shapes differ stay apart (a grouping key coarser than the
    readable shape once merged them: a false N+1 of 10 from two loops of 5, and a SELECT the
    index check never planned)."""
    with engine.connect() as conn, count_queries() as counter:
        run_statements(conn, first, 5)
        run_statements(conn, second, 5)
    assert sorted(stats.count for stats in counter.summary()) == [5, 5]
    assert counter.n_plus_one(10) == []


def test_a_call_site_is_the_user_frame_whatever_the_library_frames_below_it(
        tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library that calls back into user code, at the depth where a statement came from the
    library alone before: the statements of the callback are the callback's (a remembered path
    once put them at the test's line, where they made no N+1 suspect)."""
    import functools
    import importlib
    import pathlib

    library = pathlib.Path(str(tmp_path)) / "site-packages"
    library.mkdir()
    (library / "migsafe_probe_lib.py").write_text(
        "def call(conn, callback, pad):\n"
        "    return _step(conn, callback, pad)\n\n\n"
        "def _step(conn, callback, pad):\n"
        "    if pad:\n"
        "        return _step(conn, callback, pad - 1)\n"
        "    if callback is not None:\n"
        "        return callback(conn)\n"
        "    return conn.exec_driver_sql('select 1')\n")
    monkeypatch.syspath_prepend(str(library))
    lib = importlib.import_module("migsafe_probe_lib")
    engine = create_engine("sqlite://")
    with engine.connect() as conn, count_queries() as counter:
        lib.call(conn, None, 5)
        lib.call(conn, functools.partial(run_driver_sql, sql="select 3", n=12), 4)
    (suspect,) = counter.n_plus_one(10)
    loop_line = inspect.getsourcelines(run_driver_sql)[1] + 3
    assert (suspect.count, suspect.call_site) == (12, f"{os.path.relpath(loops.__file__)}:{loop_line}"), suspect


def test_raw_psycopg_sync_counts_cursor_and_connection_execute(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn, count_queries() as counter:
        conn.execute("SELECT 1")
        with conn.cursor() as cur:
            cur.execute("SELECT %s", (2,))
            cur.executemany("SELECT %s", [(1,), (2,), (3,)])
    assert counter.count == 3
    assert counter.executions == 5
    assert counter.queries[-1].batch_size == 3


def test_raw_psycopg_async_counts(pg_dsn: str) -> None:
    async def main() -> int:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            with count_queries() as counter:
                await conn.execute("SELECT 1")
                async with conn.cursor() as cur:
                    await cur.execute("SELECT %s", (2,))
            return counter.count

    assert asyncio.run(main()) == 2


def test_sqlalchemy_async_engine_counts_once_with_user_call_site() -> None:
    async def main() -> capture.QueryCounter:
        eng = create_async_engine(PG_URL.replace("+psycopg", "+psycopg_async") if "+psycopg" in PG_URL
                                  else PG_URL)
        async with eng.connect() as conn:
            await conn.execute(text("SELECT 1"))  # first connect outside the counter
            with count_queries() as counter:
                await conn.execute(text("SELECT 2"))
                await asyncio.gather(*(conn.execute(text("SELECT 3")) for _ in range(1)))
        await eng.dispose()
        return counter

    counter = asyncio.run(main())
    assert counter.count == 2
    assert all(q.call_site.startswith("tests/queries/test_capture.py:") for q in counter.queries)


_LIBRARY_CODE = """
import sys
import greenlet
from pytest_migsafe.queries import callsite

def child():
    here = sys._getframe()
    return callsite.site_from(here), callsite.origin_of(here)

def parent():  # a greenlet whose stack holds library code only
    return greenlet.greenlet(child).switch()
"""


def test_a_greenlet_stack_without_user_frames_passes_to_the_next_ancestor() -> None:
    # child greenlet -> parent greenlet (library frames only) -> this test's greenlet: the walk
    # once went back to the parent's stack again and again (RecursionError in the user's call)
    import greenlet

    namespace: dict[str, object] = {}
    exec(compile(_LIBRARY_CODE, os.path.join(os.sep, "nowhere", "site-packages", "fake_lib.py"), "exec"),
         namespace)
    site, origin = greenlet.greenlet(namespace["parent"]).switch()
    line = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
    assert site == f"tests/queries/test_capture.py:{line}"
    assert origin.test_site == site


def test_statements_in_other_threads_count(engine: Engine) -> None:
    def work() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    with count_queries() as counter:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert counter.count == 4


def test_statements_in_asyncio_tasks_count(pg_dsn: str) -> None:
    async def one() -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            await conn.execute("SELECT 1")

    async def main() -> int:
        with count_queries() as counter:
            await asyncio.gather(*(one() for _ in range(3)))
        return counter.count

    assert asyncio.run(main()) == 3


def test_count_equals_pg_stat_statements_delta(engine: Engine, pg_dsn: str) -> None:
    """The plugin's count for a block equals the server's own count over the same block."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))  # warm: first connect happened in the fixture or here
        conn.commit()
        before = server_calls(pg_dsn)
        with count_queries() as counter:
            for i in range(5):
                conn.execute(text("INSERT INTO cap_items (name, n) VALUES (:n, :i)"), {"n": "x", "i": i})
            conn.execute(text("SELECT * FROM cap_items WHERE n IN (1, 2, 3)"))
            conn.execute(text("UPDATE cap_items SET n = n + 1 WHERE name = :n"), {"n": "x"})
            conn.commit()
            with conn.begin_nested():
                conn.execute(text("DELETE FROM cap_items WHERE n > 100"))
            conn.commit()
        after = server_calls(pg_dsn)
    with psycopg.connect(pg_dsn) as raw:
        before_raw = server_calls(pg_dsn)
        with count_queries() as raw_counter:
            raw.execute("SELECT count(*) FROM cap_items")
            with raw.cursor() as cur:
                cur.executemany("INSERT INTO cap_items (name, n) VALUES (%s, %s)", [("y", 1), ("y", 2)])
            raw.commit()
        after_raw = server_calls(pg_dsn)
    assert counter.count == 8
    assert after - before == counter.count
    # executemany is one statement with its batch size; the server counts each execution
    assert raw_counter.count == 2
    assert after_raw - before_raw == raw_counter.executions == 3


def test_transaction_control_excluded_by_default_and_included_on_request(engine: Engine) -> None:
    with engine.connect() as conn:
        with count_queries() as default, count_queries(include_transaction_control=True) as full:
            with conn.begin():
                with conn.begin_nested():
                    conn.execute(text("SELECT 1"))
    assert default.count == 1
    assert full.count == 3  # SAVEPOINT, SELECT, RELEASE (BEGIN/COMMIT go through the DBAPI, not a cursor)


def _next_line() -> int:
    """The line after the caller's."""
    return sys._getframe(1).f_lineno + 1


def test_transaction_control_keeps_its_call_site_where_a_counter_receives_it(pg_dsn: str) -> None:
    """A BEGIN or SAVEPOINT that no active counter receives costs no call-site walk; one that a
    counter with include_transaction_control receives keeps the line that sent it, on every
    driver hook (psycopg sync and async; SQLAlchemy's dialect on SQLite, which psycopg does
    not see), also with a default counter active around it."""
    lite = create_engine("sqlite://")
    lines = []

    async def send_async() -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            lines.append(_next_line())
            await conn.execute("SAVEPOINT in_async")

    with psycopg.connect(pg_dsn) as raw, lite.connect() as conn:
        with count_queries() as outer:
            with count_queries(include_transaction_control=True) as full:
                lines.append(_next_line())
                raw.execute("SAVEPOINT in_sync")
                for _ in range(2):  # (the second time a known text: the dialect hook's fast path)
                    lines.append(_next_line())
                    conn.exec_driver_sql("SAVEPOINT in_sqlite")
                asyncio.run(send_async())
            assert dispatch.control_wanted is False  # the one counter that wanted them stopped
            raw.execute("SAVEPOINT after")  # received by no counter
            raw.execute("SELECT 1")
    here = os.path.relpath(__file__)
    assert [(q.sql, q.call_site) for q in full.queries] == [
        ("SAVEPOINT in_sync", f"{here}:{lines[0]}"), ("SAVEPOINT in_sqlite", f"{here}:{lines[1]}"),
        ("SAVEPOINT in_sqlite", f"{here}:{lines[2]}"), ("SAVEPOINT in_async", f"{here}:{lines[3]}")]
    assert [q.sql for q in outer.queries] == ["SELECT 1"]


def test_sqlite_counts_and_executemany_batch() -> None:
    eng = create_engine("sqlite://")
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE t (a int)"))
        with count_queries() as counter:
            conn.execute(text("INSERT INTO t VALUES (:a)"), [{"a": i} for i in range(7)])
            conn.execute(text("SELECT a FROM t WHERE a IN (1, 2, 3)"))
            conn.execute(text("SELECT a FROM t WHERE a IN (4)"))
    assert counter.count == 3
    assert counter.executions == 9
    shapes = [s.shape for s in counter.summary()]
    assert len(shapes) == 2  # IN lists of any length are one shape


def test_match_ignore_and_using_filters(engine: Engine) -> None:
    lite = create_engine("sqlite://")
    with engine.connect() as pg, lite.connect() as sq:
        with count_queries(match=r"cap_items") as matched, count_queries(ignore=r"cap_items") as ignored, \
                count_queries(engine=lite) as only_sqlite, count_queries() as everything:
            pg.execute(text("SELECT count(*) FROM cap_items"))
            pg.execute(text("SELECT 1"))
            sq.execute(text("SELECT 2"))
    assert (matched.count, ignored.count, only_sqlite.count, everything.count) == (1, 2, 1, 3)


def test_stored_statements_stop_at_cap_but_count_stays_exact() -> None:
    eng = create_engine("sqlite://")
    with eng.connect() as conn, count_queries(keep=5) as counter:
        for i in range(12):
            conn.execute(text("SELECT :i"), {"i": i})
    assert counter.count == 12
    assert len(counter.queries) == 5
    assert counter.omitted == 7
    assert "7 statements counted but not kept" in counter.describe()
    assert counter.summary()[0].count == 12


def test_parameters_not_stored_unless_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = create_engine("sqlite://")
    with eng.connect() as conn:
        with count_queries() as hidden:
            conn.execute(text("SELECT :secret"), {"secret": "s3cr3t"})
        monkeypatch.setattr(capture.settings, "capture_params", True)
        with count_queries() as shown:
            conn.execute(text("SELECT :secret"), {"secret": "s3cr3t"})
    assert hidden.queries[0].params is None
    assert "s3cr3t" in repr(shown.queries[0].params)


def test_call_site_is_the_users_line() -> None:
    eng = create_engine("sqlite://")
    with eng.connect() as conn, count_queries() as counter:
        conn.execute(text("SELECT 1")); line = counter_line()
    assert counter.queries[0].call_site == f"tests/queries/test_capture.py:{line}"


def counter_line() -> int:
    import sys

    return sys._getframe(1).f_lineno


def test_n_plus_one_suspects_and_specific_allow_list() -> None:
    eng = create_engine("sqlite://")
    with eng.connect() as conn, count_queries() as counter:
        run_statements(conn, "SELECT :i", 12)
    (suspect,) = counter.n_plus_one(threshold=10)
    assert suspect.count == 12 and not suspect.allowed
    assert counter.n_plus_one(10, allow=[("SELECT :x", 12)])[0].allowed
    assert not counter.n_plus_one(10, allow=[("SELECT :x", 11)])[0].allowed
    assert counter.n_plus_one(threshold=13) == []


def test_statements_sent_from_the_test_module_itself_make_no_n_plus_one_suspect() -> None:
    eng = create_engine("sqlite://")
    with eng.connect() as conn, count_queries() as counter:
        for i in range(12):  # the test's own arrangement: it still counts
            conn.execute(text("SELECT :i"), {"i": i})
    assert counter.count == 12
    assert counter.n_plus_one(threshold=10) == []


def test_budget_context_managers_name_shapes_and_sites() -> None:
    eng = create_engine("sqlite://")
    with eng.connect() as conn:
        with assert_num_queries(2):
            conn.execute(text("SELECT 1"))
            conn.execute(text("SELECT 2"))
        with pytest.raises(QueryBudgetExceeded) as info, assert_max_queries(1):
            for _ in range(3):
                conn.execute(text("SELECT 1 WHERE 1 = :x"), {"x": 1})
    message = str(info.value)
    assert message.startswith("assert_max_queries: expected at most 1 query, 3 ran")
    assert "x3 at tests/queries/test_capture.py:" in message


def test_copy_counts_once_and_matches_the_server(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TEMP TABLE cap_copy (a int, b text)")
        conn.commit()
        before = server_calls(pg_dsn)
        with count_queries() as counter:
            with conn.cursor() as cur, cur.copy("COPY cap_copy (a, b) FROM STDIN") as copy:
                for i in range(50):
                    copy.write_row((i, f"row {i}"))
            conn.commit()
        after = server_calls(pg_dsn)
        assert conn.execute("SELECT count(*) FROM cap_copy").fetchone() == (50,)
    assert counter.count == 1
    assert counter.queries[0].call_site.startswith("tests/queries/test_capture.py:")
    assert after - before == counter.count


@pytest.mark.parametrize("read", ["all", "left-early"])
def test_copy_to_counts_when_its_rows_were_read_to_the_end(pg_dsn: str, read: str) -> None:
    """A ``COPY ... TO STDOUT`` counts when its rows were read to the end. A block left early
    (``break``) on a large output neither finishes nor cancels it in psycopg: the server never
    completes it (nothing in pg_stat_statements), and it was counted as run."""
    rows = 1_000 if read == "all" else 3_000_000
    before = server_calls(pg_dsn)
    with count_queries() as counter:
        conn = psycopg.connect(pg_dsn, autocommit=True)
        with conn.cursor() as cur, cur.copy(f"COPY (SELECT g FROM generate_series(1, {rows}) g) TO STDOUT") as copy:
            for _ in copy:
                if read == "left-early":
                    break
        conn.close()
    after = server_calls(pg_dsn)
    assert counter.count == (1 if read == "all" else 0)
    assert after - before == counter.count


def _deallocate_calls(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        (calls,) = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = current_database() AND s.query ILIKE 'deallocate%'").fetchone()
    return int(calls)


def test_psycopgs_deallocate_after_a_rollback_is_the_drivers_upkeep_not_counted(pg_dsn: str) -> None:
    """README: psycopg prepares a statement at its 5th run and, at a rollback, sends
    ``DEALLOCATE ALL`` through the driver (not a cursor). PostgreSQL 17 and later record it
    in pg_stat_statements (earlier ones skip DEALLOCATE); the plugin, as for ``rollback()``
    itself, does not: every other statement is counted."""
    before, deallocated = server_calls(pg_dsn), _deallocate_calls(pg_dsn)
    with psycopg.connect(pg_dsn) as conn, count_queries() as counter:
        for i in range(6):
            conn.execute("SELECT %s::int", (i,))
        conn.rollback()
        recorded = 1 if conn.info.server_version >= 170000 else 0
    assert counter.count == 6
    assert _deallocate_calls(pg_dsn) - deallocated == recorded
    assert server_calls(pg_dsn) - before == counter.count + recorded


def test_async_copy_to_left_early_is_not_counted(pg_dsn: str) -> None:
    """The async twin of the COPY TO left early: the server never completes it."""
    async def main() -> int:
        conn = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
        with count_queries() as counter:
            async with conn.cursor() as cur, cur.copy(
                    "COPY (SELECT g FROM generate_series(1, 3000000) g) TO STDOUT") as copy:
                async for _ in copy:
                    break
        await conn.close()
        return counter.count

    before = server_calls(pg_dsn)
    assert asyncio.run(main()) == 0
    assert server_calls(pg_dsn) - before == 0


def test_async_copy_counts_once(pg_dsn: str) -> None:
    async def main() -> int:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            await conn.execute("CREATE TEMP TABLE cap_acopy (a int)")
            with count_queries() as counter:
                async with conn.cursor() as cur, cur.copy("COPY cap_acopy (a) FROM STDIN") as copy:
                    for i in range(10):
                        await copy.write_row((i,))
            return counter.count

    assert asyncio.run(main()) == 1


def test_every_module_of_the_package_is_library_code_for_call_sites() -> None:
    """Call sites skip the plugin's own frames in every subpackage, not only the capture's."""
    import pathlib

    import pytest_migsafe
    from pytest_migsafe.queries.callsite import is_user_file

    package = pathlib.Path(pytest_migsafe.__file__).parent
    modules = sorted(package.rglob("*.py"))
    assert len({m.parent for m in modules}) > 1  # subpackages exist
    assert [str(m) for m in modules if is_user_file(str(m))] == []


def test_separate_calls_of_one_function_from_different_test_lines_are_not_one_loop() -> None:
    eng = create_engine("sqlite://")
    with eng.connect() as conn, count_queries() as counter:
        run_statements(conn, "SELECT :i", 4)  # one loop of 4 ...
        run_statements(conn, "SELECT :i", 4)  # ... and another call, from another line
        run_statements(conn, "SELECT :i", 4)
    assert counter.count == 12
    assert counter.n_plus_one(threshold=10) == []
    with eng.connect() as conn, count_queries() as looped:
        for _ in range(3):  # the same line of the test, three times: one pattern of 12
            run_statements(conn, "SELECT :i", 4)
    assert [s.count for s in looped.n_plus_one(threshold=10)] == [12]


# -- SQLAlchemy is hooked at its dialect, not through Engine events ---------------------
def test_the_capture_listens_to_no_engine_event() -> None:
    """One Engine listener makes SQLAlchemy dispatch its events on every statement of every
    engine (more than the capture itself costs): the capture wraps the dialect instead."""
    from pytest_migsafe.queries import drivers

    drivers.install()
    engine = create_engine("sqlite://")
    with count_queries() as counter, engine.connect() as conn:
        conn.execute(text("select 1"))
    assert counter.count == 1
    assert not Engine._has_events and not engine._has_events  # no ConnectionEvents listener, anywhere


def test_a_dialect_class_defined_later_and_an_override_calling_super_count_once() -> None:
    from sqlalchemy.dialects import registry
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    class LateDialect(SQLiteDialect_pysqlite):  # defined after the hooks, as a third-party dialect would be
        calls = 0
        supports_statement_cache = True

        def do_execute(self, cursor, statement, parameters, context=None):  # type: ignore[no-untyped-def]
            LateDialect.calls += 1
            cursor.execute(statement, parameters)  # its own, no super(): seen only if this class is hooked

        def do_executemany(self, cursor, statement, parameters, context=None):  # type: ignore[no-untyped-def]
            super().do_executemany(cursor, statement, parameters, context)

    registry.register("sqlite.migsafe_late", __name__, "LateDialect")
    globals()["LateDialect"] = LateDialect
    engine = create_engine("sqlite+migsafe_late://")
    with engine.begin() as conn:
        conn.execute(text("create table late (n int)"))
    with count_queries() as counter, engine.begin() as conn:
        conn.execute(text("insert into late values (:n)"), [{"n": 1}, {"n": 2}, {"n": 3}])
        conn.execute(text("select n from late"))
    assert LateDialect.calls >= 1
    assert counter.count == 2  # the batch once (3 executions), the select once
    assert counter.executions == 4
    assert [q.call_site.rsplit(":", 1)[0] for q in counter.queries] == ["tests/queries/test_capture.py"] * 2


def test_a_psycopg_dialect_counts_once_with_or_without_an_override_of_its_own(engine: Engine) -> None:
    """A psycopg engine's statements are recorded by the psycopg hook alone; a subclass that
    overrides ``do_execute`` keeps its override, and each statement still counts once."""
    from sqlalchemy.dialects import registry
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    class AuditingDialect(PGDialect_psycopg):
        calls = 0
        supports_statement_cache = True

        def do_execute(self, cursor, statement, parameters, context=None):  # type: ignore[no-untyped-def]
            AuditingDialect.calls += 1
            super().do_execute(cursor, statement, parameters, context)  # OVERRIDE

    registry.register("postgresql.migsafe_auditing", __name__, "AuditingDialect")
    globals()["AuditingDialect"] = AuditingDialect
    audited = create_engine(str(engine.url.set(drivername="postgresql+migsafe_auditing")
                                .render_as_string(hide_password=False)))
    try:
        with audited.connect():  # its first connection's own checks, before counting
            pass
        source = inspect.getsource(inspect.getmodule(helper_sends)).splitlines()  # type: ignore[arg-type]
        sent, override = (next(i for i, t in enumerate(source, 1) if t.endswith(marker))
                          for marker in ("# SENT", "# OVERRIDE"))
        # the innermost user frame: the test's line, or the user's own dialect's
        for one, calls, line in ((engine, 0, sent), (audited, 3, override)):
            before = AuditingDialect.calls
            with count_queries() as counter, one.connect() as conn:
                for n in range(3):
                    conn.execute(text("select :n"), {"n": n})  # SENT
            assert AuditingDialect.calls - before == calls
            assert "do_execute" not in vars(one.dialect)  # nothing of the plugin's on the instance
            assert counter.count == 3
            assert {q.call_site for q in counter.queries} == {f"tests/queries/test_capture.py:{line}"}
    finally:
        audited.dispose()


def test_a_patch_of_the_dialect_after_its_first_statement_is_honoured(engine: Engine) -> None:
    """Patches a test makes to simulate an outage, on the dialect's class or on the engine's
    dialect instance, take effect after statements have run (nothing the plugin sets on the
    instance hides the class's method or replaces the user's)."""
    from unittest import mock

    def outage(*args: object, **kwargs: object) -> None:
        raise ConnectionError("simulated outage")

    fresh = create_engine(engine.url.render_as_string(hide_password=False))
    try:
        with fresh.connect() as conn:
            conn.execute(text("select 1"))
            conn.execute(text("select 1"), [{"n": 1}, {"n": 2}])  # executemany: another wrapper
            # the engine's own dialect class (an in-process pytester run of this session may have
            # imported SQLAlchemy anew since this module bound create_engine)
            dialect_class = type(fresh.dialect)
            assert dialect_class.__name__ == "PGDialect_psycopg"
            with mock.patch.object(dialect_class, "do_execute", outage):
                with pytest.raises(ConnectionError, match="simulated outage"):
                    conn.execute(text("select :n"), {"n": 1})
            seen: list[str] = []
            with mock.patch.object(fresh.dialect, "do_execute",
                                   lambda cursor, statement, *rest: seen.append(statement)):
                conn.execute(text("select 2"))
                conn.execute(text("select 3"), [{"n": 1}, {"n": 2}])
            assert seen == ["select 2"]
    finally:
        fresh.dispose()


def test_a_statement_recorded_after_another_threads_walk_keeps_its_own_origin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A psycopg stream is recorded when the caller has read it, after its call site was
    found; another thread walking meanwhile (its own statements) must not change the
    stream's origin (the application function that sent it), nor make it the test's own.
    (A single slot shared by all threads did: 151 of 200 streams became the test's own.)"""
    from pytest_migsafe.queries import repeats

    origins: list[tuple[str | None, bool]] = []
    original = repeats.RepeatTracker.statement

    def spy(self: repeats.RepeatTracker, sql: str, shape: str, origin: object) -> None:
        if "generate_series" in sql:
            origins.append((origin.looping, origin.test_own))  # type: ignore[attr-defined]
        original(self, sql, shape, origin)  # type: ignore[arg-type]

    monkeypatch.setattr(repeats.RepeatTracker, "statement", spy)

    def other_thread() -> None:
        with create_engine("sqlite://").connect() as conn:
            conn.execute(text("select 1"))

    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        with count_queries():
            rows = loops.stream_rows(conn.cursor(), 3)
            worker = threading.Thread(target=other_thread)
            worker.start()
            worker.join()
            assert [row[0] for row in rows] == [1, 2, 3]
    line = next(i for i, t in enumerate(inspect.getsource(loops).splitlines(), 1) if "# STARTED" in t)
    # one per active counter (this one, and the plugin's for the test)
    assert origins and set(origins) == {(f"tests/queries/loops.py:{line}", False)}


def helper_sends(conn: object) -> None:
    conn.execute(text("select 2"))  # type: ignore[attr-defined]  # HELPER


def other_helper_sends(conn: object) -> None:  # the same depth and driver path as helper_sends
    conn.execute(text("select 4"))  # type: ignore[attr-defined]  # OTHER


def test_call_sites_stay_exact_when_paths_alternate() -> None:
    """The hooks remember the last path through the driver's frames; a statement sent
    through another path, or from another frame, still gets its own line."""
    import inspect

    engine = create_engine("sqlite://")
    source, first = inspect.getsourcelines(test_call_sites_stay_exact_when_paths_alternate)
    line = {marker: first + i for i, text_line in enumerate(source) for marker in ("# A", "# C")
            if text_line.rstrip().endswith(marker)}
    helper_source, helper_first = inspect.getsourcelines(helper_sends)
    helper_line = helper_first + next(i for i, t in enumerate(helper_source) if t.rstrip().endswith("# HELPER"))
    other_source, other_first = inspect.getsourcelines(other_helper_sends)
    other_line = other_first + next(i for i, t in enumerate(other_source) if t.rstrip().endswith("# OTHER"))
    with count_queries() as counter, engine.connect() as conn:
        for _ in range(3):
            conn.execute(text("select 1"))  # A
            helper_sends(conn)
            other_helper_sends(conn)
            conn.exec_driver_sql("select 3")  # C
    sites = {(q.sql, q.call_site) for q in counter.queries}
    here = "tests/queries/test_capture.py"
    assert sites == {("select 1", f"{here}:{line['# A']}"), ("select 2", f"{here}:{helper_line}"),
                     ("select 4", f"{here}:{other_line}"), ("select 3", f"{here}:{line['# C']}")}
    assert counter.count == 12


def test_a_pipelined_loop_is_attributed_to_where_it_was_sent_not_where_results_arrived(pg_dsn: str) -> None:
    """The results of statements queued in an application loop arrive when the test's
    pipeline block ends: the N+1 rule still sees the application's loop (and the count is
    the server's)."""
    from loops import queue_lookups

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        before = server_calls(pg_dsn)
        with count_queries() as counter:
            with conn.pipeline():
                queue_lookups(conn, 12)
                conn.execute("SELECT 0")  # the test's own, sent last: its results arrive with the others
        assert counter.count == server_calls(pg_dsn) - before == 13
    suspects = counter.n_plus_one(threshold=10)
    assert [(s.count, s.call_site.rsplit(":", 1)[0]) for s in suspects] == [(12, "tests/queries/loops.py")]


def test_create_engine_still_takes_the_dialects_keyword_arguments() -> None:
    """SQLAlchemy reads the keyword arguments a dialect accepts from its ``__init__``: the
    hooks must leave it as it is (a wrapper there made these a TypeError)."""
    from pytest_migsafe.queries import drivers

    drivers.install()
    engine = create_engine("sqlite://", label_length=30, isolation_level="AUTOCOMMIT", paramstyle="qmark")
    assert engine.dialect.label_length == 30
    with count_queries() as counter, engine.connect() as conn:
        conn.execute(text("select 1"))
    assert counter.count == 1


@pytest.mark.parametrize("kept", [0, 1, 20_000])
def test_origins_are_exact_whether_kept_for_reuse_or_not(monkeypatch: pytest.MonkeyPatch, kept: int) -> None:
    """A statement's Origin is reused per (sending instruction, calling test instruction) up to
    ``ORIGINS_KEPT``; past it one is made per statement: the N+1 rule sees the same either way
    (two calls of one looping helper from two test lines are two loops, each with its own count;
    the same through a helper that sends for the loop one call below it)."""
    from loops import run_driver_sql, run_through_helper

    from pytest_migsafe.queries import callsite

    monkeypatch.setattr(callsite, "ORIGINS_KEPT", kept)
    callsite._called_origins.clear()
    callsite._test_origins.clear()
    engine = create_engine("sqlite://")
    with count_queries() as counter, engine.connect() as conn:
        run_driver_sql(conn, "select 11", 11)
        run_driver_sql(conn, "select 11", 12)
        for _ in range(3):
            conn.exec_driver_sql("select 11")  # the test's own: no suspect
        run_through_helper(conn, "select 13", 13)
        run_through_helper(conn, "select 13", 14)
    suspects = counter.n_plus_one(threshold=10)
    assert sorted(s.count for s in suspects) == [11, 12, 13, 14]
    assert {s.call_site.rsplit(":", 1)[0] for s in suspects} == {"tests/queries/loops.py"}
    assert counter.count == 26 + 27
    assert len(callsite._called_origins) <= kept and len(callsite._test_origins) <= kept
