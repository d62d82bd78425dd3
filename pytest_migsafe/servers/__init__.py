"""Real PostgreSQL and Redis servers for a test session (plain Python; fixtures live in plugin.py)."""

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
