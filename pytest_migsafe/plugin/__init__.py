"""The pytest plugin (entry point ``migsafe``): the wiring only, one module per capability.

Each module adds its options, ini keys, markers, fixtures and hooks; the logic they call
lives in the plain subpackages (``queries``, ``cache``, ``pool``, ``shadow``, ``report``,
``servers``). ``-p no:migsafe`` disables every part at once.

The parts (``PARTS``, registered by this module's ``pytest_addoption``):
:mod:`~pytest_migsafe.plugin.queries` (the real PostgreSQL, ``migsafe_db``, budgets, N+1,
and the one call-phase hook for every part),
:mod:`~pytest_migsafe.plugin.cache`, :mod:`~pytest_migsafe.plugin.pool`,
:mod:`~pytest_migsafe.plugin.shadow` and :mod:`~pytest_migsafe.plugin.report`. Their
helpers: :mod:`~pytest_migsafe.plugin.options` (CLI > environment > ini),
:mod:`~pytest_migsafe.plugin.markers`, :mod:`~pytest_migsafe.plugin.stash` (state under
``pytest.StashKey``), :mod:`~pytest_migsafe.plugin.record_keeper` (records handed to the
run report) and :mod:`~pytest_migsafe.plugin.report_session` (loaded only with a report
option).
"""

from __future__ import annotations

import importlib

import pytest

PARTS = (
    "pytest_migsafe.plugin.invocation",  # first: its pytest_addoption keeps the parser the others fill
    "pytest_migsafe.plugin.queries",
    "pytest_migsafe.plugin.cache",
    "pytest_migsafe.plugin.pool",
    "pytest_migsafe.plugin.shadow",
    "pytest_migsafe.plugin.explain",
    "pytest_migsafe.plugin.report",
    "pytest_migsafe.plugin.servers",
)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Register the parts, in order (pytest calls this hook as this module registers, and calls
    each part's own ``pytest_addoption`` as the part registers). A part blocked with ``-p no:NAME``
    is left out.

    Not through ``pytest_plugins``: pytest 9 looks each name listed there up in the entry
    points of every installed distribution first, eight scans of the environment at every start.
    """
    for name in PARTS:
        if pluginmanager.is_blocked(name) or pluginmanager.get_plugin(name) is not None:
            continue
        pluginmanager.register(importlib.import_module(name), name)
