"""Each path of a shadow experiment gets an input of its own.

Both paths are called with the same arguments; a path that changes them (appends to a list
it was given, pops a key of a dict) would hand the other path, when it runs second, an input
the test never gave, and the verdict would depend on which ran first. So the built-in
containers of the input (``list``, ``dict``, ``set``, ``tuple``, ``bytearray``,
``collections.deque``, exactly those types, nested at any depth) are copied for a path,
shared references and cycles kept as they are; every other object (an ORM instance, a
session, a client, a custom class) is passed as it is to both paths, as a caller would pass
it. A container of scalars alone is copied at C speed; an input nested deeper than Python's
recursion limit allows is passed as it is (shared, as before copies were made).
"""

from __future__ import annotations

from collections import deque
from typing import Any

_COPIED = frozenset({list, dict, set, tuple, bytearray, deque})


def own_copy(value: Any) -> Any:
    """``value`` with its built-in containers copied (see the module docstring); ``value``
    itself when it holds none, or when it is nested too deep to copy."""
    if type(value) not in _COPIED:
        return value
    try:
        return _copy(value, {})
    except RecursionError:
        return value


def _copy(value: Any, memo: dict[int, Any]) -> Any:
    """:func:`own_copy` of one value; ``memo``: ``id(original) -> copy`` of the containers
    copied so far (a container reached twice is copied once; a cycle is kept)."""
    kind = type(value)
    if kind not in _COPIED:
        return value
    key = id(value)
    if key in memo:
        return memo[key]
    made: Any
    if kind is list:
        if not _COPIED.intersection(map(type, value)):  # scalars (or other objects) alone
            made = memo[key] = value.copy()
            return made
        made = memo[key] = []
        made.extend(_copy(item, memo) for item in value)
    elif kind is dict:
        if not _COPIED.intersection(map(type, value.values())):
            made = memo[key] = value.copy()
            return made
        made = memo[key] = {}
        for name, item in value.items():
            made[name] = _copy(item, memo)
    elif kind is tuple:
        if not _COPIED.intersection(map(type, value)):
            return value  # (immutable, and nothing in it can change)
        items = tuple(_copy(item, memo) for item in value)
        if key in memo:  # a cycle through this tuple: its copy was made below it
            return memo[key]
        made = memo[key] = value if all(new is old for new, old in zip(items, value)) else items
    elif kind is deque:
        made = memo[key] = deque(maxlen=value.maxlen)
        made.extend(_copy(item, memo) for item in value)
    else:  # set, bytearray: their items are not containers that can change (hashable, ints)
        made = memo[key] = kind(value)
    return made
