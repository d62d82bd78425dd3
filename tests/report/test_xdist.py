"""Under pytest-xdist the figures are measured on workers and merged on the controller.

The same suite runs without xdist, with ``-n0`` and with ``-n 2``; the baselines must be
equal byte for byte and the JSON reports equal apart from timings (``*_ms``, ``wait_ms_*``), which no
two runs share. Each test makes its own engine, so connection figures do not depend on
which worker ran which test first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_migsafe.report.record import QueryFigures, RunReport, TestRecord
from pytest_migsafe.report.render import summary_lines

# statements from an application module (repeats sent from a test module are no N+1 suspect)
APP = """
from sqlalchemy import create_engine, text

def run(n, sql="SELECT :i"):
    engine = create_engine("sqlite://")  # its own engine: one connection created per call, on any worker
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text(sql), {"i": i})
"""

SUITE = """
import pytest
from app import run

@pytest.mark.parametrize("n", range(1, 9))
def test_count(n):
    run(n)

def test_n_plus_one():
    for _ in range(12):
        run(1, "SELECT name FROM (SELECT :i AS name) AS t")

def test_prices(shadow):
    shadow.run("prices", lambda: 1, lambda: 1)

def test_quiet():
    pass

def test_fails():
    run(2)
    assert False
"""

WAYS = {"plain": ("-p", "no:xdist"), "n0": ("-n0",), "n2": ("-n", "2")}


@pytest.fixture(autouse=True)
def no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def without_timings(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: without_timings(v) for k, v in data.items()
                if not (k.endswith("_ms") or "_ms_" in k or k in ("hold_times", "servers"))}
    if isinstance(data, list):
        return [without_timings(v) for v in data]
    return data


def test_figures_are_the_same_without_xdist_with_n0_and_with_two_workers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE, app=APP)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    base = pytester.path / ".migsafe"
    base.mkdir()
    # an old baseline: a test whose figures must be kept, one gone from the file
    old = {"kind": "migsafe-baseline", "schema_version": 1, "tests": {
        "test_suite.py::test_fails": {"queries": 1}, "test_suite.py::test_gone": {"queries": 3},
        "test_suite.py::test_count[1]": {"queries": 0}}}
    outputs: dict[str, tuple[str, dict[str, Any], str]] = {}
    for way, args in WAYS.items():
        baseline = base / f"{way}.json"
        baseline.write_text(json.dumps(old))
        result = pytester.runpytest_subprocess(
            *args, "--migsafe-shadow-seed=7", "--migsafe-report", "--migsafe-update-baseline",
            f"--migsafe-baseline={baseline}", f"--migsafe-report-json=report-{way}.json")
        result.assert_outcomes(passed=11, failed=1)
        summary = result.stdout.str().split("- migsafe report -", 1)[1]
        outputs[way] = (baseline.read_text(), json.loads((pytester.path / f"report-{way}.json").read_text()),
                        summary)
        assert "error" not in summary
    plain_baseline, plain_json, _plain_summary = outputs["plain"]
    for way in ("n0", "n2"):
        baseline, report, summary = outputs[way]
        assert baseline == plain_baseline, way
        assert without_timings(report) == without_timings(plain_json), way
    saved = json.loads(plain_baseline)["tests"]
    assert saved["test_suite.py::test_count[8]"]["queries"] == 8
    assert list(saved["test_suite.py::test_n_plus_one"]["n_plus_one"].values()) == [
        "SELECT name FROM (SELECT ? AS name) AS t"]
    assert saved["test_suite.py::test_fails"] == {"queries": 1}  # failed: the old figure stays
    assert "test_suite.py::test_gone" not in saved
    assert plain_json["removed"] == ["test_suite.py::test_gone"]
    assert [(r["nodeid"], r["after"]) for r in plain_json["regressions"]] == [("test_suite.py::test_count[1]", 1)]
    assert len(plain_json["tests"]) == 11 and plain_json["unmeasured"] == {"test_suite.py::test_quiet": "passed"}
    # the summary is printed once, by the controller
    assert outputs["n2"][2].count("totals:") == 1
    assert ("totals: 11 tests measured (of 12 run: 1 ran no SQL and touched no observed cache, pool or shadow), "
            "50 queries, 1 N+1 suspect") in outputs["n2"][2]


def test_a_worker_that_sends_no_figures_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE, app=APP)
    pytester.makeconftest("""
        import pytest

        @pytest.hookimpl(wrapper=True, trylast=True)
        def pytest_sessionfinish(session):
            result = yield
            output = getattr(session.config, "workeroutput", None)
            if output is not None and session.config.workerinput["workerid"] == "gw1":
                del output["migsafe"]
            return result
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--migsafe-report-json=out.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*- migsafe report -*",
        "error: xdist worker gw1 sent no migsafe figures at its end: its notes and the tests it collected are missing from the report",
    ])
    data = json.loads(Path(pytester.path / "out.json").read_text())
    assert data["errors"] == ["error: xdist worker gw1 sent no migsafe figures at its end: its notes and the tests it collected are missing from the report"]
    # its tests' records came on their teardown reports: none is lost, none counted twice
    assert len(data["tests"]) == 11 and data["lost"] == {}
    assert data["unmeasured"] == {"test_suite.py::test_quiet": "passed"}


def test_only_the_controller_writes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE, app=APP)
    pytester.makeconftest("""
        import os

        def pytest_sessionfinish(session):
            if hasattr(session.config, "workerinput"):
                with open(f"worker-{os.getpid()}.txt", "w") as out:
                    out.write(",".join(sorted(session.config.workeroutput)))
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--migsafe-update-baseline", "--migsafe-report")
    result.assert_outcomes(passed=11, failed=1)
    assert (pytester.path / ".migsafe" / "baseline.json").exists()
    assert result.stdout.str().count("baseline written:") == 1
    assert len(list(pytester.path.glob("worker-*.txt"))) == 2


CRASHING = """
import os
import pytest
from app import run

@pytest.mark.parametrize("i", range(6))
def test_a(i):
    run(5)

def test_crash():
    run(2)  # it ran SQL before its worker died: not a test that "ran no SQL"
    if os.environ.get("CRASH"):
        os._exit(3)  # the worker dies: only this test's figures must be lost
"""


def crashed_worker(result: pytest.RunResult) -> str:
    """The xdist worker that died running test_crash, as pytest-xdist names it."""
    match = re.search(r"worker '(gw\d+)' crashed while running 'test_suite.py::test_crash'", result.stdout.str())
    assert match, result.stdout.str()
    return match.group(1)


def run_crashing(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, *args: str) -> pytest.RunResult:
    """The crashing suite on two workers. pytest-xdist's load scheduling sends each worker
    two tests in order first, and the rest one by one as they finish: test_crash, last, goes
    to a worker that has finished passing tests (a worker runs a test once it has the next)."""
    monkeypatch.setenv("CRASH", "1")
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly", *args)
    result.assert_outcomes(passed=6, failed=1)
    return result


def test_a_crashed_worker_loses_only_the_figures_of_the_test_it_was_running(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # before: the figures travelled only in the worker's end payload, so the six tests it had
    # finished were lost with it (the JSON had no test at all)
    pytester.makepyfile(test_suite=CRASHING, app=APP)
    result = run_crashing(pytester, monkeypatch, "--migsafe-report-json=out.json")
    worker = crashed_worker(result)
    data = json.loads((pytester.path / "out.json").read_text())
    assert {nodeid: record["queries"]["count"] for nodeid, record in data["tests"].items()} == {
        f"test_suite.py::test_a[{i}]": 5 for i in range(6)}
    assert data["unmeasured"] == {"test_suite.py::test_crash": "failed; figures lost"}
    assert data["lost"] == {"test_suite.py::test_crash": worker}
    assert data["interrupted"] is False and data["errors"] == []


def test_tests_whose_figures_were_lost_are_not_counted_as_running_no_sql(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # before: "6 tests measured (of 7 run: 1 ran no SQL and touched no observed cache, pool or
    # shadow)", though test_crash ran SQL: its figures were lost with its worker
    pytester.makepyfile(test_suite=CRASHING, app=APP)
    result = run_crashing(pytester, monkeypatch, "--migsafe-report")
    worker = crashed_worker(result)
    result.stdout.fnmatch_lines([f"totals: 6 tests measured (of 7 run: 1 lost with worker {worker}), 30 queries, "
                                 "0 N+1 suspects"])
    assert "ran no SQL" not in result.stdout.str()


def test_a_crashed_workers_lost_tests_are_named_and_keep_their_baseline_figures(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # before: they were written to the baseline as "ran no SQL" (queries 0) and reported as
    # improvements, and the next clean run failed with as many regressions; then only a count
    # ("5 tests run by xdist worker gw0 lost their figures"), no test id in the terminal or JSON
    pytester.makepyfile(test_suite=CRASHING, app=APP)
    pytester.runpytest_subprocess("--migsafe-update-baseline", "-p", "no:randomly").assert_outcomes(passed=7)
    baseline = json.loads((pytester.path / ".migsafe" / "baseline.json").read_text())["tests"]
    expected = {f"test_suite.py::test_a[{i}]": 5 for i in range(6)} | {"test_suite.py::test_crash": 2}
    assert {nodeid: entry["queries"] for nodeid, entry in baseline.items()} == expected
    result = run_crashing(pytester, monkeypatch, "-v", "--migsafe-report", "--migsafe-update-baseline",
                          "--migsafe-report-json=out.json")
    worker = crashed_worker(result)
    result.stdout.fnmatch_lines([
        f"note: 1 test run by xdist worker {worker} lost its figures: not compared, and the baseline keeps the old ones",
        "figures lost with their xdist worker: 1 test",
        f"  test_suite.py::test_crash  (worker {worker})",
        "*no regression against .migsafe/baseline.json (6 tests compared; 1 not compared: "
        f"1 figures lost with worker {worker})",
        "not compared with the baseline:",
        f"  test_suite.py::test_crash  (figures lost with worker {worker})",
    ])
    after = json.loads((pytester.path / ".migsafe" / "baseline.json").read_text())["tests"]
    assert {nodeid: entry["queries"] for nodeid, entry in after.items()} == expected
    data = json.loads((pytester.path / "out.json").read_text())
    assert data["improvements"] == [] and data["regressions"] == []
    assert data["lost"] == {"test_suite.py::test_crash": worker}
    monkeypatch.delenv("CRASH")
    clean = pytester.runpytest_subprocess("-n", "2", "--migsafe-fail-on-regression", "-p", "no:randomly")
    clean.assert_outcomes(passed=7)
    assert clean.ret == 0


def test_the_lost_tests_are_listed_ten_at_most_without_v() -> None:
    lost = {f"t.py::test_{i:02}": "gw1" for i in range(12)}
    report = RunReport(tests={"t.py::a": TestRecord("t.py::a", queries=QueryFigures(3, 3, 0.1))},
                       unmeasured=dict.fromkeys(lost, "failed; figures lost"), lost=lost)
    short = summary_lines(report)
    assert short[0] == "totals: 1 test measured (of 13 run: 12 lost with worker gw1), 3 queries, 0 N+1 suspects"
    assert short[1:] == ["figures lost with their xdist worker: 12 tests",
                         *(f"  t.py::test_{i:02}  (worker gw1)" for i in range(10)), "  ... and 2 more (-v shows all)"]
    every = [line for line in summary_lines(report, verbose=True) if line.endswith("(worker gw1)")]
    assert every == [f"  t.py::test_{i:02}  (worker gw1)" for i in range(12)]


def test_the_lost_tests_read_back_merge_and_are_checked() -> None:
    report = RunReport(unmeasured={"t.py::a": "passed; figures lost", "t.py::b": "passed"}, lost={"t.py::a": "gw0"})
    data = json.loads(json.dumps(report.to_dict()))
    assert data["lost"] == {"t.py::a": "gw0"} and RunReport.from_dict(data) == report
    assert RunReport.from_dict({"tests": {}}).lost == {}  # a report written before the field
    with pytest.raises(ValueError, match=re.escape('lost["t.py::a"]: expected a string, got 5')):
        RunReport.from_dict({**data, "lost": {"t.py::a": 5}})
    with pytest.raises(ValueError, match=re.escape('lost["t.py::c"]: expected a test in unmeasured')):
        RunReport.from_dict({**data, "lost": {"t.py::c": "gw0"}})
    # a later shard that ran the test again, measured or not, replaces the loss
    shard = RunReport(tests={"t.py::a": TestRecord("t.py::a", queries=QueryFigures(1, 1, 0.1))})
    report.merge(shard)
    assert report.lost == {} and "t.py::a" not in report.unmeasured
    report.merge(RunReport(unmeasured={"t.py::b": "failed; figures lost"}, lost={"t.py::b": "gw3"}))
    assert report.lost == {"t.py::b": "gw3"}


@pytest.mark.parametrize("args, registered", [((), False), (("-n0",), False), (("-n", "2"), True)])
def test_the_workers_hooks_are_registered_only_on_a_controller_that_distributes(
        pytester: pytest.Pytester, args: tuple[str, ...], registered: bool) -> None:
    """pytest-xdist installed but not distributing: no per-test hook of the report's xdist part
    (three calls a test, for reports that would never come from a worker)."""
    pytester.makeconftest("""
        def pytest_sessionfinish(session):
            if not hasattr(session.config, "workerinput"):
                has = session.config.pluginmanager.has_plugin("migsafe-report-xdist")
                print(f"XDIST-PART {has}")
    """)
    pytester.makepyfile("def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--migsafe-report", "-s", *args)
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"*XDIST-PART {registered}*"])
