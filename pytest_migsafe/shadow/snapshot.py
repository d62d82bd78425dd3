"""A path's return value as it was when the path ended, for the comparison.

Both paths of a shadow experiment usually share one ORM Session: they return the same
identity-map object (``session.get(Account, 1)`` twice), and the savepoint rolled back
after each path expires it. Compared afterwards, both values show the rolled-back row, so
a candidate that wrote or returned another value matched. :func:`taken` copies the ORM
objects in a value while the path's state is still there: each SQLAlchemy mapped object
becomes an :class:`OrmSnapshot` of its loaded column values (no attribute is loaded for
it: no statement is sent), inside lists, tuples, sets, frozensets, dict values and
SQLAlchemy ``Row`` objects; everything else is kept as it is.
"""

from __future__ import annotations

import sys
from typing import Any

_CONTAINERS = (list, tuple, set, frozenset, dict)


class OrmSnapshot:
    """The loaded column values of one ORM object when its path ended.

    ``class_name``: the mapped class's qualified name; ``values``: ``{attribute: value}``
    of the column attributes that were loaded (an expired or deferred one is not read).
    Two snapshots are equal when their classes are the same and every attribute loaded in
    both has equal values. Attribute access gives a value (``snapshot.name``), so that a
    ``compare=`` or ``ignore=`` written for the objects reads the copy the same way;
    ``AttributeError`` for an attribute that was not loaded.
    """

    __slots__ = ("class_name", "values")

    def __init__(self, class_name: str, values: dict[str, Any]) -> None:
        self.class_name = class_name
        self.values = values

    def __getattr__(self, name: str) -> Any:
        values = object.__getattribute__(self, "values")
        if name in values:
            return values[name]
        raise AttributeError(f"{object.__getattribute__(self, 'class_name')}.{name} was not loaded "
                             "when the path ended (a shadow experiment compares a copy of what was)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OrmSnapshot):
            return NotImplemented
        if self.class_name != other.class_name:
            return False
        return all(self.values[key] == other.values[key] for key in self.values.keys() & other.values.keys())

    def __hash__(self) -> int:
        return hash(self.class_name)  # (equal snapshots may hold different keys: the class alone)

    def __repr__(self) -> str:
        shown = ", ".join(f"{key}={value!r}" for key, value in self.values.items())
        return f"{self.class_name}({shown})"


def taken(value: Any) -> Any:
    """``value`` with each SQLAlchemy ORM object in it (at any depth of lists, tuples, sets,
    frozensets, dict values and ``Row`` objects) replaced by its :class:`OrmSnapshot`; the
    value itself when it holds none (also whenever SQLAlchemy's ORM was never imported)."""
    if "sqlalchemy.orm" not in sys.modules:
        return value
    return _taken(value, 0)


def _taken(value: Any, depth: int) -> Any:
    state = _state_of(value)
    if state is not None:
        return _snapshot(value, state)
    if depth > 20:  # (a structure this deep is compared as it is)
        return value
    kind = type(value)
    if kind in _CONTAINERS:
        if kind is dict:
            items = {key: _taken(item, depth + 1) for key, item in value.items()}
            return items if any(items[key] is not value[key] for key in value) else value
        copied = [_taken(item, depth + 1) for item in value]
        if all(new is old for new, old in zip(copied, value)):
            return value
        return copied if kind is list else kind(copied)
    row = sys.modules.get("sqlalchemy.engine.row")
    if row is not None and issubclass(kind, row.Row):  # (type(): a lazy proxy is not evaluated)
        copied = [_taken(item, depth + 1) for item in value]
        return value if all(new is old for new, old in zip(copied, value)) else tuple(copied)
    return value


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
    return OrmSnapshot(type(value).__qualname__, values)
