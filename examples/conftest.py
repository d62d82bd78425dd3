"""Example suite set-up: the shop's tables on the plugin's real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shop.models import Base
from shop.seed import add_users
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session


@pytest.fixture(scope="session", autouse=True)
def shop_schema(migsafe_engine: Engine) -> Iterator[None]:
    """Create the tables and 20 committed users once per session."""
    Base.metadata.create_all(migsafe_engine)
    with Session(migsafe_engine) as session:
        add_users(session, 20, start=1000)
        session.commit()
    yield
    Base.metadata.drop_all(migsafe_engine)
