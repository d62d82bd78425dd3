"""The scaling check: the number of queries must not grow with the amount of data.

As in Ruby's n_plus_one_control: run ``action`` once to warm caches, then for each
scale ``n`` build the data with ``setup(n)`` and count the statements ``action`` runs.
Every scale (and the warm-up) starts from the same state when it is isolated, with
``isolate=``:

- a SQLAlchemy ``Session`` joined to a Connection's transaction in
  ``join_transaction_mode="create_savepoint"`` (the plugin's ``migsafe_db``): its work so
  far is released into that transaction, then each scale runs in a savepoint of the
  connection, rolled back after, and its objects are expired; ``session.commit()`` in
  ``setup`` or ``action`` stays inside the scale.
- another ``Session``, or a ``Connection``: each scale runs in a savepoint of it
  (``begin_nested()``), rolled back after; a Session's objects are expired. A
  ``commit()`` of such a Session commits for real: pass its engine instead. The
  application must use that session or connection.
- a SQLAlchemy ``Engine`` the application owns: for the whole check the engine hands out
  one connection, from its own pool, in a transaction rolled back after each scale; the
  application's transactions on it (``Session.commit()``, ``engine.begin()``,
  ``connection.commit()``, their rollbacks) become savepoints, released or rolled back
  (SQLAlchemy's ``join_transaction_mode="create_savepoint"`` recipe, applied at the
  engine: the application's sessions and connections need no change). Required: every
  session and connection ``setup``/``action`` open is closed by the end of the scale (a
  ``scoped_session``: ``remove()``), else :class:`ScaleNotIsolated`; the application
  must not commit on the DBAPI connection itself, switch it to autocommit, or dispose
  the engine during the check. Statements of all threads share the one connection.
- a psycopg 3 ``Connection``: each scale in a transaction (or, inside one, a savepoint)
  rolled back after; its ``with conn.transaction():`` blocks nest as savepoints, but a
  ``conn.commit()`` by the application ends the isolation.

The transaction and savepoint commands the isolation sends go through libpq directly on
psycopg 3 (no query counter sees them); on other drivers through a DBAPI cursor, where
they are transaction control (not counted unless ``include_transaction_control``).
"""

from __future__ import annotations

import inspect
import itertools
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pytest_migsafe.queries.counter import QueryCounter, count_queries
from pytest_migsafe.text import plural, shorten


class QueriesGrowWithData(AssertionError):
    """The query count of an action grew with the amount of data."""


class ScaleNotIsolated(RuntimeError):
    """A scale could not be rolled back cleanly: the message says what was left open."""


@dataclass
class ScalingResult:
    """Statement counts per scale, in total and per shape.

    ``scale``: the scales measured (whole numbers, increasing); ``totals``: statements of
    ``action`` at each scale; ``per_shape``: ``{shape: [statements at each scale]}``;
    ``counters``: the :class:`QueryCounter` of each scale (call sites, durations), for messages.
    """

    scale: tuple[int, ...]
    totals: list[int]
    per_shape: dict[str, list[int]] = field(default_factory=dict)
    counters: list[QueryCounter] = field(default_factory=list, repr=False, compare=False)

    def grown(self, slope: float = 0.0) -> dict[str, list[int]]:
        """Shapes whose count grew faster than ``slope`` statements per unit of scale,
        ``{shape: [count at each scale]}``, the fastest growing first."""
        grown = {}
        first = self.scale[0]
        for shape, counts in self.per_shape.items():
            base = counts[0]
            if any(c - base > slope * (n - first) + 1e-9 for n, c in zip(self.scale, counts)):
                grown[shape] = counts
        return dict(sorted(grown.items(), key=lambda kv: (-(kv[1][-1] - kv[1][0]), kv[0])))


# -- isolation ----------------------------------------------------------------------------
class _Hooks:
    """``before_each`` / ``after_each`` callables around each scale."""

    def __init__(self, before: Callable[[], Any] | None, after: Callable[[], Any] | None) -> None:
        self.before, self.after = before, after

    @contextmanager
    def scale(self) -> Iterator[None]:
        if self.before is not None:
            self.before()
        try:
            yield
        finally:
            if self.after is not None:
                self.after()


class _JoinedSession:
    """A Session joined to an outer transaction in ``create_savepoint`` mode (``migsafe_db``):
    its work so far is released into that transaction, then each scale runs in a savepoint
    of the connection, beneath the session's own savepoints, so that a ``commit()`` in
    ``setup`` or ``action`` only releases the session's savepoint into the scale's."""

    def __init__(self, session: Any, connection: Any) -> None:
        self.session = session
        self.connection = connection

    @contextmanager
    def scale(self) -> Iterator[None]:
        self.session.commit()  # create_savepoint: a RELEASE, never a real commit
        savepoint = self.connection.begin_nested()
        try:
            yield
        finally:
            self.session.rollback()  # the session's own savepoint, if the scale left one open
            if savepoint.is_active:
                savepoint.rollback()
            self.session.expire_all()


class _Savepoints:
    """A SQLAlchemy Session or Connection: one ``begin_nested()`` per scale, rolled back.

    A ``commit()`` (or ``rollback()``) of the Session or Connection inside the scale ends its
    savepoint with the transaction around it (a Session not joined in ``create_savepoint``
    mode, a Connection): what the scale wrote may be committed for good, and the next scale
    would count it. That is :class:`ScaleNotIsolated`, naming the way out, not a silent pass."""

    def __init__(self, target: Any) -> None:
        self.target = target

    @contextmanager
    def scale(self) -> Iterator[None]:
        savepoint = self.target.begin_nested()
        ended = False
        try:
            yield
        finally:
            if savepoint.is_active:
                savepoint.rollback()
            else:
                ended = True
            expire = getattr(self.target, "expire_all", None)
            if expire is not None:
                expire()
        if ended:
            kind = type(self.target).__name__
            raise ScaleNotIsolated(
                f"a scale's savepoint on the {kind} given as isolate= ended inside the scale (a commit() "
                f"or rollback() of the {kind} in setup or action ends the transaction around it, and "
                f"what the scale wrote may be committed for good): give isolate= the Engine (commits "
                f"become savepoints), or migsafe_db, or call flush() instead of commit()")


def _send(dbapi: Any, sql: str) -> None:
    """One command on a DBAPI connection, through libpq for psycopg 3 (no hook sees it)."""
    pgconn = getattr(dbapi, "pgconn", None)
    if pgconn is not None and hasattr(pgconn, "exec_"):
        from psycopg import pq

        with dbapi.lock:
            result = pgconn.exec_(sql.encode())
        if result.status != pq.ExecStatus.COMMAND_OK:
            message = (result.error_message or b"").decode("utf-8", "replace").strip()
            raise ScaleNotIsolated(f"{sql} failed: {message}")
        return
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


class _PsycopgScale:
    """A psycopg 3 connection: a transaction (or a savepoint inside one) per scale, rolled back."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @contextmanager
    def scale(self) -> Iterator[None]:
        from psycopg import pq

        status = self.conn.pgconn.transaction_status
        if status == pq.TransactionStatus.IDLE:
            _send(self.conn, "BEGIN")
            own = True
        elif status == pq.TransactionStatus.INTRANS:
            _send(self.conn, "SAVEPOINT migsafe_scale")
            own = False
        else:
            raise ScaleNotIsolated(f"the psycopg connection is {status.name}: it cannot start a scale")
        try:
            yield
        finally:
            if own:
                self.conn.rollback()
            elif self.conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                _send(self.conn, "ROLLBACK TO SAVEPOINT migsafe_scale")
                _send(self.conn, "RELEASE SAVEPOINT migsafe_scale")


class _EngineScales:
    """A SQLAlchemy Engine: one pooled connection handed out for the whole check, a
    transaction rolled back per scale, the application's transactions as savepoints."""

    _names = itertools.count(1)

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.dbapi: Any = None
        self.stack: list[tuple[int, str]] = []  # (id of the pooled connection, savepoint name)
        self.checked_out = 0

    # -- the whole check -------------------------------------------------------------
    @contextmanager
    def check(self) -> Iterator[None]:
        from sqlalchemy import event
        from sqlalchemy.pool import StaticPool

        engine, dialect = self.engine, self.engine.dialect
        raw = engine.raw_connection()  # from the engine's own pool: returned to it after
        self.dbapi = raw.dbapi_connection
        one = StaticPool(lambda: self.dbapi, dialect=dialect, reset_on_return=None)
        event.listen(one, "checkout", self._out)
        event.listen(one, "checkin", self._in)
        saved_pool = engine.pool
        own = {name: vars(dialect)[name] for name in ("do_begin", "do_commit", "do_rollback")
               if name in vars(dialect)}
        originals = {name: getattr(dialect, name) for name in ("do_begin", "do_commit", "do_rollback")}
        engine.pool = one
        dialect.do_begin = lambda conn: self._begin(conn) if self._ours(conn) else originals["do_begin"](conn)
        dialect.do_commit = lambda conn: self._release(conn) if self._ours(conn) else originals["do_commit"](conn)
        dialect.do_rollback = lambda conn: self._rollback(conn) if self._ours(conn) else originals["do_rollback"](conn)
        try:
            yield
        finally:
            engine.pool = saved_pool
            for name in ("do_begin", "do_commit", "do_rollback"):
                if name in own:
                    setattr(dialect, name, own[name])
                else:
                    delattr(dialect, name)
            try:
                if not getattr(self.dbapi, "closed", False):
                    self.dbapi.rollback()
            finally:
                raw.close()

    def _out(self, *args: Any) -> None:
        self.checked_out += 1

    def _in(self, *args: Any) -> None:
        self.checked_out -= 1

    def _ours(self, conn: Any) -> bool:
        return getattr(conn, "dbapi_connection", conn) is self.dbapi

    # -- the application's transactions, as savepoints --------------------------------
    def _begin(self, conn: Any) -> None:
        name = f"migsafe_app_{next(self._names)}"
        _send(self.dbapi, f"SAVEPOINT {name}")
        self.stack.append((id(conn), name))

    def _find(self, conn: Any) -> int | None:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == id(conn):
                return index
        return None

    def _release(self, conn: Any) -> None:
        index = self._find(conn)
        if index is not None:  # else already released with an enclosing one
            _send(self.dbapi, f"RELEASE SAVEPOINT {self.stack[index][1]}")
            del self.stack[index:]

    def _rollback(self, conn: Any) -> None:
        index = self._find(conn)
        if index is not None:
            name = self.stack[index][1]
            _send(self.dbapi, f"ROLLBACK TO SAVEPOINT {name}")
            _send(self.dbapi, f"RELEASE SAVEPOINT {name}")
            del self.stack[index:]

    # -- one scale -----------------------------------------------------------------------
    @contextmanager
    def scale(self) -> Iterator[None]:
        pgconn = getattr(self.dbapi, "pgconn", None)
        if pgconn is not None:
            from psycopg import pq

            if pgconn.transaction_status == pq.TransactionStatus.IDLE:
                _send(self.dbapi, "BEGIN")
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            left_open = self.checked_out
            self.stack.clear()
            self.dbapi.rollback()
            if left_open and not failed:
                raise ScaleNotIsolated(
                    f"{plural(left_open, 'connection')} of the engine still checked out at the end of a "
                    "scale: close the sessions and connections that setup and action open (for a "
                    "scoped_session, call remove()) so that each scale can be rolled back")


def isolation_for(target: Any) -> Any:
    """The isolation of each scale for ``target``: a SQLAlchemy Session, Connection or Engine,
    or a psycopg 3 Connection (see the module doc); TypeError for anything else (an
    AsyncEngine or AsyncSession included: the scaling check runs synchronous code)."""
    module = type(target).__module__ or ""
    if module.startswith("sqlalchemy"):
        from sqlalchemy.engine import Connection, Engine
        from sqlalchemy.orm import Session

        if isinstance(target, Session) and isinstance(target.bind, Connection) \
                and getattr(target, "join_transaction_mode", None) == "create_savepoint":
            return _JoinedSession(target, target.bind)
        if isinstance(target, (Session, Connection)):
            return _Savepoints(target)
        if isinstance(target, Engine):
            return _EngineScales(target)
    if module.startswith("psycopg"):
        import psycopg

        if isinstance(target, psycopg.Connection):
            return _PsycopgScale(target)
    raise TypeError(f"isolate= expects a SQLAlchemy Engine, Connection or Session, or a psycopg "
                    f"Connection, got {type(target).__name__}")


# -- measuring -----------------------------------------------------------------------------
def _synchronous(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``function``, refusing an awaitable result (a lambda around a coroutine function): its
    statements would never run, and every scale would count none."""
    def called(*args: Any) -> Any:
        result = function(*args)
        if inspect.isawaitable(result) or inspect.isasyncgen(result):
            close = getattr(result, "close", None)
            if close is not None and inspect.iscoroutine(result):
                close()  # (never awaited: no "was never awaited" warning on top)
            raise TypeError(f"{name} returned an awaitable ({type(result).__name__}), which the scaling "
                            f"check would never run: pass a synchronous callable")
        return result

    return called


def _checked_slope(slope: Any) -> float:
    if isinstance(slope, bool) or not isinstance(slope, (numbers.Real, Decimal)) \
            or not math.isfinite(float(slope)) or slope < 0:
        raise ValueError(f"slope expects a number of statements per unit of scale >= 0 (a finite real "
                         f"number: int, float, Fraction, Decimal), got {slope!r}")
    return float(slope)


def measure_scaling(setup: Callable[[int], Any], action: Callable[[], Any],
                    scale: Sequence[int] = (2, 3), *,
                    isolate: Any = None,
                    before_each: Callable[[], Any] | None = None,
                    after_each: Callable[[], Any] | None = None,
                    warm: bool = True) -> ScalingResult:
    """Count the statements of ``action`` after ``setup(n)`` for each ``n`` in ``scale``.

    ``isolate``: what each scale (and the warm-up) is rolled back on (module doc);
    ``before_each`` / ``after_each``: callables run around each scale instead. Raises
    ValueError for a scale that is not two or more increasing whole numbers >= 1,
    TypeError for an ``isolate`` it cannot use or a ``setup`` / ``action`` that is not a
    synchronous callable (a coroutine function, or one returning an awaitable: its
    statements would never run), :class:`ScaleNotIsolated` when a scale left an engine's
    connection checked out or ended its Session's or Connection's savepoint (a ``commit()``).
    """
    scale = tuple(scale)
    if len(scale) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in scale) \
            or list(scale) != sorted(set(scale)):
        raise ValueError(f"scale expects two or more increasing whole numbers >= 1, got {scale!r}")
    for name, given in (("setup", setup), ("action", action)):
        if not callable(given):
            raise TypeError(f"{name} expects a callable, got {type(given).__name__}")
        if inspect.iscoroutinefunction(given) or inspect.isasyncgenfunction(given):
            raise TypeError(f"{name} is a coroutine function: the scaling check runs synchronous code "
                            f"(wrap it: lambda: asyncio.run(...), or run the check inside the event loop's thread)")
    setup, action = _synchronous(setup, "setup"), _synchronous(action, "action")
    if isolate is not None and (before_each is not None or after_each is not None):
        raise TypeError("pass isolate= or before_each=/after_each=, not both")
    isolation = isolation_for(isolate) if isolate is not None else _Hooks(before_each, after_each)
    whole: AbstractContextManager[Any] = isolation.check() if hasattr(isolation, "check") else nullcontext()
    totals: list[int] = []
    per_shape: dict[str, list[int]] = {}
    counters: list[QueryCounter] = []
    with whole:
        if warm:
            with isolation.scale():
                setup(scale[0])
                action()
        for index, n in enumerate(scale):
            with isolation.scale():
                setup(n)
                with count_queries() as counter:
                    action()
            counters.append(counter)
            totals.append(counter.count)
            for stats in counter.summary():
                per_shape.setdefault(stats.shape, [0] * len(scale))[index] = stats.count
    return ScalingResult(scale, totals, per_shape, counters)


def scaling_message(what: str, result: ScalingResult, slope: float = 0.0, *,
                    verbose: bool = False, width: int = 120) -> str:
    """Expected and actual counts first, then the shapes that grew (count at each scale,
    call sites), then each scale's statements by shape, those that grew first.

    ``what`` names the check; shapes are cut to ``width`` characters and each scale's list
    to 10 shapes unless ``verbose``.
    """
    expected = ("the same query count at every scale" if not slope
                else f"at most {slope:g} more {'query' if slope == 1 else 'queries'} per unit of scale")
    lines = [f"{what}: expected {expected}, but the query count grows with the data: "
             f"scale {list(result.scale)} ran {result.totals} statements"]
    grown = result.grown(slope)
    last = result.counters[-1] if result.counters else None
    for shape, counts in grown.items():
        where = _sites(last, shape) if last is not None else ""
        lines.append(f"  {shorten(shape, 100)}: {' != '.join(str(c) for c in counts)}"
                     + (f" at {where}" if where else ""))
    for n, counter in zip(result.scale, result.counters):
        lines.append(f"  at scale {n}, {plural(counter.count, 'query', 'queries')}:")
        shapes = sorted(counter.summary(), key=lambda s: (s.shape not in grown, -s.count, s.shape))
        shown = shapes if verbose else shapes[:10]
        for stats in shown:
            lines.append(f"    {shorten(stats.shape, width)} x{stats.count} at {_sites(counter, stats.shape)}")
        if len(shown) < len(shapes):
            lines.append(f"    ... and {len(shapes) - len(shown)} more shapes (use -v to see all)")
    return "\n".join(lines)


def _sites(counter: QueryCounter, shape: str) -> str:
    for stats in counter.summary():
        if stats.shape == shape:
            sites = sorted(stats.call_sites.items(), key=lambda kv: -kv[1])
            return ", ".join(site + (f" (x{k})" if len(sites) > 1 else "") for site, k in sites[:3])
    return ""


def assert_constant_queries(setup: Callable[[int], Any], action: Callable[[], Any],
                            scale: Sequence[int] = (2, 3), *, slope: float = 0.0,
                            isolate: Any = None,
                            before_each: Callable[[], Any] | None = None,
                            after_each: Callable[[], Any] | None = None,
                            verbose: bool = False) -> ScalingResult:
    """Fail with :class:`QueriesGrowWithData` when ``action``'s query count grows with ``n``.

    ``slope`` allows a known linear growth: that many extra statements per unit of ``n``
    (a finite number >= 0, else ValueError before anything runs). ``isolate`` /
    ``before_each`` / ``after_each``: as :func:`measure_scaling` (same errors). The message
    is :func:`scaling_message`'s. Returns the :class:`ScalingResult`.
    """
    slope = _checked_slope(slope)
    result = measure_scaling(setup, action, scale, isolate=isolate, before_each=before_each,
                             after_each=after_each)
    if result.grown(slope):
        raise QueriesGrowWithData(scaling_message("assert_constant_queries", result, slope, verbose=verbose))
    return result
