"""The oldest release of each library migsafe hooks, and the check made before hooking one.

migsafe installs none of the drivers it measures (installing psycopg 3 beside an
application's psycopg2 would switch Django to it): it hooks those the project has. A
library older than migsafe supports (its private hook points, SQL texts and counters
differ) is left unhooked, and :data:`too_old` says which, for the plugin's summary: never
an error in the project's own tests.
"""

from __future__ import annotations

import importlib
import re
import sys

#: module name -> (distribution name, the oldest release migsafe hooks); .ci/run tests each
OLDEST: dict[str, tuple[str, tuple[int, ...]]] = {
    "sqlalchemy": ("SQLAlchemy", (2, 0, 20)),
    "psycopg": ("psycopg", (3, 1, 12)),
    "psycopg_pool": ("psycopg-pool", (3, 3, 0)),
    "redis": ("redis", (5, 0, 1)),
    "fakeredis": ("fakeredis", (2, 39, 0)),
}

#: module name -> the release found, for each library left unhooked as too old
too_old: dict[str, str] = {}
_checked: dict[str, tuple[object, bool]] = {}  # module name -> (the module checked, supported)


def release_of(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string: ``"2.0.20"`` -> ``(2, 0, 20)``, ``"3.1.12.dev1"``
    -> ``(3, 1, 12)``; ``()`` for a string without one."""
    found = re.match(r"\d+(?:\.\d+)*", text.strip())
    return tuple(int(part) for part in found.group(0).split(".")) if found else ()


def supported(name: str) -> bool:
    """False when module ``name`` (a key of :data:`OLDEST`) is imported and older than migsafe
    hooks (then noted in :data:`too_old`); True when it is supported, not imported yet, or its
    version cannot be read (``__version__``). Checked once per imported module object."""
    module = sys.modules.get(name)
    if module is None:
        return True
    checked = _checked.get(name)
    if checked is not None and checked[0] is module:
        return checked[1]
    version = getattr(module, "__version__", None)
    release = release_of(version) if isinstance(version, str) else ()
    ok = not release or release >= OLDEST[name][1]
    if not ok:
        too_old[name] = str(version)
    _checked[name] = (module, ok)
    return ok


def import_if_installed(*names: str) -> None:
    """Import each module of ``names`` that is installed and not imported yet (a missing one: skipped)."""
    for name in names:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                pass


def need(name: str, extra: str, what: str) -> None:
    """Raise ``ImportError`` naming ``what`` (a fixture) and the extra to install when module
    ``name`` is not installed (``migsafe_engine needs SQLAlchemy, which is not installed: pip
    install 'pytest-migsafe[sqlalchemy]'``)."""
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError as error:
        dist = OLDEST[name][0] if name in OLDEST else name
        raise ImportError(f"{what} needs {dist}, which is not installed: "
                          f"pip install 'pytest-migsafe[{extra}]'") from error


def describe_too_old() -> list[str]:
    """One line for each library left unhooked as too old (see :data:`too_old`)."""
    lines = []
    for name, version in sorted(too_old.items()):
        dist, oldest = OLDEST[name]
        lines.append(f"{dist} {version} is older than {'.'.join(map(str, oldest))}, the oldest migsafe "
                     f"measures: nothing it does is counted (pip install '{dist}>={'.'.join(map(str, oldest))}')")
    return lines
