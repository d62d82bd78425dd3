"""Hold times (checkout to checkin) against a real PostgreSQL, and their histogram.

The truth: the server's own clock (``clock_timestamp()`` read at the start and the end of
the work inside the checkout, around a ``pg_sleep``) bounds each hold from below, and the
wall time measured around the whole ``with`` block bounds it from above.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

import psycopg_pool
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from pytest_migsafe.percentiles import percentile, percentiles
from pytest_migsafe.pool.holds import HoldTimes, bucket_of, to_microseconds
from pytest_migsafe.pool.locality import kind_of_host
from pytest_migsafe.pool.observe import pool_stats
from pytest_migsafe.servers import RunningPostgres

SLEEP_S = 0.02
MARGIN_MS = 500.0  # generous: a busy 2-core machine; the floor is what the server guarantees
SPAN = f"SELECT clock_timestamp() AS t0, pg_sleep({SLEEP_S}), clock_timestamp() AS t1"


@pytest.fixture
def make_engine(postgres: RunningPostgres) -> Iterator[Callable[..., Engine]]:
    """Engines on the test server, disposed after the test."""
    engines: list[Engine] = []

    def make(**kwargs: Any) -> Engine:
        engine = create_engine(postgres.url, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def _bounds_hold(holds_ms: HoldTimes, server_ms: list[float], outer_ms: list[float]) -> None:
    """Each hold lies between the server-side span inside it and the wall time around it."""
    assert holds_ms.count == len(server_ms) == len(outer_ms)
    assert min(server_ms) >= SLEEP_S * 1000  # the server slept at least that long
    p50 = holds_ms.percentile_ms(50)
    assert percentile(server_ms, 50) <= p50 <= percentile(outer_ms, 50) * (1 + 1 / 64) + 0.001
    assert SLEEP_S * 1000 <= p50 <= SLEEP_S * 1000 + MARGIN_MS
    assert max(server_ms) <= holds_ms.max_ms <= max(outer_ms) + 0.001


def test_sqlalchemy_hold_is_the_whole_checkout_measured_by_the_server(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=1)
    server_ms, outer_ms = [], []
    with pool_stats(engine) as stats:
        for _ in range(5):
            t0 = perf_counter()
            with engine.connect() as conn:
                row = conn.execute(text(SPAN)).one()
            outer_ms.append((perf_counter() - t0) * 1000)
            server_ms.append((row.t1 - row.t0).total_seconds() * 1000)
    figures = stats.snapshot()
    _bounds_hold(figures.holds(), server_ms, outer_ms)
    assert figures.hold_ms_p50 == figures.holds().percentile_ms(50)
    assert figures.hold_ms_p50 <= figures.hold_ms_p95 <= figures.hold_ms_p99 <= figures.hold_ms_max


def test_psycopg_pool_hold_is_getconn_to_putconn(postgres: RunningPostgres) -> None:
    pool = psycopg_pool.ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False)
    pool.open(wait=True)
    server_ms, outer_ms = [], []
    try:
        with pool_stats(pool) as stats:
            for _ in range(5):
                t0 = perf_counter()
                with pool.connection() as conn:
                    start, _, end = conn.execute(SPAN).fetchone()  # type: ignore[misc]
                outer_ms.append((perf_counter() - t0) * 1000)
                server_ms.append((end - start).total_seconds() * 1000)
    finally:
        pool.close()
    _bounds_hold(stats.snapshot().holds(), server_ms, outer_ms)


def test_a_connection_held_from_before_or_still_out_has_no_hold(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=3)
    before = engine.connect()
    with pool_stats(engine) as stats:
        before.close()  # checked out before the observation: its hold is not the observed code's
        still_out = engine.connect()  # not returned by the end: no hold either
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    still_out.close()
    assert stats.snapshot().holds().count == 1


def test_orm_session_holds_its_connection_for_the_whole_transaction(make_engine: Callable[..., Engine]) -> None:
    from sqlalchemy.orm import Session

    engine = make_engine(pool_size=1)
    with pool_stats(engine) as stats:
        t0 = perf_counter()
        with Session(engine) as session:
            session.execute(text("SELECT 1"))
            session.execute(text(f"SELECT pg_sleep({SLEEP_S})"))
            session.execute(text("SELECT 1"))
            session.commit()
        outer_ms = (perf_counter() - t0) * 1000
    holds = stats.snapshot().holds()
    assert holds.count == 1  # one checkout for the transaction, not one per statement
    assert SLEEP_S * 1000 <= holds.max_ms <= outer_ms + 0.001


# -- the histogram --------------------------------------------------------------------
def test_buckets_are_exact_below_128_us_then_at_most_1_64_wide() -> None:
    assert [bucket_of(v) for v in (0, 1, 127, 128)] == [0, 1, 127, 128]
    for value in (129, 1000, 20_000, 20_480, 123_456_789):
        top = bucket_of(value)
        assert value <= top <= value * (1 + 1 / 64), value
        assert bucket_of(top) == top  # a bound is its own bucket
    assert len({bucket_of(v) for v in range(1, 1_000_000)}) < 1000  # bounded: a few hundred buckets


def test_percentiles_never_fall_below_the_true_sample_and_stop_at_the_max() -> None:
    rng = random.Random(7)
    samples = [rng.uniform(0.0001, 0.2) for _ in range(1000)]
    holds = HoldTimes.of(samples)
    for p in (50, 95, 99, 100):
        true_us = percentile(samples, p) * 1_000_000
        assert true_us - 1 <= holds.percentile_us(p) <= true_us * (1 + 1 / 64) + 1
    assert holds.percentile_us(100) == holds.max_us
    assert HoldTimes().percentile_ms(95) == 0.0
    with pytest.raises(ValueError, match="0 < p <= 100"):
        holds.percentile_us(0)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 40])
def test_several_percentiles_at_once_are_each_nearest_rank_over_the_buckets(size: int) -> None:
    # one pass for p50/p95/p99 (what a test's figures read), and the one bucket of a test's few holds
    rng = random.Random(size)
    for _ in range(50):
        samples = [rng.choice([rng.uniform(0, 0.0001), rng.uniform(0.001, 0.05)]) for _ in range(size)]
        holds = HoldTimes.of(samples)
        bucketed = sorted(bucket_of(to_microseconds(s)) for s in samples)
        top = max(to_microseconds(s) for s in samples)
        ps = (99, 50, 95, 100, 1)  # any order
        expected = [min(bucketed[max(1, math.ceil(p * size / 100 - 1e-9)) - 1], top) for p in ps]
        assert holds.percentiles_us(ps) == expected
        assert holds.percentiles_ms(ps) == [round(us / 1000, 3) for us in expected]
        assert [holds.percentile_us(p) for p in ps] == expected
        exact = sorted(samples)
        assert percentiles(samples, ps) == [exact[max(1, math.ceil(p * size / 100 - 1e-9)) - 1] for p in ps]
    assert HoldTimes().percentiles_ms((50, 99)) == [0.0, 0.0]
    assert percentiles([], (50, 99)) == [0.0, 0.0]
    for bad in (0, 101, float("nan")):
        with pytest.raises(ValueError, match="0 < p <= 100"):
            holds.percentiles_us((50, bad))
        with pytest.raises(ValueError, match="0 < p <= 100"):
            percentiles([1.0], (bad,))


def test_histograms_merge_exactly_whatever_the_split() -> None:
    rng = random.Random(11)
    samples = [rng.expovariate(1 / 0.005) for _ in range(2000)]
    whole = HoldTimes.of(samples)
    for parts in (2, 3, 7):
        merged = HoldTimes()
        for index in range(parts):
            part = HoldTimes.of(samples[index::parts])
            merged.merge(HoldTimes.from_dict(json.loads(json.dumps(part.to_dict()))))
        assert merged == whole
        assert [merged.percentile_us(p) for p in (50, 95, 99)] == [whole.percentile_us(p) for p in (50, 95, 99)]


@pytest.mark.parametrize(("data", "error"), [
    ({"buckets": {"x": 1}}, ValueError),
    ({"buckets": {"5": -1}}, ValueError),
    ({"buckets": [1, 2]}, (TypeError, ValueError)),
])
def test_malformed_histogram_is_rejected(data: dict[str, Any], error: Any) -> None:
    with pytest.raises(error):
        HoldTimes.from_dict(data)


@pytest.mark.parametrize(("host", "kind"), [
    ("/tmp/pg", "unix socket"), ("", "unix socket"), ("@abstract", "unix socket"),
    ("localhost", "loopback"), ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("db.example.com", "network"), ("10.0.0.5", "network"), (None, None),
])
def test_server_kind_of_a_host(host: str | None, kind: str | None) -> None:
    assert kind_of_host(host) == kind


def test_pools_know_where_their_server_is(make_engine: Callable[..., Engine], postgres: RunningPostgres) -> None:
    engine = make_engine()
    with pool_stats(engine) as stats, engine.connect() as conn:
        host = conn.connection.driver_connection.info.host  # type: ignore[union-attr]
    expected = "unix socket" if host.startswith("/") else "loopback"
    assert list(stats.snapshot().servers.values()) == [expected]
    sqlite = create_engine("sqlite://")
    with pool_stats(sqlite) as stats, sqlite.connect():
        pass
    assert list(stats.snapshot().servers.values()) == ["in-process"]


def test_pool_size_of_a_measurement_against_a_local_database_warns(make_engine: Callable[..., Engine]) -> None:
    from pytest_migsafe.pool.sizing import LocalDatabaseWarning, pool_size

    engine = make_engine(pool_size=1)
    with pool_stats(engine) as stats:
        with engine.connect() as conn:
            conn.execute(text(f"SELECT pg_sleep({SLEEP_S})"))
    with pytest.warns(LocalDatabaseWarning, match=r"hold times measured against a local database \(.*QueuePool\) "
                                                  r"over (unix socket|loopback)\)"):
        size = pool_size(100, stats)
    assert size == pool_size(100, stats.holds)  # ceil(100 x p95 x 1.3), p95 >= 20 ms: at least 3
    assert size >= 3


@pytest.mark.parametrize(("data", "named"), [
    ({"buckets": {"5000": 1}, "count": 1, "total_us": 5000, "max_us": float("inf")}, "max_us"),
    ({"buckets": {"5000": 0.5}, "count": 1, "total_us": 5000, "max_us": 5000}, "count"),
    ({"buckets": {"5000": 1}, "count": True, "total_us": 5000, "max_us": 5000}, "the hold count"),
    ({"buckets": {"5000": 1}, "count": 1, "total_us": "5000", "max_us": 5000}, "total_us"),
    ({"buckets": {"-5": 1}, "count": 1, "total_us": 5000, "max_us": 5000}, "bound"),
])
def test_a_hold_histogram_of_other_than_whole_numbers_is_refused_naming_the_figure(
        data: dict[str, Any], named: str) -> None:
    """json reads Infinity and 0.5 as floats: int() raised OverflowError for the one (a traceback
    out of ``migsafe pool-size``) and cut the other to 0."""
    with pytest.raises(ValueError, match=named):
        HoldTimes.from_dict(data)
