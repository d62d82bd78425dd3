"""Shadow comparisons: the N+1 fix and the cache, each proven equal to the old path."""

from __future__ import annotations

import re

import pytest
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


# the experiment reads each user once per path by design: not an N+1 of the application
@pytest.mark.allow_n_plus_one(re.compile(r"FROM users WHERE users\.id = "), 20)
def test_cached_profile_matches_the_database(migsafe_db: Session, migsafe_redis, shadow) -> None:
    """The cache-aside read returns what the database returns, for every user."""
    users = add_users(migsafe_db, 5)
    for user in users:
        shadow.run("profile-cache", lambda uid: user_profile(migsafe_db, uid),
                   lambda uid: cached_user_profile(migsafe_db, migsafe_redis, uid), user.id)
