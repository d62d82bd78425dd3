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

from pytest_migsafe.tracebacks import hide_passed_through

_KINDS = inspect.Parameter


def with_signature_of(original: Callable[..., Any], body: str, namespace: dict[str, Any],
                      *, kind: str = "def", target: Callable[..., Any] | None = None,
                      follow_wrapped: bool = True) -> Callable[..., Any]:
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
    (see :mod:`~pytest_migsafe.queries.library_frames`). ``follow_wrapped=False``: the
    parameters of ``original`` itself, not of the function it wraps (``__wrapped__``).
    Raises ``ValueError`` for a signature that cannot be read.
    """
    signature = inspect.signature(original, follow_wrapped=follow_wrapped)
    # (the generated wrapper's frame is hidden in a traceback an error only passed through:
    # pytest reads __tracebackhide__ in its globals, see pytest_migsafe.tracebacks)
    scope = {"__name__": getattr(original, "__module__", None) or "", "__tracebackhide__": hide_passed_through,
             **namespace, "_original": original if target is None else target}
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


def _form(function: Callable[..., Any]) -> tuple[Any, ...] | None:
    """What a caller can tell of ``function`` without calling it: its own parameters (name,
    kind, default value; not the function it wraps) and whether it is a coroutine, generator
    or async generator function; None when its signature cannot be read."""
    try:
        parameters = inspect.signature(function, follow_wrapped=False).parameters.values()
    except (TypeError, ValueError):
        return None
    return (tuple((p.name, p.kind, p.default) for p in parameters), inspect.iscoroutinefunction(function),
            inspect.isgeneratorfunction(function), inspect.isasyncgenfunction(function))


def keep_signature(original: Callable[..., Any], wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``wrapper`` (a driver or ORM method's replacement, which takes its arguments as
    ``*args, **kwargs`` or as the method takes them) as the method's callers see it:
    ``wrapper`` itself when its own parameters and kind are ``original``'s (its :func:`_form`),
    else ``wrapper`` behind a function generated with ``original``'s own parameters (its own:
    ``inspect.signature(..., follow_wrapped=False)`` of the result equals the original's)
    and of its kind (``async def``; a generator function, which delegates with ``yield from``
    to what ``wrapper`` returns). The result carries ``wrapper``'s attributes (its
    ``__wrapped__``, the marks of what it wraps). ``wrapper`` itself when ``original``'s
    signature cannot be read."""
    form = _form(original)
    if form is None or _form(wrapper) == form:
        return wrapper
    _, coroutine, generator, async_generator = form
    if async_generator:  # (none of the wrapped methods is one: kept as it is)
        return wrapper
    # (the layer's frame is left out of pytest's tracebacks of the driver's errors)
    if coroutine:
        body, kind = "    __tracebackhide__ = True\n    return await {call}\n", "async def"
    elif generator:
        body, kind = "    __tracebackhide__ = True\n    return (yield from {call})\n", "def"
    else:
        body, kind = "    __tracebackhide__ = True\n    return {call}\n", "def"
    try:
        made = with_signature_of(original, body, {}, kind=kind, target=wrapper, follow_wrapped=False)
    except (TypeError, ValueError):
        return wrapper
    made.__dict__.update(wrapper.__dict__)
    return made
