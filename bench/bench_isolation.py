"""Per-test isolation cost: ``migsafe_db`` against pytest-postgresql's ``postgresql`` fixture.

Both suites run against the same PostgreSQL server in one run of this script, alternated
a few times. Each test creates a table, inserts a row and commits; pytest-postgresql's
fixture creates and drops a database per test, ``migsafe_db`` rolls back a savepoint-joined
session. The figure is the mean of set-up + call + tear-down per test, summed from pytest's
own reports (session start-up and the first test's one-time costs excluded). Target: ``migsafe_db`` at most 2 ms a test and at
least 20x faster than the ``postgresql`` fixture.

    pip install -e '.[bench]'   # pytest-postgresql, an optional extra since the plugin does not need it
    python bench/bench_isolation.py [--rounds 3] [--postgresql-tests 50] [--migsafe-tests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from pytest_migsafe.servers import start_postgres

TIMING_CONFTEST = '''
import json, os
_total = [0.0, 0]
_first = []

def pytest_runtest_logreport(report):
    # the first test pays one-time costs (engine, first connect, the SQL parser's import): left out
    if not _first:
        _first.append(report.nodeid)
    if report.nodeid == _first[0]:
        return
    _total[0] += report.duration
    if report.when == "call":
        _total[1] += 1

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump({"seconds": _total[0], "tests": _total[1]}, fh)
'''

POSTGRESQL_SUITE = '''
from pytest_postgresql import factories

pg_noproc = factories.postgresql_noproc(host={host!r}, port={port}, user="postgres", dbname="bench_pp")
pg = factories.postgresql("pg_noproc")

{tests}
'''

POSTGRESQL_TEST = '''
def test_{i}(pg):
    with pg.cursor() as cur:
        cur.execute("CREATE TABLE t (a int)")
        cur.execute("INSERT INTO t VALUES (1)")
    pg.commit()
'''

MIGSAFE_TEST = '''
def test_{i}(migsafe_db):
    migsafe_db.execute(text("CREATE TABLE t (a int)"))
    migsafe_db.execute(text("INSERT INTO t VALUES (1)"))
    migsafe_db.commit()
'''

MIGSAFE_SELECT_TEST = '''
def test_{i}(migsafe_db):
    migsafe_db.execute(text("SELECT 1"))
    migsafe_db.commit()
'''

TRIVIAL_TEST = '''
def test_{i}():
    pass
'''


def server_floor(dsn: str, n: int = 200) -> float:
    """Seconds for CREATE TABLE + INSERT + ROLLBACK on one raw psycopg connection: the server's own cost."""
    import time

    import psycopg

    with psycopg.connect(dsn) as conn:
        for _ in range(20):
            conn.execute("CREATE TABLE t (a int)")
            conn.rollback()
        start = time.perf_counter()
        for _ in range(n):
            conn.execute("CREATE TABLE t (a int)")
            conn.execute("INSERT INTO t VALUES (1)")
            conn.rollback()
        return (time.perf_counter() - start) / n


def run_suite(directory: Path, extra: list[str]) -> float:
    """Seconds per test of one suite, from pytest's own phase durations."""
    out = directory / "timing.json"
    env = {**os.environ, "BENCH_OUT": str(out)}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(directory), *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL, cwd=directory)
    data = json.loads(out.read_text())
    return float(data["seconds"]) / int(data["tests"])


def main() -> None:
    """Write both suites, run them alternately, print per-test costs and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgresql-tests", type=int, default=50)
    parser.add_argument("--migsafe-tests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = start_postgres(root / "server")
        try:
            url = make_url(server.url)
            host, port = url.query["host"], int(url.query.get("port", 5432))
            a, b = root / "suite_postgresql", root / "suite_migsafe"
            c, d = root / "suite_migsafe_select", root / "suite_trivial"
            for suite in (a, b, c, d):
                suite.mkdir()
                (suite / "conftest.py").write_text(TIMING_CONFTEST)
            tests = "".join(POSTGRESQL_TEST.format(i=i) for i in range(args.postgresql_tests))
            (a / "test_pp.py").write_text(POSTGRESQL_SUITE.format(host=host, port=port, tests=tests))
            (b / "test_ms.py").write_text("from sqlalchemy import text\n" +
                                          "".join(MIGSAFE_TEST.format(i=i) for i in range(args.migsafe_tests)))
            (c / "test_sel.py").write_text("from sqlalchemy import text\n" + "".join(
                MIGSAFE_SELECT_TEST.format(i=i) for i in range(args.migsafe_tests)))
            (d / "test_triv.py").write_text("".join(TRIVIAL_TEST.format(i=i) for i in range(args.migsafe_tests)))
            pp, ms, sel, triv = [], [], [], []
            url = [f"--migsafe-postgres-url={server.url}"]
            for _ in range(args.rounds):
                pp.append(run_suite(a, []))
                ms.append(run_suite(b, url))
                sel.append(run_suite(c, url))
                triv.append(run_suite(d, url))
            floor = server_floor(server.dsn) * 1000
        finally:
            server.stop()
    pp_ms, ms_ms = statistics.median(pp) * 1000, statistics.median(ms) * 1000
    sel_ms, triv_ms = statistics.median(sel) * 1000, statistics.median(triv) * 1000
    print(f"pytest-postgresql `postgresql` fixture: {pp_ms:.2f} ms/test ({args.postgresql_tests} tests)")
    print(f"migsafe_db, CREATE TABLE + INSERT + commit: {ms_ms:.2f} ms/test ({args.migsafe_tests} tests; "
          f"target <= 2 ms)")
    print(f"  of which the server's own CREATE TABLE + INSERT + ROLLBACK on a raw connection: {floor:.2f} ms")
    print(f"migsafe_db, SELECT 1 + commit: {sel_ms:.2f} ms/test; a test with no fixture: {triv_ms:.2f} ms/test")
    print(f"  so the isolation itself (connect, savepoint, rollback) costs {sel_ms - triv_ms:.2f} ms/test")
    print(f"migsafe_db is {pp_ms / ms_ms:.1f}x faster than the postgresql fixture (target >= 20x)")


if __name__ == "__main__":
    main()
