"""Where the plugin keeps its state: pytest stash keys and accessors.

The per-test :class:`~pytest_migsafe.record.TestRecord` lives on the item; the
:class:`~pytest_migsafe.record.RunReport` of the session lives on the config. Every
``plugin_*`` module fills its own part of the test record through :func:`record_of`.
"""

from __future__ import annotations

import pytest

from .record import RunReport, TestRecord

RECORD_KEY = pytest.StashKey[TestRecord]()
RUN_REPORT_KEY = pytest.StashKey[RunReport]()


def record_of(item: pytest.Item) -> TestRecord:
    """The test record of ``item``, created on first use."""
    record = item.stash.get(RECORD_KEY, None)
    if record is None:
        record = item.stash[RECORD_KEY] = TestRecord(nodeid=item.nodeid)
    return record


def run_report(config: pytest.Config) -> RunReport:
    """The session's run report, created on first use."""
    report = config.stash.get(RUN_REPORT_KEY, None)
    if report is None:
        report = config.stash[RUN_REPORT_KEY] = RunReport()
    return report
