"""Run by .ci/run in a venv with the plugin's base install only (no driver, no server)."""

import importlib.util
import sqlite3

import pytest


def test_no_driver_was_installed_with_the_plugin() -> None:
    for name in ("sqlalchemy", "psycopg", "psycopg_pool", "redis", "fakeredis"):
        assert importlib.util.find_spec(name) is None, f"{name} came with the base install"


@pytest.mark.max_queries(1)
def test_a_budget_without_drivers_holds() -> None:
    sqlite3.connect(":memory:").execute("select 1")


def test_count_queries_without_drivers() -> None:
    from pytest_migsafe import count_queries

    with count_queries() as counter:
        pass
    assert counter.count == 0


def test_a_fixture_needing_a_driver_says_which_extra(request: pytest.FixtureRequest) -> None:
    with pytest.raises(ImportError, match=r"pip install 'pytest-migsafe\[redis\]'"):
        request.getfixturevalue("migsafe_redis")
