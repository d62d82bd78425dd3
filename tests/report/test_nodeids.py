"""The id a test is recorded under: pytest-xdist's ``--dist loadgroup`` suffix dropped."""

from __future__ import annotations

import pytest

from pytest_migsafe.report.baseline import Baseline
from pytest_migsafe.report.nodeids import recorded_id


@pytest.mark.parametrize(("nodeid", "recorded"), [
    ("tests/test_cache.py::test_hits@redis", "tests/test_cache.py::test_hits"),
    ("tests/test_cache.py::TestCache::test_hits@redis_db", "tests/test_cache.py::TestCache::test_hits"),
    ("tests/test_cache.py::test_hits[a@b]@redis", "tests/test_cache.py::test_hits[a@b]"),
    ("tests/test_cache.py::test_hits[a@b]", "tests/test_cache.py::test_hits[a@b]"),
    ("tests/test_cache.py::test_hits", "tests/test_cache.py::test_hits"),
    ("tests/at@dir/test_x.py::test_y", "tests/at@dir/test_x.py::test_y"),
    ("docs/at@home.md", "docs/at@home.md"),
])
def test_the_loadgroup_suffix_is_dropped_and_nothing_else(nodeid: str, recorded: str) -> None:
    assert recorded_id(nodeid) == recorded


def test_a_baseline_written_with_suffixes_reads_under_the_plain_ids() -> None:
    baseline = Baseline.from_dict({"tests": {"t.py::test_a@redis": {"queries": 3}}})
    assert list(baseline.tests) == ["t.py::test_a"]
