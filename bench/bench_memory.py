"""Memory and time of tests that send a lot of SQL text, with the plugin and without.

Each figure comes from a pytest session run in a subprocess on a small generated suite,
once with the plugin and once with ``-p no:migsafe``, rounds interleaved so machine
noise hits both alike. A first test warms up (the first statement loads the SQL parser),
then the measured test runs one of two workloads through raw psycopg:

- ``statements``: ``--statements`` distinct multi-row INSERT statements of ``--kb`` kB
  each (default 1,000 of 300 kB). Printed: the test's time (median of ``--rounds``
  untraced runs, from its set-up to the end of its report; also the CPU time of the test
  process, which leaves out the server's share and the machine's load), and the Python
  memory held once it ended (``tracemalloc``, in one more traced run each). Targets: time
  with the plugin <= 1.2x without; held < 10 MB.
- ``rows``: one ``executemany`` fed a generator of ``--rows`` rows of 1 kB (default
  200,000). Printed: the peak Python memory during the test and its time.

    python bench/bench_memory.py [--statements 1000] [--kb 300] [--rows 200000] [--rounds 3]
                                 [--postgres-url URL] [--only statements|rows]
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

CONFTEST = '''
import gc, json, os, time, tracemalloc

import pytest

TRACE = os.environ.get("MIGSAFE_BENCH_TRACE") == "1"
if TRACE:
    tracemalloc.start()
_state = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    gc.collect()
    if TRACE:
        tracemalloc.reset_peak()
        _state["start"] = tracemalloc.get_traced_memory()[0]
    _state["t0"] = time.perf_counter()
    _state["cpu0"] = time.process_time()


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    seconds = time.perf_counter() - _state["t0"]
    cpu = time.process_time() - _state["cpu0"]
    gc.collect()
    figures = {"nodeid": nodeid, "seconds": seconds, "cpu": cpu}
    if TRACE:
        current, peak = tracemalloc.get_traced_memory()
        figures["held"] = current - _state["start"]
        figures["peak"] = peak - _state["start"]
    with open(os.environ["MIGSAFE_BENCH_OUT"], "a") as out:
        out.write(json.dumps(figures) + "\\n")
'''

TESTS = '''
import os

import psycopg

DSN = os.environ["MIGSAFE_BENCH_DSN"]
MODE = os.environ["MIGSAFE_BENCH_MODE"]
STATEMENTS = int(os.environ["MIGSAFE_BENCH_STATEMENTS"])
CHARS = int(os.environ["MIGSAFE_BENCH_KB"]) * 1000
ROWS = int(os.environ["MIGSAFE_BENCH_ROWS"])
PAD = "x" * 1000


def insert(k, chars):
    """A distinct multi-row INSERT of about ``chars`` characters."""
    head = "INSERT INTO bench_t (id, v) VALUES "
    row = 0
    parts = []
    size = len(head)
    while size < chars:
        part = f"({k * 1_000_000 + row}, 'row {row} of statement {k}')"
        parts.append(part)
        size += len(part) + 2
        row += 1
    return head + ", ".join(parts)


def connect():
    conn = psycopg.connect(DSN, autocommit=True)
    conn.execute("CREATE TEMP TABLE bench_t (id bigint, v text)")
    return conn


def test_1_warm_up():
    with connect() as conn:
        conn.execute(insert(-1, 100))
        conn.execute(insert(-2, CHARS))


def test_2_measured():
    with connect() as conn:
        if MODE == "statements":
            for k in range(STATEMENTS):
                conn.execute(insert(k, CHARS))
        else:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO bench_t (id, v) VALUES (%s, %s)",
                                ((i, f"{i:010d}{PAD[10:]}") for i in range(ROWS)))  # 1 kB each, distinct
'''


def run(suite: Path, env: dict[str, str], plugin: bool, trace: bool) -> dict[str, float]:
    """One pytest session on the suite; the measured test's figures."""
    out = suite / "figures.jsonl"
    out.unlink(missing_ok=True)
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
            "-p", "no:xdist", str(suite)]
    if not plugin:
        args[3:3] = ["-p", "no:migsafe"]
    done = subprocess.run(args, cwd=suite, capture_output=True, text=True,
                          env={**env, "MIGSAFE_BENCH_OUT": str(out), "MIGSAFE_BENCH_TRACE": "1" if trace else "0"})
    if done.returncode != 0:
        raise SystemExit(f"the benchmark suite failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    for line in out.read_text().splitlines():
        figures = json.loads(line)
        if figures["nodeid"].endswith("test_2_measured"):
            return figures  # type: ignore[no-any-return]
    raise SystemExit("no figures from the measured test")


def measure(suite: Path, env: dict[str, str], rounds: int) -> dict[str, dict[str, float]]:
    """Median untraced time and traced memory, with and without the plugin."""
    times: dict[str, list[float]] = {"with": [], "without": []}
    cpu: dict[str, list[float]] = {"with": [], "without": []}
    for r in range(rounds):
        order = [("with", True), ("without", False)]
        if r % 2:
            order.reverse()
        for name, plugin in order:
            found = run(suite, env, plugin, trace=False)
            times[name].append(found["seconds"])
            cpu[name].append(found["cpu"])
    figures = {}
    for name, plugin in (("with", True), ("without", False)):
        traced = run(suite, env, plugin, trace=True)
        figures[name] = {"seconds": statistics.median(times[name]), "cpu": statistics.median(cpu[name]),
                         "held": traced["held"], "peak": traced["peak"]}
    return figures


def mb(value: float) -> str:
    """Bytes as megabytes (10**6), one decimal."""
    return f"{value / 1e6:.1f} MB"


def main() -> None:
    """Run the workloads and print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=1000)
    parser.add_argument("--kb", type=int, default=300)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--only", choices=("statements", "rows"), default=None)
    args = parser.parse_args()

    from pytest_migsafe.servers import start_postgres

    with tempfile.TemporaryDirectory() as tmp:
        server = start_postgres(Path(tmp) / "pg", url=args.postgres_url)
        try:
            suite = Path(tmp) / "suite"
            suite.mkdir()
            (suite / "conftest.py").write_text(CONFTEST)
            (suite / "test_bench.py").write_text(TESTS)
            env = {**os.environ, "MIGSAFE_BENCH_DSN": server.dsn, "MIGSAFE_BENCH_STATEMENTS": str(args.statements),
                   "MIGSAFE_BENCH_KB": str(args.kb), "MIGSAFE_BENCH_ROWS": str(args.rows),
                   "PYTEST_ADDOPTS": "-o asyncio_default_fixture_loop_scope=function"}
            print(f"PostgreSQL: {server.source}")
            if args.only in (None, "statements"):
                found = measure(suite, {**env, "MIGSAFE_BENCH_MODE": "statements"}, args.rounds)
                w, wo = found["with"], found["without"]
                print(f"statements: {args.statements:,} distinct of {args.kb} kB in one test "
                      f"({args.statements * args.kb / 1000:,.0f} MB of SQL sent)")
                print(f"  time of the test: with the plugin {w['seconds']:.2f} s, without {wo['seconds']:.2f} s: "
                      f"{w['seconds'] / wo['seconds']:.3f}x (target <= 1.2x; medians of {args.rounds})")
                print(f"  CPU time of the test process: with the plugin {w['cpu']:.2f} s, without {wo['cpu']:.2f} s: "
                      f"{w['cpu'] / wo['cpu']:.3f}x")
                print(f"  held after the test: with the plugin {mb(w['held'])}, without {mb(wo['held'])} "
                      f"(target < 10 MB)")
                print(f"  peak during the test: with the plugin {mb(w['peak'])}, without {mb(wo['peak'])}")
            if args.only in (None, "rows"):
                found = measure(suite, {**env, "MIGSAFE_BENCH_MODE": "rows"}, args.rounds)
                w, wo = found["with"], found["without"]
                print(f"rows: executemany fed a generator of {args.rows:,} rows of 1 kB")
                print(f"  peak during the test: with the plugin {mb(w['peak'])}, without {mb(wo['peak'])}: "
                      f"{w['peak'] / max(wo['peak'], 1):.2f}x")
                print(f"  time of the test: with the plugin {w['seconds']:.2f} s, without {wo['seconds']:.2f} s: "
                      f"{w['seconds'] / wo['seconds']:.3f}x (medians of {args.rounds})")
                print(f"  CPU time of the test process: with the plugin {w['cpu']:.2f} s, without {wo['cpu']:.2f} s: "
                      f"{w['cpu'] / wo['cpu']:.3f}x")
                print(f"  held after the test: with the plugin {mb(w['held'])}, without {mb(wo['held'])}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
