"""Capture statements sent through psycopg 3 cursors, sync and async.

Wraps ``execute``, ``executemany``, ``stream`` and ``copy`` on the cursor classes that define them
(``Cursor``, ``ServerCursor``, ``AsyncCursor``, ``AsyncServerCursor``; client and raw
cursors inherit them), so raw psycopg, Django and SQLAlchemy over psycopg are all seen
here, once. ``executemany`` counts as one statement with its batch size recorded.
A statement is recorded when it completes: one the server rejects is not counted, as
``pg_stat_statements`` does not count it either.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from time import perf_counter
from typing import Any

from pytest_migsafe.queries import dispatch as capture
from pytest_migsafe.queries.callsite import call_site

_PATCHED_FLAG = "__migsafe_original__"


def is_installed() -> bool:
    """True when the psycopg imported now has its cursor methods wrapped.

    Checked on the class itself, not a flag of this module: a test harness that drops
    and re-imports modules (pytester does) gets a fresh, unwrapped psycopg.
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return False
    return hasattr(vars(psycopg.Cursor).get("execute"), _PATCHED_FLAG)


def target_of(conn: Any) -> str:
    """``postgresql://host:port/dbname`` for a psycopg connection (cached on it)."""
    try:
        return conn._migsafe_target  # type: ignore[no-any-return]
    except AttributeError:
        pass
    try:
        info = conn.info
        target = f"postgresql://{info.host}:{info.port}/{info.dbname}"
    except Exception:  # closed or broken connection: still count the statement
        return "postgresql://?/?"
    try:
        conn._migsafe_target = target
    except AttributeError:
        pass
    return target


def _text(query: Any, cursor: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode("utf-8", "replace")
    try:
        return str(query.as_string(cursor))
    except Exception:
        return str(query)


def _batch(params_seq: Any) -> tuple[Any, int]:
    if hasattr(params_seq, "__len__"):
        return params_seq, len(params_seq)
    rows = list(params_seq)
    return rows, len(rows)


def _wrap_sync(original: Callable[..., Any], many: bool) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not capture._active:
            return original(self, query, params, *args, **kwargs)
        batch = 1
        if many:
            params, batch = _batch(params)
        site = call_site(sys._getframe(1))
        t0 = perf_counter()
        result = original(self, query, params, *args, **kwargs)
        capture.record_statement(_text(query, self), perf_counter() - t0,
                                 target_of(self._conn), batch, params, site)
        return result

    setattr(wrapper, _PATCHED_FLAG, original)
    return wrapper


def _wrap_async(original: Callable[..., Any], many: bool) -> Callable[..., Any]:
    @functools.wraps(original)
    async def wrapper(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not capture._active:
            return await original(self, query, params, *args, **kwargs)
        batch = 1
        if many:
            params, batch = _batch(params)
        site = call_site(sys._getframe(1))
        t0 = perf_counter()
        result = await original(self, query, params, *args, **kwargs)
        capture.record_statement(_text(query, self), perf_counter() - t0,
                                 target_of(self._conn), batch, params, site)
        return result

    setattr(wrapper, _PATCHED_FLAG, original)
    return wrapper


def _wrap_stream_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if capture._active:
            capture.record_statement(_text(query, self), 0.0, target_of(self._conn), 1,
                                     params, call_site(sys._getframe(1)))
        return original(self, query, params, *args, **kwargs)

    setattr(wrapper, _PATCHED_FLAG, original)
    return wrapper


def _wrap_stream_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def wrapper(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if capture._active:
            capture.record_statement(_text(query, self), 0.0, target_of(self._conn), 1,
                                     params, call_site(sys._getframe(1)))
        async for row in original(self, query, params, *args, **kwargs):
            yield row

    setattr(wrapper, _PATCHED_FLAG, original)
    return wrapper


def _wrap_copy_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @contextmanager
    @functools.wraps(original)
    def copy(self: Any, statement: Any, params: Any = None, *args: Any, **kwargs: Any) -> Iterator[Any]:
        if not capture._active:
            with original(self, statement, params, *args, **kwargs) as copier:
                yield copier
            return
        site = call_site()  # the user's ``with cursor.copy(...)`` line
        t0 = perf_counter()
        with original(self, statement, params, *args, **kwargs) as copier:
            yield copier
        # recorded once the COPY completed, as the server counts it
        capture.record_statement(_text(statement, self), perf_counter() - t0, target_of(self._conn), 1,
                                 params, site)

    setattr(copy, _PATCHED_FLAG, original)
    return copy


def _wrap_copy_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @asynccontextmanager
    @functools.wraps(original)
    async def copy(self: Any, statement: Any, params: Any = None, *args: Any,
                   **kwargs: Any) -> AsyncIterator[Any]:
        if not capture._active:
            async with original(self, statement, params, *args, **kwargs) as copier:
                yield copier
            return
        site = call_site()
        t0 = perf_counter()
        async with original(self, statement, params, *args, **kwargs) as copier:
            yield copier
        capture.record_statement(_text(statement, self), perf_counter() - t0, target_of(self._conn), 1,
                                 params, site)

    setattr(copy, _PATCHED_FLAG, original)
    return copy


def install(import_missing: bool = True) -> bool:
    """Wrap psycopg's cursor methods; False when psycopg is not (yet) importable."""
    if is_installed():
        return True
    if "psycopg" not in sys.modules and not import_missing:
        return False
    try:
        import psycopg
    except ImportError:
        return False
    sync_classes: list[type[psycopg.Cursor[Any]]] = [psycopg.Cursor, psycopg.ServerCursor]
    async_classes: list[type[psycopg.AsyncCursor[Any]]] = [psycopg.AsyncCursor, psycopg.AsyncServerCursor]
    for cls in sync_classes:
        for name, many in (("execute", False), ("executemany", True)):
            if name in vars(cls):
                setattr(cls, name, _wrap_sync(vars(cls)[name], many))
        if "stream" in vars(cls):
            cls.stream = _wrap_stream_sync(vars(cls)["stream"])  # type: ignore[method-assign]
        if "copy" in vars(cls):
            cls.copy = _wrap_copy_sync(vars(cls)["copy"])  # type: ignore[method-assign]
    for acls in async_classes:
        for name, many in (("execute", False), ("executemany", True)):
            if name in vars(acls):
                setattr(acls, name, _wrap_async(vars(acls)[name], many))
        if "stream" in vars(acls):
            acls.stream = _wrap_stream_async(vars(acls)["stream"])  # type: ignore[method-assign]
        if "copy" in vars(acls):
            acls.copy = _wrap_copy_async(vars(acls)["copy"])  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    """Restore psycopg's original methods (for benchmarks and tests)."""
    if not is_installed():
        return
    import psycopg

    for cls in (psycopg.Cursor, psycopg.ServerCursor, psycopg.AsyncCursor, psycopg.AsyncServerCursor):
        for name in ("execute", "executemany", "stream", "copy"):
            method = vars(cls).get(name)
            original = getattr(method, _PATCHED_FLAG, None)
            if original is not None:
                setattr(cls, name, original)
