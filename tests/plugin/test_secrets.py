"""No password in the reprs and messages of the plugin's own objects (the servers' are in tests/servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pytest_migsafe.cli.cache import _clean
from pytest_migsafe.cli.main import main
from pytest_migsafe.plugin.cache import RedisEndpoint


def test_the_redis_endpoint_repr_masks_its_password() -> None:
    endpoint = RedisEndpoint("redis", "redis://:secretpw@127.0.0.1:6379/0", "URL")
    assert "secretpw" not in repr(endpoint)
    assert "127.0.0.1:6379" in repr(endpoint)


def test_a_one_letter_password_is_masked_where_it_stands_not_everywhere() -> None:
    url = "redis://:e@127.0.0.1:1/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        text = _clean(exc, url)
    else:  # pragma: no cover - nothing listens on port 1
        raise AssertionError("expected a connection error")
    assert "***ction" not in text and "conn" in text.lower(), text


# a password that redis-py's URL parser cuts at "#" (its head read as the port, quoted in the
# error) and libpq rejects for its space (quoted whole in the parse error)
_REDIS_URL = "redis://:Sx1q Zk9w#Yv3m@127.0.0.1:1/0"
_POSTGRES_URL = "postgresql://postgres:Sx1q Zk9w#Yv3m@127.0.0.1:1/migsafe"
_PIECES = ("Sx1q", "Zk9w", "Yv3m")


def _leaked(*texts: str) -> list[str]:
    """The pieces of the password found in ``texts`` (an empty list when none is)."""
    return [piece for piece in _PIECES if any(piece.lower() in text.lower() for text in texts)]


@pytest.mark.parametrize("xdist", [[], ["-n0"], ["-n2"]], ids=["no xdist", "-n0", "-n2"])
def test_a_redis_password_cut_by_the_url_parser_is_in_no_note_or_report(pytester: pytest.Pytester,
                                                                        xdist: list[str]) -> None:
    """The fixture's error (a named Redis is never swapped for fakeredis: terminal and JSON
    report) quotes redis-py's error, not the password."""
    pytester.makepyfile(test_r="""
        def test_r(migsafe_redis):
            migsafe_redis.get("x")
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--migsafe-redis-url={_REDIS_URL}",
                                           "--migsafe-report", "--migsafe-report-json=run.json", *xdist)
    result.assert_outcomes(errors=1)
    output = result.stdout.str() + result.stderr.str()
    report = (pytester.path / "run.json").read_text()
    assert "redis://:***@127.0.0.1:1/" in output and "Port could not be cast to integer value as" in output
    leaked = _leaked(output, report)
    assert leaked == []


def test_a_redis_password_cut_by_the_url_parser_is_not_in_the_real_only_failure(pytester: pytest.Pytester) -> None:
    """``--migsafe-redis=real`` fails the test with the reason: masked the same way."""
    pytester.makepyfile(test_r="""
        def test_r(migsafe_redis):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--migsafe-redis-url={_REDIS_URL}",
                                           "--migsafe-redis=real")
    result.assert_outcomes(errors=1)
    output = result.stdout.str() + result.stderr.str()
    assert "no real Redis (--migsafe-redis=real)" in output
    leaked = _leaked(output)
    assert leaked == []


def test_a_postgres_password_with_a_space_and_a_hash_is_in_no_failure(pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq quotes the whole userinfo password in its parse error; the plugin's message masks it."""
    monkeypatch.delenv("MIGSAFE_POSTGRES_URL", raising=False)
    pytester.makepyfile(test_s="""
        def test_s(migsafe_postgres):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--migsafe-postgres-url={_POSTGRES_URL}")
    output = result.stdout.str() + result.stderr.str()
    assert "cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/migsafe" in output
    leaked = _leaked(output)
    assert leaked == []


def test_hit_rate_masks_a_password_the_url_parser_cut(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hit-rate", "--redis-url", _REDIS_URL]) == 2
    err = capsys.readouterr().err
    assert "bad Redis URL redis://:***@127.0.0.1:1/0: Port could not be cast to integer value as '***'" in err
    leaked = _leaked(err)
    assert leaked == []


@pytest.mark.parametrize("dsn", [_POSTGRES_URL, "postgresql+psycopg://postgres:Sx1q Zk9w?Yv3m@127.0.0.1:1/migsafe",
                                 "host=127.0.0.1 port=1 password=Sx1q Zk9w"])
def test_hot_reads_masks_a_malformed_password(capsys: pytest.CaptureFixture[str], dsn: str) -> None:
    assert main(["hot-reads", "--dsn", dsn]) == 2
    err = capsys.readouterr().err
    assert "cannot connect to PostgreSQL at " in err
    leaked = _leaked(err)
    assert leaked == []


def test_the_command_table_generator_masks_a_bad_redis_url(tmp_path: Path) -> None:
    """``python -m pytest_migsafe.cache.generate URL``: a URL redis-py cannot parse is one masked line."""
    from pytest_migsafe.cache import generate

    with pytest.raises(SystemExit) as info:
        generate.main([_REDIS_URL, "--output", str(tmp_path / "commands.json")])
    message = str(info.value.code)
    assert message.startswith("bad Redis URL redis://:***@127.0.0.1:1/0: ")
    leaked = _leaked(message)
    assert leaked == []


def test_a_redis_password_cut_by_the_url_parser_is_not_in_the_exports_usage_error(
        pytester: pytest.Pytester) -> None:
    """``migsafe_export_redis`` with a URL redis-py cannot parse: the usage error names the URL masked."""
    pytester.makeini("""
        [pytest]
        migsafe_export_redis = REDIS_URL=url
    """)
    pytester.makepyfile(test_r="def test_r(): pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--migsafe-redis-url={_REDIS_URL}")
    output = result.stdout.str() + result.stderr.str()
    assert "cannot provide the server for the exported settings" in output
    assert "Port could not be cast to integer value as '***'" in output
    leaked = _leaked(output)
    assert leaked == []


@pytest.mark.parametrize("trace", [["--full-trace", "-l"], ["-l", "--tb=long"]], ids=["full-trace", "long"])
def test_a_server_fixtures_failure_shows_no_password_in_its_locals(pytester: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   trace: list[str]) -> None:
    """``--full-trace -l`` shows the locals of every frame, the server fixtures' too: they held the
    URLs as given, passwords included, when they failed the test."""
    monkeypatch.delenv("MIGSAFE_POSTGRES_URL", raising=False)
    monkeypatch.delenv("MIGSAFE_REDIS_URL", raising=False)
    pytester.makepyfile(test_s="""
        def test_pg(migsafe_postgres):
            pass

        def test_redis(migsafe_redis):
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *trace,
                                           "--migsafe-postgres-url=postgresql://bob:Pq7xWv2Lm@127.0.0.1:1/db",
                                           "--migsafe-redis-url=redis://:Rz4kTy8Nb@127.0.0.1:1/0")
    result.assert_outcomes(errors=2)
    output = result.stdout.str() + result.stderr.str()
    assert "Pq7xWv2Lm" not in output and "Rz4kTy8Nb" not in output
