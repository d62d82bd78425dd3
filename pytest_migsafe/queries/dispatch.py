"""The one dispatch every driver hook calls, and the registry of active counters.

Driver hooks (:mod:`pytest_migsafe.queries.sqlalchemy`, :mod:`pytest_migsafe.queries.psycopg`)
call :func:`record_statement` once per statement sent through a cursor, after checking
``_active`` (a plain tuple read: the cost of a statement when nothing counts). Active
counters are global, not per thread or task, so statements run by other threads and
asyncio tasks while a counter is active count for it. This module imports no driver and
no counter class: the counters are handed to :func:`start`.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_migsafe.queries.callsite import call_site

if TYPE_CHECKING:
    from pytest_migsafe.queries.counter import QueryCounter


@dataclass
class CaptureSettings:
    """Session-wide capture settings; the plugin sets them from options and ini."""

    keep: int = 10_000
    include_transaction_control: bool = False
    capture_params: bool = False


settings = CaptureSettings()


# -- the registry of active counters ------------------------------------------------
_lock = threading.Lock()
_active: tuple[QueryCounter, ...] = ()


def start(counter: QueryCounter) -> None:
    """Make ``counter`` receive statements (the caller installs the driver hooks)."""
    global _active
    with _lock:
        _active = (*_active, counter)


def stop(counter: QueryCounter) -> None:
    """Stop ``counter`` from receiving statements."""
    global _active
    with _lock:
        _active = tuple(c for c in _active if c is not counter)


def is_active() -> bool:
    """True while at least one counter is active (driver hooks check this first)."""
    return bool(_active)


_shapes: dict[str, tuple[str, bool]] = {}
_SHAPES_MAX = 100_000


def shape_of(sql: str) -> tuple[str, bool]:
    """``(shape, is transaction control)`` of a statement, from a plain dict after the first time."""
    entry = _shapes.get(sql)
    if entry is None:
        from pytest_migsafe.queries.normalize import (  # loaded at the first statement
            is_transaction_control,
            normalize,
        )

        if len(_shapes) >= _SHAPES_MAX:
            _shapes.clear()
        entry = _shapes[sql] = (normalize(sql), is_transaction_control(sql))
    return entry


def record_statement(sql: str, seconds: float, target: str, batch_size: int = 1,
                     params: Any = None, site: str | None = None) -> None:
    """Record one statement for every active counter. Called by the driver hooks."""
    counters = _active
    if not counters:
        return
    entry = _shapes.get(sql)
    if entry is None:
        entry = shape_of(sql)
    shape, control = entry
    if site is None:
        site = call_site(sys._getframe(1))
    kept = params if settings.capture_params else None
    with _lock:
        for counter in counters:
            if control and not counter.include_transaction_control:
                continue
            if counter._filtered and not counter._accepts(sql, target):
                continue
            counter._add(sql, shape, seconds, site, target, batch_size, kept)


