"""The data model: what one test measured, and what a whole run measured.

Capture, cache, pool and shadow code fill these records; the report code renders and
compares them. Every record converts to and from plain JSON-able dicts, so that
pytest-xdist workers can send them to the controller and baselines can store them.
Records hold no SQL parameter values unless the user opted in at capture time.

Units: durations are milliseconds (``*_ms``, rounded to 0.001 ms), hit rates fractions
from 0 to 1, everything else a count. A call site is ``path:line`` of the first frame in
the user's code (:func:`pytest_migsafe.queries.callsite.call_site`). :data:`SCHEMA_VERSION`
is the version of the JSON form, checked when a run report file is read.

``from_dict`` checks every field it reads (a run report file can be edited by hand, and
``migsafe report diff`` is a CI gate): counts are whole numbers >= 0 and not true or false,
durations and rates finite numbers (no NaN or infinity), strings strings, lists lists,
objects objects; a malformed field raises ``ValueError`` whose message starts with its path
in the JSON, such as ``tests["t.py::a"].queries.count: expected a whole number >= 0, got 'x'``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar

SCHEMA_VERSION = 1

T = TypeVar("T")
Check = Callable[[Any, str], Any]  # (value, its path in the JSON) -> the value, or ValueError


# -- the checks of from_dict (the public ones also check the rest of a run report file, in
# pytest_migsafe.report.files): each takes a value and its path in the JSON (``tests["t.py::a"]
# .queries.count``), returns the value, and raises ValueError "<path>: expected ..., got ...".
# A file is read by json.loads, which lets NaN, Infinity and 1e999 through as floats: the
# number checks refuse them.
def shown(value: Any) -> str:
    """A value as an error message shows it: JSON's names for null, true and false, a
    string quoted (cut after 60 characters), a number as Python writes it (``nan``,
    ``inf``), a list or an object by its kind (``a list of 2``)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:60]) + "..."
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _key(where: str, key: str) -> str:
    """The path of an object's member: ``tests["t.py::a"]``, the key as JSON writes it."""
    return f"{where}[{json.dumps(key, ensure_ascii=False)}]"


def _member(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def is_finite_number(value: Any) -> bool:
    """True for an int or a finite float (not a bool, not NaN or an infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Scalar:
    """A check of one JSON value: ``accepts`` it or raises ``ValueError("<where>: expected
    <expected>, got <value>")``; the value is returned as it is (an int ``total_ms`` stays
    an int, so a file read and written back is the same)."""

    expected: str
    accepts: Callable[[Any], bool]

    def __call__(self, value: Any, where: str) -> Any:
        if not self.accepts(value):
            raise ValueError(f"{where}: expected {self.expected}, got {shown(value)}")
        return value

    def or_null(self) -> Scalar:
        """The same check, letting null (None) through."""
        return Scalar(f"{self.expected} or null", lambda value: value is None or self.accepts(value))


_count = Scalar("a whole number >= 0", lambda value: _is_whole(value) and value >= 0)
_whole = Scalar("a whole number", _is_whole)
_ms = Scalar("a number >= 0", lambda value: is_finite_number(value) and value >= 0)
_rate = Scalar("a rate between 0 and 1", lambda value: is_finite_number(value) and 0 <= value <= 1)
_text = Scalar("a string", lambda value: isinstance(value, str))
_flag = Scalar("true or false", lambda value: isinstance(value, bool))


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {shown(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list, got {shown(value)}")
    return value


def list_of(check: Check) -> Check:
    """A list whose every item passes ``check`` (as ``where[index]``); a new list."""
    def checked(value: Any, where: str) -> list[Any]:
        return [check(item, f"{where}[{index}]") for index, item in enumerate(_list(value, where))]
    return checked


def _object_of(check: Check) -> Check:
    """An object whose every value passes ``check`` (as ``where["key"]``); a new dict."""
    def checked(value: Any, where: str) -> dict[str, Any]:
        return {key: check(item, _key(where, key)) for key, item in _object(value, where).items()}
    return checked


def _tally(value: Any, where: str) -> list[int]:
    """``[hits, misses]``, two whole numbers >= 0."""
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{where}: expected [hits, misses], got {shown(value)}")
    return [_count(value[0], f"{where}[0]"), _count(value[1], f"{where}[1]")]


def _hold_times(value: Any, where: str) -> dict[str, Any]:
    """The hold-time histogram of :meth:`pytest_migsafe.pool.holds.HoldTimes.to_dict`:
    ``buckets`` (``{"<bound in us>": count}``), ``count``, ``total_us``, ``max_us``, each
    present or not (an empty object: no histogram); other keys are kept unread."""
    data = dict(_object(value, where))
    if "buckets" in data:
        buckets = _object(data["buckets"], f"{where}.buckets")
        for bound, count in buckets.items():
            if not (bound.isascii() and bound.isdigit()):
                raise ValueError(f"{_key(where + '.buckets', bound)}: expected a bound in whole microseconds, "
                                 f"got {shown(bound)}")
            _count(count, _key(f"{where}.buckets", bound))
    for name in ("count", "total_us", "max_us"):
        if name in data:
            _count(data[name], f"{where}.{name}")
    return data


def _object_or_null(build: Callable[[Any, str], T]) -> Callable[[Any, str], T | None]:
    """``build`` (a ``from_dict(data, where)``) for an object, None for null; ``ValueError``
    for anything else."""
    def checked(value: Any, where: str) -> T | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object or null, got {shown(value)}")
        return build(value, where)
    return checked


_SHADOW_RESULT = Scalar("'matched', 'mismatched' or 'ignored'",
                        lambda value: value in ("matched", "mismatched", "ignored"))


def object_fields(data: Any, where: str, checks: dict[str, Check], required: tuple[str, ...] = (), *,
                  unknown: bool = False) -> dict[str, Any]:
    """The members of the JSON object ``data`` named in ``checks``, each checked with its
    check (as ``where.name``) and returned as the check returned it.

    Raises ``ValueError`` naming ``where`` for a ``data`` that is no object, a missing
    ``required`` member, or (unless ``unknown``: such keys are then ignored) a key that is
    not in ``checks``."""
    data = _object(data, where)
    if not unknown:
        for key in data:
            if key not in checks:
                raise ValueError(f"{where}: unknown key {key!r}")
    for name in required:
        if name not in data:
            raise ValueError(f"{where}: missing {name!r}")
    return {name: check(data[name], _member(where, name)) for name, check in checks.items() if name in data}


def fields_of(cls: type, data: Any, where: str, checks: dict[str, Check], *,
              unknown: bool = False) -> dict[str, Any]:
    """The keyword arguments of ``cls`` (a dataclass; ``checks`` has a check for each of its
    fields) from the JSON object ``data``: :func:`object_fields`, the fields without a
    default required, a missing one with a default left to it."""
    required = tuple(item.name for item in fields(cls)
                     if item.default is MISSING and item.default_factory is MISSING)
    return object_fields(data, where, checks, required, unknown=unknown)


@dataclass
class ShapeFigure:
    """One normalized statement shape within a test: how often, how long, from where.

    ``shape``: the statement normalized by :func:`pytest_migsafe.queries.normalize.normalize`;
    ``count``: statements of that shape; ``total_ms`` / ``max_ms``: their summed and
    longest duration in ms (``time.perf_counter`` around the driver's execute, in the
    driver hook); ``call_sites``: ``{"path:line": statements sent from there}``.
    """

    shape: str
    count: int
    total_ms: float
    max_ms: float
    call_sites: dict[str, int] = field(default_factory=dict)

    @property
    def top_site(self) -> str:
        """The call site (``path:line``) that sent this shape most often; ``"<unknown>"``
        when none is recorded."""
        if not self.call_sites:
            return "<unknown>"
        return max(self.call_sites.items(), key=lambda item: item[1])[0]

    @classmethod
    def from_dict(cls, data: Any, where: str = "shape") -> ShapeFigure:
        """Rebuild from :func:`asdict` output; ``ValueError`` naming ``where`` (the shape's
        path in the JSON) for a missing or unknown key or a value of the wrong type (see
        :func:`fields_of`)."""
        return cls(**fields_of(cls, data, where, {
            "shape": _text, "count": _count, "total_ms": _ms, "max_ms": _ms, "call_sites": _object_of(_count),
        }))


@dataclass
class NPlusOne:
    """An N+1 suspect of one test's call phase.

    ``kind``: ``"lazy_load"`` (an ORM relationship lazy-loaded for a second parent of one
    query: SQLAlchemy's lazy and column loaders, Django's related descriptors), ``"deferred_column"``
    (a deferred or expired column loaded per row), or ``"repeated_statement"`` (one statement
    shape repeated at least the N+1 threshold from one application function: Core, ``text()``,
    raw psycopg and raw Django SQL, where no ORM knows what a row is).
    ``shape``: the statement shape (for ORM suspects, ``"Order.customer (lazy load)"``: stable
    across SQL renderings); ``call_site``: ``path:line`` of the frame that loops (the
    outermost application frame); ``chain``: the application frames from there down to the
    one that sent the statement (``path:line``, outermost first); ``count``: statements in
    the group (ORM kinds: the loads for the rows of the one query whose rows were loaded one
    by one the most, the same code run again over other queries not added); ``parents``:
    distinct parent rows of that query lazy-loaded (ORM kinds);
    ``relationship``: ``"Order.customer"`` (ORM kinds); ``loaded_at``: where the parents were
    loaded (``path:line``), if seen; ``fix``: the code that avoids it (every kind);
    ``allowed``: True when an ``allow_n_plus_one`` rule covers it (reported, not failed).
    """

    shape: str
    call_site: str
    count: int
    allowed: bool = False
    kind: str = "repeated_statement"
    relationship: str | None = None
    parents: int = 0
    chain: list[str] = field(default_factory=list)
    loaded_at: str | None = None
    fix: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "n_plus_one") -> NPlusOne:
        """Rebuild from :func:`asdict` output; ``ValueError`` naming ``where`` for a missing
        or unknown key or a value of the wrong type (see :func:`fields_of`)."""
        return cls(**fields_of(cls, data, where, {
            "shape": _text, "call_site": _text, "count": _count, "allowed": _flag, "kind": _text,
            "relationship": _text.or_null(), "parents": _count, "chain": list_of(_text),
            "loaded_at": _text.or_null(), "fix": _text.or_null(),
        }))


@dataclass
class QueryFigures:
    """The statements of one test's call phase (from a
    :class:`~pytest_migsafe.queries.counter.QueryCounter`).

    ``count``: statements that completed (transaction control excluded unless
    configured); ``executions``: the same with each ``executemany`` counted by its batch
    size (what ``pg_stat_statements`` calls counts); ``total_ms``: their summed duration in
    ms; ``budget``: the ``max_queries`` marker's limit, None without one; ``shapes``: a
    list of :class:`ShapeFigure`, most frequent first; ``n_plus_one``: a list of
    :class:`NPlusOne`, most repeats first; ``round_trips``: the round trips that brought
    those statements (:func:`pytest_migsafe.queries.dispatch.round_trips`) when fewer than
    ``count`` (a string of several statements is one round trip), None when equal.
    """

    count: int
    executions: int
    total_ms: float
    budget: int | None = None
    shapes: list[ShapeFigure] = field(default_factory=list)
    n_plus_one: list[NPlusOne] = field(default_factory=list)
    round_trips: int | None = None

    @classmethod
    def shapes_when_read(cls, make_shapes: Callable[[], list[ShapeFigure]], count: int, executions: int,
                         total_ms: float, budget: int | None, n_plus_one: list[NPlusOne],
                         round_trips: int | None) -> QueryFigures:
        """Figures whose :attr:`shapes` are worked out by ``make_shapes()`` when first read
        (then kept): a report that shows no shape of this test (the terminal summary shows
        those of its heaviest tests) pays no readable shape for it. Equal, in every reader
        (``asdict``, ``==``, ``repr``), to figures built with those shapes."""
        figures = cls.__new__(cls)
        figures.__dict__ = {"count": count, "executions": executions, "total_ms": total_ms, "budget": budget,
                            "n_plus_one": n_plus_one, "round_trips": round_trips, "_make_shapes": make_shapes}
        return figures

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy`` and ``pickle`` take: the fields, the shapes worked out."""
        self.shapes  # noqa: B018  (worked out, if pending)
        return self.__dict__

    def __getattr__(self, name: str) -> Any:
        # called only for an attribute the instance lacks: the shapes of shapes_when_read()
        if name == "shapes":
            make = self.__dict__.get("_make_shapes")
            if make is not None:
                shapes: list[ShapeFigure] = make()  # (should it raise, a later read tries again)
                self.__dict__["shapes"] = shapes
                self.__dict__.pop("_make_shapes", None)
                return shapes
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_dict(cls, data: Any, where: str = "queries") -> QueryFigures:
        """Rebuild from :func:`asdict` output (unknown keys are ignored); ``ValueError``
        naming the field's path under ``where`` for a missing ``count``, ``executions`` or
        ``total_ms``, a value of the wrong type, or a malformed shape or suspect."""
        return cls(**fields_of(cls, data, where, {
            "count": _count, "executions": _count, "total_ms": _ms, "budget": _count.or_null(),
            "shapes": list_of(ShapeFigure.from_dict), "n_plus_one": list_of(NPlusOne.from_dict),
            "round_trips": _count.or_null(),
        }, unknown=True))


@dataclass
class CacheFigures:
    """Redis keyspace hits and misses during one test's call phase.

    ``hits`` / ``misses``: ``INFO stats`` keyspace_hits / keyspace_misses deltas when
    ``source`` is ``"server"``, the client-side accounting when it is ``"client"``
    (fakeredis, or ``INFO`` refused), ``"mixed"`` when summed over both; ``backend``:
    ``"redis"``, ``"fakeredis"`` or ``"mixed"``; ``by_prefix`` / ``by_command``: ``{key
    prefix or command name: [hits, misses]}`` from the client-side accounting;
    ``min_hit_rate`` / ``min_hit_rate_prefix``: the ``min_cache_hit_rate`` marker's rate
    (a fraction 0..1) and prefix; ``target`` / ``alert``: the ini lines, fractions 0..1.
    """

    hits: int
    misses: int
    backend: str
    by_prefix: dict[str, list[int]] = field(default_factory=dict)
    by_command: dict[str, list[int]] = field(default_factory=dict)
    min_hit_rate: float | None = None
    min_hit_rate_prefix: str | None = None  # the marker's prefix=: the rate checked is that prefix's
    source: str = "server"  # totals from "server" (INFO stats) or "client" (client-side accounting)
    target: float | None = None  # ini migsafe_hit_rate_target
    alert: float | None = None  # ini migsafe_hit_rate_alert: the report marks tests under it

    @property
    def hit_rate(self) -> float | None:
        """hits / (hits + misses), a fraction 0..1, or None when there was no cache read."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else None

    def prefix_hit_rate(self, prefix: str) -> float | None:
        """The client-side hit rate of one key prefix (the part before the first ``:``), a
        fraction 0..1, or None when it had no read."""
        hits, misses = self.by_prefix.get(prefix, (0, 0))
        return hits / (hits + misses) if hits + misses else None

    def under_alert(self) -> bool:
        """True when the test read the cache and its hit rate is below the alert line (False
        without an alert line)."""
        rate = self.hit_rate
        return self.alert is not None and rate is not None and rate < self.alert

    def under_target(self) -> bool:
        """True when the test read the cache and its hit rate is below the target (False
        without a target)."""
        rate = self.hit_rate
        return self.target is not None and rate is not None and rate < self.target

    @classmethod
    def from_dict(cls, data: Any, where: str = "cache") -> CacheFigures:
        """Rebuild from :func:`asdict` output (unknown keys, such as ``hit_rate``, are ignored);
        ``ValueError`` naming the field's path under ``where`` when ``hits``, ``misses`` or
        ``backend`` is missing or a value has the wrong type (rates: fractions 0..1)."""
        return cls(**fields_of(cls, data, where, {
            "hits": _count, "misses": _count, "backend": _text, "by_prefix": _object_of(_tally),
            "by_command": _object_of(_tally), "min_hit_rate": _rate.or_null(),
            "min_hit_rate_prefix": _text.or_null(), "source": _text, "target": _rate.or_null(),
            "alert": _rate.or_null(),
        }, unknown=True))


@dataclass
class Leak:
    """A pooled connection checked out during the test and not returned by its end.

    ``dropped``: it was dropped without ``close()`` and only the garbage collector
    returned it; otherwise it was still checked out. ``pool``: the pool's name
    (:func:`pytest_migsafe.pool.targets.describe_pool`: the engine URL, password masked,
    and pool class, or the psycopg_pool name); ``call_site``: ``path:line`` of the
    checkout, ``"<unknown>"`` when not found.
    """

    pool: str
    call_site: str
    dropped: bool = False

    @classmethod
    def from_dict(cls, data: Any, where: str = "leak") -> Leak:
        """Rebuild from :func:`asdict` output; ``ValueError`` naming ``where`` for a missing
        or unknown key or a value of the wrong type."""
        return cls(**fields_of(cls, data, where, {"pool": _text, "call_site": _text, "dropped": _flag}))


@dataclass
class PoolFigures:
    """Connection-pool behaviour during one test's call phase, summed over its pools.

    Counts of DBAPI connections ``created`` / ``closed`` / ``invalidated``, pool
    ``checkouts`` / ``checkins``, ``peak_checked_out`` (most out at once),
    ``overflow_used`` (beyond the pools' base size), ``timeouts``; checkout waits
    ``wait_ms_p50`` / ``wait_ms_p99`` / ``wait_ms_max`` in ms, nearest-rank; ``leaks``: a
    list of :class:`Leak`; ``pool_sizes``: ``{pool name: configured size}``. SQLAlchemy
    figures come from pool events, psycopg_pool ones from ``get_stats()`` deltas; the
    exact definitions are in :mod:`pytest_migsafe.pool.observe`.
    """

    created: int = 0
    closed: int = 0
    invalidated: int = 0
    checkouts: int = 0
    checkins: int = 0
    peak_checked_out: int = 0
    overflow_used: int = 0
    wait_ms_p50: float = 0.0
    wait_ms_p99: float = 0.0
    wait_ms_max: float = 0.0
    timeouts: int = 0
    leaks: list[Leak] = field(default_factory=list)
    pool_sizes: dict[str, int] = field(default_factory=dict)
    # connections created, split: a pool's cold start (order-dependent) and what a warm pool
    # would also have had to open (the same in any order, selection or worker count)
    cold_start_created: int = 0
    created_beyond_warm: int = 0
    # the most connections the test itself held at once, and those held since before it at that peak
    peak_checked_out_own: int = 0
    held_at_peak_own: int = 0
    # how long a connection was held, checkout to checkin (ms; nearest-rank upper bounds, max exact)
    hold_ms_p50: float = 0.0
    hold_ms_p95: float = 0.0
    hold_ms_p99: float = 0.0
    hold_ms_max: float = 0.0
    # the hold-time histogram (pool.holds.HoldTimes.to_dict(): buckets, count, total_us, max_us)
    hold_times: dict[str, Any] = field(default_factory=dict)
    # {pool name: "unix socket" | "loopback" | "in-process" | "network"}: where its server was
    servers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str = "pool") -> PoolFigures:
        """Rebuild from :func:`asdict` output (a missing figure: its default); ``ValueError``
        naming the field's path under ``where`` for an unknown key, a value of the wrong
        type, a malformed leak or hold-time histogram."""
        checks: dict[str, Check] = {item.name: _count for item in fields(cls)}
        checks.update(dict.fromkeys(("wait_ms_p50", "wait_ms_p99", "wait_ms_max", "hold_ms_p50", "hold_ms_p95",
                                     "hold_ms_p99", "hold_ms_max"), _ms))
        checks.update(leaks=list_of(Leak.from_dict), pool_sizes=_object_of(_whole), hold_times=_hold_times,
                      servers=_object_of(_text))
        return cls(**fields_of(cls, data, where, checks))


@dataclass
class ShadowFigures:
    """One shadow experiment: control against candidate (from
    :meth:`pytest_migsafe.shadow.experiment.Experiment.figures`).

    ``result``: ``"mismatched"`` if any run mismatched, else ``"ignored"`` if an ignore
    rule accepted a difference, else ``"matched"``; ``runs`` / ``mismatches`` /
    ``ignored``: counts of runs; ``seed``: the seed of the path order; ``*_queries``: SQL
    statements each path ran, summed over the runs; ``*_p50_ms`` / ``*_p99_ms``:
    nearest-rank durations in ms (``time.perf_counter`` around the path call);
    ``*_errors``: runs in which the path raised; ``mode``: ``"fail"`` or ``"observe"``;
    ``*_cache_hits`` / ``*_cache_misses``: keyspace hits and misses summed over the runs,
    None when the cache was not measured.
    """

    name: str
    result: str  # "matched", "mismatched" or "ignored"
    runs: int
    mismatches: int
    ignored: int
    seed: int
    control_queries: int
    candidate_queries: int
    control_p99_ms: float
    candidate_p99_ms: float
    control_errors: int = 0
    candidate_errors: int = 0
    control_p50_ms: float = 0.0
    candidate_p50_ms: float = 0.0
    mode: str = "fail"  # "observe" when no run of it could fail the test
    control_cache_hits: int | None = None  # None: the cache was not measured
    control_cache_misses: int | None = None
    candidate_cache_hits: int | None = None
    candidate_cache_misses: int | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "shadow") -> ShadowFigures:
        """Rebuild from :func:`asdict` output (a missing figure with a default: its default);
        ``ValueError`` naming the field's path under ``where`` for a missing or unknown key,
        a value of the wrong type, or a ``result`` other than matched / mismatched / ignored."""
        checks: dict[str, Check] = {item.name: _count for item in fields(cls)}
        checks.update(dict.fromkeys(("control_p99_ms", "candidate_p99_ms", "control_p50_ms", "candidate_p50_ms"), _ms))
        checks.update(dict.fromkeys(("control_cache_hits", "control_cache_misses", "candidate_cache_hits",
                                     "candidate_cache_misses"), _count.or_null()))
        checks.update(name=_text, result=_SHADOW_RESULT, seed=_whole, mode=_text)
        return cls(**fields_of(cls, data, where, checks))


@dataclass
class TestRecord:
    """Everything migsafe measured for one test.

    ``nodeid``: the pytest node id; ``outcome``: the call report's outcome (``"passed"``,
    ``"failed"``, ``"skipped"``), ``"error"`` when its teardown failed; ``queries``,
    ``cache``, ``pool``: the figures of each part, None when that part measured nothing;
    ``shadows``: one :class:`ShadowFigures` per experiment.
    """

    __test__ = False  # not a test class, though its name starts with "Test"

    nodeid: str
    outcome: str = "passed"
    queries: QueryFigures | None = None
    cache: CacheFigures | None = None
    pool: PoolFigures | None = None
    shadows: list[ShadowFigures] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field; cache figures also carry ``hit_rate`` (a
        fraction 0..1 or None) for readers of the JSON. Lists whose order the capture does
        not fix are sorted, so that one run's JSON equals another's whatever the test order
        or xdist worker: shapes most frequent first, then by shape; N+1 suspects most
        repeats first, then by shape and call site; leaks by pool, call site."""
        data = asdict(self)
        if self.cache is not None:
            data["cache"]["hit_rate"] = self.cache.hit_rate
        if data.get("queries"):
            data["queries"]["shapes"].sort(key=lambda s: (-s["count"], s["shape"]))
            data["queries"]["n_plus_one"].sort(key=lambda n: (-n["count"], n["shape"], n["call_site"]))
        if data.get("pool"):
            data["pool"]["leaks"].sort(key=lambda leak: (leak["pool"], leak["call_site"], leak["dropped"]))
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "record") -> TestRecord:
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored; ``queries``,
        ``cache``, ``pool`` may be null); ``ValueError`` naming the field's path under
        ``where`` (``tests["t.py::a"].queries.count: expected a whole number >= 0, got 'x'``)
        for a missing ``nodeid``, a value of the wrong type or a malformed part."""
        return cls(**fields_of(cls, data, where, {
            "nodeid": _text, "outcome": _text, "queries": _object_or_null(QueryFigures.from_dict),
            "cache": _object_or_null(CacheFigures.from_dict), "pool": _object_or_null(PoolFigures.from_dict),
            "shadows": list_of(ShadowFigures.from_dict),
        }, unknown=True))


@dataclass
class RunReport:
    """All test records of a run, plus one-line notes (for example "fakeredis used").

    ``tests`` maps a node id to the :class:`TestRecord` of each test that measured
    something; ``unmeasured`` maps every other test that ran to its outcome (a passed test
    there ran its call phase with zero queries); ``notes`` is a list of strings, each once;
    ``interrupted`` is True when the session was interrupted (or a merged part was);
    ``lost`` maps each test whose figures were lost with the pytest-xdist worker that ran it
    (the worker crashed before the test finished) to that worker's name (``"gw0"``): such a
    test is also in ``unmeasured``, its outcome followed by ``"; figures lost"``, and never in
    ``tests``.
    """

    tests: dict[str, TestRecord] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    unmeasured: dict[str, str] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)

    def add(self, record: TestRecord) -> None:
        """Add or replace the record of one test (keyed by its node id)."""
        self.tests[record.nodeid] = record

    def note(self, text: str) -> None:
        """Add a note (one line of text) unless it is already there."""
        if text not in self.notes:
            self.notes.append(text)

    def merge(self, other: RunReport) -> list[str]:
        """Fold another report (an xdist worker's or a CI shard's) into this one.

        A test in both keeps ``other``'s record (last wins); returns those test ids,
        sorted. A test lost in one stays lost only if ``other`` has it lost or does not have
        it. Notes are added once; ``interrupted`` if either was.
        """
        replaced = sorted(nodeid for nodeid in (*other.tests, *other.unmeasured)
                          if nodeid in self.tests or nodeid in self.unmeasured)
        for record in other.tests.values():
            self.unmeasured.pop(record.nodeid, None)
            self.lost.pop(record.nodeid, None)
            self.add(record)
        for nodeid, outcome in other.unmeasured.items():
            self.tests.pop(nodeid, None)
            self.lost.pop(nodeid, None)
            self.unmeasured[nodeid] = outcome
        self.lost.update(other.lost)
        for text in other.notes:
            self.note(text)
        self.interrupted = self.interrupted or other.interrupted
        return replaced

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``schema_version``, ``interrupted``, ``notes`` sorted, ``tests``,
        ``unmeasured`` and ``lost`` sorted by node id) so output is stable."""
        return {
            "schema_version": SCHEMA_VERSION,
            "interrupted": self.interrupted,
            "notes": sorted(self.notes),
            "tests": {nodeid: self.tests[nodeid].to_dict() for nodeid in sorted(self.tests)},
            "unmeasured": dict(sorted(self.unmeasured.items())),
            "lost": dict(sorted(self.lost.items())),
        }

    @classmethod
    def from_dict(cls, data: Any) -> RunReport:
        """Rebuild from :meth:`to_dict` output (the caller checks schema_version); missing
        keys read as empty, unknown ones are ignored (an xdist worker's payload carries more).

        Every field is checked: ints are whole numbers (not true or false), durations finite
        numbers >= 0 (no NaN or infinity), rates fractions 0..1, strings strings, lists lists,
        objects objects, each record's ``nodeid`` is its key in ``tests``, and each test in
        ``lost`` (a report written before that field reads as none lost) is in ``unmeasured``
        and has no record. Raises ``ValueError`` whose message starts with the field's path in
        the JSON: ``tests["t.py::a"].queries.count: expected a whole number >= 0, got 'x'``,
        ``notes: expected a list, got 'abc'``.
        """
        arguments = fields_of(cls, data, "", {
            "tests": _object, "notes": list_of(_text), "interrupted": _flag, "unmeasured": _object_of(_text),
            "lost": _object_of(_text),
        }, unknown=True)
        unmeasured = arguments.get("unmeasured", {})
        for nodeid in arguments.get("lost", {}):
            if nodeid not in unmeasured or nodeid in arguments.get("tests", {}):
                raise ValueError(f"{_key('lost', nodeid)}: expected a test in unmeasured and not in tests (a test "
                                 "whose figures were lost has an outcome and no record)")
        tests = {}
        for nodeid, raw in arguments.get("tests", {}).items():
            where = _key("tests", nodeid)
            record = TestRecord.from_dict(raw, where)
            if record.nodeid != nodeid:
                raise ValueError(f"{where}.nodeid: expected {json.dumps(nodeid, ensure_ascii=False)}, the key of "
                                 f"its record, got {shown(record.nodeid)}")
            tests[nodeid] = record
        arguments["tests"] = tests
        return cls(**arguments)


NO_CACHE_READS = "no cache reads"


def cache_rating(record: TestRecord) -> str | None:
    """None when the test's hit rate is rated (compared with the alert line, summed in the
    run's rate), else why not (the rule: :mod:`pytest_migsafe.cache.rating`):
    ``"no cache reads"``; ``"shadow experiment"`` for a test with shadow experiments;
    ``"assert_cache_aside or too few reads"`` for one the plugin rated out (its ``alert`` is
    None while its ``target`` is set). A ``min_cache_hit_rate`` marker always rates; a
    record with neither ``alert`` nor ``target`` (written by other code) is rated unless it
    has shadows."""
    cache = record.cache
    if cache is None or cache.hits + cache.misses == 0:
        return NO_CACHE_READS
    if cache.min_hit_rate is not None:
        return None
    if record.shadows:
        return "shadow experiment"
    if cache.alert is None and cache.target is not None:
        return "assert_cache_aside or too few reads"
    return None
