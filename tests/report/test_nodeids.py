"""The id a test is recorded under: pytest-xdist's ``--dist loadgroup`` suffix dropped, nothing else."""

from __future__ import annotations

import pytest

from pytest_migsafe.report.nodeids import without_loadgroup_suffix


@pytest.mark.parametrize(("nodeid", "groups", "recorded"), [
    ("tests/test_cache.py::test_hits@redis", ["redis"], "tests/test_cache.py::test_hits"),
    ("t.py::TestCache::test_hits@db_redis", ["redis", "db"], "t.py::TestCache::test_hits"),  # xdist >= 3.6
    ("t.py::TestCache::test_hits@redis", ["redis", "db"], "t.py::TestCache::test_hits"),  # closest alone
    ("t.py::test_x@svc::db", ["svc::db"], "t.py::test_x"),
    ("t.py::test_x@pg[15]", ["pg[15]"], "t.py::test_x"),
    ("t.py::test_x[1]@pg]15", ["pg]15"], "t.py::test_x[1]"),
    ("t.py::test_hits[a@b]@redis", ["redis"], "t.py::test_hits[a@b]"),
    ("t.py::test_hits[a@redis]", ["redis"], "t.py::test_hits[a@redis]"),  # not renamed (serial run)
    ("api.tavern.yaml::login as user@example.com", [], "api.tavern.yaml::login as user@example.com"),
    ("t.py::test_hits", ["redis"], "t.py::test_hits"),
])
def test_the_loadgroup_suffix_is_dropped_and_nothing_else(nodeid: str, groups: list[str], recorded: str) -> None:
    assert without_loadgroup_suffix(nodeid, groups) == recorded


SUITE = """
import psycopg
import pytest

DSN = {dsn!r}

def run(n):
    with psycopg.connect(DSN) as conn:
        for _ in range(n):
            conn.execute("SELECT 1")

@pytest.mark.xdist_group("db")
def test_grouped():
    run(2)

def test_plain():
    run(1)
"""

RENAMES_AS_XDIST_DOES = """
import pytest

def pytest_configure(config):
    config.option.loadgroup = True  # what pytest-xdist sets on a worker of --dist loadgroup

def pytest_collection_modifyitems(items):  # a plain hook, as pytest-xdist's
    # what pytest-xdist's --dist loadgroup does on a worker with pytest < 9
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark:
            renamed = f"{item.nodeid}@{mark.args[0]}"
            item._nodeid = renamed
            if hasattr(item, "_id"):  # pytest 9 keeps the id here: renamed the same way
                item._id = renamed
"""


def test_a_renamed_test_is_recorded_under_its_serial_id(pytester: pytest.Pytester, pg_dsn: str) -> None:
    import json

    pytester.makepyfile(test_suite=SUITE.format(dsn=pg_dsn))
    pytester.makeconftest(RENAMES_AS_XDIST_DOES)
    result = pytester.runpytest("-p", "no:randomly", "--migsafe-report",
                                "--migsafe-report-json=report.json")
    result.assert_outcomes(passed=2)
    tests = json.loads((pytester.path / "report.json").read_text())["tests"]
    assert sorted(tests) == ["test_suite.py::test_grouped", "test_suite.py::test_plain"]
