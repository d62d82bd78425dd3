"""Test data for the shop."""

from __future__ import annotations

from sqlalchemy.orm import Session

from .models import Address, Order, User


def add_users(session: Session, n: int, *, start: int = 0) -> list[User]:
    """Add ``n`` users, each with two addresses and one order; flush, return them."""
    users = []
    for i in range(start, start + n):
        user = User(name=f"user{i}", email=f"user{i}@example.com")
        user.addresses = [Address(city=f"City {i}a"), Address(city=f"City {i}b")]
        user.orders = [Order(total=10 + i)]
        users.append(user)
    session.add_all(users)
    session.flush()
    return users
