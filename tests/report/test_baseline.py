"""The baseline file: its format, its atomic stable writes, and its update rules in a run."""

from __future__ import annotations

import difflib
import json
import shutil
from pathlib import Path

import pytest

from pytest_migsafe.report.baseline import (
    Baseline,
    BaselineEntry,
    entry_of,
    read_baseline,
    updated_baseline,
    write_baseline,
)
from pytest_migsafe.report.files import ReportFileError, write_json_atomic
from pytest_migsafe.report.record import (
    CacheFigures,
    NPlusOne,
    PoolFigures,
    QueryFigures,
    RunReport,
    ShadowFigures,
    TestRecord,
)
from pytest_migsafe.report.shapekey import shape_key

SUITE = """
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")

def run(n):
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text("SELECT :i"), {"i": i})

def test_one():
    run(ONE)

def test_two():
    run(2)

def test_quiet():
    pass
"""
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"

# this session's own migsafe counts the statements of the in-process runs below: not news
pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")


@pytest.fixture(autouse=True)
def no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def suite(pytester: pytest.Pytester, one: int = 3, name: str = "test_suite") -> None:
    pytester.makeini(INI)
    path = pytester.makepyfile(**{name: SUITE.replace("ONE", str(one))})
    # a rewrite of the same size within the same second would be read from the stale .pyc
    shutil.rmtree(path.parent / "__pycache__", ignore_errors=True)


def baseline_file(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".migsafe" / "baseline.json"


def saved(pytester: pytest.Pytester) -> dict:
    return json.loads(baseline_file(pytester).read_text())["tests"]


def queries_of(tests: dict) -> dict:
    """The query count of every test in a baseline's tests (other helpers add other figures)."""
    return {nodeid: entry.get("queries") for nodeid, entry in tests.items()}


def shadow(name: str, result: str) -> ShadowFigures:
    return ShadowFigures(name=name, result=result, runs=1, mismatches=int(result == "mismatched"), ignored=0,
                         seed=1, control_queries=1, candidate_queries=1, control_p99_ms=0.1,
                         candidate_p99_ms=0.1)


# -- the module -------------------------------------------------------------------------
def test_entry_of_keeps_the_compared_figures_only() -> None:
    record = TestRecord(
        nodeid="t::x",
        queries=QueryFigures(count=21, executions=21, total_ms=3.2, n_plus_one=[
            NPlusOne("SELECT b", "app.py:3", 10), NPlusOne("SELECT a", "app.py:9", 11),
            NPlusOne("SELECT a", "app.py:12", 10), NPlusOne("SELECT allowed", "app.py:4", 10, allowed=True)]),
        cache=CacheFigures(hits=2, misses=1, backend="redis"),
        pool=PoolFigures(created=2, checkouts=5, peak_checked_out=2),
        shadows=[shadow("prices", "matched"), shadow("prices", "mismatched"), shadow("tax", "matched")],
    )
    assert entry_of(record).to_dict() == {
        "queries": 21,
        "n_plus_one": {shape_key("SELECT a"): "SELECT a", shape_key("SELECT b"): "SELECT b"},
        "shadows": {"prices": "mismatched", "tax": "matched"},
    }  # (no cache_hit_rate: a test with shadow experiments is not rated, see the next test)


@pytest.mark.parametrize(("cache", "shadows", "kept"), [
    (CacheFigures(hits=20, misses=10, backend="redis", target=0.8, alert=0.7), [], 0.6667),  # rated
    (CacheFigures(hits=2, misses=1, backend="redis", target=0.8, alert=None), [], None),  # too few reads
    (CacheFigures(hits=20, misses=10, backend="redis", target=0.8, alert=0.7), ["prices"], None),  # shadow
    (CacheFigures(hits=2, misses=1, backend="redis", min_hit_rate=0.5, target=0.8), [], 0.6667),  # marked
])
def test_the_baseline_keeps_the_hit_rates_of_rated_tests_only(cache: CacheFigures, shadows: list[str],
                                                              kept: float | None) -> None:
    """The gate compared every test's hit rate: a test of 4 reads going from 3 hits to 0 failed
    CI as "under the alert line" while the same summary called it not rated (too few reads);
    an assert_cache_aside proof or a shadow experiment the same (their cache is flushed on
    purpose). Only a rated test's rate is kept, and so compared."""
    record = TestRecord(nodeid="t::x", cache=cache, shadows=[shadow(name, "matched") for name in shadows])
    assert entry_of(record).cache_hit_rate == kept


def test_written_baseline_is_sorted_indented_and_ends_with_a_newline(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    write_baseline(path, Baseline({"z::t": BaselineEntry(queries=1), "a::t": BaselineEntry(cache_hit_rate=1 / 3)}))
    text = path.read_text()
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert list(json.loads(text)["tests"]) == ["a::t", "z::t"]
    assert json.loads(text)["tests"]["a::t"] == {"cache_hit_rate": 0.3333}
    assert read_baseline(path).tests == {"a::t": BaselineEntry(cache_hit_rate=0.3333),
                                         "z::t": BaselineEntry(queries=1)}


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "baseline.json"
    target.mkdir()  # os.replace onto a directory fails after the temporary file is written
    with pytest.raises(OSError):
        write_json_atomic(target, {"a": 1})
    assert target.is_dir() and list(tmp_path.iterdir()) == [target]
    path = tmp_path / "ok.json"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "ok.json"]


def test_a_lone_surrogate_is_written_as_its_escape_and_read_back_the_same(tmp_path: Path) -> None:
    # a shape's quoted identifier can hold one (a text decoded with surrogateescape); UTF-8
    # cannot: the report and the baseline failed with UnicodeEncodeError, losing the file
    path = tmp_path / "r.json"
    data = {"shape": 'SELECT "\udc80x" FROM users', "é": "ü"}
    write_json_atomic(path, data)
    assert json.loads(path.read_text(encoding="utf-8")) == data
    entries = {'t.py::test_\udcff': BaselineEntry(queries=2)}
    write_baseline(tmp_path / "b.json", Baseline(entries))
    assert read_baseline(tmp_path / "b.json").tests == entries


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"kind": "migsafe-report", "schema_version": 1, "tests": {}}', "expected a migsafe-baseline file"),
    ('{"kind": "migsafe-baseline", "schema_version": 99, "tests": {}}',
     "schema_version 99, this migsafe reads version 1 or 2"),
    ('{"kind": "migsafe-baseline", "schema_version": 1, "tests": {"t::x": {"queries": "many"}}}',
     "tests['t::x'].queries: expected a whole number"),
    ('{"kind": "migsafe-baseline", "schema_version": 1, "tests": {"t::x": {"cache_hit_rate": 2}}}',
     "tests['t::x'].cache_hit_rate: expected a rate between 0 and 1"),
    ('{"kind": "migsafe-baseline", "schema_version": 1, "tests": {"t::x": {"shadows": {"p": "great"}}}}',
     "tests['t::x'].shadows"),
    ('{"kind": "migsafe-baseline", "schema_version": 1, "tests": {"t::x": {"querys": 1}}}',
     "unknown figure 'querys'"),
    # a list of N+1 shapes is schema 1's form: in a schema 2 file it was read as one and its
    # entry showed as 2 regressions
    ('{"kind": "migsafe-baseline", "schema_version": 2, "tests": {"t::x": {"n_plus_one": ["a"]}}}',
     "tests['t::x'].n_plus_one: expected statement shapes by key"),
])
def test_an_unreadable_baseline_is_an_error_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(ReportFileError) as info:
        read_baseline(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_update_replaces_passed_tests_keeps_the_others_and_drops_removed_ones() -> None:
    old = Baseline({"t::passed": BaselineEntry(queries=5), "t::failed": BaselineEntry(queries=5),
                    "t::not_run": BaselineEntry(queries=5), "t::removed": BaselineEntry(queries=5)})
    report = RunReport(
        tests={"t::passed": TestRecord("t::passed", "passed", QueryFigures(7, 7, 1.0)),
               "t::failed": TestRecord("t::failed", "failed", QueryFigures(1, 1, 1.0))},
        unmeasured={"t::zero": "passed", "t::skipped": "skipped"},
    )
    new = updated_baseline(old, report, removed=["t::removed"])
    assert {k: v.queries for k, v in new.tests.items()} == {
        "t::passed": 7, "t::failed": 5, "t::not_run": 5, "t::zero": 0}


# -- in a run ---------------------------------------------------------------------------
def test_first_run_without_baseline_reports_totals_and_writes_nothing(pytester: pytest.Pytester) -> None:
    suite(pytester)
    result = pytester.runpytest("--migsafe-report")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*- migsafe report -*", "totals: 2 tests measured (of 3 run: 1 ran no SQL and touched no observed cache, pool or shadow), "
                                 "5 queries, 0 N+1 suspects",
                                 "no baseline at .migsafe/baseline.json (--migsafe-update-baseline writes one)"])
    assert not baseline_file(pytester).exists()


def test_update_writes_every_passed_test_and_a_rerun_rewrites_the_same_bytes(pytester: pytest.Pytester) -> None:
    suite(pytester)
    result = pytester.runpytest("--migsafe-update-baseline")
    result.stdout.fnmatch_lines(["baseline written: .migsafe/baseline.json (3 tests)"])
    first = baseline_file(pytester).read_text()
    assert queries_of(json.loads(first)["tests"]) == {
        "test_suite.py::test_one": 3, "test_suite.py::test_quiet": 0, "test_suite.py::test_two": 2,
    }
    result = pytester.runpytest("--migsafe-update-baseline")
    result.stdout.fnmatch_lines(["baseline unchanged: .migsafe/baseline.json (3 tests)"])
    assert baseline_file(pytester).read_text() == first


def test_a_changed_figure_changes_only_its_own_line(pytester: pytest.Pytester) -> None:
    suite(pytester, one=3)
    pytester.runpytest("--migsafe-update-baseline").assert_outcomes(passed=3)
    before = baseline_file(pytester).read_text().splitlines()
    suite(pytester, one=4)
    pytester.runpytest("--migsafe-update-baseline").assert_outcomes(passed=3)
    after = baseline_file(pytester).read_text().splitlines()
    changed = [line for line in difflib.unified_diff(before, after, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    # the count, the count of its one shape and of that shape's one call site: nothing else
    assert sorted(changed) == ['+            "test_suite.py:8": 4', '+          "count": 4,', '+      "queries": 4,',
                               '-            "test_suite.py:8": 3', '-          "count": 3,', '-      "queries": 3,']


def test_baseline_path_from_the_option_and_from_the_ini(pytester: pytest.Pytester) -> None:
    suite(pytester)
    pytester.runpytest("--migsafe-update-baseline", "--migsafe-baseline", "figures/base.json")
    assert (pytester.path / "figures" / "base.json").exists()
    pytester.makeini(INI + "migsafe_baseline = ci/baseline.json\n")
    pytester.runpytest("--migsafe-update-baseline")
    assert (pytester.path / "ci" / "baseline.json").exists()
    assert not baseline_file(pytester).exists()


def test_deselected_and_failing_tests_keep_their_old_entries(pytester: pytest.Pytester) -> None:
    suite(pytester)
    pytester.runpytest("--migsafe-update-baseline")
    pytester.makepyfile(test_suite=SUITE.replace("ONE", "9").replace("run(2)", "run(7); assert False"))
    result = pytester.runpytest("--migsafe-update-baseline", "-k", "not quiet")
    result.assert_outcomes(passed=1, failed=1, deselected=1)
    result.stdout.fnmatch_lines(["baseline written: .migsafe/baseline.json (3 tests; 1 test that did not "
                                 "pass kept its old figures)"])
    assert queries_of(saved(pytester)) == {
        "test_suite.py::test_one": 9, "test_suite.py::test_quiet": 0, "test_suite.py::test_two": 2,
    }


def test_a_corrupt_baseline_stops_the_run_before_any_test_and_is_left_alone(pytester: pytest.Pytester) -> None:
    suite(pytester)
    baseline_file(pytester).parent.mkdir()
    baseline_file(pytester).write_text('{"kind": "migsafe-baseline", "schema_version": 1, "tests": ')
    result = pytester.runpytest("--migsafe-update-baseline", "--migsafe-report")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*migsafe: cannot use the baseline: *baseline.json: not valid JSON*",
                                 "*never overwrites a baseline it cannot read*"])
    assert "passed" not in result.stdout.str()
    assert baseline_file(pytester).read_text().endswith('"tests": ')


def test_a_baseline_of_another_schema_version_is_a_usage_error(pytester: pytest.Pytester) -> None:
    suite(pytester)
    baseline_file(pytester).parent.mkdir()
    baseline_file(pytester).write_text('{"kind": "migsafe-baseline", "schema_version": 3, "tests": {}}\n')
    result = pytester.runpytest("--migsafe-fail-on-regression")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline.json: schema_version 3, this migsafe reads version 1 or 2*"])


def test_two_runs_updating_one_baseline_at_once_keep_both_runs_tests(pytester: pytest.Pytester) -> None:
    """Two runs that read the baseline before either wrote it (each of their tests waits for
    the other's to start): the second to write replaced the first's entries with the
    baseline it read at its start. Each now updates the file as it is when it writes."""
    import subprocess
    import sys

    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    test = """
import pathlib, time

def meet(name, other):
    pathlib.Path(name).touch()
    for _ in range(3000):  # (until the other run's test started: up to 30 s)
        if pathlib.Path(other).exists():
            return
        time.sleep(0.01)
    raise AssertionError(f"{other} never came")

def test_NAME():
    meet("NAME-started", "OTHER-started")
"""
    pytester.makepyfile(test_a=test.replace("NAME", "a").replace("OTHER", "b"),
                        test_b=test.replace("NAME", "b").replace("OTHER", "a"))
    runs = [subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
                              f"test_{name}.py", "--migsafe-update-baseline"], cwd=pytester.path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in "ab"]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    tests = json.loads(baseline_file(pytester).read_text())["tests"]
    assert sorted(tests) == ["test_a.py::test_a", "test_b.py::test_b"]


def test_an_interrupted_run_never_writes_the_baseline(pytester: pytest.Pytester) -> None:
    suite(pytester)
    pytester.runpytest("--migsafe-update-baseline")
    before = baseline_file(pytester).read_text()
    pytester.makepyfile(test_suite=SUITE.replace("ONE", "8"),
                        test_zz_stop="def test_stop():\n    raise KeyboardInterrupt\n")
    result = pytester.runpytest("--migsafe-update-baseline", "--migsafe-report", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["baseline not written: the run was interrupted (.migsafe/baseline.json is unchanged)"])
    assert baseline_file(pytester).read_text() == before
    assert sorted(p.name for p in baseline_file(pytester).parent.iterdir()) == ["baseline.json"]


def test_a_second_ctrl_c_inside_pytests_handling_of_the_first_writes_no_baseline(pytester: pytest.Pytester) -> None:
    """A second Ctrl-C that lands while pytest handles the first (here: in a
    ``pytest_keyboard_interrupt`` hook, as it would between pytest catching the first and
    setting the exit status) leaves the session's exit status 0: the run is still interrupted,
    the baseline is not written and the JSON says so."""
    suite(pytester)
    pytester.runpytest("--migsafe-update-baseline")
    before = baseline_file(pytester).read_text()
    pytester.makeconftest("""
        def pytest_keyboard_interrupt(excinfo):
            raise KeyboardInterrupt  # the second Ctrl-C
    """)
    pytester.makepyfile(test_suite=SUITE.replace("ONE", "8"),
                        test_zz_stop="def test_stop():\n    raise KeyboardInterrupt\n")
    result = pytester.runpytest_subprocess("--migsafe-update-baseline", "--migsafe-report",
                                           "--migsafe-report-json=run.json")
    result.stdout.fnmatch_lines(["baseline not written: the run was interrupted (.migsafe/baseline.json is unchanged)"])
    assert baseline_file(pytester).read_text() == before
    assert json.loads((pytester.path / "run.json").read_text())["interrupted"] is True


@pytest.mark.parametrize("content", [b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000],
                         ids=["not UTF-8", "nested too deeply"])
def test_a_baseline_that_is_no_json_text_is_a_usage_error_before_any_test(pytester: pytest.Pytester,
                                                                         content: bytes) -> None:
    suite(pytester)
    (pytester.path / "c9.json").write_bytes(content)
    result = pytester.runpytest("--migsafe-report", "--migsafe-baseline=c9.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*c9.json: *"])
    result.stdout.no_fnmatch_line("*passed*")


def test_update_through_a_symlinked_baseline_rewrites_the_shared_file_and_keeps_the_link(
        pytester: pytest.Pytester) -> None:
    suite(pytester)
    shared = pytester.path / "shared" / "base.json"
    assert pytester.runpytest("--migsafe-update-baseline", "--migsafe-baseline=shared/base.json").ret == 0
    shared.chmod(0o640)
    baseline_file(pytester).parent.mkdir()
    baseline_file(pytester).symlink_to(Path("..") / "shared" / "base.json")
    suite(pytester, one=5)
    assert pytester.runpytest("--migsafe-update-baseline").ret == 0
    assert baseline_file(pytester).is_symlink()
    assert json.loads(shared.read_text())["tests"]["test_suite.py::test_one"]["queries"] == 5
    assert shared.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in shared.parent.iterdir()) == ["base.json"]


@pytest.mark.parametrize("kind", ["named pipe", "character device"])
def test_a_baseline_that_is_no_regular_file_is_a_usage_error_before_any_test(pytester: pytest.Pytester,
                                                                            kind: str) -> None:
    import os

    suite(pytester)
    if kind == "named pipe":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes on this platform")
        os.mkfifo(pytester.path / "pipe.json")  # no one writes to it: a read would wait forever
        path = "pipe.json"
    else:
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero")
        path = "/dev/zero"  # endless: a read would fill the memory
    result = pytester.runpytest("--migsafe-report", f"--migsafe-baseline={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*cannot use the baseline: *{path}: is a {kind}; "
                                 "expected a regular JSON file (a migsafe-baseline file)*",
                                 "*name another with --migsafe-baseline=PATH*"])
    result.stdout.no_fnmatch_line("*passed*")
