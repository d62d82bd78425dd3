"""The scaling check against the real PostgreSQL: messages with call sites, and isolation of scales.

Row counts are read from the server (``count(*)`` at the start of each scale's set-up, and
from a separate connection after the check), never from the plugin.
"""

from __future__ import annotations

import decimal
import fractions
import inspect
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import ForeignKey, String, create_engine, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from pytest_migsafe.queries.scaling import (
    QueriesGrowWithData,
    ScaleNotIsolated,
    assert_constant_queries,
    isolation_for,
    measure_scaling,
)

# the N+1s here are made on purpose, to be measured (an allow rule on every test would warn
# in the tests that make none)
pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")

PG_URL = os.environ.get("MIGSAFE_POSTGRES_URL", "")
PG_DSN = os.environ.get("MIGSAFE_TEST_POSTGRES_DSN", "")
HERE = f"tests/queries/{Path(__file__).name}"


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "scl_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "scl_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("scl_authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    """The application's own engine (not the plugin's), with committed tables."""
    eng = create_engine(PG_URL)
    Base.metadata.drop_all(eng)
    Base.metadata.create_all(eng)
    yield eng
    Base.metadata.drop_all(eng)
    eng.dispose()


def rows_on_server() -> int:
    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute("SELECT count(*) FROM scl_authors").fetchone()
    return int(row[0]) if row else -1


def add_authors(session: Session, n: int) -> None:
    for i in range(n):
        author = Author(name=f"author {i}")
        session.add_all([author, Book(author=author)])


def seed(session: Session, n: int) -> None:
    """n authors with a book each, flushed, the session's copies expired (so that reading loads)."""
    add_authors(session, n)
    session.flush()
    session.expire_all()


def book_counts(session: Session) -> list[int]:
    return [len(author.books) for author in session.scalars(select(Author))]  # a lazy load per author


LAZY = f"{HERE}:{inspect.getsourcelines(book_counts)[1] + 1}"  # the line of the lazy loads


def author_names(session: Session) -> list[str]:
    return list(session.scalars(select(Author.name)))


# -- messages --------------------------------------------------------------------------------
def test_a_growing_n_plus_one_fails_with_counts_shapes_and_call_sites(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(QueriesGrowWithData) as caught:
            assert_constant_queries(lambda n: seed(session, n), lambda: book_counts(session),
                                    scale=(2, 5), isolate=session)
    lines = str(caught.value).splitlines()
    assert lines[0] == ("assert_constant_queries: expected the same query count at every scale, but the "
                        "query count grows with the data: scale [2, 5] ran [3, 6] statements")
    # the shape that grew, its count at each scale and where it is sent from (the lazy load's line)
    # (SQLAlchemy 2.0 labels the lazy load's columns: "scl_books.id AS scl_books_id"; long shapes are cut)
    assert re.match(r"  SELECT scl_books\.id(?: AS scl_books_id)?, scl_books\.author_id(?: AS scl_books_author_id)? "
                    r"FROM scl_books WH", lines[1]), lines[1]
    assert lines[1].endswith(f": 2 != 5 at {LAZY}")
    # each scale's statements by shape, the one that grew first
    assert lines[2] == "  at scale 2, 3 queries:"
    assert lines[3].startswith("    SELECT scl_books.id") and lines[3].endswith(f" x2 at {LAZY}")
    assert lines[4] == f"    SELECT scl_authors.id, scl_authors.name FROM scl_authors x1 at {LAZY}"
    assert lines[5] == "  at scale 5, 6 queries:"
    assert lines[6].endswith(f" x5 at {LAZY}")
    assert rows_on_server() == 0


def test_a_constant_query_count_passes_and_reports_the_counts(engine: Engine) -> None:
    with Session(engine) as session:
        result = assert_constant_queries(lambda n: seed(session, n), lambda: author_names(session),
                                         scale=(2, 5, 9), isolate=session)
    assert result.totals == [1, 1, 1]
    assert rows_on_server() == 0


def test_a_slope_may_be_any_finite_real_number(engine: Engine) -> None:
    with Session(engine) as session:
        for slope in (fractions.Fraction(1, 1), decimal.Decimal("1")):
            result = assert_constant_queries(lambda n: seed(session, n), lambda: book_counts(session),
                                             scale=(2, 5), slope=slope, isolate=session)  # type: ignore[arg-type]
            assert result.totals == [3, 6]


def test_slope_allows_a_known_linear_growth(engine: Engine) -> None:
    with Session(engine) as session:
        result = assert_constant_queries(lambda n: seed(session, n), lambda: book_counts(session),
                                         scale=(2, 5), slope=1, isolate=session)
        assert result.totals == [3, 6]
        with pytest.raises(QueriesGrowWithData, match=r"expected at most 0\.5 more queries per unit of scale"):
            assert_constant_queries(lambda n: seed(session, n), lambda: book_counts(session),
                                    scale=(2, 5), slope=0.5, isolate=session)


@pytest.mark.parametrize("slope", [float("nan"), -1, "1", True, float("inf")])
def test_a_slope_that_is_not_a_finite_number_at_least_zero_is_refused(engine: Engine, slope: object) -> None:
    """NaN turned the check off (a growing action passed), -1 failed a constant one as
    growing, "1" raised a TypeError from inside the message."""
    with Session(engine) as session, pytest.raises(ValueError, match="slope expects a number"):
        assert_constant_queries(lambda n: seed(session, n), lambda: book_counts(session),
                                scale=(2, 5), slope=slope, isolate=session)  # type: ignore[arg-type]


def test_an_asynchronous_setup_or_action_is_refused_rather_than_counted_as_none(engine: Engine) -> None:
    """An ``async def`` action passed at every scale with 0 statements (never awaited)."""
    async def action() -> None:
        pass

    async def generator_action() -> AsyncIterator[None]:
        yield None

    with Session(engine) as session:
        with pytest.raises(TypeError, match="action is a coroutine function"):
            assert_constant_queries(lambda n: seed(session, n), action, isolate=session)
        with pytest.raises(TypeError, match="action is a coroutine function"):  # (an async generator's too)
            assert_constant_queries(lambda n: seed(session, n), generator_action, isolate=session)
        with pytest.raises(TypeError, match="action returned an awaitable"):
            assert_constant_queries(lambda n: seed(session, n), lambda: generator_action(), isolate=session)  # noqa: PLW0108
        with pytest.raises(TypeError, match="action returned an awaitable"):
            assert_constant_queries(lambda n: seed(session, n), lambda: action(), isolate=session)  # noqa: PLW0108


def test_a_commit_of_the_connection_given_as_isolate_is_an_error_not_a_silent_write(engine: Engine) -> None:
    """A Connection's commit() inside a scale ended the scale's savepoint with the transaction
    around it: 9 rows stayed committed and the check passed."""
    with engine.connect() as conn:
        def setup(n: int) -> None:
            for i in range(n):
                conn.execute(text("INSERT INTO scl_authors (name) VALUES (:name)"), {"name": f"a{i}"})
            conn.commit()

        try:
            with pytest.raises(ScaleNotIsolated, match="ended inside the scale"):
                assert_constant_queries(setup, lambda: conn.execute(text("SELECT count(*) FROM scl_authors")).all(),
                                        scale=(2, 5), isolate=conn)
        finally:
            conn.rollback()
            with engine.begin() as cleanup:  # (what the warm-up committed before the error)
                cleanup.execute(text("DELETE FROM scl_authors"))


# -- isolation of an engine the application owns -------------------------------------------------
def test_isolate_engine_hides_each_scales_committed_rows_from_the_next(engine: Engine) -> None:
    make_session = sessionmaker(engine)
    seen: list[int] = []

    def setup(n: int) -> None:
        with make_session() as session:       # the application's own sessions, which commit
            seen.append(session.scalar(select(text("count(*)")).select_from(Author)))
            add_authors(session, n)
            session.commit()
        with engine.begin() as conn:          # and Core, committing too
            conn.execute(text("INSERT INTO scl_authors (name) VALUES ('core')"))

    def action() -> list[str]:
        with make_session() as session:
            return author_names(session)

    result = assert_constant_queries(setup, action, scale=(2, 5), isolate=engine)
    assert seen == [0, 0, 0]  # the warm-up, scale 2, scale 5: each starts empty
    assert result.totals == [1, 1]
    assert rows_on_server() == 0  # nothing committed for real


def test_without_isolation_an_application_engine_piles_up_rows(engine: Engine) -> None:
    """The failure that isolate= fixes, measured: each scale sees the rows of the ones before."""
    make_session = sessionmaker(engine)
    seen: list[int] = []

    def setup(n: int) -> None:
        with make_session() as session:
            seen.append(session.scalar(select(text("count(*)")).select_from(Author)))
            add_authors(session, n)
            session.commit()

    try:
        measure_scaling(setup, lambda: None, scale=(2, 5))
        assert seen == [0, 2, 4]
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM scl_books"))
            conn.execute(text("DELETE FROM scl_authors"))


def test_isolate_engine_finds_the_n_plus_one_of_the_applications_sessions(engine: Engine) -> None:
    make_session = sessionmaker(engine)

    def setup(n: int) -> None:
        with make_session() as session:
            add_authors(session, n)
            session.commit()

    def action() -> list[int]:
        with make_session() as session:
            return book_counts(session)

    with pytest.raises(QueriesGrowWithData, match=r"scale \[2, 5\] ran \[3, 6\] statements"):
        assert_constant_queries(setup, action, scale=(2, 5), isolate=engine)
    assert rows_on_server() == 0


def test_a_session_left_open_across_a_scale_is_an_error(engine: Engine) -> None:
    held: list[Session] = []

    def setup(n: int) -> None:
        session = Session(engine)
        add_authors(session, n)
        session.flush()
        held.append(session)  # never closed: its connection stays checked out

    try:
        with pytest.raises(ScaleNotIsolated, match="1 connection of the engine still checked out"):
            measure_scaling(setup, lambda: None, scale=(2, 3), isolate=engine)
    finally:
        for session in held:
            session.close()
    assert rows_on_server() == 0


def test_isolate_psycopg_connection_rolls_back_each_scale() -> None:
    with psycopg.connect(PG_DSN) as conn:
        conn.execute("CREATE TEMP TABLE scl_tmp (id int)")
        conn.commit()
        seen: list[int] = []

        def setup(n: int) -> None:
            row = conn.execute("SELECT count(*) FROM scl_tmp").fetchone()
            seen.append(row[0] if row else -1)
            with conn.transaction():  # nests as a savepoint inside the scale's transaction
                for i in range(n):
                    conn.execute("INSERT INTO scl_tmp VALUES (%s)", [i])

        assert_constant_queries(setup, lambda: conn.execute("SELECT id FROM scl_tmp").fetchall(),
                                scale=(2, 4), isolate=conn)
        assert seen == [0, 0, 0]
        assert conn.execute("SELECT count(*) FROM scl_tmp").fetchone() == (0,)


def test_isolate_rejects_what_it_cannot_roll_back() -> None:
    with pytest.raises(TypeError, match="isolate= expects a SQLAlchemy Engine, Connection or Session"):
        isolation_for(object())
    with pytest.raises(TypeError, match="not both"):
        measure_scaling(lambda n: None, lambda: None, isolate=create_engine("sqlite://"),
                        before_each=lambda: None)
    with pytest.raises(ValueError, match="two or more increasing whole numbers"):
        measure_scaling(lambda n: None, lambda: None, scale=(3, 2))


# -- the fixture ---------------------------------------------------------------------------------
APP = """
import os
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

engine = create_engine(os.environ["MIGSAFE_POSTGRES_URL"])
SessionLocal = sessionmaker(engine)

class Base(DeclarativeBase):
    pass

class Shop(Base):
    __tablename__ = "scf_shops"
    id: Mapped[int] = mapped_column(primary_key=True)
    items: Mapped[list["Item"]] = relationship()

class Item(Base):
    __tablename__ = "scf_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("scf_shops.id"))

def create_shops(n):
    with SessionLocal() as session:
        for _ in range(n):
            session.add(Shop(items=[Item()]))
        session.commit()

def count_shops():
    with SessionLocal() as session:
        return session.query(Shop).count()

def list_items():
    with SessionLocal() as session:
        return [len(shop.items) for shop in session.scalars(select(Shop))]

def list_shops():
    with SessionLocal() as session:
        return session.scalars(select(Shop.id)).all()
"""


def test_fixture_fails_a_growing_n_plus_one_with_call_sites_and_isolates_the_apps_engine(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(shop=APP)
    pytester.makeconftest("""
        import pytest
        import shop

        @pytest.fixture(scope="session", autouse=True)
        def tables():
            shop.Base.metadata.drop_all(shop.engine)
            shop.Base.metadata.create_all(shop.engine)
            yield
            shop.Base.metadata.drop_all(shop.engine)
    """)
    pytester.makepyfile(test_shop="""
        import shop

        def test_items_grow(assert_constant_queries):
            assert_constant_queries(shop.create_shops, shop.list_items, scale=(2, 5), isolate=shop.engine)

        def test_shops_constant(assert_constant_queries):
            seen = []
            def setup(n):
                seen.append(shop.count_shops())
                shop.create_shops(n)
            assert_constant_queries(setup, shop.list_shops, scale=(2, 5), isolate=shop.engine)
            assert seen == [0, 0, 0]
            assert shop.count_shops() == 0
    """)
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    # the lazy load as SQLAlchemy writes it (2.0 labels its columns), as long messages cut it
    lazy = shown_as(["SELECT scf_items.id, scf_items.shop_id FROM scf_items WHERE CAST(? AS INT) = scf_items.shop_id",
                     "SELECT scf_items.id AS scf_items_id, scf_items.shop_id AS scf_items_shop_id FROM scf_items "
                     "WHERE CAST(? AS INT) = scf_items.shop_id"])
    result.stdout.re_match_lines([
        re.escape("assert_constant_queries: expected the same query count at every scale, but the query count "
                  "grows with the data: scale [2, 5] ran [3, 6] statements"),
        rf"  {lazy}: 2 != 5 at shop\.py:33",
        re.escape("  at scale 2, 3 queries:"),
        rf"    {lazy} x2 at shop\.py:33",
        re.escape("    SELECT scf_shops.id FROM scf_shops x1 at shop.py:33"),
        re.escape("  at scale 5, 6 queries:"),
        rf"    {lazy} x5 at shop\.py:33",
    ], consecutive=True)


def shown_as(forms: list[str]) -> str:
    """A pattern matching any of ``forms`` whole, or any prefix of one of them cut with "..."."""
    prefixes = {form[:n] for form in forms for n in range(10, len(form))}
    return "(?:" + "|".join(re.escape(text) for text in forms) + "|(?:" + "|".join(
        re.escape(text) for text in sorted(prefixes, key=len, reverse=True)) + r")\.\.\.)"


def test_fixture_isolates_migsafe_db_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_db="""
        from sqlalchemy import text

        def test_each_scale_starts_empty(migsafe_db, assert_constant_queries):
            migsafe_db.execute(text("CREATE TABLE scf_rows (id int)"))
            seen = []
            def setup(n):
                seen.append(migsafe_db.execute(text("SELECT count(*) FROM scf_rows")).scalar())
                for i in range(n):
                    migsafe_db.execute(text("INSERT INTO scf_rows VALUES (:i)"), {"i": i})
                migsafe_db.commit()
            assert_constant_queries(setup, lambda: migsafe_db.execute(text("SELECT id FROM scf_rows")).all(),
                                    scale=(2, 5))
            assert seen == [0, 0, 0]
    """)
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=1)


def test_fixture_isolates_djangos_open_connection_and_warns_with_nothing_to_isolate(
        pytester: pytest.Pytester) -> None:
    """Under Django (no migsafe_db) each scale ran on top of the earlier scales' rows:
    "ran [13, 18]" where the action's statements were 11 and 14; and nothing said so. Django's
    open psycopg connection is now the default isolation; with nothing to isolate, a warning."""
    pytest.importorskip("django")
    pytester.makepyfile(test_dj="""
        import os
        from urllib.parse import parse_qs, urlsplit

        import django
        import pytest
        from django.conf import settings

        url = urlsplit(os.environ["MIGSAFE_POSTGRES_URL"].replace("postgresql+psycopg://", "postgresql://"))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        settings.configure(DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
            "USER": url.username or "postgres", "PASSWORD": url.password or "",
            "HOST": query.get("host", url.hostname or ""), "PORT": query.get("port", url.port or "")}})
        django.setup()

        from django.db import connection, transaction

        def test_grows_on_django(assert_constant_queries):
            with transaction.atomic():  # (a django_db test runs in one)
                with connection.cursor() as cursor:
                    cursor.execute("CREATE TEMP TABLE scd_rows (id int)")
                def setup(n):
                    with connection.cursor() as cursor:
                        for i in range(n):
                            cursor.execute("INSERT INTO scd_rows VALUES (%s)", [i])
                def action():
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT id FROM scd_rows")
                        for (i,) in cursor.fetchall():
                            cursor.execute("SELECT id FROM scd_rows WHERE id = %s", [i])
                assert_constant_queries(setup, action, scale=(2, 5))
    """)
    pytester.makepyfile(test_plain="""
        def test_nothing_to_isolate(assert_constant_queries):
            assert_constant_queries(lambda n: None, lambda: None, scale=(2, 5))
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "test_dj.py")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*scale [[]2, 5[]] ran [[]3, 6[]] statements*"])
    result = pytester.runpytest_subprocess("-p", "no:randomly", "test_plain.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*assert_constant_queries in test_plain.py::test_nothing_to_isolate runs each "
                                 "scale without rolling it back*"])
