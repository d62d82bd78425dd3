"""Capture the statements Django sends on the backends migsafe does not hook at their driver.

migsafe counts PostgreSQL on psycopg 3 at the driver (:mod:`pytest_migsafe.queries.psycopg`),
which sees Django's statements there. Django's other backends (SQLite, MySQL, Oracle,
PostgreSQL on psycopg2) are counted here, at the last step Django takes before the driver:
``django.db.backends.utils.CursorWrapper._execute`` and ``_executemany``, the executors that
``CursorWrapper.execute`` / ``executemany`` call after the connection's ``execute_wrappers``
(so a wrapper that blocks a statement blocks its count too). Every statement Django sends
through a cursor passes there: the ORM's, ``connection.cursor()``'s, transaction control
(``BEGIN`` / ``SAVEPOINT``, left out unless ``include_transaction_control``). What the
backend sends on the raw connection outside a cursor (SQLite's ``PRAGMA`` set-up of a new
connection) is not seen, nor counted by the tests' own comparisons.

Like the driver hooks: a statement is recorded when the driver call returns (one the
database rejected is not counted); ``executemany`` is one statement, its executions the
rows given (when they are a sized collection; 1 for an iterator, which is never copied);
the time is the driver call's (s). The target is ``vendor://alias/NAME`` (``using=``
filters match the alias or the database's name). The wrappers keep the executors'
signatures; with no counter active a statement costs one tuple read.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from time import perf_counter
from types import FrameType
from typing import Any

from pytest_migsafe.queries import dispatch
from pytest_migsafe.queries.callsite import site_from
from pytest_migsafe.queries.patches import Patches
from pytest_migsafe.tracebacks import hide_passed_through

#: pytest hides this module's wrapper frames in a traceback an error only passed through
#: (:mod:`pytest_migsafe.tracebacks`)
__tracebackhide__ = hide_passed_through

_PATCHED_FLAG = "__migsafe_original__"
_installed_for: Any = None  # the django.db.backends.utils module whose CursorWrapper is hooked
_patches = Patches()


def _counted_at_the_driver(db: Any) -> bool:
    """True when ``db`` (a Django ``DatabaseWrapper``) is PostgreSQL on psycopg 3 and psycopg
    is hooked: its statements are counted there, not here (each exactly once). Whether a
    backend class is psycopg 3's is worked out once."""
    on_psycopg3 = _on_psycopg3.get(type(db))
    if on_psycopg3 is None:
        on_psycopg3 = _on_psycopg3[type(db)] = _is_psycopg3_backend(db)
    if not on_psycopg3:
        return False
    return bool(_capture_psycopg().is_installed())


_on_psycopg3: dict[type, bool] = {}  # Django backend class -> PostgreSQL on psycopg 3?


@functools.cache
def _capture_psycopg() -> Any:
    """:mod:`pytest_migsafe.queries.psycopg`, imported once (an import statement run per
    statement costs the import machinery's look-up)."""
    from pytest_migsafe.queries import psycopg as capture_psycopg

    return capture_psycopg


def _is_psycopg3_backend(db: Any) -> bool:
    if getattr(db, "vendor", None) != "postgresql":
        return False
    psycopg_any = sys.modules.get("django.db.backends.postgresql.psycopg_any")
    return psycopg_any is not None and bool(getattr(psycopg_any, "is_psycopg3", False))


def target_of(db: Any) -> str:
    """``vendor://alias/NAME`` of a Django ``DatabaseWrapper`` (the test database's name once
    the test runner made it; never a password)."""
    try:
        name = db.settings_dict.get("NAME")
    except Exception:  # a wrapper in a state not foreseen: still count the statement
        name = None
    return f"{getattr(db, 'vendor', 'django')}://{getattr(db, 'alias', '?')}/{name if name else ':memory:'}"


def _record(cursor: Any, sql: Any, params: Any, seconds: float, caller: FrameType, batch_size: int) -> None:
    """Record a statement the executor of ``cursor`` ran, called from the frame ``caller``
    (its call site is found from there; nothing for a ``BEGIN`` or ``SAVEPOINT`` that no
    counter receives)."""
    text = sql if type(sql) is str else dispatch.exact_text(sql)
    entry = dispatch._shapes.get(text) or dispatch.entry_of(text)
    if entry[1] and not dispatch.control_wanted:
        return  # a BEGIN or SAVEPOINT that no counter receives: nothing to record
    site = site_from(caller)
    dispatch.record_entry(text, entry, seconds, target_of(cursor.db), batch_size, params, site)


def _wrap_execute(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _execute(self: Any, sql: Any, params: Any, *ignored_wrapper_args: Any) -> Any:
        if not dispatch._active or _counted_at_the_driver(self.db):
            return original(self, sql, params, *ignored_wrapper_args)
        t0 = perf_counter()
        result = original(self, sql, params, *ignored_wrapper_args)
        _record(self, sql, params, perf_counter() - t0, sys._getframe(1), 1)
        return result

    setattr(_execute, _PATCHED_FLAG, original)
    return _execute


def _wrap_executemany(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _executemany(self: Any, sql: Any, param_list: Any, *ignored_wrapper_args: Any) -> Any:
        if not dispatch._active or _counted_at_the_driver(self.db):
            return original(self, sql, param_list, *ignored_wrapper_args)
        rows = len(param_list) if isinstance(param_list, (list, tuple)) else 1
        t0 = perf_counter()
        result = original(self, sql, param_list, *ignored_wrapper_args)
        _record(self, sql, param_list, perf_counter() - t0, sys._getframe(1), rows)
        return result

    setattr(_executemany, _PATCHED_FLAG, original)
    return _executemany


def is_installed() -> bool:
    """True when the ``django.db.backends.utils`` imported now has its executors hooked."""
    utils = sys.modules.get("django.db.backends.utils")
    return utils is not None and _installed_for is utils


def install() -> bool:
    """Hook ``CursorWrapper``'s executors once ``django.db.backends.utils`` is imported; False
    before that, or for a Django without them. Idempotent."""
    global _installed_for
    utils = sys.modules.get("django.db.backends.utils")
    if utils is None or _installed_for is utils:
        return utils is not None
    wrapper = getattr(utils, "CursorWrapper", None)
    executors = [(name, wrap) for name, wrap in (("_execute", _wrap_execute), ("_executemany", _wrap_executemany))
                 if callable(vars(wrapper).get(name) if isinstance(wrapper, type) else None)]
    if len(executors) != 2:
        return False  # (a stub, or a Django whose executors moved: left unhooked)
    uninstall()
    for name, wrap in executors:
        original = vars(wrapper)[name]
        if not hasattr(original, _PATCHED_FLAG):
            _patches.set(wrapper, name, wrap(original), original)
    _installed_for = utils
    return True


def uninstall() -> None:
    """Restore Django's executors (benchmarks and tests; the plugin never does)."""
    global _installed_for
    _patches.undo()
    _installed_for = None
