"""The psycopg 3 wrappers accept every argument exactly as the driver does.

Each call below runs twice on a fresh connection: once on the unwrapped driver, once
wrapped with a counter active. The results (rows, row counts) and the errors (class and
message) must be the same; ``inspect.signature`` of each wrapped method is the driver's.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from pytest_migsafe import count_queries
from pytest_migsafe.queries import psycopg as capture_psycopg

FLAG = "__migsafe_original__"
T = "sig_t"  # a temporary table made for each run


@contextmanager
def unwrapped() -> Iterator[None]:
    """psycopg's own methods for the block."""
    capture_psycopg.uninstall()
    assert not capture_psycopg.is_installed()
    try:
        yield
    finally:
        capture_psycopg.install()


def outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return ("returned", run())
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def run_sync(dsn: str, call: Callable[[psycopg.Connection[Any]], Any]) -> tuple[Any, ...]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TEMP TABLE {T} (a int)")
        result = outcome(lambda: call(conn))
        rows = conn.execute(f"SELECT a FROM {T} ORDER BY a").fetchall()
    return (*result, rows)


def run_async(dsn: str, call: Callable[[psycopg.AsyncConnection[Any]], Any]) -> tuple[Any, ...]:
    async def main() -> tuple[Any, ...]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f"CREATE TEMP TABLE {T} (a int)")
            try:
                result: tuple[Any, ...] = ("returned", await call(conn))
            except Exception as exc:
                result = ("raised", type(exc).__name__, str(exc))
            rows = await (await conn.execute(f"SELECT a FROM {T} ORDER BY a")).fetchall()
        return (*result, rows)

    return asyncio.run(main())


def same_as_the_driver(dsn: str, call: Callable[[Any], Any], runner: Callable[..., tuple[Any, ...]]) -> None:
    with unwrapped():
        expected = runner(dsn, call)
    with count_queries():
        assert capture_psycopg.is_installed()
        got = runner(dsn, call)
    assert got == expected


# -- signatures ---------------------------------------------------------------------
WRAPPED = [
    (psycopg.Cursor, "execute"), (psycopg.Cursor, "executemany"), (psycopg.Cursor, "stream"),
    (psycopg.Cursor, "copy"), (psycopg.AsyncCursor, "execute"), (psycopg.AsyncCursor, "executemany"),
    (psycopg.AsyncCursor, "stream"), (psycopg.AsyncCursor, "copy"), (psycopg.ServerCursor, "execute"),
    (psycopg.AsyncServerCursor, "execute"),
]


@pytest.mark.parametrize(("cls", "name"), WRAPPED, ids=[f"{c.__name__}.{n}" for c, n in WRAPPED])
def test_wrapped_method_has_the_drivers_signature_and_names(cls: type, name: str) -> None:
    capture_psycopg.install()
    method = vars(cls)[name]
    original = getattr(method, FLAG)
    assert inspect.signature(method) == inspect.signature(original)
    assert (method.__name__, method.__qualname__, method.__doc__, method.__module__) == (
        original.__name__, original.__qualname__, original.__doc__, original.__module__)
    assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(original)
    assert inspect.isgeneratorfunction(method) == inspect.isgeneratorfunction(original)
    assert inspect.isasyncgenfunction(method) == inspect.isasyncgenfunction(original)


@pytest.mark.parametrize(("cls", "name"), [(psycopg.Cursor, "stream"), (psycopg.AsyncCursor, "stream"),
                                           (psycopg.Cursor, "_stream_fetchone_gen")],
                         ids=["Cursor.stream", "AsyncCursor.stream", "Cursor._stream_fetchone_gen"])
def test_a_wrapped_generator_function_is_one_with_the_drivers_own_parameters(cls: type, name: str) -> None:
    """``inspect.isgeneratorfunction(psycopg.Cursor.stream)`` was False once wrapped."""
    capture_psycopg.install()
    owner = next(klass for klass in cls.__mro__ if name in vars(klass))  # (a private one is a base's)
    method = vars(owner)[name]
    original = getattr(method, FLAG)
    assert inspect.isgeneratorfunction(method) == inspect.isgeneratorfunction(original)
    assert inspect.isasyncgenfunction(method) == inspect.isasyncgenfunction(original)
    assert inspect.signature(method, follow_wrapped=False).parameters.keys() == \
        inspect.signature(original).parameters.keys()
    assert [p.default for p in inspect.signature(method, follow_wrapped=False).parameters.values()] == \
        [p.default for p in inspect.signature(original).parameters.values()]


@pytest.mark.parametrize(("cls", "name"), [(psycopg.AsyncCursor, "execute"), (psycopg.AsyncCursor, "executemany"),
                                           (psycopg.AsyncServerCursor, "execute")],
                         ids=["AsyncCursor.execute", "AsyncCursor.executemany", "AsyncServerCursor.execute"])
def test_an_async_wrapper_takes_the_drivers_parameters_itself(cls: type, name: str) -> None:
    """An ``async def (self, *args, **kwargs)`` wrapper took any argument at the call and
    raised only when awaited: its own parameters are the driver's."""
    capture_psycopg.install()
    method = vars(cls)[name]
    own = inspect.signature(method, follow_wrapped=False).parameters.values()
    driver = inspect.signature(getattr(method, FLAG)).parameters.values()
    assert [(p.name, p.kind, p.default) for p in own] == [(p.name, p.kind, p.default) for p in driver]
    assert inspect.iscoroutinefunction(method)


def test_cursor_execute_wrapper_takes_the_drivers_parameters_itself() -> None:
    """The hot path's wrapper is not ``(self, *args, **kwargs)``: its own signature (not only
    the one ``__wrapped__`` gives) is the driver's, names, kinds and default values."""
    capture_psycopg.install()
    method = vars(psycopg.Cursor)["execute"]
    own = inspect.signature(method, follow_wrapped=False).parameters.values()
    driver = inspect.signature(getattr(method, FLAG)).parameters.values()
    assert [(p.name, p.kind, p.default) for p in own] == [(p.name, p.kind, p.default) for p in driver]


def test_an_execute_of_other_parameters_is_wrapped_to_take_any_and_still_counted(pg_dsn: str) -> None:
    """A psycopg whose ``Cursor.execute`` takes other parameters (a future one, say) gets the
    wrapper that passes any arguments on: its statements are still counted, its arguments
    reach the driver as given."""
    received: list[tuple[Any, ...]] = []

    def execute(self: Any, query: Any, params: Any = None, *, prepare: Any = None, binary: Any = None,
                returning: bool = False) -> Any:
        received.append((query, params, returning))
        driver = getattr(psycopg.Cursor.execute, FLAG, psycopg.Cursor.execute)
        return driver(self, query, params, prepare=prepare, binary=binary)

    wrapped = capture_psycopg._wrap_execute_sync(execute)
    assert "args" in inspect.signature(wrapped, follow_wrapped=False).parameters  # the generic wrapper
    with psycopg.connect(pg_dsn, autocommit=True) as conn, count_queries() as counter:
        cur = conn.cursor()
        assert wrapped(cur, "SELECT %s", (1,), returning=True).fetchone() == (1,)
        with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
            wrapped(cur, "SELECT 1", nope=1)
    assert received == [("SELECT %s", (1,), True)]
    assert counter.count == 1


# -- sync calls -----------------------------------------------------------------------
def _copy_in(cur: psycopg.Cursor[Any], **kwargs: Any) -> int:
    with cur.copy(**kwargs) as copy:
        copy.write_row((7,))
    return cur.rowcount


def _copy_out(cur: psycopg.Cursor[Any], *args: Any, **kwargs: Any) -> list[Any]:
    with cur.copy(*args, **kwargs) as copy:
        return list(copy.rows())


def _in_pipeline_sync(conn: psycopg.Connection[Any]) -> list[Any]:
    with conn.pipeline():
        cur = conn.cursor()
        cur.executemany(query=f"INSERT INTO {T} VALUES (%s)", params_seq=[(10,), (11,)])
        return cur.execute(query=f"SELECT count(*) FROM {T}", params=None).fetchall()


class HostileText(str):
    """A query text whose class's own methods raise: psycopg sends its characters all the
    same, and the plugin must not hash, compare or ``str()`` it (it does not own it)."""

    def __hash__(self) -> int:
        raise RuntimeError("hashed")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __str__(self) -> str:
        raise RuntimeError("str() called")


class HostileBytes(bytes):
    """The same for a bytes query (psycopg sends bytes as they are)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def decode(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        raise RuntimeError("decoded")

    __hash__ = bytes.__hash__


H = HostileText


def _in_pipeline_hostile(conn: psycopg.Connection[Any]) -> list[Any]:
    with conn.pipeline():
        return conn.execute(H("SELECT 6")).fetchall()

SYNC_CALLS: dict[str, Callable[[Any], Any]] = {  # Any: some calls are wrong on purpose
    "execute(query, params)": lambda c: c.cursor().execute("SELECT %s::int + 1", (1,)).fetchall(),
    "execute(query=, params=, prepare=, binary=)": lambda c: c.cursor().execute(
        query="SELECT %s::int + 1", params=(1,), prepare=True, binary=True).fetchall(),
    "execute(query=)": lambda c: c.cursor().execute(query="SELECT 2").fetchall(),
    "execute(query, params, prepare) positional": lambda c: c.cursor().execute("SELECT 1", None, True),
    "execute(query, bogus=)": lambda c: c.cursor().execute("SELECT 1", bogus=1),
    "execute()": lambda c: c.cursor().execute(),
    "execute(params=) without query": lambda c: c.cursor().execute(params=(1,)),
    "execute of a syntax error": lambda c: c.cursor().execute("SELEC 1"),
    "executemany(query, params_seq)": lambda c: c.cursor().executemany(
        f"INSERT INTO {T} VALUES (%s)", [(1,), (2,)]),
    "executemany(query=, params_seq=)": lambda c: c.cursor().executemany(
        query=f"INSERT INTO {T} VALUES (%s)", params_seq=[(3,), (4,)]),
    "executemany(query=, params_seq=generator, returning=True)": lambda c: (
        lambda cur: (cur.executemany(query=f"INSERT INTO {T} VALUES (%s) RETURNING a",
                                     params_seq=((i,) for i in (5, 6)), returning=True),
                     [r.fetchall() for r in cur.results()]))(c.cursor()),
    "executemany(query, params_seq, returning) positional": lambda c: c.cursor().executemany(
        f"INSERT INTO {T} VALUES (%s)", [(1,)], True),
    "executemany(query) without params_seq": lambda c: c.cursor().executemany(
        f"INSERT INTO {T} VALUES (1)"),
    "executemany(params_seq=) without query": lambda c: c.cursor().executemany(
        params_seq=[(1,)]),
    "stream(query, params)": lambda c: list(c.cursor().stream("SELECT generate_series(1, %s)", (3,))),
    "stream(query=, params=, binary=, size=)": lambda c: list(c.cursor().stream(
        query="SELECT generate_series(1, %s)", params=(4,), binary=True, size=2)),
    "stream(size=0)": lambda c: list(c.cursor().stream("SELECT 1", size=0)),
    "stream(query, bogus=) not iterated": lambda c: c.cursor().stream("SELECT 1", bogus=1) and None,
    "stream(query, params, binary) positional": lambda c: c.cursor().stream(
        "SELECT 1", None, True) and None,
    "copy(statement=) from stdin": lambda c: _copy_in(c.cursor(), statement=f"COPY {T} (a) FROM STDIN"),
    "copy(statement=, params=, writer=) to stdout": lambda c: _copy_out(
        c.cursor(), statement="COPY (SELECT %s::int) TO STDOUT", params=(8,), writer=None),
    "copy(statement, params) positional": lambda c: _copy_out(c.cursor(), "COPY (SELECT %s::int) TO STDOUT", (9,)),
    "copy(statement, bogus=) not entered": lambda c: c.cursor().copy("COPY t TO STDOUT", bogus=1) and None,
    "Connection.execute(query, params)": lambda c: c.execute("SELECT %s::int", (4,)).fetchall(),
    "Connection.execute(query=, params=, prepare=, binary=)": lambda c: c.execute(
        query="SELECT %s::int", params=(5,), prepare=True, binary=True).fetchall(),
    "Connection.execute(query, params, prepare) positional": lambda c: c.execute(
        "SELECT 1", None, True),
    "ServerCursor.execute(query=, params=, binary=, scrollable=)": lambda c: (
        lambda cur: (cur.execute(query="SELECT generate_series(1, %s)", params=(3,), binary=True,
                                 scrollable=True), cur.fetchall()))(c.cursor("sig_named"))[1],
    "ServerCursor.execute(query, params, binary) positional": lambda c: c.cursor("sig_named").execute(
        "SELECT 1", None, True),
    "pipeline: execute(query=, params=) and executemany(query=, params_seq=)": _in_pipeline_sync,
    "execute(str subclass)": lambda c: c.cursor().execute(H("SELECT %s::int + 1"), (1,)).fetchall(),
    "execute(bytes subclass)": lambda c: c.cursor().execute(HostileBytes(b"SELECT 5")).fetchall(),
    "executemany(str subclass)": lambda c: c.cursor().executemany(H(f"INSERT INTO {T} VALUES (%s)"), [(1,)]),
    "stream(str subclass)": lambda c: list(c.cursor().stream(H("SELECT generate_series(1, %s)"), (2,))),
    "copy(str subclass)": lambda c: _copy_out(c.cursor(), H("COPY (SELECT %s::int) TO STDOUT"), (9,)),
    "Connection.execute(str subclass)": lambda c: c.execute(H("SELECT 4")).fetchall(),
    "ServerCursor.execute(str subclass)": lambda c: (
        lambda cur: (cur.execute(H("SELECT generate_series(1, 3)")), cur.fetchall()))(c.cursor("sig_h"))[1],
    "pipeline: execute(str subclass)": _in_pipeline_hostile,
}


@pytest.mark.parametrize("name", list(SYNC_CALLS))
def test_sync_call_behaves_as_the_unwrapped_driver(pg_dsn: str, name: str) -> None:
    same_as_the_driver(pg_dsn, SYNC_CALLS[name], run_sync)


# -- async calls ----------------------------------------------------------------------
async def _rows(aiter: Any) -> list[Any]:
    return [row async for row in aiter]


async def _acopy_in(cur: Any, **kwargs: Any) -> int:
    async with cur.copy(**kwargs) as copy:
        await copy.write_row((7,))
    return int(cur.rowcount)


async def _acopy_out(cur: Any, *args: Any, **kwargs: Any) -> list[Any]:
    async with cur.copy(*args, **kwargs) as copy:
        return [row async for row in copy.rows()]


async def _executemany_returning(conn: Any) -> list[Any]:
    cur = conn.cursor()
    await cur.executemany(query=f"INSERT INTO {T} VALUES (%s) RETURNING a",
                          params_seq=((i,) for i in (5, 6)), returning=True)
    return [await r.fetchall() async for r in cur.results()]


async def _server_cursor(conn: Any) -> list[Any]:
    async with conn.cursor("sig_named") as cur:
        await cur.execute(query="SELECT generate_series(1, %s)", params=(3,), binary=True, scrollable=True)
        return list(await cur.fetchall())


async def _in_pipeline(conn: Any) -> list[Any]:
    async with conn.pipeline():
        cur = conn.cursor()
        await cur.executemany(query=f"INSERT INTO {T} VALUES (%s)", params_seq=[(10,), (11,)])
        await cur.execute(query=f"SELECT count(*) FROM {T}", params=None)
        return list(await cur.fetchall())


async def _fetchall(cursor: Any) -> list[Any]:
    return list(await (await cursor).fetchall())


async def _none(awaitable: Any) -> None:
    await awaitable


async def _stream_not_iterated(conn: Any) -> None:
    conn.cursor().stream("SELECT 1", bogus=1)


async def _not_awaited(call: Callable[[], Any]) -> str:
    """Make the coroutine without awaiting it: the driver's coroutine function binds its
    arguments at the call, so a bad one raises here."""
    coroutine = call()
    coroutine.close()
    return "made"


ASYNC_CALLS: dict[str, Callable[[Any], Any]] = {
    "execute(query, params)": lambda c: _fetchall(c.cursor().execute("SELECT %s::int + 1", (1,))),
    "execute(query=, params=, prepare=, binary=)": lambda c: _fetchall(c.cursor().execute(
        query="SELECT %s::int + 1", params=(1,), prepare=True, binary=True)),
    "execute(query, params, prepare) positional": lambda c: _none(c.cursor().execute("SELECT 1", None, True)),
    "execute(query, bogus=)": lambda c: _none(c.cursor().execute("SELECT 1", bogus=1)),
    "execute()": lambda c: _none(c.cursor().execute()),
    "execute(query, bogus=) not awaited": lambda c: _not_awaited(lambda: c.cursor().execute("SELECT 1", bogus=1)),
    "execute() not awaited": lambda c: _not_awaited(lambda: c.cursor().execute()),
    "executemany(query, bogus=) not awaited": lambda c: _not_awaited(
        lambda: c.cursor().executemany("SELECT 1", [()], bogus=1)),
    "AsyncServerCursor.execute(query, bogus=) not awaited": lambda c: _not_awaited(
        lambda: c.cursor("sig_bogus").execute("SELECT 1", bogus=1)),
    "execute of a syntax error": lambda c: _none(c.cursor().execute("SELEC 1")),
    "executemany(query, params_seq)": lambda c: c.cursor().executemany(
        f"INSERT INTO {T} VALUES (%s)", [(1,), (2,)]),
    "executemany(query=, params_seq=)": lambda c: c.cursor().executemany(
        query=f"INSERT INTO {T} VALUES (%s)", params_seq=[(3,), (4,)]),
    "executemany(query=, params_seq=generator, returning=True)": _executemany_returning,
    "executemany(query, params_seq, returning) positional": lambda c: _none(c.cursor().executemany(
        f"INSERT INTO {T} VALUES (%s)", [(1,)], True)),
    "executemany(params_seq=) without query": lambda c: _none(c.cursor().executemany(params_seq=[(1,)])),
    "stream(query, params)": lambda c: _rows(c.cursor().stream("SELECT generate_series(1, %s)", (3,))),
    "stream(query=, params=, binary=, size=)": lambda c: _rows(c.cursor().stream(
        query="SELECT generate_series(1, %s)", params=(4,), binary=True, size=2)),
    "stream(size=0)": lambda c: _rows(c.cursor().stream("SELECT 1", size=0)),
    "stream(query, bogus=) not iterated": _stream_not_iterated,
    "copy(statement=) from stdin": lambda c: _acopy_in(c.cursor(), statement=f"COPY {T} (a) FROM STDIN"),
    "copy(statement=, params=, writer=) to stdout": lambda c: _acopy_out(
        c.cursor(), statement="COPY (SELECT %s::int) TO STDOUT", params=(8,), writer=None),
    "copy(statement, params) positional": lambda c: _acopy_out(c.cursor(), "COPY (SELECT %s::int) TO STDOUT", (9,)),
    "AsyncConnection.execute(query, params)": lambda c: _fetchall(c.execute("SELECT %s::int", (4,))),
    "AsyncConnection.execute(query=, params=, prepare=, binary=)": lambda c: _fetchall(c.execute(
        query="SELECT %s::int", params=(5,), prepare=True, binary=True)),
    "AsyncServerCursor.execute(query=, params=, binary=, scrollable=)": _server_cursor,
    "pipeline: execute(query=, params=) and executemany(query=, params_seq=)": _in_pipeline,
    "execute(str subclass)": lambda c: _fetchall(c.cursor().execute(H("SELECT %s::int + 1"), (1,))),
    "executemany(str subclass)": lambda c: c.cursor().executemany(H(f"INSERT INTO {T} VALUES (%s)"), [(1,)]),
    "stream(str subclass)": lambda c: _rows(c.cursor().stream(H("SELECT generate_series(1, %s)"), (2,))),
    "copy(str subclass)": lambda c: _acopy_out(c.cursor(), H("COPY (SELECT %s::int) TO STDOUT"), (9,)),
}


@pytest.mark.parametrize("name", list(ASYNC_CALLS))
def test_async_call_behaves_as_the_unwrapped_driver(pg_dsn: str, name: str) -> None:
    same_as_the_driver(pg_dsn, ASYNC_CALLS[name], run_async)


def test_executemany_by_keyword_counts_each_row(pg_dsn: str) -> None:
    """The call that raised ``TypeError: 'NoneType' object is not iterable`` once wrapped."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE {T} (a int)")
        with count_queries(match=T) as counter:
            cur.executemany(query=f"INSERT INTO {T} VALUES (%s)", params_seq=((i,) for i in range(6)))
        assert cur.execute(f"SELECT count(*) FROM {T}").fetchone() == (6,)
    assert (counter.count, counter.executions) == (1, 6)


def test_a_query_object_of_the_users_is_counted_by_its_text_without_calling_its_methods(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn, count_queries() as counter:
        conn.execute(H("SELECT 41 + 1"))
        conn.execute(HostileBytes(b"SELECT 43"))
    assert [query.sql for query in counter.queries] == ["SELECT 41 + 1", "SELECT 43"]
    assert all(type(query.sql) is str for query in counter.queries)


class ComparedText(str):
    """A text whose ``__eq__`` and ``__str__`` raise (hashable: sqlite3 caches statements by hash)."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __str__(self) -> str:
        raise RuntimeError("str() called")

    __hash__ = str.__hash__


def test_a_statement_object_through_sqlalchemy_is_counted_by_its_text() -> None:
    """SQLAlchemy's own hook (sqlite3 here): the same text already in the shape cache would
    be compared with the object's ``__eq__`` on lookup."""
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    with engine.connect() as conn, count_queries() as counter:
        assert conn.exec_driver_sql("SELECT 7").scalar() == 7
        assert conn.exec_driver_sql(ComparedText("SELECT 7")).scalar() == 7
    assert [query.sql for query in counter.queries] == ["SELECT 7", "SELECT 7"]
