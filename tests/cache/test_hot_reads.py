"""hot_reads against a real PostgreSQL with pg_stat_statements, in a database of its own.

The module creates a fresh database on the session's server, so its pg_stat_statements
rows and table statistics hold only what these tests ran (and no statement of its own
lands in the shared database).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from cache_helpers import PrivateDatabase, private_database
from sqlalchemy import create_engine

from pytest_migsafe.cache.hot_reads import (
    HotRead,
    HotReadsUnavailable,
    format_hot_reads,
    hot_reads,
)


@pytest.fixture(scope="module")
def database(pg_dsn: str) -> Iterator[PrivateDatabase]:
    """A database of this module's own, with a known workload already run."""
    with private_database(pg_dsn, "hot_reads") as db, psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE products (id int PRIMARY KEY, name text)")
        conn.execute("CREATE TABLE carts (id serial PRIMARY KEY, product_id int)")
        conn.execute("CREATE TABLE users (id int PRIMARY KEY, name text, favourite int)")
        conn.execute("INSERT INTO products SELECT g, 'p' || g FROM generate_series(1, 100) g")
        conn.execute("INSERT INTO users VALUES (1, 'ann', 1)")
        conn.execute("SELECT pg_stat_statements_reset()")
        for i in range(50):  # read-heavy, never written: the best candidate
            conn.execute("SELECT name FROM products WHERE id = %s", (i + 1,))
        for i in range(60):  # read more often, but written 40 times
            conn.execute("SELECT count(*) FROM carts WHERE product_id = %s", (i,))
        for i in range(40):
            conn.execute("INSERT INTO carts (product_id) VALUES (%s)", (i,))
        for _ in range(5):
            conn.execute("SELECT u.name, p.name FROM users u JOIN products p ON p.id = u.favourite "
                         "WHERE u.id = %s", (1,))
        conn.execute("UPDATE users SET name = %s WHERE id = %s", ("bob", 1))
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.close()
        yield db


def by_table(rows: list[HotRead]) -> dict[tuple[str, ...], HotRead]:
    return {row.tables: row for row in rows}


def test_reads_ranked_by_estimated_hits_then_calls(database: PrivateDatabase) -> None:
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        rows = hot_reads(conn)
    assert [row.tables for row in rows] == [("products",), ("carts",), ("users", "products")]
    products, carts, joined = rows
    assert (products.calls, products.write_calls, products.estimated_hits) == (50, 0, 50)
    assert (carts.calls, carts.write_calls, carts.estimated_hits) == (60, 40, 20)
    assert (joined.calls, joined.write_calls, joined.estimated_hits) == (5, 1, 4)
    assert products.query.startswith("SELECT name FROM products WHERE id = $1")
    assert products.mean_ms > 0 and products.total_ms >= products.mean_ms
    assert carts.writes_per_read == pytest.approx(40 / 60)


def test_rows_written_come_from_pg_stat_user_tables(database: PrivateDatabase) -> None:
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        rows = by_table(hot_reads(conn))
    assert rows[("products",)].rows_written == 100  # the initial INSERT
    assert rows[("carts",)].rows_written == 40
    assert rows[("users", "products")].rows_written == 2 + 100  # users: 1 insert, 1 update; products: 100


def test_limit_and_system_catalog_reads_are_left_out(database: PrivateDatabase) -> None:
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute("SELECT count(*) FROM pg_class")
        rows = hot_reads(conn, limit=2)
        everything = hot_reads(conn, limit=100)
    assert len(rows) == 2
    assert not any(table.startswith("pg_") for row in everything for table in row.tables)


def test_works_on_a_sqlalchemy_connection(database: PrivateDatabase) -> None:
    engine = create_engine(database.url)
    try:
        with engine.connect() as conn:
            rows = hot_reads(conn, limit=1)
    finally:
        engine.dispose()
    assert rows[0].tables == ("products",)


def test_without_the_extension_it_says_how_to_fix(pg_dsn: str) -> None:
    with private_database(pg_dsn, "hot_reads_bare") as bare, psycopg.connect(bare.dsn, autocommit=True) as conn:
        conn.execute("DROP EXTENSION pg_stat_statements")
        with pytest.raises(HotReadsUnavailable, match="CREATE EXTENSION pg_stat_statements"):
            hot_reads(conn)
        conn.close()


def test_format_lists_best_candidate_first(database: PrivateDatabase) -> None:
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        text = format_hot_reads(hot_reads(conn, limit=2))
    lines = text.splitlines()
    assert lines[0].split()[:6] == ["#", "calls", "mean", "ms", "writes", "rows"]
    assert lines[1].split()[:2] == ["1", "50"]
    assert "(products)" in lines[1] and "(carts)" in lines[2]
    assert format_hot_reads([]) == "no SELECT statements in pg_stat_statements for this database"


def test_merge_and_data_modifying_ctes_are_writes_and_locking_reads_no_candidates(pg_dsn: str) -> None:
    """25 MERGEs into prices and 25 SELECTs over an UPDATE CTE of accounts were no writes at
    all (both reads ranked with 30 estimated hits), and SELECT ... FOR UPDATE came first as a
    cache candidate. The calls are the workload's own, counted here."""
    with private_database(pg_dsn, "hot_reads_writes") as db, psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE prices (id int PRIMARY KEY, v int)")
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, n int)")
        conn.execute("INSERT INTO prices SELECT g, g FROM generate_series(1, 5) g")
        conn.execute("INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 5) g")
        conn.execute("SELECT pg_stat_statements_reset()")
        for i in range(30):
            conn.execute("SELECT v FROM prices WHERE id = %s", (i % 5 + 1,))
            conn.execute("SELECT n FROM accounts WHERE id = %s", (i % 5 + 1,))
        for i in range(25):
            conn.execute("MERGE INTO prices p USING (SELECT %s::int AS id) s ON p.id = s.id "
                         "WHEN MATCHED THEN UPDATE SET v = p.v + 1", (i % 5 + 1,))
            conn.execute("WITH u AS (UPDATE accounts SET n = n + 1 WHERE id = %s RETURNING id) SELECT * FROM u",
                         (i % 5 + 1,))
        for i in range(40):
            conn.execute("SELECT n FROM accounts WHERE id = %s FOR UPDATE", (i % 5 + 1,))
        conn.execute("SELECT pg_stat_force_next_flush()")
        rows = hot_reads(conn)
    assert all("FOR UPDATE" not in row.query.upper() for row in rows)
    assert {row.tables: (row.calls, row.write_calls, row.estimated_hits) for row in rows} == {
        ("prices",): (30, 25, 5), ("accounts",): (30, 25, 5)}
