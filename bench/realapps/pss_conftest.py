"""A pytest plugin that reads the server's own statement counts around each test's call phase.

Load it with ``-p pss_conftest`` (``bench/realapps`` on ``PYTHONPATH``). Environment:

- ``PSS_DSN``: libpq conninfo of a database where the ``pg_stat_statements`` extension
  exists (the view shows every database's statements; ours are filtered out by ``dbid``);
- ``PSS_DBNAME``: the database the application's statements run in (``app``,
  ``test_allauth``...); only its statements are counted;
- ``PSS_OUT``: where to write the figures, JSON ``{nodeid: {"calls": int, "statements":
  [[query, calls], ...]}}``, written at session end.

Around each test's call phase (the phase the plugin counts), as the outermost hook
wrapper: ``pg_stat_statements_reset()`` before, then the sum of ``calls`` of the
statements of ``PSS_DBNAME`` after. For a unittest-style test (``unittest.TestCase``,
Django's ``TestCase``), whose call phase also runs ``setUp``, ``tearDown``, cleanups and
Django's per-test fixture handling, the window is the test method alone, as the plugin's
(README "What is counted"): the method is wrapped both on the item (pytest's own
``runtest`` calls ``item.obj``) and on the instance (pytest-django's replacement
``runtest`` calls the instance's method), and the wrapper calls the method as it was
before any other plugin wrapped it. Transaction control (``BEGIN``, ``START
TRANSACTION``, ``COMMIT``, ``END``, ``ROLLBACK``, ``ABORT``, ``SAVEPOINT``, ``RELEASE``,
``ROLLBACK TO``) excluded, as the plugin excludes it by default. The test's teardown
phase is read too, on its own (reset after the call phase's read): ``"teardown":
{"calls": int, "statements": [...]}`` beside the call phase's figures. PostgreSQL records
a statement sent with the extended protocol (psycopg's, with parameters) when its portal
closes: at that connection's next statement or at the end of its transaction. A statement
that a session left idle in a transaction at the end of the call phase (a fixture's
session, closed at teardown) is therefore recorded in the teardown window, not the
call's (``explain_counts.py``). The reads go through ``psycopg.pq.PGconn`` directly (no
``Connection``/``Cursor``), on their own connection to another database, so neither the
plugin nor the count sees them.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Generator
from typing import Any

import pytest
from psycopg import pq

_TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE)\b", re.IGNORECASE
)
_READ = (
    b"SELECT query, calls FROM pg_stat_statements"
    b" WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) AND calls > 0"
)


class _ServerCounts:
    """Resets and reads pg_stat_statements over one private libpq connection."""

    def __init__(self, dsn: str, dbname: str) -> None:
        self.conn = pq.PGconn.connect(dsn.encode())
        if self.conn.status != pq.ConnStatus.OK:
            raise RuntimeError(f"pss_conftest: cannot connect: {self.conn.get_error_message()}")
        self.dbname = dbname.encode()
        self.results: dict[str, dict[str, Any]] = {}

    def _exec(self, sql: bytes, params: list[bytes] | None = None) -> list[tuple[str, ...]]:
        res = self.conn.exec_params(sql, params or [])
        if res.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            raise RuntimeError(f"pss_conftest: {res.get_error_message()}")
        return [tuple((res.get_value(r, c) or b"").decode() for c in range(res.nfields))
                for r in range(res.ntuples)]

    def reset(self) -> None:
        self._exec(b"SELECT pg_stat_statements_reset()")

    def read(self, nodeid: str, phase: str = "call") -> None:
        rows = [(q, int(c)) for q, c in self._exec(_READ, [self.dbname])]
        kept = sorted(((q, c) for q, c in rows if not _TRANSACTION_CONTROL.match(q)), key=lambda r: -r[1])
        figures = {"calls": sum(c for _, c in kept), "statements": [list(r) for r in kept]}
        if phase == "call":
            self.results[nodeid] = figures
        else:
            self.results.setdefault(nodeid, {"calls": 0, "statements": []})[phase] = figures


_KEY = pytest.StashKey[_ServerCounts]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = _ServerCounts(os.environ["PSS_DSN"], os.environ["PSS_DBNAME"])


def _wrap_test_method(item: pytest.Item, counts: _ServerCounts) -> Callable[[], None] | None:
    """Measure a unittest-style test's method alone; returns the undo, or None for other tests."""
    unittest = sys.modules.get("unittest")
    cls = getattr(item, "cls", None)
    instance, method = getattr(item, "instance", None), getattr(item, "obj", None)
    if unittest is None or cls is None or not issubclass(cls, unittest.TestCase) or instance is None or method is None:
        return None
    name = item.name
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def measured_async(*args: Any, **kwargs: Any) -> Any:
            counts.reset()
            try:
                return await method(*args, **kwargs)
            finally:
                counts.read(item.nodeid)

        instance.__dict__[name] = measured_async
        return lambda: instance.__dict__.pop(name, None)

    @functools.wraps(method)
    def measured(*args: Any, **kwargs: Any) -> Any:
        counts.reset()
        try:
            return method(*args, **kwargs)
        finally:
            counts.read(item.nodeid)

    item.obj = measured  # type: ignore[attr-defined]
    instance.__dict__[name] = measured

    def undo() -> None:
        item.obj = method  # type: ignore[attr-defined]
        instance.__dict__.pop(name, None)

    return undo


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    counts = item.config.stash[_KEY]
    undo = _wrap_test_method(item, counts)
    if undo is None:
        counts.reset()
    try:
        yield
    finally:
        if undo is None:
            counts.read(item.nodeid)
        else:
            undo()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    counts = item.config.stash[_KEY]
    measured = item.nodeid in counts.results  # the call phase ran (not for a failed set-up)
    if measured:
        counts.reset()
    try:
        yield
    finally:
        if measured:
            counts.read(item.nodeid, "teardown")


def pytest_unconfigure(config: pytest.Config) -> None:
    counts = config.stash.get(_KEY, None)
    if counts is None:
        return
    with open(os.environ["PSS_OUT"], "w") as out:
        json.dump(counts.results, out, indent=1, sort_keys=True)
    counts.conn.finish()
