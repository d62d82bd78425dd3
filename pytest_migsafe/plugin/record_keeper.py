"""Hands each test's record to the run report, with the outcome its reports give.

A record is made in a test's call phase (by a part that measured something) and is
pending until the test's teardown report: the call report sets its outcome, a failed
teardown makes it an error, and then it goes to the session's run report. With the
report on, the keeper also keeps every test's outcome, measured or not.

The keeper is registered at the first record (or by the report), so a suite in which
nothing is measured pays no hook call per test for it.
"""

from __future__ import annotations

import pytest

from pytest_migsafe.report.record import RunReport, TestRecord

KEEPER_NAME = "migsafe-records"


class RecordKeeper:
    """The ``pytest_runtest_logreport`` side of the records (see the module docstring)."""

    def __init__(self, report: RunReport, renamed: dict[str, str]) -> None:
        self.report = report  # the session's run report, which finished records join
        self.renamed = renamed  # node id as run -> as recorded (see stash.recorded_id)
        self.pending: dict[str, TestRecord] = {}
        self.called: set[str] = set()  # pending records whose call report came (their outcome is known)
        self.outcomes: dict[str, str] | None = None

    def track_outcomes(self) -> dict[str, str]:
        """Keep every test's outcome from now on (``error`` for a failed setup or teardown)."""
        if self.outcomes is None:
            self.outcomes = {}
        return self.outcomes

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The call report gives the outcome; a failed teardown makes it an error."""
        # (the outcome attribute read as it is: report.passed and report.failed are properties)
        when, outcome = report.when, report.outcome
        if when == "setup" and outcome == "passed":
            return  # nothing to note: the call report brings the outcome
        nodeid = report.nodeid
        outcomes = self.outcomes
        if outcomes is not None:
            renamed = self.renamed
            key = renamed.get(nodeid, nodeid) if renamed else nodeid
            if when != "teardown":  # the call, or a setup that did not pass
                outcomes[key] = "error" if when == "setup" and outcome == "failed" else outcome
            elif outcome == "failed" and outcomes.get(key) == "passed":
                outcomes[key] = "error"
        pending = self.pending
        record = pending.get(nodeid)
        if record is None:  # a test in which nothing was measured (or the xdist controller)
            return
        if when == "call":
            record.outcome = outcome
            self.called.add(nodeid)
        elif when == "teardown":
            if outcome == "failed" and record.outcome == "passed":
                record.outcome = "error"
            del pending[nodeid]
            self.called.discard(nodeid)
            if record.queries or record.cache or record.pool or record.shadows:
                self.report.add(record)

    def hand_over_pending(self) -> None:
        """At the session's end, the records whose teardown report never came (the run was
        interrupted, or pytest hit an internal error, in their teardown) go to the run report
        too: with their call's outcome, or ``"interrupted"`` when the call did not end."""
        for nodeid, record in list(self.pending.items()):
            if nodeid not in self.called:
                record.outcome = "interrupted"
            if record.queries or record.cache or record.pool or record.shadows:
                self.report.add(record)
        self.pending.clear()
        self.called.clear()

