"""SQLAlchemy ORM loads, per parent row: lazy loads and deferred-column loads.

The ORM's own loaders are wrapped, so that nothing runs for a statement that is not a
per-row load (an ORM-wide ``do_orm_execute`` listener would make SQLAlchemy build an
execute state for every ORM statement, which costs more than the capture itself):

- ``LazyLoader._emit_lazyload`` (a relationship lazy-loaded for one parent row: called
  only when the load sends a statement, not when the identity map has the object) and
  ``loading._load_scalar_attributes`` (a deferred or expired column loaded for one row)
  report the load to every active counter with its attribute (``Order.customer``), its
  parent and the query that loaded the parent; the statements they send are tagged, so
  that the statement-shape rule does not count them a second time;
- ``loading.instances`` (once per ORM query whose rows are loaded) notes where that query
  ran, under the ORM's number for it (``InstanceState.runid`` of its rows);
- ``Session._flush`` (the ORM's unit of work) gives each flush a number, which the
  statements sent inside it carry (:data:`~pytest_migsafe.queries.callsite.unit_of_work`),
  so that the INSERTs of many rows in one flush are not the user's loop, while a flush per
  row from a loop still is (a frame's identity would not do: the next flush's frame often
  reuses the last one's memory). It also keeps the rows each flush inserted until the
  application's next ORM query: a row that no query loaded has no ``runid``, like a row a
  query returned from the identity map, but a row inserted with no ORM query run since
  cannot have been returned by one, so its loads are grouped by the flush that made it
  (objects created one by one, each reading a relationship, are not one query's rows).
  The same for one ``execute`` of many rows that SQLAlchemy sends in batches
  (``Connection._exec_insertmany_context``: ``insert(...).returning(...)`` with a list of
  rows) and one ``selectinload`` sent in chunks of 500 keys.

Nothing here runs while no counter is active, beyond one tuple read per load, except that
a flush keeps the rows it inserted (a fixture's rows, made before a test's counter starts,
are the test's to read) and an ORM query lets them go.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import sys
import weakref
from typing import Any

from pytest_migsafe.queries import callsite, dispatch
from pytest_migsafe.queries.callsite import call_site, origin_of, unit_of_work
from pytest_migsafe.queries.exact import keep_signature
from pytest_migsafe.queries.library_frames import relabelled
from pytest_migsafe.queries.rows import row_number
from pytest_migsafe.tracebacks import hide_passed_through

#: pytest hides this module's wrapper frames in a traceback an error only passed through
#: (:mod:`pytest_migsafe.tracebacks`)
__tracebackhide__ = hide_passed_through

# the ORM load a statement is sent for: (kind, "Class.attribute"), or None
orm_load: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("migsafe_orm_load", default=None)
# the ORM's number of each query that loaded rows (InstanceState.runid) -> where it ran; cleared by
# forget(), and bounded by QUERY_SITES_KEPT (the plugin's counter of each test
# never calls forget(): a suite's every ORM query would be kept until the session ends)
_query_sites: dict[int, str] = {}
# the runids of those queries that an ORM load sent itself (the refresh of an expired row, a
# lazy load): a row they read was not read by a query of the application's (bounded with them)
_by_a_load: set[int] = set()
#: Query sites kept (past it, checked every 1,024 queries, only the newer half of this many is
#: kept: a load of a row so old says its query's site is unknown)
QUERY_SITES_KEPT = 20_000
# the rows (InstanceStates) each flush inserted since the application's last ORM query: (the
# flush's unit of work number, weak references to its rows); emptied by the next such query.
# Weak: a row (its object, its class and mapper, their engine) the application lets go is
# freed as without the plugin, never kept alive until some later query
_fresh_flushes: list[tuple[int, list[weakref.ref[Any]]]] = []
# id(InstanceState) -> (unit of work number, the weak reference), of the rows of the first
# _fresh_indexed[0] flushes there, indexed when a load asks (a hit is checked against the
# reference: an id may be reused once its row is freed)
_fresh_rows: dict[int, tuple[int, weakref.ref[Any]]] = {}
_fresh_indexed = [0]
#: Rows of one flush kept for that (past it, its rows' loads count as before: one unknown query's)
FRESH_ROWS_KEPT = 10_000
#: Flushes kept with no ORM query between (fixtures of a session may flush long before a test
#: runs a query); past it, they are forgotten
FRESH_FLUSHES_KEPT = 1_000
# id(InstanceState) -> (runid, a weak reference to the state) of the latest query that
# refreshed a row in part while counting: SQLAlchemy stamps a row with a query's runid only
# when the query loads the row whole; a row already in the identity map (held by a fixture,
# expired by a commit) that a query returns is refreshed in part (its "refresh" event, raw:
# the state). Bounded by REFRESHED_KEPT, emptied by forget() (which the plugin's per-test
# counter does not call: a strong reference here kept every such row, its class, mapper and
# engine alive for the rest of the session).
_refreshed: dict[int, tuple[int, weakref.ref[Any]]] = {}
REFRESHED_KEPT = 10_000
_installed_for: Any = None
# (owner, name, the original) of each loader wrapped, for uninstall()
_patched: list[tuple[Any, str, Any]] = []
_WRAPS = "_migsafe_wraps"  # on a wrapper: the function it wraps
_last_walk = callsite._last  # the per-thread slot of the last call-site walk (callsite.last_site, one call less)


def forget() -> None:
    """Drop what was learnt about loaded rows (called when the last counter stops). The rows
    flushes inserted are kept until the next ORM query: a fixture's, made before the next
    test's counter starts, are that test's to read."""
    _query_sites.clear()
    _by_a_load.clear()
    _refreshed.clear()


def _forget_fresh() -> None:
    _fresh_flushes.clear()
    _fresh_rows.clear()
    _fresh_indexed[0] = 0


def _inserted_by(state: Any) -> int | None:
    """The unit of work number of the flush that inserted ``state`` since the application's
    last ORM query, else None."""
    for unit, refs in _fresh_flushes[_fresh_indexed[0]:]:
        for ref in refs:
            one = ref()
            if one is not None:
                _fresh_rows[id(one)] = (unit, ref)
    _fresh_indexed[0] = len(_fresh_flushes)
    found = _fresh_rows.get(id(state))
    if found is None or found[1]() is not state or getattr(state, "key", None) is None:
        return None
    return found[0]


# -- the wrapped loaders ------------------------------------------------------------
#: class name -> the attribute names of its primary key, as the ORM loads of its rows show it
#: (the N+1 advice for rows each read by a query of their own names them)
primary_keys: dict[str, tuple[str, ...]] = {}
# class name -> a weak reference to the class whose key was noted last (weak: a class a test
# defines, its mapper and the engines its compiled statements name, are freed with the test)
_pk_classes: dict[str, weakref.ref[Any]] = {}


def _note_primary_key(name: str, state: Any) -> None:
    try:
        mapper = state.mapper
        keys = tuple(mapper.get_property_by_column(column).key for column in mapper.primary_key)
    except Exception:  # a mapper not understood
        keys = ("<primary key>",)
    known = primary_keys.get(name)
    # two mapped classes of one name (billing.Order, shop.Order) with other keys: not told apart
    primary_keys[name] = keys if known is None or known == keys else ("<primary key>",)


def _observed(load: tuple[str, str], parent: Any, direction: str | None, run: Any) -> Any:
    """Report ``load`` of the row ``parent`` to every active counter, then ``run()`` it tagged."""
    counters = dispatch._active
    owner = load[1].partition(".")[0]
    noted = _pk_classes.get(owner)
    if primary_keys.get(owner) is None or noted is None or noted() is not getattr(parent, "class_", None):
        _note_primary_key(owner, parent)
        try:
            _pk_classes[owner] = weakref.ref(parent.class_)
        except (AttributeError, TypeError):  # (no class, or one without weak references: noted again next time)
            _pk_classes.pop(owner, None)
    origin = origin_of(sys._getframe(2))
    row = row_number(parent)
    runid = getattr(parent, "runid", None)
    if _refreshed:  # a later query may have returned the row, refreshed in part
        refreshed = _refreshed.get(id(parent))
        if refreshed is not None and refreshed[1]() is parent and (runid is None or refreshed[0] > runid):
            runid = refreshed[0]
    loaded: tuple[Any, ...] | None = None
    if runid is not None:
        # (a row an ORM load read again, a refresh of its expired columns: not a read of the
        # application's, for the rule of rows each read by a query of their own)
        loaded = (("read by a load", runid) if runid in _by_a_load else runid, _query_sites.get(runid),
                  _eager_path(parent))
    elif _fresh_flushes:  # no query loaded the row: a flush may have inserted it
        unit = _inserted_by(parent)
        if unit is not None:
            loaded = (("inserted by flush", unit), None)
    dispatch.record_load(counters, load, row, loaded, origin, direction)
    token = orm_load.set(load)
    try:
        return run()
    finally:
        orm_load.reset(token)


def _eager_path(state: Any) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """The eager loads that brought the row ``state`` into its query (its ``load_path``:
    the query's entity, then each relationship and the entity it leads to), None for a row
    of the query's own entity (or a path not understood)."""
    try:
        path = state.load_path.path
        if len(path) < 3:
            return None
        steps = tuple((f"{prop.parent.class_.__name__}.{prop.key}", str(prop.direction.name)) for prop in path[1::2])
        return (path[0].class_.__name__, steps)
    except (AttributeError, TypeError):
        return None


def _on_refresh(state: Any, context: Any, attrs: Any) -> None:
    """A query refreshed the row ``state`` in part (SQLAlchemy's raw "refresh" event): note the
    query's runid, for the row's loads (see ``_refreshed``)."""
    if not dispatch._active:
        return
    runid = getattr(context, "runid", None)
    if runid is not None:
        if len(_refreshed) >= REFRESHED_KEPT:
            _refreshed.clear()
        _refreshed[id(state)] = (runid, weakref.ref(state))  # (weak: never keeps a row alive)


def _wrap_emit_lazyload(original: Any) -> Any:
    @functools.wraps(original)
    def _emit_lazyload(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not dispatch._active:
            return original(self, *args, **kwargs)
        parent = args[1] if len(args) > 1 else kwargs.get("state")
        try:
            prop = self.parent_property
            attribute = f"{prop.parent.class_.__name__}.{prop.key}"
            direction: str | None = str(prop.direction.name)
        except AttributeError:
            return original(self, *args, **kwargs)
        return _observed(("lazy_load", attribute), parent, direction, functools.partial(original, self, *args, **kwargs))

    setattr(_emit_lazyload, _WRAPS, original)
    return _emit_lazyload


def _wrap_load_scalar_attributes(original: Any) -> Any:
    @functools.wraps(original)
    def load_scalar_attributes(mapper: Any, state: Any, attribute_names: Any, passive: Any) -> Any:
        if not dispatch._active:
            return original(mapper, state, attribute_names, passive)
        try:
            cls = state.class_.__name__
        except AttributeError:
            return original(mapper, state, attribute_names, passive)
        expired = getattr(state, "expired_attributes", None)
        hint = _column_load_hint(mapper, attribute_names) if attribute_names else None
        if (not attribute_names or (expired and not expired.isdisjoint(attribute_names))) and (
                hint is None or not hint.startswith("POLYMORPHIC:")):  # (a subclass's columns come as expired)
            # a row expired (by a commit, expire_all()) loaded again, every attribute it had
            # (relationships too): not a deferred column, whose fix would be undefer()
            columns = "<expired columns>"
            hint = None
        else:
            columns = ", ".join(sorted(str(k) for k in attribute_names))
        return _observed(("deferred_column", f"{cls}.{columns}"), state, hint,
                         functools.partial(original, mapper, state, attribute_names, passive))

    setattr(load_scalar_attributes, _WRAPS, original)
    return load_scalar_attributes


def _column_load_hint(mapper: Any, names: Any) -> str | None:
    """What the fix of a per-row load of the columns ``names`` of ``mapper`` must name, passed
    as the load's ``direction``: ``"GROUP:<name>"`` when they are deferred columns of one
    ``deferred_group`` (``undefer()`` of one column leaves the others of its group deferred),
    ``"POLYMORPHIC:<Base>:<Sub>[, <Subsub>]"`` when they are the columns of a joined-inheritance
    subclass's own tables (its own and those between it and the base) that a query of the base
    class did not load (not deferred at all), else None."""
    try:
        props = [mapper.attrs[name] for name in names]
        if all(getattr(prop, "deferred", False) for prop in props):
            groups = {getattr(prop, "group", None) for prop in props}
            if len(groups) == 1 and None not in groups:
                return f"GROUP:{groups.pop()}"
            return None
        base = mapper.base_mapper
        # the tables of the subclass and of those between it and the base (joined inheritance
        # over several levels), not the base's
        tables = {level.local_table for level in mapper.iterate_to_root()} - {base.local_table}
        if mapper is not base and tables and all(
                column.table in tables for prop in props for column in getattr(prop, "columns", ())):
            # every class from the base's down to this one (the advice names them all: over
            # several levels it is with_polymorphic, see repeats.fix_for)
            levels = [level.class_.__name__ for level in reversed(list(mapper.iterate_to_root())) if level is not base]
            return f"POLYMORPHIC:{base.class_.__name__}:{', '.join(levels)}"
    except Exception:  # a mapper not understood: the plain undefer() fix
        return None
    return None


def _bound_query_sites() -> None:
    """Past :data:`QUERY_SITES_KEPT`, keep the newer half of that many query sites (dicts keep
    insertion order: runids rise). Called every 1,024 queries. (A module function: the
    wrappers run with a copy of this module's globals, see ``library_frames.relabelled``,
    which a changed bound would miss.)"""
    if len(_query_sites) > QUERY_SITES_KEPT:
        for runid in list(itertools.islice(_query_sites, len(_query_sites) - QUERY_SITES_KEPT // 2)):
            del _query_sites[runid]
            _by_a_load.discard(runid)


def _wrap_instances(original: Any) -> Any:
    @functools.wraps(original)
    def instances(cursor: Any, context: Any) -> Any:
        result = original(cursor, context)
        if _fresh_flushes and orm_load.get() is None:
            _forget_fresh()  # a query of the application's (or a fixture's), not a per-row load: it may return them
        if dispatch._active:
            runid = getattr(context, "runid", None)
            if runid is not None:
                # the rows' statement has just run: its call site is where they were
                # loaded (the last one this thread recorded), with no walk of the stack
                _query_sites[runid] = _last_walk.found[0] or call_site(sys._getframe(1))
                if orm_load.get() is not None:
                    _by_a_load.add(runid)
                if not runid % 1024:  # (now and then: checked in this module's own globals)
                    _bound_query_sites()
        return result

    setattr(instances, _WRAPS, original)
    return instances


_units = itertools.count(1)  # the numbers of units of work (see wrap_one_unit)


def wrap_one_unit(original: Any) -> Any:
    """Wrap a method of the ORM or engine whose statements are one unit of work, however many
    it sends: a flush, one ``execute`` of many rows sent in batches (insertmanyvalues), one
    eager load sent in chunks of keys (selectinload); Django's ``bulk_create`` and
    ``bulk_update`` in batches (:mod:`pytest_migsafe.queries.django`). Each call gets its own
    number (:data:`~pytest_migsafe.queries.callsite.unit_of_work`), so that its statements are
    not the user's loop; a loop of such calls still is."""
    @functools.wraps(original)
    def one_unit(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not dispatch._active:
            return original(self, *args, **kwargs)
        token = unit_of_work.set(next(_units))
        try:
            return original(self, *args, **kwargs)
        finally:
            unit_of_work.reset(token)

    setattr(one_unit, _WRAPS, original)
    return one_unit


def _wrap_flush(original: Any) -> Any:
    """``Session._flush``: one unit of work (see :func:`wrap_one_unit`) that also keeps the
    rows it inserted (the session's pending rows before it) in ``_fresh_flushes``."""
    @functools.wraps(original)
    def _flush(self: Any, *args: Any, **kwargs: Any) -> Any:
        pending = getattr(self, "_new", None)  # {InstanceState: object}, emptied by the flush
        rows = [weakref.ref(state) for state in pending] if pending and len(pending) <= FRESH_ROWS_KEPT else None
        unit = next(_units)
        token = None
        if dispatch._active:
            token = unit_of_work.set(unit)  # (its statements' unit of work)
            senders = callsite.flush_senders
            if len(senders) >= callsite.FLUSH_SENDERS_KEPT:
                for old in list(senders)[: len(senders) // 2]:
                    del senders[old]
            senders[unit] = callsite.user_position(sys._getframe(1))
        try:
            result = original(self, *args, **kwargs)
        finally:
            if token is not None:
                unit_of_work.reset(token)
        if rows is not None:  # (whatever is counting: a fixture's rows too, a test may read them)
            _note_fresh(unit, rows)
        return result

    setattr(_flush, _WRAPS, original)
    return _flush


def _note_fresh(unit: int, rows: list[weakref.ref[Any]]) -> None:
    """Keep the rows a flush inserted (until the application's next ORM query); past
    :data:`FRESH_FLUSHES_KEPT` flushes with no query between, those kept are forgotten."""
    if len(_fresh_flushes) >= FRESH_FLUSHES_KEPT:
        _forget_fresh()
    _fresh_flushes.append((unit, rows))


def _patch(owner: Any, name: str, wrap: Any) -> None:
    current = getattr(owner, name, None)
    if current is None or hasattr(current, _WRAPS):
        return
    # (a frame SQLAlchemy's warnings step over, as its own: see library_frames)
    module = getattr(current, "__module__", None) or "sqlalchemy.orm"
    setattr(owner, name, keep_signature(current, relabelled(wrap(current), module, _observed=_observed)))
    _patched.append((owner, name, current))


def _patch_mappers(wrapper: Any) -> None:
    """Point the expired-column loader of every mapper made so far at ``wrapper``."""
    original = getattr(wrapper, _WRAPS, None)
    if original is not None:
        _repoint_mappers(original, wrapper)


def _repoint_mappers(old: Any, new: Any) -> None:
    """Point the expired-column loader of every mapper made so far from ``old`` to ``new``."""
    from sqlalchemy.orm import mapperlib

    for registry in list(getattr(mapperlib, "_mapper_registries", ())):
        for mapper in list(getattr(registry, "mappers", ())):
            manager: Any = getattr(mapper, "class_manager", None)
            loader = getattr(manager, "expired_attribute_loader", None)
            if isinstance(loader, functools.partial) and loader.func is old:
                manager.expired_attribute_loader = functools.partial(new, *loader.args, **loader.keywords)


def install_engine() -> bool:
    """Make one ``execute`` of many rows that SQLAlchemy sends as INSERT batches
    (insertmanyvalues, ``Connection._exec_insertmany_context``, 2.0+) one unit of work, with
    or without the ORM imported; False before SQLAlchemy is. Idempotent."""
    base = sys.modules.get("sqlalchemy.engine.base")
    if base is None:
        return False
    _patch(base.Connection, "_exec_insertmany_context", wrap_one_unit)
    return True


def install() -> bool:
    """Wrap the ORM's loaders once ``sqlalchemy.orm`` is imported; False before that. Idempotent.

    Mappers keep their own reference to the column loader (their class manager's
    ``expired_attribute_loader``): those mapped before this call (models a conftest
    imported before the plugin was configured) are pointed at the wrapper too.
    """
    global _installed_for
    orm = sys.modules.get("sqlalchemy.orm")
    if orm is None:
        return False
    if _installed_for is orm:
        return True
    from sqlalchemy.orm import loading, strategies

    # SQLAlchemy 2.1 names the class _LazyLoader, 2.0 LazyLoader
    lazy = getattr(strategies, "_LazyLoader", None) or getattr(strategies, "LazyLoader", None)
    if lazy is not None:
        _patch(lazy, "_emit_lazyload", _wrap_emit_lazyload)
    # SQLAlchemy 2.1 names it _load_scalar_attributes, 2.0 load_scalar_attributes
    for name in ("_load_scalar_attributes", "load_scalar_attributes"):
        _patch(loading, name, _wrap_load_scalar_attributes)
        _patch_mappers(getattr(loading, name, None))
    _patch(loading, "instances", _wrap_instances)
    _patch(orm.Session, "_flush", _wrap_flush)
    # one selectinload, sent as IN (...) statements of 500 keys; 2.1 names it _SelectInLoader
    selectin = getattr(strategies, "_SelectInLoader", None) or getattr(strategies, "SelectInLoader", None)
    if selectin is not None:
        _patch(selectin, "_load_for_path", wrap_one_unit)
    from sqlalchemy import event

    if not event.contains(orm.Mapper, "refresh", _on_refresh):  # (every mapper, those made later too)
        event.listen(orm.Mapper, "refresh", _on_refresh, raw=True)
    _installed_for = orm
    return True


def uninstall() -> None:
    """Restore every loader :func:`install` and :func:`install_engine` wrapped, the mappers'
    column loaders too (for benchmarks and tests; the plugin never does)."""
    global _installed_for
    while _patched:
        owner, name, original = _patched.pop()
        current = getattr(owner, name, None)
        if getattr(current, _WRAPS, None) is original:
            setattr(owner, name, original)
            if name in ("_load_scalar_attributes", "load_scalar_attributes"):
                _repoint_mappers(current, original)
    orm = sys.modules.get("sqlalchemy.orm")
    if orm is not None:
        from sqlalchemy import event

        if event.contains(orm.Mapper, "refresh", _on_refresh):
            event.remove(orm.Mapper, "refresh", _on_refresh)
    _installed_for = None
