"""Read paths of the shop: one with an N+1, and its fix."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from .models import User


def user_directory_naive(session: Session) -> list[dict[str, object]]:
    """Every user with their cities. N+1: one SELECT of addresses per user (lazy loading)."""
    users = session.scalars(select(User).order_by(User.id)).all()
    return [{"name": u.name, "cities": [a.city for a in u.addresses]} for u in users]


def user_directory(session: Session) -> list[dict[str, object]]:
    """Every user with their cities, in two statements whatever the number of users."""
    users = session.scalars(select(User).options(selectinload(User.addresses)).order_by(User.id)).all()
    return [{"name": u.name, "cities": [a.city for a in u.addresses]} for u in users]


def user_profile(session: Session, user_id: int) -> dict[str, object] | None:
    """One user's profile: the hottest read path of the shop."""
    user = session.get(User, user_id)
    if user is None:
        return None
    return {"id": user.id, "name": user.name, "email": user.email}


def change_email(session: Session, user_id: int, email: str) -> None:
    """Write path: change a user's email and commit."""
    user = session.get(User, user_id)
    assert user is not None
    user.email = email
    session.commit()
