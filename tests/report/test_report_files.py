"""Reading and writing migsafe's JSON files: every field of a run report checked on read,
writes through symlinks that keep the file's mode, and inputs that are no regular file."""

from __future__ import annotations

import copy
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pytest_migsafe.report import files
from pytest_migsafe.report.baseline import read_baseline
from pytest_migsafe.report.files import (
    ReportFileError,
    file_kind,
    read_json_object,
    read_report_document,
    report_document,
    run_report_of,
    write_json_atomic,
)
from pytest_migsafe.report.record import (
    CacheFigures,
    Leak,
    NPlusOne,
    PoolFigures,
    QueryFigures,
    RunReport,
    ShadowFigures,
    ShapeFigure,
    TestRecord,
)

NODE = "t.py::a"


def full_report() -> RunReport:
    """A run report with every kind of figure filled in (none of them a default)."""
    shape = ShapeFigure(shape="SELECT ? FROM t", count=3, total_ms=0.5, max_ms=0.25, call_sites={"app.py:3": 3})
    suspect = NPlusOne(shape="SELECT ? FROM t", call_site="app.py:2", count=3, allowed=True, kind="lazy_load",
                       relationship="Order.customer", parents=3, chain=["app.py:2", "app.py:3"],
                       loaded_at="app.py:1", fix="selectinload(Order.customer)")
    queries = QueryFigures(count=3, executions=4, total_ms=0.5, budget=5, shapes=[shape], n_plus_one=[suspect],
                           round_trips=2)
    cache = CacheFigures(hits=3, misses=1, backend="fakeredis", by_prefix={"user": [3, 1]},
                         by_command={"GET": [3, 1]}, min_hit_rate=0.5, min_hit_rate_prefix="user",
                         source="client", target=0.9, alert=0.7)
    pool = PoolFigures(created=1, closed=1, checkouts=2, checkins=2, peak_checked_out=1, wait_ms_p50=0.01,
                       wait_ms_p99=0.02, wait_ms_max=0.03, leaks=[Leak(pool="sqlite://", call_site="app.py:9")],
                       pool_sizes={"sqlite://": 5}, cold_start_created=1, hold_ms_p50=0.5, hold_ms_max=0.6,
                       hold_times={"buckets": {"500": 1, "600": 1}, "count": 2, "total_us": 1100, "max_us": 600},
                       servers={"sqlite://": "in-process"})
    shadow = ShadowFigures(name="prices", result="matched", runs=2, mismatches=0, ignored=0, seed=7,
                           control_queries=2, candidate_queries=1, control_p99_ms=1.5, candidate_p99_ms=0.5,
                           control_cache_hits=1, control_cache_misses=0)
    record = TestRecord(NODE, outcome="failed", queries=queries, cache=cache, pool=pool, shadows=[shadow])
    return RunReport(tests={NODE: record}, notes=["fakeredis used"], interrupted=True,
                     unmeasured={"t.py::b": "passed"})


def test_every_figure_of_a_report_reads_back_as_written() -> None:
    report = full_report()
    data = json.loads(json.dumps(report.to_dict()))
    assert RunReport.from_dict(data) == report
    assert RunReport.from_dict(data).to_dict() == data


def test_a_worker_payload_with_keys_of_its_own_still_reads() -> None:
    # (xdist workers send "collected" and "renamed" beside the report; records carry "hit_rate")
    data = {**full_report().to_dict(), "collected": [NODE], "renamed": {}}
    assert RunReport.from_dict(data) == full_report()


def test_a_record_of_an_older_migsafe_without_the_newer_figures_reads_with_defaults() -> None:
    data = full_report().to_dict()
    record = data["tests"][NODE]
    for key in ("cold_start_created", "created_beyond_warm", "hold_ms_p50", "hold_times", "servers"):
        del record["pool"][key]
    for key in ("round_trips", "budget"):
        del record["queries"][key]
    del record["shadows"][0]["mode"]
    read = RunReport.from_dict(data).tests[NODE]
    assert read.pool is not None and read.pool.hold_times == {} and read.pool.cold_start_created == 0
    assert read.queries is not None and read.queries.round_trips is None and read.shadows[0].mode == "fail"


T = f'tests["{NODE}"]'
Q = f"{T}.queries"
# (path in the JSON, value put there (DELETE: the key removed), message)
DELETE = object()
MALFORMED: list[tuple[tuple[Any, ...], Any, str]] = [
    (("tests", NODE, "queries", "count"), "x", f"{Q}.count: expected a whole number >= 0, got 'x'"),
    (("tests", NODE, "queries", "count"), None, f"{Q}.count: expected a whole number >= 0, got null"),
    (("tests", NODE, "queries", "count"), math.nan, f"{Q}.count: expected a whole number >= 0, got nan"),
    (("tests", NODE, "queries", "count"), math.inf, f"{Q}.count: expected a whole number >= 0, got inf"),
    (("tests", NODE, "queries", "count"), True, f"{Q}.count: expected a whole number >= 0, got true"),
    (("tests", NODE, "queries", "count"), 2.5, f"{Q}.count: expected a whole number >= 0, got 2.5"),
    (("tests", NODE, "queries", "count"), -1, f"{Q}.count: expected a whole number >= 0, got -1"),
    (("tests", NODE, "queries", "executions"), DELETE, f"{Q}: missing 'executions'"),
    (("tests", NODE, "queries", "total_ms"), math.nan, f"{Q}.total_ms: expected a number >= 0, got nan"),
    (("tests", NODE, "queries", "total_ms"), -math.inf, f"{Q}.total_ms: expected a number >= 0, got -inf"),
    (("tests", NODE, "queries", "budget"), "5", f"{Q}.budget: expected a whole number >= 0 or null, got '5'"),
    (("tests", NODE, "queries", "round_trips"), [], f"{Q}.round_trips: expected a whole number >= 0 or null, "
                                                    "got a list"),
    (("tests", NODE, "queries", "shapes"), "SELECT 1", f"{Q}.shapes: expected a list, got 'SELECT 1'"),
    (("tests", NODE, "queries", "shapes", 0, "count"), "x", f"{Q}.shapes[0].count: expected a whole number >= 0, "
                                                            "got 'x'"),
    (("tests", NODE, "queries", "shapes", 0, "call_sites"), [1], f"{Q}.shapes[0].call_sites: expected an object, "
                                                                 "got a list"),
    (("tests", NODE, "queries", "shapes", 0, "call_sites", "app.py:3"), "3",
     f'{Q}.shapes[0].call_sites["app.py:3"]: expected a whole number >= 0, got \'3\''),
    (("tests", NODE, "queries", "shapes", 0, "max_ms"), "slow", f"{Q}.shapes[0].max_ms: expected a number >= 0, "
                                                                "got 'slow'"),
    (("tests", NODE, "queries", "shapes", 0, "rows"), 1, f"{Q}.shapes[0]: unknown key 'rows'"),
    (("tests", NODE, "queries", "n_plus_one", 0), 5, f"{Q}.n_plus_one[0]: expected an object, got 5"),
    (("tests", NODE, "queries", "n_plus_one", 0, "shape"), 1, f"{Q}.n_plus_one[0].shape: expected a string, got 1"),
    (("tests", NODE, "queries", "n_plus_one", 0, "allowed"), "no", f"{Q}.n_plus_one[0].allowed: expected true or "
                                                                   "false, got 'no'"),
    (("tests", NODE, "queries", "n_plus_one", 0, "chain"), [2], f"{Q}.n_plus_one[0].chain[0]: expected a string, "
                                                                "got 2"),
    (("tests", NODE, "queries", "n_plus_one", 0, "loaded_at"), 3, f"{Q}.n_plus_one[0].loaded_at: expected a string "
                                                                  "or null, got 3"),
    (("tests", NODE, "queries"), [], f"{Q}: expected an object or null, got a list"),
    (("tests", NODE, "cache", "hits"), "a", f"{T}.cache.hits: expected a whole number >= 0, got 'a'"),
    (("tests", NODE, "cache", "misses"), -5, f"{T}.cache.misses: expected a whole number >= 0, got -5"),
    (("tests", NODE, "cache", "backend"), None, f"{T}.cache.backend: expected a string, got null"),
    (("tests", NODE, "cache", "by_prefix", "user"), [1], f'{T}.cache.by_prefix["user"]: expected [hits, misses], '
                                                         "got a list of 1"),
    (("tests", NODE, "cache", "by_command", "GET"), [1, "x"], f'{T}.cache.by_command["GET"][1]: expected a whole '
                                                              "number >= 0, got 'x'"),
    (("tests", NODE, "cache", "min_hit_rate"), 2, f"{T}.cache.min_hit_rate: expected a rate between 0 and 1 or "
                                                  "null, got 2"),
    (("tests", NODE, "cache", "alert"), math.nan, f"{T}.cache.alert: expected a rate between 0 and 1 or null, "
                                                  "got nan"),
    (("tests", NODE, "pool", "created"), "x", f"{T}.pool.created: expected a whole number >= 0, got 'x'"),
    (("tests", NODE, "pool", "wait_ms_p99"), "slow", f"{T}.pool.wait_ms_p99: expected a number >= 0, got 'slow'"),
    (("tests", NODE, "pool", "bogus"), 1, f"{T}.pool: unknown key 'bogus'"),
    (("tests", NODE, "pool", "leaks", 0, "dropped"), 1, f"{T}.pool.leaks[0].dropped: expected true or false, "
                                                        "got 1"),
    (("tests", NODE, "pool", "pool_sizes", "sqlite://"), 5.5, f'{T}.pool.pool_sizes["sqlite://"]: expected a '
                                                              "whole number, got 5.5"),
    (("tests", NODE, "pool", "servers", "sqlite://"), 1, f'{T}.pool.servers["sqlite://"]: expected a string, '
                                                         "got 1"),
    (("tests", NODE, "pool", "hold_times", "count"), "2", f"{T}.pool.hold_times.count: expected a whole number "
                                                          ">= 0, got '2'"),
    (("tests", NODE, "pool", "hold_times", "buckets"), {"x": 1}, f'{T}.pool.hold_times.buckets["x"]: expected '
                                                                 "a bound in whole microseconds"),
    (("tests", NODE, "shadows", 0, "control_p99_ms"), "x", f"{T}.shadows[0].control_p99_ms: expected a number "
                                                           ">= 0, got 'x'"),
    (("tests", NODE, "shadows", 0, "runs"), "x", f"{T}.shadows[0].runs: expected a whole number >= 0, got 'x'"),
    (("tests", NODE, "shadows", 0, "name"), 1, f"{T}.shadows[0].name: expected a string, got 1"),
    (("tests", NODE, "shadows", 0, "control_cache_hits"), -1, f"{T}.shadows[0].control_cache_hits: expected a "
                                                              "whole number >= 0 or null, got -1"),
    (("tests", NODE, "shadows"), {}, f"{T}.shadows: expected a list, got an object"),
    (("tests", NODE, "outcome"), 3, f"{T}.outcome: expected a string, got 3"),
    (("tests", NODE, "nodeid"), 5, f"{T}.nodeid: expected a string, got 5"),
    (("tests", NODE, "nodeid"), "t.py::other", f"{T}.nodeid: expected \"{NODE}\", the key of its record, "
                                               "got 't.py::other'"),
    (("tests", NODE), [], f"{T}: expected an object, got a list"),
    (("tests",), "x", "tests: expected an object, got 'x'"),
    (("notes",), "abc", "notes: expected a list, got 'abc'"),
    (("notes",), [1], "notes[0]: expected a string, got 1"),
    (("unmeasured", "x"), 5, 'unmeasured["x"]: expected a string, got 5'),
    (("interrupted",), "yes", "interrupted: expected true or false, got 'yes'"),
]


def case_id(path: tuple[Any, ...], value: Any) -> str:
    """``queries.count='x'``: the path (less ``tests`` and the node id) and the value put there."""
    shown = "deleted" if value is DELETE else repr(value)
    return f"{'.'.join(map(str, path[2:] if path[0] == 'tests' and len(path) > 2 else path))}={shown}"[:80]


def edited(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with the value at ``path`` replaced (removed for DELETE)."""
    data = copy.deepcopy(data)
    *parents, last = path
    place = data
    for key in parents:
        place = place[key]
    if value is DELETE:
        del place[last]
    else:
        place[last] = value
    return data


@pytest.mark.parametrize(("path", "value", "message"), MALFORMED,
                         ids=[case_id(p, v) for p, v, _ in MALFORMED])
def test_a_malformed_field_of_a_run_report_is_a_value_error_naming_its_path(path: tuple[Any, ...], value: Any,
                                                                             message: str) -> None:
    data = edited(full_report().to_dict(), path, value)
    with pytest.raises(ValueError) as info:
        RunReport.from_dict(data)
    assert str(info.value).startswith(message), str(info.value)


# (path in a report file, value, message after "<file>: ")
MALFORMED_DOCUMENT = [
    (("regressions",), [5], "regressions[0]: expected an object, got 5"),
    (("improvements",), ["x"], "improvements[0]: expected an object, got 'x'"),
    (("regressions",), [{"figure": "queries", "before": 1, "after": 2}], "regressions[0]: missing 'nodeid'"),
    (("regressions",), [{"nodeid": NODE, "figure": "queries", "before": 1, "after": math.nan}],
     "regressions[0].after: expected a finite number, a string or null, got nan"),
    (("regressions",), [{"nodeid": NODE, "figure": "queries", "before": 1, "after": 2, "shapes": [3]}],
     "regressions[0].shapes[0]: expected an object, got 3"),
    (("regressions",), [{"nodeid": NODE, "figure": "queries", "before": 1, "after": 2,
                         "shapes": [{"delta": "1", "shape": "S", "key": "k", "call_site": "", "before": 1,
                                     "after": 2}]}],
     "regressions[0].shapes[0].delta: expected a whole number, got '1'"),
    (("removed",), [1], "removed[0]: expected a string, got 1"),
    (("errors",), [None], "errors[0]: expected a string, got null"),
    (("tests", NODE, "queries", "count"), "x",
     f"a test record is malformed: {Q}.count: expected a whole number >= 0, got 'x'"),
    (("notes",), "abc", "notes: expected a list, got 'abc'"),
]


@pytest.mark.parametrize(("path", "value", "message"), MALFORMED_DOCUMENT,
                         ids=[case_id(p, v) for p, v, _ in MALFORMED_DOCUMENT])
def test_a_malformed_report_file_is_a_report_file_error_naming_the_file_and_the_field(
        tmp_path: Path, path: tuple[Any, ...], value: Any, message: str) -> None:
    good = report_document(full_report(), regressions=[{"nodeid": NODE, "figure": "queries", "before": 1,
                                                        "after": 2, "subject": "", "note": "", "shapes": []}])
    bad = tmp_path / "run.json"
    bad.write_text(json.dumps(edited(good, path, value)))  # (NaN written as NaN: json.dumps allows it)
    with pytest.raises(ReportFileError) as info:
        run_report_of(read_report_document(bad), bad)
    assert str(info.value).startswith(f"{bad}: {message}"), str(info.value)
    assert "\n" not in str(info.value)


# -- writes -----------------------------------------------------------------------------
def test_a_write_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "base.json"
    shared.parent.mkdir()
    shared.write_text("{}\n")
    (tmp_path / "middle").mkdir()
    middle = tmp_path / "middle" / "link.json"
    middle.symlink_to(Path("..") / "shared" / "base.json")  # relative, to its own directory
    (tmp_path / ".migsafe").mkdir()
    link = tmp_path / ".migsafe" / "baseline.json"
    link.symlink_to(Path("..") / "middle" / "link.json")  # a link to a link
    write_json_atomic(link, {"a": 1})
    assert link.is_symlink() and os.readlink(link) == os.path.join("..", "middle", "link.json")
    assert middle.is_symlink() and os.readlink(middle) == os.path.join("..", "shared", "base.json")
    assert json.loads(shared.read_text()) == {"a": 1}
    # no temporary file left beside the link or the target
    assert [p.name for p in shared.parent.iterdir()] == ["base.json"]
    assert [p.name for p in link.parent.iterdir()] == ["baseline.json"]


def test_a_write_through_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    link = tmp_path / "baseline.json"
    link.symlink_to(tmp_path / "shared" / "base.json")
    write_json_atomic(link, {"a": 1})
    assert link.is_symlink() and json.loads((tmp_path / "shared" / "base.json").read_text()) == {"a": 1}


def test_a_symlink_loop_is_an_error_and_leaves_the_links(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.symlink_to(second)
    second.symlink_to(first)
    with pytest.raises(OSError):
        write_json_atomic(first, {"a": 1})
    assert first.is_symlink() and second.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


@pytest.mark.parametrize("mode", [0o640, 0o600, 0o664])
def test_a_rewrite_keeps_the_files_permission_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "baseline.json"
    path.write_text("{}\n")
    path.chmod(mode)
    write_json_atomic(path, {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == mode and json.loads(path.read_text()) == {"a": 1}
    link = tmp_path / "link.json"
    link.symlink_to(path)
    write_json_atomic(link, {"b": 2})
    assert stat.S_IMODE(path.stat().st_mode) == mode and json.loads(path.read_text()) == {"b": 2}


def test_a_new_file_gets_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text("{}\n")
    path = tmp_path / "new.json"
    write_json_atomic(path, {"a": 1})
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


# -- inputs that are no regular file ---------------------------------------------------
@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A named pipe no one writes to: reading it would wait forever."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    return path


def no_regular_file(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """(a path of ``kind``, what the error calls it)."""
    if kind == "fifo":
        return request.getfixturevalue("fifo"), "is a named pipe"
    if kind == "device":
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero")
        return Path("/dev/zero"), "is a character device"
    return tmp_path, "is a directory"


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_file_that_is_not_regular_is_refused_before_reading(tmp_path: Path, request: pytest.FixtureRequest,
                                                              kind: str) -> None:
    path, what = no_regular_file(kind, tmp_path, request)
    with pytest.raises(ReportFileError) as info:
        read_json_object(path, "migsafe-baseline", 2)
    assert str(info.value) == f"{path}: {what}; expected a regular JSON file (a migsafe-baseline file)"
    with pytest.raises(ReportFileError, match="expected a regular JSON file"):
        read_baseline(path)
    assert file_kind(path) is None


def test_a_file_over_the_size_cap_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.json"
    write_json_atomic(path, report_document(RunReport()))
    size = path.stat().st_size
    monkeypatch.setattr(files, "MAX_JSON_BYTES", size - 1)
    with pytest.raises(ReportFileError) as info:
        read_report_document(path)
    assert str(info.value) == (f"{path}: {size:,} bytes; expected a regular JSON file of at most {size - 1:,} "
                               "bytes (a migsafe-report file)")
    assert file_kind(path) is None
    monkeypatch.setattr(files, "MAX_JSON_BYTES", size)
    assert read_report_document(path)["tests"] == {} and file_kind(path) == "migsafe-report"


def test_the_size_cap_is_generous() -> None:
    assert files.MAX_JSON_BYTES >= 1024 ** 3
