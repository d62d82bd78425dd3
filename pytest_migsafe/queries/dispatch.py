"""The one dispatch every driver hook calls, and the registry of active counters.

Driver hooks (:mod:`pytest_migsafe.queries.sqlalchemy`, :mod:`pytest_migsafe.queries.psycopg`)
call :func:`record_statement` once per round trip whose statements the server ran, after
checking ``_active`` (a plain tuple read: the cost of a statement when nothing counts).
Active counters are global, not per thread or task, so statements run by other threads
and asyncio tasks while a counter is active count for it. This module imports no driver
and no counter class: the counters are handed to :func:`start`.

A string holding several statements is counted as the server counts it: one statement
per part (split by :func:`pytest_migsafe.queries.normalize.statement_spans`), each with its
own text and shape, all from one round trip (:func:`round_trips`).

The shape of each distinct text is cached in a dict bounded by bytes
(``SHAPES_BYTES``); a text longer than ``normalize.DIGEST_KEY_CHARS`` is cached under a
digest of its text, so the cache never keeps a long SQL text alive.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_migsafe.queries.callsite import call_site


class StatementReceiver(Protocol):
    """What receives statements while active: a :class:`~pytest_migsafe.queries.counter.QueryCounter`
    or the plugin's :class:`~pytest_migsafe.queries.counter.NPlusOneCounter`."""

    include_transaction_control: bool
    _filtered: bool

    @property
    def count(self) -> int:
        """Statements received."""

    def _accepts(self, sql: str, target: str) -> bool:
        """Whether a filtered receiver takes the statement (called only when ``_filtered``)."""

    def _add(self, sql: str, shape: str, seconds: float, site: str, target: str,
             batch_size: int, params: Any) -> None:
        """Receive one statement."""


@dataclass
class CaptureSettings:
    """Session-wide capture settings; the plugin sets them from options and ini."""

    keep: int = 10_000
    include_transaction_control: bool = False
    capture_params: bool = False


settings = CaptureSettings()


def target_database(target: str) -> str:
    """The database of a statement's target (``backend://host:port/database``): a name, or a
    SQLite file's path as the engine's URL gives it (``/tmp/shop.db``)."""
    return target.split("/", 3)[-1]


def names_database(names: set[str] | frozenset[str], target: str) -> bool:
    """True when one of ``names`` is ``target``'s database: its name, a SQLite file's path, or
    that file's name alone (``shop.db``)."""
    database = target_database(target)
    return database in names or database.rsplit("/", 1)[-1] in names


# -- the registry of active counters ------------------------------------------------
# re-entrant: a finalizer that the garbage collector runs during a hand-over, on the same
# thread, may send a statement (it is recorded, not hung on the lock)
_lock = threading.RLock()
#: Held while statements are handed to the counters: a reader that groups a counter's
#: evidence while other threads may still send statements to it holds it too
recording = _lock
_active: tuple[StatementReceiver, ...] = ()
#: An active counter receives transaction control statements (``include_transaction_control``).
#: When none does, the driver hooks call the driver straight for a text of ``BEGIN``,
#: ``SAVEPOINT`` or ``COMMIT`` statements: no call-site walk, no timing, nothing handed over
#: (no counter would receive it)
control_wanted = False


def start(counter: StatementReceiver) -> None:
    """Make ``counter`` receive statements (the caller installs the driver hooks)."""
    global _active, control_wanted
    with _lock:
        _active = (*_active, counter)
        control_wanted = control_wanted or bool(counter.include_transaction_control)


def stop(counter: StatementReceiver) -> None:
    """Stop ``counter`` from receiving statements."""
    global _active, control_wanted
    with _lock:
        if len(_active) == 1 and _active[0] is counter:  # the common case: a test's one counter
            _active = ()
            control_wanted = False
        else:
            _active = tuple(c for c in _active if c is not counter)
            control_wanted = any(c.include_transaction_control for c in _active)


def is_active() -> bool:
    """True while at least one counter is active (driver hooks check this first)."""
    return bool(_active)


# -- round trips --------------------------------------------------------------------
# statements a counter received beyond the first of their round trip (strings of
# several statements only: the per-statement path never touches this)
_extra_statements: weakref.WeakKeyDictionary[StatementReceiver, int] = weakref.WeakKeyDictionary()
# no counter ever received one (the common case): read as 0 without a look-up (a weak
# dictionary's get() makes a weak reference, in Python, at every figure read)
_no_extra_statements = True


def round_trips(counter: StatementReceiver) -> int:
    """Round trips that brought ``counter`` at least one statement.

    Equal to ``counter.count`` except for strings of several statements, which the
    server runs (and ``count`` counts) as several statements sent in one round trip.
    An ``executemany`` is one statement and one round trip.
    """
    with _lock:  # (the count and the extras of one moment: another thread may be adding to both)
        return int(counter.count) - extra_statements(counter)


def extra_statements(counter: StatementReceiver) -> int:
    """Statements ``counter`` received beyond the first of each round trip (the rest of the
    strings of several statements): ``counter.count - round_trips(counter)``."""
    if _no_extra_statements:
        return 0
    return _extra_statements.get(counter, 0)


# -- shapes -------------------------------------------------------------------------
#: A statement text longer than this (in characters) is handed to the counters cut to its
#: first ``KEPT_PREFIX_CHARS`` characters followed by ``" ... (N characters)"``, so that a test
#: sending large statements does not keep them all alive until it ends (a counter keeps the
#: text of the statements it received). ``match``/``ignore`` filters still see the whole text.
KEEP_TEXT_CHARS = 65_536
KEPT_PREFIX_CHARS = 4_096


def exact_text(statement: object) -> str:
    """A statement as a plain ``str``, worked out without calling any method the statement's
    own class defines (the plugin never evaluates objects it does not own: a ``str``
    subclass whose ``__hash__``, ``__eq__`` or ``__str__`` raise is sent by the driver all
    the same): a ``str`` subclass copied as ``str``, ``bytes`` decoded as UTF-8 (errors
    replaced), anything else ``<TypeName statement>``."""
    if isinstance(statement, str):
        return str.__str__(statement)  # (an exact str: a subclass's data, copied)
    if isinstance(statement, (bytes, bytearray, memoryview)):
        return bytes(statement).decode("utf-8", "replace")
    return f"<{type(statement).__name__} statement>"


def kept_text(sql: str) -> str:
    """``sql`` as the counters keep it: whole up to ``KEEP_TEXT_CHARS``, else its first
    ``KEPT_PREFIX_CHARS`` characters and ``" ... (N characters)"`` (N: the whole length)."""
    if len(sql) <= KEEP_TEXT_CHARS:
        return sql
    return f"{sql[:KEPT_PREFIX_CHARS]} ... ({len(sql):,} characters)"


#: Upper bound of the memory the shape cache accounts for, in bytes (keys, shapes and
#: per-entry overhead as ``sys.getsizeof`` measures them); the oldest entries go first
#: (first in, first out: a hit moves nothing).
SHAPES_BYTES = 16 * 1024 * 1024

# One part of a string of several statements: (start, end, shape key, is transaction control).
Part = tuple[int, int, str, bool]
# (shape key, is transaction control, parts): parts is None for a text holding one
# statement, () for one holding none (blank or comments), else one Part per statement.
# The shape key is what statements are grouped by as they run: see shape_key() and readable_shape().
Entry = tuple[str, bool, tuple[Part, ...] | None]


class ReadableShape(str):
    """A shape key that is the readable shape already (that of a text longer than
    ``KEEP_TEXT_CHARS``: see :func:`shape_key`)."""

    __slots__ = ()


class TextDigest(str):
    """The shape key of a text longer than ``normalize.DIGEST_KEY_CHARS`` and kept whole by the
    counters (up to ``KEEP_TEXT_CHARS``): the hex BLAKE2b digest of the text (see :func:`shape_key`)."""

    __slots__ = ()


def shape_key(text: str) -> str:
    """What statements are grouped by as they run, without a parser: the text itself (a loop
    of parametrized statements sends one text); for a text longer than
    ``normalize.DIGEST_KEY_CHARS``, the digest of the text (a :class:`TextDigest`: the shape
    cache keeps no long text alive; the counters keep the text, whole, and its readable shape
    is worked out when shown, like a short one's); for a text longer than ``KEEP_TEXT_CHARS``,
    which the counters keep cut, its readable shape (a :class:`ReadableShape`, the parser run
    now). Never coarser than the readable shape: texts that differ only in their literal
    values are merged when shown (see :func:`readable_shape`), never two statements that differ."""
    from pytest_migsafe.queries.normalize import DIGEST_KEY_CHARS, normalize, text_key

    if len(text) <= DIGEST_KEY_CHARS:
        return text
    if len(text) <= KEEP_TEXT_CHARS:
        return TextDigest(text_key(text).hex())  # type: ignore[union-attr]  # (bytes: a long text's digest)
    return ReadableShape(normalize(text))


def readable_shape(key: str, text: str) -> str:
    """The shape to show for the statements of shape key ``key``, one of whose texts (as the
    counters keep it) is ``text``: :func:`~pytest_migsafe.queries.normalize.normalize`'s,
    worked out only here, when a shape is shown (sqlglot is imported at the first)."""
    global _normalize
    if type(key) is ReadableShape:
        return str(key)
    if _normalize is None:  # the first shape shown: the module imported here, once (an import
        # statement run per call costs the import machinery's look-up each time)
        from pytest_migsafe.queries.normalize import normalize

        _normalize = normalize
    return _normalize(text)


_normalize: Callable[[str], str] | None = None  # normalize.normalize, once readable_shape loaded it

# text (or digest of a long text) -> Entry; a hit is one lookup in a plain dict
_shapes: dict[str | bytes, Entry] = {}
_shape_costs: dict[str | bytes, int] = {}
_shape_order: deque[str | bytes] = deque()  # keys, oldest first: evicted first
_shapes_bytes = 0
_ENTRY_OVERHEAD = 200  # the entry tuple, the dict slots, the cost record: roughly, in bytes


def entry_of(sql: str) -> Entry:
    """``(shape key, is transaction control, parts)`` of a SQL text; see ``Entry``.

    From the cache after the first time; a miss gives the text (and each of its statements
    when it holds several) its :func:`shape_key`. A text longer than ``normalize.DIGEST_KEY_CHARS``
    costs a digest (about 1 us per kB) on every call.
    """
    entry = _shapes.get(sql)
    if entry is not None:
        return entry
    from pytest_migsafe.queries.normalize import (  # loaded at the first statement
        is_transaction_control,
        statement_spans,
        text_key,
    )

    key = text_key(sql)
    if key is not sql:
        entry = _shapes.get(key)
        if entry is not None:
            return entry
    spans = statement_spans(sql)
    if len(spans) == 1:
        entry = (shape_key(sql), is_transaction_control(sql), None)
        cost = sys.getsizeof(entry[0])
    elif not spans:
        entry = ("", False, ())
        cost = 0
    else:
        parts = []
        for start, end in spans:
            text = sql[start:end]
            parts.append((start, end, shape_key(text), is_transaction_control(text)))
        entry = ("; ".join(p[2] for p in parts), all(p[3] for p in parts), tuple(parts))
        cost = sys.getsizeof(entry[0]) + sum(sys.getsizeof(p[2]) + 120 for p in parts)
    _remember(key, entry, cost + sys.getsizeof(key) + _ENTRY_OVERHEAD)
    return entry


def _remember(key: str | bytes, entry: Entry, cost: int) -> None:
    global _shapes_bytes
    if cost > SHAPES_BYTES:
        return
    with _lock:
        if key in _shape_costs:  # computed twice at once (two threads): keep the first
            return
        while _shape_order and _shapes_bytes + cost > SHAPES_BYTES:
            evicted = _shape_order.popleft()
            _shapes_bytes -= _shape_costs.pop(evicted)
            del _shapes[evicted]
        _shapes[key] = entry
        _shape_costs[key] = cost
        _shape_order.append(key)
        _shapes_bytes += cost


def shapes_bytes() -> int:
    """Bytes the shape cache accounts for now (at most ``SHAPES_BYTES``)."""
    return _shapes_bytes


def clear_shapes() -> None:
    """Empty the shape cache (benchmarks and tests)."""
    global _shapes_bytes
    with _lock:
        _shapes.clear()
        _shape_costs.clear()
        _shape_order.clear()
        _shapes_bytes = 0


def shape_of(sql: str) -> tuple[str, bool]:
    """``(readable shape, is transaction control)`` of a statement."""
    entry = entry_of(sql)
    return readable_shape(entry[0], sql), entry[1]


def parts_of(sql: str) -> tuple[Part, ...] | None:
    """The statements of a text holding several (``()`` for none), None for one statement."""
    return entry_of(sql)[2]


# -- recording ----------------------------------------------------------------------
def record_statement(sql: str, seconds: float, target: str, batch_size: int = 1,
                     params: Any = None, site: str | None = None) -> None:
    """Record one round trip the server ran in full, for every active counter.

    Called by the driver hooks once the server has answered. ``seconds`` is the round
    trip's duration (s); ``batch_size`` the executions of an ``executemany`` (one
    statement); ``site`` the call site (default: the caller's user frame). A text of
    several statements counts one statement per part, each with its own text and shape
    and an equal share of ``seconds``. A blank text (whitespace, comments) counts
    nothing: the server runs nothing for it. The counters receive :func:`kept_text` of
    each text. For a round trip the server ran only partly, see :func:`record_entry`.
    """
    if not _active:
        return
    if type(sql) is not str:  # a str subclass, bytes, ...: never hashed or compared as given
        sql = exact_text(sql)
    entry = _shapes.get(sql)
    if entry is None:
        entry = entry_of(sql)
    if site is None:
        site = call_site(sys._getframe(1))
    record_entry(sql, entry, seconds, target, batch_size, params, site)


def record_load(counters: tuple[StatementReceiver, ...], load: tuple[str, str], parent: int, loaded: Any,
                origin: Any, direction: str | None) -> None:
    """Hand one ORM load (``load = (kind, "Class.attribute")`` of the row numbered ``parent``,
    :mod:`~pytest_migsafe.queries.orm` and :mod:`~pytest_migsafe.queries.django`) to those of
    ``counters`` (those active as the load began) that collect the N+1 rule's evidence
    (``_orm_load``) and are still active, under :data:`recording` as statements are: a reader
    of the suspects on another thread (``n_plus_one()`` of a counter still active) sees whole
    loads and no dictionary growing under it, and a counter stopped meanwhile gets nothing."""
    with _lock:
        active = _active  # (read under the lock: a counter stopped since the load began gets nothing)
        for counter in counters:
            if counter not in active:
                continue
            record = getattr(counter, "_orm_load", None)
            if record is not None:
                record(load, parent, loaded, origin, direction)


#: The parameters of the statement being handed to the counters (under the capture's lock,
#: None otherwise, whatever ``capture_params`` says): the N+1 rule reads those of a read shaped
#: like a page, to tell pages (an OFFSET or keyset bound that moves on) from a per-row loop.
statement_params: Any = None


def record_entry(sql: str, entry: Entry, seconds: float, target: str, batch_size: int,
                 params: Any, site: str, ran: int | None = None) -> None:
    """:func:`record_statement` for a caller that already has ``entry = entry_of(sql)``
    (no second lookup: for a long text that is a digest) and knows how much ran.

    ``ran``: of a text of several statements, how many the server ran, the first ones
    (default: all of them); ignored for a text of one statement (which ran).
    """
    if not _active:
        return
    shape, control, parts = entry
    kept = params if settings.capture_params else None
    if parts is not None:
        _record_parts(sql, parts, seconds, target, batch_size, kept, site, ran)
        return
    text = sql if len(sql) <= KEEP_TEXT_CHARS else kept_text(sql)
    global statement_params
    with _lock:
        statement_params = params
        # the counters active now, read under the lock as stop() changes them: a counter that
        # stopped since the read above receives nothing after its stop() returned (its
        # figures, which its readers then take without the lock, never change again)
        for counter in _active:
            if control and not counter.include_transaction_control:
                continue
            if counter._filtered and not counter._accepts(sql, target):
                continue
            counter._add(text, shape, seconds, site, target, batch_size, kept)
        statement_params = None


def _record_parts(sql: str, parts: tuple[Part, ...], seconds: float, target: str, batch_size: int,
                  kept: Any, site: str, ran: int | None) -> None:
    global _no_extra_statements
    n = len(parts) if ran is None else ran
    if n <= 0 or not parts:
        return
    # the first n parts ran; should the server have run more than the split found,
    # the last part stands for the rest (the server's count is the truth)
    chosen = [parts[min(i, len(parts) - 1)] for i in range(n)]
    texts = [sql[start:end] for start, end, _, _ in chosen]
    share = seconds / n
    with _lock:
        for counter in _active:  # (read under the lock: see record_entry)
            added = 0
            for text, (_, _, shape, control) in zip(texts, chosen):
                if control and not counter.include_transaction_control:
                    continue
                if counter._filtered and not counter._accepts(text, target):
                    continue
                counter._add(kept_text(text), shape, share, site, target, batch_size, kept)
                added += 1
            if added > 1:
                _extra_statements[counter] = _extra_statements.get(counter, 0) + added - 1
                _no_extra_statements = False
