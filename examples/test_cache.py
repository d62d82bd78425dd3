"""Migration 2: add a caching layer. Cache-aside on the hottest read, with a hit-rate target."""

from __future__ import annotations

import pytest
from shop.cache import (
    cached_user_profile,
    change_email_and_invalidate,
    change_email_forgetting_the_cache,
    profile_key,
)
from shop.seed import add_users
from shop.views import user_profile
from sqlalchemy.orm import Session


@pytest.fixture
def user_id(migsafe_db: Session) -> int:
    """One user, added in set-up."""
    (user,) = add_users(migsafe_db, 1)
    migsafe_db.expire_all()  # the first read must go to the database, not the identity map
    return user.id


def test_profile_is_cache_aside(migsafe_db: Session, migsafe_redis, assert_cache_aside, user_id: int) -> None:
    """Miss then query, hit with no query, no stale read after a write."""
    assert_cache_aside(
        read=lambda: cached_user_profile(migsafe_db, migsafe_redis, user_id),
        key=profile_key(user_id),
        write=lambda: change_email_and_invalidate(migsafe_db, migsafe_redis, user_id, "new@example.com"),
        fresh=lambda: user_profile(migsafe_db, user_id),
    )


def test_forgotten_invalidation_is_caught(migsafe_db: Session, migsafe_redis, assert_cache_aside,
                                          user_id: int) -> None:
    """The helper names the step that fails when a write leaves a stale entry."""
    with pytest.raises(pytest.fail.Exception, match="step 3"):
        assert_cache_aside(
            read=lambda: cached_user_profile(migsafe_db, migsafe_redis, user_id),
            key=profile_key(user_id),
            write=lambda: change_email_forgetting_the_cache(migsafe_db, migsafe_redis, user_id, "x@example.com"),
            fresh=lambda: user_profile(migsafe_db, user_id),
        )


@pytest.mark.min_cache_hit_rate(0.8)
def test_hot_profile_reaches_the_hit_rate_target(migsafe_db: Session, migsafe_redis, user_id: int) -> None:
    """Ten reads of a hot profile: one miss, nine hits (90%, above the 80% target)."""
    for _ in range(10):
        assert cached_user_profile(migsafe_db, migsafe_redis, user_id) is not None


def test_hit_rate_after_warm_up(migsafe_db: Session, migsafe_redis, cache_stats) -> None:
    """Measure only after a warm-up, as the playbook measures after an hour of traffic."""
    ids = [u.id for u in add_users(migsafe_db, 5)]
    with cache_stats(migsafe_redis, warmup=lambda: [
            cached_user_profile(migsafe_db, migsafe_redis, uid) for uid in ids]) as stats:
        for _ in range(4):
            for uid in ids:
                cached_user_profile(migsafe_db, migsafe_redis, uid)
    assert (stats.hits, stats.misses) == (20, 0)
    assert stats.by_prefix["user"].hits == 20
