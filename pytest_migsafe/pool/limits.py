"""Pool limits of one test (the ``pool`` marker and the leak rule) and their failure message."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pytest_migsafe.report.record import Leak, PoolFigures
from pytest_migsafe.text import plural

LIMIT_NAMES = ("max_created", "max_checked_out", "max_wait_ms", "leaks")


@dataclass(frozen=True)
class PoolLimits:
    """Upper bounds on a test's pool figures; None means no bound."""

    max_created: int | None = None
    max_checked_out: int | None = None
    max_wait_ms: float | None = None
    leaks: int | None = None


def pool_limits(*, max_created: Any = None, max_checked_out: Any = None,
                max_wait_ms: Any = None, leaks: Any = None) -> PoolLimits:
    """The signature of ``@pytest.mark.pool(...)``: validated limits (ValueError if negative).

    Counts are whole numbers >= 0; ``max_wait_ms`` is a number >= 0.
    """
    for name, value in (("max_created", max_created), ("max_checked_out", max_checked_out),
                        ("leaks", leaks)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    if max_wait_ms is not None:
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)):
            raise ValueError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
        try:
            wait = float(max_wait_ms)
        except OverflowError:  # an int too large for a float: no wait is that long
            raise ValueError("max_wait_ms must be a number >= 0 (milliseconds) a float can hold, "
                             f"got an integer of {int(max_wait_ms).bit_length()} bits") from None
        if not math.isfinite(wait) or wait < 0:
            raise ValueError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
    return PoolLimits(max_created, max_checked_out, max_wait_ms, leaks)


def own_peak(figures: PoolFigures) -> tuple[int, int]:
    """``(the test's own connections out at once at their peak, connections held since before
    the test at that moment)``; ``(peak_checked_out, 0)`` for figures that do not tell them apart."""
    own = getattr(figures, "peak_checked_out_own", None)
    if own is None:
        return figures.peak_checked_out, 0
    return int(own), int(getattr(figures, "held_at_peak_own", 0))


def exceeded(figures: PoolFigures, limits: PoolLimits) -> list[str]:
    """One ``expected ..., got ...`` phrase per limit the figures exceed.

    ``max_checked_out`` counts the test's own checkouts: connections out since before the
    call phase (a fixture's) are not held against it, and the message shows the split.
    """
    problems = []
    if limits.max_created is not None and figures.created > limits.max_created:
        problems.append(f"max_created={limits.max_created}, {plural(figures.created, 'connection')} created")
    own, held = own_peak(figures)
    if limits.max_checked_out is not None and own > limits.max_checked_out:
        split = (f"{own + held} at once: {own} the test's own, {held} held since before the test (by a fixture, or left out by an earlier test)"
                 if held else f"{own} checked out at once")
        problems.append(f"max_checked_out={limits.max_checked_out}, {split}")
    if limits.max_wait_ms is not None and figures.wait_ms_max > limits.max_wait_ms:
        problems.append(f"max_wait_ms={limits.max_wait_ms:g}, longest checkout wait {figures.wait_ms_max:g} ms")
    if limits.leaks is not None and len(figures.leaks) > limits.leaks:
        problems.append(f"leaks={limits.leaks}, {plural(len(figures.leaks), 'connection')} leaked")
    return problems


def describe_leak(leak: Leak) -> str:
    """``<pool>: checked out at <site>, still checked out`` (or dropped without close())."""
    how = ("dropped without close(); only the garbage collector returned it" if leak.dropped
           else "still checked out at the end of the test")
    return f"checked out at {leak.call_site} from {leak.pool}: {how}"


def failure_message(problems: list[str], figures: PoolFigures, limit: int | None = 10) -> str:
    """The failure text: what was exceeded first, then the leaks with their call sites."""
    lines = ["pool limits exceeded: " + "; ".join(problems)]
    leaks = figures.leaks if limit is None else figures.leaks[:limit]
    for leak in leaks:
        lines.append("  " + describe_leak(leak))
    if len(leaks) < len(figures.leaks):
        lines.append(f"  ... and {plural(len(figures.leaks) - len(leaks), 'more leak')} (use -v to see all)")
    return "\n".join(lines)
