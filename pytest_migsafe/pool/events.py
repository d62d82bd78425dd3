"""The pool events the driver hooks report, and the state every observation reads.

:mod:`pytest_migsafe.pool.sqlalchemy` and :mod:`pytest_migsafe.pool.psycopg` call these
functions; each active :class:`~pytest_migsafe.pool.observe.PoolObservation` (in
``_observers``) that watches the pool gets the event. Connections out of their pool are
kept in ``_out`` whether observed or not, so an observation started later knows what is
already out. ``created_listeners`` get every new connection (the Prometheus counter of
:mod:`pytest_migsafe.pool.metrics` adds itself there).
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_migsafe.queries.callsite import call_site

if TYPE_CHECKING:
    from pytest_migsafe.pool.observe import PoolObservation

_lock = threading.RLock()
_observers: tuple[PoolObservation, ...] = ()
_out: dict[int, Checkout] = {}  # id(record or connection) -> its checkout
_dropped: list[Checkout] = []  # returned by the garbage collector while observed
_seq = 0  # checkouts ever seen; an observation's leaks have seq > its start
created_listeners: list[Callable[[Any], None]] = []  # called with the pool of every new connection


class Checkout:
    """One connection out of its pool: which pool, from where, and in what order."""

    __slots__ = ("dropped", "holder", "owner", "pool", "seq", "site")

    def __init__(self, pool: Any, site: str | None, seq: int, holder: Any) -> None:
        self.pool = pool
        self.site = site
        self.seq = seq
        self.holder = holder  # keeps the key's object alive, or a weakref to it
        self.dropped = False
        self.owner: Any = None  # a weakref to the ORM Session that holds the connection, if one does

    def owned(self) -> bool:
        """True while a live ORM Session holds this connection (it returns it at its commit or close)."""
        owner = self.owner
        return owner is not None and owner() is not None


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


def connection_created(pool: Any, observed: bool = True) -> None:
    """A new DBAPI connection was opened for ``pool`` (``observed=False``: metrics only)."""
    for listener in created_listeners:
        listener(pool)
    if not observed or not _observers:
        return
    with _lock:
        for obs in _observers:
            if obs._all or obs._wants(pool):
                obs._created += 1
                obs._seen[id(pool)] = pool


def connection_closed(pool: Any) -> None:
    """A connection of ``pool`` was closed."""
    if not _observers:
        return
    with _lock:
        for obs in _observers:
            if obs._all or obs._wants(pool):
                obs._closed += 1
                obs._seen[id(pool)] = pool


def connection_invalidated(pool: Any) -> None:
    """A connection of ``pool`` was invalidated (hard or soft)."""
    if not _observers:
        return
    with _lock:
        for obs in _observers:
            if obs._all or obs._wants(pool):
                obs._invalidated += 1
                obs._seen[id(pool)] = pool


def checked_out(key: int, holder: Any, pool: Any, counted: bool = True) -> None:
    """A connection (``key``: id of its record or connection) left ``pool``."""
    global _seq
    site = None
    if _observers:
        site = call_site(sys._getframe(1))
        if site == "<unknown>":
            site = _site_outside_greenlet()
    with _lock:
        _seq += 1
        again = key in _out  # StaticPool hands its one record out again
        _out[key] = Checkout(pool, site, _seq, holder)
        for obs in _observers:
            if obs._all or obs._wants(pool):
                if counted:
                    obs._checkouts += 1
                if not again:
                    obs._current += 1
                    if obs._current > obs._peak:
                        obs._peak = obs._current
                obs._seen[id(pool)] = pool


def checked_in(key: int, pool: Any, counted: bool = True) -> None:
    """A connection came back to ``pool`` (``counted=False``: detached, not a checkin).

    ``pool`` None: the pool of its checkout, if that was seen.
    """
    with _lock:
        entry = _out.pop(key, None)
        if pool is None:
            if entry is None:
                return
            pool = entry.pool
        for obs in _observers:
            if obs._all or obs._wants(pool):
                if counted:
                    obs._checkins += 1
                if entry is not None and obs._current > 0:
                    obs._current -= 1
                obs._seen[id(pool)] = pool


def dropped(key: int, gone: bool = False) -> None:
    """The connection ``key`` was dropped without being returned; the GC cleans it up.

    ``gone=True`` when no checkin will follow (a psycopg connection that was collected).
    """
    with _lock:
        entry = _out.pop(key, None) if gone else _out.get(key)
        if entry is None:
            return
        entry.dropped = True
        if _observers:
            _dropped.append(entry)
        if gone:
            for obs in _observers:
                if (obs._all or obs._wants(entry.pool)) and obs._current > 0:
                    obs._current -= 1


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
    with _lock:
        for obs in _observers:
            if obs._all or obs._wants(pool):
                obs._waits.append(seconds)
                if timed_out:
                    obs._timeouts += 1


def overflow_seen(pool: Any, overflow: int) -> None:
    """``pool`` was seen with ``overflow`` connections beyond its base size."""
    with _lock:
        for obs in _observers:
            if obs._all or obs._wants(pool):
                key = id(pool)
                if overflow > obs._overflow.get(key, 0):
                    obs._overflow[key] = overflow


