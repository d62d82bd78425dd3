"""``--migsafe-report``, regressions against the baseline, JSON, JUnit and the step summary.

Query figures come from the real capture (SQLAlchemy on in-memory SQLite) and shadow
figures from the real ``shadow`` fixture; cache and pool figures, which need other
servers, are set by the generated conftest's ``figures`` marker at teardown, the way the
cache and pool wiring fill the test's record.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_migsafe.report.shapekey import shape_key

# the statements come from an application module: repeats sent from test modules and
# conftests are no N+1 suspects
SHOP_APP = """
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")

def run(n, sql="SELECT :i"):
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text(sql), {"i": i})
"""

FIGURES_CONFTEST = """
import pytest
from shop_app import run
from pytest_migsafe.report.record import CacheFigures, Leak, PoolFigures
from pytest_migsafe.plugin.stash import record_of

def pytest_configure(config):
    config.addinivalue_line("markers", "figures(cache=(hits, misses), created=n, leaks=n): "
                                       "cache and pool figures of the test")

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    mark = item.get_closest_marker("figures")
    if call.when == "teardown" and mark is not None:
        record = record_of(item)
        if "cache" in mark.kwargs:
            hits, misses = mark.kwargs["cache"]
            record.cache = CacheFigures(hits=hits, misses=misses, backend="redis")
        if "created" in mark.kwargs:
            leaks = [Leak("engine", "app.py:1")] * mark.kwargs.get("leaks", 0)
            record.pool = PoolFigures(created=mark.kwargs["created"], checkouts=2, checkins=2,
                                      peak_checked_out=2, leaks=leaks)
    return (yield)
"""

SUITE = """
import pytest
from conftest import run

def test_orders():
    run(QUERIES)

def test_lookup():
    for _ in range(LOOKUPS):
        run(1, "SELECT name FROM (SELECT :i AS name) AS t")

@pytest.mark.figures(cache=(HITS, MISSES), created=CREATED)
def test_cached():
    run(1)

def test_prices(shadow):
    shadow.run("prices", lambda: 10, lambda: CANDIDATE, mode="observe")

def test_plain():
    pass
"""

DEFAULTS = {"QUERIES": 5, "LOOKUPS": 1, "HITS": 9, "MISSES": 1, "CREATED": 1, "CANDIDATE": 10}

# this session's own migsafe counts the statements of the in-process runs below: not news
pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")


@pytest.fixture(autouse=True)
def no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


@pytest.fixture
def lab(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(FIGURES_CONFTEST)
    pytester.makepyfile(shop_app=SHOP_APP)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def write_suite(pytester: pytest.Pytester, **figures: Any) -> None:
    text = SUITE
    for key, value in {**DEFAULTS, **figures}.items():
        text = text.replace(key, str(value))
    pytester.makepyfile(test_shop=text)


def with_baseline(pytester: pytest.Pytester, **figures: Any) -> None:
    """Write the suite with ``figures`` and record them as the baseline."""
    write_suite(pytester, **figures)
    pytester.runpytest("--migsafe-update-baseline").assert_outcomes(passed=5)


def regressions_of(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list[dict[str, Any]]]:
    result = pytester.runpytest("--migsafe-report", "--migsafe-report-json", "out.json", *args)
    return result, json.loads((pytester.path / "out.json").read_text())["regressions"]


# -- the summary ------------------------------------------------------------------------
def test_nothing_to_say_prints_nothing(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_plain="def test_a():\n    pass\n")
    result = lab.runpytest("--migsafe-report")
    result.assert_outcomes(passed=1)
    assert "migsafe report" not in result.stdout.str()


def test_without_the_option_nothing_is_printed_or_registered(lab: pytest.Pytester) -> None:
    write_suite(lab, LOOKUPS=12)
    result = lab.runpytest()
    result.assert_outcomes(passed=5)
    assert "migsafe report" not in result.stdout.str()


def test_without_baseline_the_totals_and_n_plus_one_warnings_print(lab: pytest.Pytester) -> None:
    write_suite(lab, LOOKUPS=12)
    result = lab.runpytest("--migsafe-report")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([
        "*- migsafe report -*",
        "N+1 suspects: 1",
        "  test_shop.py::test_lookup  x12  at shop_app.py:8  SELECT name FROM (SELECT ? AS name) AS t",
        "totals: 4 tests measured (of 5 run: 1 ran no SQL and touched no observed cache, pool or shadow), "
        "18 queries, 1 N+1 suspect",
        "cache: 9 hits, 1 miss, hit rate 90.0%",
        "pool: * created",
        "shadow: 1 matched, 0 mismatched",
        "no baseline at .migsafe/baseline.json (--migsafe-update-baseline writes one)",
    ])
    assert "per test" not in result.stdout.str()


def test_verbose_adds_one_line_per_measured_test(lab: pytest.Pytester) -> None:
    write_suite(lab, HITS=3, MISSES=7, CREATED=2)
    lab.makepyfile(test_budget="""
        import pytest
        from conftest import run

        @pytest.mark.max_queries(4)
        def test_budgeted():
            run(3)
    """)
    result = lab.runpytest("--migsafe-report", "-v")
    result.stdout.fnmatch_lines([
        "per test (queries as count/budget; ! marks a hit rate under the alert line 70%):",
        "  test*queries*N+1*slowest shape*cache hit/miss*pool new/peak/leak*shadow",
        "  test_budget.py::test_budgeted *3/4 *0 *SELECT ? (* ms)*",
        "  test_shop.py::test_cached *1 *0 *SELECT ? (* ms)*3/7 30.0%! *2/2/0 *-",
        "  test_shop.py::test_lookup *1 *0 *SELECT name FROM (SELECT ? AS name) AS t (* ms)*",
        "  test_shop.py::test_orders *5 *0 *",
        "  test_shop.py::test_prices *- *- *- *- *- *prices:matched",
    ])
    assert "  test_shop.py::test_plain " not in result.stdout.str()


def test_the_alert_line_comes_from_the_cache_ini_key_when_declared(lab: pytest.Pytester) -> None:
    write_suite(lab, HITS=3, MISSES=7)
    lab.makeconftest(FIGURES_CONFTEST + """
def pytest_addoption(parser):
    try:
        parser.addini("migsafe_hit_rate_alert", "alert line", default="0.7")
    except ValueError:
        pass  # the cache wiring declared it
""")
    lab.makeini("[pytest]\nmigsafe_hit_rate_alert = 0.25\nasyncio_default_fixture_loop_scope = function\n")
    result = lab.runpytest("--migsafe-report", "-v")
    result.stdout.fnmatch_lines(["per test (*under the alert line 25%):", "*test_cached *3/7 30.0% *"])


# -- regressions, one per figure ----------------------------------------------------------
def test_more_queries_than_the_baseline_is_a_regression(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    write_suite(lab, QUERIES=8)
    result, regressions = regressions_of(lab)
    result.stdout.fnmatch_lines([
        "regressions against .migsafe/baseline.json: 1 (5 tests compared)",
        "  test *figure *before *after",
        "  test_shop.py::test_orders *queries *5 *8",
        "      +3 SELECT ? at shop_app.py:8",
    ])
    key = shape_key("SELECT ?")
    assert regressions == [{"nodeid": "test_shop.py::test_orders", "figure": "queries", "before": 5,
                            "after": 8, "subject": "", "note": "", "shapes": [
                                {"delta": 3, "shape": "SELECT ?", "key": key, "call_site": "shop_app.py:8",
                                 "before": 5, "after": 8}]}]


def test_the_query_tolerance_ini_key_absorbs_small_increases(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    write_suite(lab, QUERIES=7)
    lab.makeini("[pytest]\nmigsafe_query_tolerance = 2\nasyncio_default_fixture_loop_scope = function\n")
    result, regressions = regressions_of(lab)
    assert regressions == []
    result.stdout.fnmatch_lines(["no regression against .migsafe/baseline.json (5 tests compared)"])
    write_suite(lab, QUERIES=8)
    assert [r["after"] for r in regressions_of(lab)[1]] == [8]


def test_a_new_n_plus_one_shape_is_a_regression(lab: pytest.Pytester) -> None:
    with_baseline(lab, LOOKUPS=1)
    write_suite(lab, LOOKUPS=10)
    result, regressions = regressions_of(lab)
    assert [(r["nodeid"], r["figure"], r["before"], r["after"]) for r in regressions] == [
        ("test_shop.py::test_lookup", "queries", 1, 10),
        ("test_shop.py::test_lookup", "n_plus_one", None, "SELECT name FROM (SELECT ? AS name) AS t"),
    ]
    result.stdout.fnmatch_lines(
        ["  test_shop.py::test_lookup *N+1 suspect *- *SELECT name FROM (SELECT ? AS name) AS t"])


def test_a_hit_rate_that_fell_is_a_regression(lab: pytest.Pytester) -> None:
    with_baseline(lab, HITS=9, MISSES=1)
    write_suite(lab, HITS=8, MISSES=2)
    result, regressions = regressions_of(lab)
    assert [(r["figure"], r["before"], r["after"]) for r in regressions] == [("cache_hit_rate", 0.9, 0.8)]
    result.stdout.fnmatch_lines(["  test_shop.py::test_cached *cache hit rate *90.0% *80.0%"])
    lab.makeini("[pytest]\nmigsafe_hit_rate_tolerance = 0.2\nasyncio_default_fixture_loop_scope = function\n")
    assert regressions_of(lab)[1] == []


def test_a_hit_rate_under_the_alert_line_is_a_regression_within_the_tolerance(lab: pytest.Pytester) -> None:
    with_baseline(lab, HITS=72, MISSES=28)
    write_suite(lab, HITS=69, MISSES=31)
    result, regressions = regressions_of(lab)
    assert [(r["figure"], r["after"], r["note"]) for r in regressions] == [
        ("cache_hit_rate", 0.69, "under the alert line 70%")]
    result.stdout.fnmatch_lines(["*cache hit rate *72.0% *69.0% (under the alert line 70%)"])


def test_connections_created_are_no_regression_as_they_depend_on_the_order(lab: pytest.Pytester) -> None:
    with_baseline(lab, CREATED=1)
    write_suite(lab, CREATED=3)
    result, regressions = regressions_of(lab)
    assert regressions == []
    assert "connections created  1" not in result.stdout.str()  # no "connections created 1 -> 3" row
    assert "connections_created" not in (lab.path / ".migsafe" / "baseline.json").read_text()


def test_a_shadow_that_matched_and_now_mismatches_is_a_regression(lab: pytest.Pytester) -> None:
    with_baseline(lab, CANDIDATE=10)
    write_suite(lab, CANDIDATE=11)
    result, regressions = regressions_of(lab)
    assert [(r["figure"], r["subject"], r["before"], r["after"]) for r in regressions] == [
        ("shadow", "prices", "matched", "mismatched")]
    result.stdout.fnmatch_lines(["  test_shop.py::test_prices *shadow prices *matched *mismatched"])


def test_improvements_are_listed_with_the_hint_to_update(lab: pytest.Pytester) -> None:
    with_baseline(lab, QUERIES=5, HITS=5, MISSES=5)
    write_suite(lab, QUERIES=2, HITS=9, MISSES=1)
    result = lab.runpytest("--migsafe-report", "--migsafe-fail-on-regression")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "improvements: 2 (record them with --migsafe-update-baseline)",
        "  test *figure *before *after",
        "  test_shop.py::test_cached *cache hit rate *50.0% *90.0%",
        "  test_shop.py::test_orders *queries *5 *2",
        "      -3 SELECT ? at shop_app.py:8",
    ])
    assert "regressions against" not in result.stdout.str()


def test_a_test_gone_from_a_collected_file_is_listed_as_removed(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    lab.makepyfile(test_other="def test_x():\n    pass\n")
    lab.runpytest("--migsafe-update-baseline", "test_other.py")
    write_suite(lab)
    lab.makepyfile(test_shop=(lab.path / "test_shop.py").read_text().replace("def test_plain", "def test_renamed"))
    # only test_shop.py collected: test_other.py's entry is not "removed"
    result = lab.runpytest("--migsafe-report", "test_shop.py", "-k", "not lookup")
    result.stdout.fnmatch_lines(["removed: 1 baseline test no longer exists (--migsafe-update-baseline drops them)",
                                 "  test_shop.py::test_plain"])
    lab.runpytest("--migsafe-update-baseline", "test_shop.py", "-k", "not lookup")
    tests = json.loads((lab.path / ".migsafe" / "baseline.json").read_text())["tests"]
    assert "test_shop.py::test_plain" not in tests and "test_shop.py::test_renamed" in tests
    assert "test_shop.py::test_lookup" in tests and "test_other.py::test_x" in tests


def test_a_file_narrowed_on_the_command_line_removes_nothing(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    result = lab.runpytest("--migsafe-report", "test_shop.py::test_orders")
    result.assert_outcomes(passed=1)
    assert "removed" not in result.stdout.str()


@pytest.mark.parametrize("reached", ["symlink", "pyargs"])
def test_a_file_narrowed_through_a_symlink_or_pyargs_removes_nothing(pytester: pytest.Pytester, reached: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A narrowed run whose path is a symlinked directory (node ids keep the path given, the
    resolved path did not match them) or a --pyargs module name listed the file's other
    tests as removed, and --migsafe-update-baseline dropped them."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pkg = pytester.path / "mypkg" / "tests"
    pkg.mkdir(parents=True)
    for folder in (pytester.path / "mypkg", pkg):
        (folder / "__init__.py").write_text("")
    (pkg / "test_mod.py").write_text("def test_x():\n    pass\n\ndef test_y():\n    pass\n")
    if reached == "symlink":
        (pytester.path / "linked").symlink_to(pkg, target_is_directory=True)
        whole, narrowed = ["linked"], ["linked/test_mod.py::test_x"]
    else:
        monkeypatch.syspath_prepend(str(pytester.path))
        whole, narrowed = ["mypkg"], ["--pyargs", "mypkg.tests.test_mod::test_x"]
    pytester.runpytest(*whole, "--migsafe-update-baseline").assert_outcomes(passed=2)
    baseline = pytester.path / ".migsafe" / "baseline.json"
    before = set(json.loads(baseline.read_text())["tests"])
    assert len(before) == 2
    result = pytester.runpytest(*narrowed, "--migsafe-report", "--migsafe-update-baseline")
    result.assert_outcomes(passed=1)
    assert "no longer exist" not in result.stdout.str()
    assert set(json.loads(baseline.read_text())["tests"]) == before


def test_a_deleted_test_file_lists_its_tests_as_removed(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    lab.makepyfile(test_new="def test_a():\n    pass\n")
    (lab.path / "test_shop.py").unlink()
    result = lab.runpytest("--migsafe-report", "--migsafe-update-baseline")
    result.stdout.fnmatch_lines(["removed: 5 baseline tests no longer exist*"])
    tests = json.loads((lab.path / ".migsafe" / "baseline.json").read_text())["tests"]
    assert list(tests) == ["test_new.py::test_a"]


# -- failing on regressions -----------------------------------------------------------------
def test_fail_on_regression_fails_a_green_run_and_says_why(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    write_suite(lab, QUERIES=6)
    result = lab.runpytest("--migsafe-fail-on-regression")
    result.assert_outcomes(passed=5)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*- migsafe report -*",
        "regressions against .migsafe/baseline.json: 1 (5 tests compared)",
        "  test *figure *before *after",
        "  test_shop.py::test_orders *queries *5 *6",
        "      +1 SELECT ? at shop_app.py:8",
        "FAILED: 1 regression against .migsafe/baseline.json (--migsafe-fail-on-regression)",
    ])
    assert "totals:" not in result.stdout.str()  # no --migsafe-report: only why it failed


def test_regressions_without_fail_on_regression_keep_the_exit_status(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    write_suite(lab, QUERIES=6)
    assert lab.runpytest("--migsafe-report").ret == pytest.ExitCode.OK


def test_updating_accepts_the_regressions(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    write_suite(lab, QUERIES=6)
    result = lab.runpytest("--migsafe-fail-on-regression", "--migsafe-update-baseline")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["1 regression accepted into the baseline (--migsafe-update-baseline)"])
    assert lab.runpytest("--migsafe-fail-on-regression").ret == pytest.ExitCode.OK


def test_fail_on_regression_without_a_baseline_says_so(lab: pytest.Pytester) -> None:
    write_suite(lab)
    result = lab.runpytest("--migsafe-fail-on-regression")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["no baseline at .migsafe/baseline.json: nothing to compare*"])


# -- JSON -----------------------------------------------------------------------------------
def test_json_report_holds_every_figure_and_the_comparison(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    write_suite(lab, QUERIES=7, LOOKUPS=10)
    lab.runpytest("--migsafe-report-json", "reports/run.json")
    data = json.loads((lab.path / "reports" / "run.json").read_text())
    assert data["kind"] == "migsafe-report" and data["schema_version"] == 1
    assert data["interrupted"] is False and data["errors"] == [] and data["removed"] == []
    assert sorted(data["tests"]) == ["test_shop.py::test_cached", "test_shop.py::test_lookup",
                                     "test_shop.py::test_orders", "test_shop.py::test_prices"]
    assert data["unmeasured"] == {"test_shop.py::test_plain": "passed"}
    assert data["tests"]["test_shop.py::test_orders"]["queries"]["count"] == 7
    assert data["tests"]["test_shop.py::test_cached"]["cache"]["hit_rate"] == 0.9
    assert data["tests"]["test_shop.py::test_prices"]["shadows"][0]["result"] == "matched"
    assert [(r["nodeid"], r["figure"]) for r in data["regressions"]] == [
        ("test_shop.py::test_lookup", "queries"), ("test_shop.py::test_lookup", "n_plus_one"),
        ("test_shop.py::test_orders", "queries")]


def test_json_is_written_and_marked_when_the_run_is_interrupted(lab: pytest.Pytester) -> None:
    write_suite(lab)
    lab.makepyfile(test_zz_stop="def test_stop():\n    raise KeyboardInterrupt\n")
    result = lab.runpytest("--migsafe-report-json", "out.json", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = json.loads((lab.path / "out.json").read_text())
    assert data["interrupted"] is True
    assert data["tests"]["test_shop.py::test_orders"]["queries"]["count"] == 5


def test_a_run_ended_by_pytest_exit_with_its_own_code_is_interrupted(lab: pytest.Pytester) -> None:
    """``pytest.exit(reason, returncode=7)`` set exit status 7, and the JSON said the run was
    complete (``"interrupted": false``) though the tests after it never ran."""
    write_suite(lab)
    lab.makepyfile(test_zz_stop="import pytest\n\ndef test_stop():\n    pytest.exit('enough', returncode=7)\n")
    result = lab.runpytest_subprocess("--migsafe-report-json=out.json", "--migsafe-update-baseline")
    assert result.ret == 7
    data = json.loads((lab.path / "out.json").read_text())
    assert data["interrupted"] is True
    assert data["tests"]["test_shop.py::test_orders"]["queries"]["count"] == 5
    assert not (lab.path / ".migsafe" / "baseline.json").exists()  # an interrupted run writes none


def test_a_test_interrupted_in_its_teardown_keeps_its_figures(lab: pytest.Pytester,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C (or SIGTERM) in a fixture's teardown: the test's record never reached the run
    report (records go there at the teardown report), so a test that ran 5 statements was
    "unmeasured, passed" (no SQL) and an improvement of 5 -> 0 against the baseline. It keeps
    its call's figures and outcome; a test interrupted in its call is not compared."""
    lab.makepyfile(test_stop="""
        import os
        import pytest
        from conftest import run

        @pytest.fixture
        def stops_in_teardown():
            yield
            if os.environ.get("STOP"):
                raise KeyboardInterrupt

        def test_a(stops_in_teardown):
            run(5)

        def test_b():
            run(1)
            if os.environ.get("STOP_IN_CALL"):
                raise KeyboardInterrupt
    """)
    lab.runpytest("--migsafe-update-baseline").assert_outcomes(passed=2)
    monkeypatch.setenv("STOP", "1")
    result = lab.runpytest("--migsafe-report", "--migsafe-report-json=out.json", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    data = json.loads((lab.path / "out.json").read_text())
    assert data["interrupted"] is True
    assert (data["tests"]["test_stop.py::test_a"]["outcome"], data["tests"]["test_stop.py::test_a"]["queries"]["count"]) == (
        "passed", 5)
    assert "test_stop.py::test_a" not in data["unmeasured"]
    assert "improvements" not in result.stdout.str()
    monkeypatch.delenv("STOP")
    monkeypatch.setenv("STOP_IN_CALL", "1")
    result = lab.runpytest("--migsafe-report", "--migsafe-report-json=out.json", no_reraise_ctrlc=True)
    data = json.loads((lab.path / "out.json").read_text())
    assert data["tests"]["test_stop.py::test_b"]["outcome"] == "interrupted"  # (its call never ended)


def test_a_run_ended_by_an_internal_error_is_interrupted(lab: pytest.Pytester) -> None:
    """INTERNALERROR (a conftest hook raising) ended the run with exit status 3, the tests after
    it never ran, and the JSON said ``"interrupted": false``."""
    write_suite(lab)
    lab.makeconftest(FIGURES_CONFTEST + """
def pytest_runtest_logreport(report):
    if report.nodeid.endswith("test_lookup") and report.when == "call":
        raise RuntimeError("a broken hook")
""")
    result = lab.runpytest_subprocess("--migsafe-report-json=out.json", "--migsafe-update-baseline")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    data = json.loads((lab.path / "out.json").read_text())
    assert data["interrupted"] is True
    assert not (lab.path / ".migsafe" / "baseline.json").exists()


def test_a_test_run_again_by_rerunfailures_is_recorded_with_its_last_run(lab: pytest.Pytester) -> None:
    """pytest-rerunfailures runs a failed test again: its record kept the first run's outcome
    ("rerun") with the last run's figures, so a test that passed on its rerun was never
    compared nor written to the baseline. Its record is its last run's: outcome and figures."""
    pytest.importorskip("pytest_rerunfailures")
    lab.makepyfile(test_flaky="""
        import pytest
        from conftest import run

        RUNS = []

        @pytest.mark.flaky(reruns=2)
        def test_flaky():
            RUNS.append(1)
            if len(RUNS) == 1:
                run(10)
                assert False, "the first run fails"
            run(QUERIES)
    """.replace("QUERIES", "3"))
    result = lab.runpytest("--migsafe-report", "--migsafe-update-baseline", "--migsafe-report-json=out.json")
    assert result.parseoutcomes() == {"passed": 1, "rerun": 1}
    data = json.loads((lab.path / "out.json").read_text())
    assert (data["tests"]["test_flaky.py::test_flaky"]["outcome"],
            data["tests"]["test_flaky.py::test_flaky"]["queries"]["count"]) == ("passed", 3)
    baseline = json.loads((lab.path / ".migsafe" / "baseline.json").read_text())
    assert "test_flaky.py::test_flaky" in baseline["tests"]
    lab.makepyfile(test_flaky=(lab.path / "test_flaky.py").read_text().replace("run(3)", "run(6)"))
    result = lab.runpytest("--migsafe-report", "--migsafe-fail-on-regression")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "test_flaky.py::test_flaky" in result.stdout.str()


def test_json_is_written_when_tests_fail_and_error(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_bad="""
        import pytest
        from conftest import run

        @pytest.fixture
        def broken():
            raise RuntimeError("no")

        def test_fails():
            run(2)
            assert False

        def test_errors(broken):
            pass
    """)
    result = lab.runpytest("--migsafe-report-json", "out.json")
    result.assert_outcomes(failed=1, errors=1)
    data = json.loads((lab.path / "out.json").read_text())
    assert data["tests"]["test_bad.py::test_fails"]["outcome"] == "failed"
    assert data["unmeasured"] == {"test_bad.py::test_errors": "error"}


# -- JUnit and GitHub -------------------------------------------------------------------------
def test_per_test_figures_become_junit_properties(lab: pytest.Pytester) -> None:
    write_suite(lab, QUERIES=4)
    lab.runpytest("--junitxml=junit.xml", "--migsafe-report-json=out.json").assert_outcomes(passed=5)
    cases = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in ET.parse(lab.path / "junit.xml").iter("testcase")}
    assert cases["test_orders"]["migsafe_queries"] == "4"
    assert cases["test_orders"]["migsafe_n_plus_one"] == "0"
    cached = cases["test_cached"]
    assert (cached["migsafe_cache_hits"], cached["migsafe_cache_misses"], cached["migsafe_cache_hit_rate"]) == (
        "9", "1", "0.9")
    assert (cached["migsafe_connections_created"], cached["migsafe_pool_peak_checked_out"],
            cached["migsafe_pool_leaks"]) == ("1", "2", "0")
    assert cases["test_prices"]["migsafe_shadow_prices"] == "matched"
    assert cases["test_plain"] == {}
    # every property says what the run report says
    records = json.loads((lab.path / "out.json").read_text())["tests"]
    for name, props in cases.items():
        record = records.get(f"test_shop.py::{name}")
        if record is None:
            assert props == {}
            continue
        if record["queries"] is not None:
            assert props["migsafe_queries"] == str(record["queries"]["count"])
        if record["pool"] is not None:
            assert props["migsafe_connections_created"] == str(record["pool"]["created"])
        assert "migsafe_cache_hits" in props if record["cache"] else "migsafe_cache_hits" not in props


def test_github_step_summary_gets_the_regressions_table_and_totals(
        lab: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with_baseline(lab)
    write_suite(lab, QUERIES=6)
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    lab.runpytest("--migsafe-fail-on-regression")
    text = summary.read_text()
    assert text.startswith("earlier step\n### migsafe report\n")
    assert "| test | figure | before | after |\n| --- | --- | --- | --- |\n" in text
    assert "| `test_shop.py::test_orders` | queries | 5 | 6<br>+1 SELECT ? at shop_app.py:8 |\n" in text
    assert re.search(r"\nTotals: 4 tests measured \(of 5 run: 1 ran no SQL and touched no observed cache, pool or "
                     r"shadow\), 8 queries, 0 N\+1 suspects, cache hit rate 90.0% "
                     r"\(9 hits, 1 miss\), \d+ connections? created, shadow 1 matched / 0 mismatched\.\n", text)
    assert "- FAILED: 1 regression against .migsafe/baseline.json (--migsafe-fail-on-regression)" in text


def test_help_lists_the_report_options(lab: pytest.Pytester) -> None:
    result = lab.runpytest("--help")
    result.stdout.fnmatch_lines([
        "*--migsafe-report *print migsafe's summary*",
        "*--migsafe-baseline=PATH*",
        "*--migsafe-update-baseline*",
        "*--migsafe-fail-on-regression*",
        "*--migsafe-report-json=PATH*",
        "*migsafe_query_tolerance (*string):*",  # "(int | string)" on pytest >= 9.2
        "*migsafe_hit_rate_tolerance (*string):*",
    ])


@pytest.mark.parametrize(("ini", "message"), [
    ("migsafe_query_tolerance = -1",
     "ini option migsafe_query_tolerance = '-1': expected a whole number of at least 0"),
    ("migsafe_hit_rate_tolerance = lots", "ini option migsafe_hit_rate_tolerance = 'lots'"),
])
def test_bad_tolerances_are_usage_errors(lab: pytest.Pytester, ini: str, message: str) -> None:
    lab.makeini(f"[pytest]\n{ini}\nasyncio_default_fixture_loop_scope = function\n")
    write_suite(lab)
    result = lab.runpytest("--migsafe-report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


ODD_SHADOWS = """
import pytest

@pytest.mark.parametrize("name", ["nul\\x00x", "esc\\x1b[31m", "nl\\nx\\r\\ny", "sur\\udc80", "plain_name"])
def test_odd_experiment_names(shadow, name):
    assert shadow.run(name, lambda: 1, lambda: 1) == 1
"""


def test_odd_experiment_names_keep_junit_xml_whole(pytester: pytest.Pytester) -> None:
    # pytest escapes a property's value, not its name: control characters made the XML
    # ill-formed and a lone surrogate crashed pytest's writer at the end (exit 1, empty file)
    pytester.makepyfile(test_odd=ODD_SHADOWS)
    result = pytester.runpytest_subprocess("--junitxml=junit.xml", "-p", "no:randomly",
                                           "-o", "migsafe_junit_properties=true")
    result.assert_outcomes(passed=5)
    assert result.ret == 0
    names = [p.get("name") for p in ET.parse(pytester.path / "junit.xml").iter("property")]
    assert len(names) == len(set(names)) == 5 and "migsafe_shadow_plain_name" in names
    assert all(re.fullmatch(r"migsafe_shadow_[A-Za-z0-9_.-]+", name) for name in names), names


@pytest.mark.parametrize("text", ["nl\nx\r\ny", "nul\x00x", "esc\x1b[31m|`", "line\u2028sep"])
def test_a_markdown_cell_and_a_chart_label_stay_on_one_line(text: str) -> None:
    # a newline in a cell ended the step summary's table; a control character in a label broke the chart
    from pytest_migsafe.report.render import _cell, _chart_label

    for shown in (_cell(text), _chart_label(f"t.py::test[{text}]")):
        assert not re.search(r"[\x00-\x1f\x7f\u2028\u2029]", shown), repr(shown)
    assert "|" not in _cell(text).replace("\\|", "")


@pytest.mark.parametrize("option, target", [
    ("--migsafe-report-json", "{tmp}"),  # a directory
    ("--migsafe-sarif", "/proc/migsafe.sarif"),  # a file system where no file can be made
    ("--migsafe-report-json", "{tmp}/a_file/report.json"),  # under a file
    ("--migsafe-baseline", "{tmp}/a_file/baseline.json"),
])
def test_an_output_path_that_cannot_be_written_is_a_usage_error_before_any_test(
        pytester: pytest.Pytester, option: str, target: str) -> None:
    """Found after the whole run, the report was lost: now the run does not start."""
    (pytester.path / "a_file").write_text("")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    path = target.format(tmp=pytester.path)
    extra = ("--migsafe-update-baseline",) if option == "--migsafe-baseline" else ()
    result = pytester.runpytest_subprocess(f"{option}={path}", *extra)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option}={path}: *expected the path of a file to write*"])
    result.stdout.no_fnmatch_line("*passed*")


@pytest.mark.parametrize("key, value, expected", [
    ("migsafe_query_tolerance", "-1", "expected a whole number of at least 0, got -1"),
    ("migsafe_hit_rate_tolerance", "x", "expected a rate between 0 and 1, got 'x'"),
    ("migsafe_heaviest", "x", "expected a whole number of at least 0, got 'x'"),
    ("migsafe_n_plus_one_threshold", "abc", "expected a whole number >= 2, got 'abc'"),
])
def test_a_bad_report_ini_value_is_an_error_with_no_report_asked_for(pytester: pytest.Pytester, key: str,
                                                                    value: str, expected: str) -> None:
    """Read only by the report, they were accepted until the day the report was turned on."""
    pytester.makeini(f"[pytest]\n{key} = {value}\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: migsafe: ini option {key} = '{value}': {expected}"])
    result.stdout.no_fnmatch_line("*passed*")


@pytest.mark.parametrize("option", ["--migsafe-report-json", "--migsafe-sarif", "--migsafe-baseline"])
def test_an_empty_output_path_is_a_usage_error(pytester: pytest.Pytester, option: str) -> None:
    """``--migsafe-report-json=`` was read as not given: no report, and no word of it."""
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess(f"{option}=")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {option}= is empty; expected the path of a file to write"])
    result.stdout.no_fnmatch_line("*passed*")


def test_two_outputs_naming_one_file_are_a_usage_error(pytester: pytest.Pytester) -> None:
    """The JSON and the SARIF findings given one path: the one written last replaced the other."""
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--migsafe-report-json=out.json", "--migsafe-sarif=./out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --migsafe-report-json and --migsafe-sarif name the same file (*out.json); "
                                 "expected a file of its own for each (one would overwrite the other)"])
    result.stdout.no_fnmatch_line("*passed*")
