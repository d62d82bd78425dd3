"""Report every SQLAlchemy pool's events to :mod:`pytest_migsafe.pool.events`.

Listeners on the ``Pool`` class see every pool of every engine, any pool class
(QueuePool, AsyncAdaptedQueuePool, NullPool, StaticPool, SingletonThreadPool, ...).
Three wrappers add what events cannot tell:

- ``_ConnectionRecord.checkout`` is timed (the checkout wait) and its ``TimeoutError``
  counted, only while an observation is active;
- ``pool.base._finalize_fairy`` tells a checkin made by the garbage collector (a
  connection dropped without ``close()``) from an explicit one;
- ``Engine.__init__`` remembers each engine's URL (password masked) to name its pool
  (an engine created before the hooks, which the import watcher installs as soon as
  SQLAlchemy is imported, keeps the pool class's name: no Engine event is listened to,
  since one listener makes SQLAlchemy dispatch its events on every statement). Its wrapper
  has ``Engine.__init__``'s own parameters: ``create_engine()`` reads which keyword
  arguments are the engine's (``echo``, ``logging_name``, ``execution_options``, ...) from
  that function's code.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import sys
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any

from pytest_migsafe.pool import events as observed
from pytest_migsafe.queries.exact import keep_signature, with_signature_of
from pytest_migsafe.queries.library_frames import relabelled
from pytest_migsafe.tracebacks import hide_passed_through

#: pytest hides this module's wrapper frames in a traceback an error only passed through
#: (:mod:`pytest_migsafe.tracebacks`)
__tracebackhide__ = hide_passed_through

installed = False
_originals: dict[str, Any] = {}
_pool_kinds: dict[type, str] = {}  # pool class -> what _kind_of_class says
_engine_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # dialect -> name
_pool_numbers: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_numbers = itertools.count(1)
# id(pool) -> a weak reference to it: the pools named at their first checkout (see _first_checkout)
_named: dict[int, Any] = {}
_url_counts: dict[str, int] = {}  # engines named after each URL, so that names stay unique
_detached: dict[int, Any] = {}  # id(detached DBAPI connection) -> its former pool


def _pool_of(record: Any) -> Any:
    return getattr(record, "_ConnectionRecord__pool", None)  # None: an unknown SQLAlchemy layout


def _is_queue(pool: Any) -> bool:
    return _kind_of_class(type(pool)) == "queue"


def _kind_of_class(cls: type) -> str:
    """What a pool class is, for its size and capacity: ``"queue"`` (QueuePool), ``"null"``
    (NullPool), ``"one"`` (StaticPool, AssertionPool), ``"singleton"`` (SingletonThreadPool)
    or ``"unknown"``; cached per class (no import on the way: it runs for every observed pool)."""
    known = _pool_kinds.get(cls)
    if known is None:
        from sqlalchemy.pool import AssertionPool, NullPool, QueuePool, SingletonThreadPool, StaticPool

        known = _pool_kinds[cls] = (
            "queue" if issubclass(cls, QueuePool) else "null" if issubclass(cls, NullPool)
            else "one" if issubclass(cls, (StaticPool, AssertionPool))
            else "singleton" if issubclass(cls, SingletonThreadPool) else "unknown")
    return known


# -- listeners ----------------------------------------------------------------------
def capacity_of(pool: Any) -> float | None:
    """The connections ``pool`` keeps between checkouts: QueuePool ``pool_size`` (no limit for
    0 or less), 0 for NullPool, 1 for StaticPool and AssertionPool, SingletonThreadPool's
    ``pool_size``; None (no known limit) for any other pool class."""
    known = _kind_of_class(type(pool))
    if known == "queue":
        size = pool.size()
        return float(size) if size > 0 else math.inf
    if known == "null":
        return 0.0
    if known == "one":
        return 1.0
    if known == "singleton":
        return float(getattr(pool, "size", 0)) or None
    return None


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    pool = _pool_of(record)
    if pool is None:
        return
    observed.connection_created(pool, capacity_of(pool))
    if pool not in observed.servers:
        observed.note_server(pool, dbapi_connection)
    if observed._observers and _is_queue(pool):
        observed.overflow_seen(pool, pool.overflow())


def _on_checkout(dbapi_connection: Any, record: Any, fairy: Any) -> None:
    pool = fairy._pool
    if id(pool) not in _named:
        _first_checkout(pool)
    kind = _pool_kinds.get(type(pool)) or _kind_of_class(type(pool))  # (known: no call)
    if kind == "one":  # StaticPool hands its one record to every checkout: each is its own
        observed.checked_out(id(fairy), _shared_hold(fairy), pool)
        return
    observed.checked_out(id(record), record, pool)
    if kind == "queue" and observed._observers:
        observed.overflow_seen(pool, pool.overflow())


def _first_checkout(pool: Any) -> None:
    """Name ``pool`` at its first checkout (a bare pool, or an engine's whose URL is not known,
    takes its number now): its name is then the same whichever reader names it first, a leak
    warning or a report's figures, at the defaults or with the report."""
    key = id(pool)

    def forget(ref: weakref.ref[Any]) -> None:
        if _named.get(key) is ref:
            del _named[key]

    try:
        _named[key] = weakref.ref(pool, forget)
    except TypeError:  # (a pool that cannot be weakly referenced: named when first read)
        return
    name_of(pool)


def _shared_hold(fairy: Any) -> weakref.ref[Any]:
    """What holds a checkout of a pool that shares one record (StaticPool, AssertionPool),
    keyed by its connection proxy: a weak reference whose callback reports the proxy dropped
    without ``close()`` (SQLAlchemy reports no checkin for it: the record's weak reference
    is the last checkout's alone)."""
    key = id(fairy)

    def gone(ref: weakref.ref[Any]) -> None:
        observed.dropped(key, gone=True, holder=ref)

    return weakref.ref(fairy, gone)


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    pool = getattr(record, "_ConnectionRecord__pool", None)  # (_pool_of, inline: every checkin)
    if pool is not None and (_pool_kinds.get(type(pool)) or _kind_of_class(type(pool))) == "one":
        return  # (its checkouts end at the proxy's close: _finalize_fairy)
    observed.checked_in(id(record), pool)


def _on_detach(dbapi_connection: Any, record: Any) -> None:
    pool = _pool_of(record)
    observed.checked_in(id(record), pool, counted=False)
    if pool is not None:
        _detached[id(dbapi_connection)] = pool
        observed.connection_closed(pool, observed=False)  # no longer the pool's


def _on_session_begin(session: Any, transaction: Any, connection: Any) -> None:
    """An ORM Session began a transaction on ``connection``: the Session owns that checkout."""
    fairy = getattr(connection, "_dbapi_connection", None)
    record = getattr(fairy, "_connection_record", None)
    if record is not None:
        observed.owned_by(id(record), session)
        observed.owned_by(id(fairy), session)  # (a StaticPool checkout is keyed by its proxy)


def _on_close(dbapi_connection: Any, record: Any) -> None:
    pool = _pool_of(record)
    if pool is not None:
        observed.connection_closed(pool)


def _on_close_detached(dbapi_connection: Any) -> None:
    pool = _detached.pop(id(dbapi_connection), None)
    if pool is not None:
        observed.connection_closed(pool, left_pool=False)


def _on_invalidate(dbapi_connection: Any, record: Any, exception: Any) -> None:
    pool = _pool_of(record)
    if pool is not None:
        observed.connection_invalidated(pool)


_LISTENERS: dict[str, Callable[..., Any]] = {
    "connect": _on_connect,
    "checkout": _on_checkout,
    "checkin": _on_checkin,
    "detach": _on_detach,
    "close": _on_close,
    "close_detached": _on_close_detached,
    "invalidate": _on_invalidate,
    "soft_invalidate": _on_invalidate,
}


# -- wrappers -----------------------------------------------------------------------
def _timed_checkout(cls: Any, pool: Any) -> Any:
    original = _originals["checkout"]
    if not observed._observers:
        try:
            return original(cls, pool)
        except _originals["timeout"]:  # (untimed: no observation reads a wait; the totals count it)
            observed.timed_out_unobserved()
            raise
    PoolTimeoutError = _originals["timeout"]

    t0 = perf_counter()
    try:
        fairy = original(cls, pool)
    except PoolTimeoutError:
        observed.waited(pool, perf_counter() - t0, timed_out=True)
        raise
    except BaseException:
        observed.waited(pool, perf_counter() - t0)
        raise
    observed.waited(pool, perf_counter() - t0)
    return fairy


def _dropped_record(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The connection record the garbage collector is returning, or None for a close()."""
    record = args[1] if len(args) > 1 else None
    if record is None:
        return None
    if "is_gc_cleanup" in kwargs:  # SQLAlchemy 2.1: (..., pool, echo, ..., is_gc_cleanup=False)
        return record if kwargs["is_gc_cleanup"] and record.needs_gc else None
    # SQLAlchemy 2.0: (dbapi_connection, record, pool, ref, echo, ...); ref is set by the GC only,
    # and is the record's current fairy when that fairy is the one dropped
    ref = args[3] if len(args) > 3 else None
    return record if isinstance(ref, weakref.ref) and record.fairy_ref is ref else None


def _finalize_fairy(*args: Any, **kwargs: Any) -> Any:
    record = _dropped_record(args, kwargs)
    if record is not None:
        observed.dropped(id(record))
        return _originals["finalize"](*args, **kwargs)
    fairy = kwargs.get("fairy")  # a close(): SQLAlchemy passes the proxy (2.0 and 2.1)
    try:
        return _originals["finalize"](*args, **kwargs)
    finally:
        if fairy is not None:
            pool = getattr(fairy, "_pool", None)
            if pool is not None and (_pool_kinds.get(type(pool)) or _kind_of_class(type(pool))) == "one":
                observed.checked_in(id(fairy), pool)


_WRAPS = "_migsafe_wraps"  # on a wrapper: the function it wraps


def _wrap_engine_init(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Engine.__init__`` that names the engine's pool after its URL, with the same parameters
    (names, kinds, defaults) in its code, which ``create_engine()`` reads."""
    engine = next(iter(inspect.signature(original).parameters))  # (self)
    wrapper = with_signature_of(original, f"    {{call}}\n    _remember({engine})\n",
                                {"_remember": remember_engine})
    setattr(wrapper, _WRAPS, original)
    return wrapper


# -- a Connection's reconnection -------------------------------------------------------
# Connection -> its checkout as it was invalidated: the checkout its reconnection continues
_invalidated: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _wrap_invalidate(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Connection.invalidate`` (also what SQLAlchemy calls on a disconnect): remember the
    checkout the Connection held, which its reconnection continues (see
    :func:`~pytest_migsafe.pool.events.reconnecting`)."""
    @functools.wraps(original)
    def invalidate(self: Any, *args: Any, **kwargs: Any) -> Any:
        if observed._observers or observed._leak_watches:
            record = getattr(getattr(self, "_dbapi_connection", None), "_connection_record", None)
            entry = observed._out.get(id(record)) if record is not None else None
            if entry is not None:
                try:
                    _invalidated[self] = entry
                except TypeError:  # (a Connection that cannot be weakly referenced)
                    pass
        return original(self, *args, **kwargs)

    setattr(invalidate, _WRAPS, original)
    return invalidate


def _wrap_handle_error(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Connection._handle_dbapi_exception``: on a disconnect SQLAlchemy invalidates the pool's
    connection first (its checkin ends the checkout) and the Connection after, so the checkout
    is remembered here, before, and kept if the Connection came out invalidated."""
    @functools.wraps(original)
    def _handle_dbapi_exception(self: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # (every database error passes here: not in pytest's tracebacks)
        if not (observed._observers or observed._leak_watches):
            return original(self, *args, **kwargs)
        record = getattr(getattr(self, "_dbapi_connection", None), "_connection_record", None)
        entry = observed._out.get(id(record)) if record is not None else None
        try:
            return original(self, *args, **kwargs)
        finally:
            if entry is not None and getattr(self, "_dbapi_connection", True) is None:
                try:
                    _invalidated[self] = entry
                except TypeError:
                    pass

    setattr(_handle_dbapi_exception, _WRAPS, original)
    return _handle_dbapi_exception


def _wrap_revalidate(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Connection._revalidate_connection``: the new checkout continues the invalidated one."""
    @functools.wraps(original)
    def _revalidate_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
        previous = _invalidated.pop(self, None) if _invalidated else None
        with observed.reconnecting(previous):
            return original(self, *args, **kwargs)

    setattr(_revalidate_connection, _WRAPS, original)
    return _revalidate_connection


# -- names and sizes ----------------------------------------------------------------
def remember_engine(engine: Any) -> None:
    """Name ``engine``'s pools (this one and those ``dispose()`` creates) after its URL."""
    try:
        dialect = engine.dialect
        if dialect in _engine_names:
            return
        from pytest_migsafe.servers.masking import mask_text  # (once per engine)

        # SQLAlchemy hides a user:password@ password only, not ?password= in the query
        url = mask_text(engine.url.render_as_string(hide_password=True))
    except Exception:
        return
    count = _url_counts[url] = _url_counts.get(url, 0) + 1
    _engine_names[dialect] = url if count == 1 else f"{url} #{count}"


def name_of(pool: Any) -> str:
    """``URL (PoolClass)`` for an engine's pool, ``PoolClass #n`` for a bare one (or for an
    engine's made before the plugin could see its URL: that name stays, even once the engine
    is known, so that one pool has one name in every test's figures and the sizing)."""
    kind = type(pool).__name__
    if _pool_numbers:
        number = _pool_numbers.get(pool)
        if number is not None:
            return f"{kind} #{number}"
    try:
        name = _engine_names.get(pool._dialect)
    except (AttributeError, TypeError):  # no dialect, or one that cannot be weakly referenced
        name = None
    if name is not None:
        return f"{name} ({kind})"
    number = _pool_numbers.get(pool)
    if number is None:
        number = _pool_numbers[pool] = next(_numbers)
    return f"{kind} #{number}"


def size_of(pool: Any) -> int | None:
    """QueuePool ``pool_size``, 0 for NullPool, None for pools without a size."""
    known = _kind_of_class(type(pool))
    if known == "queue":
        return int(pool.size())
    return 0 if known == "null" else None


def classify(target: Any) -> tuple[str, Any] | None:
    """``("engine", sync_engine)`` or ``("pool", pool)`` for SQLAlchemy objects, else None."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    engine = getattr(target, "sync_engine", target)  # AsyncEngine
    if isinstance(engine, Engine):
        remember_engine(engine)
        return ("engine", engine)
    if isinstance(target, Pool):
        return ("pool", target)
    return None


# -- installation -------------------------------------------------------------------
def install(import_missing: bool = True) -> bool:
    """Listen on every SQLAlchemy pool; False when SQLAlchemy is not (yet) importable.

    Idempotent; hooks SQLAlchemy again if it was imported afresh since.
    """
    global installed
    if installed and sys.modules.get("sqlalchemy.pool.base") is _originals.get("module"):
        _install_orm()
        return True
    if "sqlalchemy" not in sys.modules and not import_missing:
        return False
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from sqlalchemy.exc import TimeoutError as PoolTimeoutError
        from sqlalchemy.pool import Pool
        from sqlalchemy.pool import base as pool_base
    except ImportError:
        return False
    _originals["timeout"] = PoolTimeoutError  # (in the dict: _timed_checkout's globals are a copy)
    # SQLAlchemy imported afresh (a pytester run restored sys.modules): hook the new classes
    _originals["module"] = pool_base
    for name, listener in _LISTENERS.items():
        event.listen(Pool, name, listener)
    record_class = pool_base._ConnectionRecord
    _originals["checkout"] = record_class.__dict__["checkout"].__func__
    # (frames SQLAlchemy's warnings step over, as its own: see queries.library_frames)
    # (each wrapper names what it wraps: inspect.signature() shows SQLAlchemy's parameters)
    record_class.checkout = classmethod(functools.update_wrapper(  # type: ignore[method-assign, assignment]
        relabelled(_timed_checkout, pool_base.__name__), _originals["checkout"]))
    _originals["finalize"] = pool_base._finalize_fairy
    pool_base._finalize_fairy = functools.update_wrapper(
        relabelled(_finalize_fairy, pool_base.__name__), pool_base._finalize_fairy)
    if not hasattr(Engine.__init__, _WRAPS):
        Engine.__init__ = _wrap_engine_init(Engine.__init__)  # type: ignore[method-assign]
    from sqlalchemy.engine import Connection

    for name, wrap in (("invalidate", _wrap_invalidate), ("_revalidate_connection", _wrap_revalidate),
                       ("_handle_dbapi_exception", _wrap_handle_error)):
        current = Connection.__dict__.get(name)
        if current is not None and not hasattr(current, _WRAPS):
            setattr(Connection, name, keep_signature(current, wrap(current)))
    # engines are named when made (never by scanning the heap, which would evaluate objects
    # migsafe does not own, such as lazy settings); no Engine event is listened to: one
    # listener makes SQLAlchemy dispatch its events on every statement of every engine
    installed = True
    _install_orm()
    return True


def _install_orm() -> None:
    """Know which ORM Session holds each connection (``after_begin``), once ``sqlalchemy.orm`` is imported."""
    orm = sys.modules.get("sqlalchemy.orm")
    if orm is None or _originals.get("orm") is orm:
        return
    from sqlalchemy import event

    event.listen(orm.Session, "after_begin", _on_session_begin)
    _originals["orm"] = orm
