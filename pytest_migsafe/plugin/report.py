"""pytest wiring of the report: its options, and what is registered when they are given.

Nothing is loaded unless asked for: :class:`~pytest_migsafe.plugin.report_session.ReportSession`
(summary, baseline, regressions, JSON, xdist) only with one of ``--migsafe-report``,
``--migsafe-update-baseline``, ``--migsafe-fail-on-regression`` or
``--migsafe-report-json``; :class:`JunitProperties` only with ``--junitxml``.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_migsafe.plugin.stash import existing_record


def pytest_addoption(parser: pytest.Parser) -> None:
    """The report options and ini keys."""
    group = parser.getgroup("migsafe", "migsafe: migration safety checks")
    group.addoption("--migsafe-report", dest="migsafe_report", action="store_true", default=False,
                    help="print migsafe's summary at the end: regressions, improvements, N+1 "
                         "suspects, totals (-v adds one line per test).")
    group.addoption("--migsafe-baseline", dest="migsafe_baseline", metavar="PATH",
                    help="the baseline file to compare with (default .migsafe/baseline.json in the "
                         "rootdir; ini migsafe_baseline).")
    group.addoption("--migsafe-update-baseline", dest="migsafe_update_baseline", action="store_true",
                    default=False,
                    help="write this run's figures to the baseline at session end (tests that did "
                         "not pass keep their old figures; an interrupted run writes nothing).")
    group.addoption("--migsafe-fail-on-regression", dest="migsafe_fail_on_regression",
                    action="store_true", default=False,
                    help="exit non-zero when a figure regressed against the baseline, even if "
                         "every test passed.")
    group.addoption("--migsafe-report-json", dest="migsafe_report_json", metavar="PATH",
                    help="write the run's figures, regressions and improvements to PATH as JSON "
                         "(also when the run is interrupted).")
    parser.addini("migsafe_baseline", "the baseline file, relative to the ini file "
                                      "(default .migsafe/baseline.json in the rootdir).", default="")
    parser.addini("migsafe_query_tolerance", "extra queries per test that are not a regression "
                                             "(default 0).", default="0")
    parser.addini("migsafe_hit_rate_tolerance", "fall of a test's cache hit rate that is not a "
                                                "regression (default 0.05).", default="0.05")


def pytest_configure(config: pytest.Config) -> None:
    """Register the report machinery when one of its options is given."""
    wanted = any(config.getoption(name) for name in (
        "migsafe_report", "migsafe_update_baseline", "migsafe_fail_on_regression", "migsafe_report_json"))
    if config.getoption("xmlpath", None):
        config.pluginmanager.register(JunitProperties(), "migsafe-junit")
    if not wanted:
        return
    from pytest_migsafe.plugin.report_session import ReportSession, XdistReport, read_settings

    session = ReportSession(config, read_settings(config))
    config.pluginmanager.register(session, "migsafe-report")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistReport(session), "migsafe-report-xdist")


class JunitProperties:
    """Each test's figures as JUnit XML properties (``migsafe_queries`` ...)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Attach the complete record's figures to the teardown report."""
        report = yield
        record = existing_record(item) if report.when == "teardown" else None
        if record is not None:
            from pytest_migsafe.report.render import junit_properties

            report.user_properties.extend(junit_properties(record))
        return report
