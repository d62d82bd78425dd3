"""The pool events the driver hooks report, and the state every observation reads.

:mod:`pytest_migsafe.pool.sqlalchemy` and :mod:`pytest_migsafe.pool.psycopg` call these
functions; each active :class:`~pytest_migsafe.pool.observe.PoolObservation` (in
``_observers``) that watches the pool gets the event. Connections out of their pool are
kept in ``_out`` whether observed or not, so an observation started later knows what is
already out. ``created_listeners`` get every new connection (the Prometheus counter of
:mod:`pytest_migsafe.pool.metrics` adds itself there).

Each pool's warmth is kept for the whole process (``_warmth``: connections open now, and
the most ever open), so that every new connection can be told apart as one of:

- **cold start**: the pool grows to a size it never had in this process, up to what it
  keeps between checkouts (its capacity: QueuePool ``pool_size``, psycopg_pool
  ``max_size``, 1 for StaticPool, 0 for NullPool); or it refills itself after losing a
  connection it did not lose to the observed code (``pool_recycle``, ``max_lifetime``, an
  invalidation before the observation began). Whichever test first uses a pool pays it,
  so it depends on the order, selection and distribution of the tests;
- **beyond warm**: a connection a pool already warm would have had to open as well: one
  beyond the pool's capacity (QueuePool overflow, every connection of a NullPool or a
  psycopg null pool), or the replacement of a connection invalidated during the same
  observation (SQLAlchemy ``invalidate``/``soft_invalidate``). It depends only on what
  the observed code does, never on which test ran first.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import TYPE_CHECKING, Any

from pytest_migsafe.pool.holds import HoldTimes
from pytest_migsafe.queries.callsite import call_site, site_from

if TYPE_CHECKING:
    from pytest_migsafe.pool.observe import PoolObservation

_lock = threading.RLock()
_observers: tuple[PoolObservation, ...] = ()
_out: dict[int, Checkout] = {}  # id(record or connection) -> its checkout
_dropped: list[Checkout] = []  # returned by the garbage collector while observed
_leak_watches = 0  # active observe.LeakWatch-es: checkouts need their call site, dropped ones are kept
_seq = 0  # checkouts ever seen; an observation's leaks have seq > its start
# pytest fixtures being set up now (see fixture_setup_began): a connection checked out meanwhile
# is the fixture's, which returns it at its teardown, never a leak of the test that asked for it
_fixture_setups = 0
_continued: tuple[int, bool] | None = None  # (origin, fixture) of a checkout being continued: see reconnecting
# The events of every pool since the process began, observed or not (under _lock): what a
# PoolTally reads at its start and stop. Each counts what an observation of every pool counts.
_created_total = _closed_total = _invalidated_total = 0
_checkouts_total = _checkins_total = _timeouts_total = 0


def totals() -> tuple[int, int, int, int, int, int]:
    """``(created, closed, invalidated, checkouts, checkins, timeouts)`` of every pool since the
    process began, as the driver hooks reported them (SQLAlchemy's connections, checkouts and
    checkins; psycopg_pool's checkouts, checkins, timeouts and the closes its stats do not count:
    its new and lost connections are in :func:`pytest_migsafe.pool.psycopg.totals`). Counts."""
    with _lock:
        return (_created_total, _closed_total, _invalidated_total, _checkouts_total, _checkins_total,
                _timeouts_total)


@contextmanager
def reconnecting(previous: Checkout | None) -> Iterator[None]:
    """Around a holder's reconnection (a SQLAlchemy ``Connection`` after an invalidation): the
    checkout made inside continues ``previous`` (the holder's checkout before, or None), so a
    leak check reads it as that one: a fixture's connection that the test invalidated and
    reconnected is still the fixture's."""
    global _continued
    if previous is None:
        yield
        return
    before, _continued = _continued, (previous.origin, previous.fixture)
    try:
        yield
    finally:
        _continued = before


def fixture_setup_began() -> None:
    """A pytest fixture's set-up began (``request.getfixturevalue()`` in a test's body too):
    the connections checked out until :func:`fixture_setup_ended` belong to the fixture
    (:meth:`Checkout.owned`)."""
    global _fixture_setups
    _fixture_setups += 1


def fixture_setup_ended() -> None:
    """The fixture set-up of :func:`fixture_setup_began` ended (raised or not)."""
    global _fixture_setups
    _fixture_setups = max(0, _fixture_setups - 1)


created_listeners: list[Callable[[Any], None]] = []  # called with the pool of every new connection
# pool -> [connections open now, the most ever open]: kept for the process, observed or not
_warmth: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()
# pool -> where its server is (pool.locality): read at its first new connection
servers: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def note_server(pool: Any, connection: Any) -> None:
    """Remember where ``pool``'s server is, from one of its new connections (once per pool)."""
    try:
        if pool in servers:
            return
        from pytest_migsafe.pool.locality import kind_of_connection

        kind = kind_of_connection(connection)
        if kind is not None:
            servers[pool] = kind
            for obs in _observers:  # (a pool they saw before its first connection, and may outlive)
                obs.server_known(pool, kind)
    except Exception:  # a pool that cannot be weakly referenced, a driver that will not say
        return


class Checkout:
    """One connection out of its pool: which pool, from where, in what order, since when.

    ``t0``: ``time.perf_counter()`` at the checkout (seconds), for the hold time.
    """

    __slots__ = ("dropped", "fixture", "holder", "origin", "owner", "pool", "seq", "site", "t0")

    def __init__(self, pool: Any, site: str | None, seq: int, holder: Any) -> None:
        self.pool = pool
        self.site = site
        self.seq = seq
        # the checkout whose holder this one continues (a Connection reconnecting after an
        # invalidation: see reconnecting), whose seq a leak check compares; else this one
        self.origin = seq
        self.holder = holder  # keeps the key's object alive, or a weakref to it
        self.dropped = False
        self.owner: Any = None  # a weakref to the ORM Session that holds the connection, if one does
        self.fixture = _fixture_setups > 0  # checked out while a pytest fixture was being set up
        self.t0 = perf_counter()
        if _continued is not None:
            self.origin, fixture = _continued
            self.fixture = self.fixture or fixture

    def owned(self) -> bool:
        """True while a live ORM Session holds this connection: the transaction it began on it
        has not ended (a Session returns the connection it checked out at its commit or
        close; one bound to a connection the code checked out, ``Session(bind=connection)``,
        leaves it out after them: the code's own again); and for a connection checked out while
        a pytest fixture was being set up (:func:`fixture_setup_began`), which the fixture returns at
        its teardown."""
        if self.fixture:
            return True
        owner = self.owner
        session = owner() if owner is not None else None
        if session is None:
            return False
        try:
            return session.get_transaction() is not None
        except Exception:  # a Session in a state not foreseen: taken as holding it (never a false leak)
            return True


# -- events, called by the driver hooks ---------------------------------------------
def _site_outside_greenlet() -> str:
    """The user's call site when an asyncio engine runs pool code in a greenlet.

    SQLAlchemy's asyncio layer runs the sync pool code in a child greenlet; the user's
    coroutine frames are on the stack of the greenlet that switched to it.
    """
    module = sys.modules.get("greenlet")
    if module is None:
        return "<unknown>"
    parent = module.getcurrent().parent
    while parent is not None:
        frame = parent.gr_frame
        if frame is not None:
            site = call_site(frame)
            if site != "<unknown>":
                return site
        parent = parent.parent
    return "<unknown>"


def _warmth_of(pool: Any) -> list[int] | None:
    """``[open now, most ever open]`` of ``pool`` (None for a pool that cannot be weakly referenced)."""
    try:
        state = _warmth.get(pool)
        if state is None:
            state = _warmth[pool] = [0, 0]
    except TypeError:
        return None
    return state


def connection_created(pool: Any, capacity: float | None = None, observed: bool = True) -> None:
    """A new DBAPI connection was opened for ``pool`` (``observed=False``: not counted as
    created here, the caller counts it another way, such as psycopg_pool's ``get_stats()``).

    ``capacity``: the connections ``pool`` keeps between checkouts (``math.inf`` or None:
    no limit); it tells a cold start from a connection made beyond warm (module docstring).
    """
    global _created_total
    for listener in created_listeners:
        listener(pool)
    with _lock:
        if observed:
            _created_total += 1
        state = _warmth_of(pool)
        warm: float
        if state is None:
            opened_before, warm = 0, 0
        else:
            opened_before = state[0]
            warm = state[1] if capacity is None else min(capacity, state[1])
            state[0] += 1
            if state[0] > state[1]:
                state[1] = state[0]
        if not _observers:
            return
        beyond_capacity = capacity is not None and opened_before >= capacity
        for obs in _observers:
            if obs._all or obs._wants(pool):
                if observed:
                    obs._created += 1
                key = id(pool)
                if beyond_capacity:
                    obs._beyond += 1
                elif opened_before < warm and obs._lost.get(key, 0) > 0:
                    obs._lost[key] -= 1  # replaces one invalidated while observed
                    obs._beyond += 1
                obs._see(pool)


def connection_closed(pool: Any, observed: bool = True, left_pool: bool = True) -> None:
    """A connection of ``pool`` was closed (``observed=False``: only the pool's warmth is
    updated, the caller counts the close another way; ``left_pool=False``: it had already
    left the pool, detached, and no longer counted in its warmth)."""
    global _closed_total
    with _lock:
        if observed:
            _closed_total += 1
        if left_pool:
            try:
                state = _warmth.get(pool)
            except TypeError:  # a pool that cannot be weakly referenced
                state = None
            if state is not None and state[0] > 0:
                state[0] -= 1
        if not observed or not _observers:
            return
        for obs in _observers:
            if obs._all or obs._wants(pool):
                obs._closed += 1
                obs._see(pool)


def connection_invalidated(pool: Any) -> None:
    """A connection of ``pool`` was invalidated (hard or soft): each active observation of
    ``pool`` charges the connection that replaces it, if it opens while the observation is
    still active, as made beyond warm (one opened later belongs to a cold start)."""
    global _invalidated_total
    with _lock:
        _invalidated_total += 1
        for obs in _observers:
            if obs._all or obs._wants(pool):
                key = id(pool)
                obs._invalidated += 1
                obs._lost[key] = obs._lost.get(key, 0) + 1
                obs._see(pool)


def checked_out(key: int, holder: Any, pool: Any, counted: bool = True) -> None:
    """A connection (``key``: id of its record or connection) left ``pool``."""
    global _seq, _checkouts_total
    site = None
    if _observers or _leak_watches:
        site = site_from(sys._getframe(2), False)  # call_site_of_caller(1, CHECKOUT), one call less
        if site == "<unknown>":
            site = _site_outside_greenlet()
    with _lock:
        _seq += 1
        if counted:
            _checkouts_total += 1
        previous = _out.get(key)  # StaticPool hands its one record out again
        entry = _out[key] = Checkout(pool, site, _seq, holder)
        for obs in _observers:
            if obs._all or obs._wants(pool):
                if counted:
                    obs._checkouts += 1
                if previous is None:
                    obs._current += 1
                    obs._own_current += 1
                elif previous.seq <= obs._start_seq:  # out since before, now the observed code's own
                    obs._own_current += 1
                else:
                    entry.t0 = previous.t0  # the same hold goes on
                if obs._current > obs._peak:
                    obs._peak = obs._current
                if obs._own_current > obs._own_peak:
                    obs._own_peak = obs._own_current
                    obs._held_at_own_peak = obs._current - obs._own_current
                obs._see(pool)


def checked_in(key: int, pool: Any, counted: bool = True) -> None:
    """A connection came back to ``pool`` (``counted=False``: detached, not a checkin).

    ``pool`` None: the pool of its checkout, if that was seen. The hold time (checkout to
    checkin) of a connection checked out while an observation was active goes to it.
    """
    global _checkins_total
    with _lock:
        entry = _out.pop(key, None)
        if pool is None:
            if entry is None:
                return
            pool = entry.pool
        if counted:
            _checkins_total += 1
        if not _observers:
            return
        held = perf_counter() - entry.t0 if entry is not None else 0.0
        for obs in _observers:
            if obs._all or obs._wants(pool):
                if counted:
                    obs._checkins += 1
                if entry is not None:
                    if obs._current > 0:
                        obs._current -= 1
                    if entry.seq > obs._start_seq:
                        if obs._own_current > 0:
                            obs._own_current -= 1
                        if not entry.dropped:  # a hold that only the garbage collector ended is no hold
                            holds = obs._holds
                            if holds is None:
                                holds = obs._holds = HoldTimes()
                            holds.add(held)
                obs._see(pool)


def dropped(key: int, gone: bool = False, holder: Any = None) -> None:
    """The connection ``key`` was dropped without being returned; the GC cleans it up.

    ``gone=True`` when no checkin will follow (a psycopg connection, or a StaticPool
    checkout's proxy, that was collected); ``holder``: only if the checkout out under
    ``key`` is the one held by ``holder`` (a key is an ``id()``, which a later checkout
    may have taken).
    """
    with _lock:
        entry = _out.get(key)
        if entry is None or (holder is not None and entry.holder is not holder):
            return
        if gone:
            del _out[key]
        entry.dropped = True
        if _observers or _leak_watches:
            _dropped.append(entry)
        if gone:
            for obs in _observers:
                if (obs._all or obs._wants(entry.pool)) and obs._current > 0:
                    obs._current -= 1
                    if entry.seq > obs._start_seq and obs._own_current > 0:
                        obs._own_current -= 1


def still_leaked(checkouts: list[Checkout]) -> list[Checkout]:
    """Those of ``checkouts`` whose connection is still out (not returned since), or was
    dropped (returned only by the garbage collector)."""
    with _lock:
        out = {id(entry) for entry in _out.values()}
    return [checkout for checkout in checkouts if checkout.dropped or id(checkout) in out]


def owned_by(key: int, owner: Any) -> None:
    """The connection ``key`` is held by ``owner`` (an ORM Session; kept as a weak reference)."""
    entry = _out.get(key)
    if entry is not None:
        try:
            entry.owner = weakref.ref(owner)
        except TypeError:  # an owner that cannot be weakly referenced: not known as one
            return


def waited(pool: Any, seconds: float, timed_out: bool = False) -> None:
    """A checkout attempt on ``pool`` took ``seconds`` (and timed out, or not)."""
    global _timeouts_total
    with _lock:
        if timed_out:
            _timeouts_total += 1
        for obs in _observers:
            if obs._all or obs._wants(pool):
                obs._waits.append(seconds)
                if timed_out:
                    obs._timeouts += 1


def timed_out_unobserved() -> None:
    """A checkout attempt timed out while no observation was active (the driver hook times
    attempts only for an observation): counted in :func:`totals` alone."""
    global _timeouts_total
    with _lock:
        _timeouts_total += 1


def overflow_seen(pool: Any, overflow: int) -> None:
    """``pool`` was seen with ``overflow`` connections beyond its base size."""
    with _lock:
        for obs in _observers:
            if obs._all or obs._wants(pool):
                key = id(pool)
                if overflow > obs._overflow.get(key, 0):
                    obs._overflow[key] = overflow


