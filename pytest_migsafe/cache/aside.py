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

Statements that are not the cached read (an HTTP endpoint's authentication, which runs
its own SELECT on every request; a session touch; an audit insert) are named with
``allow_sql=``: a regular expression, or a list of them, searched case-insensitively in
each statement's SQL text as sent and in its normalized shape, as the N+1 allow rules
are. The statements they match are not counted in any step (the steps' messages say how
many were allowed); a rule that matched no statement in any step is reported with an
:class:`UnusedAllowSqlWarning` once the check has passed.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from pytest_migsafe.cache.hooks import probe_exists
from pytest_migsafe.cache.stats import CacheStats, key_text
from pytest_migsafe.queries.counter import count_queries
from pytest_migsafe.text import shorten

_UNSET: Any = object()

STEP_1 = "step 1 (first read should miss the cache and run SQL)"
STEP_2 = "step 2 (second read should hit the cache and run no SQL)"
STEP_3 = "step 3 (after write(), the next read should return the new value)"


AllowSql = Union[str, "re.Pattern[str]", Sequence[Union[str, "re.Pattern[str]"]], None]


class CacheAsideFailed(AssertionError):
    """One step of the cache-aside check failed (an ``AssertionError``); the message names
    the step (:data:`STEP_1`, :data:`STEP_2` or :data:`STEP_3`) and its figures."""


class UnusedAllowSqlWarning(UserWarning):
    """An ``allow_sql`` rule of ``assert_cache_aside`` matched no statement in any step: the
    statement it names no longer runs, or the rule is misspelt."""


def compile_allow_sql(allow_sql: AllowSql) -> list[re.Pattern[str]]:
    """The ``allow_sql`` rules as case-insensitive compiled patterns.

    ``allow_sql``: None, one regular expression (``str`` or ``re.Pattern``), or a list or
    tuple of them. Raises ``TypeError`` for anything else and ``ValueError`` naming a
    pattern that does not compile.
    """
    if allow_sql is None:
        return []
    rules = [allow_sql] if isinstance(allow_sql, (str, re.Pattern)) else allow_sql
    if not isinstance(rules, (list, tuple)):
        raise TypeError(f"allow_sql expects a regular expression or a list of them, got {allow_sql!r}")
    compiled = []
    for rule in rules:
        if isinstance(rule, re.Pattern):
            compiled.append(rule if rule.flags & re.I else re.compile(rule.pattern, rule.flags | re.I))
        elif isinstance(rule, str):
            try:
                compiled.append(re.compile(rule, re.I))
            except re.error as exc:
                raise ValueError(f"allow_sql rule {rule!r} is not a regular expression: {exc}") from None
        else:
            raise TypeError(f"allow_sql expects regular expressions (str or re.Pattern), got {rule!r}")
    return compiled


@dataclass
class ReadStep:
    """One call of ``read()``: what it returned, its hits and misses on the key, its SQL.

    ``hits`` / ``misses``: keyspace hits and misses of the checked key alone, from the
    client-side accounting (``CacheStats.by_key``); ``statements``: SQL statements counted
    by :func:`~pytest_migsafe.queries.counter.count_queries` during the call, less those an
    ``allow_sql`` rule matched (``allowed``); ``sql``: the counted statements grouped by
    shape (at most 5 shapes), for messages; ``matched``: per ``allow_sql`` rule, how many
    statements it matched.
    """

    value: Any
    hits: int
    misses: int
    statements: int
    sql: str = ""  # the statements grouped by shape, for messages
    allowed: int = 0
    matched: list[int] = field(default_factory=list)


@dataclass
class CacheAsideResult:
    """What each step observed (returned when every step passed).

    ``first`` / ``second``: the two reads before ``write()``; ``after_write``: the read
    after it (None without ``write``); ``invalidated``: True when ``write()`` removed the
    key, False when it kept (updated) it, None when not checked or the probe could not
    tell; ``notes``: a list of strings, empty unless a step adds one; ``unused_allow_sql``:
    the patterns (``str``) of the ``allow_sql`` rules that matched no statement.
    """

    first: ReadStep
    second: ReadStep
    after_write: ReadStep | None = None
    invalidated: bool | None = None  # True: write() removed the key; False: it kept (updated) it
    notes: list[str] = field(default_factory=list)
    unused_allow_sql: list[str] = field(default_factory=list)


def _show(value: Any, width: int = 200) -> str:
    return shorten(repr(value), width)


def _split(counter: Any, allow: Sequence[re.Pattern[str]]) -> tuple[list[Any], int, list[int], int]:
    """``(counted statements kept, allowed count, matches per rule, counted but not kept)``.

    A shape an allow rule matches allows every statement of it (shapes are exact at any
    count); otherwise each kept statement's SQL text is searched. Statements of a shape no
    rule matches that the counter did not keep (over its cap) are counted.
    """
    matched = [0] * len(allow)
    kept = counter.queries
    counted: list[Any] = []
    allowed = unkept = 0
    for stats in counter.summary():
        of_shape = [query for query in kept if query.shape == stats.shape]
        hit = next((i for i, rule in enumerate(allow) if rule.search(stats.shape)), None)
        if hit is not None:
            matched[hit] += stats.count
            allowed += stats.count
            continue
        for query in of_shape:
            rule_index = next((i for i, rule in enumerate(allow) if rule.search(query.sql)), None)
            if rule_index is None:
                counted.append(query)
            else:
                matched[rule_index] += 1
                allowed += 1
        unkept += stats.count - len(of_shape)
    return counted, allowed, matched, unkept


def _describe(queries: Sequence[Any], unkept: int, limit: int = 5, width: int = 120) -> str:
    """Statements grouped by shape, most first: ``SHAPE xN at site`` lines."""
    groups: dict[str, list[Any]] = {}
    for query in queries:
        groups.setdefault(query.shape, []).append(query)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    lines = []
    for shape, items in ordered[:limit]:
        sites: dict[str, int] = {}
        for query in items:
            sites[query.call_site] = sites.get(query.call_site, 0) + 1
        where = ", ".join(site + (f" (x{n})" if len(sites) > 1 else "") for site, n in list(sites.items())[:3])
        lines.append(f"  {shorten(shape, width)} x{len(items)} at {where}")
    if len(ordered) > limit:
        lines.append(f"  ... and {len(ordered) - limit} more shapes")
    if unkept:
        lines.append(f"  ({unkept} more statements counted but not kept)")
    return "\n".join(lines)


def _read(read: Callable[[], Any], client: Any, key: Any, allow: Sequence[re.Pattern[str]] = ()) -> ReadStep:
    with count_queries() as counter, CacheStats(client, track_keys=[key]) as stats:
        value = read()
    tally = stats.by_key[key_text(key)]
    counted, allowed, matched, unkept = _split(counter, allow)
    return ReadStep(value=value, hits=tally.hits, misses=tally.misses, statements=counter.count - allowed,
                    sql=_describe(counted, unkept), allowed=allowed, matched=matched)


def _statements(step: ReadStep, allow: Sequence[re.Pattern[str]] = ()) -> str:
    noun = "statement" if step.statements == 1 else "statements"
    text = f"{step.statements} {noun} ran" + (f":\n{step.sql}" if step.sql else "")
    if step.allowed:
        text += f"\n  ({step.allowed} more allowed by allow_sql)"
    elif allow:
        text += "\n  (allow_sql matched none of them: " + ", ".join(repr(rule.pattern) for rule in allow) + ")"
    else:
        text += ("\n  (statements that are not the cached read, such as an authentication query, "
                 "can be named with allow_sql=)")
    return text


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
    allow_sql: AllowSql = None,
    warn_unused_allow: bool = True,
) -> CacheAsideResult:
    """Run the three steps; raise :class:`CacheAsideFailed` naming the first step that fails.

    ``read`` / ``write`` / ``fresh`` are callables taking no argument; ``key`` the Redis
    key (``str`` or ``bytes``) the read path caches; ``client`` a redis-py or fakeredis
    client on the server the code under test uses (its hits and misses are measured
    there, so the code may use its own client). ``expect_after_write`` is the value the
    read after ``write()`` must return, or a callable that takes that value and returns
    True when it is right. Without it the new value is ``fresh()`` (a read that bypasses
    the cache), else what ``write()`` returned. Without ``write`` only steps 1 and 2 run.
    ``allow_sql``: statements that are not the cached read (see the module docstring), not
    counted in any step; with ``warn_unused_allow`` a rule that matched nothing is warned
    about (:class:`UnusedAllowSqlWarning`, ``warnings.warn`` at the caller) after a pass,
    and listed in the result's ``unused_allow_sql`` either way.

    Returns a :class:`CacheAsideResult`. Raises :class:`CacheAsideFailed` when the key
    is cached before the first read, a step's hits, misses or statement count are wrong,
    or the read after the write is stale; ``ValueError`` when the new value cannot be
    told (no ``expect_after_write``, no ``fresh``, and ``write()`` returned None) or an
    ``allow_sql`` pattern does not compile; ``TypeError`` for an ``allow_sql`` that is not
    patterns. Exceptions from ``read``, ``write`` or ``fresh`` propagate unchanged.
    """
    allow = compile_allow_sql(allow_sql)
    result = _check(read, key, write, client, fresh, expect_after_write, allow)
    steps = [step for step in (result.first, result.second, result.after_write) if step is not None]
    result.unused_allow_sql = [rule.pattern for i, rule in enumerate(allow)
                               if not any(step.matched[i] for step in steps)]
    if warn_unused_allow:
        for text in unused_allow_messages(result):
            warnings.warn(UnusedAllowSqlWarning(text), stacklevel=2)
    return result


def unused_allow_messages(result: CacheAsideResult) -> list[str]:
    """One warning text per ``allow_sql`` rule of ``result`` that matched no statement."""
    return [f"assert_cache_aside: allow_sql rule {pattern!r} matched no statement in any step; "
            "remove it, or fix it to match the statement it should allow" for pattern in result.unused_allow_sql]


def _check(read: Callable[[], Any], key: Any, write: Callable[[], Any] | None, client: Any,
           fresh: Callable[[], Any] | None, expect_after_write: Any,
           allow: Sequence[re.Pattern[str]]) -> CacheAsideResult:
    name = key_text(key)
    if _is_cached(client, key):
        raise CacheAsideFailed(f"{STEP_1}: the key {name!r} is already in the cache before the first "
                               "read; start from an empty cache (migsafe_redis is flushed before each test)")

    first = _read(read, client, key, allow)
    if first.hits + first.misses == 0:
        raise CacheAsideFailed(f"{STEP_1}: read() never read the key {name!r} from this client's Redis "
                               "server; does it use that key, and a client on the same server?")
    if first.hits:
        raise CacheAsideFailed(f"{STEP_1}: the key {name!r} was a cache hit ({first.hits} hits, "
                               f"{first.misses} misses)")
    if first.statements == 0:
        allowed = (f" ({first.allowed} statements ran, all allowed by allow_sql: does a rule also match "
                   "the cached read's own query?)") if first.allowed else ""
        raise CacheAsideFailed(f"{STEP_1}: the key {name!r} missed but no SQL statement ran{allowed}; "
                               "read() should load the value from the database on a miss")
    if not _is_cached(client, key):
        raise CacheAsideFailed(f"{STEP_1}: after the miss, read() did not store the key {name!r} in the cache")

    second = _read(read, client, key, allow)
    if second.misses or not second.hits:
        raise CacheAsideFailed(f"{STEP_2}: the key {name!r} had {second.hits} hits and "
                               f"{second.misses} misses")
    if second.statements:
        raise CacheAsideFailed(f"{STEP_2}: {_statements(second, allow)}")
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
    after = result.after_write = _read(read, client, key, allow)
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
