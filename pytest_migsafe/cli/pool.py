"""``migsafe pool-size``: the pool size a peak load needs, with the arithmetic shown.

The size is ``ceil(peak_rps x hold_seconds x headroom)`` (Little's law, L = lambda x W;
:mod:`pytest_migsafe.pool.sizing`), where ``hold_seconds`` is the time one request holds
a connection, checkout to checkin (a whole request or transaction, not one statement).
It is typed (``--hold-ms``; ``--avg-query-ms`` is its old name) or measured:
``--from-report`` reads the JSON report of a test run (``--migsafe-report-json``) and
takes the p95 of every checkout's hold time, merged from each test's ``pool.hold_times``
histogram (:class:`~pytest_migsafe.pool.holds.HoldTimes`). Hold times measured against a
local database (unix socket, loopback, SQLite: each test's ``pool.servers``) are far
below production's: the command says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pytest_migsafe.cli.errors import CommandError
from pytest_migsafe.pool import sizing
from pytest_migsafe.report.files import ReportFileError, read_report_document, run_report_of
from pytest_migsafe.values import positive_number


def register(subparsers: Any) -> None:
    """Add the ``pool-size`` subcommand to ``subparsers`` (an argparse subparsers action):
    ``--peak-rps N`` (requests per second), either ``--hold-ms MS`` (milliseconds a request
    holds a connection; ``--avg-query-ms`` is its old name) or ``--from-report PATH``, and
    ``--headroom X`` (a multiplier); each a positive number."""
    parser = subparsers.add_parser(
        "pool-size",
        help="recommend a connection pool size for a peak request rate",
        description="Recommend a pool size: ceil(peak_rps x hold_seconds x headroom) (Little's law), "
                    "hold_seconds being the time a request holds a connection, checkout to checkin.",
    )
    parser.add_argument("--peak-rps", type=positive_number, required=True, metavar="N",
                        help="peak requests (or transactions) per second the service must handle")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hold-ms", "--avg-query-ms", dest="hold_ms", type=positive_number, metavar="MS",
                        help="time one request holds a connection, checkout to checkin, in milliseconds "
                             "(--avg-query-ms is its old name)")
    source.add_argument("--from-report", type=Path, metavar="PATH",
                        help=f"take the p{sizing.HOLD_PERCENTILE} connection hold time of a "
                             f"--migsafe-report-json file")
    parser.add_argument("--headroom", type=positive_number, default=sizing.DEFAULT_HEADROOM,
                        metavar="X", help=f"multiplier for bursts (default {sizing.DEFAULT_HEADROOM})")
    parser.set_defaults(func=run)


def _report_holds(path: Path) -> tuple[sizing.MeasuredHold, int, str]:
    """The measured hold of a report file, the tests it came from, and the file's description."""
    try:
        # kind, schema version and every record checked as merge and diff check them (a hold-time
        # histogram of whole numbers: json lets Infinity and 0.5 through); no pipe or huge file
        report = run_report_of(read_report_document(path), path)
    except ReportFileError as exc:
        raise CommandError(str(exc)) from None
    inputs = sizing.SizingInputs()
    tests = 0
    for record in report.tests.values():
        if record.pool is None:
            continue
        before = inputs.holds.count
        inputs.add_pool(record.pool)
        tests += inputs.holds.count > before
    measured = inputs.hold()
    if measured is None:
        raise CommandError(f"{path} records no connection hold times (no test checked a connection out "
                           f"and in, or the report's pool records do not carry 'hold_times'): pass --hold-ms")
    return measured, tests, str(path)


def run(args: argparse.Namespace) -> int:
    """Print the recommended size (connections), its arithmetic, where the hold time came
    from, and a warning when it was measured against a local database; returns 0. Raises
    ``CommandError`` when ``--from-report`` cannot be read, is no regular file (a named pipe,
    a device) or is larger than :data:`~pytest_migsafe.report.files.MAX_JSON_BYTES`, is not
    JSON or not a migsafe report, has a newer schema_version, has malformed pool figures, or
    records no hold time."""
    warning = None
    if args.from_report is not None:
        measured, tests, where = _report_holds(args.from_report)
        seconds = measured.seconds
        source = (f"hold time: the p{sizing.HOLD_PERCENTILE} of {measured.checkouts} checkouts "
                  f"in {tests} tests of {where}")
        warning = sizing.local_warning(measured.local)
    else:
        seconds = sizing.ms_to_seconds("hold_ms", args.hold_ms)
        source = "hold time as given"
    advice = sizing.recommend(args.peak_rps, seconds, args.headroom)
    print(f"recommended pool size: {advice.size}")
    print(advice.explain())
    print(source)
    if warning is not None:
        print(f"WARNING {warning}")
    return 0
