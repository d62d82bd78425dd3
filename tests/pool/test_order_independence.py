"""Connections made beyond a warm pool are the same per test under any order, selection and
xdist distribution; the raw ``created`` is not (whichever test first uses a pool warms it).

A suite whose tests share two SQLAlchemy engines and two psycopg pools runs in order, in
reverse (the same tests written backwards in a second file), a selection of it, and under
``-n 2`` and ``-n 3``. Each test's figures are read from the JUnit XML properties. The
expected connections beyond warm follow from each test's construction (a pool of 2 asked
for 3 at once must open one overflow connection whatever ran before), not from the plugin.
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_migsafe.servers import RunningPostgres

pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")

CONFTEST = '''
import psycopg_pool
import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

URL = {url!r}
DSN = {dsn!r}


@pytest.fixture(scope="session")
def queue_engine():
    engine = create_engine(URL, pool_size=2, max_overflow=3)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def null_engine():
    engine = create_engine(URL, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_pool():
    pool = psycopg_pool.ConnectionPool(DSN, min_size=1, max_size=3, open=False)
    pool.open(wait=True)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def pg_null_pool():
    pool = psycopg_pool.NullConnectionPool(DSN, open=False)
    pool.open(wait=True)
    yield pool
    pool.close()
'''

# name -> (body, connections beyond warm by construction)
TESTS: dict[str, tuple[str, int]] = {
    "test_one_connection": ('''
        def test_one_connection(queue_engine):
            with queue_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        ''', 0),
    "test_three_at_once_on_a_pool_of_two": ('''
        def test_three_at_once_on_a_pool_of_two(queue_engine):
            with queue_engine.connect() as a, queue_engine.connect() as b, queue_engine.connect() as c:
                for conn in (a, b, c):
                    conn.execute(text("SELECT 1"))
        ''', 1),
    "test_invalidated_connection_is_replaced": ('''
        def test_invalidated_connection_is_replaced(queue_engine):
            with queue_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                conn.invalidate()
            # two at once from a pool that keeps two: one of them is the invalidated one
            with queue_engine.connect() as a, queue_engine.connect() as b:
                a.execute(text("SELECT 1"))
                b.execute(text("SELECT 1"))
        ''', 1),
    "test_nullpool_connects_twice": ('''
        def test_nullpool_connects_twice(null_engine):
            for _ in range(2):
                with null_engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
        ''', 2),
    "test_psycopg_two_at_once": ('''
        def test_psycopg_two_at_once(pg_pool):
            with pg_pool.connection() as a, pg_pool.connection() as b:
                a.execute("SELECT 1")
                b.execute("SELECT 1")
        ''', 0),
    "test_psycopg_one": ('''
        def test_psycopg_one(pg_pool):
            with pg_pool.connection() as conn:
                conn.execute("SELECT 1")
        ''', 0),
    "test_psycopg_null_pool_connects_twice": ('''
        def test_psycopg_null_pool_connects_twice(pg_null_pool):
            for _ in range(2):
                with pg_null_pool.connection() as conn:
                    conn.execute("SELECT 1")
        ''', 2),
}
HEADER = "from sqlalchemy import text\n"


def _module(names: list[str]) -> str:
    return HEADER + "\n".join(textwrap.dedent(TESTS[name][0]) for name in names)


def _figures(path: Path) -> list[tuple[str, dict[str, float]]]:
    """``(test name, {property: value})`` for every test case of a JUnit XML file."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {prop.get("name", ""): float(prop.get("value", "nan")) for prop in case.iter("property")}
        cases.append((case.get("name", ""), props))
    return cases


@pytest.fixture
def suite(pytester: pytest.Pytester, postgres: RunningPostgres) -> pytest.Pytester:
    """The forward file (tests in the order of TESTS) and the reverse file (the same, backwards)."""
    names = list(TESTS)
    pytester.makeconftest(CONFTEST.format(url=postgres.url, dsn=postgres.dsn))
    pytester.makepyfile(test_forward=_module(names), test_reverse=_module(names[::-1]))
    return pytester


def test_connections_beyond_warm_are_the_same_under_any_order_selection_and_xdist(
        suite: pytest.Pytester) -> None:
    runs = {
        "in order": ["test_forward.py"],
        "reversed": ["test_reverse.py"],
        "a selection": ["test_reverse.py", "-k", "three or invalidated or null or psycopg_one"],
        "-n 2": ["test_forward.py", "test_reverse.py", "-n", "2"],
        "-n 3": ["test_forward.py", "test_reverse.py", "-n", "3"],
    }
    beyond: dict[str, dict[str, set[float]]] = {}
    created: dict[str, set[float]] = {}
    for label, args in runs.items():
        xml = suite.path / f"junit-{label.replace(' ', '_')}.xml"
        result = suite.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", f"--junitxml={xml}",
                                 "-o", "migsafe_junit_properties=true", *args)
        assert result.ret == 0, (label, result.stdout.str())
        seen = _figures(xml)
        assert seen and {name for name, _ in seen} <= set(TESTS), label
        for name, props in seen:
            beyond.setdefault(name, {}).setdefault(label, set()).add(props["migsafe_pool_created_beyond_warm"])
            created.setdefault(name, set()).add(props["migsafe_connections_created"])
            assert props["migsafe_connections_created"] == (
                props["migsafe_pool_created_beyond_warm"] + props["migsafe_pool_cold_start_created"]), (label, name)
    expected = {name: {float(TESTS[name][1])} for name in TESTS}
    assert {name: set().union(*per_run.values()) for name, per_run in beyond.items()} == expected
    assert all(len(per_run) >= 4 for per_run in beyond.values())  # every test ran in most runs
    # the raw figure does move with the order: whichever test first uses a pool pays its cold start
    # (first in order: 1 created; after the others warmed the pool up: 0)
    for name in ("test_one_connection", "test_three_at_once_on_a_pool_of_two",
                 "test_invalidated_connection_is_replaced"):
        assert len(created[name]) >= 2, (name, created[name])
