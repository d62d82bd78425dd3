"""Install the statement hooks of the drivers in use (SQLAlchemy, psycopg 3, Django's other backends)."""

from __future__ import annotations

import sys
from typing import Any

from pytest_migsafe import imports
from pytest_migsafe.queries import django as django_orm
from pytest_migsafe.queries import django_sql, orm
from pytest_migsafe.versions import import_if_installed, install_guarded

_installed_for: tuple[Any, Any, Any] = (False, False, False)
# len(sys.modules) when install(import_missing=False) last found nothing left to hook: while it
# is the same, no driver can have been imported since (-1: look next time). Drivers imported
# later are hooked by the plugin's import watcher too; this look is for those imported before it.
_modules_seen = -1


def drivers_loaded() -> bool:
    """True once SQLAlchemy, psycopg or Django's database layer is imported: before that, no
    statement can be captured."""
    modules = sys.modules
    return "sqlalchemy" in modules or "psycopg" in modules or "django.db.backends.utils" in modules


def install(import_missing: bool = True, just_imported: bool = False) -> None:
    """Install the driver hooks; with ``import_missing=False`` only for drivers already imported.

    Idempotent and cheap, so the plugin calls it before every test without importing
    SQLAlchemy or psycopg into a suite that never uses them. ``just_imported``: a driver
    module was just imported (the import watcher): look whatever ``len(sys.modules)`` says
    (a module set restored and imported again has the same length and new classes).
    """
    global _installed_for, _modules_seen
    modules = sys.modules
    if not import_missing and not just_imported and len(modules) == _modules_seen:
        return  # no module imported (or removed) since the last look: the per-test fast path
    seen = len(modules)
    if not django_orm.install() and "django.db.models" in modules:
        seen = -1  # Django's models still being imported: look again next time
    if "django.db.backends.utils" in modules:
        install_guarded("django", django_sql.install, part="statements",
                        lost="its statements on SQLite, MySQL, Oracle and psycopg2 are not counted")
    loaded = (modules.get("psycopg"), modules.get("sqlalchemy"), modules.get("sqlalchemy.orm"))
    if loaded == _installed_for and (not import_missing or None not in loaded[:2]):
        _modules_seen = seen
        return  # the same drivers as last time, already hooked
    from pytest_migsafe.queries import psycopg as capture_psycopg
    from pytest_migsafe.queries import sqlalchemy as capture_sqlalchemy

    if import_missing:  # imported here, so that the version check below sees them
        import_if_installed("psycopg", "sqlalchemy")
    # psycopg first, so SQLAlchemy's listener knows to leave psycopg engines to it (each
    # library only if imported and supported: migsafe installs none of them)
    install_guarded("psycopg", capture_psycopg.install, import_missing)
    if install_guarded("sqlalchemy", capture_sqlalchemy.install, import_missing):
        install_guarded("sqlalchemy", orm.install_engine, part="unit of work",
                        lost="the rows of one INSERT batch count as a loop of statements")
        install_guarded("sqlalchemy", orm.install, part="ORM loaders",
                        lost="its statements are counted, but lazy loads are not told apart (no ORM-aware N+1)")
    # (a driver still being imported counts as not loaded: hooked at the end of its import)
    _installed_for = (imports.ready("psycopg"), imports.ready("sqlalchemy"), imports.ready("sqlalchemy.orm"))
    _modules_seen = -1  # (installing may have imported more: look again next time)


def uninstall() -> None:
    """Remove the driver hooks (benchmarks and tests; the plugin never does)."""
    global _installed_for, _modules_seen
    from pytest_migsafe.queries import psycopg as capture_psycopg
    from pytest_migsafe.queries import sqlalchemy as capture_sqlalchemy

    capture_sqlalchemy.uninstall()
    capture_psycopg.uninstall()
    orm.uninstall()
    django_sql.uninstall()
    _installed_for = (False, False, False)
    _modules_seen = -1
