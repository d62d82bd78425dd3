"""Run a callback right after a watched top-level module is first imported.

The driver hooks of :mod:`pytest_migsafe.queries` and :mod:`pytest_migsafe.pool` are
installed only for drivers already imported (importing SQLAlchemy into a suite that never
uses it would cost every user). A driver first imported later (in a fixture, or in a
test's own body) must still be measured from its first statement: :func:`watch` puts a
finder on ``sys.meta_path`` that, for the watched names only, wraps the module's loader
so that the callback runs once the module has finished executing (its submodules
included: ``import sqlalchemy`` has loaded ``sqlalchemy.pool`` by then).

The finder never loads anything itself: it asks the finders after it for the spec and
returns it with the loader wrapped, and returns None for every other name (one set
lookup per import of a module not yet in ``sys.modules``).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

Callback = Callable[[str], None]


class _Watcher(importlib.abc.MetaPathFinder):
    """The ``sys.meta_path`` entry: wraps the loaders of the watched names."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callback]] = {}
        self.busy = threading.local()

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        """The spec the other finders give, its loader wrapped, for a watched name; else None."""
        if fullname not in self.callbacks or getattr(self.busy, "name", None) == fullname:
            return None
        self.busy.name = fullname  # the finders asked below must not come back here
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self.busy.name = None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(loader, self.callbacks[fullname], fullname)
        return spec


class _NotifyingLoader(importlib.abc.Loader):
    """A loader that runs the callbacks after the wrapped loader has executed the module."""

    def __init__(self, loader: Any, callbacks: list[Callback], name: str) -> None:
        self.loader = loader
        self.callbacks = callbacks
        self.name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        """What the wrapped loader creates."""
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: ModuleType) -> None:
        """Execute the module, restore its own loader, then run the callbacks."""
        self.loader.exec_module(module)
        _executed[self.name] = module  # (importlib still marks it initializing while the callbacks run)
        spec = getattr(module, "__spec__", None)
        if spec is not None:
            spec.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        for callback in list(self.callbacks):
            try:
                callback(self.name)
            except Exception:  # the import is the project's: a hook that cannot be installed
                pass  # must not fail it (the installers say what they left unhooked)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


_watcher: _Watcher | None = None
_executed: dict[str, ModuleType] = {}  # watched name -> its module, once executed (the last import's)


def ready(name: str) -> ModuleType | None:
    """``sys.modules[name]`` once it has finished executing; None when it is not imported, or
    is still being imported (a module another watched one imports first: ``psycopg_pool``
    imports ``psycopg``, whose callback runs while ``psycopg_pool`` is half made, its classes
    not defined yet; its own callbacks come once it is done, and see it ready)."""
    module = sys.modules.get(name)
    if module is None or _executed.get(name) is module:
        return module
    if getattr(getattr(module, "__spec__", None), "_initializing", False):
        return None
    return module


def watch(names: Sequence[str], callback: Callback) -> None:
    """Call ``callback(name)`` after each of ``names`` (top-level modules) is imported.

    Names already in ``sys.modules`` are skipped (the caller installs their hooks itself).
    Each import calls it again if a name is imported afresh (a ``pytester`` run that
    restored ``sys.modules``); the callback must be idempotent.
    """
    global _watcher
    if _watcher is None:
        _watcher = _Watcher()
    for name in names:
        callbacks = _watcher.callbacks.setdefault(name, [])
        if callback not in callbacks:
            callbacks.append(callback)
    if _watcher not in sys.meta_path:
        sys.meta_path.insert(0, _watcher)


def unwatch(callback: Callback) -> None:
    """Stop calling ``callback``; the finder leaves ``sys.meta_path`` when nothing is watched."""
    if _watcher is None:
        return
    for name in list(_watcher.callbacks):
        callbacks = _watcher.callbacks[name]
        if callback in callbacks:
            callbacks.remove(callback)
        if not callbacks:
            del _watcher.callbacks[name]
    if not _watcher.callbacks and _watcher in sys.meta_path:
        sys.meta_path.remove(_watcher)
