"""pytest wiring for the pool checks: options, the ``pool`` marker, fixtures, hooks.

Every SQLAlchemy engine and psycopg_pool pool used in a test's call phase is observed;
the logic lives in :mod:`pytest_migsafe.pool.observe`, :mod:`pytest_migsafe.pool.limits`,
:mod:`pytest_migsafe.pool.warm` and :mod:`pytest_migsafe.pool.sizing`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pytest

from pytest_migsafe.plugin.markers import argument_problem, refuse_marker, register_marker
from pytest_migsafe.plugin.notices import notify
from pytest_migsafe.plugin.options import get_setting, ini_type
from pytest_migsafe.plugin.report import junit_properties_wanted
from pytest_migsafe.plugin.stash import (
    add_call_phase,
    add_marker_parser,
    add_to_record,
    existing_record,
    marks_of,
    pool_totals_only,
    records_wanted,
    wake_current_call,
    watch_imports,
)
from pytest_migsafe.pool import events, metrics, targets
from pytest_migsafe.pool import limits as pool_limits
from pytest_migsafe.pool import observe as pool
from pytest_migsafe.pool.tally import PoolTally
from pytest_migsafe.text import plural
from pytest_migsafe.values import parse_bool, positive_number

if TYPE_CHECKING:
    from pytest_migsafe.pool import sizing
    from pytest_migsafe.pool import warm as pool_warm
    from pytest_migsafe.report.record import Leak, PoolFigures, TestRecord

MARKER = "pool"
MARKER_HELP = (
    "pool(max_created=None, max_checked_out=None, max_wait_ms=None, leaks=None): fail the "
    "test when its connection pools exceed a limit (connections created, the test's own "
    "connections checked out at once, longest checkout wait in ms, connections leaked)."
)


@dataclass(frozen=True)
class PoolSettings:
    """The session's pool settings, read once at configure: ``peak_rps`` in requests/s,
    ``hold_ms`` (the time a request holds a connection) in ms, ``junit`` True when the figures go into the JUnit XML (``--junitxml`` with the report or ini ``migsafe_junit_properties``)."""

    fail_on_leaks: bool = False
    peak_rps: float | None = None
    hold_ms: float | None = None
    junit: bool = False


SETTINGS_KEY = pytest.StashKey[PoolSettings]()
SIZING_KEY = pytest.StashKey["SizingSession"]()
LIMITS_KEY = pytest.StashKey["pool_limits.PoolLimits | None"]()
_UNPARSED: Any = object()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The pool options and ini keys."""
    group = parser.getgroup("migsafe")
    group.addoption("--migsafe-peak-rps", dest="migsafe_peak_rps", type=positive_number,
                    default=None, metavar="N",
                    help="peak requests per second: warn when an observed pool is smaller than "
                         "ceil(N x p95 connection hold time x 1.3) (Little's law)")
    group.addoption("--migsafe-hold-ms", "--migsafe-avg-query-ms", dest="migsafe_hold_ms", type=positive_number,
                    default=None, metavar="MS",
                    help="time a request holds a connection, for --migsafe-peak-rps (default: the run's "
                         "measured p95 hold time, checkout to checkin); --migsafe-avg-query-ms is its old name")
    parser.addini("migsafe_fail_on_leaks", default="",
                  help="fail a test that leaves a pooled connection checked out (default false: "
                       "a leak is a warning and a report line; env MIGSAFE_FAIL_ON_LEAKS)", type=ini_type(bool))


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and read the settings."""
    metrics.listen()  # the Prometheus counter counts new connections (if prometheus_client is there)
    watch_imports(config, LIBRARIES, _pool_library_imported)
    targets.install(import_missing=False)  # drivers imported before (an initial conftest); later ones by the watcher
    register_marker(config, MARKER_HELP)
    hold = config.getoption("migsafe_hold_ms", default=None)
    peak = config.getoption("migsafe_peak_rps", default=None)
    if hold is not None and peak is None:
        raise pytest.UsageError("--migsafe-hold-ms (--migsafe-avg-query-ms) needs --migsafe-peak-rps")
    pool.notice = _notice  # a pool_stats() that saw nothing warns, never failing a test
    settings = config.stash[SETTINGS_KEY] = PoolSettings(
        fail_on_leaks=get_setting(config, env="MIGSAFE_FAIL_ON_LEAKS", ini="migsafe_fail_on_leaks",
                                  parse=parse_bool, default=False),
        peak_rps=peak,
        hold_ms=hold,
        junit=junit_properties_wanted(config),
    )
    add_call_phase(config, functools.partial(PoolPhase.start, settings=settings), order=1)
    add_marker_parser(config, _parse_markers)
    if peak is not None:
        sizing_session = SizingSession(config, settings)
        config.stash[SIZING_KEY] = sizing_session
        config.pluginmanager.register(sizing_session, "migsafe-pool-sizing")
        if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
            config.pluginmanager.register(XdistSizing(sizing_session), "migsafe-pool-sizing-xdist")


LIBRARIES = ("sqlalchemy", "sqlalchemy.orm", "psycopg_pool")


def _notice(warning: Warning, filename: str, lineno: int) -> None:
    """Shown as a warning at the code that read the figures; never an error (see :func:`notify`)."""
    notify(warning, filename, lineno)


def _pool_library_imported(name: str) -> None:
    """SQLAlchemy or psycopg_pool was just imported: hook its pools, observe the running test from now."""
    targets.install(import_missing=False, just_imported=True)
    wake_current_call(name)


def _limits_of(item: pytest.Item) -> pool_limits.PoolLimits | None:
    marks = marks_of(item).get(MARKER)
    if not marks:
        return None
    checked = []
    for marker in marks:  # every one is checked (a class's or module's too); the closest wins
        try:
            checked.append(pool_limits.pool_limits(*marker.args, **marker.kwargs))
        except Exception as exc:
            message = argument_problem(exc).replace("pool_limits()", "pool()")
            refuse_marker(item, MARKER, marker, f"{message}; expected any of "
                          f"{', '.join(n + '=' for n in pool_limits.LIMIT_NAMES)} with numbers >= 0")
    return checked[0] if checked else None  # (none: every one is the project's own marker)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    """A connection a fixture checks out while it is set up is the fixture's, never a leak of
    the test (a fixture set up by ``request.getfixturevalue()`` in the test's body was)."""
    __tracebackhide__ = True  # (a wrapper of pytest's: never in the user's traceback)
    events.fixture_setup_began()
    try:
        return (yield)
    finally:
        events.fixture_setup_ended()


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Validate every ``pool`` marker at collection (a usage error names the test)."""
    for item in items:
        _parse_markers(item)


def _parse_markers(item: pytest.Item) -> None:
    item.stash[LIMITS_KEY] = _limits_of(item)


class PoolPhase:
    """Every pool used in one test's call phase: leaks and the ``pool`` marker's limits.

    The figures (a :class:`~pytest_migsafe.pool.observe.PoolObservation`) are taken when
    something reads them: a ``pool`` marker, ``migsafe_fail_on_leaks``, the report, JUnit
    XML, pool sizing; a report whose terminal summary alone reads them, for the run's totals,
    gets the counts of a :class:`~pytest_migsafe.pool.tally.PoolTally`; otherwise the test gets
    the leak check alone (its record has no pool figures)."""

    @classmethod
    def start(cls, item: pytest.Item, settings: PoolSettings) -> PoolPhase | None:
        """A phase for a test with a ``pool`` marker or with a pool library loaded, else None
        (``settings``: the session's, given by the starter :func:`pytest_configure` adds)."""
        limits = item.stash.get(LIMITS_KEY, _UNPARSED)
        if limits is _UNPARSED:  # an item added after collection
            limits = _limits_of(item)
        if limits is None and not targets.drivers_loaded():
            return None  # no pool can exist yet
        return cls(item, limits, settings)

    def __init__(self, item: pytest.Item, limits: pool_limits.PoolLimits | None, settings: PoolSettings) -> None:
        targets.install(import_missing=False)
        self.item = item
        self.limits = limits
        self.settings = settings
        # the figures only when something reads them: at the defaults, the leak check alone
        # (pool.LeakWatch: no observer, so a pool event costs what it costs unobserved); for
        # a report that shows only the run's totals, those counts with it (pool.tally)
        self.watch: pool.LeakWatch | None = None
        self.tally: PoolTally | None = None
        if limits is None and not settings.fail_on_leaks and not settings.junit and settings.peak_rps is None:
            if not records_wanted():
                self.watch = pool.LeakWatch()
                return
            if pool_totals_only():
                self.tally = PoolTally()
                self.watch = self.tally.watch
                return
        self.observation = pool.PoolObservation().start()

    def stop(self) -> None:
        """Stop observing; record the figures of a test in which a pool did anything."""
        # a full garbage collection (to tell a dropped Session from a live one) only where
        # the test asked for a leak check: it costs about 0.1 s in a large application
        if self.tally is not None:
            figures = self.tally.stop()
            if figures is not None:
                add_to_record(self.item, functools.partial(_fill_pool, figures))
            return
        if self.watch is not None:
            self.watch.stop()  # nothing is recorded: nothing reads a record at the defaults
            return
        settings = self.settings
        asked = (self.limits is not None and self.limits.leaks is not None) or settings.fail_on_leaks
        self.observation.stop(settle=asked)
        sizing_session = self.item.config.stash.get(SIZING_KEY, None) if settings.peak_rps is not None else None
        junit = settings.junit
        if (sizing_session is not None or junit) and self.observation.has_activity():
            figures = self.observation.snapshot()
            if sizing_session is not None:  # with what each pool can open (overflow, no limit)
                sizing_session.inputs.add_pool(figures, targets.pool_capacities(figures.pool_sizes))
            if junit:
                self.item.user_properties.extend(junit_properties(figures))
        if not self.observation.was_quiet:  # (a test without pool events has no pool figure)
            add_to_record(self.item, self._fill_record)

    def _fill_record(self, record: TestRecord) -> None:
        if self.observation.has_activity():
            record.pool = self.observation.snapshot().record()

    def failures(self) -> list[str]:
        """Exceeded limits; leaks fail with ``migsafe_fail_on_leaks = true`` or a ``pool(leaks=N)``
        marker, and are warnings otherwise (the default: the user did not ask)."""
        item, limits = self.item, self.limits
        if self.watch is not None:
            if self.watch.leaks:
                _warn_leaks(item, self.watch.leaked_checkouts, self.watch.leaks)
            return []
        if limits is None and not self.observation.leaked:
            return []  # the common case: no limit to check, no leak to tell (no figures worked out)
        figures = self.observation.snapshot()
        settings = self.settings
        problems = pool_limits.exceeded(figures, limits) if limits is not None else []
        if figures.leaks and (limits is None or limits.leaks is None):
            if settings.fail_on_leaks:
                problems.append(f"leaks=0 (migsafe_fail_on_leaks), "
                                f"{plural(len(figures.leaks), 'connection')} leaked")
            else:
                _warn_leaks(item, self.observation.leaked_checkouts, figures.leaks)
        if not problems:
            return []
        verbose = item.config.get_verbosity() > 0
        return [pool_limits.failure_message(problems, figures, None if verbose else 10)]


def _fill_pool(figures: PoolFigures, record: TestRecord) -> None:
    record.pool = figures


def _warn_leaks(item: pytest.Item, checkouts: Sequence[events.Checkout], leaks: list[Leak]) -> None:
    """Leaks nobody asked to fail on (``checkouts``: theirs, in the same order): one returned
    only by the garbage collector is told now; one still out is told after the test's
    teardown, if it is still out then (the test's ``teardown_method`` or a function fixture's
    teardown may close what the test body opened: that is no leak)."""
    pending = []
    for checkout, leak in zip(checkouts, leaks):
        if leak.dropped:
            _warn_leak(item, leak)
        else:
            pending.append((checkout, leak))
    if pending:
        checker = item.config.pluginmanager.get_plugin(TEARDOWN_CHECK_NAME)
        if checker is None:
            checker = LeaksAfterTeardown()
            item.config.pluginmanager.register(checker, TEARDOWN_CHECK_NAME)
        checker.add(item, pending)


TEARDOWN_CHECK_NAME = "migsafe-leaks-after-teardown"


def _after_own_teardown(item: pytest.Item, check: Callable[[], None]) -> bool:
    """Have ``check`` run when ``item``'s own teardown is over (its function-scoped fixtures'
    finalizers, ``teardown_method``), before its class's, module's or session's fixtures are
    torn down (which the last test of a scope pays for): first in the item's list of finalizers
    in pytest's ``SetupState``, which runs them last first. False when pytest keeps them
    otherwise (the check then runs at the teardown report)."""
    try:
        finalizers = item.session._setupstate.stack[item][0]
    except Exception:  # (a pytest whose SetupState differs)
        return False
    if not isinstance(finalizers, list):
        return False
    finalizers.insert(0, check)
    return True


class LeaksAfterTeardown:
    """Registered at the first leak nobody asked to fail on that was still out at the end of
    its test's call: once the test's own teardown is over (see :func:`_after_own_teardown`; at
    its teardown report otherwise; at the session's end after an interrupt), a connection still
    out is told (:class:`~pytest_migsafe.pool.observe.ConnectionLeakWarning`); one the teardown
    returned is no leak, and leaves the test's record (before its teardown report, so JUnit
    properties and xdist see the record as told)."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[pytest.Item, list[tuple[events.Checkout, Leak]]]] = {}

    def add(self, item: pytest.Item, pending: list[tuple[events.Checkout, Leak]]) -> None:
        """Check ``pending`` (leaks of ``item`` and their checkouts) after its own teardown."""
        nodeid = item.nodeid
        self.pending[nodeid] = (item, pending)
        _after_own_teardown(item, functools.partial(self.check, nodeid))

    def check(self, nodeid: str) -> None:
        """Tell the pending leaks of ``nodeid`` still out; never raises."""
        found = self.pending.pop(nodeid, None)
        if found is None:
            return
        try:
            _tell_leaks(*found)
        except Exception:  # (a record or pool in a state not foreseen: never the test's error)
            pass

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The test's teardown ended (its check had no place among the finalizers)."""
        if report.when == "teardown" and self.pending:
            self.check(report.nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        """An interrupt in a teardown left a check undone: done now, before the report is written."""
        for nodeid in list(self.pending):
            self.check(nodeid)


def _tell_leaks(item: pytest.Item, pending: list[tuple[events.Checkout, Leak]]) -> None:
    still = events.still_leaked([checkout for checkout, _ in pending])
    record = existing_record(item)
    recorded = record.pool.leaks if record is not None and record.pool is not None else []
    for checkout, leak in pending:
        index = next((n for n, kept in enumerate(recorded) if kept is leak), None)
        if checkout not in still:  # returned by the test's teardown: no leak
            if index is not None:
                del recorded[index]
            continue
        if checkout.dropped and not leak.dropped:  # collected during the teardown
            leak = replace(leak, dropped=True)
            if index is not None:
                recorded[index] = leak
        _warn_leak(item, leak)


def _warn_leak(item: pytest.Item, leak: Leak) -> None:
    """A leak nobody asked to fail on: a warning at its checkout (never an error)."""
    filename, _, line = leak.call_site.rpartition(":")
    notify(pool.ConnectionLeakWarning("migsafe: connection leaked: " + pool_limits.describe_leak(leak)),
           filename or str(item.path), int(line) if line.isdigit() else 0, item)


def junit_properties(figures: pool.ObservedFigures) -> list[tuple[str, object]]:
    """The pool figures the run report does not carry yet, as JUnit XML properties (with
    ``--junitxml``): ``migsafe_pool_created_beyond_warm`` and ``migsafe_pool_cold_start_created``
    (counts), ``migsafe_pool_peak_checked_out_own`` (a count), ``migsafe_pool_hold_ms_p50`` /
    ``_p95`` / ``_p99`` / ``_max`` (ms)."""
    return [("migsafe_pool_created_beyond_warm", figures.created_beyond_warm),
            ("migsafe_pool_cold_start_created", figures.cold_start_created),
            ("migsafe_pool_peak_checked_out_own", figures.peak_checked_out_own),
            ("migsafe_pool_hold_ms_p50", figures.hold_ms_p50),
            ("migsafe_pool_hold_ms_p95", figures.hold_ms_p95),
            ("migsafe_pool_hold_ms_p99", figures.hold_ms_p99),
            ("migsafe_pool_hold_ms_max", figures.hold_ms_max)]


class PoolStatsFixture(pool.PoolObservation):
    """Every pool since the fixture was set up; call it to watch one engine or pool."""

    def __call__(self, *targets: Any) -> pool.PoolObservation:
        """A new observation of ``targets`` only, which counts from the ``with`` block it opens
        on (``with pool_stats(engine) as stats:``), not since the fixture's set-up: the
        fixture's own figures are every pool's (``pool_stats.checkouts``)."""
        return pool.pool_stats(*targets)


@pytest.fixture
def pool_stats() -> Iterator[PoolStatsFixture]:
    """Pool figures of every engine and pool used in the test; ``pool_stats(engine)`` for one."""
    targets.install()
    observation = PoolStatsFixture()
    with observation:
        yield observation


@pytest.fixture
def assert_pool_warm() -> Callable[..., pool_warm.WarmResult]:
    """``assert_pool_warm(engine_or_pool, action, warmup=5, repeat=50, max_new=0)``: fail if not warm."""

    def check(engine_or_pool: Any, action: Callable[[], Any], warmup: int = 5, repeat: int = 50,
              max_new: int = 0) -> pool_warm.WarmResult:
        from pytest_migsafe.pool import warm as pool_warm

        try:
            return pool_warm.assert_pool_warm(engine_or_pool, action, warmup, repeat, max_new)
        except AssertionError as exc:
            pytest.fail(str(exc), pytrace=False)

    return check


WORKER_KEY = "migsafe_pool_sizing"


class SizingSession:
    """Collects the sizing inputs of the run (every xdist worker's too) for the summary:
    each measured test's pool sizes and capacities (steady size and the most each pool can
    open at once), hold times and server kinds, from its observation.

    Registered only with ``--migsafe-peak-rps``.
    """

    def __init__(self, config: pytest.Config, settings: PoolSettings) -> None:
        from pytest_migsafe.pool import sizing

        self.config = config
        self.settings = settings
        self.inputs = sizing.SizingInputs()  # this process's tests
        self.from_workers: sizing.SizingInputs | None = None
        self.silent_workers: list[str] = []

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """On an xdist worker: send this worker's inputs to the controller."""
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[WORKER_KEY] = self.inputs.to_dict()

    def worker_done(self, node: Any, error: Any) -> None:
        """On the controller: fold in one worker's inputs (a worker that sent none is reported)."""
        from pytest_migsafe.pool import sizing

        payload = getattr(node, "workeroutput", {}).get(WORKER_KEY)
        if self.from_workers is None:
            self.from_workers = sizing.SizingInputs()
        if payload is None:
            self.silent_workers.append(str(getattr(node, "gateway", node).id))
            return
        self.from_workers.merge(sizing.SizingInputs.from_dict(payload))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Warn about observed pools that cannot open the connections ``--migsafe-peak-rps``
        needs at once; note those that can only beyond the connections they keep."""
        from pytest_migsafe.pool import sizing

        if hasattr(self.config, "workerinput"):
            return
        inputs = self.from_workers or self.inputs
        hold = self.settings.hold_ms
        hold_seconds = sizing.ms_to_seconds("--migsafe-hold-ms", hold) if hold is not None else None
        assert self.settings.peak_rps is not None
        lines = sizing.summary_lines(inputs, self.settings.peak_rps, hold_seconds)
        lines += [f"ERROR worker {worker} sent no pool sizing figures; the summary is incomplete"
                  for worker in self.silent_workers]
        if not lines:
            return
        terminalreporter.write_sep("-", "migsafe pool sizing")
        for line in lines:
            terminalreporter.write_line(line)


class XdistSizing:
    """pytest-xdist's controller hook, registered only when xdist is loaded."""

    def __init__(self, sizing_session: SizingSession) -> None:
        self.sizing_session = sizing_session

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """A worker finished: take its sizing inputs."""
        self.sizing_session.worker_done(node, error)
