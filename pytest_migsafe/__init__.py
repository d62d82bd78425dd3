"""pytest-migsafe: make backend migrations provably safe in a test suite.

Query budgets and N+1 detection, cache hit rates, pool behaviour, shadow comparisons and
a CI report. The public names are imported lazily, so ``import pytest_migsafe`` costs
nothing until one is used.

Public names and where they live: ``count_queries``, ``QueryCounter``,
``NPlusOneWarning`` (:mod:`pytest_migsafe.queries.counter`); ``assert_max_queries``,
``assert_num_queries``, ``QueryBudgetExceeded`` (:mod:`pytest_migsafe.queries.budgets`);
``assert_constant_queries`` (:mod:`pytest_migsafe.queries.scaling`); ``cache_stats``
(:mod:`pytest_migsafe.cache.stats`); ``assert_cache_aside``
(:mod:`pytest_migsafe.cache.aside`); ``hot_reads`` (:mod:`pytest_migsafe.cache.hot_reads`);
``pool_stats``, ``ConnectionLeakWarning`` (:mod:`pytest_migsafe.pool.observe`); ``assert_pool_warm``
(:mod:`pytest_migsafe.pool.warm`); ``pool_size`` (:mod:`pytest_migsafe.pool.sizing`).
The pytest wiring is :mod:`pytest_migsafe.plugin`; the ``migsafe`` command is
:mod:`pytest_migsafe.cli`. Units throughout: durations in milliseconds (``*_ms``) unless
named in seconds, rates as fractions from 0 to 1.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "count_queries": "pytest_migsafe.queries.counter",
    "QueryCounter": "pytest_migsafe.queries.counter",
    "NPlusOneWarning": "pytest_migsafe.queries.counter",
    "assert_max_queries": "pytest_migsafe.queries.budgets",
    "assert_num_queries": "pytest_migsafe.queries.budgets",
    "QueryBudgetExceeded": "pytest_migsafe.queries.budgets",
    "assert_constant_queries": "pytest_migsafe.queries.scaling",
    "cache_stats": "pytest_migsafe.cache.stats",
    "assert_cache_aside": "pytest_migsafe.cache.aside",
    "hot_reads": "pytest_migsafe.cache.hot_reads",
    "pool_stats": "pytest_migsafe.pool.observe",
    "ConnectionLeakWarning": "pytest_migsafe.pool.observe",
    "assert_pool_warm": "pytest_migsafe.pool.warm",
    "pool_size": "pytest_migsafe.pool.sizing",
}

__all__ = ["ConnectionLeakWarning", "NPlusOneWarning", "QueryBudgetExceeded", "QueryCounter", "assert_cache_aside", "assert_constant_queries", "assert_max_queries", "assert_num_queries", "assert_pool_warm", "cache_stats", "count_queries", "hot_reads", "pool_size", "pool_stats"]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (then cached in this module).

    Raises ``AttributeError`` for a name that is not public, and whatever importing its
    module raises.
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_migsafe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
