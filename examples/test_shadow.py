"""Shadow comparisons: the N+1 fix and the cache, each proven equal to the old path."""

from __future__ import annotations

from shop.cache import cached_user_profile
from shop.seed import add_users
from shop.views import user_directory, user_directory_naive, user_profile
from sqlalchemy.orm import Session


def test_fixed_directory_matches_the_naive_one(migsafe_db: Session, shadow) -> None:
    """Old and new directory return the same rows; the report shows their query counts."""
    add_users(migsafe_db, 12)
    migsafe_db.expire_all()
    rows = shadow.run("user-directory", lambda: (migsafe_db.expire_all(), user_directory_naive(migsafe_db))[1],
                      lambda: (migsafe_db.expire_all(), user_directory(migsafe_db))[1])
    assert len(rows) == 32


def test_cached_profile_matches_the_database(migsafe_db: Session, migsafe_redis, shadow) -> None:
    """The cache-aside read returns what the database returns, for every user."""
    # the ids first: each experiment leaves the session's objects expired, and reading
    # user.id in the loop would reload each user (an N+1 of the test's own)
    ids = [user.id for user in add_users(migsafe_db, 5)]
    for uid in ids:
        shadow.run("profile-cache", lambda uid: user_profile(migsafe_db, uid),
                   lambda uid: cached_user_profile(migsafe_db, migsafe_redis, uid), uid)
