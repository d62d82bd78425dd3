"""Render a run report: the terminal summary, the Markdown step summary, JUnit properties.

Plain functions from records to lines of text; the pytest wiring prints them under
``terminalreporter.write_sep("-", "migsafe report")``. Order: regressions, improvements,
removed tests, N+1 suspects, shadow experiments, totals, notes, the tests whose figures were
lost with their xdist worker, the status lines, then the per-test table with ``-v``, and
the messages last. Every section is left out when it is empty, and :func:`summary_lines`
returns no line at all when there is nothing to say.
Sections longer than :data:`ROWS_WITHOUT_VERBOSE` rows are cut unless verbose.

Units as shown: hit rates are percentages with one decimal (stored as fractions 0..1),
durations milliseconds. The JSON file and the baseline are written by
:mod:`pytest_migsafe.report.files` and :mod:`pytest_migsafe.report.baseline`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_migsafe.report import DEFAULT_HEAVIEST
from pytest_migsafe.report.record import NO_CACHE_READS, NPlusOne, RunReport, TestRecord, cache_rating
from pytest_migsafe.report.regressions import Change, Comparison
from pytest_migsafe.text import display_width, plural, shorten

ROWS_WITHOUT_VERBOSE = 10
SHAPE_WIDTH = 90
TABLE_SHAPE_WIDTH = 60
SHAPE_DELTAS_WITHOUT_VERBOSE = 3
DEFAULT_HIT_RATE_ALERT = 0.7


@dataclass
class Totals:
    """Figures summed over every test of the run that measured something.

    ``tests_measured``: tests with any figure; ``tests_run``: tests with a record or an
    outcome in ``unmeasured`` (every test that ran, when the report tracked outcomes);
    ``queries``: statements counted;
    ``n_plus_one``: N+1 suspects not allowed; ``cache_tests`` / ``cache_hits`` /
    ``cache_misses``: tests with cache figures and their keyspace hits and misses
    (``INFO stats`` deltas on real Redis); ``pool_tests`` / ``connections_created``:
    tests with pool figures and the DBAPI connections their pools opened; ``leaks``:
    connections leaked (each test's ``pool.leaks``);
    ``shadows_*``: shadow experiments by result; ``lost``: ``{xdist worker: tests}`` whose
    figures were lost with that worker (``RunReport.lost``), counted in ``tests_run``.
    """

    tests_measured: int = 0
    tests_run: int = 0
    queries: int = 0
    n_plus_one: int = 0
    cache_tests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_rated: int = 0
    cache_not_rated: dict[str, int] = field(default_factory=dict)
    cache_unrated_hits: int = 0
    cache_unrated_misses: int = 0
    pool_tests: int = 0
    connections_created: int = 0
    leaks: int = 0
    shadows_matched: int = 0
    shadows_mismatched: int = 0
    shadows_ignored: int = 0
    lost: dict[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float | None:
        """Hits over reads across the run, a fraction 0..1, or None without cache reads."""
        reads = self.cache_hits + self.cache_misses
        return self.cache_hits / reads if reads else None

    @property
    def shadows(self) -> int:
        """Shadow experiments run (matched + mismatched + ignored)."""
        return self.shadows_matched + self.shadows_mismatched + self.shadows_ignored

    def has_figures(self) -> bool:
        """True when the run measured anything worth a line (a query, an N+1 suspect, a
        cache read, a connection created, or a shadow experiment)."""
        return bool(self.queries or self.n_plus_one or self.cache_hits or self.cache_misses
                    or self.cache_unrated_hits or self.cache_unrated_misses
                    or self.connections_created or self.leaks or self.shadows)

    @classmethod
    def of(cls, report: RunReport) -> Totals:
        """The totals of ``report`` (tests without any figure are skipped)."""
        totals = cls(tests_run=len(report.tests) + len(report.unmeasured))
        for nodeid, worker in report.lost.items():
            if nodeid not in report.tests:  # (never, in a report that from_dict accepts)
                totals.lost[worker] = totals.lost.get(worker, 0) + 1
        for record in report.tests.values():
            if not has_figures(record):
                continue
            totals.tests_measured += 1
            if record.queries is not None:
                totals.queries += record.queries.count
                totals.n_plus_one += len(suspects_of(record))
            if record.cache is not None:
                totals.cache_tests += 1
                reason = cache_rating(record)
                if reason is None:
                    totals.cache_rated += 1
                    totals.cache_hits += record.cache.hits
                    totals.cache_misses += record.cache.misses
                elif reason != NO_CACHE_READS:  # a test without reads has nothing to rate
                    totals.cache_not_rated[reason] = totals.cache_not_rated.get(reason, 0) + 1
                    totals.cache_unrated_hits += record.cache.hits
                    totals.cache_unrated_misses += record.cache.misses
            if record.pool is not None:
                totals.pool_tests += 1
                totals.connections_created += record.pool.created
                totals.leaks += len(record.pool.leaks)
            for shadow in record.shadows:
                if shadow.result == "matched":
                    totals.shadows_matched += 1
                elif shadow.result == "mismatched":
                    totals.shadows_mismatched += 1
                else:
                    totals.shadows_ignored += 1
        return totals


def has_figures(record: TestRecord) -> bool:
    """True when migsafe measured something in this test (query, cache or pool figures, or a
    shadow experiment), even if every count is 0."""
    return (record.queries is not None or record.cache is not None or record.pool is not None
            or bool(record.shadows))


def is_notable(record: TestRecord) -> bool:
    """True when the test ran queries or has another figure: it gets a row in the table."""
    if record.queries is not None and record.queries.count:
        return True
    if record.cache is not None and (record.cache.hits or record.cache.misses):
        return True
    if record.pool is not None and (record.pool.created or record.pool.checkouts or record.pool.leaks):
        return True
    return bool(record.shadows)


def suspects_of(record: TestRecord) -> list[NPlusOne]:
    """The N+1 suspects of one test that no ``allow_n_plus_one`` rule covers ([] without
    query figures)."""
    if record.queries is None:
        return []
    return [s for s in record.queries.n_plus_one if not s.allowed]


_SELECT_LIST = re.compile(r"^(SELECT\s+(?:DISTINCT\s+)?)(.*?)(\s+FROM\s.*)$", re.IGNORECASE | re.DOTALL)


def elide_shape(shape: str, width: int = SHAPE_WIDTH) -> str:
    """A shape on one line in at most ``width`` characters, keeping what tells shapes apart.

    Shapes of one test mostly differ in their tables and predicates, not in their first
    60 characters (the select list), so a long ``SELECT`` loses the middle of its select
    list first (``SELECT users.id, ... FROM users WHERE users.id = ?``); what is still too
    long is cut at the end with ``...``. Other statements are cut at the end.
    """
    text = " ".join(shape.split())
    if len(text) <= width:
        return text
    match = _SELECT_LIST.match(text)
    if match is not None:
        head, items, tail = match.groups()
        room = width - len(head) - len(tail) - len(" ...")
        first = items.split(",")[0]
        if room >= len(first) + 1 and "," in items:
            text = f"{head}{first}, ...{tail}"
        else:
            text = f"{head}...{tail}"
        if len(text) <= width:
            return text
    return shorten(text, width)


def percent(rate: float | None) -> str:
    """A rate (a fraction 0..1) as a percentage with one decimal, ``0.8`` -> ``80.0%``
    (``-`` for None)."""
    return "-" if rate is None else f"{rate * 100:.1f}%"


def format_value(figure: str, value: Any, width: int = SHAPE_WIDTH) -> str:
    """One before/after value of a change as text: ``-`` for None, a hit rate in percent,
    an N+1 shape in ``width`` characters (:func:`elide_shape`), anything else through ``str``."""
    if value is None:
        return "-"
    if figure == "cache_hit_rate":
        return percent(value)
    if figure == "n_plus_one":
        return elide_shape(str(value), width)
    return str(value)


def shape_delta_lines(change: Change, verbose: bool, width: int = SHAPE_WIDTH) -> list[str]:
    """What moved inside a ``queries`` change, one line per shape (3 unless ``verbose``):
    ``+4 SELECT ... FROM users WHERE users.id = ? at app/api/items.py:45``; [] when the
    change names no shape (a baseline without shapes)."""
    deltas = change.shapes if verbose else change.shapes[:SHAPE_DELTAS_WITHOUT_VERBOSE]
    lines = []
    for delta in deltas:
        where = f" at {delta['call_site']}" if delta.get("call_site") else ""
        lines.append(f"{delta['delta']:+d} {elide_shape(delta['shape'], width)}{where}")
    hidden = len(change.shapes) - len(deltas)
    if hidden:
        lines.append(f"... and {plural(hidden, 'more shape')} (-v shows all)")
    return lines


def change_rows(changes: Sequence[Change]) -> list[list[str]]:
    """Rows ``[test, figure, before, after]`` of a change table, all strings; a change's note
    follows its ``after`` value in parentheses (not for N+1 shapes)."""
    rows = []
    for change in changes:
        after = format_value(change.figure, change.after)
        if change.note and change.figure != "n_plus_one":
            after += f" ({change.note})"
        rows.append([change.nodeid, change.label, format_value(change.figure, change.before), after])
    return rows


def aligned(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows (lists of strings, all of the same length) as lines with every column but the last
    padded to a common width on screen (:func:`~pytest_migsafe.text.display_width`), two spaces
    apart, ``indent`` in front; [] for no rows."""
    if not rows:
        return []
    widths = [max(display_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        # (padded by the columns a cell takes on screen: a CJK character or an emoji takes two)
        cells = [cell + " " * (widths[i] - display_width(cell)) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _limited(lines: list[str], verbose: bool) -> list[str]:
    if verbose or len(lines) <= ROWS_WITHOUT_VERBOSE:
        return lines
    hidden = len(lines) - ROWS_WITHOUT_VERBOSE
    return lines[:ROWS_WITHOUT_VERBOSE] + [f"  ... and {hidden} more (-v shows all)"]


def _change_table(changes: Sequence[Change], verbose: bool) -> list[str]:
    """A ``test figure before after`` table (10 changes unless ``verbose``), each ``queries``
    change followed by the shapes that moved (:func:`shape_delta_lines`), indented."""
    table = aligned([["test", "figure", "before", "after"], *change_rows(changes)])
    shown = changes if verbose else changes[:ROWS_WITHOUT_VERBOSE]
    lines = table[:1]
    for change, row in zip(shown, table[1:]):
        lines.append(row)
        lines += [f"      {line}" for line in shape_delta_lines(change, verbose)]
    hidden = len(changes) - len(shown)
    if hidden:
        lines.append(f"  ... and {hidden} more (-v shows all)")
    return lines


def regression_lines(comparison: Comparison, baseline_label: str, verbose: bool,
                     coverage: str = "") -> list[str]:
    """The regressions section: a head line with their count, ``baseline_label`` and
    ``coverage`` (in parentheses: tests compared and not compared, see
    :func:`coverage_text`), then a ``test figure before after`` table (10 changes unless
    ``verbose``), each query change followed by the shapes that moved; [] without any."""
    if not comparison.regressions:
        return []
    head = f"regressions against {baseline_label}: {len(comparison.regressions)}"
    if coverage:
        head += f" ({coverage})"
    return [head] + _change_table(comparison.regressions, verbose)


def improvement_lines(comparison: Comparison, verbose: bool) -> list[str]:
    """The improvements section, with the hint to record them (``--migsafe-update-baseline``),
    as a ``test figure before after`` table (10 changes unless ``verbose``); [] without any."""
    if not comparison.improvements:
        return []
    head = [f"improvements: {len(comparison.improvements)} "
            "(record them with --migsafe-update-baseline)"]
    return head + _change_table(comparison.improvements, verbose)


def coverage_text(compared: int, not_compared: Mapping[str, str]) -> str:
    """How much of the baseline was compared, as text: ``60 tests compared`` and, when some
    baseline tests were not, ``; 3 not compared: 2 failed, 1 deselected`` (reasons as given
    in ``not_compared``, ``{node id: reason}``, most frequent first)."""
    text = f"{plural(compared, 'test')} compared"
    if not_compared:
        reasons: dict[str, int] = {}
        for reason in not_compared.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        parts = ", ".join(f"{count:,} {reason}" for reason, count in
                          sorted(reasons.items(), key=lambda item: (-item[1], item[0])))
        text += f"; {len(not_compared):,} not compared: {parts}"
    return text


#: With more tests than this left out by the selection itself ("not collected", "deselected":
#: a run of one file against a whole suite's baseline), ``-v`` counts them on one line
#: instead of listing them (``-vv`` lists them all)
SELECTION_LISTED = 5
_SELECTION_REASONS = ("not collected", "deselected")


def not_compared_lines(not_compared: Mapping[str, str], verbose: bool | int) -> list[str]:
    """With ``verbose`` (pytest's verbosity: -v is 1), the baseline tests that were not
    compared, one a line with the reason (``{node id: reason}``); at -v, more than
    :data:`SELECTION_LISTED` tests of one selection reason ("not collected", "deselected")
    are counted on one line, not listed; [] without ``verbose`` or when there are none."""
    if not verbose or not not_compared:
        return []
    counted = {}
    if verbose < 2:
        for reason in _SELECTION_REASONS:
            count = sum(1 for why in not_compared.values() if why == reason)
            if count > SELECTION_LISTED:
                counted[reason] = count
    rows = [[nodeid, f"({reason})"] for nodeid, reason in sorted(not_compared.items()) if reason not in counted]
    lines = ["not compared with the baseline:"] + aligned(rows)
    for reason, count in counted.items():
        lines.append(f"  {count:,} tests {reason} (this run's selection; -vv lists them)")
    return lines


def heaviest_lines(report: RunReport, count: int) -> list[str]:
    """The ``count`` tests that ran the most statements (like pytest's ``--durations``):
    a head line, then ``queries  test  top shape xN at call site`` rows, heaviest first
    (ties by node id; ``(+N other sites)`` after the site when the top shape was sent from
    more than one line); [] when ``count`` is 0 or no test ran a statement."""
    heavy = sorted(((record.queries.count, nodeid) for nodeid, record in report.tests.items()
                    if record.queries is not None and record.queries.count),
                   key=lambda item: (-item[0], item[1]))[:count]
    if not heavy or count <= 0:
        return []
    rows = []
    for queries, nodeid in heavy:
        figures = report.tests[nodeid].queries
        assert figures is not None
        top = ""
        if figures.shapes:
            shape = max(figures.shapes, key=lambda s: (s.count, s.shape))
            others = len(shape.call_sites) - 1
            elsewhere = f" (+{plural(others, 'other site')})" if others > 0 else ""
            top = f"x{shape.count} {elide_shape(shape.shape, TABLE_SHAPE_WIDTH)} at {shape.top_site}{elsewhere}"
        rows.append([plural(queries, "query", "queries"), nodeid, top])
    return [f"heaviest {plural(len(rows), 'test')} by statements (--migsafe-heaviest):"] + aligned(rows)


def removed_lines(comparison: Comparison, verbose: bool) -> list[str]:
    """Baseline tests that no longer exist: a head line, then one node id a line (10 unless
    ``verbose``); [] without any."""
    if not comparison.removed:
        return []
    count = len(comparison.removed)
    head = [f"removed: {plural(count, 'baseline test')} no longer {'exists' if count == 1 else 'exist'} "
            "(--migsafe-update-baseline drops them)"]
    return head + _limited([f"  {nodeid}" for nodeid in comparison.removed], verbose)


def n_plus_one_lines(report: RunReport, verbose: bool) -> list[str]:
    """Every N+1 suspect of the run, one line each: test, ``xN`` repeats, ``at`` call site
    (``path:line``), shape (in 90 characters, :func:`elide_shape`); 10 unless ``verbose``;
    [] without any."""
    rows = []
    for nodeid in sorted(report.tests):
        for suspect in suspects_of(report.tests[nodeid]):
            rows.append([nodeid, f"x{suspect.count}", f"at {suspect.call_site}",
                         elide_shape(suspect.shape, SHAPE_WIDTH)])
    if not rows:
        return []
    return [f"N+1 suspects: {len(rows)}"] + _limited(aligned(rows), verbose)


def leak_lines(report: RunReport, verbose: bool) -> list[str]:
    """Every connection leaked in the run (checked out in a test's call and not returned by
    its end, or returned only by the garbage collector), one line each: test, ``at`` the
    checkout's call site, the pool, ``(dropped)`` for one the collector returned; 10 unless
    ``verbose``; [] without any. What the ``ConnectionLeakWarning`` of each said."""
    rows = []
    for nodeid in sorted(report.tests):
        pool = report.tests[nodeid].pool
        for leak in pool.leaks if pool is not None else ():
            rows.append([nodeid, f"at {leak.call_site}", leak.pool + (" (dropped)" if leak.dropped else "")])
    if not rows:
        return []
    return [f"connections leaked: {len(rows)}"] + _limited(aligned(rows), verbose)


def shadow_lines(report: RunReport, verbose: bool) -> list[str]:
    """Every shadow experiment: the before/after of a migration at a glance.

    One row each: test, experiment, result, runs, statement counts (control ->
    candidate), nearest-rank p99 in ms (control -> candidate), errors raised
    (control/candidate, ``-`` for none), seed. 10 rows unless ``verbose``; [] without any.
    """
    rows = []
    for nodeid in sorted(report.tests):
        for s in report.tests[nodeid].shadows:
            errors = (f"{s.control_errors}/{s.candidate_errors}"
                      if s.control_errors or s.candidate_errors else "-")
            rows.append([nodeid, s.name, s.result, str(s.runs),
                         f"{s.control_queries} -> {s.candidate_queries}",
                         f"{s.control_p99_ms:.3g} -> {s.candidate_p99_ms:.3g}", errors, str(s.seed)])
    if not rows:
        return []
    header = ["test", "experiment", "result", "runs", "queries (control -> candidate)",
              "p99 ms", "raised (control/candidate)", "seed"]
    table = aligned([header, *rows])
    return [f"shadow experiments: {len(rows)}"] + table[:1] + _limited(table[1:], verbose)


def totals_lines(totals: Totals, notes: Iterable[str]) -> list[str]:
    """The totals of the run (tests measured, queries, N+1 suspects; cache hits, misses and
    hit rate in percent; connections created; shadow results, each line only when it has
    figures), then one ``note:`` line per note."""
    lines = []
    if totals.has_figures():
        lines.append(f"totals: {measured_text(totals)}, "
                     f"{plural(totals.queries, 'query', 'queries')}, "
                     f"{plural(totals.n_plus_one, 'N+1 suspect')}")
        if totals.cache_tests:
            lines += cache_total_lines(totals)
        if totals.pool_tests:
            pool = f"pool: {plural(totals.connections_created, 'connection')} created"
            if totals.leaks:
                pool += f", {totals.leaks:,} leaked"
            lines.append(pool)
        if totals.shadows:
            shadow = f"shadow: {totals.shadows_matched:,} matched, {totals.shadows_mismatched:,} mismatched"
            if totals.shadows_ignored:
                shadow += f", {totals.shadows_ignored:,} ignored"
            lines.append(shadow)
    lines.extend(f"note: {note}" for note in notes)
    return lines


def measured_text(totals: Totals) -> str:
    """``15 tests measured``, and when fewer tests were measured than ran, why the counts
    differ: ``15 tests measured (of 16 run: 1 ran no SQL and touched no observed cache,
    pool or shadow)``, so that it reads right beside pytest's ``16 passed``; tests whose
    figures were lost with their xdist worker are counted apart, by worker:
    ``(of 16 run: 1 ran no SQL ...; 2 lost with worker gw0)``."""
    text = f"{plural(totals.tests_measured, 'test')} measured"
    lost = sum(totals.lost.values())
    idle = totals.tests_run - totals.tests_measured - lost
    reasons = [f"{idle:,} ran no SQL and touched no observed cache, pool or shadow"] if idle > 0 else []
    reasons += [f"{count:,} lost with worker {worker}" for worker, count in sorted(totals.lost.items())]
    if reasons:
        text += f" (of {totals.tests_run:,} run: {'; '.join(reasons)})"
    return text


def lost_lines(report: RunReport, verbose: bool) -> list[str]:
    """The tests whose figures were lost with their xdist worker (``RunReport.lost``): a head
    line, then ``node id  (worker gw0)`` rows by node id (10 unless ``verbose``); [] without any."""
    if not report.lost:
        return []
    rows = aligned([[nodeid, f"(worker {worker})"] for nodeid, worker in sorted(report.lost.items())])
    return [f"figures lost with their xdist worker: {plural(len(rows), 'test')}"] + _limited(rows, verbose)


def _not_rated(totals: Totals) -> str:
    reasons = sorted(totals.cache_not_rated.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{count} {reason}" for reason, count in reasons)


def cache_total_lines(totals: Totals) -> list[str]:
    """The cache lines of the totals: hits, misses and hit rate of the rated tests (a
    workload: see :func:`cache_rating`), then, when some tests were not rated, how many were
    rated and why the others were not, with the reads left out."""
    if totals.cache_rated:
        lines = [f"cache: {plural(totals.cache_hits, 'hit')}, {plural(totals.cache_misses, 'miss', 'misses')}, "
                 f"hit rate {percent(totals.hit_rate)}"]
    else:
        lines = ["cache: no test rated, so no hit rate"]
    if totals.cache_not_rated:
        unrated = sum(totals.cache_not_rated.values())
        lines.append(f"  rated: {plural(totals.cache_rated, 'test')} (workloads: no assert_cache_aside, no shadow "
                     f"experiment, enough reads); not rated: {plural(unrated, 'test')} ({_not_rated(totals)}), "
                     f"their {plural(totals.cache_unrated_hits, 'hit')} and "
                     f"{plural(totals.cache_unrated_misses, 'miss', 'misses')} left out")
    return lines


def totals_sentence(totals: Totals) -> str:
    """The totals as one sentence without a final period (for the Markdown summary)."""
    parts = [measured_text(totals),
             plural(totals.queries, "query", "queries"),
             plural(totals.n_plus_one, "N+1 suspect")]
    if totals.cache_tests:
        rated = (f"cache hit rate {percent(totals.hit_rate)} ({plural(totals.cache_hits, 'hit')}, "
                 f"{plural(totals.cache_misses, 'miss', 'misses')})" if totals.cache_rated else "no cache hit rate")
        if totals.cache_not_rated:
            rated += (f" over {plural(totals.cache_rated, 'rated test')}, "
                      f"{plural(sum(totals.cache_not_rated.values()), 'test')} not rated ({_not_rated(totals)})")
        parts.append(rated)
    if totals.pool_tests:
        parts.append(f"{plural(totals.connections_created, 'connection')} created")
    if totals.shadows:
        parts.append(f"shadow {totals.shadows_matched:,} matched / {totals.shadows_mismatched:,} mismatched")
    return ", ".join(parts)


def test_row(record: TestRecord, alert: float) -> list[str]:
    """One row of the per-test table, all strings: node id; queries (``count`` or
    ``count/budget``); N+1 suspects; the slowest shape by its longest statement, with that
    time in ms; cache ``hits/misses rate%`` with ``!`` under the alert line (the record's
    own ``alert``, else ``alert``, a fraction 0..1) for a rated test, ``(not rated)`` for one
    that is not (:func:`cache_rating`); pool ``created/peak checked
    out/leaks``; shadow ``name:result`` pairs. ``-`` where the test has no such figure."""
    queries = slowest = cache = pool = shadow = n_plus_one = "-"
    figures = record.queries
    if figures is not None:
        queries = str(figures.count) if figures.budget is None else f"{figures.count}/{figures.budget}"
        n_plus_one = str(len(suspects_of(record)))
        if figures.shapes:
            worst = max(figures.shapes, key=lambda s: (s.max_ms, s.count))
            slowest = f"{elide_shape(worst.shape, TABLE_SHAPE_WIDTH)} ({worst.max_ms:.3g} ms)"
    if record.cache is not None:
        rate = record.cache.hit_rate
        line = getattr(record.cache, "alert", None)
        line = alert if line is None else line
        reason = cache_rating(record)
        mark = "!" if reason is None and rate is not None and rate < line else ""
        unrated = " (not rated)" if reason is not None and rate is not None else ""
        cache = f"{record.cache.hits}/{record.cache.misses} {percent(rate)}{mark}{unrated}"
    if record.pool is not None:
        pool = f"{record.pool.created}/{record.pool.peak_checked_out}/{len(record.pool.leaks)}"
    if record.shadows:
        shadow = " ".join(f"{s.name}:{s.result}" for s in record.shadows)
    return [record.nodeid, queries, n_plus_one, slowest, cache, pool, shadow]


def test_table_lines(report: RunReport, alert: float) -> list[str]:
    """The per-test table (``-v``): a legend line, a header, then one line per test that ran
    queries or has other figures (see :func:`is_notable`), by node id; [] when none.
    ``alert`` is the hit-rate alert line, a fraction 0..1."""
    rows = [test_row(report.tests[n], alert) for n in sorted(report.tests) if is_notable(report.tests[n])]
    if not rows:
        return []
    header = ["test", "queries", "N+1", "slowest shape", "cache hit/miss", "pool new/peak/leak", "shadow"]
    return ["per test (queries as count/budget; ! marks a hit rate under the alert line "
            f"{alert:.0%}):"] + aligned([header, *rows])


def summary_lines(
    report: RunReport,
    comparison: Comparison | None = None,
    *,
    baseline_label: str = "the baseline",
    verbose: bool = False,
    verbosity: int = 1,
    full: bool = True,
    alert: float = DEFAULT_HIT_RATE_ALERT,
    status: Sequence[str] = (),
    messages: Sequence[str] = (),
    coverage: str = "",
    not_compared: Mapping[str, str] | None = None,
    heaviest: int = 0,
) -> list[str]:
    """The lines of the terminal summary; empty when there is nothing to say.

    ``status`` lines (the baseline compared with) follow the totals; ``messages`` (errors,
    the baseline written, why the run failed) come last. ``full=False`` keeps only the
    regressions and ``messages``: what is printed without ``--migsafe-report``.
    ``baseline_label`` names the baseline in the regressions head line; ``verbose`` (``-v``)
    shows every row, the tests not compared and the per-test table (``verbosity``: pytest's
    level, -v is 1: at 1 a selection's many tests not collected are counted, not listed); ``alert`` is the
    hit-rate alert line, a fraction 0..1; ``coverage`` (:func:`coverage_text`) follows the
    regressions head line; ``not_compared`` (``{node id: reason}``) is listed with
    ``verbose``; ``heaviest`` > 0 adds that many heaviest tests (:func:`heaviest_lines`).
    """
    comparison = comparison or Comparison()
    lines = regression_lines(comparison, baseline_label, verbose, coverage)
    if full:
        lines += improvement_lines(comparison, verbose)
        lines += removed_lines(comparison, verbose)
        lines += n_plus_one_lines(report, verbose)
        lines += leak_lines(report, verbose)
        lines += shadow_lines(report, verbose)
        lines += heaviest_lines(report, heaviest)
        lines += totals_lines(Totals.of(report), report.notes)
        lines += lost_lines(report, verbose)
        lines += list(status)
        lines += not_compared_lines(not_compared or {}, verbosity if verbose else 0)
        if verbose:
            lines += test_table_lines(report, alert)
    lines += list(messages)
    return lines


def junit_properties(record: TestRecord) -> list[tuple[str, object]]:
    """The figures of one test as JUnit XML properties: ``(name, value)`` pairs.

    ``migsafe_queries``, ``migsafe_query_budget`` (with a budget), ``migsafe_n_plus_one``
    (suspects not allowed); ``migsafe_cache_hits``, ``migsafe_cache_misses``,
    ``migsafe_cache_hit_rate`` (a fraction 0..1, 4 digits); ``migsafe_connections_created``,
    ``migsafe_pool_peak_checked_out``, ``migsafe_pool_leaks`` (a count);
    ``migsafe_shadow_<name>`` (the result). Only the figures the test has.
    """
    props: list[tuple[str, object]] = []
    if record.queries is not None:
        props.append(("migsafe_queries", record.queries.count))
        if record.queries.budget is not None:
            props.append(("migsafe_query_budget", record.queries.budget))
        props.append(("migsafe_n_plus_one", len(suspects_of(record))))
    if record.cache is not None:
        props += [("migsafe_cache_hits", record.cache.hits), ("migsafe_cache_misses", record.cache.misses)]
        if record.cache.hit_rate is not None:
            props.append(("migsafe_cache_hit_rate", round(record.cache.hit_rate, 4)))
    if record.pool is not None:
        props += [("migsafe_connections_created", record.pool.created),
                  ("migsafe_pool_peak_checked_out", record.pool.peak_checked_out),
                  ("migsafe_pool_leaks", len(record.pool.leaks))]
    for shadow in record.shadows:
        props.append((f"migsafe_shadow_{_property_name(shadow.name)}", shadow.result))
    return props


_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def _property_name(name: str) -> str:
    """``name`` as a JUnit property name: pytest escapes property values, not names, so a
    control character made the XML ill-formed and a lone surrogate crashed its writer. Other
    characters become ``_``, and a name that changed ends with 6 hex digits of its digest (two
    experiments never share a property)."""
    safe = _NOT_NAME.sub("_", name)
    if safe == name:
        return name
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=3).hexdigest()
    return f"{safe}_{digest}"


# line breaks and other control characters: a newline ended a Markdown table, broke a chart label
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def _cell(text: str) -> str:
    """``text`` for a Markdown table cell: one line, no pipe or backquote."""
    return _CONTROL.sub(" ", text).replace("|", "\\|").replace("`", "'")


def html_cells(record: TestRecord) -> dict[str, str]:
    """The figures of one test for pytest-html's columns, as text: ``"Queries / budget"``
    (``count`` or ``count / budget``), ``"N+1 suspects"`` (not allowed), ``"Cache hit
    rate"`` (percent, one decimal), ``"Connections created"``; ``-`` where none."""
    figures = record.queries
    queries = "-" if figures is None else (
        str(figures.count) if figures.budget is None else f"{figures.count} / {figures.budget}")
    return {
        "Queries / budget": queries,
        "N+1 suspects": "-" if figures is None else str(len(suspects_of(record))),
        "Cache hit rate": "-" if record.cache is None else percent(record.cache.hit_rate),
        "Connections created": "-" if record.pool is None else str(record.pool.created),
    }


def html_shapes(record: TestRecord) -> str:
    """An HTML table of the test's statement shapes (count, longest time in ms, shape, call
    sites ``path:line xN``), most frequent first, escaped; ``""`` without shapes."""
    from html import escape

    if record.queries is None or not record.queries.shapes:
        return ""
    rows = []
    for shape in sorted(record.queries.shapes, key=lambda s: (-s.count, s.shape)):
        sites = ", ".join(f"{site} x{count}" for site, count in
                          sorted(shape.call_sites.items(), key=lambda item: (-item[1], item[0])))
        rows.append(f"<tr><td>{shape.count}</td><td>{shape.max_ms:.3g}</td>"
                    f"<td><code>{escape(shape.shape)}</code></td><td>{escape(sites)}</td></tr>")
    return ('<div class="migsafe"><p>migsafe: statements by shape</p><table>'
            "<tr><th>count</th><th>max ms</th><th>shape</th><th>call sites</th></tr>"
            + "".join(rows) + "</table></div>")


def _chart_label(nodeid: str) -> str:
    name = nodeid.rsplit("::", 1)[-1]
    name = _CONTROL.sub(" ", name)  # a Mermaid label is one line
    name = name if len(name) <= 24 else name[:21] + "..."
    return name.replace('"', "'")


def chart_lines(report: RunReport, baseline_queries: Mapping[str, int | None] | None, count: int) -> list[str]:
    """A Mermaid ``xychart-beta`` bar chart (fenced) of the ``count`` heaviest tests by
    statements. With a baseline (``baseline_queries``: ``{node id: statements}``), each test's
    baseline count beside its count now, labelled ``name (base)`` / ``name (now)``; a test the
    baseline does not have (new, or not measured then) gets its ``name (new)`` bar alone. Without
    one (None), one bar per test, labelled ``name`` (no baseline bar of 0, which read as a rise
    from nothing). [] when no test ran a statement or ``count`` is 0."""
    heavy = sorted(((record.queries.count, nodeid) for nodeid, record in report.tests.items()
                    if record.queries is not None and record.queries.count),
                   key=lambda item: (-item[0], item[1]))[:max(count, 0)]
    if not heavy:
        return []
    labels: list[str] = []
    values: list[int] = []
    for now, nodeid in heavy:
        label = _chart_label(nodeid)
        base = None if baseline_queries is None else baseline_queries.get(nodeid)
        if baseline_queries is None:
            labels.append(f'"{label}"')
        elif base is None:
            labels.append(f'"{label} (new)"')
        else:
            labels += [f'"{label} (base)"', f'"{label} (now)"']
            values.append(base)
        values.append(now)
    title = "statements" if baseline_queries is None else "statements, baseline beside now"
    return ["```mermaid", "xychart-beta",
            f'    title "Heaviest {plural(len(heavy), "test")}: {title}"',
            f"    x-axis [{', '.join(labels)}]", '    y-axis "statements"',
            f"    bar [{', '.join(str(v) for v in values)}]", "```", ""]


def markdown_summary(report: RunReport, comparison: Comparison | None, baseline_label: str,
                     messages: Sequence[str] = (), *,
                     baseline_queries: Mapping[str, int | None] | None = None,
                     heaviest: int = DEFAULT_HEAVIEST) -> str:
    """A Markdown block for ``$GITHUB_STEP_SUMMARY``: a chart, the regressions table and the totals.

    A ``### migsafe report`` heading, the Mermaid chart of the ``heaviest`` tests, baseline
    beside now (:func:`chart_lines`; ``baseline_queries`` is ``{node id: statements}`` of
    the baseline, None without one), the regressions as a table (``|`` and backquotes in
    cells escaped; the shapes that moved under a query change), a ``Totals:`` sentence,
    then ``messages`` as a list. Ends with a blank line; ``""`` when there are no
    regressions, no figures and no messages.
    """
    totals = Totals.of(report)
    comparison = comparison or Comparison()
    if not (comparison.regressions or totals.has_figures() or messages):
        return ""
    lines = ["### migsafe report", ""]
    lines += chart_lines(report, baseline_queries, heaviest)
    if comparison.regressions:
        count = plural(len(comparison.regressions), "regression")
        lines += [f"**{count}** against `{_cell(baseline_label)}`",
                  "", "| test | figure | before | after |", "| --- | --- | --- | --- |"]
        for change, (test, figure, before, after) in zip(comparison.regressions,
                                                         change_rows(comparison.regressions)):
            moved = "".join(f"<br>{_cell(line)}" for line in shape_delta_lines(change, False))
            lines.append(f"| `{_cell(test)}` | {_cell(figure)} | {_cell(before)} | {_cell(after)}{moved} |")
        lines.append("")
    lines.append(f"Totals: {totals_sentence(totals)}.")
    if messages:
        lines.append("")
        lines += [f"- {_cell(m)}" for m in messages]
    return "\n".join(lines) + "\n\n"
