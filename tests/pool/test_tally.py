"""PoolTally (the pool counts of a report that shows only the run's totals) against a real
PostgreSQL: the backends the server started, psycopg_pool's own counters, and an observation
of every pool over the same span."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from pytest_migsafe.pool import targets
from pytest_migsafe.pool.observe import PoolObservation
from pytest_migsafe.pool.tally import PoolTally
from pytest_migsafe.servers import RunningPostgres

pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")

FIELDS = ("created", "closed", "invalidated", "checkouts", "checkins", "timeouts")


def test_a_tally_counts_what_the_server_and_an_observation_of_every_pool_count(postgres: RunningPostgres) -> None:
    """Every kind of pool event in one span: a psycopg pool opened before it (growth, a
    ``pop_stats()`` reset, a connection returned mid-statement, closed as bad and replaced, a
    timeout), one created, used, closed and collected inside it, a SQLAlchemy QueuePool with
    overflow, an invalidation and a leak. The tally's counts equal the observation's, and its
    connections created equal the backends the server started in the span."""
    from psycopg_pool import ConnectionPool, PoolTimeout

    targets.install()
    pids: set[int] = set()

    def configure(conn: Any) -> None:
        pids.add(conn.info.backend_pid)  # the server's own id of each new backend

    before = ConnectionPool(postgres.dsn, min_size=1, max_size=2, open=False, configure=configure)
    before.open(wait=True)
    with before.connection() as conn:
        conn.execute("SELECT 1")
    pids.clear()
    observation = PoolObservation().start()
    tally = PoolTally()

    with before.connection() as first, before.connection() as second:  # grows to 2
        first.execute("SELECT 1")
        second.execute("SELECT 1")
        with pytest.raises(PoolTimeout):
            before.getconn(timeout=0.05)
    before.pop_stats()
    busy = before.getconn()
    rows = busy.cursor().stream("SELECT generate_series(1, 100000)")
    next(rows)  # returned while ACTIVE: the pool closes it as bad and opens another
    before.putconn(busy)
    before.wait()

    inside = ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False, configure=configure)
    inside.open(wait=True)
    for _ in range(3):
        with inside.connection() as conn:
            conn.execute("SELECT 1")
    inside.close()
    gone = weakref.ref(inside)
    del inside, conn
    gc.collect()
    assert gone() is None

    engine = create_engine(postgres.url, pool_size=1, max_overflow=1)
    event.listen(engine, "connect", lambda dbapi_connection, record: configure(dbapi_connection))
    with engine.connect() as one, engine.connect() as two:  # the second is overflow
        one.execute(text("SELECT 1"))
        two.execute(text("SELECT 1"))
    with engine.connect() as conn:
        conn.invalidate()
    kept = [engine.connect()]  # a leak: still out at the end
    kept[0].execute(text("SELECT 1"))

    figures = tally.stop()
    observation.stop(settle=False)
    observed = observation.snapshot()
    assert figures is not None
    assert {name: getattr(figures, name) for name in FIELDS} == {name: getattr(observed, name) for name in FIELDS}
    assert [(leak.pool, leak.call_site) for leak in figures.leaks] == [
        (leak.pool, leak.call_site) for leak in observed.leaks]
    assert len(figures.leaks) == 1
    assert figures.created == len(pids)  # the server's backends started in the span
    assert figures.timeouts == 1 and figures.invalidated >= 2  # the bad return and the invalidation
    kept[0].close()
    engine.dispose()
    before.close()


def test_a_tally_of_a_span_without_pool_events_is_none(postgres: RunningPostgres) -> None:
    """Statements on a connection checked out before the span, and a psycopg pool sitting
    idle: no pool did anything, so no figures (a test that used no pool has no pool record)."""
    from psycopg_pool import ConnectionPool

    targets.install()
    idle = ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False)
    idle.open(wait=True)
    engine = create_engine(postgres.url)
    with engine.connect() as conn:
        tally = PoolTally()
        conn.execute(text("SELECT 1"))
        assert tally.stop() is None
    engine.dispose()
    idle.close()


def test_a_tally_counts_checkout_timeouts_with_no_observation_active(postgres: RunningPostgres) -> None:
    """The driver hooks time a checkout only for an observation: a timeout with none active
    (a tally's test) is still counted, SQLAlchemy's and psycopg_pool's, sync and async."""
    import asyncio

    from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
    from sqlalchemy.exc import TimeoutError as SQLAlchemyPoolTimeout

    targets.install()
    engine = create_engine(postgres.url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    held = engine.connect()
    psycopg_pool = ConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False)
    psycopg_pool.open(wait=True)
    psycopg_held = psycopg_pool.getconn()

    async def async_timeout() -> None:
        async_pool = AsyncConnectionPool(postgres.dsn, min_size=1, max_size=1, open=False)
        await async_pool.open(wait=True)
        async_held = await async_pool.getconn()
        with pytest.raises(PoolTimeout):
            await async_pool.getconn(timeout=0.05)
        await async_pool.putconn(async_held)
        await async_pool.close()

    tally = PoolTally()
    with pytest.raises(SQLAlchemyPoolTimeout):
        engine.connect()
    with pytest.raises(PoolTimeout):
        psycopg_pool.getconn(timeout=0.05)
    asyncio.run(async_timeout())
    figures = tally.stop()
    assert figures is not None and figures.timeouts == 3
    held.close()
    engine.dispose()
    psycopg_pool.putconn(psycopg_held)
    psycopg_pool.close()


class _CollectingCounters(dict):  # type: ignore[type-arg]
    """A pool's counters whose first read runs the garbage collector (as an allocation can)."""

    collect = True

    def get(self, key: Any, default: Any = None) -> Any:
        if _CollectingCounters.collect:
            _CollectingCounters.collect = False
            gc.collect()
        return super().get(key, default)


class _FakePool:
    max_size = 1

    def __init__(self, name: str, counters: dict[str, int]) -> None:
        self.name = name
        self._stats = counters


def test_a_pool_collected_while_the_totals_are_read_keeps_its_counts_and_raises_nothing() -> None:
    """A psycopg pool's weak-reference callback runs wherever the garbage collector does, also
    inside the loop over the known pools' counters: it made ``totals()`` raise "dictionary
    changed size during iteration" (a test failed at random, one in a hundred with low
    collector thresholds). The collected pool's counts stay in the totals."""
    from pytest_migsafe.pool import psycopg as pool_psycopg

    reader = _FakePool("reader", _CollectingCounters(connections_num=1))
    pool_psycopg.register(reader, fresh=True)
    doomed = _FakePool("doomed", {"connections_num": 5, "connections_lost": 2})
    pool_psycopg.register(doomed, fresh=True)
    doomed.cycle = doomed  # type: ignore[attr-defined]  # (only the collector frees it)
    gone = weakref.ref(doomed)
    del doomed
    before = pool_psycopg.totals()  # (the first read collects the doomed pool, mid-loop)
    assert gone() is None
    assert pool_psycopg.totals() == before
    del reader
    gc.collect()
    assert pool_psycopg.totals() == before  # a pool gone keeps its counts in the totals


def test_a_bare_pool_takes_its_number_at_its_first_checkout_whoever_names_it_first(
        postgres: RunningPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pools without a URL name are numbered: the number was taken when first named, so a
    leak warning (naming only the leaking pool) and a report's figures (naming every pool
    used) gave one pool two names. The number is now taken at the first checkout. (Without
    the Prometheus counter, which names a pool at each new connection, as where
    prometheus_client is not installed, or for a pool whose connections predate the hooks.)"""
    import psycopg
    from sqlalchemy.pool import QueuePool

    from pytest_migsafe.pool import events
    from pytest_migsafe.pool.sqlalchemy import name_of

    targets.install()
    monkeypatch.setattr(events, "created_listeners", [])
    first = QueuePool(lambda: psycopg.connect(postgres.dsn), pool_size=1)
    second = QueuePool(lambda: psycopg.connect(postgres.dsn), pool_size=1)
    first.connect().close()
    second.connect().close()
    later, earlier = name_of(second), name_of(first)  # the second named first
    assert int(later.rpartition("#")[2]) > int(earlier.rpartition("#")[2]), (earlier, later)
    first.dispose()
    second.dispose()
