"""Migration 3: fix N+1 queries. Detect, put a budget on it, fix in the ORM, verify."""

from __future__ import annotations

import pytest
from shop.seed import add_users
from shop.views import user_directory, user_directory_naive
from sqlalchemy.orm import Session

from pytest_migsafe import count_queries


@pytest.fixture
def twelve_users(migsafe_db: Session) -> None:
    """12 more users, added in the fixture so that tests count only their own statements."""
    add_users(migsafe_db, 12)
    migsafe_db.expire_all()


def test_naive_directory_is_reported_as_n_plus_one(migsafe_db: Session, twelve_users: None) -> None:
    """Step 1, detect: the naive view passes, and the report warns about its N+1."""
    with count_queries() as counter:
        rows = user_directory_naive(migsafe_db)
    assert len(rows) == 32  # 12 new users + 20 seeded
    assert counter.count == 1 + 32  # one SELECT of users, one SELECT of addresses per user


@pytest.mark.max_queries(2)
@pytest.mark.no_n_plus_one
def test_fixed_directory_has_a_budget(migsafe_db: Session, twelve_users: None) -> None:
    """Steps 2-4: a budget on the fixed view; an N+1 here would fail the test."""
    assert len(user_directory(migsafe_db)) == 32


def test_fixed_directory_is_constant_in_the_data(migsafe_db: Session, assert_constant_queries) -> None:
    """The strongest check: the query count does not grow with the number of users."""

    def setup(n: int) -> None:
        add_users(migsafe_db, n)
        migsafe_db.expire_all()

    assert_constant_queries(setup, lambda: user_directory(migsafe_db), scale=(2, 5))


def test_naive_directory_grows_with_the_data(migsafe_db: Session, assert_constant_queries) -> None:
    """...and the same check catches the naive version (shown here as an expected failure)."""

    def setup(n: int) -> None:
        add_users(migsafe_db, n)
        migsafe_db.expire_all()

    with pytest.raises(pytest.fail.Exception, match="addresses"):
        assert_constant_queries(setup, lambda: user_directory_naive(migsafe_db), scale=(2, 5))


def test_profile_block_budget(migsafe_db: Session, assert_num_queries) -> None:
    """A budget on one block rather than the whole test."""
    from shop.views import user_profile

    (user,) = add_users(migsafe_db, 1)
    migsafe_db.expire_all()
    with assert_num_queries(1):
        assert user_profile(migsafe_db, user.id)["name"] == user.name
