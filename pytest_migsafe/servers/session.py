"""Servers started before an application is imported, with their settings in its environment.

:class:`SessionServers` starts (or reuses) PostgreSQL and Redis, sets environment
variables from them (``DATABASE_URL``, ``PGHOST``..., see :mod:`.exports`), and on
:meth:`SessionServers.close` puts the environment back and stops what it started. The
plugin calls it before conftest files are imported; it is plain code, usable without pytest.

Under pytest-xdist the controller starts the servers and exports ``MIGSAFE_POSTGRES_URL``
/ ``MIGSAFE_REDIS_URL``, which the workers inherit: a worker then starts nothing, and
points the application at its own database on the shared server (PostgreSQL database
``<dbname>_<worker>``, Redis database ``1 + N % 15``), the ones the plugin's fixtures use.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ._process import session_temp_dir
from .exports import export_values, worker_dbname
from .postgres import RunningPostgres, create_database, start_postgres
from .redis import RunningRedis, start_redis, url_with_database, worker_database

#: The variables the plugin's fixtures read their server from (set when we start one).
POSTGRES_URL_VARIABLE = "MIGSAFE_POSTGRES_URL"
REDIS_URL_VARIABLE = "MIGSAFE_REDIS_URL"


class SessionServers:
    """The servers of one session and the environment variables set from them.

    Attributes: ``postgres`` / ``redis`` (the server as the application sees it - on an
    xdist worker, its own database; None if not asked for), ``started`` (the servers this
    object started and will stop), ``exported`` (names of the variables it set).
    """

    def __init__(self, base_dir: Path | None = None) -> None:
        """``base_dir`` holds the servers' working files (default: a private temp dir, removed at close)."""
        self._own_base = base_dir is None
        self.base_dir = session_temp_dir("session") if base_dir is None else Path(base_dir)
        self.postgres: RunningPostgres | None = None
        self.redis: RunningRedis | None = None
        self.started: list[RunningPostgres | RunningRedis] = []
        self.exported: list[str] = []
        self._saved: dict[str, str | None] = {}

    def open_postgres(self, *, url: str | None = None, pg_ctl: str | None = None, tcp: bool = False,
                      worker: str | None = None, exports: Iterable[tuple[str, str]] = ()) -> RunningPostgres:
        """Use ``url`` or start a server (then export ``MIGSAFE_POSTGRES_URL``), and export ``exports``.

        On a worker (``worker`` = ``"gw0"``...) with a URL, the exported values point at
        database ``<dbname>_<worker>``, created if missing. Raises NoPostgresAvailable.
        """
        server = start_postgres(self.base_dir / "postgres", url=url, pg_ctl=pg_ctl, tcp=tcp,
                                fallback=pg_ctl is None)  # a named pg_ctl: that one or an error
        if not url:
            self.started.append(server)
            self.setenv({POSTGRES_URL_VARIABLE: server.url})
        elif worker:
            server = create_database(server, worker_dbname(server.dbname, worker))
        self.postgres = server
        self.setenv(export_values(server, exports))
        return server

    def open_redis(self, *, url: str | None = None, redis_server: str | None = None, tcp: bool = False,
                   worker: str | None = None, exports: Iterable[tuple[str, str]] = ()) -> RunningRedis:
        """Use ``url`` or start a server (then export ``MIGSAFE_REDIS_URL``), and export ``exports``.

        On a worker with a URL, the exported values select database ``1 + N % 15``.
        Raises NoRedisAvailable.
        """
        server = start_redis(self.base_dir / "redis", url=url, redis_server=redis_server, tcp=tcp)
        if not url:
            self.started.append(server)
            self.setenv({REDIS_URL_VARIABLE: server.url})
        elif worker:
            server = dataclasses.replace(server, url=url_with_database(server.url, worker_database(worker)))
        self.redis = server
        self.setenv(export_values(server, exports))
        return server

    def setenv(self, values: dict[str, str]) -> None:
        """Set environment variables, remembering the values they had for :meth:`close`."""
        for name, value in values.items():
            if name not in self._saved:
                self._saved[name] = os.environ.get(name)
                self.exported.append(name)
            os.environ[name] = value

    def close(self) -> None:
        """Put the environment back, stop the servers this object started; idempotent."""
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        while self.started:
            self.started.pop().stop()
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def describe(self) -> list[str]:
        """One line per server: what it is and the variables exported from it (names, never values)."""
        lines = []
        for server in (self.postgres, self.redis):
            if server is not None:
                lines.append(server.describe())
        if self.exported:
            lines.append("exported: " + ", ".join(self.exported))
        return lines
