"""Real PostgreSQL and Redis servers for a test session (plain Python; the fixtures that use
them live in :mod:`pytest_migsafe.plugin.queries` and :mod:`pytest_migsafe.plugin.cache`).

:func:`start_postgres` and :func:`start_redis` return a running server: a given URL, or
a private one started as a child process, listening on a unix socket (127.0.0.1 where
there are none) and stopped with the session. They raise :class:`NoPostgresAvailable` /
:class:`NoRedisAvailable` saying what was tried. :func:`mask_url` hides a URL's password
for messages.
"""

from ._users import pytest_tmp_root
from .postgres import (
    NoPostgresAvailable,
    RunningPostgres,
    create_database,
    mask_url,
    start_postgres,
)
from .redis import (
    NoRedisAvailable,
    RunningRedis,
    find_redis_server,
    start_redis,
    url_with_database,
)

__all__ = [
    "NoPostgresAvailable",
    "NoRedisAvailable",
    "RunningPostgres",
    "RunningRedis",
    "create_database",
    "find_redis_server",
    "mask_url",
    "pytest_tmp_root",
    "start_postgres",
    "start_redis",
    "url_with_database",
]
