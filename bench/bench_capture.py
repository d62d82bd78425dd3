"""Capture overhead per statement, as ratios measured in one run.

For PostgreSQL (the plugin's embedded or given server) and in-memory SQLite, each round
times the same loop of statements three ways, interleaved so machine noise hits all
three alike: no listener at all, a naive ``before_cursor_execute`` listener that appends
to a list (the yardstick), and migsafe's capture with a counter active. The medians'
ratios are printed. Targets: migsafe / naive <= 1.05 on PostgreSQL, <= 1.15 on SQLite.

``--instructions`` counts instructions with valgrind's callgrind instead, on SQLite (all
in this process, so the count is the whole cost): each mode runs in its own process at
two workload sizes, and the difference is the per-statement cost, the same whatever the
machine's load. (On PostgreSQL the server's time is not in a client count.)

    python bench/bench_capture.py [--rounds 15] [--statements 2000] [--postgres-url URL] [--instructions]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


def run_one(mode: str, n: int) -> None:
    """Run ``n`` statements on in-memory SQLite in one mode (the process callgrind counts)."""
    engine = create_engine("sqlite://")
    work = loop(engine, n)
    loop(engine, 200)()  # the same warm-up in every mode and size: it cancels out
    if mode == "naive":
        seen: list[str] = []

        def naive(conn, cursor, statement, parameters, context, executemany):
            seen.append(statement)

        event.listen(Engine, "before_cursor_execute", naive)
        work()
    elif mode == "migsafe":
        with capture.count_queries() as counter:
            work()
        assert counter.count == n, counter.count
    else:
        work()


def instructions(mode: str, n: int) -> int:
    """Instructions of one ``run_one`` process, counted by callgrind."""
    done = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           __file__, "--one", mode, "--statements", str(n)],
                          capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed: {done.stderr[-2000:]}")
    return int(found.group(1))


def bench_instructions(small: int = 2000, large: int = 12000) -> None:
    """Instructions per statement on in-memory SQLite, from two workload sizes (start-up cancels out)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (Debian package valgrind)")
    per: dict[str, float] = {}
    for mode in ("none", "naive", "migsafe"):
        per[mode] = (instructions(mode, large) - instructions(mode, small)) / (large - small)
    print(f"SQLite (memory), instructions per statement (callgrind, {small} and {large} statements): "
          f"none {per['none']:.0f}, naive {per['naive']:.0f}, migsafe {per['migsafe']:.0f}")
    print(f"SQLite (memory): migsafe / naive = {per['migsafe'] / per['naive']:.3f}x (target <= 1.15x); "
          f"migsafe / none = {per['migsafe'] / per['none']:.3f}x")


def main() -> None:
    """Run both backends and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions with callgrind on SQLite instead (deterministic, a few minutes)")
    parser.add_argument("--one", choices=("none", "naive", "migsafe"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.statements)
        return
    if args.instructions:
        bench_instructions()
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
