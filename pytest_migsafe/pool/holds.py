"""How long connections are held: a bounded histogram of checkout-to-checkin times.

A connection is held from its checkout (SQLAlchemy ``checkout`` event, the return of
psycopg_pool ``getconn()``) to its checkin (``checkin`` event, the call of ``putconn()``):
for an ORM Session that is the whole transaction, for ``with engine.connect()`` the
whole block. That span, not the duration of one statement, is the ``W`` of Little's law
(``L = lambda x W``) that sizes a pool (:mod:`pytest_migsafe.pool.sizing`).

:class:`HoldTimes` keeps every sample in a bucket keyed by the bucket's upper bound in
whole microseconds: exact below 128 us, then 64 buckets per power of two (at most 1.6 %
wide), so a test with a million checkouts keeps a few hundred integers. Two histograms
merge by adding their counts, with the same buckets whatever the split: the run's
figures are the same from one process or from several xdist workers. A percentile is
nearest-rank over the buckets and reports the bucket's upper bound (never below the true
sample), capped at the exact maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_migsafe.percentiles import check_percentiles

_EXACT_BELOW = 128  # microseconds counted one by one
_MANTISSA_BITS = 7  # 64 buckets for each power of two above that


def bucket_of(microseconds: int) -> int:
    """The upper bound (whole microseconds, inclusive) of the bucket that holds ``microseconds``.

    ``microseconds`` must be an int >= 0. Values up to 128 are their own bucket; above,
    the bound is the value rounded up to 7 significant bits (at most 1/64 above it).
    """
    if microseconds <= _EXACT_BELOW:
        return microseconds
    shift = (microseconds - 1).bit_length() - _MANTISSA_BITS
    return (((microseconds - 1) >> shift) + 1) << shift


def to_microseconds(seconds: float) -> int:
    """``seconds`` as whole microseconds, rounded up (a hold of 1 ns counts as 1 us); 0 for <= 0."""
    return max(0, math.ceil(seconds * 1_000_000 - 1e-6))


@dataclass
class HoldTimes:
    """Checkout-to-checkin times of pooled connections: a mergeable, bounded histogram.

    ``buckets``: ``{upper bound in us: samples}`` (see :func:`bucket_of`); ``count``:
    samples; ``total_us``: their sum in whole microseconds (for the mean); ``max_us``: the
    longest, exact. JSON form: :meth:`to_dict` (bucket keys as decimal strings).
    """

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total_us: int = 0
    max_us: int = 0

    def add(self, seconds: float) -> None:
        """Count one hold of ``seconds`` (a float, perf_counter difference)."""
        us = to_microseconds(seconds)
        key = bucket_of(us)
        buckets = self.buckets
        buckets[key] = buckets.get(key, 0) + 1
        self.count += 1
        self.total_us += us
        if us > self.max_us:
            self.max_us = us

    def merge(self, other: HoldTimes) -> None:
        """Add ``other``'s samples to these (exact: counts add, the maximum is the larger)."""
        buckets = self.buckets
        for key, n in other.buckets.items():
            buckets[key] = buckets.get(key, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    def percentile_us(self, p: float) -> int:
        """Nearest-rank ``p``-th percentile in whole microseconds (0 < p <= 100); 0 without samples.

        The upper bound of the bucket holding the ``ceil(p/100 x count)``-th smallest
        sample, capped at the exact maximum. ValueError for ``p`` outside (0, 100].
        """
        return self.percentiles_us((p,))[0]

    def percentiles_us(self, ps: tuple[float, ...]) -> list[int]:
        """:meth:`percentile_us` of each of ``ps``, in their order, from one pass over the
        buckets. ValueError for any ``p`` outside (0, 100]."""
        check_percentiles(ps)
        count, top = self.count, self.max_us
        if not count:
            return [0] * len(ps)
        buckets = self.buckets
        if len(buckets) == 1:  # every rank falls in the one bucket (a test's one or few holds)
            for key in buckets:
                return [min(key, top)] * len(ps)
        # (rank, position in ps), smallest rank first
        wanted = sorted((max(1, math.ceil(p * count / 100 - 1e-9)), i) for i, p in enumerate(ps))
        found = [top] * len(ps)
        seen = 0
        next_one = 0
        for key in sorted(buckets):
            seen += buckets[key]
            while next_one < len(wanted) and seen >= wanted[next_one][0]:
                found[wanted[next_one][1]] = min(key, top)
                next_one += 1
            if next_one == len(wanted):
                break
        return found

    def percentile_ms(self, p: float) -> float:
        """:meth:`percentile_us` in milliseconds (whole microseconds: exact to 0.001 ms)."""
        return self.percentile_us(p) / 1000

    def percentiles_ms(self, ps: tuple[float, ...]) -> list[float]:
        """:meth:`percentile_ms` of each of ``ps``, in their order (one pass: :meth:`percentiles_us`)."""
        # (whole microseconds over 1000: the float nearest each value to 0.001 ms, no rounding)
        return [us / 1000 for us in self.percentiles_us(ps)]

    @property
    def max_ms(self) -> float:
        """The longest hold in milliseconds (exact to the microsecond)."""
        return self.max_us / 1000

    @property
    def mean_ms(self) -> float:
        """The mean hold in milliseconds; 0.0 without samples."""
        return round(self.total_us / self.count / 1000, 3) if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        """``{"buckets": {"<us>": n, ...}, "count": n, "total_us": n, "max_us": n}``, buckets sorted."""
        return {"buckets": {str(key): self.buckets[key] for key in sorted(self.buckets)},
                "count": self.count, "total_us": self.total_us, "max_us": self.max_us}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HoldTimes:
        """Rebuild from :meth:`to_dict` output; ValueError / TypeError for a malformed one
        (a bucket bound or a figure that is not a whole number >= 0: ``0.5``, ``Infinity``,
        ``true`` and ``"7"`` included)."""
        buckets = {_whole(int(key) if isinstance(key, str) and key.isascii() and key.isdigit() else key,
                          "a hold-time bucket's bound"): _whole(n, "a hold-time bucket's count")
                   for key, n in dict(data.get("buckets", {})).items()}
        count = _whole(data.get("count", sum(buckets.values())), "the hold count")
        return cls(buckets, count, _whole(data.get("total_us", 0), "total_us"), _whole(data.get("max_us", 0), "max_us"))

    @classmethod
    def of(cls, seconds: Iterable[float]) -> HoldTimes:
        """A histogram of the given holds (seconds)."""
        holds = cls()
        for value in seconds:
            holds.add(value)
        return holds


def _whole(value: Any, what: str) -> int:
    """``value`` when it is a whole number >= 0 (an ``int``, not a ``bool``); ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: expected a whole number >= 0, got {value!r}")
    return value
