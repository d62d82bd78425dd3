"""A statement sent from a Jinja template's compiled code (a lazy load in a ``{% for %}`` loop)
is placed at the template's own line, not at the line of the Python that Jinja generated from
it (the code's file name is the template's, its line numbers are not)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("jinja2")

TEMPLATE = """<ul>
{% for book in books %}
  <li>{{ book.title }} by {{ book.author.name }}</li>
{% endfor %}
</ul>
"""

CONFTEST = """
import pytest
import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Book(Base):
    __tablename__ = "book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("author.id"))
    author: Mapped[Author] = relationship(lazy="select")


@pytest.fixture
def session():
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all(Book(title=f"t{i}", author=Author(name=f"a{i}")) for i in range(12))
        s.commit()
    with Session(engine) as s:
        yield s


@pytest.fixture
def templates(request):
    return Environment(loader=FileSystemLoader(str(request.config.rootpath / "templates")))
"""

TEST = """
import sqlalchemy as sa
from conftest import Book


def test_render(session, templates):
    books = session.scalars(sa.select(Book)).all()
    html = templates.get_template("books.html").render(books=books)
    assert html.count("<li>") == 12
"""


def test_a_lazy_load_in_a_template_is_placed_at_the_templates_line(pytester: pytest.Pytester) -> None:
    (pytester.path / "templates").mkdir()
    (pytester.path / "templates" / "books.html").write_text(TEMPLATE)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_render=TEST)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "--migsafe-report")
    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    # the warning, its "at" line, the report's N+1 line and its heaviest test: the template's line 3
    places = re.findall(r"templates/books\.html:(\d+)", output)
    assert len(places) >= 3, output
    assert set(places) == {"3"}, output
    result.stdout.fnmatch_lines(["*N+1 suspected: Book.author lazy-loaded for 12 Book rows*"])
