"""Where the plugin keeps its state: pytest stash keys and accessors.

The per-test :class:`~pytest_migsafe.record.TestRecord` lives on the item; the
:class:`~pytest_migsafe.record.RunReport` of the session lives on the config. Every
``plugin_*`` module fills its own part of the test record through :func:`record_of`,
from the :class:`CallPhase` it adds with :func:`add_call_phase`: ``plugin.py`` runs every
part's phase around a test's call in one hook, so a test costs one hook, not one per part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pytest

from .record import RunReport, TestRecord

RECORD_KEY = pytest.StashKey[TestRecord]()
RUN_REPORT_KEY = pytest.StashKey[RunReport]()
PENDING_KEY = pytest.StashKey["dict[str, TestRecord]"]()
CALL_PHASES_KEY = pytest.StashKey["list[Callable[[pytest.Item], CallPhase | None]]"]()
MARKS_KEY = pytest.StashKey["dict[str, list[pytest.Mark]]"]()


class CallPhase(Protocol):
    """One part's measurement of a test's call phase, started when the call starts."""

    def stop(self) -> None:
        """Stop measuring (the call is over, passed or not) and record the figures."""

    def failures(self) -> list[str]:
        """Messages that fail the test (a passing one); warnings are issued here too."""


def add_call_phase(config: pytest.Config, start: Callable[[pytest.Item], CallPhase | None]) -> None:
    """Have ``start(item)`` called as every test's call begins (None: nothing to measure)."""
    config.stash.setdefault(CALL_PHASES_KEY, []).append(start)


def call_phases(config: pytest.Config) -> list[Callable[[pytest.Item], CallPhase | None]]:
    """The phase starters added so far, in the order they were added."""
    return config.stash.get(CALL_PHASES_KEY, [])


def marks_of(item: pytest.Item) -> dict[str, list[pytest.Mark]]:
    """The item's markers by name, closest first: one walk up the tree, shared by every part."""
    marks = item.stash.get(MARKS_KEY, None)
    if marks is None:
        marks = {}
        for mark in item.iter_markers():
            marks.setdefault(mark.name, []).append(mark)
        item.stash[MARKS_KEY] = marks
    return marks


def record_of(item: pytest.Item) -> TestRecord:
    """The test record of ``item``, created on first use (and then pending, see below)."""
    record = item.stash.get(RECORD_KEY, None)
    if record is None:
        record = item.stash[RECORD_KEY] = TestRecord(nodeid=item.nodeid)
        item.config.stash.setdefault(PENDING_KEY, {})[item.nodeid] = record
    return record


def existing_record(item: pytest.Item) -> TestRecord | None:
    """The test record of ``item`` if a part of the plugin made one, else None."""
    return item.stash.get(RECORD_KEY, None)


def pending_records(config: pytest.Config) -> dict[str, TestRecord]:
    """Records of tests whose last report has not come yet, by node id."""
    return config.stash.setdefault(PENDING_KEY, {})


def run_report(config: pytest.Config) -> RunReport:
    """The session's run report, created on first use."""
    report = config.stash.get(RUN_REPORT_KEY, None)
    if report is None:
        report = config.stash[RUN_REPORT_KEY] = RunReport()
    return report
