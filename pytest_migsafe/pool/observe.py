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
  invalidated connection is closed too) and invalidated (hard or soft). ``created`` is the
  raw count: it depends on which test first used a shared pool (test order, selection,
  xdist worker); ``created_beyond_warm`` below does not. SQLAlchemy: the
  ``connect``, ``close``/``close_detached`` and ``invalidate``/``soft_invalidate`` events.
  psycopg_pool: ``get_stats()`` deltas (``connections_num - connections_errors``;
  invalidated = ``connections_lost + returns_bad``), closed = connections the pool closed.
- ``checkouts`` / ``checkins``: SQLAlchemy ``checkout``/``checkin`` events (a checkin
  made by the garbage collector counts); psycopg_pool: the connections ``getconn()``
  handed out (a request still waiting in the queue is none yet: ``requests_num`` counts it
  from its start) and ``putconn()`` calls.
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
- ``timeouts``: SQLAlchemy ``TimeoutError`` raised by the pool; psycopg_pool ``PoolTimeout``
  raised by ``getconn()`` (not its ``requests_errors``, which also counts ``TooManyRequests``
  rejections and requests to a closed pool).
- ``leaks``: connections checked out while the observation was active and not returned
  by its end, each with the call site of its checkout; also those returned only by the
  garbage collector (dropped without ``close()``), marked ``dropped``.

Figures added later to the record (:class:`PoolFigures`), beyond the ones above:

- ``created_beyond_warm``: connections opened that a pool already warm would have had to
  open too: beyond what the pool keeps between checkouts (QueuePool overflow; every
  connection of a NullPool or psycopg null pool), or replacing one invalidated during the
  observation. It depends only on what the observed code does: the same under any test
  order, selection and xdist distribution.
  ``cold_start_created = created - created_beyond_warm``: connections opened to reach a
  size the pool had never had in this process (or to refill it after a recycle, or an
  invalidation before the observation), paid by whichever test first uses the pool:
  ``created`` and it depend on the order. Rules: :mod:`pytest_migsafe.pool.events`.
- ``peak_checked_out_own``: the most connections checked out *during* the observation out
  at once (those already out at its start, say a fixture's, excluded);
  ``held_at_peak_own``: connections out since before the observation at that moment.
  ``peak_checked_out`` counts both.
- ``hold_ms_p50/_p95/_p99/_max``: how long each connection checked out and returned
  during the observation was held, checkout to checkin, in ms (nearest-rank over a
  histogram: :mod:`pytest_migsafe.pool.holds`); ``hold_times``: that histogram in its JSON
  form (:meth:`~pytest_migsafe.pool.holds.HoldTimes.to_dict`), which merges exactly.
- ``servers``: ``{pool name: "unix socket" | "loopback" | "in-process" | "network"}``,
  where each pool's server is: hold times against a local server are far below
  production (:mod:`pytest_migsafe.pool.sizing` says so).

An observation that saw nothing (never started, or no event on its pools while active)
says so: :attr:`PoolObservation.saw_nothing`, and reading its figures issues a
:class:`NothingObservedWarning` (through :data:`notice`, which the pytest plugin points at
a warning that never fails a test).
"""

from __future__ import annotations

import gc
import os
import sys
import warnings
import weakref
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_migsafe.percentiles import percentiles
from pytest_migsafe.pool import events
from pytest_migsafe.pool import psycopg as pool_psycopg
from pytest_migsafe.pool.events import Checkout
from pytest_migsafe.pool.holds import HoldTimes
from pytest_migsafe.pool.targets import classify, describe_pool, pool_facts
from pytest_migsafe.pool.targets import install as install_hooks
from pytest_migsafe.report.record import Leak, PoolFigures
from pytest_migsafe.units import milliseconds


@dataclass
class ObservedFigures(PoolFigures):
    """The figures of a pool observation: :class:`PoolFigures` (see the module docstring for
    each), with the hold-time histogram at hand (:meth:`holds`).

    :meth:`record` gives the plain :class:`PoolFigures` a test record holds.
    """

    def holds(self) -> HoldTimes:
        """The hold-time histogram (:class:`~pytest_migsafe.pool.holds.HoldTimes`)."""
        return HoldTimes.from_dict(self.hold_times) if self.hold_times else HoldTimes()

    def record(self) -> PoolFigures:
        """The :class:`PoolFigures` of a test record, valued as here (sharing the lists and dicts)."""
        figures = PoolFigures.__new__(PoolFigures)  # the fields as they are: no second __init__ of 24 fields
        figures.__dict__.update(self.__dict__)
        return figures


class _Capture:
    """What a pool observation reads at its stop, before anything else can change it: the
    checkouts that leaked, and each psycopg pool's counters (the pool as watched, at the start,
    at the stop)."""

    __slots__ = ("leaked", "psycopg")

    def __init__(self, leaked: list[Checkout], psycopg: list[PsycopgEnd]) -> None:
        self.leaked = leaked
        self.psycopg = psycopg

_QUIET = ObservedFigures()  # the frozen figures of every observation in which nothing happened
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConnectionLeakWarning(UserWarning):
    """A connection checked out in a test and not returned by its end (or returned only by the
    garbage collector), where nothing asked for a leak check: the message names the pool and the
    line that checked it out. A filter can name this class
    (``ignore::pytest_migsafe.ConnectionLeakWarning``); like every warning the plugin gives
    unasked it never fails a test, even under an ``error`` filter: ``migsafe_fail_on_leaks =
    true`` or ``@pytest.mark.pool(leaks=0)`` make a leak fail."""


class NothingObservedWarning(UserWarning):
    """Figures read from a pool observation that saw nothing: never started, or no
    checkout, checkin, new or closed connection on its pools while it was active."""


def _warn_plainly(warning: Warning, filename: str, lineno: int) -> None:
    warnings.warn_explicit(warning, type(warning), filename, lineno)


#: Issues a :class:`NothingObservedWarning` at ``(filename, lineno)`` of the code that read
#: the figures; the pytest plugin replaces it with one that never fails a test.
notice: Callable[[Warning, str, int], None] = _warn_plainly


def _reader_frame() -> tuple[str, int]:
    """``(filename, lineno)`` of the first caller outside pytest_migsafe."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


class _SeenPool:
    """A pool an observation saw do something: held weakly (an observation must not keep a
    disposed engine's pool, and with it the engine, alive until the test ends), with its
    name, size and server kind as first seen, for a pool gone by the time figures are read."""

    __slots__ = ("kind", "name", "ref", "size")

    def __init__(self, pool: Any) -> None:
        try:
            self.ref: Callable[[], Any] = weakref.ref(pool)
        except TypeError:  # a pool that cannot be weakly referenced is held
            self.ref = lambda: pool
        self.name, self.size, self.kind = pool_facts(pool)

    @classmethod
    def gone(cls, name: str, size: int | None, kind: str | None = None) -> _SeenPool:
        """A pool collected before it was seen: its name, size and server kind as known."""
        seen = cls.__new__(cls)
        seen.ref = lambda: None
        seen.name, seen.size, seen.kind = name, size, kind
        return seen

    def facts(self) -> tuple[str, int | None, str | None]:
        """``(name, configured size, server kind)``, read now if the pool is still alive (an
        engine named after the pool was first seen, a ``resize()``, the first connection)."""
        pool = self.ref()
        if pool is None:
            return self.name, self.size, self.kind
        return pool_facts(pool)


class _WatchedPsycopgPool:
    """A psycopg pool an observation counts: held weakly (a test that drops its pool and checks
    that it was collected must see it collected), with its counters at the start. psycopg_pool
    keeps its counters in a plain ``Counter`` of the pool (``_stats``); that object alone is
    held, so a pool collected before the stop still gives its last counts. ``pop_stats()``
    hands the counters out and starts a new ``Counter``: what it handed out is carried here
    (:meth:`popped`), so the counts run on across the reset. ``facts``: the pool's name, size
    and server kind as the registry knows them (:func:`~pytest_migsafe.pool.psycopg.facts_of`),
    for a pool collected before the figures are read."""

    __slots__ = ("base", "carried", "counters", "facts", "ref")

    def __init__(self, pool: Any, base: dict[str, int], counters: dict[str, int] | None = None) -> None:
        self.ref = weakref.ref(pool)
        self.facts = pool_psycopg.facts_of(pool)  # (the registry's list: no per-test look at the pool)
        self.base = base
        self.carried: dict[str, int] | None = None
        self.counters = counters if counters is not None else self._counters_of(pool)

    @staticmethod
    def _counters_of(pool: Any) -> dict[str, int] | None:
        counters = getattr(pool, "_stats", None)
        return counters if isinstance(counters, dict) else None

    def alive(self) -> Any:
        """The pool, or None once it was collected."""
        return self.ref()

    def unmoved(self) -> bool:
        """True when the pool's counters are those of the start (and no ``pop_stats()`` reset
        them since): a plain comparison of the pool's own mapping, no copy."""
        counters = self.counters
        if self.carried or counters is None:
            return False  # (a psycopg_pool without the mapping: worked out the long way)
        return counters == self.base  # type: ignore[no-any-return]

    def popped(self, pool: Any, stats: dict[str, int]) -> None:
        """``pool.pop_stats()`` just returned ``stats`` and reset the pool's counters."""
        carried = self.carried
        if carried is None:
            carried = self.carried = {}
        for key in pool_psycopg.COUNTERS:
            carried[key] = carried.get(key, 0) + stats.get(key, 0)
        self.counters = self._counters_of(pool)

    def now(self) -> dict[str, int]:
        """The pool's counters now (with those ``pop_stats()`` handed out since the start); its
        last ones if it was collected (the start's when unknown)."""
        pool = self.ref()
        if pool is not None:
            stats = pool_psycopg.counters_of(pool)
        elif self.counters is not None:
            stats = dict(self.counters)
        else:
            return self.base
        if self.carried:
            stats = {**stats, **{key: stats.get(key, 0) + n for key, n in self.carried.items()}}
        return stats


# (the pool as watched, its counters at the start, at the stop)
PsycopgEnd = tuple[_WatchedPsycopgPool, dict[str, int], dict[str, int]]


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
        self._lost: dict[int, int] = {}  # id(pool) -> connections closed below its warm size while active
        self._waits = array("d")
        self._overflow: dict[int, int] = {}
        self._seen: dict[int, _SeenPool] = {}  # id(pool) -> the pool, weakly, with its name and size
        self._psycopg_base: dict[int, _WatchedPsycopgPool] = {}  # id(pool) -> the pool, weakly, and its counters
        self._psycopg_gone: list[_WatchedPsycopgPool] = []  # watched pools collected whose id was reused

    # The counts and states start at these class-level values (one observation a test: an
    # instance stores its own only as it changes them)
    _created = _closed = _invalidated = 0
    _checkouts = _checkins = _timeouts = 0
    _current = _peak = 0
    _own_current = _own_peak = _held_at_own_peak = 0
    _beyond = 0
    _start_seq = 0
    _started = _active = _was_quiet = _warned = False
    _holds: HoldTimes | None = None  # made at the first hold: most tests have none
    _frozen: ObservedFigures | None = None
    _end: _Capture | None = None  # the state read at the stop (figures not worked out yet)
    #: The checkouts that leaked, as read at the stop, in the order of the figures' ``leaks``
    leaked_checkouts: Sequence[Checkout] = ()

    # -- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> PoolObservation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PoolObservation:
        """Begin receiving pool events (the driver hooks must be installed: see :func:`~pytest_migsafe.pool.targets.install`)."""
        if self._active or self._frozen is not None:
            raise RuntimeError("a PoolObservation can be started once")
        psycopg = pool_psycopg
        if self._psycopg_given:
            for psycopg_pool in self._psycopg_given:
                psycopg.register(psycopg_pool, fresh=False)
        with events._lock:
            self._start_seq = events._seq
            out = events._out
            if out:  # connections out already (a fixture's): of the pools watched
                self._current = self._peak = len(out) if self._all else sum(
                    1 for entry in out.values() if self._wants(entry.pool))
            pools = psycopg.registered() if self._all else self._psycopg_given
            if pools:
                watched = self._psycopg_base  # (empty: no pool is watched yet)
                for psycopg_pool in pools:
                    counters, base = psycopg.counters_and_copy(psycopg_pool)
                    watched[id(psycopg_pool)] = _WatchedPsycopgPool(psycopg_pool, base, counters)
            self._active = self._started = True
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
            if self._was_quiet:
                self._frozen = _QUIET
            else:  # what changes after the stop is read now; the figures are worked out when read
                self._end = self._capture()
                self.leaked_checkouts = self._end.leaked
            if not events._observers and not events._leak_watches:
                events._dropped.clear()

    def psycopg_pool_added(self, psycopg_pool: Any, fresh: bool) -> None:
        """A psycopg pool became known while active: count it from now (or from its creation)."""
        if not (self._all or self._wants(psycopg_pool)):
            return
        watched = self._psycopg_base.get(id(psycopg_pool))
        if watched is None or watched.alive() is not psycopg_pool:
            self._watch_psycopg(psycopg_pool, {} if fresh else pool_psycopg.counters_of(psycopg_pool))

    def psycopg_stats_popped(self, psycopg_pool: Any, stats: dict[str, int]) -> None:
        """``psycopg_pool.pop_stats()`` reset the pool's counters (called under ``events._lock``)."""
        watched = self._psycopg_base.get(id(psycopg_pool))
        if watched is not None and watched.alive() is psycopg_pool:
            watched.popped(psycopg_pool, stats)

    def _watch_psycopg(self, psycopg_pool: Any, base: dict[str, int],
                       counters: dict[str, int] | None = None) -> None:
        key = id(psycopg_pool)
        earlier = self._psycopg_base.get(key)
        if earlier is not None and earlier.alive() is not psycopg_pool:
            self._psycopg_gone.append(earlier)  # a collected pool whose id the new one took
        self._psycopg_base[key] = _WatchedPsycopgPool(psycopg_pool, base, counters)

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
    def _psycopg_ends(self) -> list[PsycopgEnd]:
        """Each watched psycopg pool, its counters at the start and now."""
        if not self._psycopg_base:
            return []
        return [(watched, watched.base, watched.now())
                for watched in [*self._psycopg_gone, *self._psycopg_base.values()]]

    def _psycopg_deltas(self, ends: list[PsycopgEnd] | None = None) -> dict[str, int]:
        totals: dict[str, int] = {}
        for watched, base, end in self._psycopg_ends() if ends is None else ends:
            delta = pool_psycopg.delta(base, end)  # the counters that moved
            if delta:
                self._see_psycopg(watched)
            for key, value in delta.items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def _open(self, owned: bool = False) -> list[Checkout]:
        """Connections checked out while active and still out (with ``owned``, those a Session holds too)."""
        with events._lock:
            return [entry for entry in events._out.values()
                    if entry.origin > self._start_seq and not entry.dropped and self._wants(entry.pool)
                    and (owned or not entry.owned())]

    def _leaked(self) -> list[Checkout]:
        """The checkouts that leaked so far: still out (no Session holds them), or dropped."""
        with events._lock:
            gone = [entry for entry in events._dropped
                    if entry.origin > self._start_seq and self._wants(entry.pool)]
            out = self._open() if events._out else []
        if not gone and not out:
            return []
        return sorted([*out, *gone], key=lambda entry: entry.seq)

    def _capture(self) -> _Capture:
        return _Capture(self._leaked(), self._psycopg_ends())

    @property
    def leaked(self) -> int:
        """Connections leaked: checked out while active and not returned (or dropped).

        Cheaper than :attr:`leaks` (no figures are worked out); live while active."""
        end = self._end
        if end is not None:
            return len(end.leaked)
        if self._frozen is not None or not self._started:
            return len(self.snapshot().leaks)
        return len(self._leaked())

    def _see(self, pool: Any) -> None:
        """Note that ``pool`` did something while active (called under ``events._lock``)."""
        key = id(pool)
        seen = self._seen.get(key)
        if seen is None or seen.ref() is not pool:  # new, or another pool at a reused id
            self._seen[key] = _SeenPool(pool)

    def _see_psycopg(self, watched: _WatchedPsycopgPool) -> None:
        """:meth:`_see` of a watched psycopg pool, alive or collected (then as it was watched)."""
        pool = watched.alive()
        if pool is not None:
            self._see(pool)
        elif id(watched) not in self._seen:
            self._seen[id(watched)] = _SeenPool.gone(*watched.facts)

    def server_known(self, pool: Any, kind: str) -> None:
        """``pool``'s server kind became known (its first connection): kept for the pool as seen
        or watched, which may be collected before the figures are read (an engine disposed in
        the test, a psycopg pool closed and dropped)."""
        seen = self._seen.get(id(pool))
        if seen is not None and seen.kind is None and seen.ref() is pool:
            seen.kind = kind
        watched = self._psycopg_base.get(id(pool))
        if watched is not None and watched.alive() is pool and watched.facts[2] is None:
            watched.facts[2] = kind

    def _quiet(self) -> bool:
        """Nothing happened at all (the common case of a test without a database, or one whose
        pools sat idle): skip the sums."""
        if not (events._seq == self._start_seq and not self._seen and not self._waits
                and not (self._created or self._closed or self._invalidated or self._checkins
                         or self._timeouts) and not events._dropped and not self._psycopg_gone):
            return False
        return all(watched.unmoved() for watched in self._psycopg_base.values())

    def _compute(self, end: _Capture | None = None) -> ObservedFigures:
        with events._lock:
            if end is None:
                end = self._capture()
            psy = self._psycopg_deltas(end.psycopg)
            waits = self._waits
            if waits:
                wait_p50, wait_p99, wait_max = map(milliseconds, percentiles(waits, (50, 99, 100)))
            else:
                wait_p50 = wait_p99 = wait_max = 0.0
            leaks = [Leak(pool=describe_pool(entry.pool), call_site=entry.site or "<unknown>",
                          dropped=entry.dropped) for entry in end.leaked] if end.leaked else []
            sizes = {}
            servers = {}
            for seen in self._seen.values():
                name, size, kind = seen.facts()
                if size is not None:
                    sizes[name] = size
                if kind is not None:
                    servers[name] = kind
            holds = self._holds
            if holds is None:  # no connection returned while active
                hold_p50 = hold_p95 = hold_p99 = hold_max = 0.0
                hold_times: dict[str, Any] = {}
            else:
                hold_p50, hold_p95, hold_p99 = holds.percentiles_ms((50, 95, 99))
                hold_max = holds.max_ms
                hold_times = holds.to_dict() if holds.count else {}
            if psy:  # a psycopg pool's counters moved
                moved = psy.get
                psy_created = moved("connections_num", 0) - moved("connections_errors", 0)
                psy_closed = moved("connections_lost", 0) + moved("returns_bad", 0)
            else:
                psy_created = psy_closed = 0
            created = self._created + psy_created
            beyond = min(self._beyond, created)
            overflow = self._overflow
            # every field given, in one dict (not a dataclass __init__ of 24 keyword arguments)
            figures = ObservedFigures.__new__(ObservedFigures)
            figures.__dict__ = {
                "created": created,
                "closed": self._closed + psy_closed,
                "invalidated": self._invalidated + psy_closed,
                "checkouts": self._checkouts,
                "checkins": self._checkins,
                "peak_checked_out": self._peak,
                "overflow_used": sum([max(0, value) for value in overflow.values()]) if overflow else 0,
                "wait_ms_p50": wait_p50,
                "wait_ms_p99": wait_p99,
                "wait_ms_max": wait_max,
                "timeouts": self._timeouts,
                "leaks": leaks,
                "pool_sizes": sizes,
                "cold_start_created": created - beyond,
                "created_beyond_warm": beyond,
                "peak_checked_out_own": self._own_peak,
                "held_at_peak_own": self._held_at_own_peak,
                "hold_ms_p50": hold_p50,
                "hold_ms_p95": hold_p95,
                "hold_ms_p99": hold_p99,
                "hold_ms_max": hold_max,
                "hold_times": hold_times,
                "servers": servers,
            }
            return figures

    def snapshot(self) -> ObservedFigures:
        """The figures without the :class:`NothingObservedWarning` (live while active, frozen
        after stop; empty for an observation never started)."""
        if self._frozen is not None:
            return self._frozen
        if not self._started:
            return _QUIET
        if self._end is not None:  # stopped: the figures are worked out once, from the state at the stop
            self._frozen = self._compute(self._end)
            self._end = None
            return self._frozen
        return self._compute()

    def figures(self) -> ObservedFigures:
        """The figures of this observation (live while active, frozen after stop); warns
        (:class:`NothingObservedWarning`, once) when it saw nothing (:attr:`saw_nothing`)."""
        if not self._warned and self.saw_nothing:
            self._warned = True
            filename, lineno = _reader_frame()
            notice(NothingObservedWarning(self._nothing_message()), filename, lineno)
        return self.snapshot()

    @property
    def was_quiet(self) -> bool:
        """True once stopped if nothing at all happened while it was active: no event of any
        pool, no psycopg pool's counters moved (its figures are all zero, worked out with no look).
        False while active, and after a stop that saw anything (then see :meth:`has_activity`)."""
        return self._was_quiet

    def has_activity(self) -> bool:
        """True when any watched pool did anything while this observation was active."""
        if self._was_quiet or not self._started:
            return False
        f = self.snapshot()
        return bool(f.created or f.closed or f.invalidated or f.checkouts or f.checkins
                    or f.timeouts or f.leaks)

    @property
    def saw_nothing(self) -> bool:
        """True when this observation measured nothing: it was never started, or no watched
        pool checked a connection out or in, opened, closed or invalidated one, or waited,
        while it was active. Its figures are then zeros that say nothing about the code."""
        if not self._started:
            return True
        if self._was_quiet:
            return True
        with events._lock:
            if self._seen or self._waits:
                return False
            if self._psycopg_base and self._active:
                self._psycopg_deltas()  # marks the psycopg pools that did something
            return not self._seen

    def _names(self) -> str:
        if self._all:
            return "any pool"
        names = [describe_pool(engine.pool) for engine in self._engines]
        names += [describe_pool(pool) for pool in self._given]
        return ", ".join(names)

    def _nothing_message(self) -> str:
        if not self._started:
            return (f"migsafe: pool_stats({self._names()}) was never started, so it saw nothing: "
                    f"its figures are zeros; use 'with pool_stats(...) as stats:' around the work")
        return (f"migsafe: pool_stats({self._names()}) saw nothing: no connection was checked out, "
                f"returned, opened or closed while it was active, so its figures are zeros; was "
                f"the work done before it started, or on another engine or pool?")

    @property
    def created(self) -> int:
        """Connections opened (raw: a pool's cold start included, so it depends on test order)."""
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
    def created_beyond_warm(self) -> int:
        """Connections opened that a warm pool would have opened too (order-independent)."""
        return self.figures().created_beyond_warm

    @property
    def cold_start_created(self) -> int:
        """Connections opened to warm a pool up (``created - created_beyond_warm``; order-dependent)."""
        return self.figures().cold_start_created

    @property
    def peak_checked_out_own(self) -> int:
        """The most connections checked out during the observation out at once."""
        return self.figures().peak_checked_out_own

    @property
    def hold_ms_p50(self) -> float:
        """Median hold time (checkout to checkin) in milliseconds."""
        return self.figures().hold_ms_p50

    @property
    def hold_ms_p95(self) -> float:
        """95th percentile hold time in milliseconds (the W pool sizing uses)."""
        return self.figures().hold_ms_p95

    @property
    def hold_ms_p99(self) -> float:
        """99th percentile hold time in milliseconds."""
        return self.figures().hold_ms_p99

    @property
    def hold_ms_max(self) -> float:
        """Longest hold time in milliseconds."""
        return self.figures().hold_ms_max

    @property
    def holds(self) -> HoldTimes:
        """The hold-time histogram (a copy)."""
        return self.figures().holds()

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
        f = self.snapshot()
        return (f"<PoolObservation created={f.created} checkouts={f.checkouts} "
                f"peak_checked_out={f.peak_checked_out} leaks={len(f.leaks)}>")


class LeakWatch:
    """Connections checked out while it is active and not returned by its end, and those the
    garbage collector returned (dropped), on every pool: the leak check of a test at the
    plugin's defaults, which reads no other figure.

    It is not an observer: while only leak watches are active, a pool event costs what it
    costs with nothing observed, plus the checkout's call site. A connection a live ORM
    Session holds is not a leak (see :meth:`PoolObservation.stop`).
    """

    def __init__(self) -> None:
        with events._lock:
            self._start_seq = events._seq
            events._leak_watches += 1
        self._active = True
        self.leaks: list[Leak] = []
        self.leaked_checkouts: Sequence[Checkout] = ()  # the checkouts of ``leaks``, in their order

    def stop(self, settle: bool = False) -> list[Leak]:
        """Stop watching; the leaks (also in :attr:`leaks`), oldest checkout first. ``settle``:
        one full garbage collection first when a connection is still out (see
        :meth:`PoolObservation.stop`)."""
        if not self._active:
            return self.leaks
        start = self._start_seq
        checked_out = events._seq != start  # else no checkout since the start: nothing can have leaked
        if settle and checked_out and any(entry.origin > start and not entry.dropped
                                          for entry in list(events._out.values())):
            gc.collect()
        with events._lock:
            self._active = False
            events._leak_watches -= 1
            leaked = []
            if events._seq != start:  # (read again under the lock)
                if events._out:
                    leaked = [entry for entry in events._out.values()
                              if entry.origin > start and not entry.dropped and not entry.owned()]
                if events._dropped:
                    leaked += [entry for entry in events._dropped if entry.origin > start]
            if events._dropped and not events._observers and not events._leak_watches:
                events._dropped.clear()
        if leaked:
            leaked.sort(key=lambda entry: entry.seq)
            self.leaked_checkouts = leaked
            self.leaks = [Leak(pool=describe_pool(entry.pool), call_site=entry.site or "<unknown>",
                               dropped=entry.dropped) for entry in leaked]
        return self.leaks


def pool_stats(*targets: Any) -> PoolObservation:
    """A :class:`PoolObservation` of ``targets`` (engines, async engines, pools), or of every pool.

    Use as ``with pool_stats(engine) as stats:``. Raises TypeError for anything that is
    not an engine or a pool.
    """
    observation = PoolObservation(targets if targets else None)
    install_hooks()
    return observation
