"""pytest wiring of servers an application can use: started before conftest files are imported.

Many applications build their engine at import time from settings (``DATABASE_URL``
through pydantic-settings, Django settings reading ``PG*`` variables). The ini keys
``migsafe_export_postgres`` / ``migsafe_export_redis`` name the environment variables to
fill, each as ``VARIABLE=field`` (fields in :mod:`pytest_migsafe.servers.exports`)::

    [pytest]
    migsafe_export_postgres = DATABASE_URL=url PGHOST=host PGPORT=port PGUSER=user
                              PGPASSWORD=password PGDATABASE=dbname
    migsafe_export_redis = REDIS_URL=url
    migsafe_postgres_tcp = true

With any of them (or ``--migsafe-postgres-tcp`` / ``--migsafe-redis-tcp``), the server is
started in ``pytest_load_initial_conftests`` (before any conftest is imported) and
``MIGSAFE_POSTGRES_URL`` / ``MIGSAFE_REDIS_URL`` are exported too, so the
``migsafe_postgres`` and ``migsafe_redis`` fixtures use the same server. A server given by
URL (``--migsafe-postgres-url``...) is used instead of starting one. At the end of the
session the environment is put back and the servers stop (also on Ctrl-C and SIGTERM).
pytest-xdist workers inherit the controller's variables and start nothing: see
:mod:`pytest_migsafe.servers.session`. Without these settings this module does nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest

from pytest_migsafe.plugin.options import ini_type
from pytest_migsafe.plugin.stash import records_wanted, run_report
from pytest_migsafe.values import parse_bool

if TYPE_CHECKING:
    from pytest_migsafe.servers.session import SessionServers

_SERVERS = pytest.StashKey["SessionServers"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """The loopback-TCP flags and the export ini keys."""
    group = parser.getgroup("migsafe")
    group.addoption("--migsafe-postgres-tcp", dest="migsafe_postgres_tcp", action="store_true", default=None,
                    help="start PostgreSQL with a TCP listener on 127.0.0.1 (a free port, a random "
                         "password) instead of a private unix socket, before conftest files are "
                         "imported (also ini migsafe_postgres_tcp).")
    group.addoption("--migsafe-redis-tcp", dest="migsafe_redis_tcp", action="store_true", default=None,
                    help="start Redis on 127.0.0.1 (a free port, a random password) instead of a "
                         "private unix socket, before conftest files are imported (also ini "
                         "migsafe_redis_tcp).")
    parser.addini("migsafe_postgres_tcp", "true: PostgreSQL listens on 127.0.0.1 (see --migsafe-postgres-tcp).",
                  default="false", type=ini_type(bool))
    parser.addini("migsafe_redis_tcp", "true: Redis listens on 127.0.0.1 (see --migsafe-redis-tcp).",
                  default="false", type=ini_type(bool))
    parser.addini("migsafe_export_postgres",
                  "environment variables to set from the session's PostgreSQL before conftest files "
                  "are imported, as VARIABLE=field (url, libpq_url, dsn, host, port, user, password, dbname).",
                  type="linelist", default=[])
    parser.addini("migsafe_export_redis",
                  "environment variables to set from the session's Redis before conftest files are "
                  "imported, as VARIABLE=field (url, host, port, unix_socket, password, db).",
                  type="linelist", default=[])


def _early(config: pytest.Config, option: str | None, env: str | None, ini: str | None) -> Any:
    """A setting before the command line is fully parsed: option > environment > ini.

    The same precedence as :func:`pytest_migsafe.plugin.options.get_setting`, reading
    ``known_args_namespace`` (``config.option`` is not filled yet at this stage).
    """
    if option is not None:
        value = getattr(config.known_args_namespace, option, None)
        if value not in (None, ""):
            return value
    if env is not None and os.environ.get(env):
        return os.environ[env]
    if ini is not None:
        try:
            value = config.getini(ini)
        except ValueError:  # a key of a module that is not loaded
            return None
        if value not in (None, "", []):
            return value
    return None


def _flag(config: pytest.Config, name: str) -> bool:
    value = _early(config, name, None, name)
    if isinstance(value, str):
        try:
            return parse_bool(value)
        except ValueError as exc:
            raise pytest.UsageError(f"migsafe: ini option {name} = {value!r}: {exc}") from None
    return bool(value)


def _exports(config: pytest.Config, ini: str, server: str) -> list[tuple[str, str]]:
    """The ``VARIABLE=field`` lines of the ini key ``ini``, checked against the fields of
    ``server`` (``"postgres"`` or ``"redis"``); the servers package is imported only when
    there are lines."""
    lines = config.getini(ini)
    if not lines:
        return []  # the common case: nothing to export, nothing imported
    from pytest_migsafe.servers import exports

    try:
        fields = exports.POSTGRES_FIELDS if server == "postgres" else exports.REDIS_FIELDS
        return exports.parse_exports(lines, fields)
    except ValueError as exc:
        raise pytest.UsageError(f"migsafe: ini option {ini}: {exc}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Start (or reuse) the servers the settings ask for and export their variables, before any conftest."""
    config = early_config
    namespace = config.known_args_namespace
    if getattr(namespace, "help", False) or getattr(namespace, "version", False):
        return
    pg_exports = _exports(config, "migsafe_export_postgres", "postgres")
    redis_exports = _exports(config, "migsafe_export_redis", "redis")
    pg_tcp, redis_tcp = _flag(config, "migsafe_postgres_tcp"), _flag(config, "migsafe_redis_tcp")
    if not (pg_exports or redis_exports or pg_tcp or redis_tcp):
        return  # nothing asked for: nothing started, nothing imported

    from pytest_migsafe.servers import NoPostgresAvailable, NoRedisAvailable
    from pytest_migsafe.servers.session import SessionServers

    worker = os.environ.get("PYTEST_XDIST_WORKER")  # set before a worker's config is made
    servers = SessionServers()
    config.stash[_SERVERS] = servers
    config.add_cleanup(servers.close)
    try:
        if pg_exports or pg_tcp:
            servers.open_postgres(
                url=_early(config, "migsafe_postgres_url", "MIGSAFE_POSTGRES_URL", "migsafe_postgres_url"),
                pg_ctl=_early(config, "migsafe_pg_ctl", "MIGSAFE_PG_CTL", "migsafe_pg_ctl"),
                tcp=pg_tcp, worker=worker, exports=pg_exports)
        if redis_exports or redis_tcp:
            servers.open_redis(
                url=_early(config, "migsafe_redis_url", "MIGSAFE_REDIS_URL", "migsafe_redis_url"),
                redis_server=_early(config, "migsafe_redis_server", "MIGSAFE_REDIS_SERVER", "migsafe_redis_server"),
                tcp=redis_tcp, worker=worker, exports=redis_exports)
    except (NoPostgresAvailable, NoRedisAvailable) as exc:
        servers.close()
        raise pytest.UsageError(f"migsafe: cannot provide the server for the exported settings: {exc}") from None


def session_servers(config: pytest.Config) -> SessionServers | None:
    """The session's :class:`~pytest_migsafe.servers.session.SessionServers`, or None when no setting asked for one.

    ``.postgres.describe()`` / ``.redis.describe()`` name each server (version, origin,
    where it listens); ``.exported`` lists the variables set.
    """
    return config.stash.get(_SERVERS, None)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """Name the servers started for exported settings (never their passwords)."""
    servers = session_servers(config)
    if servers is None:
        return None
    return [f"migsafe: {line}" for line in servers.describe()]


def pytest_sessionstart(session: pytest.Session) -> None:
    """With the report on, its notes name the servers started for exported settings, as they
    name the one ``migsafe_postgres`` gives (the header alone did, which ``-q`` hides and the
    JSON never had)."""
    servers = session_servers(session.config)
    if servers is None or not records_wanted() or hasattr(session.config, "workerinput"):
        return  # (a pytest-xdist worker uses the controller's servers, which its notes name)
    report = run_report(session.config)
    if servers.postgres is not None:
        report.note(f"PostgreSQL: {servers.postgres.describe()}")
    if servers.redis is not None:
        report.note(f"Redis: {servers.redis.describe()}")
