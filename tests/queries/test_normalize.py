"""Tests for pytest_migsafe.queries.normalize."""

from __future__ import annotations

import re

import pytest

from pytest_migsafe.queries import normalize as nz
from pytest_migsafe.queries.normalize import (
    is_transaction_control,
    normalize,
    statement_kind,
    tables_read,
    tables_written,
)

# ---------------------------------------------------------------------------
# placeholders and literals
# ---------------------------------------------------------------------------

PLACEHOLDER_STYLES = [
    "SELECT * FROM t WHERE a = $1",
    "SELECT * FROM t WHERE a = %s",
    "SELECT * FROM t WHERE a = %(a_1)s",
    "SELECT * FROM t WHERE a = :a_1",
    "SELECT * FROM t WHERE a = ?",
    "SELECT * FROM t WHERE a = 1",
    "SELECT * FROM t WHERE a = -17",
    "SELECT * FROM t WHERE a = 3.5e2",
    "SELECT * FROM t WHERE a = 'x'",
    "SELECT * FROM t WHERE a = 'it''s'",
    "SELECT * FROM t WHERE a = E'it\\'s'",
    "SELECT * FROM t WHERE a = $$dollar 'quoted' $$",
    "SELECT * FROM t WHERE a = $tag$x$tag$",
]


@pytest.mark.parametrize("sql", PLACEHOLDER_STYLES)
def test_every_placeholder_and_literal_style_has_one_shape(sql: str) -> None:
    assert normalize(sql) == "SELECT * FROM t WHERE a = ?"


def test_whitespace_comments_and_case_do_not_matter() -> None:
    a = normalize("select * from t where a=1")
    b = normalize("SELECT *\n FROM t WHERE a = $1 -- x")
    c = normalize("/* leading */ Select  *\tFrom T /* mid */ wHeRe A = %s;")
    assert a == b == c == "SELECT * FROM t WHERE a = ?"


def test_string_contents_do_not_leak() -> None:
    shape = normalize(
        "SELECT * FROM t WHERE a = 'x -- not a comment IN (1, 2)' AND b = 2"
    )
    assert shape == "SELECT * FROM t WHERE a = ? AND b = ?"


@pytest.mark.parametrize(("sql", "secret"), [
    # PostgreSQL 16's number forms: read as a number and a name before, kept in the shape
    ("UPDATE cards SET pan = 4111_1111_1111_1111 WHERE id = 1", "4111"),
    ("UPDATE accounts SET balance = 1_000_000.50 WHERE id = %s", "000"),
    ("SELECT 0o7654321, 0b1010_1010, 0x_dead_beef FROM t", "7654321"),
    # a dollar quote's tag may be any letters: the password was kept with a non-ASCII tag
    ("CREATE ROLE bob LOGIN PASSWORD $é$hunter28$é$", "hunter28"),
    ("ALTER ROLE bob PASSWORD $pässwort$hunter29$pässwort$", "hunter29"),
])
def test_literals_of_every_postgresql_form_do_not_leak(sql: str, secret: str) -> None:
    shape = normalize(sql)
    assert secret not in shape and "?" in shape


@pytest.mark.parametrize(("sql", "secret"), [
    # strings the parser reads as names: shown (terminal, JSON, baseline, SARIF) before
    ("COPY (SELECT 1) TO PROGRAM 'cat > /dev/null # password=hunter2'", "hunter2"),
    ("COPY t FROM PROGRAM 'curl -H token:hunter15 https://example.com/x.csv'", "hunter15"),
    ("CREATE FUNCTION f() RETURNS int AS $$ SELECT hunter_secret FROM vault $$ LANGUAGE sql", "hunter_secret"),
])
def test_a_literal_the_parser_reads_as_a_name_does_not_leak(sql: str, secret: str) -> None:
    shape = normalize(sql)
    assert secret not in shape and "?" in shape


@pytest.mark.parametrize(("sql", "kept"), [
    ("SELECT date_trunc('day', created) FROM t", "'DAY'"),
    ("SELECT x FROM t WHERE d > now() - interval '5 days'", "DAYS"),
    ("SELECT data->>'email' FROM t", "'email'"),
    ("SELECT json_extract(x, '$.key') FROM t", "'key'"),
])
def test_literals_that_are_part_of_what_a_statement_is_stay(sql: str, kept: str) -> None:
    assert kept in normalize(sql)


def test_numbers_with_underscores_inside_names_are_names() -> None:
    assert normalize('SELECT t_1_000, "x1_0", a$1_0 FROM t WHERE b IN (1_000, 2_000)') == \
        'SELECT t_1_000, "x1_0", a$1_0 FROM t WHERE b IN (?)'


def test_limit_offset_become_placeholders() -> None:
    assert normalize("SELECT a FROM t LIMIT 10 OFFSET 20") == normalize(
        "select a from t limit %s offset %s"
    )


def test_null_and_booleans_are_kept() -> None:
    assert normalize("SELECT * FROM t WHERE a IS NULL AND b = TRUE") == (
        "SELECT * FROM t WHERE a IS NULL AND b = TRUE"
    )
    assert normalize("SELECT * FROM t WHERE a IS NULL") != normalize(
        "SELECT * FROM t WHERE a = 1"
    )


def test_casts_identifiers_with_digits_and_quoted_identifiers() -> None:
    shape = normalize(
        'SELECT t1.col_2, "Order".x FROM t1 JOIN "Order" ON 1 = 1 WHERE a = $1::int'
    )
    assert "t1.col_2" in shape
    assert '"Order"' in shape
    assert "?" in shape and "1" not in shape.replace("t1", "").replace("col_2", "")
    assert normalize("SELECT $1::int") == normalize("SELECT '5'::integer")


# ---------------------------------------------------------------------------
# list collapsing
# ---------------------------------------------------------------------------


def _in_list(n: int, style: str) -> str:
    items = {
        "num": [str(i) for i in range(n)],
        "str": [f"'v{i}'" for i in range(n)],
        "dollar": [f"${i + 1}" for i in range(n)],
        "pyformat": [f"%(id_1_{i})s" for i in range(n)],
        "format": ["%s"] * n,
        "qmark": ["?"] * n,
        "asyncpg": [f"${i + 1}::INTEGER" for i in range(n)],
    }[style]
    return "SELECT t.id FROM t WHERE t.id IN (" + ", ".join(items) + ") AND t.x = 1"


@pytest.mark.parametrize(
    "style", ["num", "str", "dollar", "pyformat", "format", "qmark"]
)
@pytest.mark.parametrize("n", [1, 3, 500])
def test_in_lists_of_any_length_and_style_collapse(n: int, style: str) -> None:
    assert (
        normalize(_in_list(n, style))
        == "SELECT t.id FROM t WHERE t.id IN (?) AND t.x = ?"
    )


@pytest.mark.parametrize("n", [1, 3, 500])
def test_in_list_with_casts_collapses(n: int) -> None:
    assert normalize(_in_list(n, "asyncpg")) == normalize(_in_list(1, "asyncpg"))


def test_in_list_that_the_precollapse_pass_does_not_handle() -> None:
    # function calls are not plain literals: collapsed by the parser instead
    assert normalize(
        "SELECT * FROM t WHERE a IN (lower('A'), lower('B'))"
    ) == normalize("SELECT * FROM t WHERE a IN (lower('C'))")


def test_tuple_in_list_and_any_array() -> None:
    assert normalize(
        "SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4), (5, 6))"
    ) == normalize("SELECT * FROM t WHERE (a, b) IN ((%s, %s))")
    assert normalize("SELECT * FROM t WHERE a = ANY(ARRAY[1, 2, 3])") == normalize(
        "SELECT * FROM t WHERE a = ANY(ARRAY[7])"
    )


def test_huge_in_list_is_fast_enough_and_collapses() -> None:
    sql = (
        "SELECT id FROM t WHERE id IN ("
        + ", ".join(str(i) for i in range(10_000))
        + ")"
    )
    assert normalize(sql) == "SELECT id FROM t WHERE id IN (?)"


def _values(rows: int, style: str = "pyformat") -> str:
    if style == "pyformat":
        body = ", ".join(f"(%(a_m{i})s, %(b_m{i})s)" for i in range(rows))
    else:
        body = ", ".join(f"({i}, 'x{i}')" for i in range(rows))
    return f"INSERT INTO items (a, b) VALUES {body} RETURNING items.id"


@pytest.mark.parametrize("rows", [1, 2, 50])
@pytest.mark.parametrize("style", ["pyformat", "literal"])
def test_values_rows_collapse(rows: int, style: str) -> None:
    assert normalize(_values(rows, style)) == (
        "INSERT INTO items (a, b) VALUES (?, ?) RETURNING items.id"
    )


# ---------------------------------------------------------------------------
# distinct statements stay distinct
# ---------------------------------------------------------------------------

DIFFERENT = [
    "SELECT * FROM users WHERE id = 1",
    "SELECT * FROM orders WHERE id = 1",
    "SELECT * FROM users WHERE email = 1",
    "SELECT name FROM users WHERE id = 1",
    "SELECT * FROM users WHERE id = 1 AND active = 1",
    "SELECT * FROM users WHERE id IN (1, 2)",
    "SELECT * FROM users WHERE id IN (SELECT user_id FROM orders)",
    "DELETE FROM users WHERE id = 1",
    'SELECT * FROM "Users" WHERE id = 1',
    "INSERT INTO users (a) VALUES (1)",
    "INSERT INTO users (a, b) VALUES (1, 2)",
]


def test_different_tables_and_columns_give_different_shapes() -> None:
    shapes = [normalize(sql) for sql in DIFFERENT]
    assert len(set(shapes)) == len(shapes), shapes


def test_multiple_statements_are_joined() -> None:
    assert (
        normalize("select 1; SELECT * FROM t WHERE a = 'x';")
        == "SELECT ?; SELECT * FROM t WHERE a = ?"
    )


# ---------------------------------------------------------------------------
# fallback path
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("FOO BAR %s 12", "foo bar ? ?"),
        ("FOO BAR 'x' -- c\n IN (1, 2, 3)", "foo bar ? IN (?)"),
        ("FROB t VALUES (1, 'a'), (2, 'b'), (-3, $1)", "frob t VALUES (?, ?)"),
        ("EXPLAIN SELECT * FROM t WHERE a = 5", "EXPLAIN SELECT * FROM t WHERE a = ?"),
        ("VACUUM ANALYZE t1", "VACUUM ANALYZE t1"),
        ("", ""),
        ("  ; -- nothing\n", ""),
        ("SELECT 'unterminated", "SELECT ?"),
        ("SELECT (((", "SELECT ((("),
    ],
)
def test_fallback_never_raises_and_replaces_literals(sql: str, expected: str) -> None:
    assert normalize(sql) == expected


def test_non_str_input_does_not_raise() -> None:
    assert normalize(b"SELECT * FROM t WHERE a = %s") == "SELECT * FROM t WHERE a = ?"  # type: ignore[arg-type]
    assert isinstance(normalize(None), str)  # type: ignore[arg-type]


def test_huge_unparseable_text_uses_fallback() -> None:
    sql = "; ".join(f"FROB t{i % 3} {i}" for i in range(5_000))
    assert len(sql) > nz.MAX_PARSE_CHARS
    assert normalize(sql).startswith("frob t0 ?; frob t1 ?; frob t2 ?")


# ---------------------------------------------------------------------------
# transaction control and statement kinds
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "begin",
        "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "BEGIN IMMEDIATE",
        "START TRANSACTION",
        "start transaction read only",
        "COMMIT",
        "commit;",
        "END",
        "ROLLBACK",
        "rollback to savepoint sa_savepoint_1",
        "ROLLBACK TO sp",
        "SAVEPOINT sa_savepoint_1",
        "RELEASE SAVEPOINT sa_savepoint_1",
        "release sp",
        "PREPARE TRANSACTION 'gid'",
        "COMMIT PREPARED 'gid'",
        "ROLLBACK PREPARED 'gid'",
        "  \n\tcommit",
        "-- leading comment\nBEGIN",
        "/* a */ /* b */ savepoint x",
    ],
)
def test_transaction_control(sql: str) -> None:
    assert is_transaction_control(sql)
    assert statement_kind(sql) == "transaction"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "SELECT * FROM begin_dates",
        "INSERT INTO savepoints VALUES (1)",
        "PREPARE stmt AS SELECT 1",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "-- BEGIN\nSELECT 1",
        "",
    ],
)
def test_not_transaction_control(sql: str) -> None:
    assert not is_transaction_control(sql)


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("SELECT 1", "select"),
        ("  select * from t", "select"),
        ("(SELECT 1) UNION (SELECT 2)", "select"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "select"),
        (
            "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x) SELECT n FROM x",
            "select",
        ),
        (
            "WITH d AS (SELECT id FROM t) DELETE FROM u WHERE id IN (SELECT id FROM d)",
            "delete",
        ),
        ("WITH d AS (SELECT 1) INSERT INTO u SELECT * FROM d", "insert"),
        ("WITH d AS (SELECT 1) UPDATE u SET a = 1", "update"),
        ("VALUES (1), (2)", "select"),
        ("INSERT INTO t VALUES (1)", "insert"),
        ("REPLACE INTO t VALUES (1)", "insert"),
        ("/* x */ UPDATE t SET a = 1", "update"),
        ("DELETE FROM t", "delete"),
        ("CREATE TABLE t (a int)", "ddl"),
        ("alter table t add column b int", "ddl"),
        ("DROP INDEX ix", "ddl"),
        ("TRUNCATE t", "ddl"),
        ("COMMIT", "transaction"),
        ("SET search_path TO x", "other"),
        ("EXPLAIN SELECT 1", "other"),
        ("SHOW server_version", "other"),
        ("", "other"),
    ],
)
def test_statement_kind(sql: str, kind: str) -> None:
    assert statement_kind(sql) == kind


# ---------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------


def test_tables_read_for_a_join() -> None:
    sql = (
        "SELECT u.id, a.email FROM public.Users AS u "
        "JOIN addresses a ON a.user_id = u.id "
        "LEFT JOIN (SELECT * FROM orders) o ON o.user_id = u.id WHERE u.id = %s"
    )
    assert tables_read(sql) == ("users", "addresses", "orders")
    assert tables_written(sql) == ()


def test_tables_read_skips_ctes() -> None:
    assert tables_read(
        "WITH x AS (SELECT * FROM t) SELECT * FROM x JOIN u ON true"
    ) == ("t", "u")


@pytest.mark.parametrize(
    "sql, written, read",
    [
        ("INSERT INTO app.items (a) VALUES (1)", ("items",), ()),
        ("INSERT INTO items (a) SELECT a FROM staging", ("items",), ("staging",)),
        ("UPDATE items SET a = 1 WHERE id = 2", ("items",), ()),
        ("UPDATE items SET a = b.a FROM b WHERE items.id = b.id", ("items",), ("b",)),
        ("DELETE FROM items USING b WHERE items.id = b.id", ("items",), ("b",)),
        ("SELECT 1", (), ()),
        ("CREATE TABLE t (a int)", (), ()),
        ("FROB t", (), ()),
    ],
)
def test_tables_written(sql: str, written: tuple, read: tuple) -> None:
    assert tables_written(sql) == written
    assert tables_read(sql) == read


# ---------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------


def test_cache_hit_returns_identical_object() -> None:
    sql = "SELECT * FROM cache_probe WHERE id = %s -- unique text for this test"
    info0 = normalize.cache_info()  # type: ignore[attr-defined]
    first = normalize(sql)
    info1 = normalize.cache_info()  # type: ignore[attr-defined]
    second = normalize(sql)
    info2 = normalize.cache_info()  # type: ignore[attr-defined]
    assert first is second
    assert info1.misses == info0.misses + 1
    assert info2.hits == info1.hits + 1 and info2.misses == info1.misses
    assert info2.maxsize >= 65536


def test_clear_caches() -> None:
    normalize("SELECT 42")
    nz.clear_caches()
    assert normalize.cache_info().currsize == 0  # type: ignore[attr-defined]


def _possessive_repeats(pattern: re.Pattern[str]) -> int:
    """POSSESSIVE_REPEAT nodes in ``pattern``'s parse tree (``x*+``, ``x++``, ``x?+``, ``x{m,n}+``)."""
    from re import _constants, _parser  # type: ignore[attr-defined]

    def count(items: object) -> int:
        found = 0
        for op, av in items:  # type: ignore[attr-defined]
            if op is _constants.POSSESSIVE_REPEAT:
                found += 1
            for part in av if isinstance(av, (list, tuple)) else ():
                if isinstance(part, _parser.SubPattern):
                    found += count(part)
                elif isinstance(part, (list, tuple)):
                    found += sum(count(sub) for sub in part if isinstance(sub, _parser.SubPattern))
        return found

    return count(_parser.parse(pattern.pattern, pattern.flags))


def test_no_regex_of_the_package_uses_a_possessive_repeat() -> None:
    """CPython's possessive repeats mis-match before 3.11.5 (gh-106052, gh-100061), and the
    statement splitter's ran out of memory on Debian 12's Python 3.11.2 at any string of
    several statements: the package writes ``(?>x*)``, the atomic group they stand for."""
    import importlib
    import pkgutil

    import pytest_migsafe

    patterns: dict[str, re.Pattern[str]] = {}
    for info in pkgutil.walk_packages(pytest_migsafe.__path__, "pytest_migsafe."):
        if info.name.endswith(".__main__"):
            continue  # (runs the command line)
        try:
            loaded = importlib.import_module(info.name)
        except ImportError:  # an optional extra not installed
            continue
        for name, value in vars(loaded).items():
            if isinstance(value, re.Pattern):
                patterns[f"{info.name}.{name}"] = value
    for factory in (nz._precollapse_re, nz._item_re, nz._row_re):
        patterns[f"{factory.__module__}.{factory.__name__}()"] = factory()
    assert "pytest_migsafe.queries.normalize._STATEMENT_RE" in patterns
    assert {name: n for name, pattern in patterns.items() if (n := _possessive_repeats(pattern))} == {}
