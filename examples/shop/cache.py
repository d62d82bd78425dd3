"""Migration 2: cache-aside on the shop's hottest read path, the user profile."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from .views import change_email, user_profile

TTL_SECONDS = 300


def profile_key(user_id: int) -> str:
    """The cache key of a user's profile."""
    return f"user:{user_id}"


def cached_user_profile(session: Session, cache: Any, user_id: int) -> dict[str, object] | None:
    """Read through the cache: a hit costs no SQL; a miss loads and stores the profile."""
    raw = cache.get(profile_key(user_id))
    if raw is not None:
        return json.loads(raw)  # type: ignore[no-any-return]
    profile = user_profile(session, user_id)
    if profile is not None:
        cache.set(profile_key(user_id), json.dumps(profile), ex=TTL_SECONDS)
    return profile


def change_email_and_invalidate(session: Session, cache: Any, user_id: int, email: str) -> None:
    """Write, then drop the cached profile so that the next read cannot be stale."""
    change_email(session, user_id, email)
    cache.delete(profile_key(user_id))


def change_email_forgetting_the_cache(session: Session, cache: Any, user_id: int, email: str) -> None:
    """The classic cache-aside bug: the write leaves a stale profile in the cache."""
    change_email(session, user_id, email)
