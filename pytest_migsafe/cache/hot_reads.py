"""Which reads to cache first: PostgreSQL's most-called SELECTs, weighed against writes.

:func:`hot_reads` reads ``pg_stat_statements`` (the extension must be installed in the
database and preloaded) of the current database: every SELECT shape with its calls and
mean time, the tables it reads (:func:`pytest_migsafe.queries.normalize.tables_read`), and how
often those tables are written - the calls of the statements in ``pg_stat_statements`` that
write them (INSERT, UPDATE, DELETE, MERGE, and a SELECT over a data-modifying CTE; each write
would invalidate a cached read), plus
the rows written according to ``pg_stat_user_tables`` (``n_tup_ins + n_tup_upd +
n_tup_del``). Both sets of counters run since their last reset.

Ranking: the estimated cache hits first, ``calls - write_calls`` (a read can hit the
cache at most until the next write of a table it reads), then the most calls. Reads of
system catalogs (``pg_*``, ``information_schema``), and locking reads (``SELECT ... FOR
UPDATE`` / ``FOR SHARE``), are left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pytest_migsafe.queries.normalize import statement_kind, tables_read, tables_written

WRITE_KINDS = ("insert", "update", "delete")
# SELECT ... FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE: a read that locks its rows for a
# write to come, inside a transaction: not one a cache should answer
_LOCKING = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+UPDATE|UPDATE|SHARE|KEY\s+SHARE)\b", re.IGNORECASE)


class HotReadsUnavailable(RuntimeError):
    """pg_stat_statements cannot be read in this database (a ``RuntimeError``): the extension
    is not created, or reading its view failed; the message says how to fix it."""


@dataclass
class HotRead:
    """One SELECT shape: how often it ran, how long it took, how often its tables change.

    ``query``: the statement text as ``pg_stat_statements`` normalized it (``$1``
    placeholders); ``calls``: its ``pg_stat_statements`` calls, summed over rows of the
    same text; ``total_ms`` / ``mean_ms``: its ``total_exec_time`` (``total_time`` before
    PostgreSQL 13) in milliseconds, and that divided by the calls, rounded to 0.001 ms;
    ``tables``: the tables it reads, lower case; ``write_calls``: ``pg_stat_statements``
    calls of the INSERT/UPDATE/DELETE statements that write any of those tables;
    ``rows_written``: ``pg_stat_user_tables`` ``n_tup_ins + n_tup_upd + n_tup_del`` of
    those tables, None when none of them is a user table there.
    """

    query: str
    calls: int
    mean_ms: float
    total_ms: float
    tables: tuple[str, ...]
    write_calls: int  # calls of write statements on the tables it reads
    rows_written: int | None  # n_tup_ins + n_tup_upd + n_tup_del of those tables

    @property
    def estimated_hits(self) -> int:
        """Calls a cache could have served: ``calls - write_calls``, floored at 0 (an estimate:
        each write of its tables is taken to invalidate one cached read)."""
        return max(0, self.calls - self.write_calls)

    @property
    def writes_per_read(self) -> float:
        """write_calls / calls, a ratio (0.0 with no calls; above 1 when writes outnumber
        reads); 0 is ideal for caching."""
        return self.write_calls / self.calls if self.calls else 0.0


def _rows(connection: Any, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a DB-API connection (psycopg...) or a SQLAlchemy Connection."""
    if hasattr(connection, "exec_driver_sql"):  # SQLAlchemy Connection
        return [tuple(row) for row in connection.exec_driver_sql(sql).fetchall()]
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        cursor.close()


def _statement_rows(connection: Any) -> list[tuple[str, int, float]]:
    """(query, calls, total ms) per pg_stat_statements row of the current database."""
    columns = {row[0] for row in _rows(connection, (
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('pg_stat_statements') "
        "AND attnum > 0 AND NOT attisdropped"))}
    if not columns:
        raise HotReadsUnavailable("pg_stat_statements is not installed in this database: run "
                                  "CREATE EXTENSION pg_stat_statements (it also needs "
                                  "shared_preload_libraries = 'pg_stat_statements')")
    total = "total_exec_time" if "total_exec_time" in columns else "total_time"
    sql = (f"SELECT query, calls, {total} FROM pg_stat_statements "
           "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
           "AND query IS NOT NULL")
    try:
        return [(str(q), int(c), float(t)) for q, c, t in _rows(connection, sql)]
    except Exception as exc:
        raise HotReadsUnavailable(f"cannot read pg_stat_statements: {str(exc).strip().splitlines()[0]}") from exc


def _rows_written(connection: Any) -> dict[str, int]:
    """n_tup_ins + n_tup_upd + n_tup_del per table name (lower case; summed over schemas)."""
    written: dict[str, int] = {}
    for name, rows in _rows(connection, "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del "
                                        "FROM pg_stat_user_tables"):
        key = str(name).lower()
        written[key] = written.get(key, 0) + int(rows or 0)
    return written


def _is_system(table: str) -> bool:
    return table.startswith(("pg_", "information_schema"))


def hot_reads(connection: Any, limit: int = 10) -> list[HotRead]:
    """The SELECTs a cache would serve best, from pg_stat_statements (see the module doc).

    ``connection`` is a DB-API connection (psycopg...) or a SQLAlchemy Connection on the
    database to rank; ``limit`` the number of rows returned. Returns at most ``limit``
    :class:`HotRead` rows, highest ``estimated_hits`` first, then most calls, then fewest
    write calls. Raises :class:`HotReadsUnavailable` when ``pg_stat_statements`` is not
    installed in the database or cannot be read; other driver errors (for example on
    ``pg_stat_user_tables``) propagate.
    """
    reads: dict[str, list[Any]] = {}  # query -> [calls, total ms]
    writes_by_table: dict[str, dict[str, int]] = {}  # table -> {write query: calls}
    for query, calls, total_ms in _statement_rows(connection):
        kind = statement_kind(query)
        # every statement that writes a table is a write of it, whatever it starts with: a
        # MERGE, a SELECT over a data-modifying CTE (WITH u AS (UPDATE ...) SELECT ...)
        written = tables_written(query) if kind in WRITE_KINDS or kind in ("select", "other") else ()
        for table in written:
            per_table = writes_by_table.setdefault(table, {})
            per_table[query] = per_table.get(query, 0) + calls
        if kind == "select" and not written and not _LOCKING.search(query):  # (a locking read is no cache candidate)
            tables = tables_read(query)
            if not tables or any(_is_system(table) for table in tables):
                continue
            slot = reads.setdefault(query, [0, 0.0])
            slot[0] += calls
            slot[1] += total_ms
    rows_written = _rows_written(connection)
    results = []
    for query, (calls, total_ms) in reads.items():
        tables = tables_read(query)
        writers: dict[str, int] = {}
        for table in tables:
            writers.update(writes_by_table.get(table, {}))
        known = [rows_written[table] for table in tables if table in rows_written]
        results.append(HotRead(
            query=query,
            calls=calls,
            mean_ms=round(total_ms / calls, 3) if calls else 0.0,
            total_ms=round(total_ms, 3),
            tables=tables,
            write_calls=sum(writers.values()),
            rows_written=sum(known) if known else None,
        ))
    results.sort(key=lambda r: (-r.estimated_hits, -r.calls, r.write_calls, r.query))
    return results[:limit]


def format_hot_reads(rows: list[HotRead], width: int = 100) -> str:
    """A plain-text table of hot reads, in the order given (one line a row, a header first).

    Columns: rank, calls, mean ms, write calls, rows written (``-`` when unknown),
    estimated hits, then the query on one line (cut to ``width`` characters) and its
    tables. An empty list gives a one-line "no SELECT statements" message.
    """
    if not rows:
        return "no SELECT statements in pg_stat_statements for this database"
    header = (f"{'#':>2} {'calls':>8} {'mean ms':>9} {'writes':>7} {'rows written':>12} "
              f"{'est. hits':>9}  query (tables)")
    lines = [header]
    for rank, row in enumerate(rows, 1):
        text = " ".join(row.query.split())
        if len(text) > width:
            text = text[: width - 3] + "..."
        written = "-" if row.rows_written is None else str(row.rows_written)
        lines.append(f"{rank:>2} {row.calls:>8} {row.mean_ms:>9.3f} {row.write_calls:>7} {written:>12} "
                     f"{row.estimated_hits:>9}  {text} ({', '.join(row.tables)})")
    return "\n".join(lines)
