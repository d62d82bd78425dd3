"""What the plugin costs: time on a big trivial suite, memory on a test with a million queries.

Plain script, not part of the test suite::

    /work/venv/bin/python bench/bench_report.py [--tests 5000] [--rounds 5] [--queries 1000000]

1. Time: a generated suite of ``--tests`` trivial tests run with ``-p no:migsafe``, with the
   plugin on and with ``--migsafe-report``, alternating, ``--rounds`` times each, in fresh
   subprocesses; prints the median wall and CPU (user + system) times and their ratios to
   the plugin off (target: at most 1.05). CPU time is the steadier figure on a busy machine.
2. Memory: one test running ``--queries`` statements through SQLAlchemy on in-memory
   SQLite, plugin on and off; prints the peak RSS of each pytest process (from
   ``getrusage(RUSAGE_CHILDREN)`` in a fresh parent per run) and the difference (target:
   under 100 MB).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TESTS_PER_FILE = 100
OFF = ("-p", "no:migsafe")
ON = ("--migsafe-report",)
COMMON = ("-q", "-p", "no:cacheprovider", "-p", "no:randomly")
# Bytecode caches are written as usual (the warm-up run fills them), whatever this shell
# says: otherwise the plugin's modules, installed editable, would be compiled on every run
# while site-packages' are not, and a one-time compile would pass for a per-test cost.
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"

MEMORY_TEST = """
from sqlalchemy import create_engine

def test_million():
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        for i in range({queries}):
            conn.exec_driver_sql("SELECT ?", (i,))
"""

PEAK_RSS = textwrap.dedent("""
    import resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"pytest failed ({done.returncode}): {done.stderr[-2000:]}")
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
""")


def make_suite(root: Path, tests: int) -> None:
    """``tests`` trivial tests spread over files of TESTS_PER_FILE."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(INI)
    files = (tests + TESTS_PER_FILE - 1) // TESTS_PER_FILE
    for index in range(files):
        count = min(TESTS_PER_FILE, tests - index * TESTS_PER_FILE)
        body = "".join(f"def test_{n}():\n    assert {n} == {n}\n\n" for n in range(count))
        (root / f"test_trivial_{index:03}.py").write_text(body)


def run_pytest(root: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one pytest subprocess in ``root``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *COMMON, *args], cwd=root, env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def bench_time(tests: int, rounds: int) -> None:
    """Median wall and CPU time of each variant, alternating, and the ratios to the plugin off."""
    variants = {"-p no:migsafe": OFF, "plugin on, no report": (), "--migsafe-report": ON}
    with tempfile.TemporaryDirectory(prefix="migsafe-bench-") as tmp:
        root = Path(tmp)
        make_suite(root, tests)
        for args in variants.values():  # warm the file cache
            run_pytest(root, *args)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, args in variants.items():
                runs[name].append(run_pytest(root, *args))
        print(f"time, {tests} trivial tests, {rounds} alternating rounds (medians):")
        base_wall = statistics.median(w for w, _ in runs["-p no:migsafe"])
        base_cpu = statistics.median(c for _, c in runs["-p no:migsafe"])
        for name in variants:
            wall = statistics.median(w for w, _ in runs[name])
            cpu = statistics.median(c for _, c in runs[name])
            print(f"  {name:22} wall {wall:7.3f} s ({wall / base_wall:.3f}x)   "
                  f"cpu {cpu:7.3f} s ({cpu / base_cpu:.3f}x, {(cpu - base_cpu) / tests * 1e6:+.0f} us/test)")
        print("  target: --migsafe-report at most 1.05x of -p no:migsafe")


def peak_rss_kib(root: Path, *args: str) -> int:
    """Peak RSS in KiB of one pytest process, measured by a fresh parent."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "pytest", *COMMON, *args],
                          cwd=root, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr or done.stdout)
    return int(done.stdout.strip())


def bench_memory(queries: int) -> None:
    """Peak memory of a test running ``queries`` statements, plugin on and off."""
    with tempfile.TemporaryDirectory(prefix="migsafe-bench-mem-") as tmp:
        root = Path(tmp)
        (root / "pytest.ini").write_text(INI)
        (root / "test_memory.py").write_text(MEMORY_TEST.format(queries=queries))
        start = time.perf_counter()
        off = peak_rss_kib(root, *OFF)
        off_seconds = time.perf_counter() - start
        start = time.perf_counter()
        on = peak_rss_kib(root, *ON)
        on_seconds = time.perf_counter() - start
        print(f"memory, one test running {queries:,} queries on in-memory SQLite:")
        print(f"  -p no:migsafe     peak RSS {off / 1024:.1f} MB  ({off_seconds:.1f} s)")
        print(f"  --migsafe-report  peak RSS {on / 1024:.1f} MB  ({on_seconds:.1f} s)")
        print(f"  difference {(on - off) / 1024:.1f} MB  (target < 100 MB)")


def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=5000, help="trivial tests in the time benchmark")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of each variant")
    parser.add_argument("--queries", type=int, default=1_000_000, help="statements in the memory benchmark")
    parser.add_argument("--skip-time", action="store_true", help="only the memory benchmark")
    parser.add_argument("--skip-memory", action="store_true", help="only the time benchmark")
    args = parser.parse_args()
    if not args.skip_time:
        bench_time(args.tests, args.rounds)
    if not args.skip_memory:
        bench_memory(args.queries)


if __name__ == "__main__":
    main()
