"""Nearest-rank percentiles, the one definition pool waits and shadow latencies share."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 < p <= 100); 0.0 for no samples.

    The ``ceil(p/100 * n)``-th smallest sample: always an observed value, so p99 of fewer
    than 100 samples is the maximum. The result is in the samples' own unit (seconds for
    pool waits, milliseconds for shadow durations). Raises ``ValueError`` for ``p``
    outside (0, 100].
    """
    return percentiles(samples, (p,))[0]


def percentiles(samples: Sequence[float], ps: tuple[float, ...]) -> list[float]:
    """:func:`percentile` of ``samples`` for each of ``ps``, sorting the samples once.

    Raises ``ValueError`` for any ``p`` outside (0, 100].
    """
    check_percentiles(ps)
    if len(samples) <= 1:  # no sample, or one: it is every percentile
        return [float(samples[0]) if samples else 0.0] * len(ps)
    ordered = sorted(samples)
    n = len(ordered)
    return [float(ordered[max(1, math.ceil(p * n / 100 - 1e-9)) - 1]) for p in ps]


def check_percentiles(ps: tuple[float, ...]) -> None:
    """Raise ``ValueError`` for any ``p`` of ``ps`` outside (0, 100] (NaN included)."""
    if type(ps) is tuple and ps in _VALID:
        return  # (the pool figures ask for the same two tuples for every test)
    for p in ps:
        if not 0 < p <= 100:
            raise ValueError(f"percentile expects 0 < p <= 100, got {p}")
    if type(ps) is tuple and len(_VALID) < 64:
        _VALID.add(ps)


_VALID: set[tuple[float, ...]] = set()  # tuples found valid (a few: the callers' constants)
