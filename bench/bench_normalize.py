"""Benchmark pytest_migsafe.queries.normalize: cache misses (parse) and cache hits.

Run:  python bench/bench_normalize.py
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pytest_migsafe.queries import normalize as nz

SELECT_JOIN = (
    "SELECT users.id AS users_id, users.name AS users_name, users.email AS users_email, "
    "users.created_at AS users_created_at, addresses_1.id AS addresses_1_id, "
    "addresses_1.user_id AS addresses_1_user_id, addresses_1.street AS addresses_1_street, "
    "addresses_1.city AS addresses_1_city \nFROM users LEFT OUTER JOIN addresses AS addresses_1 "
    "ON users.id = addresses_1.user_id \nWHERE users.name = %(name_1)s AND users.created_at > "
    "%(created_at_1)s ORDER BY users.id \n LIMIT %(param_1)s"
)
INSERT_100 = "INSERT INTO items (name, price, qty) VALUES " + ", ".join(
    f"(%(name_m{i})s, %(price_m{i})s, %(qty_m{i})s)" for i in range(100)
)
IN_500 = (
    "SELECT items.id, items.name FROM items WHERE items.id IN ("
    + ", ".join(f"%(id_1_{i})s" for i in range(500))
    + ")"
)
IN_10000 = (
    "SELECT items.id FROM items WHERE items.id IN ("
    + ", ".join(str(i) for i in range(10_000))
    + ")"
)
VALUES_1MB = "INSERT INTO t (a, b, c) VALUES " + ", ".join(
    f"({i}, 'name number {i}', {i * 0.5})" for i in range(27_000)
)
UNPARSEABLE_1MB = "; ".join(
    f"SELECT f{i}(a, 'x{i}') FROM t{i % 7} WHERE b = {i} AND c = g(h(k))"
    for i in range(18_000)
)

INSERT_1000 = "INSERT INTO items (name, price, qty, a, b) VALUES " + ", ".join(
    f"(%(name_m{i})s, %(price_m{i})s, %(qty_m{i})s, %(a_m{i})s, %(b_m{i})s)"
    for i in range(1000)
)

CASES: list[tuple[str, str]] = [
    ("SQLAlchemy SELECT+JOIN", SELECT_JOIN),
    ("INSERT ... VALUES x100 rows", INSERT_100),
    ("INSERT ... VALUES x1000 rows", INSERT_1000),
    ("IN list of 500 params", IN_500),
    ("IN list of 10,000 literals", IN_10000),
    ("VALUES 27k rows (~1 MB)", VALUES_1MB),
    ("1 MB, many statements (fallback)", UNPARSEABLE_1MB),
]


def per_call(func: Callable[[], object], min_time: float = 0.3) -> float:
    """Seconds per call, averaged over enough calls to fill min_time."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            func()
        dt = time.perf_counter() - t0
        if dt >= min_time:
            return dt / n
        n *= 4


def main() -> None:
    t0 = time.perf_counter()
    nz.normalize("SELECT 1")  # warm-up: lazy sqlglot import + first parse
    first = time.perf_counter() - t0
    import sqlglot

    print(f"sqlglot {sqlglot.__version__}, Python {sys.version.split()[0]}")
    print(f"first call (imports sqlglot): {first * 1e3:.1f} ms\n")

    print(f"{'statement':36} {'chars':>9} {'miss':>11}  shape")
    for name, sql in CASES:
        times = []
        for _ in range(3):
            nz.clear_caches()
            t0 = time.perf_counter()
            shape = nz.normalize(sql)
            times.append(time.perf_counter() - t0)
        miss = min(times)
        print(f"{name:36} {len(sql):9,} {miss * 1e3:8.2f} ms  {shape[:70]!r}")

    print()
    nz.clear_caches()
    sql = SELECT_JOIN
    nz.normalize(sql)
    d = {sql: "x"}
    hit = per_call(lambda: nz.normalize(sql))
    dict_get = per_call(lambda: d[sql])
    noop = per_call(lambda: None)
    txn = per_call(lambda: nz.is_transaction_control(sql))
    kind = per_call(lambda: nz.statement_kind(sql))
    print(f"cache hit normalize():        {hit * 1e9:7.0f} ns/call")
    print(f"cache hit is_transaction_control(): {txn * 1e9:7.0f} ns/call")
    print(f"cache hit statement_kind():   {kind * 1e9:7.0f} ns/call")
    print(f"plain dict lookup (in lambda): {dict_get * 1e9:7.0f} ns/call")
    print(f"empty lambda call:            {noop * 1e9:7.0f} ns/call")
    print(
        f"hit / dict lookup: {hit / dict_get:.2f}x   "
        f"(net of call overhead: {(hit - noop) / max(dict_get - noop, 1e-12):.2f}x)"
    )
    print(f"cache info: {nz.normalize.cache_info()}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
