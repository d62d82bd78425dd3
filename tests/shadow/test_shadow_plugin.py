"""The ``shadow`` fixture and its verdict, run in-process through pytester.

The inner runs reuse this session's PostgreSQL through MIGSAFE_POSTGRES_URL (set by
tests/conftest.py); the cache test starts a Redis of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_migsafe.servers import start_redis

RECORDS_CONFTEST = """
import json
import pytest
from dataclasses import asdict
from pytest_migsafe.plugin.stash import record_of

@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    with open("shadows.jsonl", "a") as out:
        for figures in record_of(item).shadows:
            out.write(json.dumps(dict(asdict(figures), test=item.name)) + "\\n")
"""


QUIET_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


@pytest.fixture
def lab(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(RECORDS_CONFTEST)
    pytester.makeini(QUIET_INI)
    return pytester


def records(pytester: pytest.Pytester) -> dict[tuple[str, str], dict[str, Any]]:
    path = pytester.path / "shadows.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(row["test"], row["name"]): row for row in rows}


def test_a_mismatch_fails_after_the_body_with_a_diff_and_the_seed(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_prices="""
        def old_price(sku):
            return {"sku": sku, "cents": 1000, "currency": "EUR"}

        def new_price(sku):
            return {"sku": sku, "cents": 999, "currency": "EUR"}

        def test_price(shadow):
            assert shadow.run("price", old_price, new_price, "A1")["cents"] == 1000
            assert shadow.run("name", str.upper, str.upper, "a1") == "A1"
            print("body finished")
    """)
    result = lab.runpytest("--migsafe-shadow-seed", "1234", "-s")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*body finished*",
        "*shadow experiment 'price': 1 of 1 runs mismatched (0 ignored; seed 1234: "
        "rerun with --migsafe-shadow-seed 1234)",
        "*run 1 (price('A1'), * ran first):",
        "*--- control",
        "*+++ candidate",
        "*-{'cents': 1000, 'currency': 'EUR', 'sku': 'A1'}",
        "*+{'cents': 999, 'currency': 'EUR', 'sku': 'A1'}",
    ])
    assert "shadow experiment 'name'" not in result.stdout.str()
    rows = records(lab)
    assert rows[("test_price", "price")]["result"] == "mismatched"
    assert rows[("test_price", "price")]["seed"] == 1234
    assert rows[("test_price", "name")]["result"] == "matched"


ORDERS = """
    def test_orders(shadow):
        for n in range(12):
            shadow.run("sign", abs, lambda x: -x, n + 1)
"""


def order_lines(text: str) -> list[str]:
    """The run order lines of the failure section (on CI pytest repeats the whole
    message, untruncated, in the short summary)."""
    text = text.split("short test summary info")[0]
    return re.findall(r"run \d+ \(sign\(\d+\), (\w+) ran first\)", text)


def test_the_printed_seed_reproduces_the_order_of_the_paths(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_orders=ORDERS)
    first = lab.runpytest("-v")
    first.assert_outcomes(failed=1)
    seed = re.search(r"rerun with --migsafe-shadow-seed (\d+)", first.stdout.str())
    assert seed is not None
    again = lab.runpytest("-v", "--migsafe-shadow-seed", seed.group(1))
    orders = order_lines(first.stdout.str())
    assert len(orders) == 12
    assert order_lines(again.stdout.str()) == orders


def test_the_seed_can_come_from_the_environment(lab: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    lab.makepyfile(test_orders=ORDERS)
    monkeypatch.setenv("MIGSAFE_SHADOW_SEED", "42")
    lab.runpytest().stdout.fnmatch_lines(["*seed 42: rerun with --migsafe-shadow-seed 42*"])


def test_observe_mode_passes_and_warns(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_observe="""
        def test_fixture_mode(shadow):
            shadow.mode = "observe"
            assert shadow.run("count", len, lambda s: len(s) + 1, "abc") == 3

        def test_run_mode(shadow):
            shadow.run("count", len, lambda s: len(s) + 1, "abc", mode="observe")
    """)
    result = lab.runpytest()
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(["*ShadowMismatchWarning: observe mode: shadow experiment 'count': 1 of 1 runs*"])
    rows = records(lab)
    assert rows[("test_fixture_mode", "count")]["result"] == "mismatched"
    assert rows[("test_run_mode", "count")]["mode"] == "observe"


def test_observe_mode_from_the_ini_and_the_command_line(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_observe="""
        def test_default_mode(shadow):
            shadow.run("count", len, lambda s: 0, "abc")
    """)
    lab.makeini(QUIET_INI + "migsafe_shadow_mode = observe\n")
    lab.runpytest().assert_outcomes(passed=1, warnings=1)
    lab.runpytest("--migsafe-shadow-mode", "fail").assert_outcomes(failed=1)


def test_ignore_rules_are_reported_as_ignored(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_ignore="""
        def test_reordered(shadow):
            shadow.run("tags", lambda: ["a", "b"], lambda: ["b", "a"],
                       ignore=lambda c, d: sorted(c) == sorted(d))
    """)
    lab.runpytest().assert_outcomes(passed=1)
    row = records(lab)[("test_reordered", "tags")]
    assert (row["result"], row["ignored"], row["mismatches"], row["runs"]) == ("ignored", 1, 0, 1)


def test_errors_are_compared_and_the_control_error_is_raised(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_errors="""
        import pytest

        def parse_old(text):
            return int(text)

        def parse_new(text):
            if not text.isdigit():
                raise ValueError("not a number: " + repr(text))
            return int(text)

        def test_same_error(shadow):
            with pytest.raises(ValueError):
                shadow.run("parse", parse_old, lambda t: int(t), "x")

        def test_different_error(shadow):
            with pytest.raises(ValueError):
                shadow.run("parse", parse_old, parse_new, "x")

        def test_unhandled_control_error(shadow):
            shadow.run("div", lambda: 1 / 0, lambda: 1 / 0)
    """)
    result = lab.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*control raised ValueError: invalid literal for int() with base 10: 'x'",
        "*candidate raised ValueError: not a number: 'x'",
    ])
    result.stdout.fnmatch_lines(["*test_unhandled_control_error*", "E * ZeroDivisionError: division by zero"])
    rows = records(lab)
    assert rows[("test_same_error", "parse")]["result"] == "matched"
    assert rows[("test_different_error", "parse")]["candidate_errors"] == 1
    assert rows[("test_unhandled_control_error", "div")]["control_errors"] == 1


def test_a_test_that_fails_on_its_own_keeps_its_failure_and_its_records(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_own="""
        def test_own_failure(shadow):
            shadow.run("x", abs, lambda n: n, -1)
            assert False, "the test's own failure"
    """)
    result = lab.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the test's own failure*"])
    assert "shadow experiment 'x'" not in result.stdout.str()
    assert records(lab)[("test_own_failure", "x")]["result"] == "mismatched"


def test_migsafe_db_gives_each_path_its_own_savepoint(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_db="""
        from sqlalchemy import text

        def count(session):
            return session.execute(text("SELECT count(*) FROM shadow_item")).scalar_one()

        def insert_then_count(session):
            session.execute(text("INSERT INTO shadow_item VALUES (2)"))
            session.commit()
            return count(session) - 1

        def test_isolated(migsafe_db, shadow):
            migsafe_db.execute(text("CREATE TABLE shadow_item (id int)"))
            migsafe_db.execute(text("INSERT INTO shadow_item VALUES (1)"))
            for _ in range(4):  # 9 counts: below the N+1 threshold
                assert shadow.run("insert", count, insert_then_count, migsafe_db) == 1
            orders = {t.candidate_first for t in shadow.experiments["insert"].trials}
            assert orders == {True, False}
            assert count(migsafe_db) == 1

        def test_no_session_without_migsafe_db(shadow):
            assert shadow.session is None and shadow.cache is None
    """)
    lab.runpytest("--migsafe-shadow-seed", "1").assert_outcomes(passed=2)
    row = records(lab)[("test_isolated", "insert")]
    assert (row["result"], row["runs"], row["control_queries"], row["candidate_queries"]) == (
        "matched", 4, 4, 8)


@pytest.fixture
def private_redis(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Redis of our own for the inner run: INFO stats are server-wide, so exact figures need it."""
    server = start_redis(tmp_path_factory.mktemp("shadow-redis"))
    monkeypatch.setenv("SHADOW_TEST_REDIS_URL", server.url)
    yield server.url
    server.stop()


def test_migsafe_redis_is_flushed_and_measured_around_each_path(lab: pytest.Pytester, private_redis: str) -> None:
    lab.makeconftest(RECORDS_CONFTEST + """
import os
import redis

@pytest.fixture
def migsafe_redis():
    client = redis.Redis.from_url(os.environ["SHADOW_TEST_REDIS_URL"])
    client.flushdb()
    yield client
    client.close()
""")
    lab.makepyfile(test_shadow_cache="""
        def lookup(client, key):
            if client.get(key) is not None:
                return "hit"
            client.set(key, 1)
            return "miss"

        def test_cold_each_time(migsafe_redis, shadow):
            migsafe_redis.set("user:1", 1)
            for _ in range(3):
                assert shadow.run("lookup", lookup, lookup, migsafe_redis, "user:1") == "miss"
    """)
    lab.runpytest().assert_outcomes(passed=1)
    row = records(lab)[("test_cold_each_time", "lookup")]
    assert row["result"] == "matched"
    assert (row["control_cache_hits"], row["control_cache_misses"]) == (0, 3)
    assert (row["candidate_cache_hits"], row["candidate_cache_misses"]) == (0, 3)


def test_run_many_p99_and_error_rate_assertions_fail_the_test(lab: pytest.Pytester) -> None:
    lab.makepyfile(test_many="""
        from sqlalchemy import text

        def test_slower(migsafe_db, shadow):
            fast = lambda i: migsafe_db.execute(text("SELECT 1")).scalar_one()
            slow = lambda i: migsafe_db.execute(text("SELECT 1 FROM pg_sleep(0.2)")).scalar_one()
            result = shadow.run_many("latency", fast, slow, range(5))
            result.assert_error_rate_flat()
            result.assert_p99_not_worse(tolerance=0.5)

        def test_failing_more(shadow):
            shadow.mode = "observe"
            result = shadow.run_many("errors", lambda n: 10 // (n + 1), lambda n: 10 // n, range(4))
            result.assert_error_rate_flat(tolerance=0.1)
    """)
    result = lab.runpytest()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*ShadowRegression: shadow experiment 'latency': candidate p99 * ms > control p99 * ms + 50% = * ms",
        "*ShadowRegression: shadow experiment 'errors': candidate error rate 25.00% (1 of 4) > "
        "control error rate 0.00% (0 of 4) + 10.00%",
    ])
    row = records(lab)[("test_slower", "latency")]
    assert row["runs"] == 5 and row["candidate_p50_ms"] >= 200.0 > row["control_p99_ms"]


def test_shadow_options_in_help(pytester: pytest.Pytester) -> None:
    pytester.makeini(QUIET_INI)
    pytester.runpytest("--help").stdout.fnmatch_lines([
        "*--migsafe-shadow-seed=N*", "*--migsafe-shadow-mode=*", "*migsafe_shadow_mode*"])


@pytest.mark.parametrize("value", ["-3", "abc"])
def test_a_bad_seed_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makeini(QUIET_INI)
    result = pytester.runpytest(f"--migsafe-shadow-seed={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--migsafe-shadow-seed: expected a whole number >= 0*"])


def test_a_bad_mode_in_the_ini_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(QUIET_INI + "migsafe_shadow_mode = loud\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*migsafe_shadow_mode = 'loud': shadow mode expects one of 'fail', 'observe'*"])


@pytest.mark.parametrize("xdist", [[], ["-n0"], ["-n2"]])
def test_all_xdist_workers_use_the_controllers_seed(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makeini(QUIET_INI)
    pytester.makepyfile(test_many_workers="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_mismatch(shadow, n):
            shadow.run("x", abs, lambda v: -v, n + 1)
    """)
    result = pytester.runpytest(*xdist)
    result.assert_outcomes(failed=4)
    seeds = set(re.findall(r"rerun with --migsafe-shadow-seed (\d+)", result.stdout.str()))
    assert len(seeds) == 1
