"""Migration 1: introduce connection pooling. Size it, compare it in shadow, cut over warm."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shop.pooling import engine_after, engine_before, handle_request
from sqlalchemy.engine import Engine

from pytest_migsafe import pool_size

SEEDED_USER = 1  # the first of the 20 users the conftest commits

# these tests send the same request many times on purpose (load, not an N+1)
pytestmark = pytest.mark.allow_n_plus_one("SELECT name FROM users WHERE id = ?", 200)


@pytest.fixture
def before(migsafe_postgres) -> Iterator[Engine]:
    """The old access path: a new connection per request."""
    engine = engine_before(migsafe_postgres.url)
    yield engine
    engine.dispose()


@pytest.fixture
def after(migsafe_postgres) -> Iterator[Engine]:
    """The new access path: a pool sized for 800 requests/s at 5 ms a query."""
    engine = engine_after(migsafe_postgres.url, pool_size=pool_size(800, 0.005))
    yield engine
    engine.dispose()


def test_pool_size_follows_the_playbook() -> None:
    """ceil(peak_rps x avg_query_seconds x 1.3)."""
    assert pool_size(800, 0.012) == 13
    assert pool_size(800, 0.005) == 6


@pytest.mark.pool(max_created=1, max_checked_out=1, leaks=0)
def test_pooled_requests_reuse_one_connection(after: Engine) -> None:
    """Twenty sequential requests on the pool: one connection created, never two at once."""
    for _ in range(20):
        handle_request(after, SEEDED_USER)


def test_new_connection_per_request_is_not_warm(before: Engine, assert_pool_warm) -> None:
    """The cut-over monitor rejects the old path: it creates a connection per request."""
    with pytest.raises(pytest.fail.Exception, match="created"):
        assert_pool_warm(before, lambda: handle_request(before, SEEDED_USER), warmup=3, repeat=20)


def test_pool_is_warm_after_warm_up(after: Engine, assert_pool_warm) -> None:
    """...and accepts the new one: near-zero connections created once warm."""
    assert_pool_warm(after, lambda: handle_request(after, SEEDED_USER), warmup=3, repeat=50)


def test_pool_in_shadow_behaves_like_the_old_path(before: Engine, after: Engine, shadow) -> None:
    """Same answers, same queries, p99 latency not worse, error rate flat."""
    from sqlalchemy import text

    with after.connect() as conn:
        ids = conn.execute(text("SELECT id FROM users ORDER BY id LIMIT 10")).scalars().all()
    result = shadow.run_many("pooling", lambda uid: handle_request(before, uid),
                             lambda uid: handle_request(after, uid), ids, repeat=3)
    result.assert_error_rate_flat()
    result.assert_p99_not_worse(tolerance=0.2)
