"""Readable shapes kept between runs (``queries/shape_store.py``, ini ``migsafe_shape_cache``).

The store is checked against the parser itself: a shape read back from the file equals the
one sqlglot works out for the same text, and a run whose texts are all known does not import
sqlglot (checked in a fresh interpreter, pytester's subprocess runs).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from pytest_migsafe.queries import normalize, shape_store
from pytest_migsafe.queries.shape_store import ShapeStore, code_version, storable, text_digest

SQL = ("SELECT orders.id, orders.total FROM orders JOIN customers ON customers.id = orders.customer_id "
       "WHERE customers.email = %(email_1)s AND orders.total > %(total_1)s LIMIT 21")
# a text with literals: never kept (its shape could show one, its digest would let one be guessed)
LITERAL_SQL = "SELECT orders.id FROM orders WHERE orders.pin = 4821 AND orders.note = 'topsecret@example.com'"


@pytest.fixture
def fresh_normalize():
    """normalize with empty in-memory caches and no store, put back as found."""
    normalize.clear_caches()
    previous = shape_store.use(None)
    yield
    shape_store.use(previous)
    normalize.clear_caches()


def _store(path: Path, **kwargs) -> ShapeStore:
    return ShapeStore(lambda: path, **kwargs)


def test_a_saved_analysis_is_read_back_equal_to_the_parsers(tmp_path: Path, fresh_normalize) -> None:
    path = tmp_path / "shapes.json"
    expected = normalize._analyze.__wrapped__(SQL)  # the parser, no cache, no store
    first = _store(path)
    shape_store.use(first)
    assert normalize._analyze(SQL) == expected
    assert first.added == 1 and first.save()
    normalize.clear_caches()
    second = _store(path)
    shape_store.use(second)
    assert normalize._analyze(SQL) == expected
    assert (second.hits, second.added) == (1, 0)
    assert second.save() is False  # nothing new: the file is not rewritten


def test_a_known_text_is_not_parsed(tmp_path: Path, fresh_normalize, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "shapes.json"
    shape_store.use(_store(path))
    shape = normalize.normalize(SQL)
    shape_store.current.save()  # type: ignore[union-attr]
    normalize.clear_caches()
    shape_store.use(_store(path))

    def no_parser(sql: str):
        raise AssertionError("parsed a text the store knows")

    monkeypatch.setattr(normalize, "_parse", no_parser)
    assert normalize.normalize(SQL) == shape


def test_the_file_holds_digests_and_shapes_never_a_text_with_literals(tmp_path: Path, fresh_normalize) -> None:
    path = tmp_path / "shapes.json"
    store = _store(path)
    shape_store.use(store)
    normalize.normalize(SQL)
    normalize.normalize(LITERAL_SQL)
    assert store.added == 1
    store.save()
    written = path.read_text()
    assert text_digest(SQL) in written and "orders.total" in written
    assert text_digest(LITERAL_SQL) not in written and "topsecret" not in written and "4821" not in written
    assert json.loads(written)["version"] == code_version()


@pytest.mark.parametrize(("sql", "kept"), [
    ("SELECT users.id FROM users WHERE users.id = %(id_1)s::INTEGER", True),
    ("SELECT a FROM t2 WHERE x = $1 LIMIT 21 OFFSET 40", True),  # Django writes the counts in the text
    ('SELECT "col 1", é1, a$b FROM t WHERE c = ? AND d = :d AND e = %s', True),
    ("SELECT a FROM t WHERE pin = 4821", False),
    ("SELECT a FROM t WHERE x = 'y'", False),
    ("SELECT a FROM t WHERE x = E'y' OR x = U&'y' OR x = B'1'", False),
    ("CREATE ROLE bob LOGIN PASSWORD $é$hunter28$é$", False),
    ("UPDATE t SET a = :a /* hunter */", False),
    ("SELECT a FROM t -- hunter", False),
    ("SELECT 0x1F, .5, 1_000", False),
    ("SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id AND u.name ILIKE %(name_4)s)", True),
    ('SELECT 1 AS "a" FROM t WHERE t.b = %s LIMIT 1', True),  # Django's exists()
    ("SELECT 1.5 FROM t", False),
    ("SELECT 12 FROM t", False),
    # SQLAlchemy's insertmanyvalues: its row counters are the text's form, not values
    ("INSERT INTO t (name) SELECT p0::VARCHAR FROM (VALUES (%(name__0)s::VARCHAR, 0), (%(name__1)s::VARCHAR, 1), "
     "(%(name__2)s::VARCHAR, 2)) AS imp_sen(p0, sen_counter) ORDER BY sen_counter RETURNING t.id, t.id AS id__1", True),
    ("INSERT INTO t (name, pin) SELECT p0, p1 FROM (VALUES (%(name__0)s, 4821, 0), (%(name__1)s, 4821, 1)) "
     "AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter", False),
    ("INSERT INTO t (pin) SELECT p0 FROM (VALUES (%(pin__0)s, 4821)) AS imp_sen(p0, sen_counter)", False),
])
def test_storable_texts_hold_no_literal_and_no_comment(sql: str, kept: bool) -> None:
    assert storable(sql) is kept


@pytest.mark.parametrize("content", [
    "{not json",
    json.dumps({"version": "0:other:sqlglot-1", "analyses": {text_digest(SQL): ["SELECT stale", [], []]}}),
    json.dumps([1, 2]),
    json.dumps({"version": "<this>", "analyses": {text_digest(SQL): ["shape", "not a list", []]}}),
    json.dumps({"version": "<this>", "analyses": [1]}),
    "[" * 100_000 + "]" * 100_000,  # json raises RecursionError, not ValueError
], ids=["not-json", "other-version", "a-list", "bad-entry", "bad-analyses", "too-deep"])
def test_a_malformed_or_other_version_file_reads_as_empty(tmp_path: Path, fresh_normalize, content: str) -> None:
    path = tmp_path / "shapes.json"
    path.write_text(content.replace("<this>", code_version()))
    expected = normalize._analyze.__wrapped__(SQL)[0]  # the parser, no store yet
    store = _store(path)
    shape_store.use(store)
    assert normalize.normalize(SQL) == expected
    assert (store.hits, store.added) == (0, 1)


def test_save_keeps_this_runs_first_and_what_another_process_added(tmp_path: Path) -> None:
    path = tmp_path / "shapes.json"
    old = _store(path, version="v")
    for i in range(5):
        old.put(f"SELECT c{i}", (f"old {i}", (), ()))
    old.save()
    mine = _store(path, version="v", max_entries=4)
    assert mine.get("SELECT c0") == ("old 0", (), ())
    other = _store(path, version="v")  # another process saves in between
    other.put("SELECT other", ("other", ("t",), ()))
    other.save()
    mine.put("SELECT new", ("new", (), ("t",)))
    mine.save()
    kept = json.loads(path.read_text())["analyses"]
    assert len(kept) == 4
    assert kept[text_digest("SELECT c0")] == ["old 0", [], []] and kept[text_digest("SELECT new")] == ["new", [], ["t"]]
    assert [p.name for p in tmp_path.iterdir()] == ["shapes.json"]  # no temporary file left


def test_concurrent_saves_leave_a_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "shapes.json"
    errors: list[BaseException] = []

    def save(n: int) -> None:
        try:
            for round_ in range(20):
                store = _store(path, version="v")
                store.put(f"SELECT c{n}_{round_}", (f"shape {n}", (), ()))
                store.save()
        except BaseException as exc:  # pragma: no cover - the failure shown
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert json.loads(path.read_text())["version"] == "v"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes.json"]


def test_an_unwritable_directory_raises_oserror_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = _store(blocker / "shapes.json", version="v")  # a directory under a file
    store.put("SELECT c", ("SELECT c", (), ()))
    with pytest.raises(OSError):
        store.save()


# -- through pytest --------------------------------------------------------------------
APP = """
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")

def run():
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (id INTEGER, secret TEXT)"))
        conn.execute(text("SELECT id FROM t WHERE secret = :secret AND id > :i"), {"secret": "hunter2", "i": 1})
        conn.execute(text("SELECT count(*) FROM t JOIN t AS u ON u.id = t.id"))
        conn.execute(text("REINDEX t"))  # the parser reads it as a command: shaped by the fallback
"""
TESTS = """
from app import run

def test_statements():
    run()
"""
CONFTEST = """
import os, sys

def pytest_unconfigure(config):  # (after the report, which works out the shapes it shows)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    with open(f"sqlglot_imported{worker}.txt", "w") as out:
        out.write(str("sqlglot" in sys.modules))
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(app=APP, test_app=TESTS, conftest=CONFTEST)
    return pytester


def _run(suite: pytest.Pytester, *args: str) -> tuple[bool, dict]:
    result = suite.runpytest_subprocess("--migsafe-report", "--migsafe-report-json=out.json", *args)
    result.assert_outcomes(passed=1)
    data = json.loads((suite.path / "out.json").read_text())
    return (suite.path / "sqlglot_imported.txt").read_text() == "True", data


def _shapes(report: dict) -> list[str]:
    return sorted(shape["shape"] for test in report["tests"].values() for shape in test["queries"]["shapes"])


def test_a_second_run_reads_the_shapes_and_does_not_import_the_parser(suite: pytest.Pytester) -> None:
    imported, first = _run(suite)
    assert imported  # the first run parsed
    saved = suite.path / ".pytest_cache" / "d" / "migsafe" / "shapes.json"
    assert "hunter2" not in saved.read_text() and len(json.loads(saved.read_text())["analyses"]) == 4
    imported, second = _run(suite)
    assert not imported
    assert _shapes(second) == _shapes(first) and len(_shapes(first)) == 4


@pytest.mark.parametrize("off", [("-p", "no:cacheprovider"), ("-o", "migsafe_shape_cache=false")])
def test_the_cache_is_off_without_the_cache_plugin_or_by_the_ini_key(suite: pytest.Pytester, off: tuple[str, str]) -> None:
    _, first = _run(suite, *off)
    imported, second = _run(suite, *off)
    assert imported and _shapes(second) == _shapes(first)
    assert not (suite.path / ".pytest_cache" / "d" / "migsafe").exists()


def test_a_bad_ini_value_names_the_key(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-o", "migsafe_shape_cache=maybe")
    result.stderr.fnmatch_lines(["*migsafe_shape_cache*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_an_in_process_run_puts_back_the_store_it_found(suite: pytest.Pytester) -> None:
    before = shape_store.current
    suite.runpytest("-p", "no:randomly").assert_outcomes(passed=1)
    assert shape_store.current is before
    assert os.path.exists(suite.path / ".pytest_cache")


def test_pytest_xdist_workers_read_and_save_the_shapes(suite: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    suite.makepyfile(test_more=TESTS.replace("test_statements", "test_the_same_statements"))

    def run() -> list[bool]:
        result = suite.runpytest_subprocess("-n", "2", "--migsafe-report", "-p", "no:randomly")
        result.assert_outcomes(passed=2)
        return [(suite.path / f"sqlglot_imported{w}.txt").read_text() == "True" for w in ("gw0", "gw1")]

    assert run() == [True, True]  # each worker parsed
    assert run() == [False, False]  # each worker read what the first run's workers saved


@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, "{broken"], ids=["too-deep", "broken"])
def test_a_bad_file_changes_no_outcome_and_is_replaced(suite: pytest.Pytester, content: str) -> None:
    saved = suite.path / ".pytest_cache" / "d" / "migsafe" / "shapes.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(content)
    result = suite.runpytest_subprocess("--migsafe-report")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    assert json.loads(saved.read_text())["version"] == code_version()


def test_a_cache_directory_that_cannot_be_written_changes_no_outcome(suite: pytest.Pytester) -> None:
    (suite.path / "blocker").write_text("")  # a file where the cache directory would be
    result = suite.runpytest_subprocess("--migsafe-report", "-o", "cache_dir=blocker/cache")
    result.assert_outcomes(passed=1)
    assert result.ret == 0


def test_a_fifo_in_place_of_the_file_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "shapes.json"
    os.mkfifo(path)
    found: list[object] = []
    reader = threading.Thread(target=lambda: found.append(_store(path).get(SQL)), daemon=True)
    reader.start()
    reader.join(timeout=60)  # a liveness guard: reading a FIFO with no writer blocks for ever
    if reader.is_alive():  # pragma: no cover - the failure shown; unblock the reader first
        with open(path, "w"):
            pass
    assert found == [None]


def test_the_version_names_the_parser_python_and_unicode(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import unicodedata

    version = code_version()
    assert f"python-{sys.version_info[0]}.{sys.version_info[1]}" in version
    assert f"unicode-{unicodedata.unidata_version}" in version and ":sqlglot-" in version
    monkeypatch.setattr(unicodedata, "unidata_version", "0.0.0")
    assert code_version() != version


def test_a_killed_writers_old_temporary_file_is_removed_a_live_ones_kept(tmp_path: Path) -> None:
    old, fresh = tmp_path / ".shapes-old.tmp", tmp_path / ".shapes-fresh.tmp"
    for leftover in (old, fresh):
        leftover.write_text("{")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    store = _store(tmp_path / "shapes.json", version="v")
    store.put("SELECT c", ("SELECT c", (), ()))
    store.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".shapes-fresh.tmp", "shapes.json"]


def test_save_stops_at_the_byte_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shape_store, "MAX_SAVED_BYTES", 10_000)
    store = _store(tmp_path / "shapes.json", version="v")
    for i in range(100):
        store.put(f"SELECT c{i}", ("S" * 1000, (), ()))
    store.save()
    kept = json.loads((tmp_path / "shapes.json").read_text())["analyses"]
    assert 5 <= len(kept) <= 11 and text_digest("SELECT c0") in kept  # this run's first
