"""Which row a per-row ORM load is for: a number per row object, never reused.

The N+1 rule counts the parent rows a relationship was lazy-loaded for (a suspect from the
second parent). ``id(instance)`` is not a row's identity: CPython reuses a freed object's
address, and rows streamed in chunks (Django's ``.iterator(chunk_size=...)``, SQLAlchemy's
``yield_per``) are freed as the loop goes on, so twelve parents counted as three to ten,
differently from run to run. :func:`row_number` gives each live row object its own number,
held through a weak reference (the object is not kept alive); the entry goes when the
object does.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

_numbers = itertools.count(1)
# id(row object) -> (a weak reference to it, its number); an entry leaves with its object
_known: dict[int, tuple[weakref.ref[Any], int]] = {}


def row_number(row: Any) -> int:
    """The number of the row object ``row`` (an ORM instance, or SQLAlchemy's InstanceState):
    the same for as long as it lives, never another object's. An object that cannot be
    weakly referenced is numbered by its ``id()`` (unique while it lives)."""
    key = id(row)
    known = _known.get(key)
    if known is not None and known[0]() is row:
        return known[1]

    def gone(ref: weakref.ref[Any], key: int = key) -> None:
        entry = _known.get(key)
        if entry is not None and entry[0] is ref:
            del _known[key]

    try:
        ref = weakref.ref(row, gone)
    except TypeError:
        return -key  # negative: never a number given here
    number = next(_numbers)
    _known[key] = (ref, number)
    return number
