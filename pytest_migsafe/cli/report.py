"""``migsafe report merge`` and ``migsafe report diff``: run reports outside pytest.

``merge A.json B.json ... -o ALL.json`` folds the run reports of CI shards into one
(a test in two shards: the later file wins, with a warning). ``diff BASELINE NEW``
compares two files (a baseline or a run report each) and prints the regression summary
that ``--migsafe-report`` prints; it exits 1 when there are regressions (unless
``--no-fail-on-regression``), 2 when a file is missing, corrupt or of another schema, has
a malformed field (a count that is a string, NaN, notes that are no list: the message names
the file and the field's path, ``tests["t.py::a"].queries.count``), or is no regular file
(a named pipe, a device, more than 1 GB: refused before reading).

Tolerances of ``diff`` are those of the pytest options: ``--query-tolerance`` in
statements, ``--hit-rate-tolerance`` and ``--hit-rate-alert`` as fractions from 0 to 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pytest_migsafe.cli.errors import CommandError
from pytest_migsafe.report.baseline import BASELINE_KIND, Baseline, baseline_of_run, read_baseline
from pytest_migsafe.report.files import (
    ReportFileError,
    file_kind,
    read_report_document,
    report_document,
    run_report_of,
    write_json_atomic,
)
from pytest_migsafe.report.record import RunReport
from pytest_migsafe.report.regressions import Tolerances, compare
from pytest_migsafe.report.render import DEFAULT_HIT_RATE_ALERT, summary_lines
from pytest_migsafe.text import plural
from pytest_migsafe.values import argument_type, parse_rate


def register(subparsers: Any) -> None:
    """Add ``migsafe report merge`` (``REPORT.json ... -o ALL.json``) and ``migsafe report
    diff`` (``BASELINE NEW``, ``--query-tolerance N``, ``--hit-rate-tolerance RATE``,
    ``--hit-rate-alert RATE``, ``--[no-]fail-on-regression``, ``-v``) to ``subparsers``
    (an argparse subparsers action)."""
    report = subparsers.add_parser("report", help="merge or compare migsafe run reports and baselines")
    commands = report.add_subparsers(dest="report_command", metavar="SUBCOMMAND")
    commands.required = True

    merge = commands.add_parser("merge", help="merge the JSON run reports of CI shards into one")
    merge.add_argument("reports", nargs="+", metavar="REPORT.json", help="--migsafe-report-json files")
    merge.add_argument("-o", "--output", required=True, metavar="ALL.json", help="the merged report to write")
    merge.set_defaults(func=run_merge)

    diff = commands.add_parser(
        "diff", help="print the regressions between a baseline (or report) and a newer report"
    )
    diff.add_argument("baseline", metavar="BASELINE", help="a baseline file or a run report JSON")
    diff.add_argument("new", metavar="NEW", help="a run report JSON (or a baseline file)")
    diff.add_argument("--query-tolerance", type=_non_negative_int, default=0, metavar="N",
                      help="extra queries per test that are not a regression (default 0)")
    diff.add_argument("--hit-rate-tolerance", type=argument_type(parse_rate), default=0.05, metavar="RATE",
                      help="fall of a cache hit rate that is not a regression (default 0.05)")
    diff.add_argument("--hit-rate-alert", type=argument_type(parse_rate), default=DEFAULT_HIT_RATE_ALERT, metavar="RATE",
                      help="a hit rate falling under this line is a regression (default 0.7)")
    diff.add_argument("--fail-on-regression", action=argparse.BooleanOptionalAction, default=True,
                      help="exit 1 when there are regressions (default on)")
    diff.add_argument("-v", "--verbose", action="store_true", help="show every row and the per-test table")
    diff.set_defaults(func=run_diff)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text}")
    return value


def run_merge(args: argparse.Namespace) -> int:
    """Merge shard reports into ``args.output``; returns the exit code (0).

    Records are merged with :meth:`RunReport.merge
    <pytest_migsafe.report.record.RunReport.merge>` (a test in two shards: the later file
    wins, with a warning on stderr); each regression or improvement stays with the shard
    whose record won; ``removed`` drops tests present in the merge; errors are kept once.
    Raises ``CommandError`` when a report cannot be read or is malformed (any field: see
    :func:`~pytest_migsafe.report.files.read_report_document` and
    :func:`~pytest_migsafe.report.files.run_report_of`; nothing is written then), or the
    output cannot be written (it is written atomically, through a symlink).
    """
    merged = RunReport()
    owner: dict[str, int] = {}
    changes: list[tuple[int, str, dict[str, Any]]] = []
    removed: set[str] = set()
    errors: list[str] = []
    for index, path in enumerate(args.reports):
        document = _read_report(path)
        shard = _run_report(document, path)
        for nodeid in merged.merge(shard):  # (measured or not: a test that ran no SQL too)
            print(f"migsafe: warning: {nodeid} is in {args.reports[owner[nodeid]]} and {path}: "
                  f"keeping {path}", file=sys.stderr)
        owner.update(dict.fromkeys([*shard.tests, *shard.unmeasured], index))
        for key in ("regressions", "improvements"):
            changes += [(index, key, change) for change in document.get(key, [])]
        removed.update(document.get("removed", []))
        errors += [e for e in document.get("errors", []) if e not in errors]
    # a change stays with the record it describes: the shard whose record won
    kept: dict[str, list[dict[str, Any]]] = {"regressions": [], "improvements": []}
    for index, key, change in changes:
        if owner.get(change.get("nodeid", "")) == index:
            kept[key].append(change)
    document = report_document(merged, regressions=kept["regressions"],
                               improvements=kept["improvements"],
                               removed=sorted(removed - set(merged.tests)), errors=errors)
    try:
        write_json_atomic(args.output, document)
    except OSError as exc:
        raise CommandError(f"{args.output}: cannot be written: {exc.strerror or exc}") from None
    print(f"migsafe: merged {len(args.reports)} reports ({len(merged.tests)} tests) into {args.output}")
    return 0


def run_diff(args: argparse.Namespace) -> int:
    """Print the regressions of ``args.new`` against ``args.baseline``; returns the exit code.

    Either file may be a baseline or a run report (a report's passed tests are its
    figures). Prints the summary of ``--migsafe-report`` (``migsafe: no change`` when
    empty) and lists baseline tests missing from ``NEW``. Returns 1 when there are
    regressions and ``--fail-on-regression`` is on (the default), else 0. Raises
    ``CommandError`` for a missing, corrupt, other-schema or malformed file, or one that is
    no regular file.
    """
    before = _figures(args.baseline)
    after_report, after = _run_and_figures(args.new)
    tolerances = Tolerances(queries=args.query_tolerance, hit_rate=args.hit_rate_tolerance,
                            hit_rate_alert=args.hit_rate_alert)
    comparison = compare(before, after, tolerances)
    ran = set(after_report.tests) | set(after.tests) | set(after_report.unmeasured)
    missing = sorted(set(before.tests) - ran)
    messages = []
    if after_report.interrupted:
        messages.append(f"{args.new} is of an interrupted run: the tests it did not reach are not in it")
    skipped: dict[str, int] = {}  # baseline tests NEW ran but does not compare (not passed), by outcome
    for nodeid in sorted((set(before.tests) & ran) - set(after.tests)):
        record = after_report.tests.get(nodeid)
        outcome = record.outcome if record is not None else after_report.unmeasured.get(nodeid, "passed")
        skipped[outcome] = skipped.get(outcome, 0) + 1
    if skipped:
        messages.append(f"not compared: {', '.join(f'{n} {outcome}' for outcome, n in sorted(skipped.items()))} "
                        f"in {args.new} (only passed tests are compared)")
    if missing:
        messages.append(f"not in {args.new}: {plural(len(missing), 'test')} of {args.baseline} "
                        "(removed, or not run)")
        shown = missing if args.verbose else missing[:10]
        messages += [f"  {nodeid}" for nodeid in shown]
        if len(shown) < len(missing):
            messages.append(f"  ... and {len(missing) - len(shown)} more (-v shows all)")
    failed = bool(comparison.regressions) and args.fail_on_regression
    if failed:
        messages.append(f"FAILED: {plural(len(comparison.regressions), 'regression')}")
    lines = summary_lines(after_report, comparison, baseline_label=args.baseline, verbose=args.verbose,
                          alert=args.hit_rate_alert, messages=messages)
    print("\n".join(lines) if lines else "migsafe: no change")
    return 1 if failed else 0


def _read_report(path: str) -> dict[str, Any]:
    try:
        return read_report_document(path)
    except ReportFileError as exc:
        raise CommandError(str(exc)) from None


def _run_report(document: dict[str, Any], path: str) -> RunReport:
    try:
        return run_report_of(document, path)
    except ReportFileError as exc:
        raise CommandError(str(exc)) from None


def _figures(path: str) -> Baseline:
    """The baseline figures in ``path``: a baseline file, or the passed tests of a report."""
    return _run_and_figures(path)[1]


def _run_and_figures(path: str) -> tuple[RunReport, Baseline]:
    try:
        if file_kind(path) == BASELINE_KIND:
            return RunReport(), read_baseline(path)
        report = run_report_of(read_report_document(path), path)
    except ReportFileError as exc:
        raise CommandError(str(exc)) from None
    return report, baseline_of_run(report)

