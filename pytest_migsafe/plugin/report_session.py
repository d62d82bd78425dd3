"""The report of one session: outcomes, baseline, regressions, JSON, summary, xdist.

Loaded by :mod:`~pytest_migsafe.plugin.report` only when a report option is given. The
logic lives in :mod:`~pytest_migsafe.report.baseline`, :mod:`~pytest_migsafe.report.regressions`,
:mod:`~pytest_migsafe.report.render` and :mod:`~pytest_migsafe.report.files`.

Rules: the baseline is read (and checked) at configure, before any test runs, and written
only at session end with ``--migsafe-update-baseline``, never after an interrupted run;
tests that did not pass keep their old figures. The JSON report and the SARIF file are
written at session end whatever happened, interrupted runs included: a SIGTERM (what CI
runners send on a timeout) interrupts the run the way Ctrl-C does, when no other handler
was installed, so that the session still finishes and writes them. Under xdist, workers
send each test's record on its teardown report as the test finishes (so that a worker that
crashes loses the figures of the test it was running, no others) and the rest (notes, the
tests collected, renames) in ``workeroutput["migsafe"]``; only the controller prints and
writes. On GitHub Actions (``GITHUB_ACTIONS=true``) the N+1 suspects and regressions are
also printed as ``::warning`` / ``::error`` workflow commands at their call sites.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from pytest_migsafe import versions
from pytest_migsafe.plugin.options import get_setting
from pytest_migsafe.plugin.stash import (
    NOT_MEASURED_IN_REPORT,
    RENAMED_KEY,
    note_renames,
    record_keeper,
    recorded_id,
    run_report,
)
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
    final_target,
    locked_directory,
    report_document,
    write_json_atomic,
)
from pytest_migsafe.report.record import RunReport, TestRecord
from pytest_migsafe.report.regressions import Comparison, Tolerances, compare, file_of, removed_tests
from pytest_migsafe.report.render import (
    DEFAULT_HEAVIEST,
    DEFAULT_HIT_RATE_ALERT,
    Totals,
    coverage_text,
    markdown_summary,
    summary_lines,
)
from pytest_migsafe.text import plural
from pytest_migsafe.values import parse_rate, parse_tolerance

WORKER_KEY = "migsafe"
# the key of a worker's serialized teardown report that carries the test's record (TestRecord.to_dict())
RECORD_FIELD = "migsafe_record"
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
    sarif_path: Path | None = None
    heaviest: int = DEFAULT_HEAVIEST


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
    sarif_path: Path | None = None
    if config.getoption("migsafe_sarif"):
        sarif_path = here / config.getoption("migsafe_sarif")
    elif config.getini("migsafe_sarif"):
        sarif_path = (config.inipath.parent if config.inipath else config.rootpath) / config.getini("migsafe_sarif")
    tolerances = Tolerances(
        queries=get_setting(config, ini="migsafe_query_tolerance", parse=parse_tolerance, default=0),
        hit_rate=get_setting(config, ini="migsafe_hit_rate_tolerance", parse=parse_rate, default=0.05),
        hit_rate_alert=hit_rate_alert(config),
    )
    if not is_worker(config):  # (a worker writes nothing: its controller does)
        outputs = {"--migsafe-report-json": here / json_path if json_path else None, "--migsafe-sarif": sarif_path,
                   "--migsafe-baseline": baseline if config.getoption("migsafe_update_baseline") else None}
        named = [(option, path.resolve()) for option, path in outputs.items() if path is not None]
        for index, (option, path) in enumerate(named):
            for other, other_path in named[index + 1:]:
                if path == other_path:
                    raise pytest.UsageError(f"{option} and {other} name the same file ({path}); expected "
                                            "a file of its own for each (one would overwrite the other)")
        for option, path, wanted in (("--migsafe-report-json", here / json_path if json_path else None, True),
                                     ("--migsafe-sarif", sarif_path, True),
                                     ("--migsafe-baseline", baseline, config.getoption("migsafe_update_baseline"))):
            if wanted and path is not None:
                check_writable(path, option)
    return ReportSettings(
        show=config.getoption("migsafe_report"),
        baseline_path=baseline,
        update=config.getoption("migsafe_update_baseline"),
        fail_on_regression=config.getoption("migsafe_fail_on_regression"),
        json_path=here / json_path if json_path else None,
        tolerances=tolerances,
        sarif_path=sarif_path,
        heaviest=get_setting(config, option="migsafe_heaviest", ini="migsafe_heaviest", parse=parse_tolerance,
                             default=DEFAULT_HEAVIEST),
    )


def check_writable(path: Path, option: str) -> None:
    """Raise ``pytest.UsageError`` naming ``option`` when ``path`` cannot be written at the
    end of the run: a directory, under a file, or where no file can be created (a read-only
    or special file system, no permission); checked before any test runs, so that a run is
    never lost to its output path. The check creates an unnamed temporary file in the
    nearest existing directory on the way (removed at once), nothing else."""
    if path.is_dir():
        raise pytest.UsageError(f"{option}={path}: is a directory; expected the path of a file to write")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise pytest.UsageError(f"{option}={path}: {ancestor} is not a directory; expected the path of a "
                                "file to write")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise pytest.UsageError(f"{option}={path}: no file can be written in {ancestor} "
                                f"({exc.strerror or exc}); expected the path of a file to write") from None


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
        self.selected: set[str] = set()  # the collected tests -k / -m kept (to be run)
        self.outcomes = record_keeper(config).track_outcomes()  # every test's, on the controller too
        self.errors: list[str] = []
        self.messages: list[str] = []
        self.comparison: Comparison | None = None
        self.compared = 0
        self.not_compared: dict[str, str] = {}
        self.baseline: Baseline | None = None
        self.worker_of: dict[str, str] = {}  # node id -> the xdist worker that ran it (controller)
        self.lost_workers: set[str] = set()  # xdist workers that crashed or sent no end payload
        self.finished: set[str] = set()  # node ids whose teardown report came from a worker (controller)
        self.sent: set[str] = set()  # records sent on teardown reports, left out of the end payload (worker)
        self.previous_sigterm: Any = None
        self.exited = False  # the run ended on a Ctrl-C or pytest.exit() (see pytest_keyboard_interrupt)
        if not is_worker(config) and (settings.json_path is not None or settings.sarif_path is not None):
            self.previous_sigterm = interrupt_on_sigterm()
        if not is_worker(config) and settings.baseline_path.exists():
            try:
                self.baseline = read_baseline(settings.baseline_path)
            except ReportFileError as exc:
                raise pytest.UsageError(
                    f"migsafe: cannot use the baseline: {exc}\n"
                    "Fix or delete the file, or name another with --migsafe-baseline=PATH (ini "
                    "migsafe_baseline): migsafe never overwrites a baseline it cannot read."
                ) from None

    def reads_few_shapes(self) -> bool:
        """True when the terminal summary alone reads the records' statement shapes (those of
        its heaviest tests; every test's with ``-v``), at the session's end: no baseline to
        compare or write, no JSON, SARIF or step summary to write (a file written at the end
        gets every shape worked out as the tests end, as it always was: an interrupt at the end
        loses no file), not a pytest-xdist worker (whose records travel whole, test by test)."""
        settings = self.settings
        return (self.baseline is None and not settings.update and settings.json_path is None
                and settings.sarif_path is None and not os.environ.get("GITHUB_STEP_SUMMARY")
                and not is_worker(self.config))

    def reads_pool_totals_only(self) -> bool:
        """True when of the records' pool figures the terminal summary alone reads the run's
        totals (connections created and leaked, tests that used a pool): as
        :meth:`reads_few_shapes`, without ``-v`` (whose per-test table shows each test's peak)."""
        return self.reads_few_shapes() and self.config.get_verbosity() <= 0

    @property
    def baseline_label(self) -> str:
        """The baseline path as the user would type it."""
        return display_path(self.settings.baseline_path, self.config.invocation_params.dir)

    # -- during the run -------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Remember every collected test, before ``-k`` / ``-m`` deselect any (for removed tests)."""
        self.collected.update(item.nodeid for item in items)  # (before pytest-xdist renames any)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Remember the tests selected to run (after ``-k`` / ``-m``): a selected test that never
        reported was not run (``-x``, ``--maxfail``, an interrupt), not deselected."""
        self.selected.update(recorded_id(self.config, item.nodeid) for item in session.items)

    def add_worker_output(self, payload: dict[str, Any]) -> None:
        """Fold one xdist worker's end payload into the run report."""
        run_report(self.config).merge(RunReport.from_dict(payload))
        self.collected.update(payload.get("collected", []))
        self.selected.update(payload.get("selected", []))
        note_renames(self.config, payload.get("renamed", {}))

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """pytest calls it for a Ctrl-C and for ``pytest.exit()``: whatever exit code the latter
        sets (``pytest.exit(reason, returncode=7)``), the run did not finish."""
        self.exited = True

    # -- at the end -----------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Workers send their figures; the controller compares, writes and sets the exit status."""
        report = run_report(self.config)
        record_keeper(self.config).hand_over_pending()  # (tests whose teardown never ended)
        renamed = self.config.stash.get(RENAMED_KEY, None)
        if renamed:  # the outcomes the controller read from the workers' reports, under the ids recorded
            self.outcomes = {renamed.get(nodeid, nodeid): outcome for nodeid, outcome in self.outcomes.items()}
        for nodeid, outcome in self.outcomes.items():
            if nodeid not in report.tests:
                report.unmeasured[nodeid] = outcome
        if self.lost_workers:
            self.mark_lost(report, renamed or {})
        if is_worker(self.config):
            unsent = {nodeid: record for nodeid, record in report.tests.items() if nodeid not in self.sent}
            payload = replace(report, tests=unsent).to_dict()  # (the controller has the records sent)
            payload["collected"] = sorted(self.collected)
            payload["selected"] = sorted(self.selected)
            payload["renamed"] = self.config.stash.get(RENAMED_KEY, None) or {}
            self.config.workeroutput[WORKER_KEY] = payload  # type: ignore[attr-defined]
            return
        unmeasured = versions.describe_not_measured()  # (the workers' too, taken as each ended)
        for line in unmeasured:
            report.note(f"not measured: {line}")
        if unmeasured and self.settings.show:  # the report's notes say it: no section of its own
            self.config.stash[NOT_MEASURED_IN_REPORT] = True
        if (exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR) or self.exited
                or _ending_on_an_interrupt()):
            report.interrupted = True  # (an internal error ends the run as an interrupt does)
        removed: list[str] = []
        if self.baseline is not None and not report.interrupted:
            narrowed = narrowed_files(self.config, self.collected)
            if self.config.getoption("lf", False):  # --lf: pytest's cache plugin drops the passed tests
                # of a file it runs again as it collects the file, unseen (no deselection): every
                # file collected is collected in part
                narrowed |= {file_of(nodeid) for nodeid in self.collected}
            removed = removed_tests(self.baseline.tests, self.collected, narrowed,
                                    lambda path: (self.config.rootpath / path).exists())
        if self.baseline is not None:
            measured = baseline_of_run(report)
            self.compared = len(set(self.baseline.tests) & set(measured.tests))
            self.not_compared = not_compared(self.baseline, measured, report, self.collected, removed,
                                             self.selected)
            self.comparison = compare(self.baseline, measured, self.settings.tolerances, removed)
        if self.settings.update:
            self.update_baseline(report, exitstatus, removed)
        self.judge(session)
        if self.settings.json_path is not None:
            self.write_json(report)
        if self.settings.sarif_path is not None:
            self.write_sarif(report)
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            self.write_step_summary(report, Path(os.environ["GITHUB_STEP_SUMMARY"]))
        if self.errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def mark_lost(self, report: RunReport, renamed: dict[str, str]) -> None:
        """Tests that an xdist worker which crashed (or sent no end payload) did not finish
        (no teardown report: its record, if any, never came) are not "ran no SQL": they go
        to ``report.lost`` with the worker's name and their outcome becomes ``"<outcome>;
        figures lost"``, so that the baseline keeps their old figures and they are not
        compared; a note per worker gives their number."""
        lost: dict[str, int] = {}
        for nodeid, worker in self.worker_of.items():
            key = renamed.get(nodeid, nodeid)
            if (worker in self.lost_workers and nodeid not in self.finished and key in report.unmeasured
                    and key not in report.lost):
                report.unmeasured[key] = f"{report.unmeasured[key]}; figures lost"
                report.lost[key] = worker
                lost[worker] = lost.get(worker, 0) + 1
        for worker, count in sorted(lost.items()):
            report.note(f"{plural(count, 'test')} run by xdist worker {worker} lost {'its' if count == 1 else 'their'} "
                        "figures: not compared, and the baseline keeps the old ones")

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
        path = self.settings.baseline_path
        try:
            # another run may have written the baseline since this one read it (two runs
            # updating it at once): take turns, and update what the file holds now
            with locked_directory(final_target(path).parent):
                new = updated_baseline(self._baseline_now(path), report, removed)
                unchanged = path.exists() and path.read_bytes() == dumps_stable(new.to_dict()).encode(
                    "utf-8", "backslashreplace")  # (as written: bytes, whatever the file holds)
                if not unchanged:
                    write_baseline(path, new)
        except OSError as exc:
            self.errors.append(f"error: the baseline {label} could not be written: {exc.strerror or exc}")
            return
        old = self.baseline.tests if self.baseline is not None else {}
        not_passed = [nodeid for nodeid, outcome in self.outcomes.items() if outcome != "passed"]
        kept = sum(1 for nodeid in not_passed if nodeid in old)
        absent = len(not_passed) - kept
        state = "unchanged" if unchanged else "written"
        text = f"baseline {state}: {label} ({plural(len(new.tests), 'test')}"
        if kept:
            whose = "its" if kept == 1 else "their"
            text += f"; {plural(kept, 'test')} that did not pass kept {whose} old figures"
        if absent:
            verb = "has" if absent == 1 else "have"
            text += f"; {plural(absent, 'test')} that did not pass {verb} no figures in it yet"
        self.messages.append(text + ")")

    def _baseline_now(self, path: Path) -> Baseline | None:
        """The baseline as the file holds it now (the one read at the start when it cannot be read)."""
        if not path.exists():
            return self.baseline
        try:
            return read_baseline(path)
        except ReportFileError:
            return self.baseline

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

    def write_sarif(self, report: RunReport) -> None:
        """Write the SARIF 2.1.0 findings to ``--migsafe-sarif`` (atomically)."""
        from pytest_migsafe.report.sarif import sarif_document

        path = self.settings.sarif_path
        assert path is not None
        try:
            write_json_atomic(path, sarif_document(report, self.comparison))
        except OSError as exc:
            self.errors.append(f"error: the SARIF file {path} could not be written: {exc.strerror or exc}")

    def write_step_summary(self, report: RunReport, path: Path) -> None:
        """Append the heaviest-tests chart, the regressions table and the totals to GitHub's
        step summary."""
        failures = [m for m in self.errors + self.messages if m.startswith(("FAILED", "error"))]
        baseline_queries = ({nodeid: entry.queries for nodeid, entry in self.baseline.tests.items()}
                            if self.baseline is not None else None)
        text = markdown_summary(report, self.comparison, self.baseline_label, failures,
                                baseline_queries=baseline_queries, heaviest=self.settings.heaviest)
        if not text:
            return
        try:
            with path.open("a", encoding="utf-8", errors="backslashreplace") as stream:  # (lone surrogates)
                stream.write(text)
        except OSError as exc:
            self.errors.append(f"error: GITHUB_STEP_SUMMARY {path} could not be written: "
                               f"{exc.strerror or exc}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the summary under a ``migsafe report`` line; nothing when there is nothing to say."""
        report = run_report(self.config)
        status = []
        coverage = coverage_text(self.compared, self.not_compared) if self.baseline is not None else ""
        if self.settings.show:
            # the gate's verdict whenever it compared (a CI log shows that it ran, also for a
            # selection that ran no SQL); the missing baseline only where there are figures
            if self.comparison is not None and not self.comparison.regressions:
                status.append(f"no regression against {self.baseline_label} ({coverage})")
            elif self.baseline is None and not self.settings.update and Totals.of(report).has_figures():
                status.append(f"no baseline at {self.baseline_label} (--migsafe-update-baseline writes one)")
        lines = summary_lines(report, self.comparison, baseline_label=self.baseline_label,
                              verbose=self.config.get_verbosity() > 0,
                              verbosity=self.config.get_verbosity(), full=self.settings.show,
                              alert=self.settings.tolerances.hit_rate_alert, status=status,
                              messages=self.errors + self.messages, coverage=coverage,
                              not_compared=self.not_compared,
                              heaviest=self.settings.heaviest if self.baseline is None else 0)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            from pytest_migsafe.report.sarif import github_annotations

            for annotation in github_annotations(report, self.comparison):
                terminalreporter.write_line(annotation)
        if not lines:
            return
        terminalreporter.write_sep("-", "migsafe report")
        for line in lines:
            terminalreporter.write_line(line, red=line.startswith(("FAILED", "error")))


    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Put back the SIGTERM handler that was there before the session."""
        if self.previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.previous_sigterm)
            self.previous_sigterm = None


def interrupt_on_sigterm() -> Any:
    """Make SIGTERM interrupt the run like Ctrl-C (a ``KeyboardInterrupt`` in the main
    thread, so pytest finishes the session, interrupted, and the files are written); a
    second SIGTERM kills at once. Only in the main thread and when SIGTERM has its default
    handler or the one migsafe's servers install (which stops them, then dies of the signal:
    it is put back for the second SIGTERM); a handler the user installed is left alone. A
    process a test forks inherits the handler: there a SIGTERM ends the process by the signal,
    as the default handler does (``Process.terminate()`` gives exit code ``-SIGTERM``, no
    ``KeyboardInterrupt``). Returns the handler to put back at the end, or None when nothing
    was changed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (AttributeError, ValueError):  # pragma: no cover - no SIGTERM on this platform
        return None
    if previous is not signal.SIG_DFL:
        # (the servers' module is looked at only where it was imported: a session that started
        # no server never loads it)
        process = sys.modules.get("pytest_migsafe.servers._process")
        if process is None or not process.is_servers_sigterm_handler(previous):
            return None
    owner = os.getpid()

    def interrupt(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a child a test forked (multiprocessing's fork, os.fork) inherited
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # this handler: it dies by the signal, as by default
            os.kill(os.getpid(), signal.SIGTERM)
            return
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM: the default, or the servers' stop
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    return previous


def not_compared(baseline: Baseline, measured: Baseline, report: RunReport, collected: set[str],
                 removed: list[str], selected: set[str] | None = None) -> dict[str, str]:
    """Baseline tests that this run did not compare, with the reason: ``{node id: reason}``.

    Compared are the baseline's tests that passed (``measured``). The others: ``"failed"``,
    ``"errored"``, ``"skipped"`` from the test's outcome; ``"deselected"`` when collected
    but not selected (``-k``, ``-m``); ``"not run"`` when selected (``selected``) but never
    run (``-x``, ``--maxfail``, an interrupt); ``"not collected"`` when this run
    did not collect it; ``"figures lost with worker gw0"`` when its figures were lost with
    the xdist worker that ran it (``report.lost``); removed tests (``removed``) are listed
    elsewhere and left out.
    """
    reasons = {"failed": "failed", "error": "errored", "skipped": "skipped"}
    gone = set(removed)
    result = {}
    for nodeid in baseline.tests:
        if nodeid in measured.tests or nodeid in gone:
            continue
        if nodeid in report.lost:
            result[nodeid] = f"figures lost with worker {report.lost[nodeid]}"
            continue
        record = report.tests.get(nodeid)
        outcome = record.outcome if record is not None else report.unmeasured.get(nodeid)
        if outcome is not None:
            result[nodeid] = reasons.get(outcome, outcome)
        elif nodeid in collected:
            result[nodeid] = "not run" if selected and nodeid in selected else "deselected"
        else:
            result[nodeid] = "not collected"
    return result


def _ending_on_an_interrupt() -> bool:
    """True when the session ends on a Ctrl-C (or SIGTERM) that pytest never turned into its
    exit status: a second one that landed inside pytest's handling of the first, before it
    set ``session.exitstatus``. pytest then calls ``pytest_sessionfinish`` from its
    ``finally`` clause with the status still 0, while that KeyboardInterrupt propagates
    (``sys.exc_info()`` names it there)."""
    return isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit))


class WorkerRecords:
    """On a pytest-xdist worker: each test's record travels on its teardown report.

    pytest-xdist serializes every report with ``pytest_report_to_serializable`` as the test
    goes; by then the record keeper has put the finished record (outcome final) in the run
    report, so it is added to the teardown report's data under :data:`RECORD_FIELD`. The
    end payload leaves those records out: each is sent once."""

    def __init__(self, session: ReportSession) -> None:
        self.session = session

    @pytest.hookimpl(wrapper=True)
    def pytest_report_to_serializable(
        self, config: pytest.Config, report: Any
    ) -> Generator[None, dict[str, Any] | None, dict[str, Any] | None]:
        """Add the test's finished record to its serialized teardown report."""
        data = yield
        if data is not None and getattr(report, "when", None) == "teardown":
            record = run_report(config).tests.get(recorded_id(config, report.nodeid))
            if record is not None:  # (None: nothing measured, or not finished yet: then it goes at the end)
                data[RECORD_FIELD] = record.to_dict()
                self.session.sent.add(record.nodeid)
        return data


class XdistReport:
    """pytest-xdist hooks on the controller, registered only when it distributes: take the
    records that come on the workers' reports, merge their end payloads, and note the
    tests whose figures were lost with a worker."""

    def __init__(self, session: ReportSession) -> None:
        self.session = session

    @pytest.hookimpl(wrapper=True)
    def pytest_report_from_serializable(
        self, config: pytest.Config, data: dict[str, Any]
    ) -> Generator[None, Any, Any]:
        """Take a test's record off its worker's teardown report (so that the report object,
        which pytest keeps and other plugins may log, does not carry it) into the run report."""
        raw = data.pop(RECORD_FIELD, None) if isinstance(data, dict) else None
        report = yield
        if raw is not None:
            try:
                record = TestRecord.from_dict(raw, f"the record of {data.get('nodeid')!r} from an xdist worker")
            except ValueError as exc:
                self.session.errors.append(f"error: {exc}")
            else:
                run_report(config).add(record)
                nodeid = data.get("nodeid")
                if isinstance(nodeid, str) and nodeid != record.nodeid:  # --dist loadgroup's renamed id
                    note_renames(config, {nodeid: record.nodeid})
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Note which worker ran each test, and which tests finished (their records, if any,
        came on their teardown reports)."""
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        if gateway is not None:
            self.session.worker_of[report.nodeid] = gateway.id
            if report.when == "teardown":
                self.session.finished.add(report.nodeid)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Merge a finished worker's end payload; a worker that sent none is an error."""
        worker = getattr(node, "gateway", None)
        name = getattr(worker, "id", "a worker")
        payload = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if payload is not None:
            self.session.add_worker_output(payload)
            return
        self.session.lost_workers.add(name)
        if error is None:
            self.session.errors.append(f"error: xdist worker {name} sent no migsafe figures at its end: its "
                                       "notes and the tests it collected are missing from the report")
        else:
            run_report(self.session.config).note(f"xdist worker {name} crashed")


def narrowed_files(config: pytest.Config, collected: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Files (rootdir-relative, as node ids spell them) that the command line narrowed to some
    tests with ``::``: the argument's path as written and as resolved (a symlinked directory:
    node ids keep the path given), and the file of every collected test the argument names
    (``--pyargs pkg.mod::test_x``, whose path is a module name)."""
    files = set()
    here = config.invocation_params.dir
    roots = {config.rootpath, config.rootpath.resolve()}
    for arg in config.args:
        if "::" not in arg:
            continue
        head, tail = arg.split("::", 1)
        for path in {Path(os.path.normpath(here / head)), (here / head).resolve()}:
            for root in roots:
                try:
                    files.add(path.relative_to(root).as_posix())
                except ValueError:
                    continue
        ending = "::" + tail
        files |= {file_of(nodeid) for nodeid in collected
                  if nodeid.endswith(ending) or ending + "[" in nodeid}
    return files


def display_path(path: Path, here: Path) -> str:
    """``path`` relative to ``here`` when inside it, else absolute."""
    try:
        return str(path.resolve().relative_to(here.resolve()))
    except ValueError:
        return str(path)
