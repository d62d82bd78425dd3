"""The warm-pool check: once warmed up, repeating an action opens no new connections.

A pooled engine opens its connections during the first runs and reuses them after; an
engine without pooling (NullPool) opens one per run. :func:`assert_pool_warm` runs the
action ``warmup`` times, then ``repeat`` times, and fails when the measured runs opened
more than ``max_new`` connections, showing what each phase created.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pytest_migsafe.pool.observe import PoolObservation, pool_stats


@dataclass(frozen=True)
class WarmResult:
    """Connections created in each phase of a warm-pool check."""

    warmup_runs: int
    warmup_created: int
    measured_runs: int
    measured_created: int

    def describe(self) -> str:
        """``warm-up: 1 created in 5 runs; measured: 0 created in 50 runs``."""
        return (f"warm-up: {self.warmup_created} created in {self.warmup_runs} runs; "
                f"measured: {self.measured_created} created in {self.measured_runs} runs")


def _check_counts(warmup: Any, repeat: Any, max_new: Any) -> None:
    for name, value, least in (("warmup", warmup, 0), ("repeat", repeat, 1), ("max_new", max_new, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"assert_pool_warm: {name} must be a whole number >= {least}, got {value!r}")


def _created(stats: PoolObservation, measured: bool) -> int:
    """Connections a phase created; the measured phase warns when the action never used the pool
    (:class:`~pytest_migsafe.pool.observe.NothingObservedWarning`: the check proved nothing)."""
    return stats.created if measured else stats.snapshot().created


def _verdict(result: WarmResult, max_new: int) -> WarmResult:
    if result.measured_created > max_new:
        raise AssertionError(
            f"pool is not warm: {result.measured_created} connections created after warm-up, "
            f"expected at most {max_new}\n  {result.describe()}")
    return result


def assert_pool_warm(engine_or_pool: Any, action: Callable[[], Any], warmup: int = 5,
                     repeat: int = 50, max_new: int = 0) -> WarmResult:
    """Run ``action`` ``warmup`` then ``repeat`` times; AssertionError if the repeats created > ``max_new``.

    ``engine_or_pool`` is anything :func:`pytest_migsafe.pool.observe.pool_stats` accepts. For
    an ``async`` action use :func:`assert_pool_warm_async`.
    """
    _check_counts(warmup, repeat, max_new)
    created = []
    for phase, runs in enumerate((warmup, repeat)):
        with pool_stats(engine_or_pool) as stats:
            for _ in range(runs):
                outcome = action()
                if inspect.isawaitable(outcome):
                    if inspect.iscoroutine(outcome):
                        outcome.close()
                    raise TypeError("assert_pool_warm: action returned an awaitable; "
                                    "use 'await assert_pool_warm_async(...)' for async actions")
        created.append(_created(stats, measured=phase == 1))
    return _verdict(WarmResult(warmup, created[0], repeat, created[1]), max_new)


async def assert_pool_warm_async(engine_or_pool: Any, action: Callable[[], Awaitable[Any]],
                                 warmup: int = 5, repeat: int = 50, max_new: int = 0) -> WarmResult:
    """:func:`assert_pool_warm` for an async ``action`` (an AsyncEngine or AsyncConnectionPool)."""
    _check_counts(warmup, repeat, max_new)
    created = []
    for phase, runs in enumerate((warmup, repeat)):
        with pool_stats(engine_or_pool) as stats:
            for _ in range(runs):
                await action()
        created.append(_created(stats, measured=phase == 1))
    return _verdict(WarmResult(warmup, created[0], repeat, created[1]), max_new)
