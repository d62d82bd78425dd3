"""The ORM hooks keep no row, class, mapper or engine alive: what a test lets go is freed as it
is without the plugin. The N+1 rule's notes of rows (those a flush inserted, those a query
refreshed in part, the class whose primary key was noted last) held them strongly, for the rest
of the session: a suite defining its models and engine per test (Flask-SQLAlchemy's) kept 25
engines' worth of classes, mappers, dialects and compiled statements, with their memory."""

from __future__ import annotations

import re

import pytest

TESTS = """
import gc
import weakref

from sqlalchemy import ForeignKey, create_engine, inspect, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

REFS = {}


def test_uses_models_of_its_own():
    class Base(DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = "parent"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        children: Mapped[list["Child"]] = relationship(back_populates="parent")

    class Child(Base):
        __tablename__ = "child"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(ForeignKey("parent.id"))
        parent: Mapped[Parent] = relationship(back_populates="children")

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        parent = Parent(name="p", children=[Child(), Child()])
        session.add(parent)
        session.commit()                      # every row expired
        assert parent.name == "p"             # an expired row's columns loaded (its class's key noted)
        assert len(session.scalars(select(Child)).all()) == 2  # rows in the identity map refreshed
        assert len(parent.children) == 2      # a lazy load
        inserted = Parent(name="q")
        session.add(inserted)
        session.flush()                       # a row a flush inserted, no query after it
        REFS.update(cls=weakref.ref(Parent), engine=weakref.ref(engine), dialect=weakref.ref(engine.dialect),
                    row=weakref.ref(parent), row_state=weakref.ref(inspect(parent)),
                    child_state=weakref.ref(inspect(parent.children[0])),
                    inserted_state=weakref.ref(inspect(inserted)))
    engine.dispose()


def test_what_the_test_before_let_go_is_freed():
    gc.collect()
    print("ALIVE", sorted(name for name, ref in REFS.items() if ref() is not None))
"""


def _alive(pytester: pytest.Pytester, *args: str) -> str:
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "-s", *args)
    result.assert_outcomes(passed=2)
    found = re.search(r"ALIVE \[.*?\]", result.stdout.str())
    assert found is not None, result.stdout.str()
    return found.group()


@pytest.mark.parametrize("args", [[], ["--migsafe-report"]], ids=["defaults", "report"])
def test_the_orm_hooks_keep_nothing_a_test_let_go_alive(pytester: pytest.Pytester, args: list[str]) -> None:
    """The same objects outlive the test with the plugin as without it (SQLAlchemy itself keeps
    a declarative class a while; never the row nor the engine)."""
    pytester.makepyfile(test_retention=TESTS)
    without = _alive(pytester, "-p", "no:migsafe")
    for name in ("row", "engine", "row_state", "child_state", "inserted_state"):
        assert f"'{name}'" not in without
    assert _alive(pytester, *args) == without
