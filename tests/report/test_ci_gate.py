"""A CI gate people can trust: what the report says when tests fail, what moved, where, and
the files CI tools read (SARIF, GitHub annotations and step summary, pytest-html).

The statements run through SQLAlchemy on in-memory SQLite from ``app.py`` (not a test
file, so that repeats there are N+1 suspects at ``app.py:LINE``); the figures are the
plugin's real capture.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from pytest_migsafe.report.sarif import escape_data, escape_property

APP = """
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")


def run(n, sql="SELECT :i"):
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text(sql), {"i": i})
"""
# the conn.execute line of APP as written (pytester strips the first newline): every statement's call site
APP_LINE = next(n for n, line in enumerate(APP.lstrip("\n").splitlines(), 1) if "conn.execute" in line)

LONG = ("SELECT :i AS alpha_column_one, :i AS beta_column_two, :i AS gamma_column_three "
        "FROM (SELECT 1 AS x) AS {table} WHERE x = :i")

SUITE = """
import pytest
from app import run, LONG

def test_orders():
    run(ORDERS)
    run(EXTRA, "SELECT name FROM (SELECT :i AS name) AS items WHERE name = :i")

def test_lists():
    run(LISTS, LONG.format(table="orders"))
    run(LISTS, LONG.format(table="invoices"))

@pytest.mark.max_queries(3)
def test_budget():
    run(BUDGETED)
    RAISE

def test_plain():
    pass
"""
DEFAULTS = {"ORDERS": 5, "EXTRA": 0, "LISTS": 2, "BUDGETED": 2, "RAISE": "pass"}

# this session's own migsafe counts the statements of the in-process runs below: not news
pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")


@pytest.fixture(autouse=True)
def no_ci_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)


@pytest.fixture
def lab(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(app=APP + f"\nLONG = {LONG!r}\n")
    return pytester


def write_suite(pytester: pytest.Pytester, **figures: Any) -> None:
    text = SUITE
    for key, value in {**DEFAULTS, **figures}.items():
        text = text.replace(key, str(value))
    path = pytester.makepyfile(test_suite=text)
    # a rewrite of the same size within the same second would be read from the stale .pyc
    shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)


def with_baseline(pytester: pytest.Pytester, **figures: Any) -> None:
    write_suite(pytester, **figures)
    pytester.runpytest("--migsafe-update-baseline").assert_outcomes(passed=4)


def site() -> str:
    return f"app.py:{APP_LINE}"


# -- 2. silence where it should speak -------------------------------------------------
def test_tests_not_compared_are_counted_with_their_reason_and_listed_under_v(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    # test_budget now fails its budget and raises; test_lists is deselected
    write_suite(lab, BUDGETED=9, RAISE="assert False")
    result = lab.runpytest("--migsafe-report", "-k", "not lists")
    result.assert_outcomes(passed=2, failed=1, deselected=1)
    result.stdout.fnmatch_lines([
        "no regression against .migsafe/baseline.json (2 tests compared; 2 not compared: 1 deselected, 1 failed)"])
    assert "not compared with the baseline:" not in result.stdout.str()
    verbose = lab.runpytest("--migsafe-report", "-k", "not lists", "-v")
    verbose.stdout.fnmatch_lines([
        "not compared with the baseline:",
        "  test_suite.py::test_budget  (failed)",
        "  test_suite.py::test_lists   (deselected)",
    ])


def test_a_run_of_one_file_counts_the_rest_of_the_baseline_under_v_and_lists_it_under_vv(
        lab: pytest.Pytester) -> None:
    """A run of one file against a whole suite's baseline: -v listed every other baseline test
    as "not collected" before the table (34 lines in a new user's run); now one line counts
    them, -vv lists them; a test not compared for a reason of its own is still listed."""
    lab.makepyfile(test_more="from app import run\n\n" + "".join(
        f"def test_more_{n}():\n    run(1)\n\n" for n in range(7)))
    write_suite(lab)
    lab.runpytest("--migsafe-update-baseline").assert_outcomes(passed=11)
    write_suite(lab, BUDGETED=9)  # test_budget now fails
    result = lab.runpytest("--migsafe-report", "-v", "test_suite.py")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "not compared with the baseline:",
        "  test_suite.py::test_budget  (failed)",
        "  7 tests not collected (this run's selection; -vv lists them)",
    ])
    assert "test_more.py::test_more_0" not in result.stdout.str()
    listed = lab.runpytest("--migsafe-report", "-vv", "test_suite.py")
    listed.stdout.fnmatch_lines(["not compared with the baseline:", "*test_more.py::test_more_0*(not collected)"])
    assert "-vv lists them" not in listed.stdout.str()


def test_a_query_regression_names_the_shapes_that_moved_and_where(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    write_suite(lab, ORDERS=7, EXTRA=4)
    result = lab.runpytest("--migsafe-report", "--migsafe-report-json", "out.json")
    result.stdout.fnmatch_lines([
        "regressions against .migsafe/baseline.json: 1 (4 tests compared)",
        "  test *figure *before *after",
        "  test_suite.py::test_orders  queries  5       11",
        f"      +4 SELECT name FROM (SELECT ? AS name) AS items WHERE name = ? at {site()}",
        f"      +2 SELECT ? at {site()}",
    ])
    change = json.loads((lab.path / "out.json").read_text())["regressions"][0]
    assert [(d["delta"], d["before"], d["after"], d["call_site"]) for d in change["shapes"]] == [
        (4, 0, 4, site()), (2, 5, 7, site())]


def test_without_a_baseline_the_heaviest_tests_are_listed(lab: pytest.Pytester) -> None:
    write_suite(lab, ORDERS=6, LISTS=3)
    result = lab.runpytest("--migsafe-report")
    result.stdout.fnmatch_lines([
        "heaviest 3 tests by statements (--migsafe-heaviest):",
        f"  6 queries  test_suite.py::test_lists   x3 SELECT ... FROM (SELECT ? AS x) AS orders WHERE x = ? at {site()}",
        f"  6 queries  test_suite.py::test_orders  x6 SELECT ? at {site()}",
        f"  2 queries  test_suite.py::test_budget  x2 SELECT ? at {site()}",
    ])
    one = lab.runpytest("--migsafe-report", "--migsafe-heaviest", "1")
    one.stdout.fnmatch_lines(["heaviest 1 test by statements (--migsafe-heaviest):", "  6 queries  test_suite.py::test_lists *"])
    assert "test_orders  x6" not in one.stdout.str()
    lab.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\nmigsafe_heaviest = 0\n")
    assert "by statements (--migsafe-heaviest)" not in lab.runpytest("--migsafe-report").stdout.str()
    # with a baseline, the comparison speaks instead
    lab.runpytest("--migsafe-update-baseline")
    lab.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    assert "by statements (--migsafe-heaviest)" not in lab.runpytest("--migsafe-report").stdout.str()


def _report_section(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(n for n, line in enumerate(lines) if "migsafe report" in line)
    return [line for line in lines[start:] if "report-json" not in line and "written" not in line
            and " passed" not in line and " failed" not in line]


def test_the_summary_is_the_same_with_shapes_worked_out_late_or_as_tests_end(lab: pytest.Pytester) -> None:
    """Alone, the terminal summary works out the shapes it shows after the run (the heaviest
    tests'); with a JSON file each test's are worked out as it ends. Texts that differ in their
    literals merge into one shape either way."""
    lab.makepyfile(test_literals="""
        from app import run

        def test_literal_values():
            for value in range(7):
                run(1, f"SELECT name FROM (SELECT 'n{value}' AS name) AS t WHERE name = 'n{value}'")
            run(2, "SELECT :i AS other")
    """)
    write_suite(lab, ORDERS=6, LISTS=3)
    late = lab.runpytest("--migsafe-report", "-p", "no:randomly")
    as_they_end = lab.runpytest("--migsafe-report", "--migsafe-report-json=out.json", "-p", "no:randomly")
    assert _report_section(late) == _report_section(as_they_end)
    late.stdout.fnmatch_lines(["*9 queries  test_literals.py::test_literal_values  x7 SELECT name FROM (SELECT ? AS name)*"])


def test_a_first_baseline_does_not_claim_tests_kept_old_figures(lab: pytest.Pytester) -> None:
    write_suite(lab, BUDGETED=9)
    result = lab.runpytest("--migsafe-update-baseline")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["baseline written: .migsafe/baseline.json (3 tests; 1 test that did not pass "
                                 "has no figures in it yet)"])
    assert "kept its old figures" not in result.stdout.str()
    # once in the baseline, a failing test does keep its old figures
    write_suite(lab)
    lab.runpytest("--migsafe-update-baseline").assert_outcomes(passed=4)
    write_suite(lab, BUDGETED=9)
    again = lab.runpytest("--migsafe-update-baseline")
    again.stdout.fnmatch_lines(["baseline *: .migsafe/baseline.json (4 tests; 1 test that did not pass "
                                "kept its old figures)"])


# -- 3. messages a user can act on ----------------------------------------------------
def test_shapes_alike_in_their_first_60_characters_are_told_apart(lab: pytest.Pytester) -> None:
    write_suite(lab, LISTS=12)
    result = lab.runpytest("--migsafe-report", "-v")
    out = result.stdout.str()
    for table in ("orders", "invoices"):
        shown = f"SELECT ? AS alpha_column_one, ... FROM (SELECT ? AS x) AS {table} WHERE x = ?"
        assert f"x12  at {site()}  {shown}" in out  # the N+1 table
    assert re.search(r"test_suite.py::test_lists .*SELECT ... FROM \(SELECT \? AS x\) AS (orders|invoices)", out)


def test_a_test_that_raises_over_its_budget_shows_the_budget_too(lab: pytest.Pytester) -> None:
    write_suite(lab, BUDGETED=5, RAISE="raise ValueError('the page broke')")
    result = lab.runpytest()
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([
        "*ValueError: the page broke",
        "*- Captured migsafe call -*",
        "the test raised after exceeding its query budget: max_queries: expected at most 3 queries, 5 ran",
        f"  SELECT ? x5 at {site()}",
    ])
    # within its budget, a raising test shows its exception only
    write_suite(lab, BUDGETED=2, RAISE="raise ValueError('the page broke')")
    assert "Captured migsafe" not in lab.runpytest().stdout.str()


def test_the_totals_say_why_fewer_tests_were_measured_than_passed(lab: pytest.Pytester) -> None:
    write_suite(lab)
    result = lab.runpytest("--migsafe-report")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["totals: 3 tests measured (of 4 run: 1 ran no SQL and touched no observed cache, "
                                 "pool or shadow), 11 queries, 0 N+1 suspects"])


# -- 4. files and interruptions ---------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_baseline_and_json_get_the_mode_of_a_plain_file_write(lab: pytest.Pytester, umask: int) -> None:
    write_suite(lab)
    old = os.umask(umask)
    try:
        lab.runpytest("--migsafe-update-baseline", "--migsafe-report-json", "out.json",
                      "--migsafe-sarif", "out.sarif")
        plain = lab.path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in (".migsafe/baseline.json", "out.json", "out.sarif"):
        assert stat.S_IMODE((lab.path / name).stat().st_mode) == expected, name


SIGTERM_SUITE = """
import os, threading
from app import run

def test_quick():
    run(3)

def test_blocks():
    run(2)
    with open(os.environ["MIGSAFE_TEST_FIFO"], "w") as fifo:
        fifo.write("ready\\n")
    threading.Event().wait()  # until SIGTERM
"""


def test_sigterm_still_writes_the_json_report(lab: pytest.Pytester) -> None:
    import signal
    import subprocess
    import sys
    import threading

    lab.makepyfile(test_suite=SIGTERM_SUITE)
    fifo = lab.path / "ready.fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--migsafe-report-json=out.json", "--migsafe-sarif=out.sarif"],
        cwd=lab.path, env=dict(os.environ, MIGSAFE_TEST_FIFO=str(fifo)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    def unblock_if_pytest_ends() -> None:  # a run that never reaches the test must not hang this one
        process.wait()
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    threading.Thread(target=unblock_if_pytest_ends, daemon=True).start()
    try:
        with open(fifo) as reader:  # blocks until the test opens it: no timing involved
            assert reader.readline() == "ready\n", process.communicate()[0]
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, out
    document = json.loads((lab.path / "out.json").read_text())
    assert document["interrupted"] is True
    assert document["tests"]["test_suite.py::test_quick"]["queries"]["count"] == 3
    assert json.loads((lab.path / "out.sarif").read_text())["version"] == "2.1.0"


FORKING_SUITE = """
import multiprocessing, os, signal, threading

def _wait():
    # SIGTERM was blocked across the fork (it arrives here, not while the child is still
    # in the fork's own code: there an exception would let the child run on as pytest)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    threading.Event().wait()  # until terminated

def _forked(start):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        return start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

def test_a_forked_child_ends_by_sigterm():
    child = multiprocessing.get_context("fork").Process(target=_wait)
    _forked(child.start)
    child.terminate()
    child.join(60)
    assert child.exitcode == -signal.SIGTERM

def _fork_waiting():
    pid = os.fork()
    if pid == 0:  # the child
        try:
            _wait()
        finally:
            os._exit(3)
    return pid

def test_an_os_fork_child_ends_by_sigterm():
    pid = _forked(_fork_waiting)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
"""


@pytest.mark.parametrize("report", ["--migsafe-report-json=out.json", "--migsafe-sarif=out.sarif", None])
def test_a_child_a_test_forks_ends_by_sigterm_as_without_the_plugin(lab: pytest.Pytester, report: str | None) -> None:
    """The report's SIGTERM handler (the run is interrupted and its files written) is
    inherited by a process a test forks: there a SIGTERM ends the process by the signal, as
    by default (it raised KeyboardInterrupt in the child: exit code 1, not -SIGTERM)."""
    lab.makepyfile(test_forks=FORKING_SUITE)
    args = ["-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:xdist"]
    result = lab.runpytest_subprocess(*args, *([report] if report else ["-p", "no:migsafe"]), timeout=300)
    result.assert_outcomes(passed=2)


LAST_FAILED_SUITE = """
import os, pytest
from app import run

def test_a1():
    run(1)

def test_a2():
    run(2)
    assert os.environ.get("FIXED")

@pytest.mark.parametrize("n", [1, 2])
def test_a3(n):
    run(n)
"""


def test_a_last_failed_run_removes_no_baseline_test_of_the_files_it_runs_again(lab: pytest.Pytester,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--lf runs a file's failed tests again and drops its passed ones as it collects the file,
    without deselecting them: they still exist, and stay in the baseline (they were reported
    as "no longer exist" and dropped by --migsafe-update-baseline)."""
    lab.makepyfile(test_a=LAST_FAILED_SUITE, test_b="from app import run\n\ndef test_b1():\n    run(1)\n")
    baseline = lab.path / ".migsafe" / "baseline.json"
    first = lab.runpytest_subprocess("-p", "no:randomly", "-p", "no:xdist", "--migsafe-update-baseline")
    first.assert_outcomes(passed=4, failed=1)
    before = set(json.loads(baseline.read_text())["tests"])
    assert before == {"test_a.py::test_a1", "test_a.py::test_a3[1]", "test_a.py::test_a3[2]", "test_b.py::test_b1"}
    monkeypatch.setenv("FIXED", "1")
    again = lab.runpytest_subprocess("-p", "no:randomly", "-p", "no:xdist", "--lf", "--migsafe-update-baseline",
                                     "--migsafe-report")
    again.assert_outcomes(passed=1)
    assert "no longer exist" not in again.stdout.str()
    assert set(json.loads(baseline.read_text())["tests"]) == before | {"test_a.py::test_a2"}


# -- 5. outputs CI tools read -----------------------------------------------------------
SARIF_REQUIRED = {
    "log": {"version", "runs"},
    "run": {"tool"},
    "driver": {"name"},
    "result": {"message"},
    "rule": {"id"},
}


def check_sarif(document: dict[str, Any]) -> None:
    """The SARIF 2.1.0 schema's required properties and value sets, for what migsafe writes."""
    assert SARIF_REQUIRED["log"] <= set(document) and document["version"] == "2.1.0"
    assert document["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(document["runs"], list) and document["runs"]
    for run in document["runs"]:
        assert SARIF_REQUIRED["run"] <= set(run)
        driver = run["tool"]["driver"]
        assert SARIF_REQUIRED["driver"] <= set(driver) and isinstance(driver["name"], str)
        rule_ids = []
        for rule in driver.get("rules", []):
            assert SARIF_REQUIRED["rule"] <= set(rule)
            assert set(rule["shortDescription"]) == {"text"}
            assert rule["defaultConfiguration"]["level"] in ("none", "note", "warning", "error")
            rule_ids.append(rule["id"])
        for result in run["results"]:
            assert SARIF_REQUIRED["result"] <= set(result)
            assert isinstance(result["message"]["text"], str) and result["message"]["text"]
            assert result["level"] in ("none", "note", "warning", "error")
            assert rule_ids[result["ruleIndex"]] == result["ruleId"]
            for location in result["locations"]:
                physical = location["physicalLocation"]
                assert isinstance(physical["artifactLocation"]["uri"], str)
                assert not physical["artifactLocation"]["uri"].startswith("/")
                assert isinstance(physical["region"]["startLine"], int) and physical["region"]["startLine"] >= 1


def results_of(document: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [(r["ruleId"], r["level"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
             r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in document["runs"][0]["results"]]


def test_sarif_lists_suspects_budget_failures_and_regressions_at_their_call_sites(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    write_suite(lab, LISTS=12, BUDGETED=5, EXTRA=1)
    result = lab.runpytest("--migsafe-sarif", "out.sarif")
    result.assert_outcomes(passed=3, failed=1)
    document = json.loads((lab.path / "out.sarif").read_text())
    check_sarif(document)
    assert sorted(results_of(document)) == sorted([
        ("migsafe/n-plus-one", "warning", "app.py", APP_LINE),
        ("migsafe/n-plus-one", "warning", "app.py", APP_LINE),
        ("migsafe/query-budget", "error", "app.py", APP_LINE),
        ("migsafe/regression", "error", "app.py", APP_LINE),  # test_orders: +1 shape
        ("migsafe/regression", "error", "app.py", APP_LINE),  # test_lists: more queries
        ("migsafe/regression", "error", "app.py", APP_LINE),  # test_lists: new N+1 suspect
        ("migsafe/regression", "error", "app.py", APP_LINE),  # test_lists: new N+1 suspect
    ])
    texts = [r["message"]["text"] for r in document["runs"][0]["results"]]
    assert any(t.startswith("test_suite.py::test_budget: 5 statements, max_queries(3)") for t in texts)
    # the ini key names the file too
    lab.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\nmigsafe_sarif = ci/migsafe.sarif\n")
    lab.runpytest()
    check_sarif(json.loads((lab.path / "ci" / "migsafe.sarif").read_text()))


def test_github_escaping_rules() -> None:
    assert escape_data("50% of a\r\nb, c: d") == "50%25 of a%0D%0Ab, c: d"
    assert escape_property("app/x,y:z%.py\n") == "app/x%2Cy%3Az%25.py%0A"


def test_on_github_actions_suspects_and_regressions_are_annotated(lab: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with_baseline(lab)
    write_suite(lab, LISTS=12, ORDERS=6)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = lab.runpytest("--migsafe-report")
    lines = [line for line in result.outlines if line.startswith("::")]
    assert len([line for line in lines if line.startswith(f"::warning file=app.py,line={APP_LINE},")]) == 2
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 4  # two query counts, two new suspects
    assert all(line.startswith(f"::error file=app.py,line={APP_LINE},title=migsafe regression%3A ")
               for line in errors)
    assert any(f"::test_suite.py::test_orders: queries 5 -> 6%0A+1 SELECT ? at app.py:{APP_LINE}" in line for line in errors)
    monkeypatch.delenv("GITHUB_ACTIONS")
    assert not [line for line in lab.runpytest("--migsafe-report").outlines if line.startswith("::")]


def test_the_step_summary_charts_the_heaviest_tests_above_the_regressions(lab: pytest.Pytester,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with_baseline(lab)
    write_suite(lab, ORDERS=9)
    summary = lab.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    lab.runpytest("--migsafe-report")
    text = summary.read_text()
    chart = text.index("```mermaid\nxychart-beta\n")
    assert chart < text.index("| test | figure | before | after |")
    assert '    x-axis ["test_orders (base)", "test_orders (now)", "test_lists (base)", "test_lists (now)", ' \
           '"test_budget (base)", "test_budget (now)"]' in text
    assert "    bar [5, 9, 4, 4, 2, 2]" in text
    assert f"<br>+4 SELECT ? at {site()}" in text


def test_the_step_summary_without_a_baseline_charts_no_baseline_bars(lab: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a baseline the chart drew a "(base)" bar of 0 beside each test, titled "baseline
    beside now": it read as a rise from nothing to each test's count."""
    write_suite(lab, ORDERS=9)
    summary = lab.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    lab.runpytest("--migsafe-report")
    text = summary.read_text()
    assert '    title "Heaviest 3 tests: statements"' in text
    assert '    x-axis ["test_orders", "test_lists", "test_budget"]' in text
    assert "    bar [9, 4, 2]" in text
    assert "(base)" not in text and "baseline" not in text


def test_the_step_summary_charts_a_test_new_since_the_baseline_alone(lab: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with_baseline(lab)
    write_suite(lab, ORDERS=9)
    lab.makepyfile(test_added="""
        from app import run

        def test_added():
            run(7)
    """)
    summary = lab.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    lab.runpytest("--migsafe-report")
    text = summary.read_text()
    assert '"test_added (new)"' in text and '"test_added (base)"' not in text


# -- 6. pytest-html ---------------------------------------------------------------------
def html_data(path: Path) -> dict[str, Any]:
    match = re.search(r'data-jsonblob="([^"]*)"', path.read_text())
    assert match is not None
    return json.loads(html.unescape(match.group(1)))


def test_pytest_html_gets_migsafe_columns_and_each_tests_shapes(lab: pytest.Pytester) -> None:
    pytest.importorskip("pytest_html")
    write_suite(lab, BUDGETED=5)
    lab.runpytest("--html=report.html").assert_outcomes(passed=3, failed=1)
    page = (lab.path / "report.html").read_text()
    for title in ("Queries / budget", "N+1 suspects", "Cache hit rate", "Connections created"):
        assert f'<th class="migsafe">{title}</th>' in page
    data = html_data(lab.path / "report.html")
    rows = {test.get("testId", key): test
            for key, tests in data["tests"].items() for test in tests}
    budget_row = json.dumps(next(t for k, t in rows.items() if "test_budget" in k))
    assert '<td class=\\"migsafe\\">5 / 3</td>' in budget_row
    assert "migsafe: statements by shape" in budget_row and f"{site()} x5" in budget_row
    plain_row = json.dumps(next(t for k, t in rows.items() if "test_plain" in k))
    assert plain_row.count('<td class=\\"migsafe\\">-</td>') == 4


def test_without_html_output_no_html_hook_is_registered(lab: pytest.Pytester) -> None:
    write_suite(lab)
    result = lab.runpytest("--migsafe-report")
    result.assert_outcomes(passed=4)
    config = lab.parseconfigure()
    assert config.pluginmanager.get_plugin("migsafe-html") is None


def test_the_gate_says_it_ran_when_the_selected_tests_ran_no_sql(lab: pytest.Pytester) -> None:
    # a CI log must show that the regression gate ran, also for a selection without figures
    with_baseline(lab)
    result = lab.runpytest("--migsafe-report", "--migsafe-fail-on-regression", "-k", "plain")
    result.assert_outcomes(passed=1, deselected=3)
    result.stdout.fnmatch_lines(["*migsafe report*", "no regression against .migsafe/baseline.json (*"])


def test_tests_an_early_stop_never_ran_are_not_run_not_deselected(lab: pytest.Pytester) -> None:
    with_baseline(lab)
    # test_orders fails first; -x stops the run: the others were selected, never run
    write_suite(lab, ORDERS="'not a number'")
    result = lab.runpytest("--migsafe-report", "-x", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["no regression against .migsafe/baseline.json (0 tests compared; "
                                 "4 not compared: 3 not run, 1 failed)"])
    deselected = lab.runpytest("--migsafe-report", "-k", "not orders", "-x", "-p", "no:randomly")
    deselected.stdout.fnmatch_lines(["*1 not compared: 1 deselected)"])
