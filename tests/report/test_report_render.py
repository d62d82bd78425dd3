"""Rendering of :mod:`pytest_migsafe.report.render`: sections, limits, Markdown."""

from __future__ import annotations

from pytest_migsafe.report.record import (
    CacheFigures,
    NPlusOne,
    QueryFigures,
    RunReport,
    ShapeFigure,
    TestRecord,
)
from pytest_migsafe.report.regressions import Change, Comparison
from pytest_migsafe.report.render import Totals, heaviest_lines, markdown_summary, summary_lines


def report_with(*records: TestRecord, notes: tuple[str, ...] = ()) -> RunReport:
    report = RunReport(notes=list(notes))
    for record in records:
        report.add(record)
    return report


def test_a_run_without_figures_notes_or_changes_renders_no_line() -> None:
    quiet = report_with(TestRecord("t::a", queries=QueryFigures(0, 0, 0.0)))
    assert summary_lines(quiet, Comparison()) == []
    assert summary_lines(RunReport(unmeasured={"t::b": "passed"})) == []
    assert markdown_summary(quiet, None, "b.json") == ""


def test_notes_alone_are_worth_printing() -> None:
    assert summary_lines(report_with(notes=("fakeredis used: no real Redis",))) == [
        "note: fakeredis used: no real Redis"]


def test_long_sections_are_cut_without_verbose_and_whole_with_it() -> None:
    changes = [Change(f"t::test_{i:02}", "queries", 1, 2) for i in range(15)]
    short = summary_lines(RunReport(), Comparison(regressions=changes), baseline_label="b.json")
    assert short[0] == "regressions against b.json: 15"
    assert len(short) == 1 + 1 + 10 + 1 and short[-1] == "  ... and 5 more (-v shows all)"
    assert len(summary_lines(RunReport(), Comparison(regressions=changes), verbose=True)) == 17


def test_without_full_only_regressions_and_messages_remain() -> None:
    report = report_with(TestRecord("t::a", queries=QueryFigures(12, 12, 1.0, n_plus_one=[
        NPlusOne("SELECT x", "app.py:3", 12)])))
    comparison = Comparison(regressions=[Change("t::a", "queries", 3, 12)],
                            improvements=[Change("t::b", "queries", 3, 1)], removed=["t::c"])
    lines = summary_lines(report, comparison, baseline_label="b.json", full=False, messages=["FAILED: x"])
    assert lines == ["regressions against b.json: 1", "  test  figure   before  after",
                     "  t::a  queries  3       12", "FAILED: x"]


def test_totals_sum_the_run_and_skip_allowed_n_plus_one() -> None:
    totals = Totals.of(report_with(
        TestRecord("t::a", queries=QueryFigures(10, 10, 1.0, n_plus_one=[
            NPlusOne("SELECT x", "a.py:1", 10), NPlusOne("SELECT y", "a.py:2", 10, allowed=True)])),
        TestRecord("t::b", cache=CacheFigures(hits=3, misses=1, backend="fakeredis")),
    ))
    assert (totals.tests_measured, totals.queries, totals.n_plus_one, totals.hit_rate) == (2, 10, 1, 0.75)


def test_markdown_escapes_pipes_in_shapes() -> None:
    comparison = Comparison(regressions=[Change("t::a", "n_plus_one", None, "SELECT a || b FROM t")])
    text = markdown_summary(RunReport(), comparison, "b.json")
    assert "| `t::a` | N+1 suspect | - | SELECT a \\|\\| b FROM t |" in text


def test_shadow_experiments_show_both_paths_queries_and_p99() -> None:
    from pytest_migsafe.report.record import ShadowFigures

    experiment = ShadowFigures(name="user-directory", result="matched", runs=1, mismatches=0, ignored=0,
                               seed=42, control_queries=33, candidate_queries=2,
                               control_p99_ms=13.5, candidate_p99_ms=3.25)
    lines = summary_lines(report_with(TestRecord("t::a", shadows=[experiment])))
    assert lines[0] == "shadow experiments: 1"
    row = lines[2].split()
    assert row[:4] == ["t::a", "user-directory", "matched", "1"]
    assert "33 -> 2" in lines[2] and "13.5 -> 3.25" in lines[2] and lines[2].endswith("42")
    assert "shadow: 1 matched, 0 mismatched" in lines


def test_the_heaviest_row_says_when_its_shape_came_from_other_lines_too() -> None:
    def record(nodeid: str, sites: dict[str, int]) -> TestRecord:
        count = sum(sites.values())
        shape = ShapeFigure("SELECT users.id FROM users WHERE users.id = ?", count, 1.0, 0.5, sites)
        return TestRecord(nodeid, queries=QueryFigures(count, count, 1.0, shapes=[shape]))

    report = report_with(record("t::one_line", {"shop/views.py:33": 3}),
                         record("t::two_lines", {"shop/views.py:33": 1, "shop/views.py:25": 1}),
                         record("t::three_lines", {"a.py:1": 2, "a.py:2": 1, "a.py:3": 1}))
    rows = heaviest_lines(report, 3)
    assert rows[1].endswith("x4 SELECT users.id FROM users WHERE users.id = ? at a.py:1 (+2 other sites)")
    assert rows[2].endswith("x3 SELECT users.id FROM users WHERE users.id = ? at shop/views.py:33")
    assert rows[3].endswith("x2 SELECT users.id FROM users WHERE users.id = ? at shop/views.py:33 (+1 other site)")


def test_table_columns_line_up_on_screen_with_wide_characters() -> None:
    """A node id with CJK characters or an emoji takes two columns a character on a terminal:
    the cells after it started one column further for each (padded by len())."""
    import unicodedata

    from pytest_migsafe.report.render import aligned

    rows = [["tests/test_a.py::test_plain", "3", "x"], ["tests/test_a.py::test_注文[顧客]", "12", "y"],
            ["tests/test_a.py::test_🙂", "7", "z"], ["tests/test_a.py::test_café", "1", "w"]]
    lines = aligned(rows)

    def column_of(line: str, cell: str) -> int:  # the screen column a cell starts at
        before = line[: line.rindex(cell)]
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1
                   for c in before)

    assert len({column_of(line, row[2]) for line, row in zip(lines, rows)}) == 1, lines
