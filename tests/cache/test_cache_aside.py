"""assert_cache_aside against a real PostgreSQL, on real Redis and on fakeredis.

A small repository class plays the application: correct (delete on write), write-through
(update on write), and broken variants (stale after write, never caching, not storing,
reading the wrong key). Each broken variant must fail at the step that names its fault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import fakeredis
import psycopg
import pytest
import redis
from cache_helpers import PrivateDatabase, private_database

from pytest_migsafe.cache.aside import CacheAsideFailed, UnusedAllowSqlWarning, assert_cache_aside
from pytest_migsafe.servers import RunningRedis, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    server = start_redis(tmp_path_factory.mktemp("cache-aside-redis"))
    yield server
    server.stop()


@pytest.fixture(params=["redis", "fakeredis"])
def cache(request: pytest.FixtureRequest, redis_server: RunningRedis) -> Iterator[redis.Redis]:
    if request.param == "fakeredis":
        yield fakeredis.FakeRedis()
        return
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="module")
def database(pg_dsn: str) -> Iterator[PrivateDatabase]:
    with private_database(pg_dsn, "cache_aside") as db:
        yield db


@pytest.fixture
def db(database: PrivateDatabase) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database.dsn, autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE cache_users (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO cache_users VALUES (1, 'ann'), (2, 'bob')")
        yield conn


class Users:
    """A user repository with a Redis cache in front; the flags break it on purpose."""

    def __init__(self, db: psycopg.Connection, cache: Any, *, on_write: str = "delete",
                 store: bool = True, read_cache: bool = True, key_format: str = "user:{}") -> None:
        self.db, self.cache = db, cache
        self.on_write, self.store, self.read_cache, self.key_format = on_write, store, read_cache, key_format

    def fresh(self, user_id: int) -> dict[str, Any]:
        row = self.db.execute("SELECT id, name FROM cache_users WHERE id = %s", (user_id,)).fetchone()
        return {"id": row[0], "name": row[1]}

    def load(self, user_id: int) -> dict[str, Any]:
        key = self.key_format.format(user_id)
        if self.read_cache:
            cached = self.cache.get(key)
            if cached is not None:
                return json.loads(cached)
        value = self.fresh(user_id)
        if self.store:
            self.cache.set(key, json.dumps(value), ex=300)
        return value

    def rename(self, user_id: int, name: str) -> dict[str, Any]:
        self.db.execute("UPDATE cache_users SET name = %s WHERE id = %s", (name, user_id))
        value = {"id": user_id, "name": name}
        if self.on_write == "delete":
            self.cache.delete(self.key_format.format(user_id))
        elif self.on_write == "update":
            self.cache.set(self.key_format.format(user_id), json.dumps(value), ex=300)
        return value


def check(users: Users, cache: Any, **kwargs: Any) -> Any:
    return assert_cache_aside(lambda: users.load(1), "user:1", lambda: users.rename(1, "cat"),
                              client=cache, fresh=lambda: users.fresh(1), **kwargs)


def test_delete_on_write_passes_every_step(db: psycopg.Connection, cache: Any) -> None:
    result = check(Users(db, cache), cache)
    assert (result.first.misses, result.first.hits, result.first.statements) == (1, 0, 1)
    assert (result.second.hits, result.second.misses, result.second.statements) == (1, 0, 0)
    assert result.invalidated is True
    assert result.after_write is not None and result.after_write.value == {"id": 1, "name": "cat"}
    assert (result.after_write.misses, result.after_write.statements) == (1, 1)


def test_update_on_write_passes_and_the_read_after_hits(db: psycopg.Connection, cache: Any) -> None:
    result = check(Users(db, cache, on_write="update"), cache)
    assert result.invalidated is False
    assert result.after_write is not None
    assert (result.after_write.hits, result.after_write.statements) == (1, 0)


def test_stale_cache_after_write_fails_step_3(db: psycopg.Connection, cache: Any) -> None:
    with pytest.raises(CacheAsideFailed) as failure:
        check(Users(db, cache, on_write="nothing"), cache)
    message = str(failure.value)
    assert message.startswith("step 3 (after write(), the next read should return the new value): ")
    assert "read() returned {'id': 1, 'name': 'ann'}, the value from before write() (stale)" in message
    assert "the database has {'id': 1, 'name': 'cat'}" in message
    assert "write() left the key 'user:1' in the cache" in message


def test_never_reading_the_cache_fails_step_1_or_2(db: psycopg.Connection, cache: Any) -> None:
    with pytest.raises(CacheAsideFailed) as failure:
        check(Users(db, cache, read_cache=False), cache)
    assert str(failure.value).startswith("step 1 (first read should miss the cache and run SQL): "
                                         "read() never read the key 'user:1'")


def test_a_read_that_runs_sql_on_a_hit_fails_step_2(db: psycopg.Connection, cache: Any) -> None:
    users = Users(db, cache)

    def load_and_audit() -> Any:
        value = users.load(1)
        db.execute("SELECT count(*) FROM cache_users")
        return value

    with pytest.raises(CacheAsideFailed) as failure:
        assert_cache_aside(load_and_audit, "user:1", client=cache)
    message = str(failure.value)
    assert message.startswith("step 2 (second read should hit the cache and run no SQL): 1 statement ran:")
    assert "SELECT COUNT(*) FROM cache_users x1 at tests/cache/test_cache_aside.py:" in message


def test_not_storing_after_a_miss_fails_step_1(db: psycopg.Connection, cache: Any) -> None:
    with pytest.raises(CacheAsideFailed, match=r"^step 1 .*did not store the key 'user:1'"):
        check(Users(db, cache, store=False), cache)


def test_a_key_cached_before_the_first_read_fails_step_1(db: psycopg.Connection, cache: Any) -> None:
    cache.set("user:1", json.dumps({"id": 1, "name": "ann"}))
    with pytest.raises(CacheAsideFailed, match=r"^step 1 .*already in the cache before the first read"):
        check(Users(db, cache), cache)


def test_a_write_that_changes_nothing_cannot_prove_freshness(db: psycopg.Connection, cache: Any) -> None:
    users = Users(db, cache)
    with pytest.raises(CacheAsideFailed, match=r"^step 3 .*equals the value before write\(\)"):
        assert_cache_aside(lambda: users.load(1), "user:1", lambda: users.rename(1, "ann"), client=cache,
                           fresh=lambda: users.fresh(1))


def test_expected_value_from_write_and_from_a_predicate(db: psycopg.Connection, cache: Any) -> None:
    users = Users(db, cache)
    assert_cache_aside(lambda: users.load(1), "user:1", lambda: users.rename(1, "cat"), client=cache)
    cache.flushdb()
    with pytest.raises(CacheAsideFailed, match="expect_after_write rejected"):
        assert_cache_aside(lambda: users.load(2), "user:2", lambda: users.rename(2, "dan"), client=cache,
                           expect_after_write=lambda value: value["name"] == "eve")


def test_without_a_way_to_know_the_new_value_it_says_so(db: psycopg.Connection, cache: Any) -> None:
    users = Users(db, cache)
    with pytest.raises(ValueError, match="cannot tell the new value"):
        assert_cache_aside(lambda: users.load(1), "user:1", lambda: None, client=cache)


def test_reads_through_another_client_on_the_same_server_count(db: psycopg.Connection,
                                                               redis_server: RunningRedis) -> None:
    app_client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    checker_client = redis.Redis.from_url(redis_server.url)
    try:
        checker_client.flushdb()
        check(Users(db, app_client), checker_client)
    finally:
        app_client.close()
        checker_client.close()


# -- allow_sql: statements that are not the cached read ----------------------------------
@pytest.fixture
def api_keys(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("CREATE TEMP TABLE cache_api_keys (token text PRIMARY KEY, user_id int NOT NULL)")
    db.execute("INSERT INTO cache_api_keys VALUES ('t0k3n', 1)")
    return db


def endpoint(users: Users, db: psycopg.Connection) -> Any:
    """An HTTP handler: authentication runs one SELECT on every request, then the cached read."""
    def handle() -> Any:
        row = db.execute("SELECT user_id FROM cache_api_keys WHERE token = %s", ("t0k3n",)).fetchone()
        return users.load(row[0])
    return handle


def test_an_authentication_query_on_every_request_fails_step_2_and_says_how_to_allow_it(
        api_keys: psycopg.Connection, cache: Any) -> None:
    users = Users(api_keys, cache)
    with pytest.raises(CacheAsideFailed) as failure:
        assert_cache_aside(endpoint(users, api_keys), "user:1", client=cache)
    message = str(failure.value)
    assert message.startswith("step 2 (second read should hit the cache and run no SQL): 1 statement ran:")
    assert "FROM cache_api_keys" in message
    assert "allow_sql=" in message


def test_allow_sql_lets_the_authentication_query_through_every_step(api_keys: psycopg.Connection,
                                                                   cache: Any) -> None:
    users = Users(api_keys, cache)
    result = assert_cache_aside(endpoint(users, api_keys), "user:1", lambda: users.rename(1, "cat"),
                                client=cache, fresh=lambda: users.fresh(1), allow_sql=r"from CACHE_API_KEYS")
    assert (result.first.statements, result.first.allowed) == (1, 1)
    assert (result.second.statements, result.second.allowed, result.second.hits) == (0, 1, 1)
    assert result.after_write is not None and result.after_write.allowed == 1
    assert result.unused_allow_sql == []


def test_allow_sql_matches_the_normalized_shape_and_takes_a_list(api_keys: psycopg.Connection, cache: Any) -> None:
    users = Users(api_keys, cache)
    shape = re.compile(r"select user_id from cache_api_keys where token = \?")  # the shape, not the text sent
    result = assert_cache_aside(endpoint(users, api_keys), "user:1", client=cache,
                                allow_sql=[shape, "FROM sessions"], warn_unused_allow=False)
    assert result.second.allowed == 1
    assert result.unused_allow_sql == ["FROM sessions"]


def test_an_allow_sql_rule_that_matched_nothing_is_warned_about(api_keys: psycopg.Connection, cache: Any) -> None:
    users = Users(api_keys, cache)
    with pytest.warns(UnusedAllowSqlWarning, match=r"allow_sql rule 'FROM sessions' matched no statement"):
        assert_cache_aside(endpoint(users, api_keys), "user:1", client=cache,
                           allow_sql=["FROM cache_api_keys", "FROM sessions"])


def test_a_rule_that_also_allows_the_cached_read_fails_step_1_saying_so(api_keys: psycopg.Connection,
                                                                       cache: Any) -> None:
    users = Users(api_keys, cache)
    with pytest.raises(CacheAsideFailed, match=r"^step 1 .*no SQL statement ran \(2 statements ran, all allowed "
                                               r"by allow_sql"):
        assert_cache_aside(endpoint(users, api_keys), "user:1", client=cache, allow_sql="^SELECT")


def test_allow_sql_that_is_not_patterns_is_refused(db: psycopg.Connection, cache: Any) -> None:
    users = Users(db, cache)
    with pytest.raises(TypeError, match="allow_sql expects"):
        assert_cache_aside(lambda: users.load(1), "user:1", client=cache, allow_sql=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"allow_sql rule '\(' is not a regular expression"):
        assert_cache_aside(lambda: users.load(1), "user:1", client=cache, allow_sql="(")
