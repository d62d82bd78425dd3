"""Where a pool's database server is: on this machine (unix socket, loopback, in-process)
or across a network.

Hold times and checkout waits measured against a local server are far below what the
same code sees in production (no network round trip, an idle server), so sizing from them
says so (:mod:`pytest_migsafe.pool.sizing`). The kind is read once per pool, from its
first new connection: libpq's ``info.host`` for psycopg 3 and psycopg2 connections (a
directory for a unix socket), asyncpg's address, ``"in-process"`` for SQLite.
"""

from __future__ import annotations

import ipaddress
from typing import Any

UNIX_SOCKET = "unix socket"
LOOPBACK = "loopback"
IN_PROCESS = "in-process"
NETWORK = "network"
LOCAL_KINDS = (UNIX_SOCKET, LOOPBACK, IN_PROCESS)


def kind_of_host(host: str | None) -> str | None:
    """``"unix socket"`` for a socket directory (``/...``, ``@...``) or an empty host (libpq's
    default socket), ``"loopback"`` for ``localhost`` and 127.0.0.0/8 or ::1, ``"network"``
    for any other host; None for None (unknown)."""
    if host is None:
        return None
    host = host.strip()
    if not host or host.startswith(("/", "@")):
        return UNIX_SOCKET
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return LOOPBACK
    try:
        return LOOPBACK if ipaddress.ip_address(host.strip("[]")).is_loopback else NETWORK
    except ValueError:
        return NETWORK


def kind_of_connection(connection: Any) -> str | None:
    """The server kind of a DBAPI (or driver) connection; None when it cannot be told."""
    module = type(connection).__module__
    if module.startswith(("sqlite3", "pysqlite", "aiosqlite")) or "sqlite" in module:
        return IN_PROCESS
    driver = getattr(connection, "driver_connection", None)  # SQLAlchemy's adapted async connections
    if driver is not None and driver is not connection:
        return kind_of_connection(driver)
    info = getattr(connection, "info", None)
    host = getattr(info, "host", None)  # psycopg 3, psycopg2
    if isinstance(host, str):
        return kind_of_host(host)
    address = getattr(connection, "_addr", None)  # asyncpg: (host, port) or a socket path
    if isinstance(address, str):
        return UNIX_SOCKET
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        return kind_of_host(address[0])
    return None
