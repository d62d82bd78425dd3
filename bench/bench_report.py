"""What the plugin costs: time on a big trivial suite, memory on a test with a million queries.

Plain script, not part of the test suite::

    python bench/bench_report.py [--tests 5000] [--rounds 5] [--queries 1000000] [--instructions]
    python bench/bench_report.py --startup [--import "sqlalchemy, psycopg, psycopg_pool"]

1. Time: a generated suite of ``--tests`` trivial tests run with ``-p no:migsafe``, with the
   plugin on and with ``--migsafe-report``, alternating, ``--rounds`` times each, in fresh
   subprocesses; prints the median wall and CPU (user + system) times and their ratios to
   the plugin off (target: at most 1.05). CPU time is the steadier figure on a busy machine.
2. Memory: one test running ``--queries`` statements through SQLAlchemy on in-memory
   SQLite, plugin on and off; prints the peak RSS of each pytest process (from
   ``getrusage(RUSAGE_CHILDREN)`` in a fresh parent per run) and the difference (target:
   under 100 MB).
3. With ``--instructions``: the same three variants under valgrind's callgrind, on suites
   of 200 and 1,400 tests, which splits each variant's instruction count into a fixed part
   (start-up, imports) and a per-test part, projected to ``--tests``. Instruction counts
   do not move with the machine's load, so this is the figure to trust on a busy machine.
   The main thread is counted (``--separate-threads``: psycopg_pool's threads run a few
   million instructions a run, not a test), under one hash seed (``--seed``, default 0).
4. With ``--startup`` (alone): instructions of a session of one trivial test, the three
   variants: what a run pays once (imports, hooks, configure), however few tests it selects.
5. With ``--opcodes`` (alone; with ``--realistic`` on the realistic suite, else on trivial
   tests, ``--import`` as above): the Python opcodes a test runs, from collection's end on,
   from suites of 100 and 300 tests under a ``sys.settrace`` opcode tracer, the three
   variants: the whole test's and the plugin's own share, and the ratio to the plugin off.
   The per-test difference does not move with the machine, the memory layout or
   psycopg_pool's threads (the per-test instruction figure moves by +-50-100 k between runs
   of the realistic suite), so it is the figure to compare two trees by; an opcode costs
   about 100 instructions here on average (C work done inside one, such as a frame object
   made by ``f_back``, is not an opcode).

With ``--shapes-kept`` (with ``--instructions`` or ``--opcodes``): pytest's cache plugin on in
every variant, each run after ``--cache-clear``, and a fourth variant, ``--migsafe-report`` in
a run after one that kept the readable shapes in pytest's cache (``migsafe_shape_cache``, on by
default): a second run of a suite, which neither imports sqlglot (about 470 M instructions)
nor parses a statement text.

The suites run with bytecode caches written (``PYTHONDONTWRITEBYTECODE`` is dropped for
them): otherwise the plugin's modules, installed editable, would be compiled on every
run while site-packages' are not, and a one-time compile would look like a per-test cost.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
TESTS_PER_FILE = 100
OFF = ("-p", "no:migsafe")
ON = ("--migsafe-report",)
VARIANTS = {"-p no:migsafe": OFF, "plugin on, no report": (), "--migsafe-report": ON}
COMMON = ("-q", "-p", "no:cacheprovider", "-p", "no:randomly")
# bytecode caches written whatever this shell says (see the module docstring)
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
# In every generated suite, both variants: the heap built before the first test (pytest's,
# the plugins', the application's) is collected and frozen once collection is done, so that
# a full collection of it, which lands in one variant's run and not the other's depending
# on how many objects each allocated at start-up, is not split over the tests as a per-test
# cost (one full collection of ~99,000 objects landed in the plugin's 300-test run and in
# neither 100-test run: about +200 k instructions a test that no test spent). Objects the
# tests allocate are still collected as usual.
FREEZE_HEAP = """
import gc


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()
"""

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


def keep_shapes() -> None:
    """The variants of ``--shapes-kept``: pytest's cache plugin on in all of them, and
    ``--migsafe-report`` measured twice, in a first run (the cache cleared: sqlglot imported,
    each distinct statement text parsed) and in a run after one that kept the readable
    shapes (the warm-up run of :func:`instructions` and :func:`traced_opcodes` keeps them)."""
    global COMMON, VARIANTS
    COMMON = ("-q", "-p", "no:randomly")
    clear = ("--cache-clear",)
    VARIANTS = {"-p no:migsafe": OFF + clear, "plugin on, no report": clear, "--migsafe-report": ON + clear,
                "report, shapes kept": ON}


def make_suite(root: Path, tests: int, imports: str = "") -> None:
    """``tests`` trivial tests spread over files of TESTS_PER_FILE; a conftest importing ``imports``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(INI)
    (root / "conftest.py").write_text((f"import {imports}\n" if imports else "") + FREEZE_HEAP)
    files = (tests + TESTS_PER_FILE - 1) // TESTS_PER_FILE
    for index in range(files):
        count = min(TESTS_PER_FILE, tests - index * TESTS_PER_FILE)
        body = "".join(f"def test_{n}():\n    assert {n} == {n}\n\n" for n in range(count))
        (root / f"test_trivial_{index:03}.py").write_text(body)


REALISTIC_CONFTEST = """
import os

import psycopg_pool
import pytest
from sqlalchemy import Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

URL = os.environ["BENCH_PG_URL"]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "bench_report_items"
    id = mapped_column(Integer, primary_key=True)
    name = mapped_column(String(40))


ENGINE = create_engine(URL, pool_size=2)
Base.metadata.drop_all(ENGINE)
Base.metadata.create_all(ENGINE)
POOL = psycopg_pool.ConnectionPool(URL.replace("postgresql+psycopg://", "postgresql://"), min_size=1,
                                   max_size=2, open=True)


@pytest.fixture
def session():
    with Session(ENGINE) as one:
        yield one
        one.rollback()


def work(session, n):
    session.add(Item(id=n, name=f"item {n}"))
    session.flush()
    found = session.scalars(select(Item).where(Item.id == n)).one()
    with POOL.connection() as conn:
        (count,) = conn.execute("SELECT count(*) FROM bench_report_items WHERE id <= %s", (n,)).fetchone()
    return found.name, count
"""


def make_realistic_suite(root: Path, tests: int) -> None:
    """``tests`` tests that each use an ORM Session (a pool checkout, an INSERT, a SELECT) and
    a psycopg_pool connection (a SELECT), on PostgreSQL (``BENCH_PG_URL``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(INI)
    (root / "conftest.py").write_text(REALISTIC_CONFTEST + FREEZE_HEAP)
    files = (tests + TESTS_PER_FILE - 1) // TESTS_PER_FILE
    for index in range(files):
        count = min(TESTS_PER_FILE, tests - index * TESTS_PER_FILE)
        body = "from conftest import work\n\n" + "".join(
            f"def test_{n}(session):\n    assert work(session, {index * TESTS_PER_FILE + n})[0]\n\n"
            for n in range(count))
        (root / f"test_db_{index:03}.py").write_text(body)


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHOP_CONFTEST = """
import os
import sys

sys.path.insert(0, os.environ["BENCH_EXAMPLES"])

import psycopg_pool
import pytest
import redis
from shop.models import Address, Base, User
from shop.seed import add_users
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

URL = os.environ["BENCH_PG_URL"]
ENGINE = create_engine(URL, pool_size=5, max_overflow=2)
Base.metadata.drop_all(ENGINE)
Base.metadata.create_all(ENGINE)
with Session(ENGINE) as seeding:
    add_users(seeding, 20, start=1)
    seeding.commit()
POOL = psycopg_pool.ConnectionPool(URL.replace("postgresql+psycopg://", "postgresql://"), min_size=1,
                                   max_size=2, open=True)
CACHE = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


@pytest.fixture
def session():
    # the usual test isolation: the test's session in a transaction rolled back at its end
    with ENGINE.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as one:
            yield one
        outer.rollback()


@pytest.fixture
def cache():
    yield CACHE
    CACHE.flushdb()


def add_address(session, user_id, n):
    session.add(Address(user_id=user_id, city=f"City {n}"))
    session.flush()
    return session.scalars(select(Address).where(Address.city == f"City {n}")).one()
"""
# the shop's read and write paths, one kind a test in turn (examples/shop)
SHOP_TESTS = (
    "def test_directory_{n}(session):\n    rows = user_directory(session)\n    assert len(rows) == 20\n",
    "def test_profile_{n}(session, cache):\n    first = cached_user_profile(session, cache, {uid})\n"
    "    assert cached_user_profile(session, cache, {uid}) == first\n",
    "def test_change_email_{n}(session, cache):\n"
    "    change_email_and_invalidate(session, cache, {uid}, 'new{n}@example.com')\n"
    "    assert cached_user_profile(session, cache, {uid})['email'] == 'new{n}@example.com'\n",
    "def test_request_{n}():\n    assert handle_request(ENGINE, {uid}) == 'user{uid}'\n",
    "def test_orders_total_{n}():\n    with POOL.connection() as conn:\n"
    "        (total,) = conn.execute('SELECT sum(total) FROM orders WHERE user_id = %s', ({uid},)).fetchone()\n"
    "    assert total == {uid} + 10\n",
    "def test_new_address_{n}(session):\n    assert add_address(session, {uid}, {n}).user.id == {uid}\n",
)


def make_shop_suite(root: Path, tests: int) -> None:
    """``tests`` tests of the examples app (``examples/shop``) on PostgreSQL (``BENCH_PG_URL``)
    and Redis (``BENCH_REDIS_URL``), the kinds of ``SHOP_TESTS`` in turn: a directory read
    (20 users and their addresses, two statements), a cache-aside profile read (a miss, then
    a hit), a write with its cache invalidation, a request on the pooled engine, a raw
    psycopg_pool read and an ORM insert; each test's session rolled back at its end."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(INI)
    (root / "conftest.py").write_text(SHOP_CONFTEST + FREEZE_HEAP)
    head = ("from conftest import CACHE, ENGINE, POOL, add_address\n"
            "from shop.cache import cached_user_profile, change_email_and_invalidate\n"
            "from shop.pooling import handle_request\n"
            "from shop.views import user_directory\n\n\n")
    files = (tests + TESTS_PER_FILE - 1) // TESTS_PER_FILE
    for index in range(files):
        numbers = range(index * TESTS_PER_FILE, min(tests, (index + 1) * TESTS_PER_FILE))
        body = "\n\n".join(SHOP_TESTS[n % len(SHOP_TESTS)].format(n=n, uid=1 + n % 20) for n in numbers)
        (root / f"test_shop_{index:03}.py").write_text(head + body)


def run_pytest(root: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one pytest subprocess in ``root``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", *COMMON, *args], cwd=root, env=ENV,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed ({done.returncode}): "
                         f"{done.stdout[-3000:]}{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def bench_time(tests: int, rounds: int, imports: str = "") -> None:
    """Median wall and CPU time of each variant, alternating, and the ratios to the plugin off."""
    variants = VARIANTS
    with tempfile.TemporaryDirectory(prefix="migsafe-bench-") as tmp:
        root = Path(tmp)
        make_suite(root, tests, imports)
        for args in variants.values():  # warm the file cache
            run_pytest(root, *args)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, args in variants.items():
                runs[name].append(run_pytest(root, *args))
        where = f", conftest imports {imports}" if imports else ""
        print(f"time, {tests} trivial tests{where}, {rounds} alternating rounds (medians):")
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


#: PYTHONHASHSEED of the runs under callgrind (--seed): a random seed per process moved the
#: per-test figure of one tree by +-100 k between runs (dict and set layouts differ)
HASH_SEED = "0"
#: instructions of the threads other than the main one, per run (psycopg_pool's scheduler and
#: workers): printed apart, as they do not grow with the tests
OTHER_THREADS: dict[tuple[str, int], int] = {}


def instructions(root: Path, *args: str) -> int:
    """Instructions the main thread of one pytest run executes, counted by callgrind (the same
    on a busy machine), under the hash seed :data:`HASH_SEED`; the other threads' go to
    :data:`OTHER_THREADS`."""
    run_pytest(root, *args)  # bytecode caches first
    with tempfile.TemporaryDirectory(prefix="migsafe-cg-") as out:
        done = subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                               f"--callgrind-out-file={out}/cg.out", sys.executable, "-m", "pytest",
                               *COMMON, *args], cwd=root, env={**ENV, "PYTHONHASHSEED": HASH_SEED},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"valgrind pytest {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        threads = {}
        for part in sorted(Path(out).glob("cg.out-*")):  # cg.out-01: the main thread
            found = re.search(r"^(?:summary|totals): (\d+)", part.read_text(errors="replace"), re.M)
            if found is not None:
                threads[part.name] = int(found.group(1))
    if "cg.out-01" not in threads:
        raise SystemExit(f"valgrind pytest {' '.join(args)}: no main-thread count in {sorted(threads)}")
    main = threads.pop("cg.out-01")
    OTHER_THREADS[(" ".join(args), len(list(root.glob("test_*.py"))))] = sum(threads.values())
    return main


SUITES = {
    "trivial": "trivial tests",
    "realistic": "tests using an ORM Session and a psycopg_pool connection on PostgreSQL",
    "shop": "tests of the examples app (examples/shop) on PostgreSQL and Redis",
}


def measure_suites(prefix: str, measure: Callable[..., T], imports: str, suite: str, small: int,
                   large: int) -> dict[str, dict[int, T]]:
    """``measure(root, *args)`` of each variant on suites of ``small`` and ``large`` tests
    of ``suite`` (a key of :data:`SUITES`; realistic and shop ones on the plugin's own
    PostgreSQL and, for the shop, Redis, started here; trivial ones with a conftest importing
    ``imports``): ``{variant: {size: figure}}``."""
    counts: dict[str, dict[int, T]] = {name: {} for name in VARIANTS}
    servers: list[Any] = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            if suite != "trivial":
                from pytest_migsafe.servers import start_postgres, start_redis

                servers.append(start_postgres(Path(tmp) / "pg"))
                ENV["BENCH_PG_URL"] = servers[-1].url
                if suite == "shop":
                    servers.append(start_redis(Path(tmp) / "redis"))
                    ENV["BENCH_REDIS_URL"] = servers[-1].url
                    ENV["BENCH_EXAMPLES"] = str(EXAMPLES)
            for size in (small, large):
                root = Path(tmp) / str(size)
                if suite == "realistic":
                    make_realistic_suite(root, size)
                elif suite == "shop":
                    make_shop_suite(root, size)
                else:
                    make_suite(root, size, imports)
                for name, args in VARIANTS.items():
                    counts[name][size] = measure(root, *args)
        finally:
            for server in servers:
                server.stop()
    return counts


def bench_instructions(tests: int, imports: str = "", small: int = 200, large: int = 1400,
                       suite: str = "trivial") -> None:
    """Fixed and per-test instructions of each variant, from two suite sizes; the ratio at ``tests``.

    ``suite``: a key of :data:`SUITES` (on PostgreSQL and Redis: the client's instructions only).
    """
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian package valgrind)")
    counts = measure_suites("migsafe-bench-cg-", instructions, imports, suite, small, large)
    kind = SUITES[suite]
    where = f" (conftest imports {imports})" if imports else ""
    print(f"instructions (callgrind), suites of {small} and {large} {kind}{where}, projected to {tests}:")
    base = None
    for name in VARIANTS:
        per_test = (counts[name][large] - counts[name][small]) / (large - small)
        fixed = counts[name][small] - per_test * small
        total = fixed + per_test * tests
        base = base or (total, per_test, fixed)
        print(f"  {name:22} {per_test / 1e6:6.3f} M/test ({(per_test - base[1]) / 1e3:+.0f} k)   "
              f"fixed {fixed / 1e6:6.0f} M ({(fixed - base[2]) / 1e6:+.0f} M)   {total / base[0]:.3f}x")
    others = sorted(OTHER_THREADS.values())
    print(f"  (main thread, PYTHONHASHSEED={HASH_SEED}; the other threads ran {others[0] / 1e6:.1f} to "
          f"{others[-1] / 1e6:.1f} M instructions a run, whatever the suite's size, not counted)")
    print("  target: --migsafe-report at most 1.05x of -p no:migsafe")


def traced_opcodes(root: Path, *args: str) -> tuple[int, int]:
    """``(opcodes in all, opcodes in pytest_migsafe's files)`` of one pytest run in ``root``
    under the opcode tracer (``bench/opcode_tracer.py``, from collection's end on)."""
    run_pytest(root, *args)  # bytecode caches first
    out = root / "opcodes.json"
    env = {**ENV, "BENCH_OPCODES_OUT": str(out), "PYTHONPATH": str(Path(__file__).resolve().parent)}
    done = subprocess.run([sys.executable, "-m", "pytest", *COMMON, "-p", "opcode_tracer", *args],
                          cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"traced pytest {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    counts = json.loads(out.read_text())
    package = os.sep + "pytest_migsafe" + os.sep
    return sum(counts.values()), sum(v for k, v in counts.items() if package in k)


def bench_opcodes(imports: str = "", suite: str = "trivial", small: int = 100, large: int = 300) -> None:
    """Python opcodes a test runs (all, and the plugin's own), each variant, from two suite
    sizes; the ratio of each variant's per-test opcodes to the plugin off's."""
    counts = measure_suites("migsafe-bench-ops-", traced_opcodes, imports, suite, small, large)
    kind = SUITES[suite]
    where = f" (conftest imports {imports})" if imports else ""
    print(f"opcodes (sys.settrace), suites of {small} and {large} {kind}{where}, per test:")
    base = None
    for name in VARIANTS:
        whole = (counts[name][large][0] - counts[name][small][0]) / (large - small)
        mine = (counts[name][large][1] - counts[name][small][1]) / (large - small)
        base = base or whole
        print(f"  {name:22} {whole:9.0f} opcodes a test ({whole - base:+.0f}), the plugin's own {mine:6.0f}   "
              f"{whole / base:.3f}x")
    print("  targets (issue 8, realistic and shop suites): at most 1.03x at the defaults, 1.05x with --migsafe-report")


def bench_startup(imports: str) -> None:
    """Instructions of a one-test session with the plugin off, on and with the report: its
    start-up cost (imports, hooks, configure) as one run pays it, whatever the suite's size."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--startup needs valgrind (Debian package valgrind)")
    with tempfile.TemporaryDirectory(prefix="migsafe-bench-start-") as tmp:
        root = Path(tmp)
        make_suite(root, 1, imports)
        counts = {name: instructions(root, *args) for name, args in VARIANTS.items()}
    base = counts["-p no:migsafe"]
    where = f", conftest imports {imports}" if imports else ""
    print(f"start-up (callgrind), a session of one trivial test{where}:")
    for name, count in counts.items():
        print(f"  {name:22} {count / 1e6:8.0f} M ({(count - base) / 1e6:+.0f} M, {count / base:.3f}x)")


def main() -> None:
    """Run both benchmarks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=5000, help="trivial tests in the time benchmark")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of each variant")
    parser.add_argument("--queries", type=int, default=1_000_000, help="statements in the memory benchmark")
    parser.add_argument("--skip-time", action="store_true", help="only the memory benchmark")
    parser.add_argument("--skip-memory", action="store_true", help="only the time benchmark")
    parser.add_argument("--import", dest="imports", default="", metavar="MODULES",
                        help="a conftest imports these (for example 'sqlalchemy, psycopg_pool': a suite "
                             "of a project that uses them, where every part of the plugin is awake)")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions with valgrind's callgrind (slow, about 10 minutes; "
                             "deterministic where wall and CPU times are noisy)")
    parser.add_argument("--realistic", action="store_true",
                        help="with --instructions or --opcodes: tests that use an ORM Session and a psycopg_pool connection on "
                             "the plugin's PostgreSQL (suites of 100 and 300), instead of trivial tests")
    parser.add_argument("--shop", action="store_true",
                        help="with --instructions or --opcodes: tests of the examples app (examples/shop: "
                             "directory reads, cache-aside profile reads on Redis, writes, pooled requests, "
                             "psycopg_pool reads; suites of 100 and 300), instead of trivial tests")
    parser.add_argument("--startup", action="store_true",
                        help="only the start-up cost: instructions of a one-test session (with --import, "
                             "a conftest importing those modules), plugin off, on and with the report")
    parser.add_argument("--shapes-kept", action="store_true",
                        help="with --instructions or --opcodes: pytest's cache plugin on in every variant (each "
                             "run after a --cache-clear), and a fourth variant, --migsafe-report on the readable "
                             "shapes the run before kept in pytest's cache (migsafe_shape_cache, the default): "
                             "a second run, which neither imports sqlglot nor parses a statement")
    parser.add_argument("--sizes", default=None, metavar="SMALL,LARGE",
                        help="with --instructions on --realistic or --shop: the two suite sizes (default 100,300; "
                             "larger ones spread the run-to-run noise of the fixed part over more tests)")
    parser.add_argument("--seed", default="0", metavar="N",
                        help="with --instructions: PYTHONHASHSEED of the runs (default 0; the per-test "
                             "figure of one tree moves by tens of thousands of instructions between seeds)")
    parser.add_argument("--opcodes", action="store_true",
                        help="only the Python opcodes a test runs, the three variants (deterministic; with "
                             "--realistic on the realistic suite, else on trivial tests; about 2 minutes)")
    args = parser.parse_args()
    suite = "shop" if args.shop else "realistic" if args.realistic else "trivial"
    if args.shapes_kept:
        keep_shapes()
    if args.opcodes:
        bench_opcodes(args.imports, suite)
        return
    if args.startup:
        bench_startup(args.imports)
        return
    if args.instructions:
        global HASH_SEED
        HASH_SEED = str(int(args.seed))
        if suite != "trivial":
            small, large = (int(size) for size in (args.sizes or "100,300").split(","))
            bench_instructions(args.tests, small=small, large=large, suite=suite)
        else:
            bench_instructions(args.tests, args.imports)
    if not args.skip_time:
        bench_time(args.tests, args.rounds, args.imports)
    if not args.skip_memory:
        bench_memory(args.queries)


if __name__ == "__main__":
    main()
