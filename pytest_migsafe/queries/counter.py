"""Count SQL statements: :class:`QueryCounter` and :func:`count_queries`.

A counter receives every statement the driver hooks report through
:func:`pytest_migsafe.queries.dispatch.record_statement` while it is active, from any
thread or asyncio task. Usable without pytest::

    with count_queries() as counter:
        run_code()
    print(counter.count, counter.summary())
"""

from __future__ import annotations

import functools
import getpass
import operator
import os
import re
import sys
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_migsafe.django_settings import configured_setting
from pytest_migsafe.queries import callsite, dispatch, orm
from pytest_migsafe.queries.callsite import origin_of
from pytest_migsafe.queries.dispatch import settings, start, stop
from pytest_migsafe.queries.drivers import install
from pytest_migsafe.queries.repeats import AllowRule, RepeatTracker, paging_values
from pytest_migsafe.report.record import NPlusOne, QueryFigures, ShapeFigure
from pytest_migsafe.text import shorten
from pytest_migsafe.units import milliseconds


class FilterMatchedNothingWarning(UserWarning):
    """A filtered counter (``match=``, ``ignore=``, ``using=``) saw statements but matched none."""


def _database_names(using: str) -> set[str]:
    """``using`` and, when it is an alias in Django's configured ``DATABASES``, that database's name."""
    names = {using}
    try:
        name = configured_setting("DATABASES", {}).get(using, {}).get("NAME")
    except Exception:  # a DATABASES of another form: the name alone
        return names
    if name:
        names.add(str(name))
    return names


class NPlusOneWarning(UserWarning):
    """A statement shape repeated from one call site at least the N+1 threshold."""


@dataclass
class CapturedQuery:
    """One statement as the user's code sent it."""

    sql: str
    shape: str
    seconds: float
    call_site: str
    target: str
    batch_size: int = 1
    params: Any = None


@dataclass
class ShapeStats:
    """Aggregate of every statement of one shape: exact at any count.

    ``shape``: the readable shape (:func:`~pytest_migsafe.queries.normalize.normalize`) in
    what :meth:`QueryCounter.summary` gives; ``count``: statements; ``executions``: with the
    rows of ``executemany`` batches; ``total_seconds`` / ``max_seconds``: driver time (s);
    ``call_sites``: ``{path:line: statements}``; ``sample``: one text of the shape as kept.
    """

    shape: str
    count: int = 0
    executions: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0
    call_sites: dict[str, int] = field(default_factory=dict)
    sample: str = field(default="", repr=False, compare=False)

    def merge(self, other: ShapeStats) -> None:
        """Add the statements of ``other`` (another text of the same readable shape)."""
        self.count += other.count
        self.executions += other.executions
        self.total_seconds += other.total_seconds
        self.max_seconds = max(self.max_seconds, other.max_seconds)
        for site, n in other.call_sites.items():
            self.call_sites[site] = self.call_sites.get(site, 0) + n

    def copy(self) -> ShapeStats:
        """A copy that later statements leave as it is."""
        return replace(self, call_sites=dict(self.call_sites))

    def figure(self, shape: str | None = None) -> ShapeFigure:
        """The JSON-able figure of this shape for the report (``shape``: the shape to show, if
        not :attr:`shape`)."""
        return ShapeFigure(
            shape=self.shape if shape is None else shape,
            count=self.count,
            total_ms=milliseconds(self.total_seconds),
            max_ms=milliseconds(self.max_seconds),
            call_sites=dict(self.call_sites),
        )


# the totals are summed from the shapes when read (C-level: no generator frame); the hot
# path keeps per-shape figures only
_COUNT = operator.attrgetter("count")
_EXECUTIONS = operator.attrgetter("executions")
_SECONDS = operator.attrgetter("total_seconds")
_SAMPLE = operator.attrgetter("sample")

#: Figures whose shapes are worked out when read (:meth:`QueryCounter.figures` with
#: ``defer_shapes``) keep the counter's per-shape figures, with one text of each shape, until
#: then: those of a counter whose texts sum to more than this (characters) are worked out at once.
PENDING_TEXT_CHARS = 16_384
#: At most this many characters of text (summed over the figures whose shapes wait to be read)
#: are held at a time: beyond it, the oldest figures' shapes are worked out, and their texts let go.
PENDING_BUDGET_CHARS = 4 * 1024 * 1024

_pending: deque[tuple[weakref.ReferenceType[QueryFigures], int]] = deque()  # oldest first, with their texts' size
_pending_chars = 0
_pending_lock = threading.Lock()


def _hold_pending(figures: QueryFigures, chars: int) -> None:
    """Count ``figures``' texts (``chars``) against :data:`PENDING_BUDGET_CHARS`, working out
    the shapes of the oldest pending figures while over it."""
    global _pending_chars
    with _pending_lock:
        _pending.append((weakref.ref(figures), chars))
        _pending_chars += chars
        while _pending_chars > PENDING_BUDGET_CHARS and _pending:
            held, size = _pending.popleft()
            _pending_chars -= size
            oldest = held()
            if oldest is not None:
                oldest.shapes  # noqa: B018  (worked out now: the texts go)


def by_readable_shape(shapes: list[ShapeStats]) -> list[tuple[str, list[ShapeStats]]]:
    """``(readable shape, the ShapeStats of its keys)`` of ``shapes`` (a counter's, whose
    ``shape`` is a shape key), most statements first (then the most time, then the shape):
    the order of :meth:`QueryCounter.summary`."""
    # readable shape -> [-statements, -seconds, the shape, its ShapeStats]: sorted as it stands
    # (the shapes are unique, so the lists of ShapeStats are never compared)
    groups: dict[str, list[Any]] = {}
    for stats in shapes:
        shape = dispatch.readable_shape(stats.shape, stats.sample)
        entry = groups.get(shape)
        if entry is None:
            entry = groups[shape] = [0, 0.0, shape, []]
        entry[0] -= stats.count
        entry[1] -= stats.total_seconds
        entry[3].append(stats)
    return [(shape, group) for _, _, shape, group in sorted(groups.values())]


def shape_figures(shapes: list[ShapeStats]) -> list[ShapeFigure]:
    """The report's figure of each readable shape of ``shapes`` (a counter's, whose ``shape``
    is a shape key), in :meth:`QueryCounter.summary`'s order (no ShapeStats copies on the way)."""
    if len(shapes) == 1:  # the common case of one statement shape: no grouping, no sort
        stats = shapes[0]
        return [stats.figure(dispatch.readable_shape(stats.shape, stats.sample))]
    figures = []
    for shape, group in by_readable_shape(shapes):
        if len(group) == 1:
            figures.append(group[0].figure(shape))
        else:
            merged = ShapeStats(shape)
            for stats in group:
                merged.merge(stats)
            figures.append(merged.figure())
    return figures


def _warn_plainly(warning: Warning, filename: str, lineno: int) -> None:
    warnings.warn_explicit(warning, type(warning), filename, lineno)


#: Issues a :class:`FilterMatchedNothingWarning` at ``(filename, lineno)`` of the ``with``
#: statement; the pytest plugin replaces it with one that never fails a test.
notice: Callable[[Warning, str, int], None] = _warn_plainly


def sql_regex(pattern: str | re.Pattern[str], name: str) -> re.Pattern[str]:
    """``pattern`` (a regex on the SQL text, or a compiled one) compiled; ``TypeError`` naming
    ``name`` for anything else, a bytes pattern included (the SQL is text); ``re.error`` for
    a malformed one."""
    if isinstance(pattern, re.Pattern):
        if not isinstance(pattern.pattern, str):
            raise TypeError(f"{name}= expects a regular expression on the SQL text (str), "
                            f"got a bytes pattern {pattern.pattern!r}")
        return pattern
    if not isinstance(pattern, str):
        raise TypeError(f"{name}= expects a regular expression on the SQL text (str), got {pattern!r}")
    return re.compile(pattern)


class QueryCounter:
    """Counts the statements run while it is active; a context manager.

    ``match`` / ``ignore`` are regexes searched in the SQL text; ``using`` names a
    database (the last part of the connection target) or a Django ``DATABASES`` alias. A
    filtered counter that saw statements and matched none warns with
    :class:`FilterMatchedNothingWarning` when the block ends. The count, the per-shape
    aggregates and ``executions`` (rows of ``executemany`` batches summed) are exact;
    ``queries`` keeps the first ``keep`` statements and ``omitted`` says how many more ran
    (``keep=0``: a counter read for its figures only, which keeps no statement and counts no
    omission).
    """

    # a counter made by figures_only() keeps these class-level values
    match: re.Pattern[str] | None = None
    ignore: re.Pattern[str] | None = None
    using: str | None = None
    omitted = 0
    offered = 0
    _filtered = False
    _databases: set[str] | None = None
    _kept: list[tuple[Any, ...]] | tuple[()] = ()

    def __init__(
        self,
        *,
        match: str | None = None,
        ignore: str | None = None,
        using: str | None = None,
        include_transaction_control: bool | None = None,
        keep: int | None = None,
        track_repeats: bool = True,
    ) -> None:
        self.match = sql_regex(match, "match") if match else None
        self.ignore = sql_regex(ignore, "ignore") if ignore else None
        self.using = using
        self.include_transaction_control = (
            settings.include_transaction_control
            if include_transaction_control is None
            else include_transaction_control
        )
        self.keep = settings.keep if keep is None else keep
        self.omitted = 0
        self._kept = []
        self._shapes: dict[str, ShapeStats] = {}
        self._filtered = bool(self.match or self.ignore or using)
        self._databases = _database_names(using) if using is not None else None
        self.offered = 0  # statements a filtered counter was offered (matched or not)
        self._repeats = RepeatTracker() if track_repeats else None
        self._orm_load = self._repeats.load if self._repeats is not None else None

    @classmethod
    def figures_only(cls) -> QueryCounter:
        """A counter like ``QueryCounter(keep=0)``, made without its keyword handling: no filter,
        the configured transaction-control setting, the N+1 rule's evidence, no statement kept
        (what the pytest plugin counts each test's statements with when its figures are read).
        Its statements cost the per-shape figures on top of :class:`NPlusOneCounter`'s work."""
        return FiguresCounter()

    # -- lifecycle -------------------------------------------------------------
    def __enter__(self) -> QueryCounter:
        install()
        start(self)
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self)
        if not dispatch._active:
            orm.forget()
        if self._filtered and self.offered and not self.count and exc[0] is None:
            caller = sys._getframe(1)  # the with statement
            notice(FilterMatchedNothingWarning(
                f"count_queries({self._filter_text()}) matched none of the {self.offered} statements "
                f"that ran in the block: is the filter right? (using= takes a database name or a "
                f"Django alias; match=/ignore= are regexes searched in the SQL as sent)"),
                caller.f_code.co_filename, caller.f_lineno)

    def _filter_text(self) -> str:
        parts = [f"{name}={value!r}" for name, value in (
            ("match", self.match.pattern if self.match else None),
            ("ignore", self.ignore.pattern if self.ignore else None), ("using", self.using)) if value]
        return ", ".join(parts)

    # -- totals (summed from the shapes when read: the hot path keeps per-shape figures only) --
    @property
    def count(self) -> int:
        """Statements counted (the server's count: a text of several statements counts each)."""
        if self in dispatch._active:
            return sum(map(_COUNT, self._snapshot(copies=False)[0]))
        return sum(map(_COUNT, self._shapes.values()))  # stopped: no other thread adds to it

    @property
    def executions(self) -> int:
        """Executions: ``count`` with the rows of each ``executemany`` batch counted one by one."""
        return sum(map(_EXECUTIONS, self._snapshot(copies=False)[0]))

    @property
    def total_seconds(self) -> float:
        """Seconds the driver spent on the statements counted (s), summed."""
        return sum(map(_SECONDS, self._snapshot(copies=False)[0]))

    def _snapshot(self, copies: bool = True) -> tuple[list[ShapeStats], int]:
        """The :class:`ShapeStats` of each shape key and the statements beyond one of each round
        trip (:func:`~pytest_migsafe.queries.dispatch.extra_statements`), of one moment. While
        the counter is active (other threads may still add to it) they are taken under the
        capture's lock, as ``copies`` if asked (for a reader that goes on to read their call
        sites); else the counter's own."""
        if self in dispatch._active:
            with dispatch.recording:
                shapes = [stats.copy() for stats in self._shapes.values()] if copies else list(self._shapes.values())
                return shapes, dispatch.extra_statements(self)
        return list(self._shapes.values()), dispatch.extra_statements(self)

    # -- the hot path ----------------------------------------------------------
    def _accepts(self, sql: str, target: str) -> bool:
        self.offered += 1
        if self.match is not None and self.match.search(sql) is None:
            return False
        if self.ignore is not None and self.ignore.search(sql) is not None:
            return False
        return self._databases is None or dispatch.names_database(self._databases, target)

    def _add_to_shape(self, sql: str, shape: str, seconds: float, site: str, batch_size: int) -> None:
        """One statement into the figures of its shape key (``shape``: dispatch.shape_key's)."""
        stats = self._shapes.get(shape)  # shape: the shape key (dispatch.shape_key)
        if stats is None:
            stats = self._shapes[shape] = ShapeStats(shape, sample=sql)
        stats.count += 1
        stats.executions += batch_size
        stats.total_seconds += seconds
        if seconds > stats.max_seconds:
            stats.max_seconds = seconds
        sites = stats.call_sites
        sites[site] = sites.get(site, 0) + 1

    def _add(self, sql: str, shape: str, seconds: float, site: str, target: str,
             batch_size: int, params: Any) -> None:
        self._add_to_shape(sql, shape, seconds, site, batch_size)
        repeats = self._repeats
        if repeats is not None:
            load = orm.orm_load.get()
            if load is None:
                found = callsite._last.found  # the origin call_site found on its walk for this very site
                origin = found[1] if found[0] is site and found[1] is not None else origin_of(sys._getframe(1))
                repeats.statement(sql, shape, origin)
            elif load[1] not in repeats.load_sql:  # ORM loads are counted by their event; the SQL kept
                repeats.load_sql[load[1]] = sql  # for allow rules
        keep = self.keep
        if keep:  # (keep=0: the plugin's own counter, read for its figures only)
            kept = self._kept
            if len(kept) < keep:
                # a plain tuple here; CapturedQuery objects are built only when read
                kept.append((sql, shape, seconds, site, target, batch_size, params))  # type: ignore[union-attr]  # (a list when keep)
            else:
                self.omitted += 1

    # -- reading ---------------------------------------------------------------
    @property
    def queries(self) -> list[CapturedQuery]:
        """The first ``keep`` statements, in the order they completed (with readable shapes)."""
        readable = dispatch.readable_shape
        return [CapturedQuery(sql, readable(key, sql), *rest) for sql, key, *rest in self._kept]

    def summary(self) -> list[ShapeStats]:
        """Per-shape aggregates, most frequent first (then slowest), by readable shape.

        The statements are grouped by shape key as they run (no parser on the hot path);
        the readable shapes are worked out here, and keys of one readable shape merged."""
        merged = []
        for shape, group in self._by_readable_shape():
            one = ShapeStats(shape, sample=group[0].sample)
            for stats in group:
                one.merge(stats)
            merged.append(one)
        return merged

    def _by_readable_shape(self) -> list[tuple[str, list[ShapeStats]]]:
        """:func:`by_readable_shape` of the counter's shapes now (a snapshot's)."""
        return by_readable_shape(self._snapshot()[0])

    def n_plus_one(self, threshold: int = 10, allow: Iterable[AllowRule] = ()) -> list[NPlusOne]:
        """The N+1 suspects (see :mod:`pytest_migsafe.queries.repeats`), most repeats first.

        ORM lazy loads and deferred-column loads are suspects from the second parent row of
        one query; other statements when one shape repeats at least ``threshold`` times from
        one application function. ``allow`` holds ``(rule, max repeats)``: a relationship
        name (``"Order.customer"``, max parent rows), SQL text or a shape, or a regex searched
        case-insensitively in the shape and the SQL as sent; a suspect it covers within its
        repeats is kept but marked allowed. [] for a counter made with ``track_repeats=False``.
        """
        if self._repeats is None:
            return []
        return self._repeats.suspects(threshold, list(allow))

    def figures(self, *, budget: int | None = None, threshold: int = 10,
                allow: Iterable[AllowRule] = (), n_plus_one: list[NPlusOne] | None = None,
                defer_shapes: bool = False) -> QueryFigures:
        """The JSON-able record of this counter for the report (``n_plus_one``: the suspects
        :meth:`n_plus_one` already gave for ``threshold`` and ``allow``, not worked out again).
        The counts, times, shapes and round trips are of one moment (:meth:`_snapshot`).

        ``defer_shapes``, for a counter that has stopped and counts nothing more (the pytest
        plugin's counter of one test, when only the terminal summary reads the records): the
        readable shapes are worked out when read (:meth:`QueryFigures.shapes_when_read`; a
        summary that shows a few tests' parses theirs alone), from the counter's per-shape
        figures, which the figures keep (not the counter). At once for a counter still active,
        one whose texts sum to more than :data:`PENDING_TEXT_CHARS`, and the oldest pending
        figures while their texts sum to more than :data:`PENDING_BUDGET_CHARS`."""
        defer_shapes = defer_shapes and self not in dispatch._active
        shapes, extra = self._snapshot(copies=not defer_shapes)
        count = sum(map(_COUNT, shapes))
        if defer_shapes and shapes:  # (no shape: nothing to work out)
            chars = sum(map(len, map(_SAMPLE, shapes)))
            if chars <= PENDING_TEXT_CHARS:
                figures = QueryFigures.shapes_when_read(
                    functools.partial(shape_figures, shapes),
                    count, sum(map(_EXECUTIONS, shapes)), milliseconds(sum(map(_SECONDS, shapes))), budget,
                    self.n_plus_one(threshold, allow) if n_plus_one is None else n_plus_one,
                    count - extra if extra else None)
                _hold_pending(figures, chars)
                return figures
        return QueryFigures(
            count=count,
            executions=sum(map(_EXECUTIONS, shapes)),
            total_ms=milliseconds(sum(map(_SECONDS, shapes))),
            budget=budget,
            shapes=shape_figures(shapes),
            n_plus_one=self.n_plus_one(threshold, allow) if n_plus_one is None else n_plus_one,
            round_trips=count - extra if extra else None,
        )

    def describe(self, limit: int | None = 10, width: int = 120) -> str:
        """Statements grouped by shape, worst first: ``SHAPE xN at site`` lines."""
        shapes = self.summary()
        shown = shapes if limit is None else shapes[:limit]
        lines = []
        for stats in shown:
            sites = sorted(stats.call_sites.items(), key=lambda kv: -kv[1])
            where = ", ".join(f"{site}" + (f" (x{n})" if len(sites) > 1 else "")
                              for site, n in sites[:3])
            lines.append(f"  {shorten(stats.shape, width)} x{stats.count} at {where}")
        if len(shown) < len(shapes):
            lines.append(f"  ... and {len(shapes) - len(shown)} more shapes (use -v to see all)")
        if self.omitted:
            lines.append(f"  ({self.omitted} statements counted but not kept: the cap is {self.keep})")
        return "\n".join(lines)


_orm_load_now = orm.orm_load.get  # (bound once: the lean counter's hot path)
_last_walk = callsite._last  # the per-thread slot of the last call-site walk (never rebound)


class NPlusOneCounter:
    """Counts statements and collects the N+1 rule's evidence, and nothing else: what the
    plugin measures a test with when nothing reads the test's figures (no ``max_queries``
    budget, no report, JUnit XML or pytest-html). It keeps no shapes, timings, call-site
    counts or statements: a statement costs an increment and the N+1 rule's bookkeeping.

    Receives statements like a :class:`QueryCounter` (:func:`dispatch.start
    <pytest_migsafe.queries.dispatch.start>`); ``count`` (statements, exact: a text of several
    counts each) and :meth:`n_plus_one` read as :class:`QueryCounter`'s do.
    """

    _filtered = False  # no match=/ignore=/using= filter

    def __init__(self) -> None:
        self.include_transaction_control = settings.include_transaction_control
        self.count = 0
        self._repeats = repeats = RepeatTracker()
        self._orm_load = repeats.load
        self._statement = repeats.statement
        self._tally = repeats.tally  # (never rebound: emptied in place by fold)
        self._load_sql = repeats.load_sql

    def _add(self, sql: str, shape: str, seconds: float, site: str, target: str,
             batch_size: int, params: Any) -> None:
        self.count += 1
        load = _orm_load_now()
        if load is None:  # ORM loads are counted by their event
            found = _last_walk.found  # the origin call_site found on its walk for this very site
            origin = found[1] if found[0] is site and found[1] is not None else origin_of(sys._getframe(1))
            if origin.loop is not None:  # else the test's own arrangement: never a suspect
                seen = self._tally.get((shape, origin))  # RepeatTracker.statement, inline on a repeat
                if seen is None:
                    self._statement(sql, shape, origin)
                else:
                    seen[1] += 1
                    if len(seen) > 2:  # a page-shaped text: its paging values, read now
                        seen[4] = paging_values(seen[2], dispatch.statement_params)
        elif load[1] not in self._load_sql:
            self._load_sql[load[1]] = sql  # (for allow rules)

    def _accepts(self, sql: str, target: str) -> bool:
        return True  # (never asked: no filter)

    def n_plus_one(self, threshold: int = 10, allow: Iterable[AllowRule] = ()) -> list[NPlusOne]:
        """:meth:`QueryCounter.n_plus_one`: the N+1 suspects, most repeats first."""
        return self._repeats.suspects(threshold, list(allow))


class FiguresCounter(NPlusOneCounter, QueryCounter):
    """:meth:`QueryCounter.figures_only`: a :class:`QueryCounter` without filter and keeping no
    statement, whose statements go through :class:`NPlusOneCounter`'s bookkeeping (``count``
    a plain number, the N+1 rule's evidence tallied in line) plus the per-shape figures the
    report reads (:meth:`QueryCounter.figures`)."""

    count = 0  # (a plain number, counted by NPlusOneCounter._add under the capture's lock)
    _repeats: RepeatTracker  # (always: the N+1 rule's evidence)
    _orm_load: Callable[..., None]

    def __init__(self) -> None:
        NPlusOneCounter.__init__(self)
        self.keep = 0
        self._shapes = {}

    def _add(self, sql: str, shape: str, seconds: float, site: str, target: str,
             batch_size: int, params: Any) -> None:
        self._add_to_shape(sql, shape, seconds, site, batch_size)
        NPlusOneCounter._add(self, sql, shape, seconds, site, target, batch_size, params)


def count_queries(
    *,
    match: str | None = None,
    ignore: str | None = None,
    using: str | None = None,
    engine: Any = None,
    include_transaction_control: bool | None = None,
    keep: int | None = None,
) -> QueryCounter:
    """A :class:`QueryCounter` to use as ``with count_queries() as counter:``.

    ``engine`` (a SQLAlchemy Engine or AsyncEngine) is a shorthand for ``using=`` its database.
    """
    if engine is not None:
        using = database_of_engine(engine)
    return QueryCounter(match=match, ignore=ignore, using=using,
                        include_transaction_control=include_transaction_control, keep=keep)


def database_of_engine(engine: Any) -> str:
    """The database name that statements through ``engine`` are recorded under: the URL's
    database (a SQLite file's path as the URL gives it; ``:memory:`` for SQLite without one).
    A PostgreSQL URL without a database in its path names it as libpq finds it: a ``dbname``
    (or ``database``) query parameter, else ``$PGDATABASE``, else the user name (the URL's,
    ``$PGUSER``, the user running the tests): ``postgresql+psycopg://app@/?host=/run/pg&dbname=shop``
    is ``shop``. Raises ``TypeError`` for an object without a SQLAlchemy ``url``."""
    url = getattr(engine, "url", None)
    if url is None:
        raise TypeError(f"expected a SQLAlchemy Engine or AsyncEngine, got {type(engine).__name__}")
    if url.database:
        return str(url.database)
    if url.get_backend_name() != "postgresql":
        return ":memory:"
    query = url.query
    for key in ("dbname", "database"):
        value = query.get(key)
        if value:  # (a key given twice is a tuple: libpq takes the last)
            return str(value if isinstance(value, str) else value[-1])
    user = query.get("user")
    user = user if isinstance(user, str) or not user else user[-1]
    return (os.environ.get("PGDATABASE") or url.username or user or os.environ.get("PGUSER")
            or getpass.getuser())


