"""Django ORM loads: related objects and deferred fields, per parent row.

What :mod:`pytest_migsafe.queries.orm` does for SQLAlchemy, for Django's ORM (4.2 and
later). Django sends its SQL through psycopg 3, where the statements are captured; this
module only tells which of them are per-row loads, and of what:

- **related objects**: a forward many-to-one or one-to-one (``order.customer``), a reverse
  one-to-one (``place.restaurant``), a reverse foreign key or a many-to-many manager
  evaluated for one parent (``customer.orders.all()``, ``.count()``, ``.exists()``,
  ``.filter(...)``, in any form that sends a SELECT). The queryset made for one parent is
  marked where Django makes it (the descriptors' ``get_queryset(instance=...)`` and the
  related managers' ``get_queryset()``); the mark is copied to every clone of its query,
  and is read where Django sends a SELECT (``SQLCompiler.execute_sql``): that statement is
  the load, reported with the relationship (``Order.customer``, ``Customer.orders``) and
  its parent. Updates and deletes through a related manager are not loads.
- **deferred fields**: a field left out by ``.only()`` / ``.defer()`` that Django loads on
  first access (``DeferredAttribute.__get__`` calls ``refresh_from_db(fields=[name])``).
- **bulk writes**: ``QuerySet.bulk_create`` and ``bulk_update`` send their batches
  (``batch_size=``) as one unit of work (:func:`pytest_migsafe.queries.orm.wrap_one_unit`):
  one call is not the user's loop, a loop of calls still is.

Each load is reported to every active counter through ``counter._orm_load(load, parent,
loaded, origin, direction)`` (:meth:`pytest_migsafe.queries.repeats.RepeatTracker.load`),
and the statement it sends is tagged with :data:`pytest_migsafe.queries.orm.orm_load` so that
the statement-shape rule does not count it a second time. ``loaded`` names the query that
loaded the parent: while a counter is active, every row a ``ModelIterable`` (or
``RawModelIterable``) yields is noted with the number of its run and where it ran
(``path:line``), and so are the rows joined in by ``select_related``; the parents of one
run are the rows of one query. The note is the one attribute this module writes on objects
it does not own: ``_migsafe_query`` in the row's ``ModelState`` (it pickles as False).

Directions (the fix to paste, see :func:`fix_for`): :data:`SELECT_RELATED` for forward
foreign keys and one-to-ones and reverse one-to-ones, :data:`PREFETCH_RELATED` for reverse
foreign keys and many-to-many, :data:`DEFERRED` for deferred fields. A related manager's load
is told apart further, since ``prefetch_related`` fixes only the manager's own queryset
(``.all()``, ``.count()``, ``.exists()`` read the prefetched rows): a queryset made from it per
row (``.filter()``, ``.exclude()``, ``.order_by()``, ``.annotate()``: any method that chains
a new queryset, :meth:`_Load.chain`, other than a slice or an index of the manager's own
queryset, which reads the prefetched rows) runs a query per row even on a prefetched
relation, so its rows get :data:`PER_ROW_QUERYSET` (a ``Prefetch`` with that queryset and a
``to_attr``) and its ``.count()`` / ``.exists()`` / ``.aggregate()`` :data:`PER_ROW_AGGREGATE`
(``annotate(Count(...))``); a load of a relation prefetched on its parent gets
:data:`PREFETCHED` appended (the advice says why the prefetch did not serve it).

Every patch is made on a class, once (:func:`install`), keeps the patched function's
signature (``functools.wraps``), and costs one tuple read (``dispatch._active``) when no
counter is active. None is on a per-attribute path: Django calls the patched functions
when it builds a queryset or runs one, never when a cached value is read. Nothing here
evaluates a queryset or reads an attribute that could send SQL. Not covered: generic
relations (``django.contrib.contenttypes``) and the async ORM (``aget``, ``async for``),
whose statements run in a worker thread with no user frame on its stack.
"""

from __future__ import annotations

import contextvars
import functools
import importlib.util
import itertools
import re
import sys
from collections.abc import Callable, Generator, Iterator
from typing import Any

from pytest_migsafe.django_settings import configured_setting
from pytest_migsafe.queries import callsite, dispatch, orm
from pytest_migsafe.queries.callsite import call_site, origin_of
from pytest_migsafe.queries.exact import keep_signature
from pytest_migsafe.queries.patches import Patches
from pytest_migsafe.queries.rows import row_number
from pytest_migsafe.tracebacks import hide_passed_through

#: pytest hides this module's wrapper frames in a traceback an error only passed through
#: (:mod:`pytest_migsafe.tracebacks`)
__tracebackhide__ = hide_passed_through

SELECT_RELATED = "DJANGO_FORWARD"  # forward FK / one-to-one, reverse one-to-one: .select_related()
PREFETCH_RELATED = "DJANGO_REVERSE"  # reverse FK, many-to-many: .prefetch_related()
DEFERRED = "DJANGO_DEFERRED"  # a field left out by .only() / .defer()
# the rows of a queryset made from a related manager per row (.filter(), .order_by(), ...):
# Prefetch(name, queryset=..., to_attr=...)
PER_ROW_QUERYSET = "DJANGO_REVERSE_QUERYSET"
# .count() / .exists() / .aggregate() of such a queryset: annotate(Count(...)) on the parents
PER_ROW_AGGREGATE = "DJANGO_REVERSE_AGGREGATE"
PREFETCHED = "_PREFETCHED"  # appended to a related manager's direction: the parent had the relation prefetched

_TAG = "_migsafe_relation_load"  # the key of the mark in a Query's __dict__ (copied by Query.clone)
_NOTE = "_migsafe_query"  # the attribute of a row's ModelState that holds its _Note
_runs = itertools.count(1)
# Eager path = (the query's model, ((relation, SELECT_RELATED or PREFETCH_RELATED), ...))
EagerPath = tuple[str, tuple[tuple[str, str], ...]]
# while prefetch_related_objects() runs: the model of the rows it prefetches for (the query's)
_prefetch_root: contextvars.ContextVar[str | None] = contextvars.ContextVar("migsafe_prefetch_root", default=None)
# while one level of a prefetch runs: how the rows it loads hang off the query's rows
_prefetch_via: contextvars.ContextVar[EagerPath | None] = contextvars.ContextVar("migsafe_prefetch_via", default=None)
_installed_for: Any = None
_patches = Patches()  # every patch, to undo
# the code of what calls refresh_from_db(fields=[name]) for a deferred field:
# DeferredAttribute.__get__ (Django 5), and its fetch_one (Django 6.1 and on: __get__ calls
# the instance's fetch mode, whose FETCH_ONE calls fetch_one)
_deferred_getters: tuple[Any, ...] = ()


def fix_for(kind: str, attribute: str, direction: str | None,
            via: tuple[str, tuple[tuple[str, str], ...]] | None = None, sql: str | None = None) -> str:
    """The Django code that loads ``attribute`` (``"Order.customer"``) with its parents.

    ``via``: the parents were joined into their query by ``select_related`` (the query's
    model, the relations on the way): the relation is loaded through them
    (``Order.objects.select_related("customer__region")``, ``prefetch_related("customer__orders")``).

    ``direction``: :data:`SELECT_RELATED`, :data:`PREFETCH_RELATED` or :data:`DEFERRED`, as
    this module reports it; ``kind``: ``lazy_load`` or ``deferred_column`` (a deferred
    column gets the ``.only()`` advice whatever the direction, any other load
    ``prefetch_related`` unless the direction is :data:`SELECT_RELATED`). With Django 6.1 and
    later, the advice for a deferred column or a :data:`SELECT_RELATED` relation names
    ``.fetch_mode(models.FETCH_PEERS)`` too (a reverse foreign key or many-to-many is not
    loaded through a fetch mode). A queryset made per row from a related manager
    (:data:`PER_ROW_QUERYSET`) gets a ``Prefetch`` with a queryset and a ``to_attr``, and a
    ``.count()`` / ``.exists()`` of one (:data:`PER_ROW_AGGREGATE`) ``annotate(Count(...))``,
    with the related model and the lookup name from Django's app registry (see
    :func:`_relation`); with :data:`PREFETCHED` the advice says why the prefetch did not serve
    the load.
    """
    model, _, name = attribute.partition(".")
    models = sys.modules.get("django.db.models")
    # Django 6.1 and on: a queryset's fetch mode loads a deferred field, or a forward or
    # one-to-one relation, for every row it fetched at the first access (one query)
    peers = ", or .fetch_mode(models.FETCH_PEERS) on the query" if hasattr(models, "FETCH_PEERS") else ""
    if direction == DEFERRED or kind == "deferred_column":
        return f'load "{name}" with the {model} rows: add it to .only(...), or take it out of .defer(...){peers}'
    owner, lookup, prefetch_on_the_way = model, name, False
    if via is not None and via[1]:
        owner, lookup = via[0], "__".join([*(step for step, _ in via[1]), name])
        prefetch_on_the_way = any(kind != SELECT_RELATED for _, kind in via[1])  # (no select_related through it)
    if direction == SELECT_RELATED and not prefetch_on_the_way:
        return f'{owner}.objects.select_related("{lookup}"){peers}'
    prefetched = direction is not None and direction.endswith(PREFETCHED)
    per_row = direction[:-len(PREFETCHED)] if prefetched and direction is not None else direction
    if per_row not in (PER_ROW_QUERYSET, PER_ROW_AGGREGATE):
        if prefetched:  # the manager's own rows, fetched again: .iterator() reads no prefetch cache
            return (f"read {model.lower()}.{name}.all() (the prefetched rows): .iterator() on a prefetched "
                    "relation runs a query per row")
        return f'{owner}.objects.prefetch_related("{lookup}")'
    related, lookup = _relation(model, name) or ("<related model>", name)
    row = model.lower()
    to_attr = f"selected_{name}"
    prefetch = f'Prefetch("{name}", queryset={related}.objects.filter(...), to_attr="{to_attr}")'
    aggregate = _aggregate_of(sql) if per_row == PER_ROW_AGGREGATE else None
    if aggregate is not None:  # .aggregate(Max("amount")) per row: the same aggregate, annotated
        function, column = aggregate
        column = _field_of_column(related, column)  # (the SQL names the column: db_column="total_cents")
        alias = f"{name}_{function.lower()}"
        return (f'{model}.objects.annotate({alias}={function}("{lookup}__{column}")), then read {row}.{alias}: '
                f".aggregate() on {row}.{name} runs a query per row (add filter=Q({lookup}__...) to it for a "
                f".filter() on {row}.{name})")
    if per_row == PER_ROW_AGGREGATE:
        return (f'{model}.objects.annotate({name}_count=Count("{lookup}", filter=Q({lookup}__...))), then read '
                f"{row}.{name}_count (or len() of a {prefetch}): .count() / .exists() / .aggregate() of a "
                f".filter() (.exclude(), ...) on {row}.{name} runs a query per row, even on a prefetched relation")
    why = ("on a prefetched relation runs a query per row" if prefetched
           else f'on {row}.{name} runs a query per row, even with prefetch_related("{name}")')
    return (f"{model}.objects.prefetch_related({prefetch}), then read {row}.{to_attr}: .filter() {why} "
            "(so do .exclude(), .order_by() and .annotate()): move them into the Prefetch queryset")


# the aggregate of a per-row .aggregate() as Django sends it: SELECT MAX("app_order"."amount") AS "m" ...
_AGGREGATE = re.compile(r'^\s*SELECT\s+(MAX|MIN|SUM|AVG)\s*\(\s*(?:DISTINCT\s+)?(?:"?\w+"?\.)?"?(\w+)"?\s*\)', re.I)


def _field_of_column(model: str, column: str) -> str:
    """The name of the field of the model named ``model`` whose database column is ``column``
    (a field with ``db_column=`` is named otherwise in a lookup); ``column`` when not found."""
    try:
        from django.apps import apps

        for candidate in apps.get_models():
            if candidate.__name__ == model:
                for found in candidate._meta.concrete_fields:
                    if found.column == column:
                        return str(found.name)
    except Exception:  # no app registry (Django not set up): the column's name
        return column
    return column


def _aggregate_of(sql: str | None) -> tuple[str, str] | None:
    """``("Max", "amount")`` for a statement that aggregates one column with MAX, MIN, SUM or
    AVG (a ``.count()`` / ``.exists()``, or anything else, is None)."""
    found = _AGGREGATE.match(sql) if sql else None
    if found is None:
        return None
    return found.group(1).capitalize(), found.group(2)


def unmeasured_databases() -> list[tuple[str, str]]:
    """``(alias, ENGINE)`` of each database in Django's ``DATABASES`` whose statements migsafe
    does not see: with Django's own executors hooked, or to be hooked at the import of its
    database layer (:mod:`pytest_migsafe.queries.django_sql`: every backend's statements are
    seen, psycopg 3's at the driver), none; else (a Django older than 4.2, a stub) a backend other
    than PostgreSQL's (SQLite, MySQL, Oracle), or PostgreSQL's on psycopg2. [] when Django's
    settings are not configured (they are never evaluated here: a lazy settings object stays
    lazy)."""
    from pytest_migsafe import versions
    from pytest_migsafe.queries import django_sql

    if django_sql.is_installed() or (versions.supported("django") and "django statements" not in versions.not_measured):
        return []  # hooked, or hooked once Django's database layer is imported
    try:
        databases = dict(configured_setting("DATABASES", {}))
    except Exception:  # a DATABASES that is no mapping: nothing to say
        return []
    psycopg_any = sys.modules.get("django.db.backends.postgresql.psycopg_any")
    if psycopg_any is not None:
        on_psycopg2 = getattr(psycopg_any, "is_psycopg3", True) is False
    else:  # Django's backend not imported yet: it takes psycopg 3 when importable, else psycopg2
        try:
            on_psycopg2 = importlib.util.find_spec("psycopg") is None
        except ValueError:  # a module in sys.modules without a spec (a stub): taken for psycopg 3
            on_psycopg2 = False
    unmeasured = []
    for alias, database in databases.items():
        engine = str(database.get("ENGINE", "")) if isinstance(database, dict) else ""
        if not ("postgresql" in engine or "postgis" in engine) or on_psycopg2:
            unmeasured.append((str(alias), engine or "<no ENGINE>"))
    return unmeasured


def open_psycopg_connection(alias: str = "default") -> Any:
    """The psycopg 3 connection Django's ``alias`` database has open now (inside a pytest-django
    ``django_db`` test: the one its transaction runs on), or None: Django not imported or not
    configured, no such alias, not connected, or not psycopg 3. Never connects, never
    evaluates lazy settings."""
    if "django.db" not in sys.modules:
        return None
    conf = sys.modules.get("django.conf")
    try:
        if conf is None or not conf.settings.configured:
            return None
        from django.db import connections

        if alias not in connections:
            return None
        raw = connections[alias].connection
    except Exception:  # settings that cannot be read, an alias that cannot be opened
        return None
    return raw if raw is not None and is_psycopg3_connection(raw) else None


def is_psycopg3_connection(raw: Any) -> bool:
    """True for a psycopg 3 connection (psycopg2's class lives in ``psycopg2.extensions``)."""
    return type(raw).__module__.split(".")[0] == "psycopg"


def _relation(model: str, accessor: str) -> tuple[str, str] | None:
    """``(related model, lookup name)`` of the relation ``model.accessor`` (``("Order", "orders")``
    for ``Customer.orders``; a reverse foreign key without a related_name: ``("Order", "order")``
    for ``Customer.order_set``), from Django's app registry; None when it is not loaded or the
    name is not found (or is ambiguous: two models of that name with that relation)."""
    registry = getattr(sys.modules.get("django.apps"), "apps", None)
    if registry is None or not registry.models_ready:
        return None
    from django.db.models import ForeignObjectRel

    found = set()
    for cls in registry.get_models():
        if cls.__name__ != model:
            continue
        for field in cls._meta.get_fields():
            if not field.is_relation or field.related_model is None:
                continue
            name = field.get_accessor_name() if isinstance(field, ForeignObjectRel) else field.name
            if name == accessor:
                found.add((field.related_model.__name__, field.name))
    return found.pop() if len(found) == 1 else None


# -- which query loaded a row ------------------------------------------------------------
class _Note:
    """Which query loaded a row: its run number and where it ran (``path:line``, set at its first row).

    Shared by the rows of one run. A pickled row (a cache) drops it: it unpickles as False.
    """

    __slots__ = ("run", "site", "via")

    def __init__(self, run: int | tuple[str, int]) -> None:
        self.run = run
        self.site: str | None = None
        # a row select_related joined in: (the query's model, (("customer", SELECT_RELATED), ...)),
        # the relations from the query's rows to it (see repeats.EagerPath)
        self.via: tuple[str, tuple[tuple[str, str], ...]] | None = None

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return bool, ()


def _loaded(instance: Any) -> _Note | None:
    """The note of the query that loaded ``instance``, if one was noted."""
    return getattr(getattr(instance, "_state", None), _NOTE, None) or None


def _note_joined(obj: Any, note: _Note, depth: int = 0, root: str | None = None,
                 path: tuple[tuple[str, str], ...] = ()) -> None:
    """Note the rows ``select_related`` joined into ``obj`` (not those another query loaded),
    each with the relations from the query's rows to it (its note's ``via``)."""
    cache = obj._state.__dict__.get("fields_cache")
    if not cache or depth > 8:
        return
    root = root or type(obj).__name__
    for name, related in cache.items():
        state = getattr(related, "_state", None)
        if state is None or state.__dict__.get(_NOTE):
            continue  # nothing there, or a row a query loaded (this one, or a known related object)
        joined = _Note(note.run)  # (the query's: its loads group with the query's rows)
        joined.site = note.site
        joined.via = (root, (*path, (str(name), SELECT_RELATED)))
        state.__dict__[_NOTE] = joined
        _note_joined(related, note, depth + 1, root, joined.via[1])


def _noting(rows: Generator[Any, None, None], joined: bool) -> Iterator[Any]:
    """Yield Django's rows, noting each (and, with ``joined``, the rows select_related put in it).

    The note is kept on the row's own ``ModelState`` (Django makes one per row): a row
    another query loads later gets that query's note, and an object no query loaded has none.
    """
    note = _Note(next(_runs))
    note.via = _prefetch_via.get()  # (rows a prefetch_related query loads: through the query's rows)
    try:
        for obj in rows:
            if note.site is None:
                # the rows arrive right after their statement ran: its call site (the last one
                # this thread recorded) is where they were loaded, with no walk of the stack
                note.site = callsite.last_site() or call_site(sys._getframe(1))
            obj._state.__dict__[_NOTE] = note
            if joined:
                _note_joined(obj, note)
            yield obj
    finally:
        rows.close()  # a .iterator() left early: Django's generator closes its server-side cursor now


def _wrap_do_insert(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Model._do_insert``: a row the code creates (``save()``, ``objects.create()``) is noted as
    loaded by a query of its own (its INSERT), like a row fetched by its own query: rows
    created one by one in a loop are no one query's rows, and their lazy loads no N+1."""
    @functools.wraps(original)
    def _do_insert(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        # (whatever is counting: a row a fixture made is the test's to read)
        note = _Note(("inserted", next(_runs)))  # (a query of its own, told apart from a read)
        note.site = callsite.last_site()
        self._state.__dict__[_NOTE] = note
        return result

    return _do_insert


def _wrap_prefetch_objects(original: Callable[..., Any]) -> Callable[..., Any]:
    """``prefetch_related_objects``: the rows it loads hang off the rows of ``model_instances``' model."""
    @functools.wraps(original)
    def prefetch_related_objects(model_instances: Any, *related_lookups: Any) -> Any:
        if not dispatch._active or not model_instances:
            return original(model_instances, *related_lookups)
        token = _prefetch_root.set(type(model_instances[0]).__name__)
        try:
            return original(model_instances, *related_lookups)
        finally:
            _prefetch_root.reset(token)

    return prefetch_related_objects


def _wrap_prefetch_one_level(original: Callable[..., Any]) -> Callable[..., Any]:
    """``prefetch_one_level``: the rows of this level come through the lookup's relations so far."""
    @functools.wraps(original)
    def prefetch_one_level(instances: Any, prefetcher: Any, lookup: Any, level: Any) -> Any:
        root = _prefetch_root.get()
        through = getattr(lookup, "prefetch_through", None)
        if root is None or not isinstance(through, str) or not isinstance(level, int):
            return original(instances, prefetcher, lookup, level)
        steps = tuple((name, PREFETCH_RELATED) for name in through.split("__")[: level + 1])
        token = _prefetch_via.set((root, steps))
        try:
            return original(instances, prefetcher, lookup, level)
        finally:
            _prefetch_via.reset(token)

    return prefetch_one_level


def _wrap_iter(original: Callable[[Any], Generator[Any, None, None]]) -> Callable[[Any], Iterator[Any]]:
    @functools.wraps(original)
    def __iter__(self: Any) -> Iterator[Any]:
        rows = original(self)
        if not dispatch._active:
            return rows
        query = getattr(self.queryset, "_query", None)
        return _noting(rows, bool(getattr(query, "select_related", False)))

    return __iter__


# -- per-parent loads ----------------------------------------------------------------------
def _query_form(query: Any) -> tuple[Any, ...] | None:
    """What a queryset chained from a related manager's can change in its query besides the
    slice (the conditions, ordering, annotations, extra, distinct, columns, deferred fields,
    joins, a combination), read from Django's ``Query`` attributes (plain values: nothing is
    evaluated); None when one is not there (a Django that keeps them otherwise)."""
    try:
        where = query.where
        return (len(where.children), where.connector, where.negated, tuple(query.order_by),
                tuple(query.annotations), tuple(query.extra), query.distinct, tuple(query.distinct_fields),
                tuple(query.values_select), query.default_ordering, query.combinator, query.deferred_loading,
                query.select_related)
    except Exception:  # (a Query in a form not foreseen: told as any chained queryset)
        return None


def _sliced_only(query: Any, base_form: tuple[Any, ...] | None) -> bool:
    """True when ``query`` (a chained related manager's) differs from the query it was chained
    from (whose :func:`_query_form` is ``base_form``) by its slice alone."""
    if query is None or base_form is None:
        return False
    try:
        sliced = bool(query.low_mark) or query.high_mark is not None
    except Exception:
        return False
    return sliced and _query_form(query) == base_form


class _Load:
    """The mark of a query made for one parent row (kept in the query's ``__dict__``).

    ``prefetched``: a related manager's queryset read from its parent's prefetch cache;
    ``chained``: the mark of a queryset chained from the marked one (see :meth:`chain`).
    A pickled query (a cached queryset) drops it: it unpickles as False.
    """

    __slots__ = ("base_form", "chained", "direction", "load", "loaded", "parent", "prefetched")

    def __init__(self, load: tuple[str, str], parent: int, loaded: _Note | None, direction: str,
                 prefetched: bool = False, chained: bool = False, base_form: tuple[Any, ...] | None = None) -> None:
        self.load = load
        self.parent = parent
        self.loaded = loaded
        self.direction = direction
        self.prefetched = prefetched
        self.chained = chained
        self.base_form = base_form  # (of a chained mark: _query_form of the query it was chained from)

    def chain(self, base: Any = None) -> _Load:
        """The mark of a queryset chained from this one (``.filter()``, ``.order_by()``, a slice:
        Django's ``Query.chain``; ``base``: the query chained from): a related manager's such
        queryset is one no prefetch serves, unless it only takes a slice (see :meth:`direction_of`)."""
        return _Load(self.load, self.parent, self.loaded, self.direction, self.prefetched, chained=True,
                     base_form=_query_form(base) if base is not None else None)

    def direction_of(self, result_type: Any, query: Any = None) -> str:
        """The direction to report for a statement of this query (``query``, Django's ``Query``,
        if known) sent for ``result_type`` (Django's ``"multi"`` for rows, ``"single"`` for
        ``.count()`` / ``.exists()`` / ``.aggregate()``): a related manager's is told apart (see
        the module docstring). A slice or an index of the manager's own queryset
        (``author.books.all()[0]``, ``.first()`` on an ordered model) reads the prefetched rows
        when the relation is prefetched: a plain ``prefetch_related`` serves it."""
        direction = self.direction
        if direction != PREFETCH_RELATED:
            return direction
        if self.chained and not (result_type != "single" and _sliced_only(query, self.base_form)):
            direction = PER_ROW_AGGREGATE if result_type == "single" else PER_ROW_QUERYSET
        return direction + PREFETCHED if self.prefetched else direction

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return bool, ()

    def __copy__(self) -> _Load:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Load:
        return self


def _mark(queryset: Any, attribute: str, parent: Any, direction: str, prefetched: bool = False) -> None:
    """Mark ``queryset`` (made for the row ``parent``) as a load of ``attribute``."""
    query = getattr(queryset, "_query", None)  # not .query: that would apply a deferred filter
    if query is not None and parent is not None:
        query.__dict__[_TAG] = _Load(("lazy_load", attribute), row_number(parent), _loaded(parent), direction,
                                     prefetched)


def _sent_as_load(counters: tuple[Any, ...], load: tuple[str, str], parent: int, note: _Note | None,
                  direction: str, frame: Any, send: Callable[[], Any]) -> Any:
    """``send()`` the statements of one load, tagged as that load; then report it to the counters.

    The load's origin is the one its statement's capture found (one walk of the stack for
    both, see :func:`pytest_migsafe.queries.callsite.origin_for`); a walk from ``frame`` if
    no statement was recorded (it failed, or Django sent none).
    """
    before = callsite.last_site()
    token = orm.orm_load.set(load)
    try:
        return send()
    finally:
        orm.orm_load.reset(token)
        after = callsite.last_site()
        origin = callsite.origin_for(after, frame) if after is not None and after is not before else origin_of(frame)
        template = _template_line(frame) if origin.positions else None
        if template is not None:  # the template's line, below the application frame that rendered it
            origin = callsite.Origin([template, *origin.positions], origin.function, origin.test_own,
                                     origin.unit_of_work, origin.test, origin.test_chain)
        loaded = (note.run, note.site, note.via) if note is not None else None
        dispatch.record_load(counters, load, parent, loaded, origin, direction)


def _template_line(frame: Any) -> callsite.Position | None:
    """The position of the Django template line whose rendering sent a load from ``frame``
    (a ``{{ book.author.name }}`` of the project's own template), if the template engine's
    ``Node.render_annotated`` is on the stack between ``frame`` and the first user frame; else
    None (no template, a template of a library's, or a user frame below it: a template tag of
    the project's own is its own call site). A ``TemplateResponse`` rendered after its view
    returned has no view on the stack: the template's line is the one place that names it."""
    base = sys.modules.get("django.template.base")
    render = getattr(getattr(getattr(base, "Node", None), "render_annotated", None), "__code__", None)
    if render is None:
        return None
    library = callsite._library_files
    f = frame
    while f is not None:
        code = f.f_code
        if code is render:
            return _node_line(f)
        if code.co_filename not in library and callsite.is_user_file(code.co_filename):
            return None
        f = f.f_back
    return None


def _node_line(frame: Any) -> callsite.Position | None:
    """The position of the template node ``Node.render_annotated`` renders in ``frame``: its
    token's line in its origin's file (attributes Django's template parser sets on every node;
    a template made from a string has no file, None)."""
    try:
        node = frame.f_locals.get("self")
        line = getattr(getattr(node, "token", None), "lineno", None)
        name = getattr(getattr(node, "origin", None), "name", None)
    except Exception:  # (a node of a form not foreseen: no template line)
        return None
    if not isinstance(line, int) or not isinstance(name, str):
        return None
    shown = callsite.shown_user_file(name)
    return callsite.place_position(shown, line) if shown is not None else None


def _mark_of(compiler: Any, writes: tuple[type, ...]) -> _Load | None:
    """The mark of the load a compiler is about to send, or None (not a load, a write, no SQL)."""
    query = compiler.query
    mark = query.__dict__.get(_TAG)
    if mark is None:
        inner = query.__dict__.get("inner_query")  # count() of a sliced or distinct relation
        mark = getattr(inner, "__dict__", {}).get(_TAG)
    if not mark or isinstance(compiler, writes) or query.is_empty():
        return None
    return mark  # type: ignore[no-any-return]


_EXECUTE_SQL = ("self", "result_type", "chunked_fetch", "chunk_size")  # Django 4.2 to 5.2


def _wrap_execute_sql(original: Callable[..., Any], writes: tuple[type, ...]) -> Callable[..., Any]:
    """``SQLCompiler.execute_sql``: a SELECT of a marked query is a load, reported as it is sent."""
    code = original.__code__
    defaults = original.__defaults__ or ()
    if code.co_argcount != len(_EXECUTE_SQL) or code.co_varnames[:4] != _EXECUTE_SQL or len(defaults) != 3:
        return _wrap_execute_sql_any(original, writes)
    result_type_default, chunked_fetch_default, chunk_size_default = defaults

    # the same parameters as Django's, so that the call needs no *args tuple or **kwargs dict
    @functools.wraps(original)
    def execute_sql(self: Any, result_type: Any = result_type_default, chunked_fetch: Any = chunked_fetch_default,
                    chunk_size: Any = chunk_size_default) -> Any:
        counters = dispatch._active
        if not counters:
            return original(self, result_type, chunked_fetch, chunk_size)
        mark = _mark_of(self, writes)
        if mark is None:
            return original(self, result_type, chunked_fetch, chunk_size)
        return _sent_as_load(counters, mark.load, mark.parent, mark.loaded,
                             mark.direction_of(result_type, getattr(self, "query", None)),
                             sys._getframe(1), functools.partial(original, self, result_type, chunked_fetch, chunk_size))

    return execute_sql


def _wrap_execute_sql_any(original: Callable[..., Any], writes: tuple[type, ...]) -> Callable[..., Any]:
    """:func:`_wrap_execute_sql` for a Django whose ``execute_sql`` takes other parameters."""

    @functools.wraps(original)
    def execute_sql(self: Any, *args: Any, **kwargs: Any) -> Any:
        counters = dispatch._active
        if not counters:
            return original(self, *args, **kwargs)
        mark = _mark_of(self, writes)
        if mark is None:
            return original(self, *args, **kwargs)
        result_type = args[0] if args else kwargs.get("result_type", "multi")
        return _sent_as_load(counters, mark.load, mark.parent, mark.loaded,
                             mark.direction_of(result_type, getattr(self, "query", None)),
                             sys._getframe(1), functools.partial(original, self, *args, **kwargs))

    return execute_sql


def _wrap_chain(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Query.chain``: the copy of a marked query made for a chained queryset (``.filter()``,
    ``.order_by()``, a slice, ``.aggregate()``) gets the mark's :meth:`_Load.chain` (a plain
    copy keeps the mark itself: ``.count()`` and ``.exists()`` of the manager's own queryset)."""

    @functools.wraps(original)
    def chain(self: Any, *args: Any, **kwargs: Any) -> Any:
        obj = original(self, *args, **kwargs)
        if dispatch._active:
            mark = obj.__dict__.get(_TAG)
            if mark and not mark.chained:
                obj.__dict__[_TAG] = mark.chain(self)
        return obj

    return chain


def _wrap_descriptor_queryset(original: Callable[..., Any], name_of: Callable[[Any], str]) -> Callable[..., Any]:
    """A one-object descriptor's ``get_queryset(**hints)``: the hint ``instance`` is the parent."""

    @functools.wraps(original)
    def get_queryset(self: Any, **hints: Any) -> Any:
        queryset = original(self, **hints)
        if dispatch._active and "instance" in hints:
            _mark(queryset, name_of(self), hints["instance"], SELECT_RELATED)
        return queryset

    return get_queryset


def _forward_name(descriptor: Any) -> str:
    field = descriptor.field
    return f"{field.model.__name__}.{field.name}"


def _reverse_one_name(descriptor: Any) -> str:
    related = descriptor.related
    return f"{related.model.__name__}.{related.get_accessor_name()}"


def _manager_name(rel: Any, reverse: bool | None) -> str:
    """``Class.accessor`` of a related manager: ``reverse`` None for a reverse foreign key."""
    if reverse is False:  # forward many-to-many: the field on the model that declares it
        return f"{rel.field.model.__name__}.{rel.field.name}"
    return f"{rel.model.__name__}.{rel.get_accessor_name()}"


def _patch_manager(cls: Any, attribute: str) -> None:
    """Mark the querysets of the related manager class ``cls`` (once per class)."""
    original = cls.__dict__.get("get_queryset")
    if original is None or getattr(original, "_migsafe_wraps", False):
        return

    @functools.wraps(original)
    def get_queryset(self: Any) -> Any:
        queryset = original(self)
        if dispatch._active:
            # the parent's prefetch cache holds a queryset whose rows are in (a fresh one has none)
            prefetched = getattr(queryset, "_result_cache", None) is not None
            _mark(queryset, attribute, self.instance, PREFETCH_RELATED, prefetched)
        return queryset

    get_queryset._migsafe_wraps = True  # type: ignore[attr-defined]
    _patches.set(cls, "get_queryset", get_queryset, original)


def _wrap_factory(original: Callable[..., Any], reverse_fk: bool) -> Callable[..., Any]:
    """The related-manager class factory: patch each class it makes."""

    @functools.wraps(original)
    def create(superclass: Any, rel: Any, *args: Any, **kwargs: Any) -> Any:
        cls = original(superclass, rel, *args, **kwargs)
        reverse = None if reverse_fk else kwargs.get("reverse", args[0] if args else None)
        try:
            _patch_manager(cls, _manager_name(rel, reverse))
        except AttributeError:  # a relation not resolved yet: the class is made again when used
            pass
        return cls

    return create


# -- deferred fields -----------------------------------------------------------------------
def _called_by_deferred_get(frame: Any) -> bool:
    """True when Django's deferred-field getter (:data:`_deferred_getters`) is ``frame`` or a
    frame above it with only ``refresh_from_db`` frames between (the overrides of the model's
    classes, each calling ``super()``, at any depth of the hierarchy) and the plugin's
    signature-keeping layer (:func:`~pytest_migsafe.queries.exact.keep_signature`)."""
    getters = _deferred_getters
    while frame is not None:
        code = frame.f_code
        if any(code is getter for getter in getters):
            return True
        if code.co_name != "refresh_from_db":  # (ours, its layer, and each override are named so)
            return False
        frame = frame.f_back
    return False


def _wrap_refresh(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def refresh_from_db(self: Any, *args: Any, **kwargs: Any) -> Any:
        counters = dispatch._active
        if not counters:
            return original(self, *args, **kwargs)
        fields = args[1] if len(args) > 1 else kwargs.get("fields")  # (self, using=None, fields=None, ...)
        frame = sys._getframe(1)
        if not fields or len(fields) != 1 or not _called_by_deferred_get(frame):
            return original(self, *args, **kwargs)  # an explicit refresh: the statement rule's
        try:
            field = self._meta.get_field(fields[0])
            load = ("deferred_column", f"{field.model.__name__}.{field.name}")
        except Exception:  # FieldDoesNotExist: a name Django will reject itself
            return original(self, *args, **kwargs)
        return _sent_as_load(counters, load, row_number(self), _loaded(self), DEFERRED, frame,
                             functools.partial(original, self, *args, **kwargs))

    return refresh_from_db


# -- installation -------------------------------------------------------------------------
def _patch(owner: Any, name: str, wrapper: Callable[[Any], Any]) -> None:
    original = owner.__dict__[name]
    _patches.set(owner, name, keep_signature(original, wrapper(original)), original)


def _patch_existing_managers(descriptors: Any) -> None:
    """Related-manager classes Django made before :func:`install` (cached on their descriptors)."""
    from django.apps import apps

    for models in list(apps.all_models.values()):
        for model in list(models.values()):
            for value in list(vars(model).values()):
                cls = getattr(value, "__dict__", {}).get("related_manager_cls")
                if cls is None:
                    continue
                if isinstance(value, descriptors.ManyToManyDescriptor):
                    _patch_manager(cls, _manager_name(value.rel, value.reverse))
                elif isinstance(value, descriptors.ReverseManyToOneDescriptor):
                    _patch_manager(cls, _manager_name(value.rel, None))


def install() -> bool:
    """Patch Django's ORM once ``django.db.models`` is imported; False before that. Idempotent."""
    global _installed_for, _deferred_getters
    models = sys.modules.get("django.db.models")
    if models is None or _installed_for is models:
        return models is not None
    if not hasattr(models, "ForeignKey"):  # bound last by django/db/models/__init__.py
        return False  # still being imported: the import watcher calls again once it is done
    import django.db.models.fields.related_descriptors as descriptors
    import django.db.models.query as query
    import django.db.models.query_utils as query_utils
    import django.db.models.sql.compiler as compiler
    import django.db.models.sql.query as sql_query

    uninstall()
    writes = (compiler.SQLUpdateCompiler, compiler.SQLDeleteCompiler, compiler.SQLInsertCompiler)
    _patch(compiler.SQLCompiler, "execute_sql", lambda f: _wrap_execute_sql(f, writes))
    _patch(query.ModelIterable, "__iter__", _wrap_iter)
    _patch(sql_query.Query, "chain", _wrap_chain)
    if "__iter__" in getattr(query, "RawModelIterable", object).__dict__:
        _patch(query.RawModelIterable, "__iter__", _wrap_iter)
    _patch(descriptors.ForwardManyToOneDescriptor, "get_queryset",
           lambda f: _wrap_descriptor_queryset(f, _forward_name))
    _patch(descriptors.ReverseOneToOneDescriptor, "get_queryset",
           lambda f: _wrap_descriptor_queryset(f, _reverse_one_name))
    _patch(models.Model, "refresh_from_db", _wrap_refresh)
    if "_do_insert" in models.Model.__dict__:
        _patch(models.Model, "_do_insert", _wrap_do_insert)
    # one call sent in batches (batch_size=), or one UPDATE ... CASE per batch: one unit of work
    for name in ("bulk_create", "bulk_update"):
        if name in query.QuerySet.__dict__:
            _patch(query.QuerySet, name, orm.wrap_one_unit)
    deferred = query_utils.DeferredAttribute
    _deferred_getters = tuple(getattr(deferred, name).__code__ for name in ("__get__", "fetch_one")
                              if hasattr(getattr(deferred, name, None), "__code__"))
    for name, wrap in (("prefetch_related_objects", _wrap_prefetch_objects),
                       ("prefetch_one_level", _wrap_prefetch_one_level)):
        if callable(getattr(query, name, None)):  # (module functions, called by their global names)
            _patch(query, name, wrap)
    _patch(descriptors, "create_reverse_many_to_one_manager", lambda f: _wrap_factory(f, reverse_fk=True))
    _patch(descriptors, "create_forward_many_to_many_manager", lambda f: _wrap_factory(f, reverse_fk=False))
    _patch_existing_managers(descriptors)
    _installed_for = models
    return True


def uninstall() -> None:
    """Undo every patch (benchmarks and tests; the plugin never does)."""
    global _installed_for
    _patches.undo()
    _installed_for = None
