"""The state a shadow path starts from: savepoints, cache flushes, cache meters.

Each path of a shadow experiment runs inside :func:`isolated`: ``before_each``, a flushed
cache, and a savepoint on the session (or psycopg connection) that is rolled back after
the path, so neither path warms or dirties the state the other one sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class ShadowIsolationError(RuntimeError):
    """A path's database writes could not be undone, so the paths would not start alike.

    Raised after a path ended the savepoint opened for it (it committed or rolled back
    on a connection or session not joined in ``create_savepoint`` mode).
    """

def flusher(flush: Any) -> Callable[[], Any] | None:
    """A callable emptying the cache: ``flush`` itself, or a Redis client's ``flushdb`` (any
    object with a ``flushdb`` method). None for None; ``TypeError`` for anything else."""
    if flush is None:
        return None
    if hasattr(flush, "flushdb"):
        return flush.flushdb
    if callable(flush):
        return flush
    raise TypeError(f"flush= expects a Redis client or a callable, got {type(flush).__name__}")


def open_savepoint(session: Any) -> Callable[[], None]:
    """Open a savepoint on ``session``; return the function that rolls it back.

    ``session`` is a SQLAlchemy Session or Connection, or a psycopg Connection. A
    SQLAlchemy Session joined to an outer transaction in ``create_savepoint`` mode (as
    ``migsafe_db`` is) gets its savepoint on the connection, below the session's own,
    so a path that calls ``session.commit()`` is undone too. Sessions are expired before
    and after the path, so objects one path loaded are not served to the other. A psycopg
    Connection gets ``connection.transaction(force_rollback=True)``.

    Raises ``TypeError`` for an ``AsyncSession`` or any other object. The returned
    function raises :class:`ShadowIsolationError` when the path ended the savepoint.
    """
    if hasattr(session, "sync_session"):
        raise TypeError("session= does not take an AsyncSession: shadow paths are synchronous")
    if hasattr(session, "expire_all") and hasattr(session, "begin_nested"):
        return _session_savepoint(session)
    if hasattr(session, "begin_nested"):
        return _nested_rollback(session.begin_nested(), session)
    if hasattr(session, "transaction") and hasattr(session, "cursor"):
        transaction = session.transaction(force_rollback=True)
        transaction.__enter__()
        return lambda: transaction.__exit__(None, None, None)
    raise TypeError("session= expects a SQLAlchemy Session or Connection or a psycopg Connection, "
                    f"got {type(session).__name__}")


def _session_savepoint(session: Any) -> Callable[[], None]:
    bind: Any = getattr(session, "bind", None)
    joined = (getattr(session, "join_transaction_mode", None) == "create_savepoint"
              and hasattr(bind, "begin_nested") and hasattr(bind, "in_transaction")
              and bind.in_transaction())
    if not joined:
        undo = _nested_rollback(session.begin_nested(), session)
        session.expire_all()

        def rollback_session() -> None:
            try:
                undo()
            finally:
                session.expire_all()

        return rollback_session
    # The session's writes live in the outer transaction: commit() releases only the
    # session's savepoint. Ours then sits below any savepoint the path's session opens.
    session.commit()
    savepoint = bind.begin_nested()

    def rollback_joined() -> None:
        session.rollback()
        if not savepoint.is_active:
            raise ShadowIsolationError(
                "shadow: the path ended the connection's savepoint, so its writes could not be undone")
        savepoint.rollback()
        session.expire_all()

    return rollback_joined


def _nested_rollback(nested: Any, owner: Any) -> Callable[[], None]:
    def rollback() -> None:
        if not nested.is_active:
            raise ShadowIsolationError(
                f"shadow: the path ended the savepoint on its {type(owner).__name__} (it committed or "
                "rolled back), so its writes could not be undone and the other path would not start "
                "from the same state; flush() instead of commit() in the paths, or pass a Session "
                "joined with join_transaction_mode='create_savepoint' (as migsafe_db is)")
        nested.rollback()

    return rollback


class _Unmeasured:
    """Stands in for cache_stats when the cache module is missing: nothing is measured."""

    hits = misses = None

    def __enter__(self) -> _Unmeasured:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def cache_meter(client: Any) -> Any:
    """A context manager measuring ``client``'s keyspace hits and misses (``.hits``,
    ``.misses``, ints once the block ends): a :func:`~pytest_migsafe.cache.stats.cache_stats`
    (``INFO stats`` deltas on real Redis). When the cache subpackage cannot be imported,
    a stand-in whose ``.hits`` and ``.misses`` are None (not measured)."""
    try:
        from pytest_migsafe.cache.stats import cache_stats
    except ImportError:
        return _Unmeasured()
    return cache_stats(client)



@contextmanager
def isolated(options: Any) -> Iterator[None]:
    """Run the block from a clean state: before_each, flushed cache, a savepoint undone after.

    ``options`` has ``before_each``, ``flush``, ``session`` and ``after_each`` (each may be
    None). Order: ``before_each()``, ``flush()``, savepoint; the block; rollback,
    ``flush()``, then ``after_each()`` even when something in between raised. Errors of
    these steps propagate (:class:`ShadowIsolationError`, ``TypeError`` from
    :func:`open_savepoint`).
    """
    if options.before_each is not None:
        options.before_each()
    try:
        if options.flush is not None:
            options.flush()
        undo = open_savepoint(options.session) if options.session is not None else None
        try:
            yield
        finally:
            if undo is not None:
                undo()
            if options.flush is not None:
                options.flush()
    finally:
        if options.after_each is not None:
            options.after_each()
