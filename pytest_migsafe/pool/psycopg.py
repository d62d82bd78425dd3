"""Report psycopg_pool pools to :mod:`pytest_migsafe.pool.events`.

Counters come from ``get_stats()`` deltas (a counter missing from the stats reads 0).
Wrappers on ``ConnectionPool`` and ``AsyncConnectionPool`` (their null-pool subclasses
inherit them) add what the stats cannot tell:

- ``__init__`` registers every pool created, in a WeakSet; a pool created before the
  hooks is registered at its first ``getconn`` (never by scanning the heap, which would
  evaluate objects migsafe does not own, such as Django's lazy settings);
- ``getconn`` / ``putconn`` count each checkout when ``getconn()`` hands the connection
  out (not ``requests_num``, which counts a request still waiting in the queue) and each
  checkin, track each connection out of its pool (peak, leaks with the call site) and
  time every ``getconn`` (the checkout wait);
- ``_close_connection`` counts the connections the pool closes, except those it closes
  while resetting a returned connection (``_reset_connection``: a ``reset=`` callback that
  raised, a failed rollback, a connection returned mid-operation): the pool then finds
  them closed and counts them itself (``returns_bad``, or ``connections_lost``), which
  ``closed`` already adds; ``_connect`` feeds the Prometheus counter of new connections;
- ``pop_stats`` (on psycopg_pool's ``BasePool``) tells the observations what it reset:
  it hands out the counters and starts the pool on a new, empty ``Counter``.
"""

from __future__ import annotations

import functools
import inspect
import sys
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any

from pytest_migsafe.pool import events as observed
from pytest_migsafe.queries.exact import keep_signature, with_signature_of
from pytest_migsafe.tracebacks import hide_passed_through

#: pytest hides this module's wrapper frames in a traceback an error only passed through
#: (:mod:`pytest_migsafe.tracebacks`)
__tracebackhide__ = hide_passed_through

installed = False
_patched: Any = None  # the psycopg_pool module whose classes are wrapped
_pools: dict[int, weakref.ReferenceType[Any]] = {}  # id(pool) -> a weak reference to it
# id(pool) -> [name, configured size, server kind] of a known pool (see facts_of)
_facts: dict[int, list[Any]] = {}
# id(pool) -> the counters mapping (``_stats``) of a known pool, held past the pool's end; and
# [created, lost] of the counters no longer in one of them (see totals)
_counters: dict[int, Any] = {}
_retired = [0, 0]
# ids of pools collected whose counters are still in _counters: moved to _retired under the lock
# by the next reader (a weak reference's callback runs wherever the collector does, even inside a
# loop over _counters: it only appends here)
_gone_keys: list[int] = []
_PATCHED_FLAG = "__migsafe_original__"
COUNTERS = ("connections_num", "connections_errors", "connections_lost", "returns_bad",
            "requests_num", "requests_errors")


def is_pool(obj: Any) -> bool:
    """True for a psycopg_pool ConnectionPool or AsyncConnectionPool (or a subclass)."""
    global _pool_classes
    module = sys.modules.get("psycopg_pool")
    if module is None:
        return False
    sync = getattr(module, "ConnectionPool", None)
    if _pool_classes[0] is not module or _pool_classes[1] is not sync:  # worked out once per module
        _pool_classes = (module, sync, tuple(  # (and again should its ConnectionPool be replaced)
            cls for cls in (sync, getattr(module, "AsyncConnectionPool", None))
            if isinstance(cls, type)))  # (a stub in sys.modules has neither)
    classes = _pool_classes[2]
    return bool(classes) and isinstance(obj, classes)


#: (the psycopg_pool module, its ConnectionPool, its pool classes) as :func:`is_pool` last read them
_pool_classes: tuple[Any, Any, tuple[type, ...]] = (None, None, ())


def classify(target: Any) -> tuple[str, Any] | None:
    """``("psycopg", pool)`` for a psycopg_pool pool, else None."""
    return ("psycopg", target) if is_pool(target) else None


def name_of(pool: Any) -> str:
    """The pool's ``name`` and class: ``pool-1 (ConnectionPool)``."""
    return f"{pool.name} ({type(pool).__name__})"


def stats_of(pool: Any) -> dict[str, int]:
    """The pool's counters now (``get_stats()``: those it has not started yet are missing, read as 0 by :func:`delta`)."""
    for _ in range(5):
        try:
            stats = pool.get_stats()
            break
        except RuntimeError:  # a worker added a counter while we copied them
            continue
    else:
        stats = {}
    return stats  # the pool's own copy (read through COUNTERS by delta(): no second copy per test)


def facts_of(pool: Any) -> list[Any]:
    """``[name_of(pool), max_size, server kind]`` of a known pool, as registered (the kind,
    ``"unix socket"`` ..., from its first new connection, None before), worked out once per
    pool rather than at every test that watches it: what an observation says of a pool
    collected before its figures are read. A live pool's figures read it afresh
    (:func:`pytest_migsafe.pool.targets.pool_facts`). The list is the registry's own."""
    facts = _facts.get(id(pool))
    if facts is None:  # (a pool not registered: worked out now)
        facts = [name_of(pool), int(pool.max_size), observed.servers.get(pool)]
    return facts


def _note_kind(pool: Any) -> None:
    """``pool``'s first new connection told where its server is: into its facts."""
    facts = _facts.get(id(pool))
    if facts is not None and facts[2] is None:
        facts[2] = observed.servers.get(pool)


def counters_and_copy(pool: Any) -> tuple[dict[str, int] | None, dict[str, int]]:
    """``(the pool's own counters mapping or None, a copy of its counters now)``: what an
    observation holds of a psycopg pool it watches (see :func:`counters_of`)."""
    counters = getattr(pool, "_stats", None)
    if isinstance(counters, dict):
        for _ in range(5):
            try:
                return counters, dict(counters)
            except RuntimeError:  # a worker added a counter while we copied them
                continue
        return counters, stats_of(pool)
    return None, stats_of(pool)


def counters_of(pool: Any) -> dict[str, int]:
    """A copy of the pool's counters now (those of :data:`COUNTERS` among them): its
    ``_stats`` mapping, which ``get_stats()`` copies too, without the measures
    ``get_stats()`` reads under the pool's lock (a psycopg_pool without it: :func:`stats_of`)."""
    return counters_and_copy(pool)[1]


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """``after - before`` of each counter that moved (read the others as 0, with ``.get(key, 0)``);
    a counter reset by ``pop_stats()`` counts from 0."""
    if after == before:  # the common case: the pool did nothing
        return {}
    result = {}
    for key in COUNTERS:
        new = after.get(key, 0)
        old = before.get(key, 0)
        if new != old:
            moved = new - old if new > old else new
            if moved:
                result[key] = moved
    return result


def _created_and_lost(counters: Any) -> tuple[int, int]:
    get = counters.get
    return (get("connections_num", 0) - get("connections_errors", 0),
            get("connections_lost", 0) + get("returns_bad", 0))


def totals() -> tuple[int, int]:
    """``(created, lost)`` of every psycopg pool known to migsafe, since each became known:
    connections opened (``connections_num - connections_errors``) and connections found
    closed or bad (``connections_lost + returns_bad``), from the pools' own counters (those
    ``get_stats()`` reads), across ``pop_stats()`` resets and pools since collected. Counts;
    only differences between two reads mean anything (what an observation of every pool adds
    to ``created`` and to ``closed`` and ``invalidated``)."""
    with observed._lock:
        if _gone_keys:
            _retire_gone()
        created, lost = _retired
        for key, counters in _counters.items():
            if counters is None:  # (a psycopg_pool without the mapping: read through the pool)
                ref = _pools.get(key)
                pool = ref() if ref is not None else None
                if pool is None:
                    continue
                counters = stats_of(pool)
            get = counters.get  # (_created_and_lost, inline: read at every test of a report)
            created += get("connections_num", 0) - get("connections_errors", 0)
            lost += get("connections_lost", 0) + get("returns_bad", 0)
        return created, lost


def _retire_gone() -> None:
    """The counters of the pools collected since the last reader into :data:`_retired` (under
    ``observed._lock``; one at the same id registered since is never among them: :func:`register`
    retires first)."""
    while _gone_keys:
        key = _gone_keys.pop()
        if key not in _pools:
            _retire(_counters.pop(key, None))


def _retire(counters: Any, sign: int = 1) -> None:
    """Move ``counters``' created and lost into (``sign`` -1: out of) :data:`_retired`."""
    if counters is not None:
        created, lost = _created_and_lost(counters)
        _retired[0] += sign * created
        _retired[1] += sign * lost


def registered() -> list[Any]:
    """Every live psycopg pool known to migsafe."""
    return [pool for ref in list(_pools.values()) if (pool := ref()) is not None] if _pools else []


def _known(pool: Any) -> bool:
    ref = _pools.get(id(pool))
    return ref is not None and ref() is pool


def _forget(key: int) -> Callable[[Any], None]:
    def forget(ref: Any) -> None:
        if _pools.get(key) is ref:
            del _pools[key]
            _facts.pop(key, None)  # (an observation that watched the pool keeps its own reference)
            _gone_keys.append(key)  # its last counts stay in the totals (see _retire_gone)

    return forget


def register(pool: Any, fresh: bool) -> None:
    """Know ``pool``; ``fresh`` when it was just created (every counter of it is new)."""
    with observed._lock:
        known = _known(pool)
        if not known:
            key = id(pool)
            if _gone_keys:
                _retire_gone()
            _retire(_counters.pop(key, None))  # (a collected pool at the same id, not forgotten yet)
            _pools[key] = weakref.ref(pool, _forget(key))
            _facts[key] = [name_of(pool), int(pool.max_size), observed.servers.get(pool)]
            counters = _counters[key] = counters_and_copy(pool)[0]
            if not fresh:  # what it counted before it was known is no part of the totals
                _retire(counters if counters is not None else stats_of(pool), -1)
            for obs in observed._observers:
                obs.psycopg_pool_added(pool, fresh)


# -- wrappers -----------------------------------------------------------------------
def _wrap_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """The pool's ``__init__``, then :func:`register`: with ``__init__``'s own parameters
    (names, kinds, defaults), as code that reads a constructor's parameters finds them."""
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        register(self, fresh=True)

    try:
        pool = next(iter(inspect.signature(original).parameters))  # (self)
        exact = with_signature_of(original, f"    {{call}}\n    _register({pool}, fresh=True)\n",
                                  {"_register": register})
    except (ValueError, StopIteration):
        exact = __init__
    setattr(exact, _PATCHED_FLAG, original)
    return exact


def _gone(key: int) -> Callable[[Any], None]:
    return lambda ref: observed.dropped(key, gone=True)


def _after_getconn(pool: Any, conn: Any) -> None:
    key = id(conn)
    observed.checked_out(key, weakref.ref(conn, _gone(key)), pool)  # a checkout: getconn() handed it out
    if observed._observers:
        size = getattr(pool, "_nconns", None)  # connections in the pool, out, or being made
        if size is not None:
            observed.overflow_seen(pool, size - pool.min_size)


def _is_timeout(exc: BaseException) -> bool:
    """``exc`` (raised by ``getconn()``) is psycopg_pool's ``PoolTimeout``: no connection came
    in time. Its other errors (``TooManyRequests``: the queue of waiting requests was full;
    ``PoolClosed``) are not timeouts, though the pool's ``requests_errors`` counts them all."""
    errors = sys.modules.get("psycopg_pool.errors")
    timeout = getattr(errors, "PoolTimeout", None)
    return timeout is not None and isinstance(exc, timeout)


def _wrap_getconn(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def getconn(self: Any, *args: Any, **kwargs: Any) -> Any:
        ref = _pools.get(id(self))
        if ref is None or ref() is not self:  # a pool opened before the hooks: known from its first checkout
            register(self, fresh=False)
        if not observed._observers:
            try:
                conn = original(self, *args, **kwargs)
            except Exception as exc:  # (untimed: no observation reads a wait; the totals count a timeout)
                if _is_timeout(exc):
                    observed.timed_out_unobserved()
                raise
        else:
            t0 = perf_counter()
            timed_out = False
            try:
                conn = original(self, *args, **kwargs)
            except Exception as exc:
                timed_out = _is_timeout(exc)
                raise
            finally:
                observed.waited(self, perf_counter() - t0, timed_out)
        _after_getconn(self, conn)
        return conn

    setattr(getconn, _PATCHED_FLAG, original)
    return getconn


def _wrap_agetconn(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def getconn(self: Any, *args: Any, **kwargs: Any) -> Any:
        ref = _pools.get(id(self))
        if ref is None or ref() is not self:  # a pool opened before the hooks: known from its first checkout
            register(self, fresh=False)
        if not observed._observers:
            try:
                conn = await original(self, *args, **kwargs)
            except Exception as exc:  # (untimed: no observation reads a wait; the totals count a timeout)
                if _is_timeout(exc):
                    observed.timed_out_unobserved()
                raise
        else:
            t0 = perf_counter()
            timed_out = False
            try:
                conn = await original(self, *args, **kwargs)
            except Exception as exc:
                timed_out = _is_timeout(exc)
                raise
            finally:
                observed.waited(self, perf_counter() - t0, timed_out)
        _after_getconn(self, conn)
        return conn

    exact = keep_signature(original, getconn)
    setattr(exact, _PATCHED_FLAG, original)
    return exact


def _wrap_putconn(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def putconn(self: Any, conn: Any) -> None:
        observed.checked_in(id(conn), self)
        return original(self, conn)  # type: ignore[no-any-return]

    setattr(putconn, _PATCHED_FLAG, original)
    return putconn


def _wrap_aputconn(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def putconn(self: Any, conn: Any) -> None:
        observed.checked_in(id(conn), self)
        return await original(self, conn)  # type: ignore[no-any-return]

    setattr(putconn, _PATCHED_FLAG, original)
    return putconn


def capacity_of(pool: Any) -> float:
    """The connections ``pool`` keeps between checkouts: ``max_size`` (0 for a null pool,
    which closes every connection at its return)."""
    module = sys.modules.get("psycopg_pool")
    null = (getattr(module, "NullConnectionPool", None), getattr(module, "AsyncNullConnectionPool", None))
    if isinstance(pool, tuple(cls for cls in null if cls is not None)):
        return 0.0
    return float(pool.max_size)


def _counted_by_stats(conn: Any, caller: Any) -> bool:
    """The pool's stats count this close: the connection is closed already (lost), or the pool
    is closing it from ``_reset_connection`` (``caller``, the calling frame), after which it
    finds it closed and counts it (``returns_bad`` / ``connections_lost``). Told by the caller's
    code name, not a wrapper around every reset: a close is rare, a return is not."""
    return bool(conn.closed) or (caller is not None and caller.f_code.co_name == "_reset_connection")


def _wrap_close(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _close_connection(self: Any, conn: Any) -> None:
        # counted here unless get_stats() counts it; its pool shrinks all the same
        observed.connection_closed(self, observed=not _counted_by_stats(conn, sys._getframe(1)))
        return original(self, conn)  # type: ignore[no-any-return]

    setattr(_close_connection, _PATCHED_FLAG, original)
    return _close_connection


def _wrap_aclose(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def _close_connection(self: Any, conn: Any) -> None:
        observed.connection_closed(self, observed=not _counted_by_stats(conn, sys._getframe(1)))
        return await original(self, conn)  # type: ignore[no-any-return]

    setattr(_close_connection, _PATCHED_FLAG, original)
    return _close_connection


def _wrap_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        conn = original(self, *args, **kwargs)
        observed.connection_created(self, capacity_of(self), observed=False)  # counted from get_stats()
        if self not in observed.servers:
            observed.note_server(self, conn)
            _note_kind(self)
        return conn

    setattr(_connect, _PATCHED_FLAG, original)
    return _connect


def _wrap_aconnect(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def _connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        conn = await original(self, *args, **kwargs)
        observed.connection_created(self, capacity_of(self), observed=False)  # counted from get_stats()
        if self not in observed.servers:
            observed.note_server(self, conn)
            _note_kind(self)
        return conn

    setattr(_connect, _PATCHED_FLAG, original)
    return _connect


def _wrap_pop_stats(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def pop_stats(self: Any) -> dict[str, int]:
        stats: dict[str, int] = original(self)  # (outside the lock: the pool's own code runs here)
        with observed._lock:
            key = id(self)
            if key in _counters and _known(self):  # the counts handed out stay in the totals
                _retire(stats)
                _counters[key] = counters_and_copy(self)[0]
        if observed._observers:
            with observed._lock:
                for obs in observed._observers:
                    obs.psycopg_stats_popped(self, stats)
        return stats

    setattr(pop_stats, _PATCHED_FLAG, original)
    return pop_stats


_SYNC = {"__init__": _wrap_init, "getconn": _wrap_getconn, "putconn": _wrap_putconn,
         "_close_connection": _wrap_close, "_connect": _wrap_connect}
_ASYNC = {"__init__": _wrap_init, "getconn": _wrap_agetconn, "putconn": _wrap_aputconn,
          "_close_connection": _wrap_aclose, "_connect": _wrap_aconnect}


def install(import_missing: bool = True) -> bool:
    """Wrap psycopg_pool's pools; False when psycopg_pool is not (yet) importable.

    Idempotent; wraps psycopg_pool again if it was imported afresh since.
    """
    global installed, _patched
    if installed and sys.modules.get("psycopg_pool") is _patched:
        return True
    if "psycopg_pool" not in sys.modules and not import_missing:
        return False
    try:
        import psycopg_pool
    except ImportError:
        return False
    _patched = psycopg_pool  # imported afresh (a pytester run restored sys.modules): wrap again
    classes: list[tuple[Any, dict[str, Callable[..., Any]]]] = [
        (psycopg_pool.ConnectionPool, _SYNC), (psycopg_pool.AsyncConnectionPool, _ASYNC)]
    base = getattr(sys.modules.get("psycopg_pool.base"), "BasePool", None)
    if base is not None:
        classes.append((base, {"pop_stats": _wrap_pop_stats}))
    for cls, wrappers in classes:
        for name, wrap in wrappers.items():
            method = vars(cls).get(name)
            if method is not None and not hasattr(method, _PATCHED_FLAG):
                setattr(cls, name, keep_signature(method, wrap(method)))
    installed = True
    return True
