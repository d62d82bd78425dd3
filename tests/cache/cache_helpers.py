"""Test helpers for the cache-side tests: a PostgreSQL database of a module's own.

The session's PostgreSQL is shared by every test (and every xdist worker), and some tests
compare pg_stat_statements deltas of the shared database. Tests here that run SQL do it
in a database of their own, created and dropped from the ``postgres`` maintenance
database, so that no statement of theirs lands in the shared one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@dataclass
class PrivateDatabase:
    """A throwaway database with pg_stat_statements: libpq ``dsn`` and SQLAlchemy ``url``."""

    name: str
    dsn: str
    url: str


def _url(params: dict[str, object]) -> str:
    user = quote(str(params.get("user", "")), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else (f"{user}@" if user else "")
    host = str(params.get("host", ""))
    query = []
    if host.startswith("/"):
        query.append(f"host={quote(host, safe='')}")
        host = ""
    if params.get("port"):
        if host:
            host = f"{host}:{params['port']}"
        else:
            query.append(f"port={params['port']}")
    return f"postgresql+psycopg://{auth}{host}/{params['dbname']}" + ("?" + "&".join(query) if query else "")


@contextmanager
def private_database(server_dsn: str, prefix: str) -> Iterator[PrivateDatabase]:
    """Create a database (with pg_stat_statements) next to ``server_dsn``'s; drop it after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_conninfo(server_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server_dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield PrivateDatabase(name=name, dsn=dsn, url=_url(conninfo_to_dict(dsn)))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
