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
    if not 0 < p <= 100:
        raise ValueError(f"percentile expects 0 < p <= 100, got {p}")
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, math.ceil(p * len(ordered) / 100 - 1e-9))
    return float(ordered[rank - 1])
