"""Install the statement hooks of the drivers in use (SQLAlchemy and psycopg 3)."""

from __future__ import annotations

import sys
from typing import Any

from pytest_migsafe.queries import django as django_orm
from pytest_migsafe.queries import orm

_installed_for: tuple[Any, Any, Any] = (False, False, False)


def drivers_loaded() -> bool:
    """True once SQLAlchemy or psycopg is imported: before that, no statement can be captured."""
    modules = sys.modules
    return "sqlalchemy" in modules or "psycopg" in modules


def install(import_missing: bool = True) -> None:
    """Install the driver hooks; with ``import_missing=False`` only for drivers already imported.

    Idempotent and cheap, so the plugin calls it before every test without importing
    SQLAlchemy or psycopg into a suite that never uses them.
    """
    global _installed_for
    django_orm.install()  # Django's ORM (related objects, deferred fields), once django.db.models is imported
    modules = sys.modules
    loaded = (modules.get("psycopg"), modules.get("sqlalchemy"), modules.get("sqlalchemy.orm"))
    if loaded == _installed_for and (not import_missing or None not in loaded[:2]):
        return  # the same drivers as last time, already hooked: the per-test fast path
    from pytest_migsafe.queries import psycopg as capture_psycopg
    from pytest_migsafe.queries import sqlalchemy as capture_sqlalchemy

    # psycopg first, so SQLAlchemy's listener knows to leave psycopg engines to it
    capture_psycopg.install(import_missing)
    capture_sqlalchemy.install(import_missing)
    orm.install()  # the ORM's lazy and column loaders, once sqlalchemy.orm is imported
    _installed_for = (modules.get("psycopg"), modules.get("sqlalchemy"), modules.get("sqlalchemy.orm"))


def uninstall() -> None:
    """Remove the driver hooks (benchmarks and tests; the plugin never does)."""
    global _installed_for
    from pytest_migsafe.queries import psycopg as capture_psycopg
    from pytest_migsafe.queries import sqlalchemy as capture_sqlalchemy

    capture_sqlalchemy.uninstall()
    capture_psycopg.uninstall()
    _installed_for = (False, False, False)
