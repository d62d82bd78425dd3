"""SQLAlchemy's own warnings keep pointing at the user's line with the plugin installed.

SQLAlchemy attributes a warning to the first frame outside its package, told by the frame's
module name: migsafe's wrappers around ``Session._flush``, the loaders, the dialect's execute
and the pool's checkout were that frame, so an ``SAWarning`` raised in a flush pointed at
``pytest_migsafe/queries/orm.py`` (seen on a real Flask application's suite), and a
``filterwarnings`` entry naming the application's module stopped matching it.
"""

from __future__ import annotations

import pytest

APP = """
from sqlalchemy import ForeignKey, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    children: Mapped[list["Child"]] = relationship(cascade="merge")  # no save-update cascade


class Child(Base):
    __tablename__ = "children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("parents.id"), nullable=True)


ENGINE = create_engine("sqlite://")
Base.metadata.create_all(ENGINE)


def add_family():
    with Session(ENGINE) as session:
        parent = Parent()
        session.add(parent)
        parent.children.append(Child())
        session.flush()  # FLUSH: SQLAlchemy warns that the child will not be added
"""

TEST = """
import warnings

import app


def test_the_warning_points_at_the_application():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.add_family()
    (warning,) = [w for w in caught if "not in session" in str(w.message)]
    print("WARNED AT", warning.filename, warning.lineno)
    assert warning.filename.endswith("app.py"), warning.filename
"""


def test_an_sqlalchemy_warning_in_a_flush_points_at_the_application(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(app=APP, test_app=TEST)
    line = next(n for n, text in enumerate(APP.lstrip("\n").splitlines(), 1) if "# FLUSH" in text)
    off = pytester.runpytest_subprocess("-p", "no:migsafe", "-s", "-p", "no:randomly")
    on = pytester.runpytest_subprocess("-s", "-p", "no:randomly")
    off.assert_outcomes(passed=1)
    on.assert_outcomes(passed=1)
    on.stdout.fnmatch_lines([f"*WARNED AT *app.py {line}"])


def test_a_module_filter_on_the_application_still_matches(pytester: pytest.Pytester) -> None:
    """``-W error::...:app`` (an error for the application's own SQLAlchemy warnings) fails the
    test alike with the plugin on and off."""
    pytester.makepyfile(app=APP, test_app="import app\n\ndef test_it():\n    app.add_family()\n")
    args = ("-W", "error::sqlalchemy.exc.SAWarning:app", "-p", "no:randomly")
    pytester.runpytest_subprocess("-p", "no:migsafe", *args).assert_outcomes(failed=1)
    pytester.runpytest_subprocess(*args).assert_outcomes(failed=1)
