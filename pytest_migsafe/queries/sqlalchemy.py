"""Capture statements sent through any SQLAlchemy Engine (AsyncEngine included).

SQLAlchemy hands every statement it sends to the driver to its dialect:
``Dialect.do_execute(cursor, statement, parameters, context)``, ``do_execute_no_params``
and ``do_executemany``. Those three methods are wrapped on the dialect classes (every
dialect at once, any driver): a statement is recorded when the driver's call returns,
with the text exactly as sent (after any ``before_cursor_execute`` listener of the user's
rewrote it) and the time the driver took. No engine event is listened to: an Engine
listener, even one that does nothing, makes SQLAlchemy dispatch its events on every
statement of every engine, which costs more than the capture itself.

Dialect classes defined after :func:`install` (a third-party dialect imported later) are
wrapped when they are defined (``DefaultDialect.__init_subclass__``), before any statement;
``__init__`` is left alone, since SQLAlchemy reads the keyword arguments a dialect accepts
from it. An override that calls ``super()`` is recorded once, by its own wrapper.

Engines whose driver is psycopg 3 are skipped here once the psycopg hooks are installed,
so their statements are counted once, by :mod:`pytest_migsafe.queries.psycopg`.
Statements SQLAlchemy sends on its own through the dialect (its checks at first connect)
reach the server and are counted like any other.
"""

from __future__ import annotations

import functools
import sys
from time import perf_counter
from typing import Any

from pytest_migsafe.queries import dispatch as capture
from pytest_migsafe.queries import psycopg as capture_psycopg
from pytest_migsafe.queries.callsite import call_site_of_caller, site_from
from pytest_migsafe.queries.library_frames import relabelled
from pytest_migsafe.tracebacks import hide_passed_through

#: pytest hides this module's wrapper frames in a traceback an error only passed through
#: (:mod:`pytest_migsafe.tracebacks`)
__tracebackhide__ = hide_passed_through

_WRAPS = "_migsafe_wraps"  # on a wrapper: the function it wraps
_METHODS = ("do_execute", "do_execute_no_params", "do_executemany")
_state: dict[str, Any] = {}  # "base": the DefaultDialect class hooked last
# id(cursor) -> depth while an override's wrapper runs: its super() call is the same statement
_inside: dict[int, int] = {}


def target_of(engine: Any) -> str:
    """``backend://host:port/database`` of an engine, without user or password."""
    try:
        return engine._migsafe_target  # type: ignore[no-any-return]
    except AttributeError:
        pass
    url = engine.url
    host = url.host or url.query.get("host") or ""
    port = f":{url.port}" if url.port else ""
    target = f"{url.get_backend_name()}://{host}{port}/{url.database or ':memory:'}"
    engine._migsafe_target = target
    return target


def _target(dialect: Any, context: Any) -> str:
    """The target of the engine a statement went through (cached on its dialect: one per engine)."""
    try:
        return dialect._migsafe_target  # type: ignore[no-any-return]
    except AttributeError:
        pass
    try:
        target = target_of(context.root_connection.engine)
    except AttributeError:  # no execution context: the dialect's own call
        return f"{getattr(dialect, 'name', '?')}://?"
    dialect._migsafe_target = target
    return target


def _skipped(dialect: Any) -> bool:
    """True for psycopg 3 dialects while the psycopg hooks count their statements.

    (Nothing is bound on the dialect instance to skip the wrapper: a method there would hide
    a later patch of the class, ``mock.patch.object(PGDialect_psycopg, "do_execute", ...)``,
    and could replace one the user put on the instance.)"""
    skip = getattr(dialect, "driver", None) in ("psycopg", "psycopg_async") and capture_psycopg.is_installed()
    dialect._migsafe_skip = skip
    return skip


def _passes_through(dialect: Any, cursor: Any) -> bool:
    """True when a call is not recorded here: no counter, inside an override's own record, or psycopg's."""
    if not capture._active or (_inside and id(cursor) in _inside):
        return True
    try:
        return dialect._migsafe_skip  # type: ignore[no-any-return]
    except AttributeError:
        return _skipped(dialect)


def _wrap(name: str, original: Any, override: bool) -> Any:
    """The wrapper of one of the dialect's three methods, with the method's exact signature."""
    shapes = capture._shapes  # the shape cache (never rebound: emptied in place)
    record_entry = capture.record_entry
    if name == "do_execute":  # the hot path, inline: every statement with parameters comes here
        def do_execute(self: Any, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> Any:
            if not capture._active or (_inside and id(cursor) in _inside):
                return original(self, cursor, statement, parameters, context)
            try:
                skip = self._migsafe_skip
            except AttributeError:
                skip = _skipped(self)
            if skip:
                return original(self, cursor, statement, parameters, context)
            if override:
                return _guarded(original, self, cursor, statement, parameters, context, 1)
            entry = shapes.get(statement) if type(statement) is str else None
            if entry is not None and entry[1] and not capture.control_wanted:
                # a known BEGIN, SAVEPOINT or COMMIT that no counter receives: nothing to time or record
                return original(self, cursor, statement, parameters, context)
            t0 = perf_counter()
            result = original(self, cursor, statement, parameters, context)
            seconds = perf_counter() - t0
            try:
                target = self._migsafe_target
            except AttributeError:
                target = _target(self, context)
            # frame 1: SQLAlchemy's _exec_single_context (or the like), which called the dialect
            if entry is None:  # a new text, or not a str: record_statement works its entry out
                capture.record_statement(statement, seconds, target, 1, parameters, site_from(sys._getframe(1)))
            else:  # (record_statement's work for a known text: one Python call less a statement)
                record_entry(statement, entry, seconds, target, 1, parameters, site_from(sys._getframe(1)))
            return result
        wrapper: Any = do_execute
    elif name == "do_execute_no_params":  # sent only with the no_parameters execution option
        def do_execute_no_params(self: Any, cursor: Any, statement: Any, context: Any = None) -> Any:
            if _passes_through(self, cursor):
                return original(self, cursor, statement, context)
            return _guarded(lambda s, c, st, p, ctx: original(s, c, st, ctx), self, cursor, statement, None,
                            context, 1)
        wrapper = do_execute_no_params
    else:
        def do_executemany(self: Any, cursor: Any, statement: Any, parameters: Any, context: Any = None) -> Any:
            if _passes_through(self, cursor):
                return original(self, cursor, statement, parameters, context)
            batch = len(parameters) if hasattr(parameters, "__len__") else 1
            return _guarded(original, self, cursor, statement, parameters, context, batch)
        wrapper = do_executemany
    functools.update_wrapper(wrapper, original)
    setattr(wrapper, _WRAPS, original)
    return wrapper


def _guarded(original: Any, dialect: Any, cursor: Any, statement: Any, parameters: Any, context: Any,
             batch: int) -> Any:
    """Run ``original`` with the cursor marked, so that a ``super()`` call inside is not a second record."""
    key = id(cursor)
    _inside[key] = _inside.get(key, 0) + 1
    t0 = perf_counter()
    try:
        result = original(dialect, cursor, statement, parameters, context)
    finally:
        seconds = perf_counter() - t0
        depth = _inside.pop(key) - 1
        if depth:
            _inside[key] = depth
    try:
        target = dialect._migsafe_target
    except AttributeError:
        target = _target(dialect, context)
    capture.record_statement(statement, seconds, target, batch, parameters, call_site_of_caller(2))
    return result


def _hook_class(cls: type, base: type) -> None:
    """Wrap the methods ``cls`` defines itself (idempotent); ``base``: SQLAlchemy's DefaultDialect."""
    for name in _METHODS:
        original = cls.__dict__.get(name)
        if original is None or hasattr(original, _WRAPS) or not callable(original):
            continue
        # (a frame SQLAlchemy's warnings step over, as its own: see library_frames)
        wrapper = relabelled(_wrap(name, original, override=cls is not base),
                             getattr(original, "__module__", None) or "sqlalchemy.engine", _guarded=_guarded)
        setattr(cls, name, wrapper)


def _tree(cls: type) -> list[type]:
    """``cls`` and every subclass of it defined so far."""
    seen: list[type] = []
    todo = [cls]
    while todo:
        one = todo.pop()
        if one not in seen:
            seen.append(one)
            todo.extend(one.__subclasses__())
    return seen


def _hook_subclasses(base: type) -> Any:
    """``base.__init_subclass__`` that wraps the methods of each dialect class defined after
    install(). (Not ``__init__``: SQLAlchemy reads a dialect's accepted keyword arguments from
    its ``__init__``'s code, so a wrapper there would make ``create_engine(url, isolation_level=...)``
    a TypeError.)"""
    inherited = base.__dict__.get("__init_subclass__")

    def __init_subclass__(cls: type, **kwargs: Any) -> None:
        if inherited is not None:
            inherited.__func__(cls, **kwargs)
        else:
            super(base, cls).__init_subclass__(**kwargs)  # type: ignore[arg-type, misc]
        _hook_class(cls, base)

    setattr(__init_subclass__, _WRAPS, inherited)
    return classmethod(__init_subclass__)


def install(import_missing: bool = True) -> bool:
    """Wrap every SQLAlchemy dialect's execute methods; False when SQLAlchemy is not (yet) importable."""
    if "sqlalchemy" not in sys.modules and not import_missing:
        return False
    try:
        from sqlalchemy.engine.default import DefaultDialect
    except ImportError:
        return False
    # the flag lives on the class: a re-imported SQLAlchemy (pytester) is hooked anew
    if _state.get("base") is DefaultDialect and DefaultDialect.__dict__.get("_migsafe_hooked_tree"):
        return True
    _state["base"] = DefaultDialect
    for one in _tree(DefaultDialect):
        _hook_class(one, DefaultDialect)
    current = DefaultDialect.__dict__.get("__init_subclass__")
    if not hasattr(getattr(current, "__func__", None), _WRAPS):
        DefaultDialect.__init_subclass__ = _hook_subclasses(DefaultDialect)  # type: ignore[assignment]
    DefaultDialect._migsafe_hooked_tree = True  # type: ignore[attr-defined]
    return True


def uninstall() -> None:
    """Restore the dialects' methods (for benchmarks and tests)."""
    base = _state.get("base")
    if base is None:
        return
    for one in _tree(base):
        for name in _METHODS:
            current = one.__dict__.get(name)
            original = getattr(current, _WRAPS, None)
            if original is not None:
                setattr(one, name, original)
        hook: Any = one.__dict__.get("__init_subclass__")
        if hasattr(getattr(hook, "__func__", None), _WRAPS):
            inherited = getattr(hook.__func__, _WRAPS)
            if inherited is None:
                delattr(one, "__init_subclass__")
            else:
                one.__init_subclass__ = inherited  # type: ignore[method-assign]
        for flag in ("_migsafe_hooked_tree",):
            if flag in one.__dict__:
                delattr(one, flag)
    _state.clear()
