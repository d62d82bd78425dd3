"""The report of one session: outcomes, baseline, regressions, JSON, summary, xdist.

Loaded by :mod:`~pytest_migsafe.plugin.report` only when a report option is given. The
logic lives in :mod:`~pytest_migsafe.report.baseline`, :mod:`~pytest_migsafe.report.regressions`,
:mod:`~pytest_migsafe.report.render` and :mod:`~pytest_migsafe.report.files`.

Rules: the baseline is read (and checked) at configure, before any test runs, and written
only at session end with ``--migsafe-update-baseline``, never after an interrupted run;
tests that did not pass keep their old figures. The JSON report is written at session end
whatever happened, interrupted runs included. Under xdist, workers send their figures in
``workeroutput["migsafe"]`` and only the controller prints and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_migsafe.plugin.options import get_setting
from pytest_migsafe.plugin.stash import record_keeper, run_report
from pytest_migsafe.report.baseline import (
    DEFAULT_BASELINE_PATH,
    Baseline,
    baseline_of_run,
    read_baseline,
    updated_baseline,
    write_baseline,
)
from pytest_migsafe.report.files import (
    ReportFileError,
    dumps_stable,
    report_document,
    write_json_atomic,
)
from pytest_migsafe.report.record import RunReport
from pytest_migsafe.report.regressions import Comparison, Tolerances, compare, removed_tests
from pytest_migsafe.report.render import DEFAULT_HIT_RATE_ALERT, Totals, markdown_summary, summary_lines
from pytest_migsafe.text import plural
from pytest_migsafe.values import parse_rate, parse_tolerance

WORKER_KEY = "migsafe"
# exit statuses after which the tests' figures are trustworthy enough to write a baseline
_COMPLETE_RUNS = (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED)


@dataclass(frozen=True)
class ReportSettings:
    """What the report options ask for."""

    show: bool
    baseline_path: Path
    update: bool
    fail_on_regression: bool
    json_path: Path | None
    tolerances: Tolerances


def read_settings(config: pytest.Config) -> ReportSettings:
    """The report settings: command line first, then ini."""
    here = config.invocation_params.dir
    if config.getoption("migsafe_baseline"):
        baseline = here / config.getoption("migsafe_baseline")
    elif config.getini("migsafe_baseline"):
        base = config.inipath.parent if config.inipath else config.rootpath
        baseline = base / config.getini("migsafe_baseline")
    else:
        baseline = config.rootpath / DEFAULT_BASELINE_PATH
    json_path = config.getoption("migsafe_report_json")
    tolerances = Tolerances(
        queries=get_setting(config, ini="migsafe_query_tolerance", parse=parse_tolerance, default=0),
        hit_rate=get_setting(config, ini="migsafe_hit_rate_tolerance", parse=parse_rate, default=0.05),
        hit_rate_alert=hit_rate_alert(config),
    )
    return ReportSettings(
        show=config.getoption("migsafe_report"),
        baseline_path=baseline,
        update=config.getoption("migsafe_update_baseline"),
        fail_on_regression=config.getoption("migsafe_fail_on_regression"),
        json_path=here / json_path if json_path else None,
        tolerances=tolerances,
    )


def hit_rate_alert(config: pytest.Config) -> float:
    """The ini ``migsafe_hit_rate_alert`` (declared by the cache wiring), default 0.7."""
    try:
        raw = config.getini("migsafe_hit_rate_alert")
    except ValueError:  # the cache wiring is not loaded
        return DEFAULT_HIT_RATE_ALERT
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if not raw:
        return DEFAULT_HIT_RATE_ALERT
    try:
        return parse_rate(str(raw))
    except ValueError as exc:
        raise pytest.UsageError(f"migsafe: ini option migsafe_hit_rate_alert = {raw!r}: {exc}") from None


def is_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process."""
    return hasattr(config, "workerinput")


class ReportSession:
    """The report of one session: collects outcomes, compares, prints, writes."""

    def __init__(self, config: pytest.Config, settings: ReportSettings) -> None:
        self.config = config
        self.settings = settings
        self.collected: set[str] = set()
        self.outcomes = record_keeper(config).track_outcomes()  # every test's, on the controller too
        self.errors: list[str] = []
        self.messages: list[str] = []
        self.comparison: Comparison | None = None
        self.compared = 0
        self.baseline: Baseline | None = None
        if not is_worker(config) and settings.baseline_path.exists():
            try:
                self.baseline = read_baseline(settings.baseline_path)
            except ReportFileError as exc:
                raise pytest.UsageError(
                    f"migsafe: cannot use the baseline: {exc}\n"
                    "Fix or delete the file: migsafe never overwrites a baseline it cannot read."
                ) from None

    @property
    def baseline_label(self) -> str:
        """The baseline path as the user would type it."""
        return display_path(self.settings.baseline_path, self.config.invocation_params.dir)

    # -- during the run -------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Remember every collected test, before ``-k`` / ``-m`` deselect any (for removed tests)."""
        self.collected.update(item.nodeid for item in items)

    def add_worker_output(self, payload: dict[str, Any]) -> None:
        """Fold one xdist worker's figures into the run report."""
        run_report(self.config).merge(RunReport.from_dict(payload))
        self.collected.update(payload.get("collected", []))

    # -- at the end -----------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Workers send their figures; the controller compares, writes and sets the exit status."""
        report = run_report(self.config)
        for nodeid, outcome in self.outcomes.items():
            if nodeid not in report.tests:
                report.unmeasured[nodeid] = outcome
        if is_worker(self.config):
            payload = report.to_dict()
            payload["collected"] = sorted(self.collected)
            self.config.workeroutput[WORKER_KEY] = payload  # type: ignore[attr-defined]
            return
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            report.interrupted = True
        removed: list[str] = []
        if self.baseline is not None and not report.interrupted:
            removed = removed_tests(self.baseline.tests, self.collected, narrowed_files(self.config),
                                    lambda path: (self.config.rootpath / path).exists())
        if self.baseline is not None:
            measured = baseline_of_run(report)
            self.compared = len(set(self.baseline.tests) & set(measured.tests))
            self.comparison = compare(self.baseline, measured, self.settings.tolerances, removed)
        if self.settings.update:
            self.update_baseline(report, exitstatus, removed)
        self.judge(session)
        if self.settings.json_path is not None:
            self.write_json(report)
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            self.write_step_summary(report, Path(os.environ["GITHUB_STEP_SUMMARY"]))
        if self.errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def update_baseline(self, report: RunReport, exitstatus: int, removed: list[str]) -> None:
        """Write the updated baseline, unless the run was interrupted or broken."""
        label = self.baseline_label
        if report.interrupted:
            self.messages.append(f"baseline not written: the run was interrupted ({label} is unchanged)")
            return
        if exitstatus not in _COMPLETE_RUNS:
            self.messages.append(f"baseline not written: pytest exit status {int(exitstatus)} "
                                 f"({label} is unchanged)")
            return
        new = updated_baseline(self.baseline, report, removed)
        path = self.settings.baseline_path
        try:
            unchanged = path.exists() and path.read_text(encoding="utf-8") == dumps_stable(new.to_dict())
            if not unchanged:
                write_baseline(path, new)
        except OSError as exc:
            self.errors.append(f"error: the baseline {label} could not be written: {exc.strerror or exc}")
            return
        not_passed = sum(1 for outcome in self.outcomes.values() if outcome != "passed")
        state = "unchanged" if unchanged else "written"
        text = f"baseline {state}: {label} ({plural(len(new.tests), 'test')}"
        if not_passed:
            whose = "its" if not_passed == 1 else "their"
            text += f"; {plural(not_passed, 'test')} that did not pass kept {whose} old figures"
        self.messages.append(text + ")")

    def judge(self, session: pytest.Session) -> None:
        """Apply ``--migsafe-fail-on-regression``: say why the run fails."""
        if not self.settings.fail_on_regression:
            return
        if self.baseline is None:
            self.messages.append(f"no baseline at {self.baseline_label}: nothing to compare "
                                 "(--migsafe-update-baseline writes one)")
            return
        regressions = self.comparison.regressions if self.comparison else []
        if not regressions:
            return
        if self.settings.update:
            self.messages.append(f"{plural(len(regressions), 'regression')} accepted into the baseline "
                                 "(--migsafe-update-baseline)")
            return
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.messages.append(f"FAILED: {plural(len(regressions), 'regression')} against "
                             f"{self.baseline_label} (--migsafe-fail-on-regression)")

    def write_json(self, report: RunReport) -> None:
        """Write the run's figures and the comparison to ``--migsafe-report-json``."""
        path = self.settings.json_path
        assert path is not None
        comparison = (self.comparison or Comparison()).to_dict()
        try:
            write_json_atomic(path, report_document(report, errors=self.errors, **comparison))
        except OSError as exc:
            self.errors.append(f"error: the JSON report {path} could not be written: {exc.strerror or exc}")

    def write_step_summary(self, report: RunReport, path: Path) -> None:
        """Append the regressions table and the totals to GitHub's step summary."""
        failures = [m for m in self.errors + self.messages if m.startswith(("FAILED", "error"))]
        text = markdown_summary(report, self.comparison, self.baseline_label, failures)
        if not text:
            return
        try:
            with path.open("a", encoding="utf-8") as stream:
                stream.write(text)
        except OSError as exc:
            self.errors.append(f"error: GITHUB_STEP_SUMMARY {path} could not be written: "
                               f"{exc.strerror or exc}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the summary under a ``migsafe report`` line; nothing when there is nothing to say."""
        report = run_report(self.config)
        status = []
        if self.settings.show and Totals.of(report).has_figures():
            if self.baseline is None and not self.settings.update:
                status.append(f"no baseline at {self.baseline_label} (--migsafe-update-baseline writes one)")
            elif self.comparison is not None and not self.comparison.regressions:
                status.append(f"no regression against {self.baseline_label} "
                              f"({plural(self.compared, 'test')} compared)")
        lines = summary_lines(report, self.comparison, baseline_label=self.baseline_label,
                              verbose=self.config.get_verbosity() > 0, full=self.settings.show,
                              alert=self.settings.tolerances.hit_rate_alert, status=status,
                              messages=self.errors + self.messages)
        if not lines:
            return
        terminalreporter.write_sep("-", "migsafe report")
        for line in lines:
            terminalreporter.write_line(line, red=line.startswith(("FAILED", "error")))


class XdistReport:
    """pytest-xdist hooks, registered only when xdist is loaded: merge the workers' figures."""

    def __init__(self, session: ReportSession) -> None:
        self.session = session

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Merge a finished worker's figures; a worker that sent none is an error."""
        worker = getattr(node, "gateway", None)
        name = getattr(worker, "id", "a worker")
        payload = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if payload is not None:
            self.session.add_worker_output(payload)
        elif error is None:
            self.session.errors.append(f"error: xdist worker {name} sent no migsafe figures: "
                                       "its tests are missing from the report")
        else:
            run_report(self.session.config).note(
                f"xdist worker {name} crashed: its tests' figures are missing")


def narrowed_files(config: pytest.Config) -> set[str]:
    """Files (rootdir-relative) that the command line narrowed to some tests with ``::``."""
    files = set()
    for arg in config.args:
        if "::" not in arg:
            continue
        path = (config.invocation_params.dir / arg.split("::", 1)[0]).resolve()
        try:
            files.add(path.relative_to(config.rootpath.resolve()).as_posix())
        except ValueError:
            continue
    return files


def display_path(path: Path, here: Path) -> str:
    """``path`` relative to ``here`` when inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(here.resolve()))
    except ValueError:
        return str(path)
