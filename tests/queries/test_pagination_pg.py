"""Pages against a per-row loop of a page-shaped read, on PostgreSQL through psycopg (raw, and
SQLAlchemy's psycopg dialect): the paging values come from the parameters as psycopg gets them
(they were passed on to the N+1 rule only with --migsafe-capture-params, so on PostgreSQL every
page-shaped loop was taken for pages). The statement counts are checked against
pg_stat_statements."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

DSN = os.environ["MIGSAFE_TEST_POSTGRES_DSN"]
URL = os.environ["MIGSAFE_POSTGRES_URL"]


def server_calls(table: str) -> int:
    with psycopg.connect(DSN, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE %s "
                           "AND query NOT LIKE 'CREATE %%' AND query NOT LIKE 'INSERT %%'",
                           (f"%{table}%",)).fetchone()
    return int(row[0]) if row else 0


def test_a_page_shaped_loop_per_row_is_a_suspect_and_pages_are_not(pytester: pytest.Pytester) -> None:
    table = f"pg_items_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, parent int)")
        conn.execute(f"INSERT INTO {table} SELECT n, n % 12 FROM generate_series(1, 48) AS n")
    pytester.makepyfile(app=f"""
        import psycopg
        from sqlalchemy import Column, Integer, MetaData, Table, create_engine, select

        ENGINE = create_engine({URL!r})
        ITEMS = Table({table!r}, MetaData(), Column("id", Integer, primary_key=True), Column("parent", Integer))


        def first_two_per_parent_raw():
            with psycopg.connect({DSN!r}) as conn:
                return [conn.execute("SELECT id FROM {table} WHERE parent = %s ORDER BY id LIMIT %s OFFSET %s",
                                     (parent, 2, 0)).fetchall() for parent in range(12)]


        def first_two_per_parent_core():
            with ENGINE.connect() as conn:
                return [conn.execute(select(ITEMS.c.id).where(ITEMS.c.parent == parent, ITEMS.c.id > 0)
                                     .order_by(ITEMS.c.id).limit(2)).all() for parent in range(12)]


        def pages_raw():
            out, offset = [], 0
            with psycopg.connect({DSN!r}) as conn:
                while True:
                    rows = conn.execute("SELECT id FROM {table} ORDER BY id LIMIT %s OFFSET %s", (4, offset)).fetchall()
                    if not rows:
                        return out
                    out += rows
                    offset += 4


        def keyset_pages_core():
            out, last = [], 0
            with ENGINE.connect() as conn:
                while True:
                    rows = conn.execute(select(ITEMS.c.id).where(ITEMS.c.id > last).order_by(ITEMS.c.id).limit(4)).all()
                    if not rows:
                        return out
                    out += rows
                    last = rows[-1][0]
    """)
    pytester.makepyfile(test_pages="""
        import pytest
        import app

        @pytest.mark.no_n_plus_one
        def test_loop_raw():
            app.first_two_per_parent_raw()

        @pytest.mark.no_n_plus_one
        def test_loop_core():
            app.first_two_per_parent_core()

        @pytest.mark.no_n_plus_one
        def test_pages_raw():
            app.pages_raw()

        @pytest.mark.no_n_plus_one
        def test_keyset_pages_core():
            app.keyset_pages_core()
    """)
    before = server_calls(table)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "--migsafe-report")
    ran = server_calls(table) - before
    assert ran == 12 + 12 + 13 + 13  # (each page loop ends on an empty page)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["FAILED test_pages.py::test_loop_raw*", "FAILED test_pages.py::test_loop_core*"])
    result.stdout.fnmatch_lines(["*repeated 12 times*"])
