"""What goes into the baseline and the JSON report does not depend on the test order.

One suite whose tests share a SQLAlchemy engine (its QueuePool), a psycopg_pool pool and a
Redis client, all module-level, on this session's real PostgreSQL and Redis, runs five
ways: serially, with ``-n 0``, ``-n 2``, ``-n 3``, and serially in reversed order. Which
test opens a shared pool's connections depends on the order (the first test to use a cold
pool pays), so ``created`` is left out of the comparison until the pool figures carry an
order-independent count; every other byte of the baseline, and of the JSON apart from
timings, must be the same all five ways.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

APP = """
import os
import uuid

import redis
from psycopg_pool import ConnectionPool
from sqlalchemy import create_engine, text

engine = create_engine(os.environ["MIGSAFE_POSTGRES_URL"], pool_size=2, max_overflow=0)
with engine.connect():
    pass  # the dialect's own first-connect statements (version, schema...): outside any test
pool = ConnectionPool(os.environ["MIGSAFE_TEST_POSTGRES_DSN"], min_size=1, max_size=2, open=True)
pool.wait()  # its background workers open min_size connections: done before any test
cache = redis.Redis.from_url(os.environ["MIGSAFE_REDIS_URL"])


def orm_reads(n):
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text("SELECT :i AS n"), {"i": i})


def two_shapes():
    # one statement each, of about the same duration: the capture breaks such ties by time
    with engine.connect() as conn:
        conn.execute(text("SELECT 1 AS zeta"))
        conn.execute(text("SELECT 1 AS alpha"))


def pool_reads(n):
    with pool.connection() as conn:
        for i in range(n):
            conn.execute("SELECT %s::int AS n", (i,))


def cached(prefix, keys):
    run = uuid.uuid4().hex  # fresh keys every run: the first read of each is a miss
    for key in keys:
        name = f"{prefix}:{run}-{key}"
        if cache.get(name) is None:
            cache.set(name, b"1", ex=60)
"""

SUITE = """
import pytest

from app import cache, cached, orm_reads, pool_reads, two_shapes


@pytest.mark.parametrize("n", [1, 3, 5])
def test_engine(n):
    orm_reads(n)


def test_engine_n_plus_one():
    orm_reads(12)


@pytest.mark.parametrize("n", range(8))
def test_tied_shapes(n):
    two_shapes()


@pytest.mark.parametrize("n", [2, 4])
def test_psycopg_pool(n):
    pool_reads(n)


def test_quiet():
    pass
"""

# in a file of their own: see WAYS
REDIS_SUITE = """
import pytest

from app import cache, cached, orm_reads, pool_reads

pytestmark = pytest.mark.xdist_group("redis")  # (the loadgroup way, pytest < 9)


def test_cache_half_hits(cache_stats):
    with cache_stats(client=cache):
        cached("orders", ["a", "b", "a", "b"])


def test_everything(cache_stats):
    orm_reads(2)
    pool_reads(2)
    with cache_stats(client=cache):
        cached("profiles", ["x", "x", "x"])
"""

CONFTEST = """
import os


def pytest_collection_modifyitems(items):
    if os.environ.get("MIGSAFE_TEST_REVERSED"):
        items.reverse()
"""

WAYS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "serial": (("-p", "no:xdist"), {}),
    "n0": (("-n", "0"), {}),
    # the two Redis tests share one worker (one file, --dist loadfile): a real server's INFO
    # stats counts every client's reads, so two workers reading at once see each other's
    # (measured: 0.4 for 0.5, 0.8 for 0.6667). Not xdist_group with --dist loadgroup: with
    # pytest 9, pytest-xdist 3.8 cannot group by it (it renames node ids through _nodeid, which
    # pytest 9 no longer reads), and the two tests ran on two workers at once in 2 runs of 10
    "n2": (("-n", "2", "--dist", "loadfile"), {}),
    "n3": (("-n", "3", "--dist", "loadfile"), {}),
    # where pytest-xdist can group (pytest < 9): its node ids renamed test@redis on the workers
    **({"n2-loadgroup": (("-n", "2", "--dist", "loadgroup"), {})} if pytest.version_tuple < (9,) else {}),
    "reversed": (("-p", "no:xdist"), {"MIGSAFE_TEST_REVERSED": "1"}),
}

ORDER_DEPENDENT = {"created", "cold_start_created", "hold_times"}  # connections a warm pool did not need to open: the order's


def comparable(data: Any) -> Any:
    """The JSON without timings (``*_ms``, ``wait_ms_*``) and order-dependent pool counts."""
    if isinstance(data, dict):
        return {k: comparable(v) for k, v in data.items()
                if not (k.endswith("_ms") or "_ms_" in k or k in ORDER_DEPENDENT)}
    if isinstance(data, list):
        return [comparable(v) for v in data]
    return data


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as ``path: a != b`` lines (for the failure message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [line for key in sorted(set(a) | set(b), key=str)
                for line in differences(a.get(key), b.get(key), f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_baseline_and_json_are_the_same_in_any_order_and_any_worker_count(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(app=APP, test_suite=SUITE, test_redis_suite=REDIS_SUITE)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    outputs: dict[str, tuple[str, dict[str, Any]]] = {}
    for way, (args, env) in WAYS.items():
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        result = pytester.runpytest_subprocess(
            *args, "-p", "no:randomly", "--migsafe-update-baseline", f"--migsafe-baseline=base-{way}.json",
            f"--migsafe-report-json=report-{way}.json", "--migsafe-report")
        for name in env:
            monkeypatch.delenv(name)
        result.assert_outcomes(passed=17)
        outputs[way] = ((pytester.path / f"base-{way}.json").read_text(),
                        json.loads((pytester.path / f"report-{way}.json").read_text()))
    serial_baseline, serial_json = outputs["serial"]
    for way, (baseline, report) in outputs.items():
        assert baseline == serial_baseline, way
        assert comparable(report) == comparable(serial_json), (way, differences(comparable(report),
                                                                                comparable(serial_json)))
    tests = serial_json["tests"]
    # the figures compared are real ones: statements, suspects, cache reads, pool checkouts
    assert tests["test_suite.py::test_engine[5]"]["queries"]["count"] == 5
    assert tests["test_suite.py::test_psycopg_pool[4]"]["queries"]["count"] == 4
    assert len(tests["test_suite.py::test_engine_n_plus_one"]["queries"]["n_plus_one"]) == 1
    assert (tests["test_redis_suite.py::test_cache_half_hits"]["cache"]["hits"],
            tests["test_redis_suite.py::test_cache_half_hits"]["cache"]["misses"]) == (2, 2)
    assert (tests["test_redis_suite.py::test_everything"]["cache"]["hits"],
            tests["test_redis_suite.py::test_everything"]["cache"]["misses"]) == (2, 1)
    assert tests["test_redis_suite.py::test_everything"]["pool"]["checkouts"] >= 2
    assert "connections_created" not in serial_baseline
