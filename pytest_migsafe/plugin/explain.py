"""pytest wiring of the index check: ``@pytest.mark.no_seq_scan``, ``--migsafe-explain``.

A test with the marker (or every test, with ``--migsafe-explain=warn|fail`` / ini
``migsafe_explain`` / ``$MIGSAFE_EXPLAIN``) has the SELECTs of its call phase collected;
once the call is over and every part has stopped measuring, each distinct shape is
planned with EXPLAIN (once per session) and a sequential scan an index would avoid
fails the test (the marker, ``fail``) or is a :class:`~pytest_migsafe.queries.explain.SeqScanWarning`
(``warn``, never failing a test). The EXPLAIN statements are sent through libpq directly,
after every counter stopped: they never count toward ``max_queries`` or any other figure.
The logic lives in :mod:`pytest_migsafe.queries.explain`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pytest_migsafe.plugin.markers import closest_checked, register_marker
from pytest_migsafe.plugin.notices import notify
from pytest_migsafe.plugin.options import get_setting
from pytest_migsafe.plugin.stash import add_call_phase, add_marker_parser, marks_of
from pytest_migsafe.queries import dispatch, drivers
from pytest_migsafe.values import argument_type

if TYPE_CHECKING:
    from pytest_migsafe.queries.explain import Explainer, ExplainOptions, SelectCollector

# pytest_migsafe.queries.explain is imported where it is needed (a marker, the mode on): a
# session that never checks plans does not pay its import at start-up

MARKER = "no_seq_scan"
MARKER_HELP = (
    "no_seq_scan(*, tables=None, min_rows=0, using=None, dsn=None): fail the test when a "
    "SELECT it ran reads a whole PostgreSQL table that an index on its filter or join "
    "columns would let it skip (EXPLAIN after the call; the CREATE INDEX is in the message). "
    "tables: names to check; min_rows: skip smaller tables; using: a database name; "
    "dsn: where to EXPLAIN when the driver's connection cannot be read."
)
_MODE = pytest.StashKey[str]()
_EXPLAINER = pytest.StashKey["Explainer"]()
_OPTIONS = pytest.StashKey["ExplainOptions | None"]()
_PHASE_ADDED = pytest.StashKey[bool]()  # added for the marked tests of a session whose mode is off


def parse_mode(text: str) -> str:
    """``off``, ``warn`` or ``fail`` (:func:`pytest_migsafe.queries.explain.parse_mode`)."""
    from pytest_migsafe.queries.explain import parse_mode as parse

    return parse(text)


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--migsafe-explain`` and the ini key ``migsafe_explain``."""
    group = parser.getgroup("migsafe")
    group.addoption("--migsafe-explain", dest="migsafe_explain", metavar="off|warn|fail",
                    type=argument_type(parse_mode), default=None,
                    help="EXPLAIN every test's SELECTs (PostgreSQL) after its call and warn about "
                         "(warn) or fail on (fail) a sequential scan an index would avoid; default off "
                         "(also $MIGSAFE_EXPLAIN, ini migsafe_explain). @pytest.mark.no_seq_scan fails "
                         "one test whatever this says.")
    parser.addini("migsafe_explain", "off, warn or fail: the index check for every test (default off).",
                  default="")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, read the mode, add the call phase (after every other part's)."""
    register_marker(config, MARKER_HELP)
    config.stash[_MODE] = mode = get_setting(config, option="migsafe_explain", env="MIGSAFE_EXPLAIN",
                                             ini="migsafe_explain", parse=parse_mode, default="off")
    if mode != "off":
        add_call_phase(config, ExplainPhase.start, order=4)
    add_marker_parser(config, _parse_marker)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check every ``no_seq_scan`` marker's arguments before any test runs; with the mode
    off, the call phase is added only when a test has the marker (the others pay nothing)."""
    for item in items:
        _parse_marker(item)


def _parse_marker(item: pytest.Item) -> None:
    marks = marks_of(item).get(MARKER)
    if not marks:
        return
    from pytest_migsafe.queries.explain import no_seq_scan_signature

    item.stash[_OPTIONS] = closest_checked(item, MARKER, marks, no_seq_scan_signature, MARKER_HELP.split(":")[0])
    config = item.config
    if config.stash[_MODE] == "off" and not config.stash.get(_PHASE_ADDED, False):
        config.stash[_PHASE_ADDED] = True
        add_call_phase(config, ExplainPhase.start, order=4)


def explainer_of(config: pytest.Config) -> Explainer:
    """The session's :class:`~pytest_migsafe.queries.explain.Explainer` (its plan cache), made on first use."""
    explainer = config.stash.get(_EXPLAINER, None)
    if explainer is None:
        from pytest_migsafe.queries.explain import Explainer

        explainer = config.stash[_EXPLAINER] = Explainer(capture_params=dispatch.settings.capture_params)
    return explainer


class ExplainPhase:
    """The SELECTs of one test's call phase, planned after the call (see the module doc)."""

    @classmethod
    def start(cls, item: pytest.Item) -> ExplainPhase | None:
        """A phase for a test with the marker, or any test when the mode is warn or fail
        (None: nothing to check, or no database driver imported yet)."""
        options = item.stash.get(_OPTIONS, None)
        mode = "fail" if options is not None else item.config.stash.get(_MODE, "off")
        if mode == "off" or not drivers.drivers_loaded():
            return None
        if options is None:
            from pytest_migsafe.queries.explain import ExplainOptions

            options = ExplainOptions()
        return cls(item, options, mode)

    def __init__(self, item: pytest.Item, options: ExplainOptions, mode: str) -> None:
        from pytest_migsafe.queries.explain import SelectCollector

        drivers.install(import_missing=False)
        self.item = item
        self.options = options
        self.mode = mode
        self.collector: SelectCollector = SelectCollector(using=options.using)
        dispatch.start(self.collector)

    def stop(self) -> None:
        """Stop collecting (the plans are read in :meth:`failures`, once every part stopped)."""
        dispatch.stop(self.collector)

    def failures(self) -> list[str]:
        """Plan the new shapes; the message in fail mode, a warning in warn mode; notes as warnings."""
        if not self.collector.statements:
            return []
        from pytest_migsafe.queries.explain import ExplainSkippedWarning, SeqScanWarning, seq_scan_message

        result = explainer_of(self.item.config).check(self.collector, self.options,
                                                      fallback=self._server_conninfo)
        filename, lineno = str(self.item.path), (self.item.location[1] or 0) + 1
        for note in result.notes:
            notify(ExplainSkippedWarning(f"migsafe index check: {note}"), filename, lineno, self.item)
        if not result.findings:
            return []
        verbose = self.item.config.get_verbosity() > 0
        if self.mode == "fail":
            return [seq_scan_message(MARKER, result.findings, verbose=verbose)]
        site = next(iter(result.findings[0].call_sites), "")
        path, _, line = site.rpartition(":")
        notify(SeqScanWarning(seq_scan_message("migsafe explain", result.findings, verbose=verbose)),
               path or filename, int(line) if line.isdigit() else lineno, self.item)
        return []

    def _server_conninfo(self, target: str) -> str | None:
        """The conninfo of ``migsafe_postgres`` for a target on that server (other database names too)."""
        funcargs: dict[str, Any] = getattr(self.item, "funcargs", {})
        server = funcargs.get("migsafe_postgres")
        if server is None:
            return None
        address, _, dbname = target.removeprefix("postgresql://").rpartition("/")
        host, _, port = address.rpartition(":")
        if host != server.host or port != str(server.port):
            return None
        from psycopg.conninfo import make_conninfo

        return make_conninfo(server.dsn, dbname=dbname)
