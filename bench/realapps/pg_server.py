"""Start the plugin's own PostgreSQL for the real-application runs and keep it up until SIGTERM/Ctrl-C.

Usage: ``python bench/realapps/pg_server.py WORKDIR DBNAME [DBNAME...]``

Starts a cluster with :func:`pytest_migsafe.servers.start_postgres` (``tcp=True``: 127.0.0.1
only, a free port, a random SCRAM password; pg_stat_statements preloaded), creates each
DBNAME on it (with pg_stat_statements), and writes ``WORKDIR/pg.env`` (mode 0600) with
``POSTGRES_SERVER``, ``POSTGRES_PORT``, ``POSTGRES_USER``, ``POSTGRES_PASSWORD``,
``POSTGRES_DB`` (the first DBNAME) and ``PSS_DSN`` (a libpq conninfo to the ``migsafe``
database, where the pg_stat_statements view is read by ``pss_conftest.py``). The
password is never printed. Prints one line describing the server, then waits.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from pytest_migsafe.servers import create_database, start_postgres


def main(argv: list[str]) -> int:
    """Run the server; returns 0 after SIGTERM/SIGINT, 2 on a usage error."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[0]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    server = start_postgres(work, tcp=True)
    for name in argv[1:]:
        create_database(server, name)
    env = {
        "POSTGRES_SERVER": server.host,
        "POSTGRES_PORT": str(server.port),
        "POSTGRES_USER": server.user,
        "POSTGRES_PASSWORD": server.password or "",
        "POSTGRES_DB": argv[1],
        "PSS_DSN": server.dsn,
    }
    path = work / "pg.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    print(server.describe(), f"- environment in {path}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        if not server.alive():
            print("postgres exited", file=sys.stderr)
            return 1
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
