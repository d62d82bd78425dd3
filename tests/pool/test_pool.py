"""Pool observation against a real PostgreSQL: SQLAlchemy pools and psycopg_pool, sync and async.

Each figure is checked against an independent measurement: the server's backend pids
and ``pg_stat_activity``, the pool's own ``checkedout()``, or a workload whose counts are
fixed by construction.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool, QueuePool, SingletonThreadPool, StaticPool

from pytest_migsafe.percentiles import percentile
from pytest_migsafe.pool import metrics
from pytest_migsafe.pool import warm as pool_warm
from pytest_migsafe.pool.observe import NothingObservedWarning, pool_stats
from pytest_migsafe.pool.targets import ACCEPTS, describe_pool
from pytest_migsafe.report.record import Leak, PoolFigures
from pytest_migsafe.servers import RunningPostgres

HERE = os.path.relpath(__file__)
# these workloads repeat one statement on purpose
pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")


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


class AsyncBarrier:
    """``asyncio.Barrier`` (Python 3.11+) for one round: ``wait()`` returns once ``parties`` wait."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.all_here = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.all_here.set()
        await self.all_here.wait()


def backend_pid(conn: Any) -> int:
    """The server process serving ``conn``."""
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def next_line() -> str:
    """``path:line`` of the line after the caller's."""
    frame = sys._getframe(1)
    return f"{HERE}:{frame.f_lineno + 1}"


# -- SQLAlchemy ---------------------------------------------------------------------
def test_concurrent_checkouts_on_queuepool_are_counted_exactly(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(poolclass=QueuePool, pool_size=2, max_overflow=1, pool_timeout=30)
    threads_n, rounds = 8, 5
    first_holders = threading.Barrier(3, timeout=20)  # the first three holders meet: 3 out at once
    lock = threading.Lock()
    pids: set[int] = set()
    holders_seen = [0]
    pool_checked_out: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(rounds):
                with engine.connect() as conn:
                    pid = backend_pid(conn)
                    with lock:
                        pids.add(pid)
                        holders_seen[0] += 1
                        among_first = holders_seen[0] <= 3
                    if among_first:
                        first_holders.wait()
                        pool_checked_out.append(engine.pool.checkedout())
        except BaseException as exc:
            errors.append(exc)

    with pool_stats(engine) as stats:
        threads = [threading.Thread(target=work) for _ in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert not errors
        engine.dispose()

    assert stats.checkouts == threads_n * rounds == 40
    assert stats.checkins == 40
    assert stats.peak_checked_out == 3 == max(pool_checked_out)
    assert stats.overflow_used == 1
    assert stats.created == len(pids)  # each new connection is a new server backend
    assert stats.closed == stats.created  # dispose() closed every pooled connection
    assert stats.timeouts == 0 and stats.leaks == [] and stats.invalidated == 0
    assert len(stats.waits) == 40
    assert stats.figures().pool_sizes == {describe_pool(engine.pool): 2}


def test_peak_counts_a_connection_held_from_before(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=3)
    with engine.connect() as held:
        backend_pid(held)
        with pool_stats(engine) as stats, engine.connect() as conn:
            backend_pid(conn)
    assert (stats.checkouts, stats.checkins, stats.peak_checked_out) == (1, 1, 2)
    assert stats.leaks == []


def test_nullpool_opens_and_closes_a_connection_per_checkout(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(poolclass=NullPool)
    pids = set()
    with pool_stats(engine) as stats:
        for _ in range(5):
            with engine.connect() as conn:
                pids.add(backend_pid(conn))
    assert len(pids) == 5
    assert (stats.created, stats.closed, stats.checkouts, stats.checkins) == (5, 5, 5, 5)
    assert stats.peak_checked_out == 1 and stats.overflow_used == 0
    assert stats.figures().pool_sizes == {describe_pool(engine.pool): 0}


def test_leak_is_reported_with_its_call_site(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=2)
    with pool_stats(engine) as stats:
        site = next_line()
        conn = engine.connect()
    try:
        assert stats.leaks == [Leak(pool=describe_pool(engine.pool), call_site=site, dropped=False)]
        assert (stats.checkouts, stats.checkins) == (1, 0)
    finally:
        conn.close()


def _connect_and_drop(engine: Engine, sites: list[str]) -> None:
    sites.append(next_line())
    conn = engine.connect()
    backend_pid(conn)  # conn is dropped here without close()


def test_a_leak_through_a_users_context_manager_names_its_own_line(make_engine: Callable[..., Engine]) -> None:
    """``engine.begin()`` and a user context manager around ``engine.connect()`` reach the pool
    at the same depth, under the same test line's ``__enter__``: the leak is the context
    manager's line (a remembered path once named the test's)."""
    from contextlib import contextmanager

    engine = make_engine()
    held = []
    sites = []

    @contextmanager
    def unit() -> Iterator[Any]:
        sites.append(next_line())
        conn = engine.connect()
        held.append(conn)
        yield conn

    with pool_stats(engine) as stats:
        with engine.begin() as conn:
            conn.execute(text("select 1"))
        with unit() as conn:
            conn.execute(text("select 2"))
    assert [leak.call_site for leak in stats.leaks] == sites
    held[0].close()


@pytest.mark.pool(leaks=1)  # the plugin sees this test's dropped connection too
def test_connection_dropped_without_close_is_a_leak(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=2)
    sites: list[str] = []
    with pool_stats(engine) as stats:
        _connect_and_drop(engine, sites)
    assert stats.leaks == [Leak(pool=describe_pool(engine.pool), call_site=sites[0], dropped=True)]
    assert (stats.checkouts, stats.checkins) == (1, 1)  # the garbage collector checked it in
    assert engine.pool.checkedout() == 0


def test_a_connection_left_out_after_its_session_ended_is_a_leak(make_engine: Callable[..., Engine]) -> None:
    """A Session bound to a connection the test checked out (``Session(bind=connection)``)
    holds it while its transaction runs; once the Session is closed (or committed), the
    connection is the test's own again. The Session, still alive, counted as its holder to
    the end: the leak was never reported. One whose Session is still in its transaction is
    held, as before."""
    engine = make_engine(pool_size=2)
    with pool_stats(engine) as stats:
        site = next_line()
        left = engine.connect()
        closed = Session(bind=left)
        closed.execute(text("select 1"))
        closed.close()
        held = engine.connect()
        holding = Session(bind=held)
        holding.execute(text("select 2"))
    try:
        assert engine.pool.checkedout() == 2 and not left.closed and not held.closed  # SQLAlchemy's own view
        assert holding.in_transaction() and not closed.in_transaction()
        assert stats.leaks == [Leak(pool=describe_pool(engine.pool), call_site=site, dropped=False)]
    finally:
        holding.close()
        held.close()
        left.close()


@pytest.mark.pool(leaks=1)  # (the plugin sees the dropped one too)
def test_static_pool_checkouts_are_each_their_own(make_engine: Callable[..., Engine]) -> None:
    """StaticPool hands its one record to every checkout, and SQLAlchemy reports a checkin only
    for the record's last checkout: two connections out at once counted as one (peak 1), and
    the first close() ended both, so the second, left out, was no leak. Each checkout is now
    told by its own connection proxy: peak 2, the one left out a leak, one dropped without
    close() a dropped leak."""
    engine = make_engine(poolclass=StaticPool)
    with pool_stats(engine) as stats:
        first = engine.connect()
        site = next_line()
        second = engine.connect()
        backend_pid(second)
        first.close()
    try:
        assert first.closed and not second.closed  # SQLAlchemy's own view: one still out
        assert (stats.checkouts, stats.checkins, stats.peak_checked_out) == (2, 1, 2)
        assert stats.leaks == [Leak(pool=describe_pool(engine.pool), call_site=site, dropped=False)]
    finally:
        second.close()
    sites: list[str] = []
    with pool_stats(engine) as after:
        with engine.connect() as conn:
            backend_pid(conn)
        _connect_and_drop(engine, sites)
        gc.collect()
    assert after.leaks == [Leak(pool=describe_pool(engine.pool), call_site=sites[0], dropped=True)]
    assert (after.checkouts, after.peak_checked_out) == (2, 1)


def test_checkout_timeout_is_counted(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=1, max_overflow=0, pool_timeout=0.1)
    with engine.connect() as held:
        backend_pid(held)
        with pool_stats(engine) as stats, pytest.raises(PoolTimeoutError):
            engine.connect()
    assert stats.timeouts == 1
    assert stats.checkouts == 0 and stats.created == 0
    assert stats.wait_ms_max >= 99.0  # the pool waited its pool_timeout before giving up
    assert stats.peak_checked_out == 1


def test_invalidation_closes_and_replaces_the_connection(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=1)
    with engine.connect() as conn:
        first = backend_pid(conn)
    with pool_stats(engine) as stats:
        with engine.connect() as conn:
            conn.invalidate()
        with engine.connect() as conn:
            second = backend_pid(conn)
    assert first != second
    assert (stats.invalidated, stats.closed, stats.created) == (1, 1, 1)
    assert (stats.checkouts, stats.checkins) == (2, 2)


def test_soft_invalidation_recycles_at_next_checkout(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=1)
    with engine.connect() as conn:
        backend_pid(conn)
    with pool_stats(engine) as stats:
        with engine.connect() as conn:
            conn.connection.invalidate(soft=True)
        assert (stats.invalidated, stats.closed) == (1, 0)
        with engine.connect() as conn:
            backend_pid(conn)
    assert (stats.invalidated, stats.closed, stats.created) == (1, 1, 1)


def test_an_unrelated_engine_is_not_counted(make_engine: Callable[..., Engine]) -> None:
    watched, other = make_engine(), make_engine()
    with pool_stats(watched) as stats, other.connect() as conn:
        backend_pid(conn)
    assert not stats.has_activity()
    assert stats.saw_nothing
    with pytest.warns(NothingObservedWarning, match=r"pool_stats\(.*QueuePool\)\) saw nothing"):
        assert stats.figures().record() == PoolFigures()


def test_pool_stats_without_target_sees_every_engine(make_engine: Callable[..., Engine]) -> None:
    with pool_stats() as stats:
        first, second = make_engine(poolclass=NullPool), make_engine(poolclass=NullPool)
        for engine in (first, second):
            with engine.connect() as conn:
                backend_pid(conn)
    assert (stats.created, stats.checkouts) == (2, 2)
    assert set(stats.figures().pool_sizes) == {describe_pool(first.pool), describe_pool(second.pool)}


def test_pool_name_masks_the_password(postgres: RunningPostgres) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(postgres.url).set(password="s3cret-pw")
    engine = create_engine(url)
    assert "s3cret-pw" not in describe_pool(engine.pool)
    assert "***" in describe_pool(engine.pool)


@pytest.mark.parametrize("query", ["?password=s3cret-pw", "?sslmode=disable&password=s3cret-pw"])
def test_pool_name_masks_a_password_in_the_query_string(postgres: RunningPostgres, query: str) -> None:
    # SQLAlchemy's hide_password hides user:password@ only: the leak warning, the JSON report's
    # pool names and servers showed this one
    from sqlalchemy.engine import make_url

    url = make_url(postgres.url).set(password=None).render_as_string(hide_password=False)
    engine = create_engine(url + ("&" if "?" in url else "") + query.lstrip("?" if "?" in url else ""))
    assert "s3cret-pw" not in describe_pool(engine.pool)
    assert "password=***" in describe_pool(engine.pool)


def test_pool_stats_rejects_what_is_not_an_engine_or_pool() -> None:
    with pytest.raises(TypeError, match="accepts a SQLAlchemy Engine, AsyncEngine or Pool") as info:
        pool_stats("postgresql://localhost/db")
    assert str(info.value) == f"pool_stats() accepts {ACCEPTS}; got str"


@pytest.mark.asyncio
async def test_async_engine_concurrent_checkouts(postgres: RunningPostgres) -> None:
    engine = create_async_engine(postgres.url, pool_size=2, max_overflow=0)
    together = AsyncBarrier(2)
    pids = []

    async def hold() -> None:
        async with engine.connect() as conn:
            pids.append((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
            await asyncio.wait_for(together.wait(), 20)

    try:
        with pool_stats(engine) as stats:
            await asyncio.gather(hold(), hold())
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert len(set(pids)) == 2
    assert (stats.created, stats.checkouts, stats.checkins, stats.peak_checked_out) == (2, 3, 3, 2)
    assert "AsyncAdaptedQueuePool" in next(iter(stats.figures().pool_sizes))


@pytest.mark.asyncio
async def test_async_engine_leak_has_the_call_site_of_the_coroutine(postgres: RunningPostgres) -> None:
    engine = create_async_engine(postgres.url, pool_size=1)
    try:
        with pool_stats(engine) as stats:
            site = next_line()
            conn = await engine.connect()
        assert stats.leaks == [Leak(pool=describe_pool(engine.sync_engine.pool), call_site=site)]
        await conn.close()
    finally:
        await engine.dispose()


@pytest.mark.parametrize("poolclass", [StaticPool, SingletonThreadPool])
def test_single_connection_pools(make_engine: Callable[..., Engine], poolclass: type) -> None:
    engine = make_engine(poolclass=poolclass)
    pids = set()
    with pool_stats(engine) as stats:
        for _ in range(3):
            with engine.connect() as conn:
                pids.add(backend_pid(conn))
    assert len(pids) == 1
    assert (stats.created, stats.checkouts, stats.checkins, stats.peak_checked_out) == (1, 3, 3, 1)
    assert stats.figures().pool_sizes == {}  # no configured size to compare with a recommendation


# -- psycopg_pool -------------------------------------------------------------------
def _app_name(request: pytest.FixtureRequest) -> str:
    return f"migsafe-{request.node.name}"[:63]


def _backends(dsn: str, app: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchone()
    assert row is not None
    return int(row[0])


def _until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (polled; fails after 30 s)."""
    for _ in range(3000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the condition never held")


def test_a_psycopg_pool_request_still_waiting_is_no_checkout(postgres: RunningPostgres) -> None:
    """A checkout is a connection getconn() handed out: a request still queued on an exhausted
    pool is none (psycopg_pool's requests_num counts it from its start, and was read as one:
    checkouts 2 with one connection out; a request left waiting at the block's end, which timed
    out after it, stayed a checkout of the block)."""
    from psycopg_pool import ConnectionPool, PoolTimeout

    with ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False, timeout=30) as psycopg_pool:
        psycopg_pool.wait()
        waiting = lambda: psycopg_pool.get_stats().get("requests_waiting", 0) == 1  # noqa: E731
        with pool_stats(psycopg_pool) as stats:
            held = psycopg_pool.getconn()
            second = threading.Thread(target=lambda: psycopg_pool.putconn(psycopg_pool.getconn()))
            second.start()
            _until(waiting)
            assert (stats.figures().checkouts, stats.figures().checkins) == (1, 0)
            psycopg_pool.putconn(held)
            second.join(timeout=30)
        assert (stats.checkouts, stats.checkins, stats.timeouts) == (2, 2, 0)

        held = psycopg_pool.getconn()
        timed_out: list[bool] = []

        def give_up() -> None:
            try:
                psycopg_pool.putconn(psycopg_pool.getconn(timeout=1))
            except PoolTimeout:
                timed_out.append(True)

        with pool_stats(psycopg_pool) as stats:
            third = threading.Thread(target=give_up)
            third.start()
            _until(waiting)
        third.join(timeout=30)
        psycopg_pool.putconn(held)
        assert timed_out == [True]
        with pytest.warns(NothingObservedWarning, match="saw nothing"):  # (a request that only waited)
            assert (stats.checkouts, stats.checkins, stats.timeouts) == (0, 0, 0)


def test_psycopg_pool_growth_checkouts_and_timeout(postgres: RunningPostgres,
                                                   request: pytest.FixtureRequest) -> None:
    from psycopg_pool import ConnectionPool, PoolTimeout

    app = _app_name(request)
    with ConnectionPool(postgres.dsn, min_size=1, max_size=3, open=False, timeout=10,
                        kwargs={"application_name": app}) as psycopg_pool:
        psycopg_pool.wait()
        with pool_stats(psycopg_pool) as stats:
            for _ in range(4):
                with psycopg_pool.connection() as conn:
                    conn.execute("SELECT 1")
            held = [psycopg_pool.getconn() for _ in range(3)]  # the pool grows by two
            assert _backends(postgres.dsn, app) == 3
            with pytest.raises(PoolTimeout):
                psycopg_pool.getconn(timeout=0.1)
            for conn in held:
                psycopg_pool.putconn(conn)
        assert stats.created == 2
        assert (stats.checkouts, stats.checkins, stats.peak_checked_out) == (7, 7, 3)
        assert stats.timeouts == 1 and stats.leaks == []
        assert stats.overflow_used == 2  # pool size 3 against min_size 1
        assert stats.wait_ms_max >= 99.0
        assert len(stats.waits) == 8
        assert stats.figures().pool_sizes == {describe_pool(psycopg_pool): 3}


def test_psycopg_pool_leak_and_close(postgres: RunningPostgres) -> None:
    from psycopg_pool import ConnectionPool

    psycopg_pool = ConnectionPool(postgres.dsn, min_size=2, max_size=2, open=False)
    psycopg_pool.open(wait=True)
    with pool_stats(psycopg_pool) as stats:
        site = next_line()
        conn = psycopg_pool.getconn()
    assert stats.leaks == [Leak(pool=describe_pool(psycopg_pool), call_site=site, dropped=False)]
    psycopg_pool.putconn(conn)
    with pool_stats(psycopg_pool) as closing:
        psycopg_pool.close()
    assert (closing.closed, closing.created, closing.checkouts) == (2, 0, 0)


def test_figures_read_after_the_stop_are_those_of_the_stop(postgres: RunningPostgres,
                                                          make_engine: Callable[..., Engine],
                                                          request: pytest.FixtureRequest) -> None:
    """The figures are worked out when first read (the plugin at its defaults reads none), but
    from what the pools said at the stop: what they do afterwards changes nothing."""
    from psycopg_pool import ConnectionPool

    app = _app_name(request)[:59]  # the server keeps 63 characters of a name
    engine = make_engine(connect_args={"application_name": app + "-sa"})
    with ConnectionPool(postgres.dsn, min_size=1, max_size=3, open=False, timeout=10,
                        kwargs={"application_name": app}) as psycopg_pool:
        psycopg_pool.wait()
        stats = pool_stats(engine, psycopg_pool)
        with stats:
            held = [psycopg_pool.getconn() for _ in range(2)]  # the pool grows by one
            leaked = engine.connect()
        opened_by_then = (_backends(postgres.dsn, app) - 1) + _backends(postgres.dsn, app + "-sa")
        held.append(psycopg_pool.getconn())  # after the stop: the pool grows again
        leaked.close()
        for conn in held:
            psycopg_pool.putconn(conn)
        assert opened_by_then == 2 and _backends(postgres.dsn, app) == 3
        assert (stats.created, stats.checkouts, stats.checkins) == (opened_by_then, 3, 0)
        assert len(stats.leaks) == 3  # out at the stop, returned only after it


def test_watching_every_pool_counts_a_psycopg_pool_opened_before_the_observation(
        postgres: RunningPostgres) -> None:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(postgres.dsn, min_size=1, max_size=2, open=False) as psycopg_pool:
        psycopg_pool.open(wait=True)
        with psycopg_pool.connection():
            pass  # the pool is known, and has served one request, before the observation
        with pool_stats() as stats:  # every pool
            for _ in range(3):
                with psycopg_pool.connection():
                    pass
        assert stats.checkouts == psycopg_pool.get_stats()["requests_num"] - 1 == 3


def test_an_idle_psycopg_pool_leaves_an_observation_quiet_and_one_growing_on_its_own_does_not(
        postgres: RunningPostgres, request: pytest.FixtureRequest) -> None:
    """Watching every pool, an observation in which a known psycopg pool sat idle saw nothing
    (no figures worked out: the report's per-test cost); one in which the pool opened a
    connection by itself (its worker growing it to a new min_size, no checkout) counts it, as
    the server does."""
    from psycopg_pool import ConnectionPool

    app = f"migsafe-idle-{os.getpid()}-{request.node.name[-20:]}"
    with ConnectionPool(postgres.dsn, min_size=1, max_size=3, open=False, kwargs={"application_name": app}) as pool:
        pool.wait()
        with pool_stats() as idle:
            pass
        assert idle.was_quiet and idle.snapshot().record() == PoolFigures()
        before = _backends(postgres.dsn, app)
        with pool_stats() as grown:
            pool.resize(min_size=2, max_size=3)
            pool.wait()
        opened = _backends(postgres.dsn, app) - before
        assert opened == 1
        assert not grown.was_quiet and grown.created == opened and grown.checkouts == 0


def _getconn_and_drop(psycopg_pool: Any, sites: list[str]) -> None:
    sites.append(next_line())
    psycopg_pool.getconn()


@pytest.mark.pool(leaks=1)
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_psycopg_connection_dropped_without_putconn_is_a_leak(postgres: RunningPostgres) -> None:
    from psycopg_pool import ConnectionPool

    sites: list[str] = []
    with ConnectionPool(postgres.dsn, min_size=1, max_size=2, open=False) as psycopg_pool:
        psycopg_pool.wait()
        with pool_stats(psycopg_pool) as stats:
            _getconn_and_drop(psycopg_pool, sites)
            gc.collect()
        assert stats.leaks == [Leak(pool=describe_pool(psycopg_pool), call_site=sites[0], dropped=True)]


@pytest.mark.asyncio
async def test_async_psycopg_pool(postgres: RunningPostgres, request: pytest.FixtureRequest) -> None:
    from psycopg_pool import AsyncConnectionPool

    app = _app_name(request)
    async with AsyncConnectionPool(postgres.dsn, min_size=1, max_size=2, open=False,
                                   kwargs={"application_name": app}) as psycopg_pool:
        await psycopg_pool.wait()
        together = AsyncBarrier(2)

        async def hold() -> None:
            async with psycopg_pool.connection() as conn:
                await conn.execute("SELECT 1")
                await asyncio.wait_for(together.wait(), 20)

        with pool_stats(psycopg_pool) as stats:
            await asyncio.gather(hold(), hold())
            site = next_line()
            leaked = await psycopg_pool.getconn()
        assert (stats.created, stats.checkouts, stats.checkins, stats.peak_checked_out) == (1, 3, 2, 2)
        assert stats.leaks == [Leak(pool=describe_pool(psycopg_pool), call_site=site, dropped=False)]
        assert await asyncio.to_thread(_backends, postgres.dsn, app) == 2
        await psycopg_pool.putconn(leaked)


def test_psycopg_null_pool_opens_a_connection_per_checkout(postgres: RunningPostgres) -> None:
    from psycopg_pool import NullConnectionPool

    with NullConnectionPool(postgres.dsn, max_size=2, open=False) as psycopg_pool:
        with pool_stats(psycopg_pool) as stats:
            for _ in range(3):
                with psycopg_pool.connection() as conn:
                    conn.execute("SELECT 1")
        assert (stats.created, stats.checkouts, stats.checkins) == (3, 3, 3)
        assert stats.closed == 3


# -- warm-pool check ----------------------------------------------------------------
def test_nullpool_engine_fails_the_warm_check(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(poolclass=NullPool)

    def action() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    with pytest.raises(AssertionError) as info:
        pool_warm.assert_pool_warm(engine, action, warmup=5, repeat=20)
    assert str(info.value) == (
        "pool is not warm: 20 connections created after warm-up, expected at most 0\n"
        "  warm-up: 5 created in 5 runs; measured: 20 created in 20 runs")


def test_queuepool_engine_passes_the_warm_check(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(pool_size=2)

    def action() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    result = pool_warm.assert_pool_warm(engine, action)
    assert result == pool_warm.WarmResult(5, 1, 50, 0)
    assert result.describe() == "warm-up: 1 created in 5 runs; measured: 0 created in 50 runs"


@pytest.mark.asyncio
async def test_async_warm_check(postgres: RunningPostgres) -> None:
    engine = create_async_engine(postgres.url, poolclass=NullPool)

    async def action() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    try:
        with pytest.raises(AssertionError, match="measured: 3 created in 3 runs"):
            await pool_warm.assert_pool_warm_async(engine, action, warmup=1, repeat=3)
        with pytest.raises(TypeError, match="assert_pool_warm_async"):
            pool_warm.assert_pool_warm(engine, action)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("kwargs", [{"warmup": -1}, {"repeat": 0}, {"max_new": 1.5}])
def test_warm_check_rejects_bad_counts(make_engine: Callable[..., Engine], kwargs: dict[str, Any]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name} must be a whole number"):
        pool_warm.assert_pool_warm(make_engine(), lambda: None, **kwargs)


# -- Prometheus and helpers ---------------------------------------------------------
def test_prometheus_counter_counts_new_connections(make_engine: Callable[..., Engine]) -> None:
    from prometheus_client import REGISTRY

    engine = metrics.instrument(make_engine(poolclass=NullPool))
    labels = {"pool": describe_pool(engine.pool)}
    before = REGISTRY.get_sample_value("db_connections_created_total", labels) or 0.0
    with pool_stats(engine) as stats:
        for _ in range(3):
            with engine.connect() as conn:
                backend_pid(conn)
    after = REGISTRY.get_sample_value("db_connections_created_total", labels)
    assert after == before + stats.created == before + 3
    assert metrics.counter() is metrics.counter()
    with pytest.raises(TypeError):
        metrics.instrument(object())


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) == 0.0
    assert percentile([1.0, 2.0], 50) == 1.0


def _use_once(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("select 1"))


def test_an_observation_keeps_no_disposed_engine_alive_and_still_names_its_pool(
        postgres: RunningPostgres) -> None:
    """A test may dispose an engine and check that it was collected (a weak reference):
    the observation (every pool, as with the report) holds the pools it saw weakly, and
    still names and sizes a pool that is gone by the time its figures are read."""
    import weakref

    with pool_stats() as stats:
        engine = create_engine(postgres.url, pool_size=2)
        _use_once(engine)
        name = describe_pool(engine.pool)
        engine.dispose()
        gone = weakref.ref(engine)
        del engine
        gc.collect()
        assert gone() is None
    assert stats.figures().pool_sizes == {name: 2}
    assert stats.checkouts == 1 and stats.created == 1


def test_a_pool_seen_by_an_earlier_observation_and_gone_before_the_figures_is_named_as_last_read(
        postgres: RunningPostgres) -> None:
    """An observation reuses the name, size and server kind an earlier one read of a pool
    (not reading the pool twice a test): when the pool is gone before the later
    observation's figures are read, they still name and size it, and say where its server is."""
    import weakref

    engine = create_engine(postgres.url, pool_size=3)
    with pool_stats() as first:
        _use_once(engine)
    name = describe_pool(engine.pool)
    assert first.figures().pool_sizes == {name: 3}
    servers = first.figures().servers
    assert set(servers) == {name}
    with pool_stats() as second:
        _use_once(engine)
        engine.dispose()
        gone = weakref.ref(engine)
        del engine
        gc.collect()
        assert gone() is None
    figures = second.figures()
    assert figures.pool_sizes == {name: 3}
    assert figures.servers == servers
    assert figures.checkouts == 1


def test_a_psycopg_pool_gone_before_the_figures_is_named_sized_and_placed(postgres: RunningPostgres) -> None:
    """A psycopg pool used, closed and collected inside an observation: its figures still name
    and size it and say where its server is, as an observation that read the live pool did."""
    import weakref

    from psycopg_pool import ConnectionPool

    psycopg_pool = ConnectionPool(postgres.dsn, min_size=1, max_size=3, open=False)
    psycopg_pool.open(wait=True)
    with pool_stats() as first:
        with psycopg_pool.connection() as conn:
            conn.execute("select 1")
    live = first.figures()
    assert list(live.pool_sizes.values()) == [3] and list(live.servers.values()) == ["unix socket"]
    with pool_stats() as second:
        with psycopg_pool.connection() as conn:
            conn.execute("select 1")
        psycopg_pool.close()
        gone = weakref.ref(psycopg_pool)
        del psycopg_pool, conn
        gc.collect()
        assert gone() is None
    figures = second.figures()
    assert figures.pool_sizes == live.pool_sizes and figures.servers == live.servers
    assert figures.checkouts == 1


def _until_no_backend(dsn: str, app: str, timeout: float = 30.0) -> None:
    """Wait (polling the server) until no backend of ``app`` is left: a backend ends a moment
    after its client closed the connection."""
    import time

    deadline = time.monotonic() + timeout
    while _backends(dsn, app):
        assert time.monotonic() < deadline, f"backends of {app} still there after {timeout} s"
        time.sleep(0.02)


@pytest.mark.parametrize("why", ["reset-raises", "returned-active"])
def test_a_connection_the_pool_closes_while_resetting_it_counts_once(
        postgres: RunningPostgres, request: pytest.FixtureRequest, why: str) -> None:
    """psycopg_pool closes a returned connection it cannot reset (a ``reset=`` callback that
    raises; a connection returned mid-statement) and then finds it closed and counts it in
    its own stats (``returns_bad``): it was counted twice in ``closed`` (7 against the
    server's 4). The truth: the backends the server started (each new connection's pid) all
    ended once the pool closed."""
    from psycopg_pool import ConnectionPool

    app = _app_name(request)
    pids: set[int] = set()

    def configure(conn: Any) -> None:
        pids.add(conn.info.backend_pid)

    def reset(conn: Any) -> None:
        raise RuntimeError("reset failed")

    psycopg_pool = ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False, configure=configure,
                                  reset=reset if why == "reset-raises" else None,
                                  kwargs={"application_name": app})
    with pool_stats(psycopg_pool) as stats:
        psycopg_pool.open(wait=True)
        for _ in range(3):
            conn = psycopg_pool.getconn()
            if why == "reset-raises":
                conn.execute("SELECT 1")
            else:
                rows = conn.cursor().stream("SELECT generate_series(1, 100000)")
                next(rows)  # the connection is ACTIVE when it goes back
            psycopg_pool.putconn(conn)
            psycopg_pool.wait()  # the replacement is open
        psycopg_pool.close()
    _until_no_backend(postgres.dsn, app)
    assert len(pids) == 4  # the first connection and three replacements
    assert (stats.created, stats.closed) == (len(pids), len(pids))
    assert stats.invalidated == 3  # the three the pool discarded as bad


def test_an_async_pool_closing_a_connection_it_cannot_reset_counts_it_once(
        postgres: RunningPostgres, request: pytest.FixtureRequest) -> None:
    """The same for ``AsyncConnectionPool``: its reset closes the connection from a coroutine."""
    from psycopg_pool import AsyncConnectionPool

    app = _app_name(request)
    pids: set[int] = set()

    async def configure(conn: Any) -> None:
        pids.add(conn.info.backend_pid)

    async def reset(conn: Any) -> None:
        raise RuntimeError("reset failed")

    async def main() -> Any:
        psycopg_pool = AsyncConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False,
                                           configure=configure, reset=reset, kwargs={"application_name": app})
        with pool_stats(psycopg_pool) as stats:
            await psycopg_pool.open(wait=True)
            for _ in range(3):
                async with psycopg_pool.connection() as conn:
                    await conn.execute("SELECT 1")
                await psycopg_pool.wait()
            await psycopg_pool.close()
        return stats

    stats = asyncio.run(main())
    _until_no_backend(postgres.dsn, app)
    assert len(pids) == 4
    assert (stats.created, stats.closed) == (len(pids), len(pids))


def test_an_observation_keeps_no_closed_psycopg_pool_alive_and_still_counts_it(
        postgres: RunningPostgres) -> None:
    """The same for psycopg_pool: a pool closed and dropped inside the observation is collected,
    and its connections and checkouts still count (the server's sessions are the truth)."""
    import uuid
    import weakref

    from psycopg_pool import ConnectionPool

    app = f"migsafe-gone-{uuid.uuid4().hex[:8]}"
    with pool_stats() as stats:
        psycopg_pool = ConnectionPool(postgres.dsn, min_size=2, max_size=2, open=False,
                                      kwargs={"application_name": app})
        psycopg_pool.open(wait=True)
        for _ in range(3):
            with psycopg_pool.connection() as conn:
                conn.execute("select 1")
        sessions = _backends(postgres.dsn, app)
        name = describe_pool(psycopg_pool)
        psycopg_pool.close()
        gone = weakref.ref(psycopg_pool)
        del psycopg_pool, conn
        gc.collect()
        assert gone() is None
    assert sessions == 2
    assert stats.created == sessions and stats.checkouts == 3
    assert stats.figures().pool_sizes == {name: 2}


@pytest.mark.parametrize("dropped", [False, True], ids=["kept", "dropped"])
def test_pop_stats_inside_an_observation_loses_no_count(postgres: RunningPostgres, dropped: bool) -> None:
    """``pop_stats()`` (a metrics exporter's call) hands the pool's counters out and starts new
    ones: the observation counts across the reset, for a pool kept or closed and collected."""
    import weakref

    from psycopg_pool import ConnectionPool

    psycopg_pool = ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False)
    psycopg_pool.open(wait=True)
    with psycopg_pool.connection() as conn:
        conn.execute("select 1")
    handed_out = []
    with pool_stats() as stats:
        for round_ in range(2):
            for _ in range(2 + round_):
                with psycopg_pool.connection() as conn:
                    conn.execute("select 1")
            handed_out.append(psycopg_pool.pop_stats().get("requests_num", 0))
        with psycopg_pool.connection() as conn:
            conn.execute("select 1")
        if dropped:
            psycopg_pool.close()
            gone = weakref.ref(psycopg_pool)
            del psycopg_pool, conn
            gc.collect()
            assert gone() is None
    # the pool's own word: 1 before, 2 + 3 in the two rounds (handed out), 1 after
    assert handed_out == [1 + 2, 3]
    assert stats.checkouts == 2 + 3 + 1
    if not dropped:
        psycopg_pool.close()


def test_a_psycopg_pool_rejection_is_not_a_timeout(postgres: RunningPostgres) -> None:
    """timeouts was psycopg_pool's requests_errors, which also counts TooManyRequests (the
    queue of waiting requests was full): two rejections read as two timeouts. The expected
    counts are the exceptions the pool raised."""
    from psycopg_pool import ConnectionPool, PoolTimeout, TooManyRequests

    raised: list[str] = []
    with ConnectionPool(postgres.dsn, min_size=1, max_size=1, max_waiting=1, open=False, timeout=10) as pool:
        pool.wait()
        held = pool.getconn()

        def wait_in_line() -> None:
            try:
                pool.putconn(pool.getconn(timeout=30))
            except PoolTimeout:
                raised.append("timeout")

        with pool_stats(pool) as stats:
            waiter = threading.Thread(target=wait_in_line)
            waiter.start()
            _until(lambda: len(pool._waiting) == 1)
            for _ in range(2):
                try:
                    pool.getconn(timeout=5)
                except TooManyRequests:
                    raised.append("rejected")
            pool.putconn(held)  # the waiter gets it
            waiter.join(timeout=30)
            held = pool.getconn()
            try:
                pool.getconn(timeout=0.1)
            except PoolTimeout:
                raised.append("timeout")
            pool.putconn(held)
        assert raised == ["rejected", "rejected", "timeout"]
        assert stats.timeouts == raised.count("timeout")


@pytest.mark.parametrize("library", ["sqlalchemy", "psycopg_pool"])
def test_the_server_of_a_pool_dropped_inside_the_observation_is_still_known(postgres: RunningPostgres,
                                                                             library: str) -> None:
    """A pool first seen before its first connection, then disposed and collected before the
    figures were read, had no server (servers {}): sizing lost its local-database warning.
    The expected value is the same pool's figure when it is kept alive."""
    from psycopg_pool import ConnectionPool

    def run(drop: bool) -> dict[str, str]:
        with pool_stats() as stats:
            if library == "sqlalchemy":
                engine = create_engine(postgres.url, pool_size=1)
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                if drop:
                    engine.dispose()
                    del engine
            else:
                pool = ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=True)
                with pool.connection() as conn:
                    conn.execute("SELECT 1")
                if drop:
                    pool.close()
                    del pool
            gc.collect()
        servers = dict(stats.figures().servers)
        if not drop:
            (engine.dispose() if library == "sqlalchemy" else pool.close())
        return servers

    kept = run(drop=False)
    assert kept and all(kept.values())
    assert sorted(run(drop=True).values()) == sorted(kept.values())


def test_a_pool_keeps_one_name_when_its_engine_becomes_known_later() -> None:
    """An engine made before the plugin's hooks (at the import of a conftest) had its pool
    named ``AsyncAdaptedQueuePool #1`` in the figures of the tests, and by its URL once
    ``pool_stats(engine)`` made the engine known: the sizing listed one pool twice."""
    script = (
        "import sqlalchemy\n"
        "engine = sqlalchemy.create_engine('postgresql+psycopg://u:p@localhost/db')\n"
        "from pytest_migsafe.pool import sqlalchemy as names, targets\n"
        "targets.install(import_missing=True)\n"
        "before = names.name_of(engine.pool)\n"
        "names.classify(engine)\n"
        "print(before == names.name_of(engine.pool), before)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "True", done.stdout
