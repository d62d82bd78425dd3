"""A paginated read repeats one statement shape by design: keyset and offset pagination on
PostgreSQL, written with the ORM (whose psycopg dialect casts every bound: ``id >
%(id_1)s::INTEGER``), a row value, or ``FETCH FIRST``, are no N+1 suspect; the same loop with
an equality bound (one row looked up per id) is one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import loops
import pytest
from sqlalchemy import Engine, Integer, create_engine, select, text, tuple_
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pytest_migsafe.queries.counter import count_queries
from pytest_migsafe.servers import RunningPostgres


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "pagination_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)


@pytest.fixture(scope="module")
def engine(postgres: RunningPostgres) -> Iterator[Engine]:
    made = create_engine(postgres.url)
    Base.metadata.drop_all(made)
    Base.metadata.create_all(made)
    with Session(made) as session:
        session.add_all([Item(id=n, rank=n % 4) for n in range(1, 31)])
        session.commit()
    yield made
    Base.metadata.drop_all(made)
    made.dispose()


def by_id(last: Any) -> Any:
    return select(Item.id).where(Item.id > (last.id if last else 0)).order_by(Item.id).limit(3)


def by_rank_and_id(last: Any) -> Any:
    bound = tuple_(Item.rank, Item.id) > tuple_(*(last if last else (-1, 0)))
    return select(Item.rank, Item.id).where(bound).order_by(Item.rank, Item.id).limit(3)


def fetch_first(last: Any) -> Any:
    return text("SELECT id FROM pagination_items WHERE id > :last ORDER BY id FETCH FIRST 3 ROWS ONLY").bindparams(
        last=last.id if last else 0)


def one_by_one(last: Any) -> Any:
    """Not pagination: a lookup by equality, the next id each time (an N+1 in disguise)."""
    following = (last.id if last else 0) + 1
    return select(Item.id).where(Item.id == following).order_by(Item.id).limit(3)


@pytest.mark.parametrize("statement_for", [by_id, by_rank_and_id, fetch_first, one_by_one])
def test_keyset_pagination_on_postgresql_is_no_n_plus_one(engine: Engine, statement_for: Any) -> None:
    """The ORM keyset (its bound cast: ``CAST(? AS INT)``), the row-value keyset and ``FETCH
    FIRST`` were N+1 suspects at 11 pages: the rule knew only a bare ``> ?`` and ``LIMIT``."""
    with Session(engine) as session, count_queries() as counter:
        rows = loops.keyset_pages(session, statement_for)
    assert len(rows) == 30
    suspects = counter.n_plus_one(threshold=3)
    assert [s.count for s in suspects] == ([31] if statement_for is one_by_one else []), suspects
