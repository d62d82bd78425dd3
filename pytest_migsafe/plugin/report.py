"""pytest wiring of the report: its options, and what is registered when they are given.

Nothing is loaded unless asked for: :class:`~pytest_migsafe.plugin.report_session.ReportSession`
(summary, baseline, regressions, JSON, SARIF, GitHub annotations, xdist) only with one of
``--migsafe-report``, ``--migsafe-update-baseline``, ``--migsafe-fail-on-regression``,
``--migsafe-report-json`` or ``--migsafe-sarif`` (or its ini key); :class:`JunitProperties`
only with ``--junitxml`` and the report or ini ``migsafe_junit_properties``; :class:`HtmlColumns` only when
pytest-html is loaded and writes a report (``--html``).
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_migsafe.plugin.options import get_setting, ini_type
from pytest_migsafe.plugin.stash import existing_record, note_loadgroup_renames, want_records
from pytest_migsafe.report import DEFAULT_HEAVIEST
from pytest_migsafe.values import argument_type, parse_bool, parse_rate, parse_tolerance


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
                         "(also when the run is interrupted, SIGTERM included).")
    group.addoption("--migsafe-sarif", dest="migsafe_sarif", metavar="PATH",
                    help="write N+1 suspects, budget failures and regressions to PATH as SARIF 2.1.0, "
                         "at their call sites (ini migsafe_sarif).")
    group.addoption("--migsafe-heaviest", dest="migsafe_heaviest", metavar="N",
                    type=argument_type(parse_tolerance),
                    help=f"with --migsafe-report and no baseline, list the N tests that ran the most "
                         f"statements (default {DEFAULT_HEAVIEST}, 0 for none; ini migsafe_heaviest).")
    parser.addini("migsafe_baseline", "the baseline file, relative to the ini file "
                                      "(default .migsafe/baseline.json in the rootdir).", default="")
    parser.addini("migsafe_query_tolerance", "extra queries per test that are not a regression "
                                             "(default 0).", default="0", type=ini_type(int))
    parser.addini("migsafe_hit_rate_tolerance", "fall of a test's cache hit rate that is not a "
                                                "regression (default 0.05).", default="0.05", type=ini_type(float))
    parser.addini("migsafe_sarif", "write the SARIF 2.1.0 findings to this file, relative to the ini "
                                   "file (default: none).", default="")
    parser.addini("migsafe_junit_properties", "with --junitxml, write each test's figures as JUnit XML "
                  "properties (migsafe_queries, ...) when no report option asks for them too (default false: "
                  "the plugin adds nothing to a test's user_properties unasked).", default="false",
                  type=ini_type(bool))
    parser.addini("migsafe_heaviest", f"tests listed as heaviest by statements when there is no "
                                      f"baseline (default {DEFAULT_HEAVIEST}).", default=str(DEFAULT_HEAVIEST), type=ini_type(int))


def pytest_configure(config: pytest.Config) -> None:
    """Register the report machinery when one of its options is given."""
    for option, name in (("--migsafe-report-json", "migsafe_report_json"), ("--migsafe-sarif", "migsafe_sarif"),
                         ("--migsafe-baseline", "migsafe_baseline")):
        given = config.getoption(name)
        if given is not None and not str(given).strip():  # (an empty value would be read as not given)
            raise pytest.UsageError(f"{option}= is empty; expected the path of a file to write")
    wanted = report_wanted(config)
    # (read without --junitxml too: a bad value is a usage error today, not the day XML is asked for)
    junit_asked = bool(get_setting(config, ini="migsafe_junit_properties", parse=parse_bool, default=False))
    if junit_properties_wanted(config, junit_asked):
        config.pluginmanager.register(JunitProperties(), "migsafe-junit")
        want_records(config)
    if config.pluginmanager.hasplugin("html") and config.getoption("htmlpath", None):
        config.pluginmanager.register(HtmlColumns(), "migsafe-html")
        want_records(config)
    if not wanted:
        _check_settings(config)
        return
    from pytest_migsafe.plugin.report_session import ReportSession, WorkerRecords, XdistReport, read_settings

    session = ReportSession(config, read_settings(config))
    want_records(config, shapes_read_late=session.reads_few_shapes(), pool_totals_only=session.reads_pool_totals_only())
    config.pluginmanager.register(session, "migsafe-report")
    if _distributing(config):
        config.pluginmanager.register(XdistReport(session), "migsafe-report-xdist")
    elif hasattr(config, "workerinput"):  # a pytest-xdist worker: each test's record goes on its teardown report
        config.pluginmanager.register(WorkerRecords(session), "migsafe-report-worker")


def report_wanted(config: pytest.Config) -> bool:
    """True when an option (or ini key) asks for the report: ``--migsafe-report``,
    ``--migsafe-update-baseline``, ``--migsafe-fail-on-regression``, ``--migsafe-report-json``,
    ``--migsafe-sarif`` (ini ``migsafe_sarif``)."""
    return any(config.getoption(name) for name in (
        "migsafe_report", "migsafe_update_baseline", "migsafe_fail_on_regression", "migsafe_report_json",
        "migsafe_sarif")) or bool(config.getini("migsafe_sarif"))


def junit_properties_wanted(config: pytest.Config, asked: bool | None = None) -> bool:
    """True when each test's figures go into the JUnit XML as properties: ``--junitxml`` with the
    report asked for (:func:`report_wanted`) or ini ``migsafe_junit_properties = true``. Never
    with ``--junitxml`` alone: the properties are entries of the test's ``user_properties``,
    which the project's own code reads too. ``asked``: the ini key's value, if read already.
    ``pytest.UsageError`` for a malformed ini value."""
    if not config.getoption("xmlpath", None):
        return False
    if report_wanted(config):
        return True
    if asked is None:
        asked = bool(get_setting(config, ini="migsafe_junit_properties", parse=parse_bool, default=False))
    return asked


def _check_settings(config: pytest.Config) -> None:
    """The report's ini keys (and ``--migsafe-heaviest``) read with no report asked for too, so
    that a bad value is a usage error before any test runs, not a surprise the day the
    report is turned on (the report reads them again, in ``read_settings``)."""
    get_setting(config, ini="migsafe_query_tolerance", parse=parse_tolerance, default=0)
    get_setting(config, ini="migsafe_hit_rate_tolerance", parse=parse_rate, default=0.05)
    get_setting(config, option="migsafe_heaviest", ini="migsafe_heaviest", parse=parse_tolerance,
                default=DEFAULT_HEAVIEST)


def _distributing(config: pytest.Config) -> bool:
    """True on a pytest-xdist controller that sends tests to workers (``-n N``, ``--tx``): the
    only session whose reports come from workers. pytest-xdist installed but not used (no
    ``-n``, ``-n 0``), or a worker, pays no per-test hook for it."""
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After pytest-xdist's own hook: the tests it renamed for ``--dist loadgroup``."""
    note_loadgroup_renames(config, items)


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


HTML_COLUMNS = ("Queries / budget", "N+1 suspects", "Cache hit rate", "Connections created")


class HtmlColumns:
    """pytest-html's results table and extras, registered only when pytest-html is loaded
    and ``--html`` is given (its hooks exist only then).

    Each test's row gets four columns (:data:`HTML_COLUMNS`): statements / ``max_queries``
    budget, N+1 suspects not allowed, the cache hit rate in percent, DBAPI connections
    created; ``-`` where the test has no such figure. Its extra section gets a table of its
    statement shapes, with counts, longest time in ms and call sites. The figures travel on
    the call report (``report.migsafe_html``, a JSON-able dict), so they survive xdist.
    """

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """Put the test's figures and shapes on its call report, before pytest-html reads it."""
        report = yield
        record = existing_record(item) if report.when == "call" else None
        if record is not None:
            from pytest_html import extras

            from pytest_migsafe.report.render import html_cells, html_shapes

            report.migsafe_html = html_cells(record)  # type: ignore[attr-defined]
            shapes = html_shapes(record)
            if shapes:
                report.extras = [*getattr(report, "extras", []), extras.html(shapes)]  # type: ignore[attr-defined]
        return report

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        """The four migsafe columns, after pytest-html's duration column."""
        for offset, title in enumerate(HTML_COLUMNS):
            cells.insert(3 + offset, f'<th class="migsafe">{title}</th>')

    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        """The test's four figures (``-`` when none was measured)."""
        from html import escape

        figures = getattr(report, "migsafe_html", None) or {}
        for offset, title in enumerate(HTML_COLUMNS):
            cells.insert(3 + offset, f'<td class="migsafe">{escape(str(figures.get(title, "-")))}</td>')
