"""The comparison rules of :mod:`pytest_migsafe.report.regressions`, on baseline entries."""

from __future__ import annotations

import pytest

from pytest_migsafe.report.baseline import Baseline, BaselineEntry
from pytest_migsafe.report.regressions import Tolerances, compare, compare_entry, removed_tests
from pytest_migsafe.report.shapekey import shape_key

TEST = "tests/test_orders.py::test_list"


def keyed(*shapes: str) -> dict[str, str]:
    return {shape_key(shape): shape for shape in shapes}


def changes(old: BaselineEntry, new: BaselineEntry, **tolerances: float) -> tuple[list, list]:
    worse, better = compare_entry(TEST, old, new, Tolerances(**tolerances))
    return ([(c.figure, c.before, c.after) for c in worse], [(c.figure, c.before, c.after) for c in better])


def test_more_queries_than_the_baseline_is_a_regression_fewer_an_improvement() -> None:
    assert changes(BaselineEntry(queries=12), BaselineEntry(queries=13)) == ([("queries", 12, 13)], [])
    assert changes(BaselineEntry(queries=12), BaselineEntry(queries=9)) == ([], [("queries", 12, 9)])
    assert changes(BaselineEntry(queries=12), BaselineEntry(queries=12)) == ([], [])


def test_the_query_tolerance_absorbs_small_moves_both_ways() -> None:
    assert changes(BaselineEntry(queries=12), BaselineEntry(queries=14), queries=2) == ([], [])
    assert changes(BaselineEntry(queries=12), BaselineEntry(queries=10), queries=2) == ([], [])
    assert changes(BaselineEntry(queries=12), BaselineEntry(queries=15), queries=2) == ([("queries", 12, 15)], [])


def test_a_new_n_plus_one_shape_is_a_regression_and_a_vanished_one_an_improvement() -> None:
    old = BaselineEntry(queries=20, n_plus_one=keyed("SELECT a FROM t WHERE id = ?"))
    new = BaselineEntry(queries=20, n_plus_one=keyed("SELECT b FROM u WHERE id = ?"))
    assert changes(old, new) == (
        [("n_plus_one", None, "SELECT b FROM u WHERE id = ?")],
        [("n_plus_one", "SELECT a FROM t WHERE id = ?", None)],
    )


def test_a_hit_rate_falling_beyond_the_tolerance_is_a_regression() -> None:
    assert changes(BaselineEntry(cache_hit_rate=0.95), BaselineEntry(cache_hit_rate=0.9)) == ([], [])
    assert changes(BaselineEntry(cache_hit_rate=0.95), BaselineEntry(cache_hit_rate=0.85)) == (
        [("cache_hit_rate", 0.95, 0.85)], [])
    assert changes(BaselineEntry(cache_hit_rate=0.95), BaselineEntry(cache_hit_rate=0.93), hit_rate=0.01) == (
        [("cache_hit_rate", 0.95, 0.93)], [])


def test_a_hit_rate_crossing_under_the_alert_line_is_a_regression_even_within_the_tolerance() -> None:
    worse, _ = compare_entry(TEST, BaselineEntry(cache_hit_rate=0.72), BaselineEntry(cache_hit_rate=0.69),
                             Tolerances())
    assert [(c.figure, c.note) for c in worse] == [("cache_hit_rate", "under the alert line 70%")]
    # already under the line and not falling further: no news
    assert changes(BaselineEntry(cache_hit_rate=0.5), BaselineEntry(cache_hit_rate=0.49)) == ([], [])


def test_a_hit_rate_rising_beyond_the_tolerance_is_an_improvement() -> None:
    assert changes(BaselineEntry(cache_hit_rate=0.5), BaselineEntry(cache_hit_rate=0.9)) == (
        [], [("cache_hit_rate", 0.5, 0.9)])


def test_connections_created_are_not_compared_since_a_warm_pool_depends_on_the_order() -> None:
    assert changes(BaselineEntry(connections_created=1), BaselineEntry(connections_created=4)) == ([], [])
    assert changes(BaselineEntry(connections_created=4), BaselineEntry(connections_created=1)) == ([], [])


def test_a_shadow_that_matched_and_now_mismatches_is_a_regression() -> None:
    worse, better = compare_entry(TEST, BaselineEntry(shadows={"prices": "matched", "totals": "mismatched"}),
                                  BaselineEntry(shadows={"prices": "mismatched", "totals": "matched"}),
                                  Tolerances())
    assert [(c.label, c.before, c.after) for c in worse] == [("shadow prices", "matched", "mismatched")]
    assert [(c.label, c.before, c.after) for c in better] == [("shadow totals", "mismatched", "matched")]


def test_figures_missing_on_either_side_are_not_compared() -> None:
    assert changes(BaselineEntry(cache_hit_rate=0.9), BaselineEntry(queries=3)) == ([], [])
    assert changes(BaselineEntry(queries=3), BaselineEntry(cache_hit_rate=0.1)) == ([], [])


def test_compare_covers_only_tests_in_both_and_sorts_by_test() -> None:
    before = Baseline({"b::t": BaselineEntry(queries=1), "a::t": BaselineEntry(queries=1),
                       "gone::t": BaselineEntry(queries=1)})
    after = Baseline({"b::t": BaselineEntry(queries=2), "a::t": BaselineEntry(queries=3),
                      "new::t": BaselineEntry(queries=50)})
    result = compare(before, after, removed=["gone::t"])
    assert [c.nodeid for c in result.regressions] == ["a::t", "b::t"]
    assert result.removed == ["gone::t"]


@pytest.mark.parametrize(("nodeid", "collected", "narrowed", "existing", "removed"), [
    # the file was collected in full and the test is not in it any more
    ("t/test_a.py::test_gone", {"t/test_a.py::test_kept"}, set(), {"t/test_a.py"}, True),
    # the file was not collected this run (other paths on the command line)
    ("t/test_b.py::test_x", {"t/test_a.py::test_kept"}, set(), {"t/test_a.py", "t/test_b.py"}, False),
    # the file was narrowed to some tests with file.py::name
    ("t/test_a.py::test_other", {"t/test_a.py::test_kept"}, {"t/test_a.py"}, {"t/test_a.py"}, False),
    # the file is gone
    ("t/test_old.py::test_x", {"t/test_a.py::test_kept"}, set(), {"t/test_a.py"}, True),
    # collected (maybe deselected by -k later): present
    ("t/test_a.py::test_kept", {"t/test_a.py::test_kept"}, set(), {"t/test_a.py"}, False),
])
def test_removed_tests_rule(nodeid: str, collected: set[str], narrowed: set[str], existing: set[str],
                            removed: bool) -> None:
    result = removed_tests([nodeid], collected, narrowed, existing.__contains__)
    assert result == ([nodeid] if removed else [])
