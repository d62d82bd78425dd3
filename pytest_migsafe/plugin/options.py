"""Read a setting once, with one precedence rule: command line > environment > ini.

Modelled on pytest-timeout's ``get_env_settings``: every ``plugin_*`` module reads its
settings through :func:`get_setting`, so the rule lives in one place.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def get_setting(
    config: pytest.Config,
    *,
    option: str | None = None,
    env: str | None = None,
    ini: str | None = None,
    parse: Callable[[str], T] = str,  # type: ignore[assignment]
    default: Any = None,
) -> Any:
    """The value of one setting: ``--option`` first, then ``$env``, then the ini key.

    ``option`` is the argparse dest (``migsafe_postgres_url``). A value that ``parse``
    rejects raises :class:`pytest.UsageError` naming where it came from.
    """
    if option is not None:
        value = config.getoption(option, default=None)
        if value not in (None, ""):
            return value
    if env is not None and os.environ.get(env):
        raw = os.environ[env]
        try:
            return parse(raw)
        except (TypeError, ValueError) as exc:
            raise pytest.UsageError(f"migsafe: environment variable {env}={raw!r}: {exc}") from exc
    if ini is not None:
        raw = config.getini(ini)
        if raw not in (None, "", []):
            if isinstance(raw, str):
                try:
                    return parse(raw)
                except (TypeError, ValueError) as exc:
                    raise pytest.UsageError(f"migsafe: ini option {ini} = {raw!r}: {exc}") from exc
            return raw
    return default


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no/on/off`` as a bool; anything else is an error."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def parse_rate(text: str) -> float:
    """A rate between 0 and 1 inclusive."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"expected a rate between 0 and 1, got {text}")
    return value


def parse_positive_int(text: str) -> int:
    """A whole number above zero."""
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {text}")
    return value


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` from a parser that raises ValueError: the message names the option."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def parse_tolerance(text: str) -> int:
    """A query tolerance: a whole number >= 0."""
    value = int(text)
    if value < 0:
        raise ValueError(f"expected a whole number of at least 0, got {text}")
    return value
