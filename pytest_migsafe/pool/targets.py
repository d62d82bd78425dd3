"""What a pool observation can watch: engines and pools of SQLAlchemy and psycopg_pool,
their names and sizes, and the hooks that make them report events."""

from __future__ import annotations

import sys
from typing import Any

from pytest_migsafe.pool import events
from pytest_migsafe.pool import psycopg as pool_psycopg
from pytest_migsafe.pool import sqlalchemy as pool_sqlalchemy

ACCEPTS = ("a SQLAlchemy Engine, AsyncEngine or Pool, or a psycopg_pool ConnectionPool "
           "or AsyncConnectionPool")


# -- what the observer watches -------------------------------------------------------
def classify(target: Any) -> tuple[str, Any]:
    """``("engine", sync_engine)``, ``("pool", sqlalchemy_pool)`` or ``("psycopg", pool)``.

    Raises TypeError naming what is accepted for anything else.
    """
    kind = pool_sqlalchemy.classify(target) or pool_psycopg.classify(target)
    if kind is None:
        raise TypeError(f"pool_stats() accepts {ACCEPTS}; got {type(target).__name__}")
    return kind


def describe_pool(pool: Any) -> str:
    """A readable pool name: the engine URL (password masked) and pool class, or the psycopg pool name."""
    if pool_psycopg.is_pool(pool):
        return pool_psycopg.name_of(pool)
    return pool_sqlalchemy.name_of(pool)


def configured_size(pool: Any) -> int | None:
    """The configured size: QueuePool ``pool_size``, NullPool 0, psycopg ``max_size``; else None."""
    if pool_psycopg.is_pool(pool):
        return int(pool.max_size)
    return pool_sqlalchemy.size_of(pool)


def pool_facts(pool: Any) -> tuple[str, int | None, str | None]:
    """``(describe_pool(pool), configured_size(pool), server_kind(pool))``, telling the pool's
    library once (what an observation reads of every pool it saw)."""
    if pool_psycopg.is_pool(pool):
        return pool_psycopg.name_of(pool), int(pool.max_size), server_kind(pool)
    return pool_sqlalchemy.name_of(pool), pool_sqlalchemy.size_of(pool), server_kind(pool)


def server_kind(pool: Any) -> str | None:
    """Where ``pool``'s server is (:mod:`pytest_migsafe.pool.locality`: ``"unix socket"``,
    ``"loopback"``, ``"in-process"``, ``"network"``), None until it opened a connection."""
    try:
        return events.servers.get(pool)
    except TypeError:  # a pool that cannot be weakly referenced
        return None


def install(import_missing: bool = True, just_imported: bool = False) -> None:
    """Install the pool hooks; with ``import_missing=False`` only for drivers already imported.

    Idempotent and cheap once both drivers are hooked. ``just_imported``: as for
    :func:`pytest_migsafe.queries.drivers.install`.
    """
    global _installed_for, _modules_seen
    modules = sys.modules
    if not import_missing and not just_imported and len(modules) == _modules_seen:
        return  # no module imported (or removed) since the last look: the per-test fast path
    seen = len(modules)
    loaded = (modules.get("sqlalchemy"), modules.get("psycopg_pool"), modules.get("sqlalchemy.orm"))
    if loaded == _installed_for and (not import_missing or None not in loaded[:2]):
        _modules_seen = seen
        return  # the same libraries as last time, already hooked
    pool_sqlalchemy.install(import_missing)
    pool_psycopg.install(import_missing)
    _installed_for = (modules.get("sqlalchemy"), modules.get("psycopg_pool"), modules.get("sqlalchemy.orm"))
    _modules_seen = -1  # (installing may have imported more: look again next time)


_installed_for: tuple[Any, Any, Any] = (False, False, False)
# len(sys.modules) when install(import_missing=False) last found nothing left to hook (see
# pytest_migsafe.queries.drivers: the same look, for the pool libraries)
_modules_seen = -1


def drivers_loaded() -> bool:
    """True once SQLAlchemy or psycopg_pool is imported: before that, no pool can exist."""
    modules = sys.modules
    return "sqlalchemy" in modules or "psycopg_pool" in modules


