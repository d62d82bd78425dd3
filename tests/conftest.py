"""The plugin's own test session: one real PostgreSQL and one real Redis for everything.

Both servers start once, before collection, and their URLs go into the environment
(``MIGSAFE_POSTGRES_URL`` / ``MIGSAFE_REDIS_URL``), so the plugin's fixtures in this
session and in every in-process ``pytester`` run reuse them instead of starting their own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# imported here, once: in-process pytester runs drop modules first imported inside them,
# and the plugin's caches hold on to these
import sqlalchemy  # noqa: F401
import sqlglot  # noqa: F401

from pytest_migsafe.queries import normalize
from pytest_migsafe.servers import RunningPostgres, start_postgres, start_redis

normalize.normalize("SELECT 1")  # loads sqlglot's dialects before any pytester run

_started: list = []
_BASE = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Start the servers unless the environment already names them.

    This session counts the statements of the in-process pytester runs it hosts, so a test
    that runs a suite of N+1 tests would look like one N+1 to it: its own threshold is set
    out of the way here (before the plugin reads it; the inner runs keep the default 10).
    """
    if config.getoption("migsafe_n_plus_one_threshold", None) is None:
        config.option.migsafe_n_plus_one_threshold = 1_000_000
    if hasattr(config, "workerinput"):
        base = Path(tempfile.mkdtemp(prefix=f"migsafe-tests-{config.workerinput['workerid']}-"))
    else:
        base = Path(tempfile.mkdtemp(prefix="migsafe-tests-"))
    config.stash[_BASE] = base
    if not hasattr(config, "workerinput") and getattr(config.option, "numprocesses", None):
        return  # pytest-xdist's controller runs no test: each worker starts servers of its own,
        # so that one worker's tables, pg_stat_statements and INFO stats are not another's
    if not os.environ.get("MIGSAFE_POSTGRES_URL"):
        server = start_postgres(base / "pg")
        _started.append(server)
        os.environ["MIGSAFE_POSTGRES_URL"] = server.url
        os.environ["MIGSAFE_TEST_POSTGRES_DSN"] = server.dsn
    if not os.environ.get("MIGSAFE_REDIS_URL"):
        redis_server = start_redis(base / "redis")
        _started.append(redis_server)
        os.environ["MIGSAFE_REDIS_URL"] = redis_server.url


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop what this session started."""
    while _started:
        _started.pop().stop()
    base = config.stash.get(_BASE, None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _loop_scope_for_pytester_runs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give in-process runs pytest-asyncio's loop-scope setting, whatever ini they write; and,
    when this suite runs under pytest-xdist, take the worker's variables away from them (a
    run inside a worker is not one of its workers: it would name its database after it)."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS when created
        monkeypatch.setenv("PYTEST_ADDOPTS", "-o asyncio_default_fixture_loop_scope=function")
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPostgres]:
    """The session's PostgreSQL (from the environment) or one started for this module."""
    server = start_postgres(tmp_path_factory.mktemp("pool-pg"), url=os.environ.get("MIGSAFE_POSTGRES_URL"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """psycopg conninfo of the session's PostgreSQL."""
    from sqlalchemy.engine import make_url

    dsn = os.environ.get("MIGSAFE_TEST_POSTGRES_DSN")
    if dsn:
        return dsn
    url = make_url(os.environ["MIGSAFE_POSTGRES_URL"]).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
