"""psycopg 3 capture counts what the server ran, when it answered: pipelines, streams,
failing ``executemany`` batches and strings of several statements.

The expected figure of every test is the server's: the change in ``pg_stat_statements``
calls of the statements naming a table made for the test (other sessions may run
statements meanwhile), read through a separate connection around the code.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from time import perf_counter

import psycopg
import pytest

from pytest_migsafe import count_queries
from pytest_migsafe.queries import dispatch
from pytest_migsafe.queries.counter import QueryCounter

PSYCOPG = tuple(int(part) for part in psycopg.__version__.split(".")[:2])


@pytest.fixture
def table(pg_dsn: str) -> Iterator[str]:
    """A table of one's own (``id int primary key, v text``), so its statements are ours."""
    name = f"edge_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def server_calls(dsn: str, table: str) -> int:
    """Calls ``pg_stat_statements`` counts for the statements naming ``table``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = current_database() AND s.query LIKE %s"
            " AND s.query NOT LIKE '%%pg_stat_statements%%'",
            (f"%{table}%",),
        ).fetchone()
    assert row is not None
    return int(row[0])


def seed(dsn: str, table: str, rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} (id, v) VALUES (%s, %s)", [(i, "x") for i in range(1, rows + 1)])


# -- pipeline mode ------------------------------------------------------------------
def _four_in_a_pipeline(conn: psycopg.Connection, table: str) -> None:
    conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
    conn.execute(f"SELECT 1 / (id - 1) FROM {table}")  # division by zero: the server stops here
    conn.execute(f"SELECT count(*) FROM {table}")
    conn.execute(f"UPDATE {table} SET v = 'b'")


@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
def test_pipeline_counts_the_statements_the_server_ran(pg_dsn: str, table: str, autocommit: bool) -> None:
    with psycopg.connect(pg_dsn, autocommit=autocommit) as conn:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter:
            with pytest.raises(psycopg.errors.DivisionByZero), conn.pipeline():
                _four_in_a_pipeline(conn, table)
        ran = server_calls(pg_dsn, table) - before
    assert ran == 1
    assert counter.count == ran
    assert [q.sql for q in counter.queries] == [f"INSERT INTO {table} (id, v) VALUES (1, 'a')"]


@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
def test_async_pipeline_counts_the_statements_the_server_ran(pg_dsn: str, table: str, autocommit: bool) -> None:
    async def main() -> QueryCounter:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=autocommit) as conn:
            with count_queries(match=table) as counter:
                with pytest.raises(psycopg.errors.DivisionByZero):
                    async with conn.pipeline():
                        await conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
                        await conn.execute(f"SELECT 1 / (id - 1) FROM {table}")
                        await conn.execute(f"SELECT count(*) FROM {table}")
                        await conn.execute(f"UPDATE {table} SET v = 'b'")
        return counter

    before = server_calls(pg_dsn, table)
    counter = asyncio.run(main())
    ran = server_calls(pg_dsn, table) - before
    assert ran == 1
    assert counter.count == ran


def test_pipeline_statement_is_recorded_when_its_result_arrives(pg_dsn: str, table: str) -> None:
    """In pipeline mode the server answers at the sync: nothing is recorded before, all of it then."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter, conn.pipeline() as pipeline:
            conn.execute(f"INSERT INTO {table} (id, v) VALUES (1, 'a')")
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {table} (id, v) VALUES (%s, %s)", [(2, "b"), (3, "c")])
                cur.execute(f"SELECT v FROM {table} WHERE id = %s", (2,))
                before_sync = (counter.count, counter.executions)
                pipeline.sync()
                after_sync = (counter.count, counter.executions)
                if PSYCOPG >= (3, 2):  # psycopg 3.1 gives no result to fetch here (with or without migsafe)
                    assert cur.fetchone() == ("b",)
            conn.execute(f"DELETE FROM {table} WHERE id = 3")
        ran = server_calls(pg_dsn, table) - before
    assert before_sync == (0, 0)
    assert after_sync == (3, 4)  # INSERT, executemany of 2 rows, SELECT
    assert ran == counter.executions == 5
    assert counter.count == 4
    assert all(q.seconds > 0 for q in counter.queries)


# -- streams --------------------------------------------------------------------------
def test_stream_never_iterated_counts_nothing(pg_dsn: str, table: str) -> None:
    seed(pg_dsn, table, 3)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor() as cur:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter:
            rows = cur.stream(f"SELECT id FROM {table}")
            del rows
        ran = server_calls(pg_dsn, table) - before
    assert ran == 0
    assert counter.count == ran


def test_stream_that_fails_counts_nothing(pg_dsn: str, table: str) -> None:
    seed(pg_dsn, table, 3)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor() as cur:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter, pytest.raises(psycopg.errors.DivisionByZero):
            for _ in cur.stream(f"SELECT 1 / (id - 1) FROM {table} ORDER BY id"):
                pass
        ran = server_calls(pg_dsn, table) - before
    assert ran == 0
    assert counter.count == ran


def test_stream_iterated_counts_once_with_its_duration(pg_dsn: str, table: str) -> None:
    seed(pg_dsn, table, 50)
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor() as cur:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter:
            rows = cur.stream(f"SELECT id FROM {table} ORDER BY id")
            t0 = perf_counter()
            ids = [row[0] for row in rows]
            elapsed = perf_counter() - t0
        ran = server_calls(pg_dsn, table) - before
    assert ids == list(range(1, 51))
    assert ran == 1
    assert counter.count == ran
    (query,) = counter.queries
    assert 0 < query.seconds <= elapsed


def test_stream_closed_early_counts_what_the_server_finished(pg_dsn: str, table: str) -> None:
    """Closing a stream mid-way cancels it: a long result is cancelled, so it is not counted."""
    seed(pg_dsn, table, 1)
    long_result = f"SELECT g, t.id FROM generate_series(1, 5000000) g CROSS JOIN {table} t"
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor() as cur:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter:
            for row in cur.stream(long_result):
                assert row == (1, 1)
                break
        ran = server_calls(pg_dsn, table) - before
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable again
    assert counter.count == ran


def test_async_streams_count_what_the_server_ran(pg_dsn: str, table: str) -> None:
    seed(pg_dsn, table, 20)

    async def main() -> tuple[list[int], list[int]]:
        counts = []
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            async with conn.cursor() as cur:
                ids = []
                for scenario in ("never", "fails", "iterated", "closed early"):
                    before = server_calls(pg_dsn, table)
                    with count_queries(match=table) as counter:
                        if scenario == "never":
                            rows = cur.stream(f"SELECT id FROM {table}")
                            del rows
                        elif scenario == "fails":
                            with pytest.raises(psycopg.errors.DivisionByZero):
                                async for _ in cur.stream(f"SELECT 1 / (id - 1) FROM {table} ORDER BY id"):
                                    pass
                        elif scenario == "iterated":
                            ids = [row[0] async for row in cur.stream(f"SELECT id FROM {table} ORDER BY id")]
                        else:
                            stream = cur.stream(
                                f"SELECT g, t.id FROM generate_series(1, 5000000) g CROSS JOIN {table} t")
                            async for _ in stream:
                                break
                            await stream.aclose()  # type: ignore[attr-defined]
                    counts.append(server_calls(pg_dsn, table) - before)
                    counts.append(counter.count)
                    assert counter.total_seconds > 0 or counter.count == 0
        return ids, counts

    ids, counts = asyncio.run(main())
    assert ids == list(range(1, 21))
    server, plugin = counts[0::2], counts[1::2]
    assert server[:3] == [0, 0, 1]
    assert plugin == server


# -- executemany ---------------------------------------------------------------------
def _rows_failing_at_four() -> Iterator[tuple[int, str]]:
    for i in (1, 2, 3, 1, 5, 6, 7, 8):  # the 4th repeats a primary key
        yield i, "x"


@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
def test_executemany_failing_at_row_four_records_the_three_executions(
        pg_dsn: str, table: str, autocommit: bool) -> None:
    with psycopg.connect(pg_dsn, autocommit=autocommit) as conn, conn.cursor() as cur:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter, pytest.raises(psycopg.errors.UniqueViolation):
            cur.executemany(f"INSERT INTO {table} (id, v) VALUES (%s, %s)", _rows_failing_at_four())
        ran = server_calls(pg_dsn, table) - before
    assert ran == 3
    assert counter.executions == ran
    assert counter.count == 1
    assert counter.queries[0].batch_size == 3


def test_async_executemany_failing_at_row_four_records_the_three_executions(pg_dsn: str, table: str) -> None:
    async def main() -> QueryCounter:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            async with conn.cursor() as cur:
                with count_queries(match=table) as counter, pytest.raises(psycopg.errors.UniqueViolation):
                    await cur.executemany(f"INSERT INTO {table} (id, v) VALUES (%s, %s)",
                                          _rows_failing_at_four())
        return counter

    before = server_calls(pg_dsn, table)
    counter = asyncio.run(main())
    ran = server_calls(pg_dsn, table) - before
    assert ran == 3
    assert (counter.count, counter.executions) == (1, ran)


def test_executemany_of_generators_by_keyword_counts_every_row(pg_dsn: str, table: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor() as cur:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter:
            cur.executemany(query=f"INSERT INTO {table} (id, v) VALUES (%s, %s)",
                            params_seq=((i, "x") for i in range(1, 41)))
            cur.executemany(f"SELECT v FROM {table} WHERE id = %s", ((i,) for i in range(1, 6)), returning=True)
            fetched = [cur.fetchone()]
            while cur.nextset():  # (psycopg 3.2's cur.results() in psycopg 3.1's words)
                fetched.append(cur.fetchone())
        ran = server_calls(pg_dsn, table) - before
    assert fetched == [("x",)] * 5
    assert ran == 45
    assert counter.executions == ran
    assert counter.count == 2


def test_executemany_reads_the_rows_as_the_driver_does(pg_dsn: str, table: str) -> None:
    """A generator that fails after 10 rows: psycopg has sent those 10, which the server runs."""
    def rows() -> Iterator[tuple[int, str]]:
        for i in range(1, 11):
            yield i, "x"
        raise LookupError("the producer failed")

    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor() as cur:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter, pytest.raises(LookupError):
            cur.executemany(f"INSERT INTO {table} (id, v) VALUES (%s, %s)", rows())
        ran = server_calls(pg_dsn, table) - before
    assert ran == 10
    assert counter.executions == ran


# -- strings of several statements ---------------------------------------------------
def _several(table: str, last_id: int) -> str:
    return (f"SELECT count(*) FROM {table}; "
            f"CREATE TEMP TABLE {table}_tmp (a int); "
            f"INSERT INTO {table} (id, v) VALUES (1, 'a'); "
            f"INSERT INTO {table} (id, v) VALUES ({last_id}, 'b')")


@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
def test_string_of_statements_that_fails_counts_those_the_server_ran(
        pg_dsn: str, table: str, autocommit: bool) -> None:
    with psycopg.connect(pg_dsn, autocommit=autocommit) as conn:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter, pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(_several(table, last_id=1))
        ran = server_calls(pg_dsn, table) - before
    assert ran == 3
    assert counter.count == ran
    assert [q.sql.split()[0] for q in counter.queries] == ["SELECT", "CREATE", "INSERT"]
    assert dispatch.round_trips(counter) == 1


def test_string_of_statements_that_succeeds_counts_each_as_the_server_does(pg_dsn: str, table: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter:
            cur = conn.execute(_several(table, last_id=2))
            conn.execute(f"SELECT v FROM {table} WHERE id = %s", (2,))
        ran = server_calls(pg_dsn, table) - before
    assert cur.fetchone() == (0,)  # the first statement's result
    assert ran == 5
    assert counter.count == ran
    assert dispatch.round_trips(counter) == 2
    shapes = [q.shape for q in counter.queries]
    assert shapes[2] == shapes[3]  # both INSERTs: one shape
    assert len(set(shapes)) == 4


def test_async_string_of_statements_counts_each_statement_the_server_ran(pg_dsn: str, table: str) -> None:
    async def main() -> tuple[QueryCounter, QueryCounter]:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            with count_queries(match=table) as failing, pytest.raises(psycopg.errors.UniqueViolation):
                await conn.execute(_several(table, last_id=1))  # one implicit transaction: rolled back
            with count_queries(match=table) as passing:
                await conn.execute(_several(table, last_id=2))
        return failing, passing

    before = server_calls(pg_dsn, table)
    failing, passing = asyncio.run(main())
    ran = server_calls(pg_dsn, table) - before
    assert ran == 3 + 4
    assert (failing.count, passing.count) == (3, 4)
    assert (dispatch.round_trips(failing), dispatch.round_trips(passing)) == (1, 1)


def test_semicolons_in_strings_and_dollar_quotes_do_not_split(pg_dsn: str, table: str) -> None:
    body = f"$fn$ BEGIN INSERT INTO {table} (id, v) VALUES (9, 'f;n'); END $fn$"
    sql = (f"INSERT INTO {table} (id, v) VALUES (1, 'a;b'); /* ; */ "
           f"DO {body}; -- trailing; comment\n")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        before = server_calls(pg_dsn, table)
        with count_queries(match=table) as counter:
            conn.execute(sql)
        ran = server_calls(pg_dsn, table) - before
    assert ran == 2  # track = top: the INSERT inside the DO block is not a top-level statement
    assert counter.count == ran
