"""A readable difference between what the control and the candidate produced.

Values are printed with :func:`pprint.pformat` (dicts sorted, long structures wrapped
one item a line) and compared line by line with :mod:`difflib`, so a mismatch deep in a
nested structure shows as a few ``-``/``+`` lines rather than two long reprs.
"""

from __future__ import annotations

import difflib
import pprint
import reprlib
from typing import Any

WIDTH = 80
_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6


def describe_error(error: BaseException) -> str:
    """``ValueError: message``: the type's qualified name (prefixed with its module unless
    builtins or ``__main__``), then the message; only the name when the message is empty."""
    name = type(error).__qualname__
    module = type(error).__module__
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    message = str(error)
    return f"{name}: {message}" if message else name


def value_diff(control: Any, candidate: Any, width: int = WIDTH) -> str:
    """A unified diff of the two values' :func:`pprint.pformat` forms (lines of ``width``
    characters at most), ``control`` as the old side, 3 lines of context. When both print
    alike, one sentence saying so with both types."""
    old = pprint.pformat(control, width=width).splitlines()
    new = pprint.pformat(candidate, width=width).splitlines()
    if old == new:
        kinds = f"{type(control).__name__} vs {type(candidate).__name__}"
        return (f"both print as {shorten_repr(control)} ({kinds}), "
                f"but the comparison reported them different")
    lines = difflib.unified_diff(old, new, fromfile="control", tofile="candidate", lineterm="", n=3)
    return "\n".join(lines)


def outcome_diff(control_value: Any, control_error: BaseException | None,
                 candidate_value: Any, candidate_error: BaseException | None) -> str:
    """What each path produced: :func:`value_diff` when neither raised, else two lines,
    ``control returned ...`` / ``control raised Type: message`` and the same for the
    candidate."""
    if control_error is None and candidate_error is None:
        return value_diff(control_value, candidate_value)
    return "\n".join([
        "control " + _outcome(control_value, control_error),
        "candidate " + _outcome(candidate_value, candidate_error),
    ])


def _outcome(value: Any, error: BaseException | None) -> str:
    if error is not None:
        return f"raised {describe_error(error)}"
    return f"returned {shorten_repr(value, 200)}"


def shorten_repr(value: Any, width: int = 60) -> str:
    """``repr(value)`` cut to at most ``width`` characters (strings over 60 characters and
    containers over 6 items elided by :mod:`reprlib`, then ``...`` at the cut)."""
    text = _short.repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def indent(text: str, prefix: str = "    ") -> str:
    """Every line of ``text`` with ``prefix`` in front (joined by newlines)."""
    return "\n".join(prefix + line for line in text.splitlines())
