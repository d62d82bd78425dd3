"""Pool sizing: the arithmetic, its validation, the report warnings and ``migsafe pool-size``."""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg_pool
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from pytest_migsafe.cli import main as cli
from pytest_migsafe.pool import sizing
from pytest_migsafe.pool import targets as pool_targets
from pytest_migsafe.pool.holds import HoldTimes
from pytest_migsafe.pool.observe import pool_stats
from pytest_migsafe.pool.sizing import pool_size, pool_size_warnings
from pytest_migsafe.pool.targets import describe_pool
from pytest_migsafe.report.files import REPORT_KIND
from pytest_migsafe.report.record import PoolFigures, QueryFigures, RunReport, TestRecord
from pytest_migsafe.servers import RunningPostgres


@pytest.mark.parametrize(("rps", "seconds", "headroom", "expected"), [
    (800, 0.012, 1.3, 13),      # 12.48 -> 13
    (100, 0.1, 1.0, 10),        # exactly 10, not 11
    (3, 0.1, 1.0, 1),           # 0.3 -> 1 (0.30000000000000004 in floats)
    (3, 0.1, 10, 3),            # exactly 3 (3.0000000000000004 in floats)
    (1000, 0.05, 1.3, 65),
    (1, 0.001, 1.3, 1),
    (2500, 0.004, 1.5, 15),
])
def test_pool_size_is_the_exact_decimal_ceiling(rps: float, seconds: float, headroom: float,
                                                expected: int) -> None:
    assert pool_size(rps, seconds, headroom) == expected


def test_pool_size_default_headroom_is_1_3() -> None:
    assert pool_size(800, 0.012) == 13
    assert math.ceil(3 * 0.1 * 10) == 4  # what naive float arithmetic says for an exact 3
    assert pool_size(3, 0.1, 10) == 3


@pytest.mark.parametrize(("args", "name"), [
    ((0, 0.01), "peak_rps"),
    ((-5, 0.01), "peak_rps"),
    ((math.inf, 0.01), "peak_rps"),
    ((math.nan, 0.01), "peak_rps"),
    (("800", 0.01), "peak_rps"),
    ((True, 0.01), "peak_rps"),
    ((800, 0), "hold_seconds"),
    ((800, "0.01"), "hold_seconds"),
    ((800, 0.01, -1.3), "headroom"),
    ((800, 0.01, math.inf), "headroom"),
])
def test_pool_size_rejects_what_is_not_a_positive_finite_number(args: tuple[Any, ...], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be a positive finite number, got "):
        pool_size(*args)


def test_pool_size_takes_the_hold_time_once_under_either_name() -> None:
    assert pool_size(800, avg_query_seconds=0.012) == pool_size(800, hold_seconds=0.012) == 13
    with pytest.raises(TypeError, match="hold_seconds"):
        pool_size(800)
    with pytest.raises(TypeError, match="hold_seconds"):
        pool_size(800, 0.012, avg_query_seconds=0.012)


def test_pool_size_of_a_measurement_takes_its_p95_hold_time() -> None:
    # 100 holds: 94 of 1 ms, 6 of 5 ms: the p95 (the 95th smallest) is 5 ms, the mean 1.24 ms
    holds = HoldTimes.of([0.001] * 94 + [0.005] * 6)
    assert sizing.measured_hold_seconds(holds) == Decimal("0.005")
    assert pool_size(800, holds) == 6  # ceil(800 x 0.005 x 1.3) = ceil(5.2); the mean would give 2
    with pytest.raises(ValueError, match="no hold time was measured"):
        pool_size(800, HoldTimes())


def test_recommendation_shows_the_arithmetic() -> None:
    advice = sizing.recommend(800, sizing.ms_to_seconds("hold_ms", 12), 1.3)
    assert advice.size == 13
    assert advice.explain() == (
        "pool size = ceil(peak_rps x hold_seconds x headroom)\n"
        "          = ceil(800 x 0.012 x 1.3)   (12 ms holding a connection per request)\n"
        "          = ceil(12.48)\n"
        "          = 13")


def _report(*tests: tuple[str, int, float, dict[str, int] | None]) -> RunReport:
    report = RunReport()
    for nodeid, count, total_ms, sizes in tests:
        record = TestRecord(nodeid=nodeid, queries=QueryFigures(count=count, executions=count, total_ms=total_ms))
        if sizes is not None:
            record.pool = PoolFigures(checkouts=1, checkins=1, pool_sizes=sizes)
        report.add(record)
    return report


def _report_json(*tests: tuple[str, list[float], dict[str, str]]) -> dict[str, Any]:
    """A run report's JSON whose tests each held connections for the given seconds, on
    pools with the given server kinds (the pool record's ``hold_times`` and ``servers``)."""
    data = {"kind": REPORT_KIND, **RunReport().to_dict()}  # (as --migsafe-report-json writes it)
    for nodeid, holds, servers in tests:
        data["tests"][nodeid] = {"nodeid": nodeid, "outcome": "passed", "queries": None, "cache": None,
                                 "shadows": [],
                                 "pool": {"checkouts": len(holds), "checkins": len(holds),
                                          "pool_sizes": dict.fromkeys(servers, 5),
                                          "hold_times": HoldTimes.of(holds).to_dict(), "servers": servers}}
    return data


def test_average_query_time_is_weighted_by_count() -> None:
    report = _report(("t1", 1, 10.0, None), ("t2", 3, 6.0, None), ("t3", 0, 0.0, None))
    average = sizing.average_query_time(report)
    assert average is not None
    # (10/1 x 1 + 6/3 x 3) / 4 = 4 ms, not the unweighted (10 + 2) / 2 = 6 ms
    assert average.seconds == Decimal("0.004")
    assert (average.queries, average.tests) == (4, 2)
    assert sizing.average_query_time(RunReport()) is None


def test_pool_size_warnings_of_a_report_name_each_small_pool_and_no_unlimited_one() -> None:
    # a run report records configured sizes: 0 is a NullPool's (or pool_size=0): no limit
    report = _report(("t1", 1, 1.0, {"app (QueuePool)": 5, "big (QueuePool)": 20}),
                     ("t2", 1, 1.0, {"app (QueuePool)": 5, "none (NullPool)": 0}))
    assert pool_size_warnings(report, 800, 0.012) == [
        ("app (QueuePool): pool size 5 (its overflow is not recorded) is below the 13 needed for 800 requests/s "
         "holding a connection 12 ms each (ceil(800 x 0.012 s x 1.3) = 13)"),
    ]
    assert pool_size_warnings(report, 10, 0.012) == []
    with pytest.raises(ValueError, match="peak_rps"):
        pool_size_warnings(report, 0, 0.012)


def test_summary_lines_size_from_the_p95_hold_time_not_the_statement_mean() -> None:
    # the statements average 0.361 ms, but each request holds its connection about 5 ms
    inputs = sizing.SizingInputs.of_report(_report(("t1", 4, 1.444, {"app (QueuePool)": 20})))
    assert inputs.average() is not None and inputs.average().seconds == Decimal("0.000361")  # type: ignore[union-attr]
    assert sizing.summary_lines(inputs, 800) == [
        "cannot recommend a pool size: no connection was checked out and returned; pass --migsafe-hold-ms"]
    inputs.add_pool({"hold_times": HoldTimes.of([0.005] * 19 + [0.004]).to_dict(),
                     "servers": {"app (QueuePool)": "network"}})
    assert sizing.summary_lines(inputs, 800) == [
        ("recommended pool size 6 for 800 requests/s holding a connection 5 ms each "
         "(the p95 hold time over 20 checkouts), headroom 1.3"),
        "every observed pool is at least 6",
    ]
    assert sizing.summary_lines(sizing.SizingInputs.of_report(_report(("t1", 4, 48.0, None))), 800) == []


def test_summary_lines_warn_when_holds_come_from_a_local_database() -> None:
    inputs = sizing.SizingInputs()
    inputs.add_pool({"pool_sizes": {"app (QueuePool)": 5}, "hold_times": HoldTimes.of([0.002]).to_dict(),
                     "servers": {"app (QueuePool)": "loopback"}})
    lines = sizing.summary_lines(inputs, 100)
    assert lines[1] == ("WARNING hold times measured against a local database (app (QueuePool) over loopback) "
                        "are far below production's (no network round trip, an idle server): size from "
                        "production figures where you have them (--migsafe-hold-ms)")
    assert not any("local database" in line for line in sizing.summary_lines(inputs, 100, 0.002))


def test_a_local_database_warning_names_a_few_pools_and_counts_the_rest() -> None:
    """A suite making an engine per test (150 SQLite pools) put every pool's name on one line
    of about 10,000 characters."""
    local = {f"sqlite:// #{n:03} (StaticPool)": "SQLite" for n in range(150)}
    local["app (QueuePool)"] = "unix socket"
    warning = sizing.local_warning(local)
    assert warning is not None
    named = sorted(local)[:sizing.LOCAL_POOLS_NAMED]
    assert warning.startswith("hold times measured against a local database ("
                              + ", ".join(f"{name} over {local[name]}" for name in named)
                              + " and 146 more pools over SQLite) are far below production's")
    assert len(warning) < 500
    assert sizing.local_warning({"app (QueuePool)": "loopback"}) == (
        "hold times measured against a local database (app (QueuePool) over loopback) are far below production's "
        "(no network round trip, an idle server): size from production figures where you have them")
    mixed = sizing.local_warning({**{f"a{n}": "SQLite" for n in range(6)}, "b": "loopback"})
    assert mixed is not None and " and 2 more pools over SQLite or loopback) " in mixed


def test_sizing_inputs_merge_across_processes() -> None:
    worker_a = sizing.SizingInputs.of_report(_report(("a", 1, 0.1, {"p (QueuePool)": 5})))
    worker_a.add_pool({"hold_times": HoldTimes.of([0.001, 0.003]).to_dict()})
    worker_b = sizing.SizingInputs.of_report(_report(("b", 2, 0.2, {"p (QueuePool)": 3})))
    worker_b.add_pool({"hold_times": HoldTimes.of([0.002, 0.010]).to_dict(), "servers": {"p (QueuePool)": "network"}})
    worker_b = sizing.SizingInputs.from_dict(json.loads(json.dumps(worker_b.to_dict())))
    worker_a.merge(worker_b)
    assert worker_a.pool_sizes == {"p (QueuePool)": 3}
    average = worker_a.average()
    assert average is not None and average.seconds == Decimal("0.0001")  # 0.3 ms / 3, exactly
    serial = HoldTimes.of([0.001, 0.003, 0.002, 0.010])
    assert worker_a.holds == serial and worker_a.servers == {"p (QueuePool)": "network"}


# -- migsafe pool-size --------------------------------------------------------------
def test_cli_prints_size_and_arithmetic(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["pool-size", "--peak-rps", "800", "--hold-ms", "12"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "recommended pool size: 13",
        "pool size = ceil(peak_rps x hold_seconds x headroom)",
        "          = ceil(800 x 0.012 x 1.3)   (12 ms holding a connection per request)",
        "          = ceil(12.48)",
        "          = 13",
        "hold time as given",
    ]
    assert cli.main(["pool-size", "--peak-rps", "800", "--avg-query-ms", "12"]) == 0  # the old name
    assert capsys.readouterr().out == out


def test_cli_headroom_and_exact_products(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["pool-size", "--peak-rps", "100", "--hold-ms", "100", "--headroom", "1"]) == 0
    assert capsys.readouterr().out.startswith("recommended pool size: 10\n")


def test_cli_sizes_from_the_p95_hold_time_of_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "report.json"
    # 40 checkouts over two tests: 38 held 5 ms, 2 held 4 ms; the statements inside were far shorter
    path.write_text(json.dumps(_report_json(("a", [0.005] * 20, {"app (QueuePool)": "network"}),
                                            ("b", [0.005] * 18 + [0.004] * 2, {"app (QueuePool)": "network"}))))
    assert cli.main(["pool-size", "--peak-rps", "800", "--from-report", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "recommended pool size: 6"  # ceil(800 x 0.005 x 1.3) = ceil(5.2)
    assert f"hold time: the p95 of 40 checkouts in 2 tests of {path}" in out
    assert "WARNING" not in out


def test_cli_warns_when_the_holds_come_from_a_local_database(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report_json(("a", [0.001], {"app (QueuePool)": "unix socket"}))))
    assert cli.main(["pool-size", "--peak-rps", "800", "--from-report", str(path)]) == 0
    assert ("WARNING hold times measured against a local database (app (QueuePool) over unix socket) are far "
            "below production's") in capsys.readouterr().out


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, found list"),
    ('{"kind": "migsafe-report", "schema_version": 999, "tests": {}}', "schema_version 999, this migsafe reads"),
    # a baseline, or a file of no kind, was read as a report (a baseline's schema_version 2 was
    # "unsupported": upgrade migsafe, it said; a file of no kind was used for sizing)
    ('{"kind": "migsafe-baseline", "schema_version": 2, "tests": {}}',
     "expected a migsafe-report file, found kind 'migsafe-baseline'"),
    ('{"schema_version": 1, "tests": {"a": {"pool": {}}}}', "expected a migsafe-report file, found kind None"),
    ('{"kind": "migsafe-report", "schema_version": 1, "tests": {}}', "records no connection hold times"),
    ('{"kind": "migsafe-report", "schema_version": 1, "tests": {"t": {"nodeid": "t", "pool": '
     '{"hold_times": {"buckets": {"x": 1}}}}}}',
     'a test record is malformed: tests["t"].pool.hold_times.buckets["x"]: expected a bound in whole microseconds'),
    # json reads Infinity and 0.5 as floats: int() of the one raised OverflowError (a traceback),
    # of the other cut it to 0
    ('{"kind": "migsafe-report", "schema_version": 1, "tests": {"t": {"nodeid": "t", "pool": '
     '{"hold_times": {"buckets": {"5000": 1}, "count": 1, "total_us": 5000, "max_us": Infinity}}}}}',
     'tests["t"].pool.hold_times.max_us: expected a whole number >= 0, got inf'),
    ('{"kind": "migsafe-report", "schema_version": 1, "tests": {"t": {"nodeid": "t", "pool": '
     '{"hold_times": {"buckets": {"5000": 0.5}, "count": 1, "total_us": 5000, "max_us": 5000}}}}}',
     'tests["t"].pool.hold_times.buckets["5000"]: expected a whole number >= 0, got 0.5'),
])
def test_cli_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        content: str | None, message: str) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["pool-size", "--peak-rps", "800", "--from-report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("migsafe: ") and message in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--peak-rps", "800"], "one of the arguments --hold-ms/--avg-query-ms --from-report is required"),
    (["--hold-ms", "12"], "the following arguments are required: --peak-rps"),
    (["--peak-rps", "0", "--hold-ms", "12"], "argument --peak-rps: expected a positive number, got '0'"),
    (["--peak-rps", "800", "--avg-query-ms", "abc"], "argument --hold-ms/--avg-query-ms: expected a positive number"),
    (["--peak-rps", "800", "--avg-query-ms", "12", "--from-report", "x.json"], "not allowed with argument"),
    (["--peak-rps", "800", "--avg-query-ms", "12", "--headroom", "nan"], "argument --headroom"),
])
def test_cli_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["pool-size", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["pool-size", "--help"])
    out = capsys.readouterr().out
    for flag in ("--peak-rps", "--hold-ms", "--avg-query-ms", "--from-report", "--headroom"):
        assert flag in out


# -- what a pool can open: steady size and burst capacity ----------------------------
def _observed(*targets: Any) -> sizing.SizingInputs:
    """The sizing inputs of one observation of ``targets`` (engines or pools), each used once,
    as the plugin adds a test's: its figures and the capacities of the pools they name."""
    pool_targets.install()
    inputs = sizing.SizingInputs()
    with pool_stats(*targets) as stats:
        for target in targets:
            if isinstance(target, Engine):
                with target.connect() as conn:
                    conn.execute(text("SELECT 1"))
            else:  # a psycopg_pool pool
                with target.connection() as conn:
                    conn.execute("SELECT 1")
    figures = stats.snapshot()
    inputs.add_pool(figures, pool_targets.pool_capacities(figures.pool_sizes))
    return inputs


NEEDED_7 = "the 7 needed for 100 requests/s holding a connection 50 ms each (ceil(100 x 0.05 s x 1.3) = 7)"


def test_summary_lines_compare_the_need_with_what_a_queuepool_can_open(tmp_path: Path) -> None:
    def engine(name: str, **kwargs: Any) -> Any:
        return create_engine(f"sqlite:///{tmp_path / name}.db", **kwargs)

    overflow = engine("overflow", poolclass=QueuePool, pool_size=2, max_overflow=20)  # SQLAlchemy: up to 22
    unlimited = engine("unlimited", poolclass=QueuePool, pool_size=2, max_overflow=-1)  # no limit
    null = engine("null", poolclass=NullPool)  # no limit: a new connection per checkout
    small = engine("small", poolclass=QueuePool, pool_size=2, max_overflow=3)  # up to 5 < 7
    big = engine("big", poolclass=QueuePool, pool_size=8, max_overflow=0)  # keeps 8 >= 7
    engines = (overflow, unlimited, null, small, big)
    try:
        inputs = _observed(*engines)
        lines = sizing.summary_lines(inputs, 100, 0.05)
    finally:
        for each in engines:
            each.dispose()
    name = {each: describe_pool(each.pool) for each in engines}
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert warnings == [f"WARNING {name[small]}: pool size 2 (+3 overflow: up to 5) is below {NEEDED_7}"]
    notes = "\n".join(lines)
    assert f"note {name[overflow]}: pool size 2 (+20 overflow: up to 22) covers the 7 needed only with overflow" \
        in notes
    assert f"note {name[unlimited]}: pool size 2 (no overflow limit) covers the 7 needed only with overflow" in notes
    assert f"note {name[null]}: NullPool keeps no connection" in notes
    assert name[big] not in notes  # its steady size covers the need: nothing to say


def test_summary_lines_size_an_async_engine_by_its_overflow_too(tmp_path: Path) -> None:
    from sqlalchemy.pool import AsyncAdaptedQueuePool

    # (the pool class named: SQLAlchemy 2.0's aiosqlite dialect defaults to NullPool)
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a'}.db", poolclass=AsyncAdaptedQueuePool,
                                       pool_size=2, max_overflow=20)
    pool = async_engine.sync_engine.pool
    try:
        assert type(pool).__name__ == "AsyncAdaptedQueuePool"
        assert pool_targets.capacity_of(pool) == pool_targets.Capacity("queue", 2, pool.size() + 20)
        inputs = sizing.SizingInputs()
        name = describe_pool(pool)
        inputs.add_pool({"pool_sizes": {name: pool.size()}}, {name: pool_targets.capacity_of(pool)})
        lines = sizing.summary_lines(inputs, 100, 0.05)
    finally:
        asyncio.run(async_engine.dispose())
    assert not [line for line in lines if line.startswith("WARNING")]
    assert f"note {name}: pool size 2 (+20 overflow: up to 22) covers the 7 needed only with overflow" in lines[1]


def test_summary_lines_compare_the_need_with_a_psycopg_pools_max_size(postgres: RunningPostgres) -> None:
    small = psycopg_pool.ConnectionPool(postgres.dsn, min_size=1, max_size=4, name="small", open=False)
    grows = psycopg_pool.ConnectionPool(postgres.dsn, min_size=1, max_size=10, name="grows", open=False)
    kept = psycopg_pool.ConnectionPool(postgres.dsn, min_size=7, max_size=7, name="kept", open=False)
    pools = (small, grows, kept)
    for pool in pools:
        pool.open(wait=True)
    try:
        lines = sizing.summary_lines(_observed(*pools), 100, 0.05)
    finally:
        for pool in pools:
            pool.close()
    assert [line for line in lines if line.startswith("WARNING")] == [
        f"WARNING small (ConnectionPool): min_size 1, max_size 4 is below {NEEDED_7}"]
    notes = [line for line in lines if line.startswith("note")]
    assert notes == [("note grows (ConnectionPool): min_size 1, max_size 10 covers the 7 needed above its "
                      "min_size: it opens up to 6 more at a burst and closes them after max_idle")]


def test_a_small_pool_of_the_same_name_does_not_hide_the_one_used_most(postgres: RunningPostgres) -> None:
    app = psycopg_pool.ConnectionPool(postgres.dsn, min_size=1, max_size=10, name="app", open=False)
    admin = psycopg_pool.ConnectionPool(postgres.dsn, min_size=1, max_size=1, name="app", open=False)
    for pool in (app, admin):
        pool.open(wait=True)
    try:
        inputs = _observed(app)
        for observed in (_observed(app), _observed(admin), _observed(app)):  # as each test adds its own
            inputs.merge(sizing.SizingInputs.from_dict(json.loads(json.dumps(observed.to_dict()))))
        lines = sizing.summary_lines(inputs, 100, 0.05)
    finally:
        for pool in (app, admin):
            pool.close()
    assert inputs.pool_sizes == {"app (ConnectionPool)": 1}  # the field keeps its meaning: the smallest
    assert not [line for line in lines if line.startswith("WARNING")]
    assert ("note app (ConnectionPool): min_size 1, max_size 10 covers the 7 needed above its min_size: it opens "
            "up to 6 more at a burst and closes them after max_idle (the pool of this name in 3 of 4 tests; "
            "also seen under this name: min_size 1, max_size 1, below the 7 needed, in 1 test)") in lines
