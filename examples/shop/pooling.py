"""Migration 1: connection pooling. The shop's database access before and after."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool


def engine_before(url: str) -> Engine:
    """Before: a new database connection for every request (no pool)."""
    return create_engine(url, poolclass=NullPool)


def engine_after(url: str, pool_size: int = 5) -> Engine:
    """After: a pool of ``pool_size`` connections, sized with ``migsafe pool-size``."""
    return create_engine(url, pool_size=pool_size, max_overflow=2, pool_timeout=5)


def handle_request(engine: Engine, user_id: int) -> str | None:
    """One request of the shop: look up a user's name."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT name FROM users WHERE id = :id"), {"id": user_id}).scalar()
