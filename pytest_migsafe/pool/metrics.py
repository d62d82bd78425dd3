"""Prometheus: ``db_connections_created_total``, one increment per new database connection.

Only when ``prometheus_client`` is importable. The counter (label ``pool``: the pool's
name, see :func:`pytest_migsafe.pool.targets.describe_pool`) is created on first use and
registered once in the default registry. Every connection the pool hooks observe counts,
in a test run or in an application::

    from pytest_migsafe.pool import metrics

    metrics.install()            # every SQLAlchemy engine and psycopg_pool pool
    engine = metrics.instrument(create_engine(url))   # or name one explicitly
    # the default registry now exposes db_connections_created_total{pool="..."}
"""

from __future__ import annotations

import sys
import threading
from typing import Any

METRIC = "db_connections_created"  # exposed as db_connections_created_total
HELP = "Database connections opened by connection pools (SQLAlchemy, psycopg_pool)."

_lock = threading.Lock()
_counter: Any = None
_module: Any = None  # the prometheus_client module the counter was registered with
_unavailable = False


def counter() -> Any:
    """The ``db_connections_created_total`` Counter, or None without prometheus_client.

    Created again if prometheus_client was imported afresh (a pytester run restores
    ``sys.modules``), so the counter always lives in the current default registry.
    """
    global _counter, _module, _unavailable
    if _unavailable:
        return None
    if _counter is not None and sys.modules.get("prometheus_client") is _module:
        return _counter
    with _lock:
        try:
            import prometheus_client
        except ImportError:
            _unavailable = True
            return None
        if _counter is None or prometheus_client is not _module:
            registry = prometheus_client.REGISTRY
            existing = getattr(registry, "_names_to_collectors", {}).get(METRIC + "_total")
            _counter = existing if existing is not None else prometheus_client.Counter(METRIC, HELP, ["pool"])
            _module = prometheus_client
    return _counter


def count_connection(pool: Any) -> None:
    """Add one new connection of ``pool`` to the counter (no-op without prometheus_client)."""
    if _unavailable:
        return
    metric = counter()
    if metric is not None:
        from pytest_migsafe.pool.targets import describe_pool

        metric.labels(pool=describe_pool(pool)).inc()


def listen() -> None:
    """Have every new connection of an observed pool counted (idempotent; no import of prometheus_client)."""
    from pytest_migsafe.pool import events

    if count_connection not in events.created_listeners:
        events.created_listeners.append(count_connection)


def install() -> bool:
    """Count new connections of every SQLAlchemy engine and psycopg_pool pool in the process.

    Returns False when prometheus_client is not importable (nothing is counted then).
    """
    from pytest_migsafe.pool import targets

    listen()
    targets.install()
    return counter() is not None


def instrument(engine_or_pool: Any) -> Any:
    """Count ``engine_or_pool``'s new connections (and name its pool); returns it unchanged.

    Accepts what :func:`pytest_migsafe.pool.observe.pool_stats` accepts; TypeError otherwise.
    Installs the same process-wide hooks as :func:`install`.
    """
    from pytest_migsafe.pool import psycopg as pool_psycopg
    from pytest_migsafe.pool import targets

    listen()
    targets.install()
    kind, obj = targets.classify(engine_or_pool)
    if kind == "psycopg":
        pool_psycopg.register(obj, fresh=False)
    counter()
    return engine_or_pool
