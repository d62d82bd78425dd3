"""Prove a cache-aside read path: miss then load, hit without SQL, no stale read after a write.

``assert_cache_aside(read=load_user, key="user:1", write=rename_user, client=redis_client,
fresh=load_user_from_db)`` checks, in order:

1. the first ``read()`` misses ``key`` and runs at least one SQL statement (and stores the key);
2. the second ``read()`` hits ``key``, runs no SQL statement, and returns the same value;
3. after ``write()``, the next ``read()`` returns the new value: the one ``fresh()`` reads
   from the database (or ``expect_after_write``, or what ``write()`` returned), so the
   cache was either invalidated or updated, never left stale.

Hits and misses of ``key`` come from :class:`~pytest_migsafe.cache.stats.CacheStats` on
``client``'s server (the code under test may use its own client on that server), SQL
statements from :func:`~pytest_migsafe.queries.counter.count_queries`. Whether the key is cached
is asked with a probe Redis does not count as a hit or a miss. Works on real Redis and
on fakeredis alike. A failure raises :class:`CacheAsideFailed` naming the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_migsafe.cache.hooks import probe_exists
from pytest_migsafe.cache.stats import CacheStats, key_text
from pytest_migsafe.queries.counter import count_queries
from pytest_migsafe.text import shorten

_UNSET: Any = object()

STEP_1 = "step 1 (first read should miss the cache and run SQL)"
STEP_2 = "step 2 (second read should hit the cache and run no SQL)"
STEP_3 = "step 3 (after write(), the next read should return the new value)"


class CacheAsideFailed(AssertionError):
    """One step of the cache-aside check failed (an ``AssertionError``); the message names
    the step (:data:`STEP_1`, :data:`STEP_2` or :data:`STEP_3`) and its figures."""


@dataclass
class ReadStep:
    """One call of ``read()``: what it returned, its hits and misses on the key, its SQL.

    ``hits`` / ``misses``: keyspace hits and misses of the checked key alone, from the
    client-side accounting (``CacheStats.by_key``); ``statements``: SQL statements counted
    by :func:`~pytest_migsafe.queries.counter.count_queries` during the call; ``sql``:
    those statements grouped by shape (at most 5 shapes), for messages.
    """

    value: Any
    hits: int
    misses: int
    statements: int
    sql: str = ""  # the statements grouped by shape, for messages


@dataclass
class CacheAsideResult:
    """What each step observed (returned when every step passed).

    ``first`` / ``second``: the two reads before ``write()``; ``after_write``: the read
    after it (None without ``write``); ``invalidated``: True when ``write()`` removed the
    key, False when it kept (updated) it, None when not checked or the probe could not
    tell; ``notes``: a list of strings, empty unless a step adds one.
    """

    first: ReadStep
    second: ReadStep
    after_write: ReadStep | None = None
    invalidated: bool | None = None  # True: write() removed the key; False: it kept (updated) it
    notes: list[str] = field(default_factory=list)


def _show(value: Any, width: int = 200) -> str:
    return shorten(repr(value), width)


def _read(read: Callable[[], Any], client: Any, key: Any) -> ReadStep:
    with count_queries() as counter, CacheStats(client, track_keys=[key]) as stats:
        value = read()
    tally = stats.by_key[key_text(key)]
    return ReadStep(value=value, hits=tally.hits, misses=tally.misses, statements=counter.count,
                    sql=counter.describe(limit=5))


def _statements(step: ReadStep) -> str:
    noun = "statement" if step.statements == 1 else "statements"
    return f"{step.statements} {noun} ran" + (f":\n{step.sql}" if step.sql else "")


def _is_cached(client: Any, key: Any) -> bool | None:
    return probe_exists(client, [key])[0]


def assert_cache_aside(
    read: Callable[[], Any],
    key: Any,
    write: Callable[[], Any] | None = None,
    *,
    client: Any,
    fresh: Callable[[], Any] | None = None,
    expect_after_write: Any = _UNSET,
) -> CacheAsideResult:
    """Run the three steps; raise :class:`CacheAsideFailed` naming the first step that fails.

    ``read`` / ``write`` / ``fresh`` are callables taking no argument; ``key`` the Redis
    key (``str`` or ``bytes``) the read path caches; ``client`` a redis-py or fakeredis
    client on the server the code under test uses (its hits and misses are measured
    there, so the code may use its own client). ``expect_after_write`` is the value the
    read after ``write()`` must return, or a callable that takes that value and returns
    True when it is right. Without it the new value is ``fresh()`` (a read that bypasses
    the cache), else what ``write()`` returned. Without ``write`` only steps 1 and 2 run.

    Returns a :class:`CacheAsideResult`. Raises :class:`CacheAsideFailed` when the key
    is cached before the first read, a step's hits, misses or statement count are wrong,
    or the read after the write is stale; ``ValueError`` when the new value cannot be
    told (no ``expect_after_write``, no ``fresh``, and ``write()`` returned None).
    Exceptions from ``read``, ``write`` or ``fresh`` propagate unchanged.
    """
    name = key_text(key)
    if _is_cached(client, key):
        raise CacheAsideFailed(f"{STEP_1}: the key {name!r} is already in the cache before the first "
                               "read; start from an empty cache (migsafe_redis is flushed before each test)")

    first = _read(read, client, key)
    if first.hits + first.misses == 0:
        raise CacheAsideFailed(f"{STEP_1}: read() never read the key {name!r} from this client's Redis "
                               "server; does it use that key, and a client on the same server?")
    if first.hits:
        raise CacheAsideFailed(f"{STEP_1}: the key {name!r} was a cache hit ({first.hits} hits, "
                               f"{first.misses} misses)")
    if first.statements == 0:
        raise CacheAsideFailed(f"{STEP_1}: the key {name!r} missed but no SQL statement ran; "
                               "read() should load the value from the database on a miss")
    if not _is_cached(client, key):
        raise CacheAsideFailed(f"{STEP_1}: after the miss, read() did not store the key {name!r} in the cache")

    second = _read(read, client, key)
    if second.misses or not second.hits:
        raise CacheAsideFailed(f"{STEP_2}: the key {name!r} had {second.hits} hits and "
                               f"{second.misses} misses")
    if second.statements:
        raise CacheAsideFailed(f"{STEP_2}: {_statements(second)}")
    if second.value != first.value:
        raise CacheAsideFailed(f"{STEP_2}: it returned {_show(second.value)}, the first read returned "
                               f"{_show(first.value)}")
    result = CacheAsideResult(first=first, second=second)
    if write is None:
        return result

    returned = write()
    predicate: Callable[[Any], Any] | None = None
    expected: Any = _UNSET
    if expect_after_write is not _UNSET and callable(expect_after_write):
        predicate = expect_after_write
    elif expect_after_write is not _UNSET:
        expected = expect_after_write
    elif fresh is not None:
        expected = fresh()
    elif returned is not None:
        expected = returned
    else:
        raise ValueError("assert_cache_aside: cannot tell the new value after write(): pass fresh= "
                         "(a read that bypasses the cache), expect_after_write=, or make write() "
                         "return the new value")
    if expected is not _UNSET and expected == first.value:
        raise CacheAsideFailed(f"{STEP_3}: the new value equals the value before write() "
                               f"({_show(expected)}), so a stale read cannot be told from a fresh "
                               "one; make write() change the value")

    cached = _is_cached(client, key)
    result.invalidated = None if cached is None else not cached
    after = result.after_write = _read(read, client, key)
    state = ("write() left the key in the cache, and the read hit it" if cached and after.hits
             else "write() invalidated the key" if not cached else "")
    if predicate is not None:
        if not predicate(after.value):
            raise CacheAsideFailed(f"{STEP_3}: read() returned {_show(after.value)}, which "
                                   f"expect_after_write rejected" + (f"; {state}" if state else ""))
        return result
    if after.value != expected:
        stale = after.value == first.value
        what = "the value from before write() (stale)" if stale else "an unexpected value"
        hint = (f"; write() left the key {name!r} in the cache and the read hit it: delete the key "
                "(or update it) when writing") if cached and after.hits else ""
        raise CacheAsideFailed(f"{STEP_3}: read() returned {_show(after.value)}, {what}; the database "
                               f"has {_show(expected)}{hint}")
    return result
