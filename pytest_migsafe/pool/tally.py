"""The pool figures a run's totals need, at a few reads a test: a :class:`PoolTally`.

A :class:`~pytest_migsafe.pool.observe.PoolObservation` of every pool works out all of a
test's pool figures (peaks, waits, hold times, pool names and sizes): the report's JSON,
baseline and ``-v`` table show them. The terminal summary alone shows only the run's
totals: connections created and leaked, and how many tests used a pool. A tally gives those
from process-wide counts (:func:`pytest_migsafe.pool.events.totals`,
:func:`pytest_migsafe.pool.psycopg.totals`) read at its start and stop, and a
:class:`~pytest_migsafe.pool.observe.LeakWatch` (the leak check of the plugin's defaults):
no observer, so a pool event costs what it costs unobserved. Its counts equal those of an
observation of every pool over the same span.
"""

from __future__ import annotations

from pytest_migsafe.pool import events
from pytest_migsafe.pool import psycopg as pool_psycopg
from pytest_migsafe.pool.observe import LeakWatch
from pytest_migsafe.report.record import PoolFigures


class PoolTally:
    """Counts of every pool between its creation and :meth:`stop` (see the module docstring).

    ``watch``: its :class:`~pytest_migsafe.pool.observe.LeakWatch` (``watch.leaks``,
    ``watch.leaked_checkouts`` after the stop). The driver hooks must be installed
    (:func:`~pytest_migsafe.pool.targets.install`).
    """

    __slots__ = ("_events", "_psycopg", "watch")

    def __init__(self) -> None:
        self._events = events.totals()
        self._psycopg = pool_psycopg.totals()
        self.watch = LeakWatch()  # (last: nothing to undo should a read above raise)

    def stop(self) -> PoolFigures | None:
        """Stop; the figures, or None when no pool did anything (nothing created, closed,
        invalidated, checked out or in, timed out or leaked).

        The figures hold ``created``, ``closed``, ``invalidated``, ``checkouts``,
        ``checkins``, ``timeouts`` (counts) and ``leaks`` (the watch's own list); every other
        field of :class:`~pytest_migsafe.report.record.PoolFigures` is 0 or empty (not
        measured)."""
        leaks = self.watch.stop()
        end, psycopg_end = events.totals(), pool_psycopg.totals()
        if end == self._events and psycopg_end == self._psycopg and not leaks:
            return None
        created, closed, invalidated, checkouts, checkins, timeouts = end
        created0, closed0, invalidated0, checkouts0, checkins0, timeouts0 = self._events
        psy_created = psycopg_end[0] - self._psycopg[0]
        psy_lost = psycopg_end[1] - self._psycopg[1]
        created += psy_created - created0
        closed += psy_lost - closed0
        invalidated += psy_lost - invalidated0
        checkouts -= checkouts0
        checkins -= checkins0
        timeouts -= timeouts0
        if not (created or closed or invalidated or checkouts or checkins or timeouts or leaks):
            return None
        figures = PoolFigures.__new__(PoolFigures)  # (every field in one dict: no __init__ of 24 fields)
        figures.__dict__ = {
            "created": created, "closed": closed, "invalidated": invalidated, "checkouts": checkouts,
            "checkins": checkins, "peak_checked_out": 0, "overflow_used": 0, "wait_ms_p50": 0.0,
            "wait_ms_p99": 0.0, "wait_ms_max": 0.0, "timeouts": timeouts, "leaks": leaks, "pool_sizes": {},
            "cold_start_created": 0, "created_beyond_warm": 0, "peak_checked_out_own": 0,
            "held_at_peak_own": 0, "hold_ms_p50": 0.0, "hold_ms_p95": 0.0, "hold_ms_p99": 0.0,
            "hold_ms_max": 0.0, "hold_times": {}, "servers": {},
        }
        return figures
