"""Cost of migsafe's client-side cache accounting per Redis command, on a real Redis.

Starts a private redis-server (unix socket; ``--url`` to use another server), then times
batches of GETs (half hits, half misses) three ways, interleaved in one run so that
machine noise hits all alike: plain redis-py (hooks not installed), hooks installed but
no ``cache_stats`` active, and accounting on (a ``cache_stats`` block active). Prints the
median wall-clock and client-CPU time per command of each and the median of the
per-round ratios; the target is at most 1.10x in wall-clock time (exit 1 above it).

    python bench/bench_cache.py [--rounds 10] [--batch 2000] [--url redis://...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_migsafe.cache import hooks as cache_hooks
from pytest_migsafe.cache.stats import cache_stats
from pytest_migsafe.servers import mask_url, start_redis

TARGET = 1.10


def batch(client: Any, keys: list[str]) -> tuple[float, float]:
    """Wall-clock and client CPU seconds per GET over one batch."""
    get = client.get
    started, cpu_started = time.perf_counter(), time.process_time()
    for key in keys:
        get(key)
    return ((time.perf_counter() - started) / len(keys), (time.process_time() - cpu_started) / len(keys))


def run_variant(variant: str, client: Any, keys: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds per GET of one batch run as ``variant``: plain, idle (hooks installed) or on."""
    if variant == "plain":
        cache_hooks.uninstall()
        return batch(client, keys)
    cache_hooks.install()
    if variant == "idle":
        return batch(client, keys)
    with cache_stats(client) as stats:
        seconds = batch(client, keys)
    expected = (len(keys) + 1) // 2
    if not stats.hits == stats.client_hits == expected:
        raise AssertionError(f"accounting is wrong: {stats!r}, client hits {stats.client_hits}, expected {expected}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures; exit 1 when over the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--url", default=None, help="use this Redis instead of starting one")
    args = parser.parse_args(argv)

    import redis

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as base:
        server = start_redis(Path(base), url=args.url)
        try:
            client = redis.Redis.from_url(server.url)
            client.flushdb()
            client.mset({f"bench:{i}": "x" * 64 for i in range(0, args.batch, 2)})  # half hit
            keys = [f"bench:{i}" for i in range(args.batch)]
            batch(client, keys)  # warm the connection and the code paths
            times: dict[str, list[tuple[float, float]]] = {"plain": [], "idle": [], "on": []}
            order = ["plain", "idle", "on"]
            for round_number in range(args.rounds):
                # rotate the order every round so that no variant always runs first
                shift = round_number % len(order)
                for variant in order[shift:] + order[:shift]:
                    times[variant].append(run_variant(variant, client, keys))
            client.close()
        finally:
            server.stop()
    print(f"server: {server.source} at {mask_url(server.url)}")
    print(f"{args.rounds} rounds of {args.batch} GETs (half hits), interleaved, order rotated each round")
    labels = (("plain", "redis-py, hooks not installed"), ("idle", "hooks installed, no cache_stats"),
              ("on", "accounting on (cache_stats active)"))
    print(f"  {'median per command':38} {'wall':>9} {'client CPU':>11}")
    for name, label in labels:
        wall = statistics.median(w for w, _ in times[name])
        cpu = statistics.median(c for _, c in times[name])
        print(f"  {label:38} {wall * 1e6:6.2f} us {cpu * 1e6:8.2f} us")

    def ratio_of(variant: str, index: int) -> float:
        # each round's own pair, then the median: robust to drift in machine load
        return statistics.median(v[index] / p[index] for v, p in zip(times[variant], times["plain"]))

    ratio = ratio_of("on", 0)
    print("  median of the per-round ratios to plain redis-py:")
    print(f"    accounting on, wall clock            {ratio:7.3f}x (target <= {TARGET:.2f}x)")
    print(f"    accounting on, client CPU            {ratio_of('on', 1):7.3f}x")
    print(f"    hooks idle, wall clock               {ratio_of('idle', 0):7.3f}x")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
