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
