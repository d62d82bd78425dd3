"""A pytest plugin that counts what SQLAlchemy itself reports around each test's call phase:
an independent count for an application on a database without ``pg_stat_statements`` (SQLite).

Load it with ``-p sa_events_conftest`` (``bench/realapps`` on ``PYTHONPATH``) and ``-p
no:migsafe`` (the count is the application's alone). Environment: ``SA_EVENTS_OUT``, where to
write JSON ``{nodeid: {"calls": int, "statements": [[statement, calls], ...], "connects": int,
"checkouts": int}}`` at session end, the format of ``pss_conftest.py`` plus the pool's figures,
so that ``compare_counts.py`` reads it as it reads the server's.

Counted during the call phase (the phase the plugin counts), as the outermost hook wrapper:
every ``after_cursor_execute`` event of every ``Engine`` (one per statement the driver ran,
an ``executemany`` one), except transaction control (``BEGIN``, ``COMMIT``, ``ROLLBACK``,
``SAVEPOINT``, ``RELEASE``), which the plugin leaves out by default; and the ``connect`` and
``checkout`` events of every ``Pool`` (connections created, pool checkouts).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Generator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|END)\b", re.IGNORECASE)
_state: dict[str, Any] = {"on": False, "statements": Counter(), "connects": 0, "checkouts": 0}
_results: dict[str, dict[str, Any]] = {}


@event.listens_for(Engine, "after_cursor_execute")
def _statement(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    if _state["on"] and not _CONTROL.match(statement):
        _state["statements"][statement] += 1


@event.listens_for(Pool, "connect")
def _connect(dbapi_connection: Any, record: Any) -> None:
    if _state["on"]:
        _state["connects"] += 1


@event.listens_for(Pool, "checkout")
def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    if _state["on"]:
        _state["checkouts"] += 1


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Count the events of the test's call phase."""
    _state.update(on=True, statements=Counter(), connects=0, checkouts=0)
    try:
        return (yield)
    finally:
        _state["on"] = False
        statements: Counter[str] = _state["statements"]
        _results[item.nodeid] = {"calls": sum(statements.values()), "statements": statements.most_common(),
                                 "connects": _state["connects"], "checkouts": _state["checkouts"]}


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the figures."""
    out = os.environ.get("SA_EVENTS_OUT")
    if out:
        with open(out, "w") as handle:
            json.dump(_results, handle, indent=0, sort_keys=True)
