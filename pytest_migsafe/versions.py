"""The oldest release of each library migsafe hooks, and the check made before hooking one.

migsafe installs none of the drivers it measures (installing psycopg 3 beside an
application's psycopg2 would switch Django to it): it hooks those the project has. A
library older than migsafe supports (its private hook points, SQL texts and counters
differ) is left unhooked, and so is a stub a project put in ``sys.modules`` in its place;
:data:`not_measured` says which, for the plugin's summary: never an error in the project's
own tests.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from types import ModuleType

from pytest_migsafe import imports

#: module name -> (distribution name, the oldest release migsafe hooks, what migsafe does not
#: measure while it is unhooked); .ci/run tests each floor
OLDEST: dict[str, tuple[str, tuple[int, ...], str]] = {
    "sqlalchemy": ("SQLAlchemy", (2, 0, 20),
                   "its statements (except those sent through psycopg 3, which migsafe counts there), pool checkouts and ORM lazy loads are not measured"),
    "psycopg": ("psycopg", (3, 1, 12),
                "statements sent through psycopg 3 directly (and Django's) are not counted"),
    "psycopg_pool": ("psycopg-pool", (3, 3, 0),
                     "its pools' checkouts, waits and leaks are not measured (connections created are, from "
                     "its stats, for a pool named to pool_stats or assert_pool_warm)"),
    "django": ("Django", (4, 2), "its statements on SQLite, MySQL, Oracle and PostgreSQL over psycopg2 are not "
                                 "counted (those sent through psycopg 3 are, at the driver)"),
    "redis": ("redis", (5, 0, 1), "Redis commands are not counted: no hits, misses or cache checks"),
    "fakeredis": ("fakeredis", (2, 39, 0),
                  "reads inside its Lua scripts and SORT's lookups are not counted (its other commands are, "
                  "through redis-py)"),
}

#: module name -> why migsafe left that library unhooked (one line each, for the plugin's summary)
not_measured: dict[str, str] = {}
_checked: dict[str, tuple[object, bool]] = {}  # module name -> (the module checked, supported)


def release_of(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string: ``"2.0.20"`` -> ``(2, 0, 20)``, ``"3.1.12.dev1"``
    -> ``(3, 1, 12)``; ``()`` for a string without one."""
    found = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in found.group(0).split(".")) if found else ()


def supported(name: str) -> bool:
    """False when module ``name`` (a key of :data:`OLDEST`) is imported but is not the library
    (a stub in ``sys.modules``: not a module) or is older than migsafe hooks (then the reason is
    in :data:`not_measured`); True when it is supported, not imported yet, or of a version that
    cannot be read. Checked once per imported module object."""
    module = sys.modules.get(name)
    if module is None:
        return True
    checked = _checked.get(name)
    if checked is not None and checked[0] is module:
        return checked[1]
    reason = _why_unsupported(name, module)
    if reason is not None:
        not_measured[name] = reason
    _checked[name] = (module, reason is None)
    return reason is None


def _why_unsupported(name: str, module: object) -> str | None:
    dist, oldest, lost = OLDEST[name]
    if not isinstance(module, ModuleType):
        return f"{dist}: sys.modules[{name!r}] is a {type(module).__name__}, not the library (a stub): {lost}"
    version = getattr(module, "__version__", None)
    if not isinstance(version, str):
        return None  # (a module stub without a version is caught by install_guarded)
    release = release_of(version)
    if release and release < oldest:
        floor = ".".join(map(str, oldest))
        return f"{dist} {version} is older than {floor}, the oldest migsafe hooks: {lost} (pip install '{dist}>={floor}')"
    return None


def install_guarded(name: str, install: Callable[..., object], *args: object, part: str = "",
                    lost: str = "") -> bool:
    """Run ``install(*args)``, the hooks of library ``name``, if :func:`supported`; an exception
    (a module stub without the classes hooked, a library changed beyond what migsafe knows)
    leaves the library unhooked, with the reason in :data:`not_measured`, and never reaches the
    caller: a test, an import, the session's configure. Tried again at the next install (a stub
    set for one test is gone by then). ``part`` names the part hooked (``"ORM loaders"``) and
    ``lost`` what is then not measured, when not the whole library's."""
    if name in sys.modules and imports.ready(name) is None:
        return False  # still being imported: hooked when its import ends (see imports.ready)
    if not supported(name):
        return False
    key = f"{name} {part}".strip()
    try:
        installed = bool(install(*args))
    except Exception as error:
        dist, _, whole = OLDEST[name]
        text = f"{type(error).__name__}: {error}"
        what = f"{dist} ({part})" if part else dist
        not_measured[key] = f"{what}: migsafe could not hook it ({text[:200]}): {lost or whole}"
        return False
    not_measured.pop(key, None)  # hooked now, or nothing to hook (the stub of an earlier test is gone)
    return installed


def import_if_installed(*names: str) -> None:
    """Import each module of ``names`` that is installed and not imported yet (a missing one: skipped)."""
    for name in names:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # missing, or a stub of a submodule that breaks its import
                pass


def need(name: str, extra: str, what: str) -> None:
    """Raise ``ImportError`` naming ``what`` (a fixture) and the extra to install when module
    ``name`` is not installed (``migsafe_engine needs SQLAlchemy, which is not installed: pip
    install 'pytest-migsafe[sqlalchemy]'``)."""
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        dist = OLDEST[name][0] if name in OLDEST else name
        raise ImportError(f"{what} needs {dist}, which is not installed: "
                          f"pip install 'pytest-migsafe[{extra}]'") from None


def describe_not_measured() -> list[str]:
    """One line for each library left unhooked (see :data:`not_measured`), by module name."""
    return [not_measured[name] for name in sorted(not_measured)]
