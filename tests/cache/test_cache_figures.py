"""Cache figures answer the right question, through pytester on a real Redis.

- a per-prefix figure the client side cannot see is unmeasured, never zero, and every
  figure in a message names its source;
- keys as Django's cache framework writes them (``KEY_PREFIX:VERSION:key``) group under the
  key the application gave, and ini ``migsafe_cache_key_pattern`` names any other format;
- ``assert_cache_aside(allow_sql=...)`` through the fixture: an unused rule is a warning
  that never fails a test;
- only workloads are rated against the alert line, and the report says which and why.

The figures the messages must show come from the server: each inner test reads ``INFO
stats`` around the code it runs and writes the delta to a file for the outer test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# pytester's in-process runs drop the modules first imported inside them; modules that keep
# references across runs (normalize keeps sqlglot) must be imported out here, before any run.
import fakeredis  # noqa: F401
import pytest
import sqlalchemy  # noqa: F401
import sqlglot  # noqa: F401

import pytest_migsafe.queries.normalize  # noqa: F401
from pytest_migsafe.cache.stats import format_rate
from pytest_migsafe.servers import RunningRedis, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    server = start_redis(tmp_path_factory.mktemp("figures-redis"))
    yield server
    server.stop()


def ini(pytester: pytest.Pytester, text: str = "") -> None:
    pytester.makeini(f"[pytest]\nasyncio_default_fixture_loop_scope = function\n{text}\n")


@pytest.fixture(autouse=True)
def own_redis(redis_server: RunningRedis, monkeypatch: pytest.MonkeyPatch, pytester: pytest.Pytester) -> None:
    monkeypatch.setenv("MIGSAFE_REDIS_URL", redis_server.url)
    ini(pytester)


def info(pytester: pytest.Pytester, name: str) -> Any:
    return json.loads((pytester.path / f"{name}.json").read_text())


INFO_HELPER = """
import json
from contextlib import contextmanager
from pytest_migsafe.cache.stats import server_counts

@contextmanager
def info_delta(client, name):
    '''Write the INFO stats keyspace delta of the block to NAME.json: the server's figures.'''
    before = server_counts(client)
    yield
    after = server_counts(client)
    with open(f"{name}.json", "w") as out:
        json.dump([after[0] - before[0], after[1] - before[1]], out)
"""


# -- figures the client side cannot see ----------------------------------------------------
def test_a_prefix_read_only_inside_lua_on_real_redis_is_unmeasured_not_zero(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(info_helper=INFO_HELPER)
    pytester.makepyfile("""
        import pytest
        from info_helper import info_delta

        @pytest.mark.min_cache_hit_rate(0.8, prefix="feed")
        def test_feed_read_in_lua(migsafe_redis):
            migsafe_redis.set("feed:1", "x")
            with info_delta(migsafe_redis, "lua"):
                for _ in range(10):
                    migsafe_redis.eval("return redis.call('GET', KEYS[1])", 1, "feed:1")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    hits, misses = info(pytester, "lua")
    assert hits + misses > 0
    result.stdout.fnmatch_lines([
        (f"*min_cache_hit_rate(0.8, prefix='feed'): the hit rate of prefix 'feed' is unmeasured: only the "
         f"client-side accounting has per-prefix figures and it saw none of that prefix, while INFO stats "
         f"counted {hits + misses} reads it did not see"),
        f"hits {hits}, misses {misses}, hit rate {format_rate(hits / (hits + misses))} (redis, INFO stats)",
        (f"  the client-side accounting saw 0 of the {hits + misses} reads INFO stats counted; "
         f"{hits + misses} ({hits} hits, {misses} misses) have no key or command*"),
    ])
    result.stdout.no_fnmatch_line("*(0 hits, 0 misses)*")


def test_a_prefix_partly_read_inside_lua_is_known_between_bounds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(info_helper=INFO_HELPER)
    pytester.makepyfile("""
        import pytest
        from info_helper import info_delta

        @pytest.mark.min_cache_hit_rate(0.8, prefix="feed")
        def test_feed(migsafe_redis):
            migsafe_redis.set("feed:1", "x")
            with info_delta(migsafe_redis, "seen"):
                for _ in range(4):
                    migsafe_redis.get("feed:1")
            with info_delta(migsafe_redis, "unseen"):
                for _ in range(6):
                    migsafe_redis.eval("return redis.call('GET', KEYS[1])", 1, "feed:2")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    seen_hits, seen_misses = info(pytester, "seen")
    unseen_hits, unseen_misses = info(pytester, "unseen")
    low = seen_hits / (seen_hits + seen_misses + unseen_misses)
    high = (seen_hits + unseen_hits) / (seen_hits + seen_misses + unseen_hits)
    assert low < 0.8 <= high
    result.stdout.fnmatch_lines([
        (f"*min_cache_hit_rate(0.8, prefix='feed'): the hit rate of prefix 'feed' is unmeasured: between "
         f"{format_rate(low)} and {format_rate(high)} ({seen_hits} hits, {seen_misses} misses, client-side "
         f"accounting, plus {unseen_hits + unseen_misses} reads INFO stats counted that it did not see)*"),
    ])


# -- keys as frameworks write them --------------------------------------------------------
DJANGO_CONFTEST = """
import os
import django
from django.conf import settings

settings.configure(CACHES={{"default": {{
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": os.environ["MIGSAFE_REDIS_URL"],
    {options}
}}}})
django.setup()
"""


@pytest.mark.parametrize(("options", "ini_text"), [
    pytest.param("", "", id="default-key-prefix"),
    pytest.param('"KEY_PREFIX": "shop", "VERSION": 3,', "", id="key-prefix-and-version"),
    pytest.param('"KEY_FUNCTION": lambda key, key_prefix, version: f"app/{version}/{key}",',
                 r"migsafe_cache_key_pattern = ^app/\d+/(?P<prefix>[^:]+)", id="own-key-function-and-ini-pattern"),
])
def test_djangos_cache_keys_group_under_the_key_the_application_gave(pytester: pytest.Pytester, options: str,
                                                                    ini_text: str) -> None:
    ini(pytester, ini_text)
    pytester.makeconftest(DJANGO_CONFTEST.format(options=options))
    pytester.makepyfile(info_helper=INFO_HELPER)
    pytester.makepyfile("""
        import pytest
        from django.core.cache import cache
        from info_helper import info_delta

        @pytest.mark.min_cache_hit_rate(0.75, prefix="user")
        def test_profile(migsafe_redis):
            cache.set("user:1", {"name": "ann"})
            with info_delta(migsafe_redis, "reads"):
                for _ in range(4):
                    assert cache.get("user:1") == {"name": "ann"}
                assert cache.get("user:2") is None
            print("stored as", cache.make_key("user:1"))
    """)
    result = pytester.runpytest_subprocess("-s", "--migsafe-report-json=report.json")
    result.assert_outcomes(passed=1)
    hits, misses = info(pytester, "reads")
    figures = json.loads((pytester.path / "report.json").read_text())["tests"]
    cache = next(iter(figures.values()))["cache"]
    assert cache["by_prefix"] == {"user": [hits, misses]}
    assert (cache["hits"], cache["misses"]) == (hits, misses)


def test_a_key_pattern_without_a_prefix_group_is_a_usage_error(pytester: pytest.Pytester) -> None:
    ini(pytester, r"migsafe_cache_key_pattern = ^app/\d+/([^:]+)")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*migsafe_cache_key_pattern*has no named group 'prefix'*"])


# -- assert_cache_aside(allow_sql=...) through the fixture ----------------------------------
ASIDE_APP = """
import sqlalchemy as sa

engine = sa.create_engine("sqlite://")
with engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE users (id int, name text)")
    conn.exec_driver_sql("INSERT INTO users VALUES (1, 'ann')")
    conn.exec_driver_sql("CREATE TABLE api_keys (token text, user_id int)")
    conn.exec_driver_sql("INSERT INTO api_keys VALUES ('t0k3n', 1)")

def endpoint(redis):
    with engine.connect() as conn:  # authentication: one SELECT on every request
        user_id = conn.exec_driver_sql("SELECT user_id FROM api_keys WHERE token = 't0k3n'").scalar()
    cached = redis.get(f"user:{user_id}")
    if cached is not None:
        return cached.decode()
    with engine.connect() as conn:
        name = conn.exec_driver_sql("SELECT name FROM users WHERE id = 1").scalar()
    redis.set(f"user:{user_id}", name)
    return name
"""


def test_allow_sql_through_the_fixture_and_an_unused_rule_warns_without_failing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(aside_app=ASIDE_APP)
    pytester.makepyfile("""
        from aside_app import endpoint

        def test_without_allow(migsafe_redis, assert_cache_aside):
            assert_cache_aside(lambda: endpoint(migsafe_redis), "user:1")

        def test_with_allow(migsafe_redis, assert_cache_aside):
            result = assert_cache_aside(lambda: endpoint(migsafe_redis), "user:1",
                                        allow_sql=["FROM api_keys", "FROM sessions"])
            assert result.second.allowed == 1
    """)
    result = pytester.runpytest("-W", "error")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*assert_cache_aside('user:1'): step 2 (second read should hit the cache and run no SQL): 1 statement ran:",
        "*SELECT user_id FROM api_keys WHERE token = ? x1 at aside_app.py:*",
        "*UnusedAllowSqlWarning: assert_cache_aside: allow_sql rule 'FROM sessions' matched no statement*",
    ])


# -- which hit rates are rated -------------------------------------------------------------
RATED_SUITE = """
from aside_app import endpoint
from info_helper import info_delta

def test_workload(migsafe_redis):
    migsafe_redis.set("page:1", "x")
    with info_delta(migsafe_redis, "workload"):
        for _ in range(3):
            migsafe_redis.get("page:1")
        for i in range(7):
            migsafe_redis.get(f"page:{i + 2}")

def test_proof(migsafe_redis, assert_cache_aside):
    assert_cache_aside(lambda: endpoint(migsafe_redis), "user:1", allow_sql="FROM api_keys")

def test_single_read(migsafe_redis):
    migsafe_redis.get("page:404")

def test_shadow(migsafe_redis, shadow):
    read = lambda: [migsafe_redis.get(f"page:{i}") for i in range(12)]
    shadow.run("pages", read, read, mode="observe", flush=migsafe_redis, session=None)
"""


def test_only_workloads_are_rated_and_the_summary_says_why(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(aside_app=ASIDE_APP, info_helper=INFO_HELPER)
    pytester.makepyfile(test_rated=RATED_SUITE)
    result = pytester.runpytest("--migsafe-report", "-v", "--migsafe-report-json=report.json")
    result.assert_outcomes(passed=4)
    hits, misses = info(pytester, "workload")
    tests = json.loads((pytester.path / "report.json").read_text())["tests"]
    unrated = {name: tests[f"test_rated.py::{name}"]["cache"] for name in ("test_proof", "test_single_read",
                                                                             "test_shadow")}
    left_out_hits = sum(cache["hits"] for cache in unrated.values())
    left_out_misses = sum(cache["misses"] for cache in unrated.values())
    assert all(cache["hits"] + cache["misses"] for cache in unrated.values())
    result.stdout.fnmatch_lines([
        f"cache: {hits} hit{'s' * (hits != 1)}, {misses} miss{'es' * (misses != 1)}, "
        f"hit rate {format_rate(hits / (hits + misses))}",
        ("  rated: 1 test (workloads: no assert_cache_aside, no shadow experiment, enough reads); not rated: "
         "3 tests (2 assert_cache_aside or too few reads, 1 shadow experiment), "
         f"their {left_out_hits} hit{'s' * (left_out_hits != 1)} and {left_out_misses} "
         f"miss{'es' * (left_out_misses != 1)} left out"),
    ])
    result.stdout.fnmatch_lines([f"*test_rated.py::test_workload *{hits}/{misses} {format_rate(0.3)}!*"])
    for name in unrated:
        result.stdout.fnmatch_lines([f"*test_rated.py::{name} * (not rated)*"])
        result.stdout.no_fnmatch_line(f"*test_rated.py::{name} *%!*")
    assert tests["test_rated.py::test_proof"]["cache"]["alert"] is None
    assert tests["test_rated.py::test_workload"]["cache"]["alert"] == 0.7


def test_the_minimum_reads_is_an_ini_key(pytester: pytest.Pytester) -> None:
    ini(pytester, "migsafe_hit_rate_min_reads = 1")
    pytester.makepyfile(aside_app=ASIDE_APP, info_helper=INFO_HELPER)
    pytester.makepyfile(test_rated=RATED_SUITE)
    result = pytester.runpytest("--migsafe-report", "-v")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_rated.py::test_single_read *0/1 0.0%!*"])
    result.stdout.fnmatch_lines(["*not rated: 2 tests (1 assert_cache_aside or too few reads, 1 shadow experiment)*"])
