"""Which tests' hit rates are rated: compared with the alert line and summed in the run's rate.

A hit rate means something only for a workload. Three kinds of test read the cache for
another reason, and their rate says nothing about the cache:

- a test that proves cache-aside (``assert_cache_aside``): its first read *must* miss;
- a test that runs a shadow experiment: the experiment flushes the cache between paths;
- a test with a handful of reads: one miss in two reads is 50%.

So a test is **rated** when it has at least ``migsafe_hit_rate_min_reads`` reads (ini,
default :data:`DEFAULT_MIN_READS`), used no ``assert_cache_aside`` and ran no shadow
experiment; a test with a ``min_cache_hit_rate`` marker is always rated (its author
declared the rate meaningful). The others keep their figures in the record and the JSON,
but get no alert line (their ``alert`` is None, their ``target`` kept), no ``!`` mark, and
are left out of the run's hit rate; the summary says how many and why.

:func:`rating_of` decides from what the plugin knows at the end of the call phase, and
:func:`rate` records the decision in the figures: a test that is not rated keeps its
``target`` and has no ``alert``. The record has no field for the reason, so the report
says "assert_cache_aside or too few reads" for those; shadow experiments are recorded
after the cache figures, and the report rates those out itself (a record with shadows is
never rated unless marked).
"""

from __future__ import annotations

from pytest_migsafe.report.record import CacheFigures

DEFAULT_MIN_READS = 10
RATED = "rated"
ASIDE = "assert_cache_aside"
SHADOW = "shadow experiment"


def few_reads(min_reads: int) -> str:
    """The reason given to a test with fewer than ``min_reads`` reads."""
    return f"fewer than {min_reads} reads"


def rating_of(reads: int, *, aside: bool, marked: bool, min_reads: int = DEFAULT_MIN_READS) -> str:
    """:data:`RATED`, or why the test is not rated: :data:`ASIDE` (it ran
    ``assert_cache_aside``) or :func:`few_reads` (``reads`` = hits + misses below
    ``min_reads``). ``marked``: it has a ``min_cache_hit_rate`` marker, which always rates."""
    if marked:
        return RATED
    if aside:
        return ASIDE
    if reads < min_reads:
        return few_reads(min_reads)
    return RATED


def rate(figures: CacheFigures, reason: str) -> CacheFigures:
    """Apply the rating ``reason`` (from :func:`rating_of`) to ``figures``, in place, and
    return them: a test that is not rated keeps its ``target`` and loses its ``alert``, which
    is how the report (:func:`pytest_migsafe.report.record.cache_rating`) tells it, in this
    process and in a pytest-xdist controller alike."""
    if reason != RATED:
        figures.alert = None
    return figures
