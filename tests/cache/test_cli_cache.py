"""``migsafe hit-rate`` and ``migsafe hot-reads`` against real servers of this module's own."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import redis
from cache_helpers import PrivateDatabase, private_database

from pytest_migsafe.cli.main import main
from pytest_migsafe.servers import RunningRedis, start_redis


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    """A fresh server per test: its INFO stats start at zero."""
    server = start_redis(tmp_path_factory.mktemp("cli-redis"))
    yield server
    server.stop()


def reads(url: str, hits: int, misses: int) -> None:
    client = redis.Redis.from_url(url)
    client.set("user:1", "x")
    for _ in range(hits):
        client.get("user:1")
    for _ in range(misses):
        client.get("user:2")
    client.close()


def test_hit_rate_prints_info_stats_and_passes_above_the_alert(redis_server: RunningRedis,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    reads(redis_server.url, hits=3, misses=1)
    assert main(["hit-rate", "--redis-url", redis_server.url]) == 0
    out = capsys.readouterr().out
    assert "hits 3, misses 1, hit rate 75.0% (target 80.0%, alert under 70.0%)" in out
    assert "below target: hit rate 75.0% is under 80.0%" in out


def test_hit_rate_exits_1_under_the_alert_line(redis_server: RunningRedis,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    reads(redis_server.url, hits=1, misses=1)
    assert main(["hit-rate", "--redis-url", redis_server.url, "--target", "0.9", "--alert", "0.6"]) == 1
    assert "ALERT: hit rate 50.0% is under the alert line 60.0%" in capsys.readouterr().out


def test_hit_rate_without_reads_says_so(redis_server: RunningRedis, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hit-rate", "--redis-url", redis_server.url]) == 0
    out = capsys.readouterr().out
    assert "hits 0, misses 0, hit rate n/a" in out and "no keyspace reads yet" in out


def test_hit_rate_unreachable_server_is_one_line_with_the_password_masked(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hit-rate", "--redis-url", "redis://:hunter2@127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("migsafe: cannot read INFO stats from Redis at redis://:***@127.0.0.1:1/0: ")
    assert err.count("\n") == 1 and "hunter2" not in err


def test_hit_rate_bad_url_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hit-rate", "--redis-url", "http://:hunter2@example"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("migsafe: bad Redis URL http://:***@example: ")
    assert "hunter2" not in err


@pytest.mark.parametrize("value", ["1.5", "x", "-0.1"])
def test_hit_rate_rejects_a_bad_rate(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["hit-rate", "--redis-url", "redis://x", "--target", value])
    assert exit_info.value.code == 2
    assert "argument --target: expected a" in capsys.readouterr().err


def test_hit_rate_alert_above_target_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hit-rate", "--redis-url", "redis://x", "--target", "0.5", "--alert", "0.6"]) == 2
    assert "--alert 0.6 is above --target 0.5" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "expected"), [
    ("hit-rate", "Exit status 1 when the hit rate is under the alert line"),
    ("hot-reads", "List the most-called SELECT statements from pg_stat_statements"),
])
def test_help(command: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert expected in out


@pytest.fixture(scope="module")
def database(pg_dsn: str) -> Iterator[PrivateDatabase]:
    with private_database(pg_dsn, "cli_hot_reads") as db, psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("SELECT pg_stat_statements_reset()")
        for i in range(7):
            conn.execute("SELECT id FROM items WHERE id = %s", (i,))
        for i in range(3):
            conn.execute("SELECT count(*) FROM orders WHERE id = %s", (i,))
        conn.close()
        yield db


def test_hot_reads_lists_the_statements(database: PrivateDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hot-reads", "--dsn", database.dsn, "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[:2] == ["1", "7"] and lines[1].endswith("(items)")


def test_hot_reads_takes_a_sqlalchemy_url(database: PrivateDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hot-reads", "--dsn", database.url]) == 0
    assert "(orders)" in capsys.readouterr().out


def test_hot_reads_unreachable_server_is_one_line_with_the_password_masked(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hot-reads", "--dsn", "postgresql://ann:hunter2@127.0.0.1:1/db"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("migsafe: cannot connect to PostgreSQL at postgresql://ann:***@127.0.0.1:1/db: ")
    assert err.count("\n") == 1 and "hunter2" not in err


def test_hot_reads_rejects_a_bad_limit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["hot-reads", "--dsn", "postgresql://x", "--limit", "0"])
    assert "argument --limit: expected a whole number of at least 1, got '0'" in capsys.readouterr().err
