"""A path's return value as it was when the path ended, for the comparison.

Both paths of a shadow experiment usually share one ORM Session: they return the same
identity-map object (``session.get(Account, 1)`` twice), and the savepoint rolled back
after each path expires it. Compared afterwards, both values show the rolled-back row, so
a candidate that wrote or returned another value matched. :func:`taken` copies the ORM
objects in a value while the path's state is still there: each SQLAlchemy mapped object
becomes an :class:`OrmSnapshot` of its identity and loaded column values (no attribute is
loaded for it: no statement is sent), inside lists, tuples, sets, frozensets, dicts (their
values), their subclasses (named tuples, ``OrderedDict``, ``defaultdict``, ...), dataclass
instances and SQLAlchemy ``Row`` objects; everything else is kept as it is.

A path may also return a result read once: a generator (or any other iterator) or a
SQLAlchemy ``Result``. Read after the path, it would run after the savepoint's rollback
(and the other path's run), and two of them never compare equal. :func:`read_once` reads
it at once, as part of the path, and gives the test an equivalent one back.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import types
from collections import OrderedDict, defaultdict
from collections.abc import Iterator
from typing import Any

_CONTAINERS = (list, tuple, set, frozenset, dict)


class ResultReadOnce(TypeError):
    """A path returned a SQLAlchemy result that cannot be given back once the comparison read it."""


def read_once(value: Any) -> tuple[Any, Any]:
    """``(what the test gets, what is compared)`` of a path's return value ``value``.

    A value read once is read now: a SQLAlchemy ``Result`` (``CursorResult``, ...) is
    frozen (the test gets ``frozen()``, a ``Result`` of the same rows; its rows are
    compared, as a list); a generator or any other iterator is read into a list (compared),
    and the test gets a generator (for a generator) or an iterator over the same items.
    Anything else: ``(value, value)``. Raises :class:`ResultReadOnce` (a ``TypeError``) for a SQLAlchemy result that
    cannot be given back once read (``ScalarResult``, ``MappingResult``, ...: return
    ``.all()`` instead); an exception while reading is the path's own.
    """
    kind = type(value)
    if kind in _PLAIN or not issubclass(kind, Iterator):
        return value, value
    result = sys.modules.get("sqlalchemy.engine.result")
    if result is not None and issubclass(kind, (result.Result, result.FilterResult)):
        if not issubclass(kind, result.Result):
            raise ResultReadOnce(f"returned a {kind.__name__}, which is read once and cannot be given back "
                            "after the comparison reads it: return its rows (.all()) instead")
        frozen = value.freeze()
        return frozen(), list(frozen.data)
    items = list(value)
    if issubclass(kind, types.GeneratorType):
        return (item for item in items), items
    return iter(items), items


_PLAIN = frozenset({str, bytes, int, float, bool, type(None), list, tuple, dict, set, frozenset})


class OrmSnapshot:
    """The identity and loaded column values of one ORM object when its path ended.

    ``class_name``: the mapped class's qualified name; ``identity``: its primary key as the
    Session knows it (a tuple), None for an object not persisted; ``values``:
    ``{attribute: value}`` of the column attributes that were loaded (an expired or
    deferred one is not read: a commit inside the path expires them all). Two snapshots
    are equal when their classes and identities are the same and every attribute loaded in
    both has equal values. Attribute access gives a value (``snapshot.name``), so that a
    ``compare=`` or ``ignore=`` written for the objects reads the copy the same way;
    ``AttributeError`` for an attribute that was not loaded.
    """

    __slots__ = ("class_name", "identity", "values")

    def __init__(self, class_name: str, values: dict[str, Any], identity: tuple[Any, ...] | None = None) -> None:
        self.class_name = class_name
        self.values = values
        self.identity = identity

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(f"{object.__getattribute__(self, 'class_name')}.{name} was not loaded "
                             "when the path ended (a shadow experiment compares a copy of what was)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OrmSnapshot):
            return NotImplemented
        if self.class_name != other.class_name or self.identity != other.identity:
            return False
        return all(self.values[key] == other.values[key] for key in self.values.keys() & other.values.keys())

    def __hash__(self) -> int:
        return hash(self.class_name)  # (equal snapshots may hold different keys: the class alone)

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={value!r}" for key, value in self.values.items())
        if not self.values and self.identity is not None:  # (all expired: the identity tells the row)
            shown = f"<expired, identity {self.identity!r}>"
        return f"{self.class_name}({shown})"


def taken(value: Any) -> Any:
    """``value`` with each SQLAlchemy ORM object in it (at any depth of lists, tuples, sets,
    frozensets, dict values, their subclasses, dataclass instances and ``Row`` objects)
    replaced by its :class:`OrmSnapshot`, in a copy of each container on the way (a subclass
    not named in the module docstring becomes the built-in type it derives from); the value
    itself when it holds none (also whenever SQLAlchemy's ORM was never imported)."""
    if "sqlalchemy.orm" not in sys.modules:
        return value
    return _taken(value, 0)


def _taken(value: Any, depth: int) -> Any:
    state = _state_of(value)
    if state is not None:
        return _snapshot(value, state)
    if depth > 20:  # (a structure this deep is compared as it is)
        return value
    kind = type(value)  # (type(): a lazy proxy is not evaluated)
    if issubclass(kind, dict):
        items = {key: _taken(item, depth + 1) for key, item in value.items()}
        if not any(items[key] is not value[key] for key in value):
            return value
        return _dict_like(value, kind, items)
    if issubclass(kind, (list, tuple, set, frozenset)):
        copied = [_taken(item, depth + 1) for item in value]
        if all(new is old for new, old in zip(copied, value)):
            return value
        return _sequence_like(value, kind, copied)
    row = sys.modules.get("sqlalchemy.engine.row")
    if row is not None and issubclass(kind, row.Row):
        copied = [_taken(item, depth + 1) for item in value]
        return value if all(new is old for new, old in zip(copied, value)) else tuple(copied)
    if dataclasses.is_dataclass(kind):
        return _dataclass_like(value, depth)
    return value


def _dict_like(value: Any, kind: type, items: dict[Any, Any]) -> Any:
    """A copy of the dict ``value`` holding ``items``, of its own type where that is known
    (``dict``, ``OrderedDict``, ``defaultdict``), else a plain dict."""
    if kind is dict:
        return items
    if issubclass(kind, defaultdict):
        return defaultdict(value.default_factory, items)
    if issubclass(kind, OrderedDict):
        return OrderedDict(items)
    return items


def _sequence_like(value: Any, kind: type, copied: list[Any]) -> Any:
    """A copy of the list, tuple or set ``value`` holding ``copied``, of its own type for the
    built-in ones and named tuples, else of the built-in type it derives from."""
    if kind is list:
        return copied
    if kind in _CONTAINERS:
        return kind(copied)
    if issubclass(kind, tuple) and hasattr(kind, "_fields") and hasattr(kind, "_make"):
        return kind._make(copied)  # a named tuple
    for base in (list, tuple, set, frozenset):
        if issubclass(kind, base):
            return copied if base is list else base(copied)
    return copied


def _dataclass_like(value: Any, depth: int) -> Any:
    """A shallow copy of the dataclass instance ``value`` whose fields holding ORM objects
    hold their snapshots (the instance itself when none does)."""
    changed = {}
    for item in dataclasses.fields(value):
        try:
            held = object.__getattribute__(value, item.name)
        except AttributeError:
            continue
        new = _taken(held, depth + 1)
        if new is not held:
            changed[item.name] = new
    if not changed:
        return value
    made = copy.copy(value)
    for name, new in changed.items():
        object.__setattr__(made, name, new)  # (a frozen dataclass's copy too)
    return made


def _state_of(value: Any) -> Any:
    """The SQLAlchemy instance state of a mapped object (read from its ``__dict__``: nothing
    of the object's own is called), else None."""
    try:
        found = object.__getattribute__(value, "__dict__").get("_sa_instance_state")
    except (AttributeError, TypeError):
        return None
    return found if getattr(found, "mapper", None) is not None else None


def _snapshot(value: Any, state: Any) -> OrmSnapshot:
    loaded = state.dict
    values = {prop.key: loaded[prop.key] for prop in state.mapper.column_attrs if prop.key in loaded}
    key = state.key  # (class, primary key, token) once persisted, else None
    return OrmSnapshot(type(value).__qualname__, values, tuple(key[1]) if key is not None else None)
