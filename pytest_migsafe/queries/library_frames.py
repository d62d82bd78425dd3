"""Wrapper frames that SQLAlchemy's warnings step over, as they step over its own.

SQLAlchemy attributes a warning (``SAWarning``, deprecations) to the first frame outside its
package, told by the frame's module name (``f_globals["__name__"]``): a migsafe wrapper
between two of its frames (around ``Session._flush``, a loader, a pool checkout) became that
frame, so its warnings pointed at ``pytest_migsafe/...`` instead of the user's line, and a
``filterwarnings`` entry naming the user's module stopped matching them. :func:`relabelled`
gives such a wrapper a copy of its module's globals whose ``__name__`` is the wrapped
library function's module: the code, file name and line numbers stay migsafe's (tracebacks
show them as they are); only the module name SQLAlchemy reads changes.

The copy is taken when the wrapper is made (at install, after the module has loaded), once
per module and name: the wrappers read their module's names (functions, modules, mutable
containers) and never rebind one.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

# (id of a module's globals, module name given) -> the globals' copy so named; the module's
# globals are kept alive by the functions made from them
_scopes: dict[tuple[int, str], dict[str, Any]] = {}


def relabelled(function: Callable[..., Any], module: str, **names: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a plain Python function) with globals named ``module``; ``names``: other
    functions of its module, relabelled the same way, that it calls by name (their frames
    are on the stack too). A function that is not a plain one is returned as it is."""
    if not isinstance(function, types.FunctionType):
        return function
    base = function.__globals__
    key = (id(base), module)
    scope = _scopes.get(key)
    if scope is None:
        scope = _scopes[key] = {**base, "__name__": module}
    for name, other in names.items():
        if isinstance(other, types.FunctionType) and other.__globals__ is base:
            twin = types.FunctionType(other.__code__, scope, other.__name__, other.__defaults__, other.__closure__)
            _same_names(twin, other)
            scope[name] = twin
    made = types.FunctionType(function.__code__, scope, function.__name__, function.__defaults__,
                              function.__closure__)
    _same_names(made, function)
    return made


def _same_names(made: types.FunctionType, function: types.FunctionType) -> None:
    """``made`` named and documented as ``function``, with its attributes (``__wrapped__`` too)."""
    made.__kwdefaults__ = function.__kwdefaults__
    made.__qualname__ = function.__qualname__
    made.__doc__ = function.__doc__
    made.__module__ = function.__module__
    made.__annotations__ = function.__annotations__
    made.__dict__.update(function.__dict__)
