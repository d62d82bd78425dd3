"""SQLAlchemy ORM loader events: lazy loads and deferred-column loads, per parent row.

Listeners on the ORM ``Session`` class (``do_orm_execute``) and on ``Mapper`` (``load``) tell an N+1 apart from other
statements the way the ORM itself knows it:

- a relationship lazy load (``ORMExecuteState.is_relationship_load`` with
  ``lazy_loaded_from``, the parent row's state) or a deferred/expired column load
  (``is_column_load``) is reported to every active counter with its relationship
  (``Order.customer``), its parent and the query that loaded the parent (``Mapper.load``
  events carry the query's context); the statement it sends is tagged, so that the
  statement-shape rule does not count it a second time;
- statements sent inside one ``Session.flush()`` (the ORM's unit of work) are told apart by
  the flush's frame on the stack (:func:`~pytest_migsafe.queries.callsite.add_unit_of_work`), so that the INSERTs of many rows
  in one flush are not the user's loop.

Nothing here runs while no counter is active, beyond one tuple read per event.
"""

from __future__ import annotations

import contextvars
import sys
from typing import Any

from pytest_migsafe.queries import callsite, dispatch
from pytest_migsafe.queries.callsite import add_unit_of_work, call_site, origin_of

# the ORM load a statement is sent for: (kind, "Class.attribute"), or None
orm_load: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("migsafe_orm_load", default=None)
# the ORM's number of each query that loaded rows (InstanceState.runid) -> where it ran; cleared by forget()
_query_sites: dict[int, str] = {}
_last_query = [0]
_installed_for: Any = None


def forget() -> None:
    """Drop what was learnt about loaded rows (called when the last counter stops)."""
    _query_sites.clear()
    _last_query[0] = 0


# -- listeners ----------------------------------------------------------------------
def _on_load(target: Any, context: Any) -> None:
    """A row was loaded: note where its query ran, once per query (rows of one query come together)."""
    if not dispatch._active:
        return
    runid = getattr(context, "runid", None)
    if runid is not None and runid != _last_query[0]:
        _last_query[0] = runid
        # the rows arrive right after their statement ran: its call site is where they were
        # loaded (the last one this thread recorded), with no second walk of the stack
        _query_sites[runid] = callsite.last_site() or call_site(sys._getframe(1))


def _attribute_of(execute_state: Any) -> str | None:
    """``Class.attribute`` of a relationship load, from the loader path's last property."""
    path = execute_state.loader_strategy_path
    try:
        prop = path[-1]
        parent = prop.parent.class_.__name__
        return f"{parent}.{prop.key}"
    except (AttributeError, IndexError, TypeError, KeyError):
        return None


def _columns_of(execute_state: Any, parent_state: Any) -> str | None:
    """``Class.column[, column]`` of a deferred/expired column load."""
    try:
        cls = parent_state.class_.__name__
    except AttributeError:
        return None
    # SQLAlchemy 2.x keeps the columns to load in the statement's compile options (None: every expired one)
    options = getattr(execute_state.statement, "_compile_options", None)
    keys = getattr(options, "_only_load_props", None)
    if keys:
        return f"{cls}." + ", ".join(sorted(str(k) for k in keys))
    return f"{cls}.<expired columns>"


def _on_orm_execute(execute_state: Any) -> Any:
    counters = dispatch._active
    if not counters:
        return None
    # the cheap way to the loader's options: a plain query has none of its own
    options = execute_state.execution_options.get("_sa_orm_load_options")
    if options is None:
        return None
    load: tuple[str, str] | None = None
    parent = getattr(options, "_lazy_loaded_from", None)
    if parent is not None:  # a lazy load (selectin/subquery loads have no single parent: the fix itself)
        attribute = _attribute_of(execute_state)
        if attribute is not None:
            load = ("lazy_load", attribute)
    else:
        parent = getattr(options, "_refresh_state", None)
        if parent is not None and execute_state.is_column_load:
            attribute = _columns_of(execute_state, parent)
            if attribute is not None:
                load = ("deferred_column", attribute)
    if load is None:
        return None
    origin = origin_of(sys._getframe(1))
    runid = getattr(parent, "runid", None)
    loaded = (runid, _query_sites.get(runid)) if runid is not None else None
    for counter in counters:
        record = getattr(counter, "_orm_load", None)
        if record is not None:
            record(load, id(parent), loaded, origin, _direction(execute_state))
    token = orm_load.set(load)
    try:
        return execute_state.invoke_statement()
    finally:
        orm_load.reset(token)


def _direction(execute_state: Any) -> str | None:
    """The relationship's direction name (``MANYTOONE``, ``ONETOMANY``, ``MANYTOMANY``), if known."""
    try:
        return str(execute_state.loader_strategy_path[-1].direction.name)
    except (AttributeError, IndexError, TypeError, KeyError):
        return None


def install() -> bool:
    """Listen on the ORM once ``sqlalchemy.orm`` is imported; False before that. Idempotent."""
    global _installed_for
    orm = sys.modules.get("sqlalchemy.orm")
    if orm is None:
        return False
    if _installed_for is orm:
        return True
    from sqlalchemy import event

    event.listen(orm.Session, "do_orm_execute", _on_orm_execute)
    flush = getattr(orm.Session, "_flush", None)
    if flush is not None:
        add_unit_of_work(flush.__code__)
    event.listen(orm.Mapper, "load", _on_load)
    _installed_for = orm
    return True
