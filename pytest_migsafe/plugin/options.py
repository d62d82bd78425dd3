"""Read a setting once, with one precedence rule: command line > environment > ini.

Modelled on pytest-timeout's ``get_env_settings``: every ``plugin_*`` module reads its
settings through :func:`get_setting`, so the rule lives in one place.
"""

from __future__ import annotations

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
