"""Where the plugin keeps its state: pytest stash keys and accessors.

The per-test :class:`~pytest_migsafe.report.record.TestRecord` lives on the item; the
:class:`~pytest_migsafe.report.record.RunReport` of the session lives on the config. Every
``pytest_migsafe.plugin`` module fills its own part of the test record through
:func:`add_to_record` (at once when something reads the records, else only if a record is
read), from the :class:`CallPhase` it adds with :func:`add_call_phase`: ``plugin/queries.py``
runs every part's phase around a test's call in one hook, so a test costs one hook, not one
per part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import pytest

from pytest_migsafe.plugin.markers import ALIASES, MIGSAFE_MARKERS, project_registration
from pytest_migsafe.plugin.record_keeper import KEEPER_NAME, RecordKeeper
from pytest_migsafe.report.nodeids import without_loadgroup_suffix
from pytest_migsafe.report.record import RunReport, TestRecord

RECORD_KEY = pytest.StashKey[TestRecord]()
RUN_REPORT_KEY = pytest.StashKey[RunReport]()
MARKS_KEY = pytest.StashKey["dict[str, list[pytest.Mark]]"]()
# id(item) -> len(item.own_markers) when its MARKS_KEY was filled (a plain dict read at every
# call; an id a collected item left and another took only makes that one parsed again)
_own_marks: dict[int, int] = {}
DEFERRED_KEY = pytest.StashKey["list[Callable[[TestRecord], None]]"]()
#: set when the run report's notes carry what was not measured (its terminal section then stays silent)
NOT_MEASURED_IN_REPORT = pytest.StashKey[bool]()
RENAMED_KEY = pytest.StashKey["dict[str, str]"]()


class CallPhase(Protocol):
    """One part's measurement of a test's call phase, started when the call starts."""

    def stop(self) -> None:
        """Stop measuring (the call is over, passed or not) and record the figures."""

    def failures(self) -> list[str]:
        """Messages that fail the test (a passing one); warnings are issued here too."""


PhaseStarter = Callable[[pytest.Item], "CallPhase | None"]  # see add_call_phase
# config -> its phase starters, by order: read at every test's call (a plain dict read; the
# config's stash costs a few Python calls a read), dropped when the config is cleaned up
_starters: dict[pytest.Config, list[tuple[int, PhaseStarter]]] = {}
_starter_calls: dict[pytest.Config, tuple[PhaseStarter, ...]] = {}  # the same, the starters alone


def add_call_phase(config: pytest.Config, start: PhaseStarter, order: int) -> None:
    """Have ``start(item)`` called as every test's call begins (None: nothing to measure).

    Phases start, and their failures are listed, by ``order``: queries 0, pools 1, cache 2,
    shadow experiments 3 (whatever order pytest configures the parts in).
    """
    phases = _starters.get(config)
    if phases is None:
        phases = _starters[config] = []

        def forget() -> None:
            _starters.pop(config, None)
            _starter_calls.pop(config, None)

        config.add_cleanup(forget)
    phases.append((order, start))
    phases.sort(key=lambda entry: entry[0])
    _starter_calls[config] = tuple(starter for _, starter in phases)


MarkerParser = Callable[[pytest.Item], None]  # see add_marker_parser
_parsers: dict[pytest.Config, list[MarkerParser]] = {}


def add_marker_parser(config: pytest.Config, parse: MarkerParser) -> None:
    """Have ``parse(item)`` (a part's check of its markers, which stores what it parsed on
    the item and raises ``pytest.UsageError`` naming the test and the marker) run again at a
    test's call when markers were added to the test since collection (a fixture's
    ``request.applymarker(...)``, a plugin's ``item.add_marker(...)``). The part calls it at
    collection itself."""
    parsers = _parsers.get(config)
    if parsers is None:
        parsers = _parsers[config] = []

        def forget() -> None:
            _parsers.pop(config, None)

        config.add_cleanup(forget)
    parsers.append(parse)


def _markers_added(item: pytest.Item) -> None:
    """Parse ``item``'s markers again, every part's: a bad one fails the test, naming it."""
    del item.stash[MARKS_KEY]
    error = None
    try:
        for parse in _parsers.get(item.config, ()):
            parse(item)
    except pytest.UsageError as exc:
        error = str(exc)
    if error is not None:
        pytest.fail(f"{error} (a marker added while the test ran)", pytrace=False)


class CallInProgress:
    """The phases of the test whose call is running, and the parts that had nothing to measure yet."""

    __slots__ = ("fills", "item", "phases", "waiting")

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.phases: list[CallPhase] = []
        self.waiting: list[PhaseStarter] = []
        self.fills: list[Callable[[TestRecord], None]] = []  # see add_to_record

    def wake(self) -> None:
        """Start the waiting parts that now have something to measure (a driver was just imported)."""
        waiting, self.waiting = self.waiting, []
        for start in waiting:
            phase = start(self.item)
            if phase is None:
                self.waiting.append(start)
            else:
                self.phases.append(phase)


_watchers: dict[Callable[[str], None], int] = {}  # callback -> sessions that watch with it


def watch_imports(config: pytest.Config, names: tuple[str, ...], callback: Callable[[str], None]) -> None:
    """Call ``callback(name)`` when one of ``names`` is first imported, until the last session
    that asked ends (pytester runs nest sessions in one process)."""
    from pytest_migsafe import imports

    _watchers[callback] = _watchers.get(callback, 0) + 1
    imports.watch(names, callback)

    def done() -> None:
        _watchers[callback] -= 1
        if not _watchers[callback]:
            del _watchers[callback]
            imports.unwatch(callback)

    config.add_cleanup(done)


_calls: list[CallInProgress] = []  # innermost last (a pytester run inside a test nests one)


_kept_for: list[pytest.Item] = []  # the last test whose unread figures are kept (see add_to_record)


def begin_call(item: pytest.Item) -> CallInProgress:
    """Start the phases of ``item``'s call (see :class:`CallInProgress`): every part's, by
    order, remembering the parts that returned None (nothing to measure yet); the figures
    the last test kept unread are let go (its reports are written)."""
    if _kept_for and not _calls:
        _kept_for.pop().stash[DEFERRED_KEY] = []
    if RECORD_KEY in item.stash:
        _forget_handed_record(item)
    seen = _own_marks.get(id(item))
    if seen is not None and seen != len(item.own_markers):
        _markers_added(item)
    call = CallInProgress(item)
    _calls.append(call)
    phases, waiting = call.phases, call.waiting
    for start in _starter_calls.get(item.config, ()):  # every part's, by order
        phase = start(item)
        if phase is None:
            waiting.append(start)
        else:
            phases.append(phase)
    return call


def _forget_handed_record(item: pytest.Item) -> None:
    """A test run again (pytest-rerunfailures): the record of its last run went to the run
    report at that run's teardown; this run gets a record of its own (which replaces it there,
    with this run's outcome), not the last run's, which nothing would hand over again."""
    if item.nodeid not in record_keeper(item.config).pending:
        del item.stash[RECORD_KEY]


def end_call(call: CallInProgress) -> None:
    """Stop the phases of the call, last started first."""
    try:
        for phase in reversed(call.phases):
            phase.stop()
    finally:
        if _calls and _calls[-1] is call:  # the common case: the innermost call ends
            _calls.pop()
        elif call in _calls:
            _calls.remove(call)
        if call.fills:
            fills = call.item.stash.get(DEFERRED_KEY, None)
            call.item.stash[DEFERRED_KEY] = call.fills if fills is None else [*fills, *call.fills]
            if not _calls:
                _kept_for[:] = [call.item]


def markers_added_in_call(item: pytest.Item) -> list[pytest.Mark]:
    """migsafe's markers added to ``item`` while its call ran (``request.applymarker()`` in the
    test's body): the parts read the markers when the call starts, so these check nothing.
    A marker the project registers as its own under that name (not the ``migsafe_`` form) is
    not counted."""
    seen = _own_marks.get(id(item))
    markers = item.own_markers
    if seen is None or len(markers) <= seen:
        return []
    return [mark for mark in markers[seen:] if ALIASES.get(mark.name, mark.name) in MIGSAFE_MARKERS
            and (mark.name != ALIASES.get(mark.name, mark.name) or project_registration(item.config, mark.name) is None)]


def wake_current_call(name: str = "") -> None:
    """A driver (``name``) was imported: the running test's parts that waited for one start now."""
    if _calls and _calls[-1].waiting:
        _calls[-1].wake()


def marks_of(item: pytest.Item) -> dict[str, list[pytest.Mark]]:
    """The item's markers by name, closest first: one walk up the tree, shared by every part."""
    marks = item.stash.get(MARKS_KEY, None)
    if marks is None:
        marks = {}
        for mark in item.iter_markers():  # (migsafe_<name> read as <name>)
            name = mark.name
            marks.setdefault(ALIASES.get(name, name), []).append(mark)
        item.stash[MARKS_KEY] = marks
        _own_marks[id(item)] = len(item.own_markers)
    return marks


_records_wanted = False  # for the session running now (see want_records)
_shapes_read_late = False  # ... whose records' statement shapes the terminal summary alone reads
_pool_totals_only = False  # ... whose records' pool figures are read for the run's totals alone
_WANTED = pytest.StashKey[bool]()  # the session already asked for the records


def want_records(config: pytest.Config, shapes_read_late: bool = False, pool_totals_only: bool = False) -> None:
    """Something reads the test records (the report, JUnit properties, pytest-html columns):
    the parts fill each test's record as its call ends, and the records join the run report.
    ``shapes_read_late``: this reader reads the statement shapes of few records, at the
    session's end (the terminal summary's heaviest tests), so a record's readable shapes
    are worked out when read (:func:`shapes_read_late`); ``pool_totals_only``: this reader
    reads of a record's pool figures only the connections created and leaked, for the run's
    totals (:func:`pool_totals_only`). The session's readers must all say so.

    For ``config``'s session (module flags read on every test, put back as they were when
    the session ends: pytester runs a session inside a test of another)."""
    global _records_wanted, _shapes_read_late, _pool_totals_only
    if config.stash.get(_WANTED, False):
        _shapes_read_late = _shapes_read_late and shapes_read_late
        _pool_totals_only = _pool_totals_only and pool_totals_only
        return
    config.stash[_WANTED] = True
    before = (_records_wanted, _shapes_read_late, _pool_totals_only)
    _records_wanted, _shapes_read_late, _pool_totals_only = True, shapes_read_late, pool_totals_only

    def restore() -> None:
        global _records_wanted, _shapes_read_late, _pool_totals_only
        _records_wanted, _shapes_read_late, _pool_totals_only = before

    config.add_cleanup(restore)


def records_wanted() -> bool:
    """True when the session running now reads the test records (see :func:`want_records`)."""
    return _records_wanted


def shapes_read_late() -> bool:
    """True when the session running now reads the statement shapes of few records, at its
    end: the terminal summary alone (see :func:`want_records`)."""
    return _shapes_read_late


def pool_totals_only() -> bool:
    """True when the session running now reads of its records' pool figures only the
    connections created and leaked (and which tests used a pool), for the run's totals: a
    test's pool part then counts them (:class:`~pytest_migsafe.pool.tally.PoolTally`) and
    works out no other pool figure (see :func:`want_records`)."""
    return _pool_totals_only


def add_to_record(item: pytest.Item, fill: Callable[[TestRecord], None]) -> None:
    """Have ``fill(record)`` put a part's figures into ``item``'s test record.

    Run now when the records are wanted (:func:`want_records`); otherwise (the plugin at its
    defaults, where nothing reads them) kept and run only if the record is read
    (:func:`existing_record`, :func:`record_of`) before the next test's call begins: a test
    then pays no figures it does not show, and a long suite keeps no test's measurements.
    At the defaults the query part measures no figures at all (the N+1 rule's evidence
    alone): code that reads records calls :func:`want_records` at configure time.
    """
    if _records_wanted:
        fill(record_of(item))
    elif _calls and _calls[-1].item is item:  # a phase stopping: kept with its call until the call ends
        _calls[-1].fills.append(fill)
    else:
        item.stash[DEFERRED_KEY] = [*item.stash.get(DEFERRED_KEY, []), fill]


def _fill_deferred(item: pytest.Item, record: TestRecord) -> TestRecord:
    fills = item.stash.get(DEFERRED_KEY, None)
    if fills:
        item.stash[DEFERRED_KEY] = []
        for fill in fills:
            fill(record)
    return record


def record_of(item: pytest.Item) -> TestRecord:
    """The test record of ``item``, created on first use (pending until the test's teardown
    report: see :mod:`~pytest_migsafe.plugin.record_keeper`)."""
    record = item.stash.get(RECORD_KEY, None)
    if record is None:
        record = item.stash[RECORD_KEY] = TestRecord(nodeid=recorded_id(item.config, item.nodeid))
        record_keeper(item.config).pending[item.nodeid] = record
    if _records_wanted:
        return record  # (while the records are wanted, add_to_record defers no fill)
    return _fill_deferred(item, record)


def existing_record(item: pytest.Item) -> TestRecord | None:
    """The test record of ``item`` if a part of the plugin measured something, else None."""
    record = item.stash.get(RECORD_KEY, None)
    if record is None:
        if not item.stash.get(DEFERRED_KEY, None):
            return None
        record = item.stash[RECORD_KEY] = TestRecord(nodeid=recorded_id(item.config, item.nodeid))
    return _fill_deferred(item, record)


def run_report(config: pytest.Config) -> RunReport:
    """The session's run report, created on first use."""
    report = config.stash.get(RUN_REPORT_KEY, None)
    if report is None:
        report = config.stash[RUN_REPORT_KEY] = RunReport()
    return report


def record_keeper(config: pytest.Config) -> RecordKeeper:
    """The session's :class:`~pytest_migsafe.plugin.record_keeper.RecordKeeper`, registered
    with pytest on first use."""
    keeper = config.pluginmanager.get_plugin(KEEPER_NAME)
    if keeper is None:
        keeper = RecordKeeper(run_report(config), _renamed(config))
        config.pluginmanager.register(keeper, KEEPER_NAME)
    return keeper


def _renamed(config: pytest.Config) -> dict[str, str]:
    return config.stash.setdefault(RENAMED_KEY, {})


def note_loadgroup_renames(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker, after its collection hook: remember each test it renamed
    for ``--dist loadgroup`` (pytest < 9: ``test_x@group``), so that the test is recorded
    under the id it has in a serial run (:func:`recorded_id`)."""
    if not getattr(config.option, "loadgroup", False):
        return  # not a worker of --dist loadgroup (pytest-xdist sets this on its workers): nothing renamed
    renamed = _renamed(config)
    for item in items:
        marks = list(item.iter_markers("xdist_group"))
        if not marks:
            continue
        groups = [str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")) for mark in marks]
        plain = without_loadgroup_suffix(item.nodeid, groups)
        if plain != item.nodeid:
            renamed[item.nodeid] = plain


def note_renames(config: pytest.Config, renamed: dict[str, str]) -> None:
    """Add a worker's renames (``{id as run: id as recorded}``) to the controller's."""
    if renamed:
        _renamed(config).update(renamed)


def recorded_id(config: pytest.Config, nodeid: str) -> str:
    """The id the test ``nodeid`` is recorded under: as in a serial run (see
    :func:`note_loadgroup_renames`)."""
    renamed = config.stash.get(RENAMED_KEY, None)
    return renamed.get(nodeid, nodeid) if renamed else nodeid
