"""The scaling check: the number of queries must not grow with the amount of data.

As in Ruby's n_plus_one_control: run ``action`` once to warm caches, then for each
scale ``n`` build the data with ``setup(n)`` and count the statements ``action`` runs.
Every scale starts from the same state when ``before_each`` / ``after_each`` open and
roll back a savepoint (the pytest fixture does this on ``migsafe_db``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_migsafe.queries.counter import count_queries
from pytest_migsafe.text import shorten


class QueriesGrowWithData(AssertionError):
    """The query count of an action grew with the amount of data."""


@dataclass
class ScalingResult:
    """Statement counts per scale, in total and per shape."""

    scale: tuple[int, ...]
    totals: list[int]
    per_shape: dict[str, list[int]] = field(default_factory=dict)

    def grown(self, slope: float = 0.0) -> dict[str, list[int]]:
        """Shapes whose count grew faster than ``slope`` statements per unit of scale."""
        grown = {}
        first = self.scale[0]
        for shape, counts in self.per_shape.items():
            base = counts[0]
            if any(c - base > slope * (n - first) + 1e-9 for n, c in zip(self.scale, counts)):
                grown[shape] = counts
        return grown


def measure_scaling(setup: Callable[[int], Any], action: Callable[[], Any],
                    scale: Sequence[int] = (2, 3), *,
                    before_each: Callable[[], Any] | None = None,
                    after_each: Callable[[], Any] | None = None,
                    warm: bool = True) -> ScalingResult:
    """Count the statements of ``action`` after ``setup(n)`` for each ``n`` in ``scale``."""
    scale = tuple(scale)
    if len(scale) < 2 or any(not isinstance(n, int) or n < 1 for n in scale) or list(scale) != sorted(set(scale)):
        raise ValueError(f"scale expects two or more increasing whole numbers >= 1, got {scale!r}")
    if warm:
        _in_state(lambda: (setup(scale[0]), action()), before_each, after_each)
    totals: list[int] = []
    per_shape: dict[str, list[int]] = {}
    for index, n in enumerate(scale):
        def measured(n: int = n) -> Any:
            setup(n)
            with count_queries() as counter:
                action()
            return counter

        counter = _in_state(measured, before_each, after_each)
        totals.append(counter.count)
        for stats in counter.summary():
            per_shape.setdefault(stats.shape, [0] * len(scale))[index] = stats.count
    return ScalingResult(scale, totals, per_shape)


def _in_state(fn: Callable[[], Any], before_each: Callable[[], Any] | None,
              after_each: Callable[[], Any] | None) -> Any:
    if before_each is not None:
        before_each()
    try:
        return fn()
    finally:
        if after_each is not None:
            after_each()


def assert_constant_queries(setup: Callable[[int], Any], action: Callable[[], Any],
                            scale: Sequence[int] = (2, 3), *, slope: float = 0.0,
                            before_each: Callable[[], Any] | None = None,
                            after_each: Callable[[], Any] | None = None) -> ScalingResult:
    """Fail with the shapes that grew when ``action``'s query count grows with ``n``.

    ``slope`` allows a known linear growth: that many extra statements per unit of ``n``.
    """
    result = measure_scaling(setup, action, scale, before_each=before_each, after_each=after_each)
    grown = result.grown(slope)
    if grown:
        lines = [f"query count grows with the data: scale {list(result.scale)} ran "
                 f"{result.totals} statements" + (f" (allowed slope {slope}/unit)" if slope else "")]
        for shape, counts in sorted(grown.items(), key=lambda kv: -kv[1][-1]):
            lines.append(f"  {shorten(shape, 100)}: {' != '.join(str(c) for c in counts)}")
        raise QueriesGrowWithData("\n".join(lines))
    return result
