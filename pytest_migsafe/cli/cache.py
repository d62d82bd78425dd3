"""``migsafe hot-reads`` and ``migsafe hit-rate``: what to cache, and how well a cache does.

``hot-reads`` ranks the SELECTs of a PostgreSQL database as cache candidates from
``pg_stat_statements`` (:mod:`pytest_migsafe.cache.hot_reads`). ``hit-rate`` prints a Redis
server's hits, misses and hit rate from ``INFO stats`` (since its start or last
``CONFIG RESETSTAT``) and exits 1 when the rate is under the alert line.

Rates on the command line are fractions from 0 to 1; they are printed as percentages.
Errors the user can fix (no connection, a bad URL, ``INFO`` refused, no
``pg_stat_statements``) raise :class:`~pytest_migsafe.cli.errors.CommandError` with the
URL's password masked (exit status 2).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from pytest_migsafe.cli.errors import CommandError
from pytest_migsafe.servers import mask_url
from pytest_migsafe.values import parse_positive_int, parse_rate


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("could not convert string to float: ",
                                                          "expected a number between 0 and 1, got ")) from None


def _positive_int(text: str) -> int:
    try:
        return parse_positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None


def register(subparsers: Any) -> None:
    """Add the ``hot-reads`` (``--dsn URL``, ``--limit N``) and ``hit-rate``
    (``--redis-url URL``, ``--target RATE``, ``--alert RATE``) subcommands to ``subparsers``
    (an argparse subparsers action), each with ``func`` set to its runner."""
    hot = subparsers.add_parser(
        "hot-reads",
        help="rank a PostgreSQL database's SELECTs as cache candidates (pg_stat_statements)",
        description="List the most-called SELECT statements from pg_stat_statements with their mean "
                    "time and how often the tables they read are written; best cache candidates "
                    "first (estimated hits = calls - writes of their tables).",
    )
    hot.add_argument("--dsn", required=True, metavar="URL",
                     help="PostgreSQL URL or libpq conninfo of the database to inspect")
    hot.add_argument("--limit", type=_positive_int, default=10, metavar="N",
                     help="how many statements to list (default 10)")
    hot.set_defaults(func=run_hot_reads)

    rate = subparsers.add_parser(
        "hit-rate",
        help="print a Redis server's hits, misses and hit rate (INFO stats)",
        description="Print keyspace hits, misses and the hit rate from a Redis server's INFO stats. "
                    "Exit status 1 when the hit rate is under the alert line, else 0.",
    )
    rate.add_argument("--redis-url", required=True, metavar="URL", help="redis:// or unix:// URL")
    rate.add_argument("--target", type=_rate, default=0.8, metavar="RATE",
                      help="the hit rate to aim for, 0 to 1 (default 0.8)")
    rate.add_argument("--alert", type=_rate, default=0.7, metavar="RATE",
                      help="exit 1 when the hit rate is under this line, 0 to 1 (default 0.7)")
    rate.set_defaults(func=run_hit_rate)


def _clean(error: BaseException, url: str) -> str:
    """The first line of an error message, with passwords masked where they stand."""
    from pytest_migsafe.servers import error_message

    text = error_message(error, given=url)
    return text.splitlines()[0] if text else type(error).__name__


def run_hot_reads(args: argparse.Namespace) -> int:
    """Print the hot reads of ``--dsn`` (a PostgreSQL URL, ``postgresql+driver://`` accepted,
    or a libpq conninfo): the table of
    :func:`~pytest_migsafe.cache.hot_reads.format_hot_reads`, at most ``--limit`` rows from
    ``pg_stat_statements``. Returns 0; raises ``CommandError`` when the connection fails
    (5 s connect timeout) or ``pg_stat_statements`` cannot be read. Imports psycopg
    (``CommandError`` naming the extra without it)."""
    _need("psycopg", "psycopg", "migsafe hot-reads")
    import psycopg

    from pytest_migsafe.cache.hot_reads import HotReadsUnavailable, format_hot_reads, hot_reads

    dsn = re.sub(r"^postgresql\+\w+://", "postgresql://", args.dsn)
    try:
        connection = psycopg.connect(dsn, connect_timeout=5, autocommit=True)
    except (psycopg.Error, ValueError) as exc:
        raise CommandError(f"cannot connect to PostgreSQL at {mask_url(args.dsn)}: {_clean(exc, args.dsn)}") from None
    try:
        rows = hot_reads(connection, limit=args.limit)
    except HotReadsUnavailable as exc:
        raise CommandError(f"{mask_url(args.dsn)}: {_clean(exc, args.dsn)}") from None
    finally:
        connection.close()
    print(format_hot_reads(rows))
    return 0


def _need(module: str, extra: str, command: str) -> None:
    """:func:`~pytest_migsafe.versions.need` as this command's error (one line, exit 2)."""
    from pytest_migsafe.versions import need

    try:
        need(module, extra, command)
    except ImportError as exc:
        raise CommandError(str(exc)) from None


def run_hit_rate(args: argparse.Namespace) -> int:
    """Print hits, misses and hit rate of ``--redis-url``; 1 when under the alert line.

    The figures are the server's ``INFO stats`` keyspace_hits and keyspace_misses (totals
    since its start or last ``CONFIG RESETSTAT``); the rate is printed as a percentage with
    the target and alert line. Returns 0 (also with no reads yet, or between the alert
    line and the target) or 1 (under ``--alert``). Raises ``CommandError`` when
    ``--alert`` is above ``--target``, for a bad URL, when ``INFO`` cannot be read, or
    without redis-py (naming the extra).
    """
    _need("redis", "redis", "migsafe hit-rate")
    import redis

    from pytest_migsafe.cache.stats import format_rate, server_counts

    if args.alert > args.target:
        raise CommandError(f"--alert {args.alert:g} is above --target {args.target:g}")
    url = args.redis_url
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    except (ValueError, redis.RedisError) as exc:
        raise CommandError(f"bad Redis URL {mask_url(url)}: {_clean(exc, url)}") from None
    try:
        hits, misses = server_counts(client)
    except (redis.RedisError, OSError, KeyError) as exc:
        raise CommandError(f"cannot read INFO stats from Redis at {mask_url(url)}: {_clean(exc, url)}") from None
    finally:
        client.close()
    reads = hits + misses
    rate = hits / reads if reads else None
    print(f"Redis {mask_url(url)}: hits {hits}, misses {misses}, hit rate {format_rate(rate)} "
          f"(target {format_rate(args.target)}, alert under {format_rate(args.alert)})")
    if rate is None:
        print("no keyspace reads yet")
        return 0
    if rate < args.alert:
        print(f"ALERT: hit rate {format_rate(rate)} is under the alert line {format_rate(args.alert)}")
        return 1
    if rate < args.target:
        print(f"below target: hit rate {format_rate(rate)} is under {format_rate(args.target)}")
    return 0
