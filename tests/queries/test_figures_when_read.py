"""Figures with deferred shapes (the report when only the terminal reads them) equal the eager ones,
hold no counter, and hold a bounded amount of text."""

from __future__ import annotations

import copy
import gc
import pickle
import sys
import weakref
from dataclasses import asdict

import pytest
from sqlalchemy import create_engine, text

from pytest_migsafe import count_queries
from pytest_migsafe.queries import dispatch
from pytest_migsafe.queries.counter import PENDING_TEXT_CHARS


def _run() -> object:
    engine = create_engine("sqlite://")
    with engine.connect() as conn, count_queries(keep=0) as counter:
        conn.execute(text("CREATE TABLE t (a INTEGER, b TEXT)"))
        for value in (1, 2, 3):  # three texts of one readable shape: merged when shown
            conn.execute(text(f"INSERT INTO t VALUES ({value}, 'x')"))
        conn.execute(text("SELECT a FROM t WHERE b = :b"), {"b": "x"})
        conn.execute(text("SELECT a FROM t WHERE b = :b"), {"b": "y"})
    return counter


def test_deferred_figures_equal_the_eager_ones_in_every_reader() -> None:
    counter = _run()
    eager = counter.figures(budget=9, threshold=10)
    final = counter.figures(budget=9, threshold=10, defer_shapes=True)
    assert "shapes" not in vars(final)  # not worked out yet
    assert final == eager and asdict(final) == asdict(eager) and repr(final) == repr(eager)
    assert [(s.shape, s.count) for s in final.shapes] == [
        ("INSERT INTO t VALUES (?, ?)", 3), ("SELECT a FROM t WHERE b = ?", 2), ("CREATE TABLE t (a INT, b TEXT)", 1)]
    assert final.shapes is final.shapes  # worked out once, then kept


def test_deferred_figures_parse_nothing_until_their_shapes_are_read(monkeypatch) -> None:
    counter = _run()
    parsed = []
    real = dispatch.readable_shape
    monkeypatch.setattr(dispatch, "readable_shape", lambda key, sql: parsed.append(sql) or real(key, sql))
    final = counter.figures(defer_shapes=True)
    assert final.count == 6 and final.executions == 6 and not parsed
    assert len(final.shapes) == 3 and len(parsed) == 5  # each text's shape, once read


def test_an_active_counter_gives_its_shapes_at_once() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn, count_queries() as counter:
        conn.execute(text("SELECT 1"))
        figures = counter.figures(defer_shapes=True)  # (still active: worked out at once)
        conn.execute(text("SELECT 2 + 2"))
    assert "shapes" in vars(figures) and [s.count for s in figures.shapes] == [1]
    assert figures.shapes[0].shape == "SELECT ?"


def test_deferred_figures_keep_neither_the_counter_nor_much_text() -> None:
    counter = _run()
    final = counter.figures(defer_shapes=True)
    alive = weakref.ref(counter)
    del counter
    gc.collect()
    assert alive() is None  # the figures keep the per-shape figures, not the counter and its N+1 evidence
    engine = create_engine("sqlite://")
    with engine.connect() as conn, count_queries(keep=0) as many:  # distinct texts summing over the cap
        for n in range(PENDING_TEXT_CHARS // 1000 + 1):
            conn.execute(text(f"SELECT '{'x' * 1000}' AS c{n}"))
    eager = many.figures(defer_shapes=True)
    assert "shapes" in vars(eager) and eager.count == PENDING_TEXT_CHARS // 1000 + 1  # worked out at once
    assert final.count == 6


def test_the_pending_texts_stay_within_their_budget(monkeypatch) -> None:
    from pytest_migsafe.queries import counter as counter_module

    monkeypatch.setattr(counter_module, "PENDING_BUDGET_CHARS", 200)
    pending = []
    for _ in range(6):
        figures = _run().figures(defer_shapes=True)  # about 110 characters of text each
        pending.append(figures)
        assert sum(size for ref, size in counter_module._pending if "shapes" not in vars(ref() or figures)) <= 200
    assert ["shapes" in vars(f) for f in pending] == [True] * 5 + [False]  # the oldest worked out
    assert [f.count for f in pending] == [6] * 6


def test_a_read_interrupted_by_ctrl_c_is_read_again(monkeypatch) -> None:
    figures = _run().figures(defer_shapes=True)
    real = dispatch.readable_shape
    calls = []

    def interrupted_once(key, sql):
        calls.append(sql)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(key, sql)

    monkeypatch.setattr(dispatch, "readable_shape", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        figures.shapes
    assert len(figures.shapes) == 3


def test_copies_and_pickles_carry_the_shapes() -> None:
    final = _run().figures(defer_shapes=True)
    copied = copy.copy(final)
    restored = pickle.loads(pickle.dumps(final))
    assert copied == final == restored and "_make_shapes" not in vars(restored)


def test_the_reports_counter_gives_the_figures_and_suspects_of_a_full_counter(tmp_path) -> None:
    """QueryCounter.figures_only() (the plugin's counter of a test with the report on: the lean
    counter's N+1 bookkeeping plus the per-shape figures) against a full QueryCounter fed the
    same statements, and SQLite's own count of the statements it ran."""
    from pytest_migsafe.queries.counter import QueryCounter

    module = tmp_path / "app_loop.py"
    module.write_text("from sqlalchemy import text\n\n"
                      "def read_each(conn, ids):\n"
                      "    return [conn.execute(text('SELECT a FROM t WHERE a = :a'), {'a': i}).all() for i in ids]\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import app_loop
    finally:
        sys.path.remove(str(tmp_path))
    engine = create_engine("sqlite://")
    traced: list[str] = []
    with engine.connect() as conn:
        conn.connection.driver_connection.set_trace_callback(traced.append)
        lean, full = QueryCounter.figures_only(), QueryCounter(keep=0)
        dispatch.start(lean)
        dispatch.start(full)
        conn.execute(text("CREATE TABLE t (a INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (:a)"), [{"a": i} for i in range(12)])
        app_loop.read_each(conn, range(12))
        dispatch.stop(full)
        dispatch.stop(lean)
    ran = [sql for sql in traced if not sql.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    assert lean.count == full.count == 14 == len(ran) - 11  # (SQLite traces each executemany row)
    assert lean.figures(threshold=10) == full.figures(threshold=10)
    suspects = lean.n_plus_one(threshold=10)
    assert [(s.count, s.kind) for s in suspects] == [(12, "repeated_statement")]
