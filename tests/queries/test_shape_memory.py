"""Memory that does not grow with what a test sends: rows of ``executemany`` are never
copied, and no cache keeps a long SQL text alive after the test.

Figures come from ``tracemalloc`` (Python allocations), compared with the same code on
the unwrapped driver or without the plugin (``-p no:migsafe``).
"""

from __future__ import annotations

import gc
import json
import tracemalloc
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pytest_migsafe import count_queries
from pytest_migsafe.queries import counter as capture
from pytest_migsafe.queries import dispatch, normalize
from pytest_migsafe.queries import psycopg as capture_psycopg

ROW_TEXT = "x" * 1000  # 1 kB per row


@pytest.fixture
def table(pg_dsn: str) -> Iterator[str]:
    name = f"mem_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int, v text)")
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def _peak_of_executemany(dsn: str, table: str, rows: int) -> int:
    """Peak Python memory (bytes) above the start while ``executemany`` reads ``rows`` generated rows."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        sql = f"INSERT INTO {table} (id, v) VALUES (%s, %s)"
        cur.executemany(sql, [(0, "warm")])  # the driver's first-use allocations, outside the figure
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            cur.executemany(sql, ((i, f"{i}{ROW_TEXT}") for i in range(rows)))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return peak - start


def test_executemany_of_a_generator_never_copies_the_rows(pg_dsn: str, table: str) -> None:
    rows = 8_000  # 8 MB of row text
    capture_psycopg.uninstall()
    try:
        without = _peak_of_executemany(pg_dsn, table, rows)
    finally:
        capture_psycopg.install()
    with count_queries(match=table) as counter:
        wrapped = _peak_of_executemany(pg_dsn, table, rows)
    assert counter.executions == rows + 1
    # a copy of the rows would add their 8 MB; the wrappers add a few objects
    assert wrapped - without < rows * len(ROW_TEXT) / 20


def test_long_texts_are_shaped_from_their_beginning_alike() -> None:
    def in_list(width: int) -> str:
        return ("SELECT count(*) FROM t WHERE id IN ("
                + ", ".join(str(10 ** width + i) for i in range(normalize.MAX_SHAPE_CHARS // 4)) + ")")

    short_numbers, long_numbers = in_list(3), in_list(7)
    assert len(short_numbers) > normalize.MAX_SHAPE_CHARS
    assert normalize.normalize(short_numbers) == normalize.normalize(long_numbers)
    assert normalize.normalize(short_numbers).endswith(" ...")
    values = "INSERT INTO t (a, b) VALUES " + ", ".join(f"({i}, 'row {i}')" for i in range(9_000))
    assert normalize.normalize(values) == "INSERT INTO t(a, b) VALUES (?, ?) ..."
    assert normalize.tables_written(values) == ("t",)


def test_normalize_cache_keeps_digests_of_long_texts_not_the_texts() -> None:
    normalize.clear_caches()
    texts = [f"SELECT {i} AS n, '{'y' * 20_000}' AS pad" for i in range(30)]
    for text in texts:
        normalize.normalize(text)
        normalize.statement_kind(text)
    keys = list(normalize.normalize.cache.data)  # type: ignore[attr-defined]
    assert len(keys) == 30
    assert all(isinstance(key, bytes) and len(key) == 16 for key in keys)
    info = normalize.normalize.cache_info()  # type: ignore[attr-defined]
    assert info.currbytes < sum(map(len, texts)) / 20


def test_shape_cache_is_bounded_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = 256 * 1024
    monkeypatch.setattr(dispatch, "SHAPES_BYTES", budget)
    dispatch.clear_shapes()
    texts = [f"SELECT '{i:06d}{'z' * 1_500}' AS v{i}" for i in range(1_000)]  # 1.5 MB of keys
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for text in texts:
            dispatch.entry_of(text)
        accounted = dispatch.shapes_bytes()
        del texts, text
        normalize.clear_caches()  # which keep short texts too, within their own budget
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
        dispatch.clear_shapes()
    assert budget / 2 < accounted <= budget
    assert held < 2 * budget  # what it accounted for is about what it really held


def test_shape_cache_keys_a_long_text_by_digest() -> None:
    dispatch.clear_shapes()
    text = f"SELECT 1 AS one, '{'w' * 50_000}' AS pad"
    entry = dispatch.entry_of(text)
    assert dispatch.entry_of(text) is entry
    assert not any(isinstance(key, str) and len(key) > normalize.DIGEST_KEY_CHARS for key in dispatch._shapes)
    assert dispatch.shapes_bytes() < len(text) / 10


def test_a_long_text_is_grouped_by_its_exact_text_and_shown_with_its_parsed_shape() -> None:
    # between DIGEST_KEY_CHARS and KEEP_TEXT_CHARS: keyed by a digest (no parser as it runs),
    # merged by the readable shape when shown, as short texts are; never merged with a text
    # that differs in more than its literal values (a JSON key after ->>)
    rows = ", ".join(f"({i}, 'name {i}')" for i in range(300))
    first, second = (f"INSERT INTO items (id, name) VALUES {rows}", f"INSERT INTO items (id, name) VALUES {rows}, (1, 'x')")
    other = f"SELECT data->>'email' FROM items WHERE id IN ({', '.join(map(str, range(900)))})"
    assert all(normalize.DIGEST_KEY_CHARS < len(text) <= dispatch.KEEP_TEXT_CHARS for text in (first, second, other))
    keys = [dispatch.shape_key(text) for text in (first, second, other)]
    assert len(set(keys)) == 3 and all(type(key) is dispatch.TextDigest for key in keys)
    assert dispatch.shape_key(first) == keys[0]
    counter = capture.QueryCounter()
    for text in (first, second, first, other):
        counter._add(text, dispatch.shape_key(text), 0.001, "app.py:1", "db", 1, None)
    shapes = {stats.shape: stats.count for stats in counter.summary()}
    assert shapes == {normalize.normalize(first): 3, normalize.normalize(other): 1}
    assert normalize.normalize(first) == "INSERT INTO items (id, name) VALUES (?, ?)"


# -- after a test, through the plugin ---------------------------------------------------
INNER_CONFTEST = """
import gc, json, os, tracemalloc

import pytest

tracemalloc.start()
_start = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    gc.collect()
    tracemalloc.reset_peak()
    _start[item.nodeid] = tracemalloc.get_traced_memory()[0]


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    figures = {"nodeid": nodeid, "held": current - _start[nodeid], "peak": peak - _start[nodeid]}
    with open(os.environ["MIGSAFE_MEMORY_OUT"], "a") as out:
        out.write(json.dumps(figures) + "\\n")
"""

INNER_TEST = """
import os

import psycopg


def send(statements):
    with psycopg.connect(os.environ["MIGSAFE_TEST_POSTGRES_DSN"], autocommit=True) as conn:
        for k in range(statements):
            ids = ", ".join(str(k * 1_000_000 + i) for i in range(40_000))
            conn.execute("SELECT count(*) FROM generate_series(1, 3) g WHERE g IN (" + ids + ")")


def test_1_warm_up():  # the first statement loads the SQL parser: not what a test holds
    send(1)


def test_2_sends_long_distinct_statements():
    send({statements})
"""


def _memory_of_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, int]:
    out = pytester.path / f"memory-{len(args)}.jsonl"
    monkeypatch.setenv("MIGSAFE_MEMORY_OUT", str(out))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=2)
    figures = {entry["nodeid"]: entry for entry in map(json.loads, out.read_text().splitlines())}
    return figures["test_long.py::test_2_sends_long_distinct_statements"]  # type: ignore[no-any-return]


def test_long_distinct_statements_are_kept_neither_during_nor_after_the_test(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pg_dsn: str) -> None:
    statements = 30  # of about 350 kB each
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_long=INNER_TEST.format(statements=statements))
    sent = statements * len(", ".join(str(1_000_000 + i) for i in range(40_000)))
    with_plugin = _memory_of_test(pytester, monkeypatch)
    without = _memory_of_test(pytester, monkeypatch, "-p", "no:migsafe")
    assert with_plugin["held"] - without["held"] < sent / 20
    assert with_plugin["peak"] - without["peak"] < sent / 20


def test_counters_keep_the_beginning_of_a_long_text_and_filter_on_all_of_it() -> None:
    text = "SELECT 1 AS one, '" + "v" * 200_000 + "' AS pad -- needle"
    with count_queries() as everything, count_queries(match="needle") as matched:
        dispatch.record_statement(text, 0.001, "postgresql://h:1/db")
    assert matched.count == everything.count == 1
    (query,) = everything.queries
    assert query.sql == text[:dispatch.KEPT_PREFIX_CHARS] + f" ... ({len(text):,} characters)"
