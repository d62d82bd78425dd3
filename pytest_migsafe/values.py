"""Parsers of option values, shared by the pytest options and the ``migsafe`` command.

Each takes the text as given and returns the value, or raises ``ValueError`` with a
message that says what is expected (``argparse.ArgumentTypeError`` for the argparse
types); the caller names the option. Rates are fractions from 0 to 1 (0.8, not 80).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no/on/off`` (any case, surrounding spaces ignored) as a bool;
    anything else raises ``ValueError``."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_rate(text: str) -> float:
    """A rate, a fraction between 0 and 1 inclusive (``"0.8"`` -> 0.8); ``ValueError`` for
    text that is not a number or a number outside [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a rate between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"expected a rate between 0 and 1, got {text}")
    return value


def parse_positive_int(text: str) -> int:
    """A whole number above zero; ``ValueError`` for text that is not an integer, or below 1."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {text}")
    return value


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` from a parser that raises ``ValueError``: the error becomes an
    ``argparse.ArgumentTypeError`` with the same message, which argparse prints after the
    option's name. The returned function keeps the parser's ``__name__``."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def parse_tolerance(text: str) -> int:
    """A query tolerance, in statements per test: a whole number >= 0; ``ValueError`` for text
    that is not an integer, or below 0."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number of at least 0, got {text!r}") from None
    if value < 0:
        raise ValueError(f"expected a whole number of at least 0, got {text}")
    return value


def positive_number(text: str) -> float:
    """An argparse type: a positive finite number (the pool-size options, CLI and pytest alike:
    requests per second, milliseconds, a headroom multiplier); raises
    ``argparse.ArgumentTypeError`` for text that is not a number, 0 or below, inf or nan."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value
