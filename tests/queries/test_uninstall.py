"""drivers.uninstall() leaves SQLAlchemy as it found it (the benchmarks' "plugin disabled"),
and drivers.install() hooks it again."""

from __future__ import annotations

import functools
import os
import sys
import types
from typing import Any

from sqlalchemy import Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Session, deferred, mapped_column

from pytest_migsafe.queries import drivers
from pytest_migsafe.queries.counter import count_queries

_WRAPS = "_migsafe_wraps"
_QUERIES = os.path.join("pytest_migsafe", "queries", "")


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "uninstall_notes"
    id = mapped_column(Integer, primary_key=True)
    body = deferred(mapped_column(String(20)))


def _wrapped_in_sqlalchemy() -> list[str]:
    """Every function of SQLAlchemy's modules and classes (and mappers' column loaders) that
    is one of the statement capture's wrappers."""
    found = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("sqlalchemy") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            owners = [(f"{name}.{attr}", value)]
            if isinstance(value, type):
                owners += [(f"{name}.{attr}.{k}", v) for k, v in vars(value).items()]
            for where, one in owners:
                func = one.__func__ if isinstance(one, (classmethod, staticmethod)) else one
                if (isinstance(func, types.FunctionType) and _WRAPS in func.__dict__
                        and _QUERIES in func.__code__.co_filename):  # (not the pool checks' hooks)
                    found.append(where)
    loader: Any = Note.__mapper__.class_manager.expired_attribute_loader
    if isinstance(loader, functools.partial) and hasattr(loader.func, _WRAPS):
        found.append("Note's expired_attribute_loader")
    return found


def test_uninstall_restores_every_sqlalchemy_function_and_install_hooks_them_again() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Note(id=1, body="a"))
        session.commit()
    assert _wrapped_in_sqlalchemy()  # the plugin hooks this process
    try:
        drivers.uninstall()
        assert _wrapped_in_sqlalchemy() == []
        with Session(engine) as session:  # SQLAlchemy's own loaders work as before
            assert session.scalars(select(Note)).one().body == "a"  # a query and a deferred load
    finally:
        drivers.install()
    # (SQLAlchemy 2.1 names it _load_scalar_attributes, 2.0 load_scalar_attributes)
    assert {"sqlalchemy.orm.loading._load_scalar_attributes",
            "sqlalchemy.orm.loading.load_scalar_attributes"} & set(_wrapped_in_sqlalchemy())
    assert "Note's expired_attribute_loader" in _wrapped_in_sqlalchemy()
    with count_queries() as counter, Session(engine) as session:
        assert session.scalars(select(Note)).one().body == "a"
    assert counter.count == 2
