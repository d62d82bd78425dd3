"""No password in any repr, traceback or message; masked where it stands, never by searching for its characters."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from pytest_migsafe.servers import (
    NoPostgresAvailable,
    NoRedisAvailable,
    RunningPostgres,
    RunningRedis,
    error_message,
    mask_text,
    mask_url,
    start_postgres,
    start_redis,
)
from pytest_migsafe.servers.masking import mask_parse_error, passwords_in


def _holding(secret: str | None, **texts: str) -> list[str]:
    """Names of the texts that hold ``secret``. Assert on the result stored in a variable:
    pytest's explanation then names the texts, never the secret (a call's arguments it would show)."""
    assert secret
    return [name for name, text in texts.items() if secret in text]


@pytest.fixture(scope="module")
def tcp_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPostgres]:
    """A cluster with a loopback TCP listener and a random password."""
    running = start_postgres(tmp_path_factory.mktemp("tcp-pg"), tcp=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tcp_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    """A Redis on 127.0.0.1 with a random password."""
    running = start_redis(tmp_path_factory.mktemp("tcp-redis"), tcp=True)
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("cannot reach postgresql://app:s3cret@db:5432/app now", "cannot reach postgresql://app:***@db:5432/app now"),
        ("url (postgresql+psycopg://u:p%40ss@h/db?sslmode=require)", "url (postgresql+psycopg://u:***@h/db?sslmode=require)"),
        ('in URI: "postgresql://u:pw@[::1/db"', 'in URI: "postgresql://u:***@[::1/db"'),
        ("two: redis://:a@h/0 and rediss://u:b@h/1", "two: redis://:***@h/0 and rediss://u:***@h/1"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=pw&sslpassword=k&x=1", "postgresql://u@h/db?password=***&sslpassword=***&x=1"),
        ("dsn host=h password=pw dbname=d", "dsn host=h password=*** dbname=d"),
        ("host=h password = 'it\\'s x' dbname=d", "host=h password = *** dbname=d"),
        ("host=h sslpassword=k", "host=h sslpassword=***"),
        ("host=h password=Wrong\\ Pw7777 dbname=d", "host=h password=*** dbname=d"),
        ("host=h password=a\\ b\\ c", "host=h password=***"),
        ("no secret: postgresql://u@h/db, old_password=x", "no secret: postgresql://u@h/db, old_password=x"),
        ("connection failed: connection to server at \"127.0.0.1\", port 1 failed",
         "connection failed: connection to server at \"127.0.0.1\", port 1 failed"),
    ],
)
def test_mask_text_masks_passwords_where_they_stand(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_a_one_letter_password_leaves_the_message_whole(tmp_path: Path) -> None:
    """The password ``e`` is masked in the URL, not in "connection failed" (libpq's own text)."""
    with pytest.raises(NoPostgresAvailable) as info:
        start_postgres(tmp_path, url="postgresql://alice:e@127.0.0.1:1/app")
    message = str(info.value)
    assert "postgresql://alice:***@127.0.0.1:1/app" in message
    with pytest.raises(psycopg.OperationalError) as direct:  # what libpq itself says
        psycopg.connect("postgresql://alice:e@127.0.0.1:1/app", connect_timeout=5)
    assert str(direct.value).strip().splitlines()[0] in message
    assert "conn***ction" not in message and "connection failed" in message


def test_a_password_equal_to_the_user_name_leaves_the_user_name(tcp_pg: RunningPostgres, tmp_path: Path) -> None:
    """A wrong password ``postgres`` for user postgres: the server's message names the user."""
    url = f"postgresql://postgres:postgres@127.0.0.1:{tcp_pg.port}/{tcp_pg.dbname}"
    with pytest.raises(NoPostgresAvailable) as info:
        start_postgres(tmp_path, url=url)
    message = str(info.value)
    assert 'password authentication failed for user "postgres"' in message
    assert f"postgresql://postgres:***@127.0.0.1:{tcp_pg.port}/" in message


def test_a_password_quoted_by_a_parse_error_is_masked(tmp_path: Path) -> None:
    """libpq quotes the password itself when it cannot parse it (a space in it)."""
    with pytest.raises(NoPostgresAvailable) as info:
        start_postgres(tmp_path, url="postgresql://alice:top secret@127.0.0.1:1/app")
    message = str(info.value)
    assert "top secret" not in message and "secret" not in message
    assert 'unexpected spaces found in "***"' in message


@pytest.mark.parametrize("given", [
    "postgresql://postgres:Wrong@Pw7777@127.0.0.1:1/postgres",  # an unencoded "@": libpq's host is "Pw7777@127.0.0.1"
    "host=127.0.0.1 port=1 user=postgres password=Wrong\\ Pw7777 dbname=postgres",  # libpq's escaped space
], ids=["unencoded @", "escaped space"])
def test_no_piece_of_a_password_libpq_read_another_way_is_shown(tmp_path: Path, given: str) -> None:
    with pytest.raises(NoPostgresAvailable) as info:
        start_postgres(tmp_path, url=given)
    leaked = _holding("Pw7777", message=str(info.value))
    assert leaked == []
    assert "Wrong" not in str(info.value)


def test_parse_error_masking_keeps_other_quoted_words() -> None:
    assert passwords_in("postgresql://u:e@h/db") == ["e"]
    assert mask_parse_error('invalid connection option "user"', ["e"]) == 'invalid connection option "user"'
    assert mask_parse_error('invalid percent-encoded token: "p%zzss"', passwords_in("postgresql://u:p%zzss@h/d")) \
        == 'invalid percent-encoded token: "***"'


def test_error_message_of_a_parse_error_from_psycopg() -> None:
    given = "postgresql://u:p%zzss@127.0.0.1:1/db"
    with pytest.raises(psycopg.ProgrammingError) as info:
        psycopg.connect(given)
    assert "p%zzss" in str(info.value)  # libpq does quote it
    assert "p%zzss" not in error_message(info.value, given=given)


def test_running_postgres_repr_hides_the_password(tcp_pg: RunningPostgres) -> None:
    password = tcp_pg.password
    holding = _holding(password, url=tcp_pg.url, dsn=tcp_pg.dsn)
    assert holding == ["url", "dsn"]
    leaked = _holding(password, repr=repr(tcp_pg), str=str(tcp_pg), describe=tcp_pg.describe(), source=tcp_pg.source,
                      origin=tcp_pg.origin)
    assert leaked == []
    assert ":***@127.0.0.1:" in repr(tcp_pg) and "password=***" in repr(tcp_pg)
    given = start_postgres(Path("/nonexistent"), url=tcp_pg.url)  # a URL server keeps it out too
    leaked = _holding(password, repr=repr(given), describe=given.describe(), source=given.source)
    assert leaked == []


def test_running_redis_repr_hides_the_password(tcp_redis: RunningRedis) -> None:
    password = tcp_redis.password
    holding = _holding(password, url=tcp_redis.url)
    assert holding == ["url"]
    leaked = _holding(password, repr=repr(tcp_redis), str=str(tcp_redis), describe=tcp_redis.describe())
    assert leaked == []
    assert "redis://:***@127.0.0.1:" in repr(tcp_redis)


def test_redis_error_keeps_its_words(tmp_path: Path) -> None:
    with pytest.raises(NoRedisAvailable) as info:
        start_redis(tmp_path, url="redis://:e@127.0.0.1:1/0")
    message = str(info.value)
    assert "redis://:***@127.0.0.1:1/0" in message
    assert "***rror" not in message and re.search(r"Error \d+ connecting to 127\.0\.0\.1:1", message), message


def test_no_password_in_the_traceback_of_a_failing_test(pytester: pytest.Pytester, tcp_pg: RunningPostgres,
                                                        tcp_redis: RunningRedis,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing test that takes migsafe_postgres (long traceback, locals shown) and holds a RunningRedis."""
    monkeypatch.setenv("MIGSAFE_POSTGRES_URL", tcp_pg.url)
    monkeypatch.setenv("TEST_REDIS_URL", tcp_redis.url)
    pytester.makepyfile(test_fails="""
        import os
        from pathlib import Path
        from pytest_migsafe.servers import start_redis

        def test_fails(migsafe_postgres):
            server = migsafe_postgres
            redis_server = start_redis(Path("/nonexistent"), url=os.environ["TEST_REDIS_URL"])
            assert server is None and redis_server is None
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--tb=long", "-l", "-vv")
    result.assert_outcomes(failed=1)
    output = result.stdout.str() + result.stderr.str()
    assert "RunningPostgres(url='postgresql+psycopg://postgres:***@127.0.0.1:" in output
    assert "RunningRedis(url='redis://:***@127.0.0.1:" in output
    leaked = _holding(tcp_pg.password, output=output) + _holding(tcp_redis.password, output=output)
    assert leaked == []


# Passwords written into a URL or DSN as the user typed them, each made of distinctive
# pieces (Sx1q, Zk9w, Yv3m, Qp5r) joined by characters at which some parser cuts a URL: no
# piece may reach a message, whatever the driver reads it as (a port, a host, a database).
_PIECES = ("Sx1q", "Zk9w", "Yv3m", "Qp5r")
_MALFORMED_POSTGRES = [
    "postgresql://postgres:Sx1q Zk9w#Yv3m@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q Zk9w?Yv3m@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q#Zk9w@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q/Zk9w@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q@Zk9w/Yv3m@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q@Zk9w:12@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q/Zk9w@Yv3m#Qp5r@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q%zz/Zk9w@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q@[Zk9w@127.0.0.1:1/migsafe",
    "postgresql://postgres:Sx1q\"Zk9w 'Yv3m@127.0.0.1:1/migsafe",
    "postgresql://postgres@127.0.0.1:1/migsafe?password=Sx1q Zk9w#Yv3m&sslmode=disable",
    "host=127.0.0.1 port=1 user=postgres password=Sx1q Zk9w dbname=migsafe",
    "host=127.0.0.1 port=1 user=postgres password=Sx1q Zk9w",
    "host=127.0.0.1 port=1 user=postgres password='Sx1q Zk9w",
]
_MALFORMED_REDIS = [
    "redis://:Sx1q#Zk9w@127.0.0.1:1/0",
    "redis://:Sx1q?Zk9w@127.0.0.1:1/0",
    "redis://:Sx1q/Zk9w@127.0.0.1:1/0",
    "redis://:Sx1q Zk9w#Yv3m@127.0.0.1:1/0",
    "redis://:Sx1q:Zk9w#Yv3m@127.0.0.1:1/0",
    "redis://:Sx1q\\Zk9w#Yv3m@127.0.0.1:1/0",
    "redis://:Sx1q@Zk9w/Yv3m@127.0.0.1:1/0",
    "redis://:Sx1q@Zk9w:12#Yv3m@127.0.0.1:1/0",
    "redis://user:Sx1q'Zk9w?Yv3m@127.0.0.1:1/0",
    "unix://:Sx1q@Zk9w/Yv3m@/nonexistent/redis.sock",
]


def _pieces_in(message: str) -> list[str]:
    """The pieces of the malformed passwords above that ``message`` shows (in any case)."""
    return [piece for piece in _PIECES if piece.lower() in message.lower()]


@pytest.mark.parametrize(("start", "error", "given"),
                         [(start_postgres, NoPostgresAvailable, url) for url in _MALFORMED_POSTGRES]
                         + [(start_redis, NoRedisAvailable, url) for url in _MALFORMED_REDIS])
def test_starting_a_server_shows_no_piece_of_a_malformed_password(tmp_path: Path, start: Any, error: Any,
                                                                    given: str) -> None:
    """The message of start_postgres / start_redis(url=...) names the URL (masked) and what the
    driver said, with no piece of the password it read as a host or a port (libpq's quoted
    parse errors; redis-py's ``connecting to zk9w:6379``)."""
    with pytest.raises(error) as info:
        start(tmp_path, url=given)
    message = str(info.value)
    assert _pieces_in(message) == [], message
    assert "cannot connect to " in message


@pytest.mark.parametrize("given", _MALFORMED_REDIS)
def test_no_piece_of_a_malformed_redis_password_is_shown(given: str) -> None:
    """redis-py reads a password cut at "#", "/" or "?" as a port or a host and quotes that piece."""
    with pytest.raises((ValueError, redis.RedisError)) as info:
        redis.Redis.from_url(given, socket_connect_timeout=1).ping()
    assert any(piece.lower() in str(info.value).lower() for piece in _PIECES) or "Error" in str(info.value)
    message = f"{mask_url(given)}: {error_message(info.value, given=given)}"
    assert _pieces_in(message) == [], message


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://postgres:sec ret#x@127.0.0.1:1/migsafe", "postgresql://postgres:***@127.0.0.1:1/migsafe"),
        ("postgresql://postgres:sec ret?x@127.0.0.1:1/migsafe", "postgresql://postgres:***@127.0.0.1:1/migsafe"),
        ("redis://:Secr3tPart#rest@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("redis://:a/b?c#d@e f'g\"h:i@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
        ("redis://us/er:pw@127.0.0.1:1/0", "redis://us/er:***@127.0.0.1:1/0"),
        ("postgresql://u@h/db?password=sec ret#x&sslmode=disable", "postgresql://u@h/db?password=***&sslmode=disable"),
        ("postgresql://u@h/db?sslmode=disable&password=sec ret#x", "postgresql://u@h/db?sslmode=disable&password=***"),
        ("host=h password=sec ret dbname=d", "host=h password=*** dbname=d"),
        ("host=h password=sec ret", "host=h password=***"),
        ("host=h password='sec ret' dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='it\\'s x", "host=h password=***"),
        ("postgresql+psycopg://postgres@localhost:5432/migsafe?host=/tmp/pg", "postgresql+psycopg://postgres@localhost:5432/migsafe?host=/tmp/pg"),
        ("unix:///tmp/redis.sock?db=0", "unix:///tmp/redis.sock?db=0"),
        ("redis://:@127.0.0.1:1/0", "redis://:@127.0.0.1:1/0"),
    ],
)
def test_mask_url_masks_the_password_as_written(url: str, masked: str) -> None:
    """The whole string is one URL or DSN: its password is everything the user wrote for it."""
    assert mask_url(url) == masked


def test_a_one_letter_piece_is_masked_where_quoted_only() -> None:
    """Password ``e#x``: redis-py quotes ``'e'`` as the port; the words of its message stay whole."""
    given = "redis://:e#x@127.0.0.1:1/0"
    with pytest.raises(ValueError) as info:
        redis.Redis.from_url(given)
    assert str(info.value) == "Port could not be cast to integer value as 'e'"  # what redis-py says
    assert error_message(info.value, given=given) == "Port could not be cast to integer value as '***'"


def test_a_password_cut_where_libpq_reads_it_whole_leaves_the_user_name(tcp_pg: RunningPostgres,
                                                                         tmp_path: Path) -> None:
    """``postgres#x`` for user postgres: libpq reads the password whole, the server names the user."""
    url = f"postgresql://postgres:postgres#x@127.0.0.1:{tcp_pg.port}/{tcp_pg.dbname}"
    with pytest.raises(NoPostgresAvailable) as info:
        start_postgres(tmp_path, url=url)
    message = str(info.value)
    assert 'password authentication failed for user "postgres"' in message
    assert f"postgresql://postgres:***@127.0.0.1:{tcp_pg.port}/" in message


@pytest.mark.parametrize("conninfo", ["host=h password=Sx1q Zk9w dbname=d", "postgresql://u:Sx1q Zk9w#Yv3m@h/db"])
def test_the_repr_of_an_index_check_connection_source_shows_no_piece_of_the_password(conninfo: str) -> None:
    """The index check keeps a conninfo in memory; its repr masks the password as written."""
    from pytest_migsafe.queries.explain import ConnectionSource

    shown = repr(ConnectionSource(conninfo))
    assert [piece for piece in _PIECES if piece in shown] == [], shown
