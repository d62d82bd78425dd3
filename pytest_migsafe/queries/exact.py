"""Wrappers with a driver method's exact parameter list, made from its signature.

A wrapper written ``def stream(self, *args, **kwargs)`` accepts any arguments and can only
be a plain function, a generator function or an async generator function as written. Where
the driver's method is a generator function (psycopg's ``Cursor.stream``) the wrapper must
be one too (``inspect.isgeneratorfunction`` and code that relies on it see no difference),
and a generator binds its arguments only when called: with ``*args`` a bad argument would
then surface at the first ``next()``, not at the call as without the wrapper. So the
wrapper is generated with the method's own parameters (names, kinds and default values, the
values themselves, not their text), and binding, errors included, is Python's own, at the
call, as for the driver.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

_KINDS = inspect.Parameter


def with_signature_of(original: Callable[..., Any], body: str, namespace: dict[str, Any],
                      *, kind: str = "def", target: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A function with ``original``'s parameters whose body is ``body``.

    ``body``: Python source of the statements (indented by 4 spaces), which may use every
    parameter by name, the names in ``namespace``, ``_original`` and ``{call}``: the call of
    ``_original`` with every parameter passed on as it was bound (positional ones by
    position, keyword-only ones by keyword, ``*args`` / ``**kwargs`` spread). ``kind``:
    ``"def"`` or ``"async def"``. ``target``: what ``{call}`` calls instead of ``original``
    (a wrapper taking any arguments, put behind the exact ones). The result carries
    ``original``'s name, qualified name, docstring, module and ``__wrapped__``
    (``functools.update_wrapper``); its code's file name is ``<migsafe ...>``, which the
    call-site walk steps over as library code, and its globals' ``__name__`` is
    ``original``'s module, which SQLAlchemy's warnings read to step over their own frames
    (see :mod:`~pytest_migsafe.queries.library_frames`).
    Raises ``ValueError`` for a signature that cannot be read.
    """
    signature = inspect.signature(original)
    scope = {"__name__": getattr(original, "__module__", None) or "", **namespace,
             "_original": original if target is None else target}
    params: list[str] = []
    call: list[str] = []
    previous = None
    for index, parameter in enumerate(signature.parameters.values()):
        default = ""
        if parameter.default is not _KINDS.empty:
            scope[f"_default_{index}"] = parameter.default
            default = f"=_default_{index}"
        if previous is _KINDS.POSITIONAL_ONLY and parameter.kind is not _KINDS.POSITIONAL_ONLY:
            params.append("/")
        if parameter.kind is _KINDS.KEYWORD_ONLY and previous not in (_KINDS.KEYWORD_ONLY, _KINDS.VAR_POSITIONAL):
            params.append("*")
        name = parameter.name
        if parameter.kind is _KINDS.VAR_POSITIONAL:
            params.append(f"*{name}")
            call.append(f"*{name}")
        elif parameter.kind is _KINDS.VAR_KEYWORD:
            params.append(f"**{name}")
            call.append(f"**{name}")
        elif parameter.kind is _KINDS.KEYWORD_ONLY:
            params.append(name + default)
            call.append(f"{name}={name}")
        else:
            params.append(name + default)
            call.append(name)
        previous = parameter.kind
    if previous is _KINDS.POSITIONAL_ONLY:
        params.append("/")
    name = original.__name__
    source = f"{kind} {name}({', '.join(params)}):\n" + body.replace("{call}", f"_original({', '.join(call)})")
    code = compile(source, f"<migsafe exact signature of {getattr(original, '__qualname__', name)}>", "exec")
    exec(code, scope)  # (our own source, built from parameter names only)
    wrapper: Callable[..., Any] = scope[name]
    functools.update_wrapper(wrapper, original)
    return wrapper


def exact_async(original: Callable[..., Any], wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapper`` (an ``async def`` that takes any arguments and passes them on to the
    driver's coroutine function ``original``) behind an ``async def`` with ``original``'s own
    parameters: a bad argument raises ``TypeError`` at the call, before any ``await``, as it
    does without the plugin (with ``*args`` it surfaced only when awaited, and a test of
    ``pytest.raises(TypeError)`` around the bare call failed). ``wrapper`` itself when
    ``original``'s signature cannot be read."""
    try:
        return with_signature_of(original, "    return await {call}\n", {}, kind="async def", target=wrapper)
    except ValueError:
        return wrapper
