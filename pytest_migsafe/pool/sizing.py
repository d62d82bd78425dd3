"""Pool sizing: how many connections a peak load needs (Little's law plus headroom).

``size = ceil(peak_rps x hold_seconds x headroom)``: by Little's law ``L = lambda x W``,
the connections busy at once are the arrival rate times the time each request holds a
connection (checkout to checkin: the whole request or transaction, not one statement),
with headroom for bursts. Measured, ``W`` is the **p95 hold time** of the run's checkouts
(:mod:`pytest_migsafe.pool.holds`): a pool sized on the mean is short for the slower
twentieth of requests. The arithmetic is decimal, on the numbers as written (``repr`` of
a float), so 800 x 0.012 x 1.3 = 12.48 gives 13 and 100 x 0.1 x 1.0 = 10 gives 10, never
11 from a binary rounding error.

Hold times measured against a local database (unix socket, loopback, SQLite) lack the
network round trips and the load of production: the sizing lines say so.

The need is compared with what each pool can open at once (its
:class:`~pytest_migsafe.pool.targets.Capacity`): a QueuePool's ``pool_size + max_overflow``
(no limit for ``max_overflow=-1`` or ``pool_size=0``), none for a NullPool, a psycopg_pool's
``max_size``. A pool that can open the need only beyond the connections it keeps
(QueuePool overflow, opened and closed per burst; NullPool; psycopg_pool above ``min_size``)
gets a note saying both figures, not a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Context, Decimal
from typing import Any

from pytest_migsafe.pool.holds import HoldTimes
from pytest_migsafe.pool.locality import LOCAL_KINDS
from pytest_migsafe.pool.targets import Capacity
from pytest_migsafe.report.record import RunReport
from pytest_migsafe.text import plural

DEFAULT_HEADROOM = 1.3
_EXACT = Context(prec=200)  # enough digits that no product of three inputs is rounded


def _decimal(name: str, value: Any) -> Decimal:
    """``value`` as a Decimal, or ValueError naming ``name`` and what is expected."""
    expected = f"{name} must be a positive finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError(f"{expected}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{expected}, got {value!r}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite() or number <= 0:
        raise ValueError(f"{expected}, got {value!r}")
    return number


HOLD_PERCENTILE = 95  # the hold time sizing takes from a measurement


@dataclass(frozen=True)
class Recommendation:
    """A recommended pool size and the numbers it came from: ``peak_rps`` (requests/s),
    ``hold_seconds`` (seconds a request holds a connection), ``headroom`` (a multiplier)."""

    size: int
    peak_rps: Decimal
    hold_seconds: Decimal
    headroom: Decimal

    @property
    def avg_query_seconds(self) -> Decimal:
        """The old name of :attr:`hold_seconds` (the time a request holds a connection)."""
        return self.hold_seconds

    @property
    def busy(self) -> Decimal:
        """peak_rps x hold_seconds x headroom, before rounding up."""
        return _EXACT.multiply(_EXACT.multiply(self.peak_rps, self.hold_seconds), self.headroom)

    def explain(self) -> str:
        """The arithmetic, one step a line."""
        ms = _EXACT.multiply(self.hold_seconds, Decimal(1000))
        return (f"pool size = ceil(peak_rps x hold_seconds x headroom)\n"
                f"          = ceil({_plain(self.peak_rps)} x {_plain(self.hold_seconds)}"
                f" x {_plain(self.headroom)})   ({_plain(ms)} ms holding a connection per request)\n"
                f"          = ceil({_plain(self.busy)})\n"
                f"          = {self.size}")


def _plain(number: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 12.4800 -> 12.48, 1E+1 -> 10."""
    text = format(number.normalize(_EXACT), "f")
    return text


def measured_hold_seconds(measured: Any, percentile: float = HOLD_PERCENTILE) -> Decimal:
    """The ``percentile`` hold time in exact decimal seconds (to the microsecond) of a
    measurement: a :class:`~pytest_migsafe.pool.holds.HoldTimes`, a pool observation
    (``pool_stats(...)``) or its figures. ValueError when it measured no hold. An
    observation or figures whose pools' servers are local issue a
    :class:`LocalDatabaseWarning` (through :data:`pytest_migsafe.pool.observe.notice`: in
    pytest a warning that never fails a test)."""
    holds = measured
    if not isinstance(holds, HoldTimes):
        holds = getattr(measured, "holds", None)
        holds = holds() if callable(holds) else holds
        figures = measured.snapshot() if hasattr(measured, "snapshot") else measured
        _warn_if_local(dict(getattr(figures, "servers", None) or {}))
    if not isinstance(holds, HoldTimes):
        raise ValueError(f"expected hold seconds, HoldTimes or a pool observation, got {type(measured).__name__}")
    if not holds.count:
        raise ValueError("no connection was checked out and returned: no hold time was measured")
    return Decimal(max(1, holds.percentile_us(percentile))) / Decimal(1_000_000)


class LocalDatabaseWarning(UserWarning):
    """A pool size computed from hold times measured against a local database (unix socket,
    loopback, SQLite), which are far below production's."""


def _warn_if_local(servers: dict[str, str]) -> None:
    from pytest_migsafe.pool import observe

    warning = local_warning({name: kind for name, kind in servers.items() if kind in LOCAL_KINDS})
    if warning is not None:
        filename, lineno = observe._reader_frame()
        observe.notice(LocalDatabaseWarning(f"migsafe: {warning}"), filename, lineno)


def recommend(peak_rps: float, hold_seconds: float | Decimal, headroom: float = DEFAULT_HEADROOM) -> Recommendation:
    """The recommended pool size with its arithmetic; ValueError for a bad argument.

    ``hold_seconds``: the time one request holds a connection, in seconds (positive).
    """
    rps = _decimal("peak_rps", peak_rps)
    seconds = _decimal("hold_seconds", hold_seconds)
    room = _decimal("headroom", headroom)
    busy = _EXACT.multiply(_EXACT.multiply(rps, seconds), room)
    size = int(busy.to_integral_value(rounding=ROUND_CEILING))
    return Recommendation(size, rps, seconds, room)


def pool_size(peak_rps: float, hold_seconds: Any = None, headroom: float = DEFAULT_HEADROOM, *,
              avg_query_seconds: float | None = None) -> int:
    """``ceil(peak_rps x hold_seconds x headroom)``, in exact decimal arithmetic.

    ``peak_rps``: requests per second at the peak. ``hold_seconds``: how long one request
    holds a connection, checkout to checkin, in seconds; or a measurement (a pool
    observation such as ``pool_stats(engine)``, its figures, or a
    :class:`~pytest_migsafe.pool.holds.HoldTimes`), whose p95 hold time is taken.
    ``avg_query_seconds`` is the old name of ``hold_seconds``. ``headroom``: a multiplier
    for bursts. Every number must be positive and finite, else ValueError says which;
    ValueError too for a measurement without a hold; TypeError for neither or both of
    ``hold_seconds`` and ``avg_query_seconds``.
    """
    if (hold_seconds is None) == (avg_query_seconds is None):
        raise TypeError("pool_size() needs hold_seconds (or its old name avg_query_seconds), once")
    value: Any = hold_seconds if hold_seconds is not None else avg_query_seconds
    if isinstance(value, HoldTimes) or hasattr(value, "holds"):
        value = measured_hold_seconds(value)
    return recommend(peak_rps, value, headroom).size


def ms_to_seconds(name: str, milliseconds: float) -> Decimal:
    """Milliseconds as exact decimal seconds (12 -> 0.012); ValueError naming ``name``."""
    return _EXACT.divide(_decimal(name, milliseconds), Decimal(1000))


MICROSECOND = Decimal("0.000001")


@dataclass(frozen=True)
class MeasuredAverage:
    """The average query time of a run: total time over total statements, across tests."""

    seconds: Decimal
    queries: int
    tests: int


@dataclass
class SizingInputs:
    """What sizing needs from a run (JSON-able, mergeable across xdist workers and shards).

    ``pool_sizes``: ``{pool name: configured size}`` (the smallest seen); ``holds``: every
    checkout's hold time (:class:`~pytest_migsafe.pool.holds.HoldTimes`); ``servers``:
    ``{pool name: server kind}`` (:mod:`pytest_migsafe.pool.locality`); ``query_count`` /
    ``query_total_ms`` / ``query_tests``: statements, their summed duration in ms and the
    tests that ran them (for :meth:`average`, no longer what sizes a pool);
    ``capacities``: ``{pool name: {capacity: tests that used a pool of that name and
    capacity}}`` (:class:`~pytest_migsafe.pool.targets.Capacity`; several when pools of one
    name differ, as the same name on two xdist workers or two psycopg pools named alike may).
    """

    pool_sizes: dict[str, int] = field(default_factory=dict)
    query_count: int = 0
    query_total_ms: Decimal = Decimal(0)
    query_tests: int = 0
    holds: HoldTimes = field(default_factory=HoldTimes)
    servers: dict[str, str] = field(default_factory=dict)
    capacities: dict[str, dict[Capacity, int]] = field(default_factory=dict)

    @classmethod
    def of_report(cls, report: RunReport) -> SizingInputs:
        """The inputs recorded in ``report``: every test's pool sizes, hold times and server
        kinds (those its pool records carry) and query figures."""
        inputs = cls()
        for record in report.tests.values():
            if record.pool is not None:
                inputs.add_pool(record.pool)
            figures = record.queries
            if figures is not None and figures.count > 0:
                inputs.query_total_ms += Decimal(repr(float(figures.total_ms)))
                inputs.query_count += figures.count
                inputs.query_tests += 1
        return inputs

    def add_pool(self, figures: Any, capacities: dict[str, Capacity] | None = None) -> None:
        """Add one test's pool figures: a record's ``PoolFigures``, an observation's
        ``ObservedFigures``, or their JSON dict (``pool_sizes``, ``hold_times``, ``servers``,
        ``pool_capacities``; a missing one is skipped), and ``capacities``: the
        :class:`~pytest_migsafe.pool.targets.Capacity` of its pools by name
        (:func:`~pytest_migsafe.pool.targets.pool_capacities`); each pool named in its
        ``pool_sizes`` counts one test for its capacity."""
        get = figures.get if isinstance(figures, dict) else (lambda name: getattr(figures, name, None))
        sizes = dict(get("pool_sizes") or {})
        self.add_sizes(sizes)
        known = {str(k): Capacity.from_dict(v) for k, v in dict(get("pool_capacities") or {}).items()}
        known.update(capacities or {})
        for name in sizes:
            capacity = known.get(name)
            if capacity is not None:
                uses = self.capacities.setdefault(name, {})
                uses[capacity] = uses.get(capacity, 0) + 1
        hold_times = get("hold_times")
        if hold_times:
            self.holds.merge(HoldTimes.from_dict(hold_times))
        self.servers.update({str(k): str(v) for k, v in dict(get("servers") or {}).items()})

    def add_sizes(self, sizes: dict[str, int]) -> None:
        """Add configured sizes; a pool seen with several sizes keeps the smallest."""
        for name, size in sizes.items():
            self.pool_sizes[name] = min(size, self.pool_sizes.get(name, size))

    def merge(self, other: SizingInputs) -> None:
        """Fold another process's inputs (an xdist worker's) into these."""
        self.add_sizes(other.pool_sizes)
        self.query_count += other.query_count
        self.query_total_ms += other.query_total_ms
        self.query_tests += other.query_tests
        self.holds.merge(other.holds)
        self.servers.update(other.servers)
        for name, seen in other.capacities.items():
            uses = self.capacities.setdefault(name, {})
            for capacity, tests in seen.items():
                uses[capacity] = uses.get(capacity, 0) + tests

    def average(self) -> MeasuredAverage | None:
        """Total query time over total statements; None without timed queries."""
        if self.query_count == 0 or self.query_total_ms <= 0:
            return None
        mean = _EXACT.divide(self.query_total_ms, Decimal(self.query_count * 1000))
        # to the microsecond (at least 1 us): a measured mean has no meaningful digits beyond it
        mean = max(mean.quantize(MICROSECOND), MICROSECOND)
        return MeasuredAverage(mean, self.query_count, self.query_tests)

    def hold(self) -> MeasuredHold | None:
        """The p95 hold time of the run's checkouts; None when no hold was measured."""
        if not self.holds.count:
            return None
        return MeasuredHold(measured_hold_seconds(self.holds), self.holds.count, self.local_servers())

    def local_servers(self) -> dict[str, str]:
        """``{pool name: kind}`` of the pools whose server is on this machine."""
        return {name: kind for name, kind in sorted(self.servers.items()) if kind in LOCAL_KINDS}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the query total as a decimal string, exact); ``pool_capacities``:
        ``{pool name: [{kind, size, most, tests}, ...]}``."""
        return {"pool_sizes": dict(self.pool_sizes), "query_count": self.query_count,
                "query_total_ms": str(self.query_total_ms), "query_tests": self.query_tests,
                "holds": self.holds.to_dict(), "servers": dict(self.servers),
                "pool_capacities": {name: [{**capacity.to_dict(), "tests": tests} for capacity, tests in seen.items()]
                                    for name, seen in self.capacities.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SizingInputs:
        """Rebuild from :meth:`to_dict` output (missing keys read as empty)."""
        capacities: dict[str, dict[Capacity, int]] = {}
        for name, seen in dict(data.get("pool_capacities") or {}).items():
            uses = capacities.setdefault(str(name), {})
            for entry in seen:
                capacity = Capacity.from_dict(entry)
                uses[capacity] = uses.get(capacity, 0) + int(entry.get("tests", 1))
        return cls({str(k): int(v) for k, v in data.get("pool_sizes", {}).items()},
                   int(data.get("query_count", 0)), Decimal(str(data.get("query_total_ms", "0"))),
                   int(data.get("query_tests", 0)), HoldTimes.from_dict(data.get("holds") or {}),
                   {str(k): str(v) for k, v in data.get("servers", {}).items()}, capacities)

    def capacity_of(self, name: str) -> tuple[Capacity, int, list[tuple[Capacity, int]]]:
        """The capacity sizing judges pool ``name`` by, the tests it was seen in, and the other
        capacities seen under that name with theirs: the one used in the most tests (a tie: the
        smaller), so a small pool of the same name (an admin engine numbered alike on another
        xdist worker, a psycopg pool given the same name) does not hide the one the tests
        used most. Without a recorded capacity (a run report): what ``pool_sizes`` tells."""
        seen = self.capacities.get(name)
        if not seen:
            return Capacity.of_size(self.pool_sizes[name]), 0, []
        ranked = sorted(seen.items(), key=lambda item: (-item[1], _most(item[0]), _kept(item[0])))
        (chosen, tests), others = ranked[0], ranked[1:]
        return chosen, tests, others


@dataclass(frozen=True)
class MeasuredHold:
    """The hold time sizing takes from a run: ``seconds`` (the p95, exact decimal seconds),
    ``checkouts`` (holds measured), ``local`` (``{pool name: kind}`` of pools on a local server)."""

    seconds: Decimal
    checkouts: int
    local: dict[str, str] = field(default_factory=dict)


#: Pools a local-database warning names one by one; the rest are counted by the kind of server
LOCAL_POOLS_NAMED = 5


def local_warning(local: dict[str, str]) -> str | None:
    """The warning for hold times measured against local servers (``local``: ``{pool name:
    kind}``); None when there is none. The first :data:`LOCAL_POOLS_NAMED` pools by name are
    named, the others counted (a suite making an engine per test observes hundreds)."""
    if not local:
        return None
    ranked = sorted(local.items())
    where = ", ".join(f"{name} over {kind}" for name, kind in ranked[:LOCAL_POOLS_NAMED])
    rest = ranked[LOCAL_POOLS_NAMED:]
    if rest:
        kinds = " or ".join(sorted({kind for _, kind in rest}))
        where += f" and {len(rest)} more {'pool' if len(rest) == 1 else 'pools'} over {kinds}"
    return (f"hold times measured against a local database ({where}) are far below production's "
            f"(no network round trip, an idle server): size from production figures where you have them")


def average_query_time(report: RunReport) -> MeasuredAverage | None:
    """Mean of per-test ``queries.total_ms / queries.count`` weighted by count; None without queries.

    The weighted mean is the run's total query time over its total statement count. It is
    not what sizes a pool: a request holds its connection across all its statements and the
    time between them (see :meth:`SizingInputs.hold`).
    """
    return SizingInputs.of_report(report).average()


def configured_sizes(report: RunReport) -> dict[str, int]:
    """Pool name -> configured size, over every test that used the pool (smallest seen)."""
    return SizingInputs.of_report(report).pool_sizes


def _most(capacity: Capacity) -> float:
    """The most connections ``capacity`` opens at once, infinite for no limit."""
    return math.inf if capacity.most is None else capacity.most


def _kept(capacity: Capacity) -> float:
    """The connections ``capacity`` keeps between checkouts, infinite for no limit."""
    return math.inf if capacity.size is None else capacity.size


@dataclass(frozen=True)
class PoolAdvice:
    """What sizing says of the observed pools: ``warnings`` (pools that cannot open the
    connections needed at once) and ``notes`` (pools that can, but only beyond the
    connections they keep, or several pools under one name), one line each, by pool name."""

    warnings: list[str]
    notes: list[str]


def pool_advice(inputs: SizingInputs, advice: Recommendation) -> PoolAdvice:
    """Each observed pool's capacity against ``advice.size`` (connections needed at once)."""
    needed = advice.size
    ms = _plain(_EXACT.multiply(advice.hold_seconds, Decimal(1000)))
    need = (f"the {needed} needed for {_plain(advice.peak_rps)} requests/s holding a connection {ms} ms each "
            f"(ceil({_plain(advice.peak_rps)} x {_plain(advice.hold_seconds)} s x "
            f"{_plain(advice.headroom)}) = {needed})")
    warnings, notes = [], []
    for name in sorted(inputs.pool_sizes):
        capacity, tests, others = inputs.capacity_of(name)
        suffix = ""
        if others:
            total = tests + sum(count for _, count in others)
            short = f", below the {needed} needed"
            also = "; ".join(f"{other.describe()}{short if _most(other) < needed else ''}, in {plural(count, 'test')}"
                             for other, count in others)
            suffix = f" (the pool of this name in {tests} of {total} tests; also seen under this name: {also})"
        described = capacity.describe()
        if _most(capacity) < needed:
            warnings.append(f"{name}: {described} is below {need}{suffix}")
        elif _kept(capacity) >= needed:
            if suffix:
                notes.append(f"{name}: {described} covers the {needed} needed{suffix}")
        elif capacity.kind == "null":
            notes.append(f"{name}: NullPool keeps no connection: each of the {needed} needed at once is a new "
                         f"connection, closed when returned{suffix}")
        elif capacity.kind == "psycopg":
            notes.append(f"{name}: {described} covers the {needed} needed above its min_size: it opens up to "
                         f"{needed - int(_kept(capacity))} more at a burst and closes them after max_idle{suffix}")
        else:
            kept = int(_kept(capacity))
            notes.append(f"{name}: {described} covers the {needed} needed only with overflow: {needed - kept} "
                         f"connections beyond the {kept} it keeps are opened at a burst and closed when "
                         f"returned{suffix}")
    return PoolAdvice(warnings, notes)


def pool_size_warnings(run_report: RunReport, peak_rps: float, hold_seconds: float | Decimal,
                       headroom: float = DEFAULT_HEADROOM) -> list[str]:
    """One line per observed pool that cannot open the connections ``peak_rps`` needs at
    once, by pool name (``hold_seconds``: the time a request holds a connection, in seconds).

    A run report records each pool's configured size, not its overflow: a size of 0 is no
    limit (NullPool, ``pool_size=0``), any other is compared as it is and the line says the
    overflow is not recorded."""
    advice = recommend(peak_rps, hold_seconds, headroom)
    return pool_advice(SizingInputs.of_report(run_report), advice).warnings


def summary_lines(inputs: SizingInputs, peak_rps: float, hold_seconds: float | Decimal | None = None,
                  headroom: float = DEFAULT_HEADROOM) -> list[str]:
    """The pool-sizing lines of the end-of-run summary; empty when no sized pool was observed:
    the recommendation, a ``WARNING`` for each pool that cannot open the connections needed
    at once, a ``note`` for each that can only beyond what it keeps (both figures said).

    Without ``hold_seconds`` (seconds) the run's measured p95 hold time is used, with a
    warning when it was measured against a local database.
    """
    if not inputs.pool_sizes:
        return []
    lines = []
    if hold_seconds is None:
        measured = inputs.hold()
        if measured is None:
            return [("cannot recommend a pool size: no connection was checked out and returned; "
                    "pass --migsafe-hold-ms")]
        hold_seconds = measured.seconds
        source = f"the p{HOLD_PERCENTILE} hold time over {measured.checkouts} checkouts"
        warning = local_warning(measured.local)
        if warning is not None:
            lines.append(f"WARNING {warning} (--migsafe-hold-ms)")
    else:
        source = "as given"
    advice = recommend(peak_rps, hold_seconds, headroom)
    ms = _plain(_EXACT.multiply(advice.hold_seconds, Decimal(1000)))
    lines.insert(0, f"recommended pool size {advice.size} for {_plain(advice.peak_rps)} requests/s "
                    f"holding a connection {ms} ms each ({source}), headroom {_plain(advice.headroom)}")
    judged = pool_advice(inputs, advice)
    lines.extend(f"WARNING {line}" for line in judged.warnings)
    lines.extend(f"note {line}" for line in judged.notes)
    if not judged.warnings:
        steady = all(_kept(inputs.capacity_of(name)[0]) >= advice.size for name in inputs.pool_sizes)
        lines.append(f"every observed pool is at least {advice.size}" if steady else
                     f"every observed pool can open the {advice.size} needed at once")
    return lines
