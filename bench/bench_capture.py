"""Capture overhead per statement, as ratios measured in one run.

For PostgreSQL (the plugin's embedded or given server) and in-memory SQLite, each round
times the same loop of statements three ways, interleaved so machine noise hits all
three alike: no listener at all, a naive ``before_cursor_execute`` listener that appends
to a list (the yardstick), and migsafe's capture with a counter active. The medians'
ratios are printed. Targets: migsafe / naive <= 1.05 on PostgreSQL, <= 1.15 on SQLite.

``--instructions`` counts instructions with valgrind's callgrind instead, on four workloads
(SQLite ORM, SQLite Core ``text()``, PostgreSQL ORM, PostgreSQL Core): each workload's loop,
in this (application) module, is called from a test of a pytest run, with the plugin at its
defaults and with ``-p no:migsafe``, at two workload sizes; the difference is the
per-statement cost, the same whatever the machine's load. It prints the instructions the
plugin adds per statement (target <= 40,000 on each). On PostgreSQL only the client's
instructions are counted. ``--python`` measures in another venv (one with the base install
only, say) where this tree is installed.

``--opcodes`` counts, on the same four workloads, the Python opcodes the plugin's own code
runs per statement (a ``sys.settrace`` opcode tracer in the test's process, two sizes
again). Unlike instructions, the figure does not move with the process's memory layout:
the same tree measured +26 k, +48 k and +97 k instructions a statement on the SQLite ORM
loop in one venv (another hash seed, another ``PYTHONPATH``), where its opcodes stayed
555 a statement (CPython's type attribute cache collides or not, see the README).

    python bench/bench_capture.py [--rounds 15] [--statements 2000] [--postgres-url URL]
    python bench/bench_capture.py --instructions [--python VENV/bin/python] [--workload sqlite-orm ...]
    python bench/bench_capture.py --opcodes [--python VENV/bin/python] [--workload sqlite-orm ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from pytest_migsafe.queries import counter as capture
from pytest_migsafe.queries import drivers


def loop(engine: Engine, n: int) -> Callable[[], None]:
    """A workload of ``n`` small SELECTs with a parameter on one connection."""
    stmt = text("SELECT :i")

    def run() -> None:
        with engine.connect() as conn:
            for i in range(n):
                conn.execute(stmt, {"i": i})

    return run


def time_once(fn: Callable[[], None]) -> float:
    """Seconds for one call."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(engine: Engine, n: int, rounds: int) -> dict[str, float]:
    """Median seconds per statement for none / naive / migsafe, interleaved per round."""
    work = loop(engine, n)
    seen: list[str] = []

    def naive(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    def none() -> float:
        drivers.uninstall()
        return time_once(work)

    def with_naive() -> float:
        drivers.uninstall()
        event.listen(Engine, "before_cursor_execute", naive)
        try:
            return time_once(work)
        finally:
            event.remove(Engine, "before_cursor_execute", naive)
            seen.clear()

    def with_migsafe() -> float:
        with capture.count_queries() as counter:
            elapsed = time_once(work)
        assert counter.count == n, counter.count
        drivers.uninstall()
        return elapsed

    samples: dict[str, list[float]] = {"none": [], "naive": [], "migsafe": []}
    work()  # warm: connection, statement caches, normalization cache
    with_migsafe()
    for r in range(rounds):
        order = [("none", none), ("naive", with_naive), ("migsafe", with_migsafe)]
        if r % 2:
            order.reverse()
        for name, fn in order:
            samples[name].append(fn() / n)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(label: str, figures: dict[str, float], target: float) -> None:
    """Print one backend's figures and ratios."""
    ratio = figures["migsafe"] / figures["naive"]
    print(f"{label}: none {figures['none'] * 1e6:.1f} us/stmt, naive listener "
          f"{figures['naive'] * 1e6:.1f} us/stmt, migsafe {figures['migsafe'] * 1e6:.1f} us/stmt")
    print(f"{label}: migsafe / naive = {ratio:.3f}x (target <= {target}x); "
          f"naive / none = {figures['naive'] / figures['none']:.3f}x; "
          f"migsafe / none = {figures['migsafe'] / figures['none']:.3f}x")


WORKLOADS = ("sqlite-orm", "sqlite-core", "postgres-orm", "postgres-core")


def workload(name: str, url: str | None) -> Callable[[int], None]:
    """``run(n)``: ``n`` statements of one kind: ORM ``select(Item)`` by primary key, or Core ``text()``."""
    from sqlalchemy import Integer, String, select
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = "bench_items"
        id = mapped_column(Integer, primary_key=True)
        name = mapped_column(String(20))

    engine = create_engine("sqlite://" if name.startswith("sqlite") else str(url))
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([Item(id=i, name=f"i{i}") for i in range(10)])
        session.commit()
    if name.endswith("orm"):
        query = select(Item)

        def run(n: int) -> None:
            with Session(engine) as session:
                for i in range(n):
                    session.scalars(query.where(Item.id == i % 10)).first()
                    session.expunge_all()
    else:
        stmt = text("SELECT name FROM bench_items WHERE id = :i")

        def run(n: int) -> None:
            with engine.connect() as conn:
                for i in range(n):
                    conn.execute(stmt, {"i": i % 10}).first()
    return run


_TEST_FILE = """\
import gc, os, sys
sys.path.insert(0, {bench_dir!r})
from bench_capture import workload

WORK = workload(os.environ["BENCH_WORKLOAD"], os.environ.get("BENCH_URL") or None)
WORK(200)  # warm-up at collection: the same in every mode and size, it cancels out


def test_loop():
    # a full collection of the heap (pytest's, every plugin's) landing in one run size and not
    # the other would be counted as thousands of instructions a statement, more in a venv with
    # fewer objects: the heap so far is frozen, the loop's own garbage is still collected
    gc.collect()
    gc.freeze()
    WORK(int(os.environ["BENCH_N"]))  # the loop lives in an application module, as in a real suite
"""


@contextmanager
def _scratch(prefix: str, workloads: tuple[str, ...], url: str | None) -> Iterator[tuple[Path, str | None]]:
    """``(scratch directory, url)`` for a benchmark run, both gone afterwards: the plugin's
    PostgreSQL is started in the directory when a PostgreSQL workload is asked for and no
    ``url`` is given."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    server = None
    try:
        if url is None and any(name.startswith("postgres") for name in workloads):
            from pytest_migsafe.servers import start_postgres

            server = start_postgres(tmp / "pg")
            url = server.url
        yield tmp, url
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


_warmed: set[tuple[str, str, int]] = set()  # (python, workload, hash seed) run once, unmeasured


def instructions(mode: str, n: int, name: str, url: str | None, python: str, tmp: Path, seed: int = 0) -> int:
    """Instructions of one pytest process running ``n`` statements of workload ``name`` in a
    test, with the plugin on at its defaults (``mode="migsafe"``) or ``-p no:migsafe``
    (``"none"``), counted by callgrind (the client side only)."""
    test_file = tmp / "test_bench_loop.py"
    if not test_file.exists():
        test_file.write_text(_TEST_FILE.format(bench_dir=str(Path(__file__).resolve().parent)))
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, "-m", "pytest",
               "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(test_file)]
    if mode == "none":
        command[-1:-1] = ["-p", "no:migsafe"]  # as its own word: pytest reads "-p" before parsing options
    env = {**os.environ, "BENCH_N": str(n), "BENCH_WORKLOAD": name, "BENCH_URL": url or "",
           "PYTHONHASHSEED": str(seed), "PYTHONDONTWRITEBYTECODE": "1"}
    if (python, name, seed) not in _warmed:
        # the first run of a workload counted 17 M instructions fewer than the same run
        # repeated (SQLite Core, 1,000 statements; the next runs agree to the instruction):
        # unmeasured, it would have been subtracted from one mode only
        _warmed.add((python, name, seed))
        subprocess.run(command, capture_output=True, cwd=tmp, env=env)
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=env)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed ({mode}, {name}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return int(found.group(1))


def bench_instructions(small: int = 1000, large: int = 3000, url: str | None = None,
                       python: str = sys.executable, workloads: tuple[str, ...] = WORKLOADS,
                       seeds: tuple[int, ...] = (0,)) -> None:
    """Instructions migsafe adds per statement on the four workloads (target <= 40,000 each).

    Each workload's loop runs in a test of a pytest run, with the plugin at its defaults and
    with ``-p no:migsafe``; each figure is ``(I(large) - I(small)) / (large - small)``, so
    start-up, collection and warm-up cancel out, and the count is the same whatever the
    machine's load. On PostgreSQL only the client's instructions are counted (the server's
    are not in this process). ``python``: the interpreter of the venv to measure in.

    ``seeds``: hash seeds (``PYTHONHASHSEED``) to measure under, the median printed last.
    CPython's string-keyed dict lookups cost what their probe chains cost, which depends on
    every key each dict holds: the same loop moves by tens of thousands of instructions a
    statement between venvs or seeds, with or without the plugin (see the README).
    """
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian package valgrind)")
    with _scratch("migsafe-bench-", workloads, url) as (tmp, url):
        print(f"venv: {python}", flush=True)
        for name in workloads:
            _print_added(name, seeds, ("none", "migsafe"), lambda seed, name=name, tmp=tmp, url=url: {
                mode: (instructions(mode, large, name, url, python, tmp, seed)
                       - instructions(mode, small, name, url, python, tmp, seed)) / (large - small)
                for mode in ("none", "migsafe")})


def _print_added(name: str, seeds: tuple[int, ...], labels: tuple[str, str],
                 measure: Callable[[int], dict[str, float]]) -> None:
    """Print, for each hash seed, ``measure(seed)``'s instructions per statement (``"none"``
    and ``"migsafe"``, shown as ``labels``) and what migsafe adds, then the median added."""
    added = []
    for seed in seeds:
        per = measure(seed)
        added.append(per["migsafe"] - per["none"])
        print(f"{name} (hash seed {seed}): {labels[0]} {per['none']:.0f}, {labels[1]} {per['migsafe']:.0f} "
              f"instructions per statement; migsafe adds {added[-1]:.0f}, "
              f"{per['migsafe'] / per['none']:.3f}x", flush=True)
    if len(seeds) > 1:
        print(f"{name}: migsafe adds {statistics.median(added):.0f} instructions per statement, "
              f"median of {len(seeds)} hash seeds (target <= 40000)", flush=True)


_IN_PROCESS_TEST_FILE = """\
import gc, json, os, sys
sys.path.insert(0, {bench_dir!r})
from bench_capture import workload
from pytest_migsafe.queries import drivers

WORK = workload(os.environ["BENCH_WORKLOAD"], os.environ.get("BENCH_URL") or None)
WORK(200)


def test_loop():
    gc.collect()
    gc.freeze()
    plan = []
    for mode in ("none", "migsafe", "migsafe", "none"):  # ABBA: a drift over the run cancels out
        drivers.uninstall() if mode == "none" else drivers.install()
        WORK(200)  # the classes just changed: the interpreter's caches settle again, unmeasured
        for n in ({small}, {large}):
            os.getppid()  # a marker: callgrind dumps its counts on entering os.getppid
            WORK(n)
            os.getppid()
            plan.append([mode, n])
    with open(os.environ["BENCH_PLAN_OUT"], "w") as out:
        json.dump(plan, out)
"""


def instructions_in_process(name: str, url: str | None, python: str, tmp: Path, seed: int,
                            small: int, large: int) -> dict[str, float]:
    """Instructions per statement of workload ``name`` with the plugin's statement capture off
    (its driver hooks removed: SQLAlchemy's and psycopg's own functions) and on (its defaults),
    both in one pytest process under callgrind, so that both run with the same memory layout.

    The process runs each mode twice (none, migsafe, migsafe, none), each at ``small`` and
    ``large`` statements; callgrind dumps its counts at each ``os.getppid()`` marker around a
    loop, and each mode's figure is the mean of its two ``(large - small)`` differences."""
    where = tmp / f"in-process-{name}-{seed}"
    where.mkdir(exist_ok=True)
    (where / "test_bench_loop.py").write_text(_IN_PROCESS_TEST_FILE.format(
        bench_dir=str(Path(__file__).resolve().parent), small=small, large=large))
    out, plan_file = where / "callgrind.out", where / "plan.json"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-before=os_getppid",
               python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "test_bench_loop.py"]
    env = {**os.environ, "BENCH_WORKLOAD": name, "BENCH_URL": url or "", "BENCH_PLAN_OUT": str(plan_file),
           "PYTHONHASHSEED": str(seed), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=where, env=env)
    if done.returncode != 0 or not plan_file.exists():
        raise SystemExit(f"callgrind run failed ({name}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    plan = json.loads(plan_file.read_text())
    parts = {}
    for dump in where.glob("callgrind.out.*"):
        text = dump.read_text(errors="replace")
        number, total = re.search(r"^part: (\d+)", text, re.M), re.search(r"^totals: (\d+)", text, re.M)
        if number and total:
            parts[int(number.group(1))] = int(total.group(1))
    if len(parts) != 2 * len(plan):  # each loop's two markers, nothing else calling os.getppid
        raise SystemExit(f"callgrind run ({name}): {len(parts)} dumps for {len(plan)} loops")
    loops = [parts[2 * i + 2] for i in range(len(plan))]  # the dump at a loop's closing marker
    per: dict[str, list[float]] = {"none": [], "migsafe": []}
    for i in range(0, len(plan), 2):
        (mode, n_small), (_, n_large) = plan[i], plan[i + 1]
        per[mode].append((loops[i + 1] - loops[i]) / (n_large - n_small))
    return {mode: statistics.mean(values) for mode, values in per.items()}


def bench_instructions_in_process(url: str | None = None, python: str = sys.executable,
                                  workloads: tuple[str, ...] = WORKLOADS, seeds: tuple[int, ...] = (0,),
                                  small: int = 500, large: int = 1500) -> None:
    """Instructions migsafe adds per statement on the four workloads (target <= 40,000 each),
    its capture off and on in one process (see :func:`instructions_in_process`): unlike two
    processes, one with ``-p no:migsafe``, the two modes share the memory layout, whose
    string-keyed dict probes and type-attribute-cache collisions move a statement's count
    by tens of thousands of instructions from one process to the next."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian package valgrind)")
    with _scratch("migsafe-bench-", workloads, url) as (tmp, url):
        print(f"venv: {python} (capture off and on in one process)", flush=True)
        for name in workloads:
            _print_added(name, seeds, ("capture off", "on"), lambda seed, name=name, tmp=tmp, url=url:
                         instructions_in_process(name, url, python, tmp, seed, small, large))


_OPCODE_CONFTEST = (Path(__file__).resolve().parent / "opcode_tracer.py").read_text()


def opcodes(n: int, name: str, url: str | None, python: str, tmp: Path) -> tuple[int, int]:
    """``(opcodes in pytest_migsafe's files, opcodes in all)`` of one traced pytest run of ``n``
    statements of workload ``name``, plugin at its defaults (from collection's end on)."""
    test_file = tmp / "test_bench_loop.py"
    if not test_file.exists():
        test_file.write_text(_TEST_FILE.format(bench_dir=str(Path(__file__).resolve().parent)))
        (tmp / "conftest.py").write_text(_OPCODE_CONFTEST)
    out = tmp / f"opcodes-{n}.json"
    env = {**os.environ, "BENCH_N": str(n), "BENCH_WORKLOAD": name, "BENCH_URL": url or "",
           "BENCH_OPCODES_OUT": str(out), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(test_file)], capture_output=True, text=True, cwd=tmp, env=env)
    if done.returncode != 0 or not out.exists():
        raise SystemExit(f"traced run failed ({name}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    counts = json.loads(out.read_text())
    package = os.sep + "pytest_migsafe" + os.sep
    return sum(v for k, v in counts.items() if package in k), sum(counts.values())


def bench_opcodes(url: str | None = None, python: str = sys.executable,
                  workloads: tuple[str, ...] = WORKLOADS, small: int = 200, large: int = 600) -> None:
    """Python opcodes the plugin's own code runs per statement on each workload, and the whole
    loop's opcodes per statement with the plugin on (``(large - small)`` difference)."""
    with _scratch("migsafe-bench-ops-", workloads, url) as (tmp, url):
        print(f"venv: {python}", flush=True)
        for name in workloads:
            where = tmp / name
            where.mkdir()
            (mine_small, all_small), (mine_large, all_large) = (opcodes(n, name, url, python, where)
                                                                for n in (small, large))
            mine = (mine_large - mine_small) / (large - small)
            whole = (all_large - all_small) / (large - small)
            print(f"{name}: the plugin runs {mine:.0f} opcodes per statement, the whole loop {whole:.0f} "
                  f"({mine / whole:.1%})", flush=True)


def main() -> None:
    """Run both backends and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions with callgrind on SQLite instead (deterministic, a few minutes)")
    parser.add_argument("--opcodes", action="store_true",
                        help="count the Python opcodes the plugin's code runs per statement on the four workloads "
                             "(deterministic, independent of memory layout; a minute)")
    parser.add_argument("--python", default=sys.executable,
                        help="with --instructions or --opcodes: the interpreter of the venv to measure in "
                             "(default: this one)")
    parser.add_argument("--workload", choices=WORKLOADS, action="append",
                        help="with --instructions or --opcodes: only this workload (repeatable)")
    parser.add_argument("--seeds", default="0",
                        help="with --instructions: hash seeds to measure under, comma-separated (median printed)")
    parser.add_argument("--separate-processes", action="store_true",
                        help="with --instructions: the plugin off (-p no:migsafe) and on in two pytest processes, "
                             "at 1,000 and 3,000 statements, instead of its capture off and on in one")
    args = parser.parse_args()
    if args.opcodes:
        bench_opcodes(url=args.postgres_url, python=args.python, workloads=tuple(args.workload or WORKLOADS))
        return
    if args.instructions and not args.separate_processes:
        bench_instructions_in_process(url=args.postgres_url, python=args.python,
                                      workloads=tuple(args.workload or WORKLOADS),
                                      seeds=tuple(int(seed) for seed in args.seeds.split(",")))
        return
    if args.instructions:
        bench_instructions(url=args.postgres_url, python=args.python, workloads=tuple(args.workload or WORKLOADS),
                           seeds=tuple(int(seed) for seed in args.seeds.split(",")))
        return

    sqlite = create_engine("sqlite://")
    report("SQLite (memory)", measure(sqlite, args.statements, args.rounds), 1.15)

    from pytest_migsafe.servers import start_postgres

    with tempfile.TemporaryDirectory() as tmp:
        server = start_postgres(Path(tmp), url=args.postgres_url)
        try:
            pg = create_engine(server.url)
            report(f"PostgreSQL ({server.source})", measure(pg, args.statements, args.rounds), 1.05)
            pg.dispose()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
