"""Shape keys do not depend on sqlglot's rendering: a baseline written under one sqlglot
compares equal under another.

The pairs below are real: each statement (as SQLAlchemy sends it through psycopg, from the
example suite, plus a few hand-written ones) normalized by sqlglot 30.30.0 and by sqlglot
25.0.0, the lowest version ``sqlglot>=25.0`` allows (``pip download sqlglot==25.0.0
--no-deps`` into a temporary directory, then ``normalize`` run with it first on
``PYTHONPATH``). ``test_keys_agree_with_another_installed_sqlglot`` repeats that with a
live second sqlglot when ``MIGSAFE_OTHER_SQLGLOT`` names its directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_migsafe.report.baseline import baseline_of_run, read_baseline, write_baseline
from pytest_migsafe.report.record import NPlusOne, QueryFigures, RunReport, ShapeFigure, TestRecord
from pytest_migsafe.report.regressions import compare
from pytest_migsafe.report.shapekey import canonical_tokens, shape_key

STATEMENTS = [
    "INSERT INTO orders (user_id, total) VALUES (%(user_id)s::INTEGER, %(total)s) RETURNING orders.id",
    "INSERT INTO users (name, email) VALUES (%(name)s::VARCHAR, %(email)s::VARCHAR) RETURNING users.id",
    "SELECT addresses.id, addresses.user_id, addresses.city \nFROM addresses \n"
    "WHERE %(param_1)s::INTEGER = addresses.user_id ORDER BY addresses.id",
    "SELECT pg_catalog.pg_class.relname \nFROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON "
    "pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace \nWHERE pg_catalog.pg_class.relname IN "
    "(%(table_names_1)s::VARCHAR, %(table_names_2)s::VARCHAR) AND pg_catalog.pg_class.relkind = ANY "
    "(ARRAY[%(param_1)s::VARCHAR, %(param_2)s::VARCHAR]) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) "
    "AND pg_catalog.pg_namespace.nspname != %(nspname_1)s::VARCHAR",
    "SELECT users.id, users.name, users.email \nFROM users \nWHERE users.id = %(pk_1)s::INTEGER",
    "UPDATE users SET email=%(email)s::VARCHAR WHERE users.id = %(users_id)s::INTEGER",
    "INSERT INTO t (a, b) VALUES (%s, %s) ON CONFLICT (a) DO UPDATE SET b = excluded.b RETURNING id",
    "SELECT COALESCE(x, 0), CASE WHEN y THEN 1 ELSE 2 END FROM t WHERE x IS NOT NULL AND NOT y",
]

# (sqlglot 30.30.0, sqlglot 25.0.0) renderings of STATEMENTS, in order
RENDERED = [
    ("INSERT INTO orders (user_id, total) VALUES (CAST(? AS INT), ?) RETURNING orders.id",
     "INSERT INTO orders (user_id, total) VALUES (CAST(? AS SIGNED), ?) RETURNING orders.id"),
    ("INSERT INTO users (name, email) VALUES (CAST(? AS VARCHAR), CAST(? AS VARCHAR)) RETURNING users.id",
     "INSERT INTO users (name, email) VALUES (CAST(? AS CHAR), CAST(? AS CHAR)) RETURNING users.id"),
    ("SELECT addresses.id, addresses.user_id, addresses.city FROM addresses WHERE CAST(? AS INT) = "
     "addresses.user_id ORDER BY addresses.id",
     "SELECT addresses.id, addresses.user_id, addresses.city FROM addresses WHERE CAST(? AS SIGNED) = "
     "addresses.user_id ORDER BY addresses.id"),
    ("SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON "
     "pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relname IN "
     "(CAST(? AS VARCHAR)) AND pg_catalog.pg_class.relkind = ANY(ARRAY[CAST(? AS VARCHAR)]) AND "
     "pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname <> "
     "CAST(? AS VARCHAR)",
     "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON "
     "pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relname IN "
     "(CAST(? AS CHAR)) AND pg_catalog.pg_class.relkind = ANY(ARRAY(CAST(? AS CHAR))) AND "
     "pg_catalog.PG_TABLE_IS_VISIBLE(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname <> "
     "CAST(? AS CHAR)"),
    ("SELECT users.id, users.name, users.email FROM users WHERE users.id = CAST(? AS INT)",
     "SELECT users.id, users.name, users.email FROM users WHERE users.id = CAST(? AS SIGNED)"),
    ("UPDATE users SET email = CAST(? AS VARCHAR) WHERE users.id = CAST(? AS INT)",
     "UPDATE users SET email = CAST(? AS CHAR) WHERE users.id = CAST(? AS SIGNED)"),
    ("INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT(a) DO UPDATE SET b = excluded.b RETURNING id",
     "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT(a) DO UPDATE b = excluded.b RETURNING id"),
    ("SELECT COALESCE(x, ?), CASE WHEN y THEN ? ELSE ? END FROM t WHERE x IS NOT NULL AND NOT y",
     "SELECT COALESCE(x, ?), CASE WHEN y THEN ? ELSE ? END FROM t WHERE NOT x IS NULL AND NOT y"),
]


@pytest.mark.parametrize(("new", "old"), RENDERED)
def test_the_renderings_of_two_sqlglot_versions_have_one_key(new: str, old: str) -> None:
    assert new != old
    assert shape_key(new) == shape_key(old)


def test_different_statements_keep_different_keys() -> None:
    shapes = [
        "SELECT a FROM t WHERE x = ?", "SELECT a FROM t WHERE x IS NULL", "SELECT a FROM t WHERE x IS NOT NULL",
        "SELECT a FROM u WHERE x = ?", "SELECT a FROM t WHERE y = ?", "SELECT a FROM t WHERE x > ?",
        "SELECT a, b FROM t WHERE x = ?", "SELECT a FROM t WHERE x = ? ORDER BY a", "SELECT a - ? FROM t",
        "SELECT a FROM t", "UPDATE t SET a = ?", "DELETE FROM t WHERE x = ?",
        "SELECT CAST(a AS INT) FROM t", "SELECT CAST(a AS TEXT) FROM t", "SELECT a FROM t LEFT JOIN u ON ?",
        "SELECT a FROM t JOIN u ON ?",
        *(new for new, _ in RENDERED),
    ]
    assert len({shape_key(shape) for shape in shapes}) == len(shapes)


def test_case_quoting_whitespace_and_literals_do_not_change_the_key() -> None:
    assert canonical_tokens('SELECT "User".id FROM "User"  WHERE "User".name = \'x\'') == \
        canonical_tokens("select user.id\nfrom user where user.name = ?")
    assert shape_key("SELECT a FROM t AS x INNER JOIN u ON x.id != u.id LIMIT 10") == \
        shape_key("SELECT a FROM t x JOIN u ON x.id <> u.id LIMIT ?")


def record(nodeid: str, shapes: list[str]) -> TestRecord:
    figures = [ShapeFigure(shape, 12, 1.0, 0.1, {"app/views.py:14": 12}) for shape in shapes]
    return TestRecord(nodeid, "passed", QueryFigures(
        count=12 * len(shapes), executions=12 * len(shapes), total_ms=1.0, shapes=figures,
        n_plus_one=[NPlusOne(shape, "app/views.py:14", 12) for shape in shapes]))


def test_a_baseline_written_under_one_rendering_compares_equal_under_the_other(tmp_path: Path) -> None:
    new_shapes, old_shapes = [n for n, _ in RENDERED[:3]], [o for _, o in RENDERED[:3]]
    written = RunReport({"t::a": record("t::a", new_shapes)})
    write_baseline(tmp_path / "baseline.json", baseline_of_run(written))
    rerun = RunReport({"t::a": record("t::a", old_shapes)})
    comparison = compare(read_baseline(tmp_path / "baseline.json"), baseline_of_run(rerun))
    assert comparison.regressions == [] and comparison.improvements == []
    # and a real change of shape is still one
    changed = RunReport({"t::a": record("t::a", [*old_shapes[:2], "SELECT a FROM other WHERE id = ?"])})
    comparison = compare(read_baseline(tmp_path / "baseline.json"), baseline_of_run(changed))
    assert [(c.figure, c.after) for c in comparison.regressions] == [
        ("n_plus_one", "SELECT a FROM other WHERE id = ?")]


def test_a_schema_1_baseline_and_one_of_other_key_rules_are_keyed_again(tmp_path: Path) -> None:
    new, old = RENDERED[2]
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"kind": "migsafe-baseline", "schema_version": 1,
                                "tests": {"t::a": {"queries": 12, "n_plus_one": [old]}}}))
    assert read_baseline(path).tests["t::a"].n_plus_one == {shape_key(new): old}
    path.write_text(json.dumps({"kind": "migsafe-baseline", "schema_version": 2, "shape_key": "tokens-0",
                                "tests": {"t::a": {"queries": 12, "n_plus_one": {"stale": old},
                                                   "shapes": {"stale": {"shape": old, "count": 12}}}}}))
    entry = read_baseline(path).tests["t::a"]
    assert list(entry.n_plus_one) == list(entry.shapes) == [shape_key(new)]


@pytest.mark.skipif(not os.environ.get("MIGSAFE_OTHER_SQLGLOT"),
                    reason="MIGSAFE_OTHER_SQLGLOT names no directory holding another sqlglot")
def test_keys_agree_with_another_installed_sqlglot() -> None:
    other = os.environ["MIGSAFE_OTHER_SQLGLOT"]
    script = ("import json, sys, sqlglot\n"
              "from pytest_migsafe.queries.normalize import normalize\n"
              "print(json.dumps([sqlglot.__version__, [normalize(s) for s in json.load(sys.stdin)]]))\n")
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(STATEMENTS), capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=other), timeout=120)
    assert done.returncode == 0, done.stderr
    version, theirs = json.loads(done.stdout)
    import sqlglot

    from pytest_migsafe.queries.normalize import normalize

    assert version != sqlglot.__version__
    ours = [normalize(s) for s in STATEMENTS]
    assert [shape_key(s) for s in theirs] == [shape_key(s) for s in ours]
