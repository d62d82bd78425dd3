"""Filters that match nothing say so; ``using=`` takes a Django alias as well as a database name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from pytest_migsafe import count_queries
from pytest_migsafe.queries.counter import FilterMatchedNothingWarning


def test_a_filter_that_matched_none_of_the_statements_warns() -> None:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        counter = count_queries(using="replica")
        counter.__enter__()
        conn.execute(text("SELECT 1"))
        conn.execute(text("SELECT 2"))
        with pytest.warns(FilterMatchedNothingWarning, match=r"using='replica'.*matched none of the 2 statements"):
            counter.__exit__(None, None, None)
        assert counter.count == 0
        with count_queries(match="SELECT 1") as matched:  # a filter that matched: no warning
            conn.execute(text("SELECT 1"))
    assert matched.count == 1


SCRIPT = textwrap.dedent("""
    import sys, warnings
    from urllib.parse import parse_qs, urlsplit
    import django
    from django.conf import settings

    url = urlsplit(sys.argv[1])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    settings.configure(DATABASES={"default": {}, "replica": {
        "ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
        "USER": url.username or "postgres", "PASSWORD": url.password or "",
        "HOST": query.get("host", url.hostname or ""), "PORT": query.get("port", url.port or "")}})
    django.setup()
    from django.db import connections
    from pytest_migsafe import count_queries

    connections["replica"].ensure_connection()  # Django's own statements at connect: before the block
    warnings.simplefilter("error")
    with count_queries(using="replica") as counter:
        with connections["replica"].cursor() as cursor:
            cursor.execute("SELECT 1")
    print(counter.count)
""")


def test_using_takes_a_django_database_alias() -> None:
    pytest.importorskip("django")
    url = os.environ["MIGSAFE_POSTGRES_URL"].replace("postgresql+psycopg://", "postgresql://")
    done = subprocess.run([sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "1"


def test_round_trips_are_a_figure_of_their_own_when_a_string_holds_several_statements() -> None:
    import psycopg

    with psycopg.connect(os.environ["MIGSAFE_TEST_POSTGRES_DSN"], autocommit=True) as conn:
        with count_queries() as counter:
            conn.execute("SELECT 1; SELECT 2; SELECT 3")
            conn.execute("SELECT 4")
    figures = counter.figures()
    assert (figures.count, figures.round_trips) == (4, 2)
    with count_queries() as single:
        pass
    assert single.figures().round_trips is None


def test_engine_and_using_pick_a_sqlite_file_by_its_path_or_its_name(tmp_path: Path) -> None:
    """A file-based SQLite engine's database is its path: ``engine=`` (which passes the path)
    counted none of its statements, the path being compared with the file's name alone."""
    shop = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    other = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with shop.connect() as a, other.connect() as b:
        with count_queries(engine=shop) as by_engine, count_queries(using=str(tmp_path / "shop.db")) as by_path, \
                count_queries(using="shop.db") as by_name, count_queries() as everything:
            a.execute(text("SELECT 1"))
            a.execute(text("SELECT 2"))
            b.execute(text("SELECT 3"))
    assert everything.count == 3
    assert (by_engine.count, by_path.count, by_name.count) == (2, 2, 2)


@pytest.mark.parametrize("form", ["query", "environment"])
def test_engine_of_a_postgres_url_without_a_database_in_its_path_counts_its_statements(
        postgres: Any, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """A PostgreSQL URL may name its database in a ``dbname`` parameter, or leave it to
    ``$PGDATABASE``: ``engine=`` took such an engine's database for ``:memory:``, counted
    none of its statements, and a budget on it passed whatever ran."""
    from sqlalchemy.engine import URL, make_url

    from pytest_migsafe.queries.budgets import QueryBudgetExceeded, assert_max_queries

    given = make_url(postgres.url)
    url = URL.create(given.drivername, given.username, given.password, given.host, given.port, None, given.query)
    if form == "query":
        url = url.update_query_dict({"dbname": given.database})
    else:
        monkeypatch.setenv("PGDATABASE", str(given.database))
    assert url.database is None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            with count_queries(engine=engine) as counted, count_queries() as everything:
                conn.execute(text("SELECT 1"))
                conn.execute(text("SELECT 2"))
            assert (counted.count, everything.count) == (2, 2)
            with pytest.raises(QueryBudgetExceeded), assert_max_queries(0, engine=engine):
                conn.execute(text("SELECT 3"))
    finally:
        engine.dispose()
