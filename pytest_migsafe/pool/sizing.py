"""Pool sizing: how many connections a peak load needs (Little's law plus headroom).

``size = ceil(peak_rps x avg_query_seconds x headroom)``: the connections busy at once
at the peak rate, with headroom for bursts. The arithmetic is decimal, on the numbers as
written (``repr`` of a float), so 800 x 0.012 x 1.3 = 12.48 gives 13 and
100 x 0.1 x 1.0 = 10 gives 10, never 11 from a binary rounding error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Context, Decimal
from typing import Any

from pytest_migsafe.report.record import RunReport

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


@dataclass(frozen=True)
class Recommendation:
    """A recommended pool size and the numbers it came from."""

    size: int
    peak_rps: Decimal
    avg_query_seconds: Decimal
    headroom: Decimal

    @property
    def busy(self) -> Decimal:
        """peak_rps x avg_query_seconds x headroom, before rounding up."""
        return _EXACT.multiply(_EXACT.multiply(self.peak_rps, self.avg_query_seconds), self.headroom)

    def explain(self) -> str:
        """The arithmetic, one step a line."""
        ms = _EXACT.multiply(self.avg_query_seconds, Decimal(1000))
        return (f"pool size = ceil(peak_rps x avg_query_seconds x headroom)\n"
                f"          = ceil({_plain(self.peak_rps)} x {_plain(self.avg_query_seconds)}"
                f" x {_plain(self.headroom)})   ({_plain(ms)} ms per query)\n"
                f"          = ceil({_plain(self.busy)})\n"
                f"          = {self.size}")


def _plain(number: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 12.4800 -> 12.48, 1E+1 -> 10."""
    text = format(number.normalize(_EXACT), "f")
    return text


def recommend(peak_rps: float, avg_query_seconds: float | Decimal,
              headroom: float = DEFAULT_HEADROOM) -> Recommendation:
    """The recommended pool size with its arithmetic; ValueError for a bad argument."""
    rps = _decimal("peak_rps", peak_rps)
    seconds = _decimal("avg_query_seconds", avg_query_seconds)
    room = _decimal("headroom", headroom)
    busy = _EXACT.multiply(_EXACT.multiply(rps, seconds), room)
    size = int(busy.to_integral_value(rounding=ROUND_CEILING))
    return Recommendation(size, rps, seconds, room)


def pool_size(peak_rps: float, avg_query_seconds: float, headroom: float = DEFAULT_HEADROOM) -> int:
    """``ceil(peak_rps * avg_query_seconds * headroom)``, in exact decimal arithmetic.

    Every argument must be a positive finite number; otherwise ValueError says which.
    """
    return recommend(peak_rps, avg_query_seconds, headroom).size


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
    """What sizing needs from a run: configured pool sizes and query totals (JSON-able, mergeable)."""

    pool_sizes: dict[str, int] = field(default_factory=dict)
    query_count: int = 0
    query_total_ms: Decimal = Decimal(0)
    query_tests: int = 0

    @classmethod
    def of_report(cls, report: RunReport) -> SizingInputs:
        """The inputs recorded in ``report``: every test's pool sizes and query figures."""
        inputs = cls()
        for record in report.tests.values():
            if record.pool is not None:
                inputs.add_sizes(record.pool.pool_sizes)
            figures = record.queries
            if figures is not None and figures.count > 0:
                inputs.query_total_ms += Decimal(repr(float(figures.total_ms)))
                inputs.query_count += figures.count
                inputs.query_tests += 1
        return inputs

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

    def average(self) -> MeasuredAverage | None:
        """Total query time over total statements; None without timed queries."""
        if self.query_count == 0 or self.query_total_ms <= 0:
            return None
        mean = _EXACT.divide(self.query_total_ms, Decimal(self.query_count * 1000))
        # to the microsecond (at least 1 us): a measured mean has no meaningful digits beyond it
        mean = max(mean.quantize(MICROSECOND), MICROSECOND)
        return MeasuredAverage(mean, self.query_count, self.query_tests)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the total as a decimal string, exact)."""
        return {"pool_sizes": dict(self.pool_sizes), "query_count": self.query_count,
                "query_total_ms": str(self.query_total_ms), "query_tests": self.query_tests}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SizingInputs:
        """Rebuild from :meth:`to_dict` output."""
        return cls({str(k): int(v) for k, v in data.get("pool_sizes", {}).items()},
                   int(data.get("query_count", 0)), Decimal(str(data.get("query_total_ms", "0"))),
                   int(data.get("query_tests", 0)))


def average_query_time(report: RunReport) -> MeasuredAverage | None:
    """Mean of per-test ``queries.total_ms / queries.count`` weighted by count; None without queries.

    The weighted mean is the run's total query time over its total statement count.
    """
    return SizingInputs.of_report(report).average()


def configured_sizes(report: RunReport) -> dict[str, int]:
    """Pool name -> configured size, over every test that used the pool (smallest seen)."""
    return SizingInputs.of_report(report).pool_sizes


def _warnings(sizes: dict[str, int], advice: Recommendation) -> list[str]:
    ms = _plain(_EXACT.multiply(advice.avg_query_seconds, Decimal(1000)))
    return [f"{name}: pool size {size} is below the {advice.size} needed for "
            f"{_plain(advice.peak_rps)} requests/s at {ms} ms per query "
            f"(ceil({_plain(advice.peak_rps)} x {_plain(advice.avg_query_seconds)} s x "
            f"{_plain(advice.headroom)}) = {advice.size})"
            for name, size in sorted(sizes.items()) if size < advice.size]


def pool_size_warnings(run_report: RunReport, peak_rps: float, avg_query_seconds: float | Decimal,
                       headroom: float = DEFAULT_HEADROOM) -> list[str]:
    """One line per observed pool configured below the size ``peak_rps`` needs, by pool name."""
    advice = recommend(peak_rps, avg_query_seconds, headroom)
    return _warnings(configured_sizes(run_report), advice)


def summary_lines(inputs: SizingInputs, peak_rps: float, avg_query_seconds: float | Decimal | None = None,
                  headroom: float = DEFAULT_HEADROOM) -> list[str]:
    """The pool-sizing lines of the end-of-run summary; empty when no sized pool was observed.

    Without ``avg_query_seconds`` the run's measured average query time is used.
    """
    if not inputs.pool_sizes:
        return []
    if avg_query_seconds is None:
        measured = inputs.average()
        if measured is None:
            return [("cannot recommend a pool size: no query times were measured; "
                    "pass --migsafe-avg-query-ms")]
        avg_query_seconds = measured.seconds
        source = f"measured over {measured.queries} queries"
    else:
        source = "as given"
    advice = recommend(peak_rps, avg_query_seconds, headroom)
    ms = _plain(_EXACT.multiply(advice.avg_query_seconds, Decimal(1000)))
    lines = [(f"recommended pool size {advice.size} for {_plain(advice.peak_rps)} requests/s "
             f"at {ms} ms per query ({source}), headroom {_plain(advice.headroom)}")]
    warnings = _warnings(inputs.pool_sizes, advice)
    lines.extend(f"WARNING {line}" for line in warnings)
    if not warnings:
        lines.append(f"every observed pool is at least {advice.size}")
    return lines
