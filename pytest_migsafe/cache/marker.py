"""The ``min_cache_hit_rate`` marker: its help line and its signature check.

Apart from :mod:`~pytest_migsafe.cache.stats` so that registering and checking the marker
(every session, at start-up and collection) does not import the cache measurement.
"""

from __future__ import annotations

MIN_HIT_RATE_HELP = (
    "min_cache_hit_rate(rate, prefix=None): fail the test when its Redis hit rate during the call "
    "phase (of the keys before the first ':' equal to prefix, if given) is below rate (0 to 1)."
)


def min_cache_hit_rate_signature(rate: float, prefix: str | None = None) -> tuple[float, str | None]:
    """The ``min_cache_hit_rate(rate, prefix=None)`` marker's signature: ``(rate as float,
    prefix)`` when valid. ``rate`` is a fraction from 0 to 1; ``prefix`` a non-empty key
    prefix. Raises ``TypeError`` for a non-number rate (bools included) or a non-str
    prefix, ``ValueError`` for a rate outside [0, 1] or an empty prefix (and Python's own
    ``TypeError`` for a missing or unknown argument)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(f"rate expects a number between 0 and 1, got {rate!r}")
    if not 0 <= rate <= 1:  # (compared as given: float() of a huge int overflows)
        raise ValueError(f"rate expects a number between 0 and 1, got {rate!r}")
    if prefix is not None and not isinstance(prefix, str):
        raise TypeError(f"prefix expects a key prefix such as 'user' (the part before the first ':'), "
                        f"got {prefix!r}")
    if prefix == "":
        raise ValueError("prefix expects a key prefix such as 'user' (the part before the first ':'), got ''")
    return float(rate), prefix
