"""Observe connection pools: connections created, closed and invalidated, checkouts,
peak use, checkout waits, timeouts, and connections never returned (leaks).

Driver hooks report events here: :mod:`pytest_migsafe.pool.sqlalchemy` (listeners on the
SQLAlchemy ``Pool`` class, so every engine's pool, any pool class) and
:mod:`pytest_migsafe.pool.psycopg` (psycopg_pool's ``ConnectionPool`` and
``AsyncConnectionPool``). A :class:`PoolObservation` collects the events of the pools
it watches while it is active. Usable without pytest::

    with pool_stats(engine) as stats:
        run_code()
    print(stats.created, stats.peak_checked_out, stats.wait_ms_p99, stats.leaks)

What each figure means, exactly:

- ``created`` / ``closed`` / ``invalidated``: DBAPI connections opened, closed (an
  invalidated connection is closed too) and invalidated (hard or soft). SQLAlchemy: the
  ``connect``, ``close``/``close_detached`` and ``invalidate``/``soft_invalidate`` events.
  psycopg_pool: ``get_stats()`` deltas (``connections_num - connections_errors``;
  invalidated = ``connections_lost + returns_bad``), closed = connections the pool closed.
- ``checkouts`` / ``checkins``: SQLAlchemy ``checkout``/``checkin`` events (a checkin
  made by the garbage collector counts); psycopg_pool ``requests_num - requests_errors``
  and ``putconn()`` calls.
- ``peak_checked_out``: the most connections out of the watched pools at once, counting
  those already out when the observation started. A connection counts as out from its
  checkout event (the return of ``getconn()``) to its checkin event (the call of
  ``putconn()``), a span inside the pool's own, so the figure never exceeds the pool's.
- ``overflow_used``: per pool, the highest ``QueuePool.overflow()`` seen at a connect or
  checkout event (psycopg_pool: pool size beyond ``min_size`` at a checkout), floored at 0.
- ``wait_ms_p50/_p99/_max``: the wall time of every checkout attempt, successful or not,
  nearest-rank percentiles. SQLAlchemy: the time inside ``_ConnectionRecord.checkout``
  (``pool._do_get()`` - waiting on the queue, or opening a connection - plus reconnecting
  a recycled one), not pre-ping or checkout listeners. psycopg_pool: the time in ``getconn()``.
- ``timeouts``: SQLAlchemy ``TimeoutError`` raised by the pool; psycopg_pool ``requests_errors``.
- ``leaks``: connections checked out while the observation was active and not returned
  by its end, each with the call site of its checkout; also those returned only by the
  garbage collector (dropped without ``close()``), marked ``dropped``.
"""

from __future__ import annotations

import gc
import sys
from array import array
from collections.abc import Iterable
from typing import Any

from pytest_migsafe.percentiles import percentile
from pytest_migsafe.pool import events
from pytest_migsafe.pool.events import Checkout
from pytest_migsafe.pool.targets import classify, configured_size, describe_pool
from pytest_migsafe.pool.targets import install as install_hooks
from pytest_migsafe.report.record import Leak, PoolFigures

_QUIET = PoolFigures()  # the frozen figures of every observation in which nothing happened


class PoolObservation:
    """Pool figures for one stretch of time; a context manager (see :func:`pool_stats`).

    Figures read while active are live; after :meth:`stop` they are frozen.
    """

    def __init__(self, targets: Iterable[Any] | None = None) -> None:
        self._all = targets is None
        self._engines: list[Any] = []
        self._given: list[Any] = []  # SQLAlchemy and psycopg pools named by the caller
        self._psycopg_given: list[Any] = []
        for target in targets or ():
            kind, obj = classify(target)
            if kind == "engine":
                self._engines.append(obj)
            else:
                self._given.append(obj)
                if kind == "psycopg":
                    self._psycopg_given.append(obj)
        self._wanted: dict[int, tuple[Any, bool]] = {}
        self._created = self._closed = self._invalidated = 0
        self._checkouts = self._checkins = self._timeouts = 0
        self._current = self._peak = 0
        self._waits = array("d")
        self._overflow: dict[int, int] = {}
        self._seen: dict[int, Any] = {}
        self._psycopg_base: dict[int, tuple[Any, dict[str, int]]] = {}
        self._start_seq = 0
        self._active = False
        self._was_quiet = False
        self._frozen: PoolFigures | None = None

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> PoolObservation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PoolObservation:
        """Begin receiving pool events (the driver hooks must be installed: see :func:`~pytest_migsafe.pool.targets.install`)."""
        if self._active or self._frozen is not None:
            raise RuntimeError("a PoolObservation can be started once")
        psycopg: Any = sys.modules.get("pytest_migsafe.pool.psycopg")  # imported by install() if in use
        if self._psycopg_given:
            from pytest_migsafe.pool import psycopg as pool_psycopg

            psycopg = pool_psycopg
            for psycopg_pool in self._psycopg_given:
                psycopg.register(psycopg_pool, fresh=False)
        with events._lock:
            self._start_seq = events._seq
            if events._out:
                self._current = sum(1 for entry in events._out.values() if self._wants(entry.pool))
                self._peak = self._current
            pools = (psycopg.registered() if psycopg is not None else []) if self._all else self._psycopg_given
            for psycopg_pool in pools:
                self._psycopg_base[id(psycopg_pool)] = (psycopg_pool, psycopg.stats_of(psycopg_pool))
            self._active = True
            events._observers = (*events._observers, self)
        return self

    def stop(self, settle: bool = True) -> None:
        """Stop receiving events and freeze the figures (idempotent).

        A connection still out at the end is a leak unless a live ORM Session holds it (a
        Session returns its connection at its commit or close, whoever owns the Session: a
        fixture of any scope, a module, a ``scoped_session`` registry). ``settle`` (the
        default) runs one full garbage collection when a connection is still out, so that
        one dropped in a reference cycle (or held by a Session that is garbage) counts as
        the dropped leak it is; the always-on pytest observation passes False unless the
        test asked for a leak check, because a full collection costs about 0.1 s in a large
        application (a connection dropped in a cycle then shows as still checked out).
        """
        if not self._active:
            return
        if settle and events._out and self._open(owned=True):
            gc.collect()  # a connection (or Session) dropped in a reference cycle is returned now, as dropped
        with events._lock:
            events._observers = tuple(obs for obs in events._observers if obs is not self)
            self._active = False
            self._was_quiet = self._quiet()
            self._frozen = _QUIET if self._was_quiet else self._compute()
            if not events._observers:
                events._dropped.clear()

    def psycopg_pool_added(self, psycopg_pool: Any, fresh: bool) -> None:
        """A psycopg pool became known while active: count it from now (or from its creation)."""
        from pytest_migsafe.pool import psycopg as pool_psycopg

        if (self._all or self._wants(psycopg_pool)) and id(psycopg_pool) not in self._psycopg_base:
            base = {} if fresh else pool_psycopg.stats_of(psycopg_pool)
            self._psycopg_base[id(psycopg_pool)] = (psycopg_pool, base)

    # -- matching ----------------------------------------------------------------
    def _wants(self, pool: Any) -> bool:
        if self._all:
            return True
        hit = self._wanted.get(id(pool))
        if hit is None:
            wanted = any(pool is given for given in self._given) or any(
                engine.pool is pool for engine in self._engines)
            hit = self._wanted[id(pool)] = (pool, wanted)
        return hit[1]

    # -- figures -----------------------------------------------------------------
    def _psycopg_deltas(self) -> dict[str, int]:
        from pytest_migsafe.pool import psycopg as pool_psycopg

        totals: dict[str, int] = {}
        for psycopg_pool, base in list(self._psycopg_base.values()):
            delta = pool_psycopg.delta(base, pool_psycopg.stats_of(psycopg_pool))
            if any(delta.values()):
                self._seen[id(psycopg_pool)] = psycopg_pool
            for key, value in delta.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def _open(self, owned: bool = False) -> list[Checkout]:
        """Connections checked out while active and still out (with ``owned``, those a Session holds too)."""
        with events._lock:
            return [entry for entry in events._out.values()
                    if entry.seq > self._start_seq and not entry.dropped and self._wants(entry.pool)
                    and (owned or not entry.owned())]

    def _leaks(self) -> list[Leak]:
        with events._lock:
            gone = [entry for entry in events._dropped
                    if entry.seq > self._start_seq and self._wants(entry.pool)]
        entries = sorted([*self._open(), *gone], key=lambda entry: entry.seq)
        return [Leak(pool=describe_pool(entry.pool), call_site=entry.site or "<unknown>",
                     dropped=entry.dropped) for entry in entries]

    def _quiet(self) -> bool:
        """Nothing happened at all (the common case of a test without a database): skip the sums."""
        return (events._seq == self._start_seq and not self._psycopg_base and not self._seen and not self._waits
                and not (self._created or self._closed or self._invalidated or self._checkins
                         or self._timeouts) and not events._dropped)

    def _compute(self) -> PoolFigures:
        with events._lock:
            psy = self._psycopg_deltas()
            waits = sorted(self._waits)
            leaks = self._leaks()
            sizes = {}
            for pool in self._seen.values():
                size = configured_size(pool)
                if size is not None:
                    sizes[describe_pool(pool)] = size
            return PoolFigures(
                created=self._created + psy.get("connections_num", 0) - psy.get("connections_errors", 0),
                closed=self._closed + psy.get("connections_lost", 0) + psy.get("returns_bad", 0),
                invalidated=self._invalidated + psy.get("connections_lost", 0) + psy.get("returns_bad", 0),
                checkouts=self._checkouts + psy.get("requests_num", 0) - psy.get("requests_errors", 0),
                checkins=self._checkins,
                peak_checked_out=self._peak,
                overflow_used=sum(max(0, value) for value in self._overflow.values()),
                wait_ms_p50=round(percentile(waits, 50) * 1000, 3),
                wait_ms_p99=round(percentile(waits, 99) * 1000, 3),
                wait_ms_max=round((waits[-1] if waits else 0.0) * 1000, 3),
                timeouts=self._timeouts + psy.get("requests_errors", 0),
                leaks=leaks,
                pool_sizes=sizes,
            )

    def figures(self) -> PoolFigures:
        """The JSON-able record of this observation (live while active, frozen after stop)."""
        return self._frozen if self._frozen is not None else self._compute()

    def has_activity(self) -> bool:
        """True when any watched pool did anything while this observation was active."""
        if self._was_quiet:
            return False
        f = self.figures()
        return bool(f.created or f.closed or f.invalidated or f.checkouts or f.checkins
                    or f.timeouts or f.leaks)

    @property
    def created(self) -> int:
        """Connections opened."""
        return self.figures().created

    @property
    def closed(self) -> int:
        """Connections closed (invalidated ones included)."""
        return self.figures().closed

    @property
    def invalidated(self) -> int:
        """Connections invalidated, hard or soft."""
        return self.figures().invalidated

    @property
    def checkouts(self) -> int:
        """Connections handed out by the pools."""
        return self.figures().checkouts

    @property
    def checkins(self) -> int:
        """Connections given back to the pools."""
        return self.figures().checkins

    @property
    def peak_checked_out(self) -> int:
        """The most connections out at once."""
        return self.figures().peak_checked_out

    @property
    def overflow_used(self) -> int:
        """Connections used beyond the pools' base size, at their peak."""
        return self.figures().overflow_used

    @property
    def wait_ms_p50(self) -> float:
        """Median checkout wait in milliseconds."""
        return self.figures().wait_ms_p50

    @property
    def wait_ms_p99(self) -> float:
        """99th percentile checkout wait in milliseconds."""
        return self.figures().wait_ms_p99

    @property
    def wait_ms_max(self) -> float:
        """Longest checkout wait in milliseconds."""
        return self.figures().wait_ms_max

    @property
    def waits(self) -> list[float]:
        """Every checkout wait in seconds, in the order they happened."""
        with events._lock:
            return list(self._waits)

    @property
    def timeouts(self) -> int:
        """Checkouts that timed out waiting for a connection."""
        return self.figures().timeouts

    @property
    def leaks(self) -> list[Leak]:
        """Connections checked out while active and not returned (or dropped), with call sites."""
        return self.figures().leaks

    def __repr__(self) -> str:
        f = self.figures()
        return (f"<PoolObservation created={f.created} checkouts={f.checkouts} "
                f"peak_checked_out={f.peak_checked_out} leaks={len(f.leaks)}>")


def pool_stats(*targets: Any) -> PoolObservation:
    """A :class:`PoolObservation` of ``targets`` (engines, async engines, pools), or of every pool.

    Use as ``with pool_stats(engine) as stats:``. Raises TypeError for anything that is
    not an engine or a pool.
    """
    observation = PoolObservation(targets if targets else None)
    install_hooks()
    return observation
