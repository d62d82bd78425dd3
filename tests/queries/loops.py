"""Application-side loops for the N+1 tests: statements sent from a test module are the
test's own arrangement and make no N+1 suspect, so the loops under test live here."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import text


def run_statements(conn: Any, sql: str, n: int) -> None:
    """Send ``sql`` ``n`` times through a SQLAlchemy connection, with ``:i`` bound to 0..n-1."""
    for i in range(n):
        conn.execute(text(sql), {"i": i})


def queue_lookups(conn: Any, n: int) -> None:
    """Queue ``n`` lookups on a psycopg connection (in the caller's pipeline: their results
    arrive when the caller's pipeline syncs, outside this function)."""
    for i in range(n):
        conn.execute("SELECT %s::int AS n", (i,))


def run_driver_sql(conn: Any, sql: str, n: int) -> None:
    """Send ``sql`` ``n`` times through ``Connection.exec_driver_sql`` (no bound parameters)."""
    for _ in range(n):
        conn.exec_driver_sql(sql)


def send_once(conn: Any, sql: str) -> None:
    """Send ``sql`` once through ``Connection.exec_driver_sql``."""
    conn.exec_driver_sql(sql)


def run_through_helper(conn: Any, sql: str, n: int) -> None:
    """Send ``sql`` ``n`` times, each through :func:`send_once` (a loop one call above the sender)."""
    for _ in range(n):
        send_once(conn, sql)


def stream_rows(cursor: Any, n: int) -> Any:
    """A psycopg ``stream()`` of ``n`` rows, started here (its first row read: psycopg sends the
    statement then, and its call site is this line), the rest returned unread: the statement
    is recorded when the caller has read it all, outside this function."""
    rows = cursor.stream("SELECT generate_series(1, %s::int)", (n,))
    return itertools.chain([next(rows)], rows)  # STARTED


def load_each(rows: Any, attribute: str) -> None:
    """Read ``attribute`` of each row: a lazy load per row (an ORM N+1)."""
    for row in rows:
        getattr(row, attribute)


def keyset_pages(session: Any, statement_for: Any) -> list[Any]:
    """Read every page of a keyset pagination: ``statement_for(last)`` is the statement of the
    page after the key ``last`` (None first); ends at an empty page."""
    out: list[Any] = []
    last = None
    while True:
        page = session.execute(statement_for(last)).all()
        if not page:
            return out
        out += page
        last = page[-1]
