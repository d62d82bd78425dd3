"""``migsafe pool-size``: the pool size a peak load needs, with the arithmetic shown.

The average query time is typed (``--avg-query-ms``) or measured: ``--from-report``
reads the JSON report of a test run (``--migsafe-report-json``): the run's total query
time over its total statement count (the ``queries.total_ms`` and ``queries.count`` of
every test record). The size is ``ceil(peak_rps x avg_query_seconds x headroom)``
(:mod:`pytest_migsafe.pool.sizing`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pytest_migsafe.cli.errors import CommandError
from pytest_migsafe.pool import sizing
from pytest_migsafe.report.record import SCHEMA_VERSION, RunReport
from pytest_migsafe.values import positive_number


def register(subparsers: Any) -> None:
    """Add the ``pool-size`` subcommand to ``subparsers`` (an argparse subparsers action):
    ``--peak-rps N`` (requests per second), either ``--avg-query-ms MS`` (milliseconds) or
    ``--from-report PATH``, and ``--headroom X`` (a multiplier); each a positive number."""
    parser = subparsers.add_parser(
        "pool-size",
        help="recommend a connection pool size for a peak request rate",
        description="Recommend a pool size: ceil(peak_rps x avg_query_seconds x headroom).",
    )
    parser.add_argument("--peak-rps", type=positive_number, required=True, metavar="N",
                        help="peak requests (or queries) per second the service must handle")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--avg-query-ms", type=positive_number, metavar="MS",
                        help="average time a request holds a connection, in milliseconds")
    source.add_argument("--from-report", type=Path, metavar="PATH",
                        help="take the average query time from a --migsafe-report-json file")
    parser.add_argument("--headroom", type=positive_number, default=sizing.DEFAULT_HEADROOM,
                        metavar="X", help=f"multiplier for bursts (default {sizing.DEFAULT_HEADROOM})")
    parser.set_defaults(func=run)


def _report_average(path: Path) -> tuple[sizing.MeasuredAverage, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read report {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
        raise CommandError(f"{path} is not a migsafe report (no 'tests'); write one with --migsafe-report-json")
    version = data.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise CommandError(f"{path}: unsupported report schema_version {version!r} "
                           f"(this migsafe reads up to {SCHEMA_VERSION})")
    try:
        report = RunReport.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise CommandError(f"{path} is not a valid migsafe report: {exc}") from None
    average = sizing.average_query_time(report)
    if average is None:
        raise CommandError(f"{path} records no queries: pass --avg-query-ms instead")
    where = f"measured over {average.queries} queries in {average.tests} tests of {path}"
    return average, where


def run(args: argparse.Namespace) -> int:
    """Print the recommended size (connections), its arithmetic, and where the average
    query time came from; returns 0. Raises ``CommandError`` when ``--from-report`` cannot
    be read, is not JSON or not a migsafe report, has a newer schema_version, or records
    no queries."""
    if args.from_report is not None:
        average, where = _report_average(args.from_report)
        seconds = average.seconds
    else:
        seconds = sizing.ms_to_seconds("avg_query_ms", args.avg_query_ms)
        where = "as given"
    advice = sizing.recommend(args.peak_rps, seconds, args.headroom)
    print(f"recommended pool size: {advice.size}")
    print(advice.explain())
    print(f"average query time {where}")
    return 0
