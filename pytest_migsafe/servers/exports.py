"""Environment variables an application reads its database settings from, filled from a server.

Applications often build their engine at import time from settings (``DATABASE_URL``,
pydantic-settings' ``PostgresDsn``, Django's ``DATABASES`` from ``PG*`` variables). An
export spec names, for each variable, the part of the server to put there::

    DATABASE_URL=url PGHOST=host PGPORT=port PGUSER=user PGPASSWORD=password PGDATABASE=dbname

(items separated by spaces or newlines). :func:`parse_exports` checks a spec,
:func:`export_values` computes the values for a running server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

#: Parts of a :class:`~pytest_migsafe.servers.RunningPostgres` an export can name.
POSTGRES_FIELDS = {
    "url": "SQLAlchemy URL, postgresql+psycopg:// (also valid for pydantic's PostgresDsn)",
    "libpq_url": "postgresql:// URL for psycopg, libpq and Django's URL parsers (on a socket: no host in the authority)",
    "dsn": "libpq key/value conninfo (host=... port=... user=... dbname=...)",
    "host": "host: a unix-socket directory, or 127.0.0.1 with TCP",
    "port": "port number",
    "user": "user name",
    "password": "password (empty when there is none: a unix-socket cluster needs none)",
    "dbname": "database name",
}

#: Parts of a :class:`~pytest_migsafe.servers.RunningRedis` an export can name.
REDIS_FIELDS = {
    "url": "redis-py URL: unix:///...?db=N, or redis://:password@127.0.0.1:port/N with TCP",
    "host": "TCP host (empty for a unix socket)",
    "port": "TCP port (empty for a unix socket)",
    "unix_socket": "socket file path (empty with TCP)",
    "password": "password (empty when there is none)",
    "db": "database number",
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_exports(spec: str | Iterable[str], fields: dict[str, str]) -> list[tuple[str, str]]:
    """``[(VARIABLE, field), ...]`` from ``"VAR=field VAR2=field2"`` (a string or lines of them).

    Raises ValueError naming the bad item: not ``NAME=field``, a name that is not a valid
    environment variable name, a field not in ``fields``, or a variable named twice.
    """
    items = spec.split() if isinstance(spec, str) else [word for line in spec for word in line.split()]
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in items:
        name, sep, part = item.partition("=")
        if not sep or not name or not part:
            raise ValueError(f"{item!r} is not VARIABLE=field (fields: {', '.join(fields)})")
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if part not in fields:
            raise ValueError(f"{item!r}: unknown field {part!r} (fields: {', '.join(fields)})")
        if name in seen:
            raise ValueError(f"{name} is named twice")
        seen.add(name)
        pairs.append((name, part))
    return pairs


def export_values(server: Any, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``{VARIABLE: value}`` for ``pairs`` read off ``server`` (None becomes ``""``)."""
    values = {}
    for name, part in pairs:
        value = getattr(server, part)
        values[name] = "" if value is None else str(value)
    return values


def worker_dbname(dbname: str, worker: str) -> str:
    """The PostgreSQL database a pytest-xdist worker uses on a shared server: ``<dbname>_<worker>``.

    The same name the ``migsafe_postgres`` fixture gives a worker on a given URL, so an
    application and the fixtures of one worker share one database.
    """
    return f"{dbname}_{worker}"
