"""Read a setting once, with one precedence rule: command line > environment > ini.

Modelled on pytest-timeout's ``get_env_settings``: every ``pytest_migsafe.plugin`` module reads its
settings through :func:`get_setting`, so the rule lives in one place.
"""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

# pytest 9.2 takes a type expression as addini's type (a union accepts any member's value)
_TYPE_EXPRESSIONS = tuple(int(part) for part in pytest.__version__.split(".")[:2] if part.isdigit()) >= (9, 2)


def ini_type(kind: type) -> Any:
    """``addini``'s ``type`` for a key whose value is a ``kind`` (bool, int or float).

    On pytest >= 9.2, ``kind | str``: a TOML configuration (``[tool.pytest]``, pytest 9's native
    mode) may write ``true`` or ``5`` unquoted (a plain string key rejects them: "expects a
    string, got bool"), and any text still reaches :func:`get_setting`'s own check, whose
    message names the key. On older pytest None (a string; its TOML values are strings)."""
    return kind | str if _TYPE_EXPRESSIONS else None


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
            if isinstance(raw, (bool, int, float)):  # a TOML value, or an ini text pytest typed (ini_type)
                raw = str(raw).lower() if isinstance(raw, bool) else str(raw)
            if isinstance(raw, str):
                try:
                    return parse(raw)
                except (TypeError, ValueError) as exc:
                    raise pytest.UsageError(f"migsafe: ini option {ini} = {raw!r}: {exc}") from exc
            return raw
    return default


def value_options(parser: pytest.Parser) -> set[str]:
    """The ``--migsafe-*`` option strings that take a value (``--migsafe-report-json``, not ``--migsafe-report``)."""
    names: set[str] = set()
    for option in parser.getgroup("migsafe").options:
        attrs = option.attrs()  # the argparse action's attributes (pytest >= 9), or addoption's keywords
        if attrs.get("nargs") != 0 and attrs.get("action") not in ("store_true", "store_false", "count", "help"):
            names.update(name for name in option.names() if name.startswith("--"))
    return names


_INI_FILES = (("pytest.ini", None), (".pytest.ini", None), ("pyproject.toml", "[tool.pytest"),
              ("tox.ini", "[pytest]"), ("setup.cfg", "[tool:pytest]"))


def _ini_above(start: Path) -> Path | None:
    """The first pytest configuration file at or above ``start``, the way pytest looks for one."""
    for directory in (start, *start.parents):
        for name, section in _INI_FILES:
            candidate = directory / name
            if candidate.is_file():
                if section is None:
                    return candidate
                try:
                    if section in candidate.read_text(encoding="utf-8", errors="replace"):
                        return candidate
                except OSError:
                    continue
    return None


def _env_addopts() -> list[str]:
    """``PYTEST_ADDOPTS`` split as pytest splits it ([] when unset or not splittable)."""
    try:
        return shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    except ValueError:  # an unclosed quote: pytest itself reports it
        return []


def check_space_form_paths(config: pytest.Config, value_options: set[str]) -> None:
    """Refuse ``--migsafe-OPTION PATH`` (space form) when it moved pytest's rootdir.

    pytest finds its rootdir and ini file from the command line's paths before any plugin
    is loaded, so it takes the value of ``--migsafe-report-json PATH`` for a test path: a
    PATH that exists outside the project moves the rootdir and the project's ini (with
    ``DJANGO_SETTINGS_MODULE`` and the like) is no longer read. Raises
    :class:`pytest.UsageError` saying what to write instead.
    """
    params = config.invocation_params
    # PYTEST_ADDOPTS goes before the command line's arguments when pytest looks for its rootdir
    from_env = _env_addopts()
    args = [*from_env, *params.args]
    if any(arg in ("-c", "--rootdir", "--config-file") or arg.startswith(("--rootdir=", "--config-file="))
           for arg in args):
        return  # the user named the rootdir or the ini file: nothing was guessed
    here = Path(params.dir)
    taken = []
    for flag, value in itertools.pairwise(args):
        if flag in value_options and not value.startswith("-") and (here / value).exists():
            taken.append((flag, value))
    if not taken:
        return
    paths = [Path(str(arg).split("::")[0]) for arg in config.args] if config.args else [here]
    paths = [(here / p).resolve() for p in paths if (here / p).exists()] or [here]
    common = Path(os.path.commonpath([str(p if p.is_dir() else p.parent) for p in paths]))
    expected = _ini_above(common)
    if expected is None or expected == config.inipath:
        return
    flag, value = taken[0]
    where = " (in PYTEST_ADDOPTS)" if (flag, value) in itertools.pairwise(from_env) else ""
    ini = flag.lstrip("-").replace("-", "_")
    try:
        config.getini(ini)
        instead = f", or set ini {ini} = {value}"
    except ValueError:  # this option has no ini key
        instead = ""
    raise pytest.UsageError(
        f"migsafe: {flag} {value}{where}: pytest took {value!r} for a test path when it looked for its "
        f"configuration, so it did not read {expected} (rootdir became {config.rootpath}). "
        f"Write {flag}={value} (with '='){instead}.")
