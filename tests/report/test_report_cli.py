"""``migsafe report merge`` and ``migsafe report diff`` on files written by real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_migsafe.cli.main import main

SUITE = """
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")

def run(n):
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text("SELECT :i"), {"i": i})

def test_alpha():
    run(ALPHA)

def test_beta():
    run(BETA)

def test_gamma():
    run(1)
"""

# this session's own migsafe counts the statements of the in-process runs below: not news
pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")


@pytest.fixture(autouse=True)
def no_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def suite(pytester: pytest.Pytester, alpha: int = 2, beta: int = 3) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_shard=SUITE.replace("ALPHA", str(alpha)).replace("BETA", str(beta)))


def shard(pytester: pytest.Pytester, name: str, *args: str) -> Path:
    pytester.runpytest(f"--migsafe-report-json={name}", *args)
    return pytester.path / name


def test_merge_folds_shards_into_the_report_a_whole_run_writes(pytester: pytest.Pytester,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    suite(pytester)
    whole = shard(pytester, "whole.json")
    first = shard(pytester, "a.json", "-k", "alpha")
    second = shard(pytester, "b.json", "-k", "not alpha")
    out = pytester.path / "merged" / "all.json"
    assert main(["report", "merge", str(first), str(second), "-o", str(out)]) == 0
    assert "merged 2 reports (3 tests)" in capsys.readouterr().out
    merged, expected = json.loads(out.read_text()), json.loads(whole.read_text())
    assert sorted(merged["tests"]) == sorted(expected["tests"])
    for nodeid, record in expected["tests"].items():
        assert merged["tests"][nodeid]["queries"]["count"] == record["queries"]["count"]
    assert out.read_text() == json.dumps(merged, sort_keys=True, indent=2) + "\n"


def test_merge_warns_about_a_test_in_two_shards_and_keeps_the_last(pytester: pytest.Pytester,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    suite(pytester, alpha=2)
    first = shard(pytester, "a.json")
    suite(pytester, alpha=5)
    second = shard(pytester, "b.json", "-k", "alpha")
    out = pytester.path / "all.json"
    assert main(["report", "merge", str(first), str(second), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"migsafe: warning: test_shard.py::test_alpha is in {first} and {second}: keeping {second}" in err
    merged = json.loads(out.read_text())
    assert merged["tests"]["test_shard.py::test_alpha"]["queries"]["count"] == 5
    assert merged["tests"]["test_shard.py::test_beta"]["queries"]["count"] == 3


def test_merge_keeps_each_regression_with_the_record_that_won(pytester: pytest.Pytester) -> None:
    suite(pytester)
    pytester.runpytest("--migsafe-update-baseline")
    suite(pytester, alpha=4, beta=6)
    first = shard(pytester, "a.json")  # alpha and beta regressed
    suite(pytester, alpha=2, beta=6)
    second = shard(pytester, "b.json", "-k", "alpha")  # alpha back to normal
    out = pytester.path / "all.json"
    assert main(["report", "merge", str(first), str(second), "-o", str(out)]) == 0
    regressions = json.loads(out.read_text())["regressions"]
    assert [(r["nodeid"], r["after"]) for r in regressions] == [("test_shard.py::test_beta", 6)]


def test_diff_prints_the_regressions_of_a_report_against_a_baseline(pytester: pytest.Pytester,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    suite(pytester)
    pytester.runpytest("--migsafe-update-baseline")
    suite(pytester, alpha=4, beta=1)
    new = shard(pytester, "new.json")
    baseline = pytester.path / ".migsafe" / "baseline.json"
    capsys.readouterr()
    assert main(["report", "diff", str(baseline), str(new)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"regressions against {baseline}: 1"
    assert out[2].split() == ["test_shard.py::test_alpha", "queries", "2", "4"]
    assert "improvements: 1 (record them with --migsafe-update-baseline)" in out
    assert out[-1] == "FAILED: 1 regression"
    assert main(["report", "diff", "--no-fail-on-regression", str(baseline), str(new)]) == 0
    assert main(["report", "diff", "--query-tolerance", "2", str(baseline), str(new)]) == 0


def test_diff_of_two_reports_compares_their_passed_tests(pytester: pytest.Pytester,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    suite(pytester)
    old = shard(pytester, "old.json")
    suite(pytester, alpha=3)
    new = shard(pytester, "new.json", "-k", "not gamma")
    assert main(["report", "diff", str(old), str(new)]) == 1
    out = capsys.readouterr().out
    assert "test_shard.py::test_alpha  queries  2       3" in out
    assert f"not in {new}: 1 test of {old} (removed, or not run)" in out
    assert "  test_shard.py::test_gamma" in out


def test_diff_names_the_baseline_tests_new_ran_but_does_not_compare(pytester: pytest.Pytester,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Baseline tests that failed or were skipped in NEW were "not in NEW (removed, or not
    run)"; they ran, and are not compared because only passed tests are."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_z="""
        import os, pytest

        def test_zero():
            assert not os.environ.get("FAIL")

        def test_skipme():
            if os.environ.get("FAIL"):
                pytest.skip("not today")

        def test_kept():
            pass
    """)
    pytester.runpytest("--migsafe-update-baseline").assert_outcomes(passed=3)
    monkeypatch.setenv("FAIL", "1")
    new = shard(pytester, "new.json", "-k", "not kept")
    baseline = pytester.path / ".migsafe" / "baseline.json"
    capsys.readouterr()
    assert main(["report", "diff", str(baseline), str(new)]) == 0
    out = capsys.readouterr().out
    assert f"not compared: 1 failed, 1 skipped in {new} (only passed tests are compared)" in out
    assert f"not in {new}: 1 test of {baseline} (removed, or not run)" in out  # (test_kept: deselected)
    assert "  test_z.py::test_kept" in out and "  test_z.py::test_zero" not in out
    assert "interrupted" not in out
    data = json.loads(new.read_text())
    new.write_text(json.dumps({**data, "interrupted": True}))
    assert main(["report", "diff", str(baseline), str(new)]) == 0
    assert f"{new} is of an interrupted run: the tests it did not reach are not in it" in capsys.readouterr().out


def test_diff_without_changes_says_so(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_plain="def test_a():\n    pass\n")
    report = shard(pytester, "r.json")
    capsys.readouterr()
    assert main(["report", "diff", str(report), str(report)]) == 0
    assert capsys.readouterr().out == "migsafe: no change\n"


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("{oops", "not valid JSON"),
    ('{"kind": "migsafe-report", "schema_version": 7, "tests": {}}', "schema_version 7, this migsafe reads version 1"),
    ('{"kind": "something", "schema_version": 1}', "expected a migsafe-report file, found kind 'something'"),
    ('{"kind": "migsafe-report", "schema_version": 1, "tests": {"t::x": {"queries": {"count": 1}}}}',
     "a test record is malformed"),
])
@pytest.mark.parametrize("command", ["merge", "diff"])
def test_unreadable_files_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 content: str | None, message: str, command: str) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    good = tmp_path / "good.json"
    good.write_text('{"kind": "migsafe-report", "schema_version": 1, "tests": {}}')
    argv = ["report", "merge", str(good), str(bad), "-o", str(tmp_path / "out.json")] if command == "merge" \
        else ["report", "diff", str(good), str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"migsafe: {bad}: {message}") and err.count("\n") == 1 and err.endswith("\n")
    assert not (tmp_path / "out.json").exists()


def test_a_corrupt_baseline_given_to_diff_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = tmp_path / "baseline.json"
    baseline.write_text('{"kind": "migsafe-baseline", "schema_version": 1, "tests": {"t::x": {"queries": -1}}}')
    report = tmp_path / "r.json"
    report.write_text('{"kind": "migsafe-report", "schema_version": 1, "tests": {}}')
    assert main(["report", "diff", str(baseline), str(report)]) == 2
    assert "tests['t::x'].queries: expected a whole number of at least 0, got -1" in capsys.readouterr().err


def test_the_console_script_runs_the_subcommands(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_text('{"kind": "migsafe-report", "schema_version": 1, "tests": {}}')
    script = Path(sys.executable).with_name("migsafe")
    done = subprocess.run([str(script), "report", "diff", str(report), str(tmp_path / "missing.json")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr == f"migsafe: {tmp_path / 'missing.json'}: no such file\n"
    assert done.stdout == ""


def test_python_dash_m_runs_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_migsafe.cli", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "migsafe" in done.stdout


def test_a_lone_surrogate_in_a_report_is_printed_escaped_under_a_strict_utf8_stdout(tmp_path: Path) -> None:
    # a test id or shape holding one (a text decoded with surrogateescape): the diff crashed
    # with UnicodeEncodeError under a strict UTF-8 stdout
    import os

    from pytest_migsafe.report.files import report_document, write_json_atomic
    from pytest_migsafe.report.record import QueryFigures, RunReport, ShapeFigure, TestRecord

    paths = []
    for name, count in (("a.json", 1), ("b.json", 2)):
        shape = ShapeFigure(shape='SELECT "\udc80" FROM t', count=count, total_ms=0.1, max_ms=0.1,
                            call_sites={"app.py:1": count})
        record = TestRecord("t.py::test_\udc80", queries=QueryFigures(count=count, executions=count, total_ms=0.1,
                                                                      shapes=[shape]))
        path = tmp_path / name
        write_json_atomic(path, report_document(RunReport(tests={record.nodeid: record})))
        paths.append(str(path))
    done = subprocess.run([sys.executable, "-m", "pytest_migsafe.cli", "report", "diff", "-v", *paths],
                          capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 1, done.stderr.decode("utf-8", "replace")  # 1 -> 2 queries: a regression
    assert b"FAILED: 1 regression" in done.stdout and b"\\udc80" in done.stdout and not done.stderr


def test_a_sarif_location_is_a_percent_encoded_uri_reference() -> None:
    # "#" started a fragment and "%20" decoded to a space: readers resolved another file
    from urllib.parse import unquote

    from pytest_migsafe.report.record import NPlusOne, QueryFigures, RunReport, TestRecord
    from pytest_migsafe.report.sarif import sarif_document

    path = "my lib#1%20\U0001f600/app.py"
    suspect = NPlusOne(shape="SELECT ? FROM t", call_site=f"{path}:3", count=12)
    record = TestRecord("t.py::test_a", queries=QueryFigures(count=12, executions=12, total_ms=1.0, n_plus_one=[suspect]))
    document = sarif_document(RunReport(tests={record.nodeid: record}), None)
    (result,) = document["runs"][0]["results"]
    uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert unquote(uri) == path and not set(uri) & set(" #%\U0001f600") - {"%"}
    assert "#" not in uri and " " not in uri


NOT_READABLE_AS_JSON = {
    "not UTF-8": (b"\xff\xfe{}", "not UTF-8 text"),
    "nested too deeply": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("name", list(NOT_READABLE_AS_JSON))
@pytest.mark.parametrize("command", ["merge", "diff", "pool-size"])
def test_a_file_that_is_no_json_text_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            name: str, command: str) -> None:
    content, message = NOT_READABLE_AS_JSON[name]
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    good = tmp_path / "good.json"
    good.write_text('{"kind": "migsafe-report", "schema_version": 1, "tests": {}}')
    argv = {"merge": ["report", "merge", str(good), str(bad), "-o", str(tmp_path / "out.json")],
            "diff": ["report", "diff", str(good), str(bad)],
            "pool-size": ["pool-size", "--peak-rps", "10", "--from-report", str(bad)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_merge_of_shards_sharing_a_test_that_ran_no_sql_warns_and_keeps_the_last(
        pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    """A test both shards ran without a statement (an unmeasured outcome) once made merge end
    in a KeyError: the warning names the shard that had it first."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_quiet="def test_quiet():\n    pass\n")
    first = shard(pytester, "a.json", "--migsafe-report")
    out = pytester.path / "all.json"
    assert main(["report", "merge", str(first), str(first), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"migsafe: warning: test_quiet.py::test_quiet is in {first} and {first}: keeping {first}" in err
    assert json.loads(out.read_text())["unmeasured"] == {"test_quiet.py::test_quiet": "passed"}


# (where in a real run's report file, the value a hand edit put there, what the error says of it)
HAND_EDITS = [
    (("queries", "count"), "x", "queries.count: expected a whole number >= 0, got 'x'"),
    (("queries", "count"), None, "queries.count: expected a whole number >= 0, got null"),
    (("queries", "count"), float("nan"), "queries.count: expected a whole number >= 0, got nan"),
    (("queries", "count"), float("inf"), "queries.count: expected a whole number >= 0, got inf"),
    (("queries", "n_plus_one"), [1], "queries.n_plus_one[0]: expected an object, got 1"),
    (("pool", "created"), "x", "pool.created: expected a whole number >= 0, got 'x'"),
    (("pool", "wait_ms_p99"), float("nan"), "pool.wait_ms_p99: expected a number >= 0, got nan"),
    (("outcome",), 3, "outcome: expected a string, got 3"),
    ((), "abc", "expected an object, got 'abc'"),
]


@pytest.mark.parametrize(("where", "value", "message"), HAND_EDITS,
                         ids=[f"{'.'.join(w) or 'record'}={v!r}" for w, v, _ in HAND_EDITS])
@pytest.mark.parametrize("command", ["merge", "diff"])
def test_a_hand_edited_test_record_is_one_line_naming_the_file_and_the_field_and_exit_2(
        pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], command: str,
        where: tuple[str, ...], value: object, message: str) -> None:
    suite(pytester)
    good = shard(pytester, "good.json")
    document = json.loads(good.read_text())
    nodeid = "test_shard.py::test_alpha"
    record = document["tests"][nodeid]
    assert record["queries"] is not None and record["pool"] is not None  # (what the edits change is there)
    *parents, last = (nodeid, *where)
    place = document["tests"]
    for key in parents:
        place = place[key]
    place[last] = value
    bad = pytester.path / "bad.json"
    bad.write_text(json.dumps(document))  # (NaN and Infinity written as such: json.dumps allows them)
    out = pytester.path / "all.json"
    argv = ["report", "merge", str(good), str(bad), "-o", str(out)] if command == "merge" \
        else ["report", "diff", str(good), str(bad)]
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == (f"migsafe: {bad}: a test record is malformed: tests[{json.dumps(nodeid)}]"
                            f"{'.' if where else ': '}{message}\n")
    assert not out.exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("notes", "abc", "notes: expected a list, got 'abc'"),
    ("unmeasured", {"t.py::x": 5}, 'unmeasured["t.py::x"]: expected a string, got 5'),
    ("interrupted", "no", "interrupted: expected true or false, got 'no'"),
    ("regressions", [5], "regressions[0]: expected an object, got 5"),
    ("improvements", [{"nodeid": 1, "figure": "queries", "before": 1, "after": 2}],
     "improvements[0].nodeid: expected a string, got 1"),
    ("removed", [None], "removed[0]: expected a string, got null"),
], ids=["notes", "unmeasured", "interrupted", "regressions", "improvements", "removed"])
@pytest.mark.parametrize("command", ["merge", "diff"])
def test_a_hand_edited_report_field_is_one_line_naming_the_file_and_the_field_and_exit_2(
        pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str], command: str, key: str, value: object,
        message: str) -> None:
    suite(pytester)
    good = shard(pytester, "good.json")
    document = json.loads(good.read_text())
    document[key] = value
    bad = pytester.path / "bad.json"
    bad.write_text(json.dumps(document))
    out = pytester.path / "all.json"
    argv = ["report", "merge", str(good), str(bad), "-o", str(out)] if command == "merge" \
        else ["report", "diff", str(good), str(bad)]
    capsys.readouterr()
    assert main(argv) == 2
    assert capsys.readouterr().err == f"migsafe: {bad}: {message}\n"
    assert not out.exists()


@pytest.mark.parametrize("command", ["merge", "diff-new", "diff-baseline", "pool-size"])
def test_a_named_pipe_or_a_device_given_as_a_file_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    import os

    if not hasattr(os, "mkfifo") or not Path("/dev/zero").exists():
        pytest.skip("no named pipes or no /dev/zero on this platform")
    good = tmp_path / "good.json"
    good.write_text('{"kind": "migsafe-report", "schema_version": 1, "tests": {}}')
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)  # no one writes to it: a read would wait forever
    for bad, what in ((pipe, "is a named pipe"), (Path("/dev/zero"), "is a character device")):
        argv = {"merge": ["report", "merge", str(good), str(bad), "-o", str(tmp_path / "out.json")],
                "diff-new": ["report", "diff", str(good), str(bad)],
                "diff-baseline": ["report", "diff", str(bad), str(good)],
                "pool-size": ["pool-size", "--peak-rps", "10", "--from-report", str(bad)]}[command]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"migsafe: {bad}: {what}; expected a regular JSON file") and err.count("\n") == 1, err
    assert not (tmp_path / "out.json").exists()
