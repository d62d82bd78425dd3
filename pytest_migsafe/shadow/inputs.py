"""Each path of a shadow experiment gets an input of its own.

Both paths are called with the same arguments; a path that changes them (appends to a list
it was given, pops a key of a dict) would hand the other path, when it runs second, an input
the test never gave, and the verdict would depend on which ran first. So the built-in
containers of the input (``list``, ``dict``, ``set``, ``tuple``, ``bytearray``,
``collections.deque``, exactly those types, nested at any depth) are copied for each path,
shared references and cycles kept as they are; every other object (an ORM instance, a
session, a client, a custom class) is passed as it is to both paths, as a caller would pass
it.
"""

from __future__ import annotations

from collections import deque
from typing import Any

_COPIED = frozenset({list, dict, set, tuple, bytearray, deque})


def own_copy(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """``value`` with its built-in containers copied (see the module docstring); ``value``
    itself when it holds none. ``memo``: ``id(original) -> copy`` of the containers copied
    so far (a container reached twice is copied once)."""
    kind = type(value)
    if kind not in _COPIED:
        return value
    if memo is None:
        memo = {}
    key = id(value)
    if key in memo:
        return memo[key]
    if kind is tuple:
        items = tuple(own_copy(item, memo) for item in value)
        made: Any = value if all(new is old for new, old in zip(items, value)) else items
    elif kind is list:
        made = memo[key] = []
        made.extend(own_copy(item, memo) for item in value)
    elif kind is dict:
        made = memo[key] = {}
        for name, item in value.items():
            made[name] = own_copy(item, memo)
    elif kind is deque:
        made = memo[key] = deque(maxlen=value.maxlen)
        made.extend(own_copy(item, memo) for item in value)
    else:  # set, bytearray: their items are not containers that can change (hashable, ints)
        made = kind(value)
    memo[key] = made
    return made
