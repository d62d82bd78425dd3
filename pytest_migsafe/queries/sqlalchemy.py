"""Capture statements sent through any SQLAlchemy Engine (AsyncEngine included).

One pair of ``before_cursor_execute`` / ``after_cursor_execute`` listeners on the Engine
class sees every engine, any dialect. Engines whose driver is psycopg 3 are skipped
here once the psycopg hooks are installed, so their statements are counted once, by
:mod:`pytest_migsafe.queries.psycopg`. Statements SQLAlchemy sends on its own through a
cursor (the dialect's checks at first connect, ``pool_pre_ping``) reach the server and
are counted like any other.
"""

from __future__ import annotations

import sys
from time import perf_counter
from typing import Any

from pytest_migsafe.queries import dispatch as capture
from pytest_migsafe.queries import psycopg as capture_psycopg
from pytest_migsafe.queries.callsite import call_site

_HOOKED_FLAG = "_migsafe_hooked"


def target_of(engine: Any) -> str:
    """``backend://host:port/database`` of an engine, without user or password."""
    try:
        return engine._migsafe_target  # type: ignore[no-any-return]
    except AttributeError:
        pass
    url = engine.url
    host = url.host or url.query.get("host") or ""
    port = f":{url.port}" if url.port else ""
    target = f"{url.get_backend_name()}://{host}{port}/{url.database or ':memory:'}"
    engine._migsafe_target = target
    return target


def _skipped(dialect: Any) -> bool:
    """True for psycopg 3 dialects while the psycopg hooks count their statements."""
    try:
        return dialect._migsafe_skip  # type: ignore[no-any-return]
    except AttributeError:
        skip = dialect.driver in ("psycopg", "psycopg_async") and capture_psycopg.is_installed()
        dialect._migsafe_skip = skip
        return skip


def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
            executemany: bool) -> tuple[str, Any]:
    # listened with retval=True (and returning what it got), which spares SQLAlchemy's
    # wrapper call around a retval=False listener: this runs for every statement
    if capture._active and context is not None:
        dialect = conn.dialect
        try:
            skip = dialect._migsafe_skip
        except AttributeError:
            skip = _skipped(dialect)
        if not skip:
            context._migsafe_t0 = perf_counter()
    return statement, parameters


def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
           executemany: bool) -> None:
    end = perf_counter()
    if not capture._active:
        return
    dialect = conn.dialect
    try:
        skip = dialect._migsafe_skip
    except AttributeError:
        skip = _skipped(dialect)
    if skip:
        return
    try:
        seconds = end - context._migsafe_t0
    except AttributeError:  # no context, or the counter started mid-statement
        seconds = 0.0
    batch = len(parameters) if executemany and hasattr(parameters, "__len__") else 1
    capture.record_statement(statement, seconds, target_of(conn.engine), batch, parameters,
                             call_site(sys._getframe(1)))


def install(import_missing: bool = True) -> bool:
    """Listen on every Engine; False when SQLAlchemy is not (yet) importable."""
    if "sqlalchemy" not in sys.modules and not import_missing:
        return False
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        return False
    # the flag lives on the class: a re-imported SQLAlchemy (pytester) is hooked anew
    if not Engine.__dict__.get(_HOOKED_FLAG):
        event.listen(Engine, "before_cursor_execute", _before, retval=True)
        event.listen(Engine, "after_cursor_execute", _after)
        setattr(Engine, _HOOKED_FLAG, True)
    return True


def uninstall() -> None:
    """Remove the listeners (for benchmarks and tests)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if Engine.__dict__.get(_HOOKED_FLAG):
        event.remove(Engine, "before_cursor_execute", _before)
        event.remove(Engine, "after_cursor_execute", _after)
        setattr(Engine, _HOOKED_FLAG, False)
