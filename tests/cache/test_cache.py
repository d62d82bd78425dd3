"""Hits and misses: the client-side accounting against the real server's INFO stats, and fakeredis.

The real Redis is the referee: for every rule the client-side figures must equal the
change in ``INFO stats`` keyspace_hits / keyspace_misses, and fakeredis (whose totals
come from the client-side accounting) must give the same figures for the same workload.
This module starts its own redis-server so that no other test shares its INFO counters
(``MIGSAFE_TEST_REDIS_SERVER=/path/to/redis-server`` replays the rules on another version).
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio
from threaded import hangs, read_while_running, waiting_at

from pytest_migsafe.cache import hooks as cache_hooks
from pytest_migsafe.cache.hooks import probe_exists
from pytest_migsafe.cache.stats import (
    CacheStats,
    Tally,
    cache_stats,
    server_counts,
    sum_figures,
)
from pytest_migsafe.report.record import CacheFigures, TestRecord
from pytest_migsafe.servers import RunningRedis, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    server = start_redis(tmp_path_factory.mktemp("cache-redis"),
                         redis_server=os.environ.get("MIGSAFE_TEST_REDIS_SERVER") or None)
    yield server
    server.stop()


@pytest.fixture
def real(redis_server: RunningRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def fake(redis_server: RunningRedis) -> redis.Redis:
    """fakeredis declaring the real server's version: the command table's counts differ
    between versions (SINTERSTORE's sources count from Redis 7.0 on)."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        version = tuple(int(part) for part in str(client.info("server")["redis_version"]).split(".")[:2])
    finally:
        client.close()
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(version=version))


def seed(r: redis.Redis) -> None:
    """A string, an empty string, a hash, a list, a set and a sorted set."""
    r.set("user:1", "ann")
    r.set("user:empty", "")
    r.hset("profile:1", mapping={"name": "ann"})
    r.rpush("feed:1", "a", "b")
    r.sadd("tags:1", "x")
    r.sadd("tags:2", "y")
    r.zadd("rank:1", {"ann": 0})


def swallow(action: Callable[[redis.Redis], Any]) -> Callable[[redis.Redis], Any]:
    """Run ``action``, keeping a ResponseError as its result (WRONGTYPE cases)."""
    def run(r: redis.Redis) -> Any:
        try:
            return action(r)
        except redis.ResponseError as exc:
            return exc
    return run


# (name, action, expected hits, expected misses): each checked against INFO stats.
RULES: list[tuple[str, Callable[[redis.Redis], Any], int | None, int | None]] = [
    ("GET hit", lambda r: r.get("user:1"), 1, 0),
    ("GET miss", lambda r: r.get("user:2"), 0, 1),
    ("GET of an empty string is a hit", lambda r: r.get("user:empty"), 1, 0),
    ("GET of a hash: WRONGTYPE, a hit", swallow(lambda r: r.get("profile:1")), 1, 0),
    ("MGET counts each key, duplicates too", lambda r: r.mget("user:1", "user:2", "user:1"), 2, 1),
    ("MGET of a hash key: nil reply, a hit", lambda r: r.mget("profile:1", "user:9"), 1, 1),
    ("EXISTS counts each key", lambda r: r.exists("user:1", "profile:1", "user:9"), 2, 1),
    ("EXISTS all missing", lambda r: r.exists("a:1", "b:1"), 0, 2),
    ("TOUCH counts each key", lambda r: r.touch("user:1", "user:9"), 1, 1),
    ("HGET hit", lambda r: r.hget("profile:1", "name"), 1, 0),
    ("HGET missing field of an existing hash is a hit", lambda r: r.hget("profile:1", "age"), 1, 0),
    ("HGET missing hash", lambda r: r.hget("profile:2", "name"), 0, 1),
    ("HGET of a string: WRONGTYPE, a hit", swallow(lambda r: r.hget("user:1", "x")), 1, 0),
    ("HMGET is one lookup of the hash", lambda r: r.hmget("profile:1", ["name", "a", "b"]), 1, 0),
    ("HMGET all fields missing, hash exists", lambda r: r.hmget("profile:1", ["a", "b"]), 1, 0),
    ("HMGET missing hash", lambda r: r.hmget("profile:2", ["a", "b"]), 0, 1),
    ("HGETALL hit", lambda r: r.hgetall("profile:1"), 1, 0),
    ("HGETALL miss", lambda r: r.hgetall("profile:2"), 0, 1),
    ("HEXISTS missing field is a hit", lambda r: r.hexists("profile:1", "age"), 1, 0),
    ("HLEN miss", lambda r: r.hlen("profile:2"), 0, 1),
    ("TYPE hit and miss", lambda r: (r.type("user:1"), r.type("user:2")), 1, 1),
    ("TTL and PTTL hit and miss", lambda r: (r.ttl("user:1"), r.pttl("user:2")), 1, 1),
    ("GETEX", lambda r: (r.getex("user:1", ex=100), r.getex("user:2")), 1, 1),
    ("GETDEL", lambda r: (r.getdel("user:1"), r.getdel("user:1")), 1, 1),
    ("GETSET", lambda r: (r.getset("user:1", "bob"), r.getset("user:2", "bob")), 1, 1),
    ("SET ... GET reads", lambda r: (r.set("user:1", "x", get=True), r.set("user:3", "x", get=True)), 1, 1),
    ("SET NX does not count", lambda r: (r.set("user:1", "x", nx=True), r.setnx("user:4", "x")), 0, 0),
    ("writes do not count", lambda r: (r.set("user:1", "x"), r.delete("user:1", "user:9"), r.incr("n:1"),
                                       r.expire("profile:1", 100), r.hset("profile:1", "a", "1"),
                                       r.lpush("feed:1", "c"), r.sadd("tags:1", "z")), 0, 0),
    ("STRLEN of an empty string is a hit", lambda r: (r.strlen("user:empty"), r.strlen("user:2")), 1, 1),
    ("GETRANGE", lambda r: (r.getrange("user:1", 0, 1), r.getrange("user:2", 0, 1)), 1, 1),
    ("LRANGE out of range on an existing list is a hit", lambda r: r.lrange("feed:1", 5, 9), 1, 0),
    ("LRANGE miss", lambda r: r.lrange("feed:2", 0, -1), 0, 1),
    ("LINDEX and LLEN", lambda r: (r.lindex("feed:1", 9), r.llen("feed:2")), 1, 1),
    ("SMEMBERS and SCARD", lambda r: (r.smembers("tags:1"), r.scard("tags:9")), 1, 1),
    ("SISMEMBER of a non-member is a hit", lambda r: r.sismember("tags:1", "nope"), 1, 0),
    ("SINTER looks up every key", lambda r: r.sinter("tags:1", "tags:9", "tags:2"), 2, 1),
    ("SUNION", lambda r: r.sunion("tags:1", "tags:9"), 1, 1),
    # 0 lookups on Redis 6.2, one per source from 7.0 on: whatever INFO says is the expectation
    ("SINTERSTORE counts from Redis 7.0 on", lambda r: r.sinterstore("tags:3", ["tags:1", "tags:9"]),
     None, None),
    ("ZSCORE of a member scored 0 is a hit", lambda r: r.zscore("rank:1", "ann"), 1, 0),
    ("ZSCORE of a missing member is a hit", lambda r: r.zscore("rank:1", "bob"), 1, 0),
    ("ZRANGE and ZCARD miss", lambda r: (r.zrange("rank:2", 0, -1), r.zcard("rank:2")), 0, 2),
    ("DUMP", lambda r: (r.dump("user:1"), r.dump("user:2")), 1, 1),
    ("SUBSTR", lambda r: (r.substr("user:1", 0, 1), r.substr("user:2", 0, 1)), 1, 1),
    ("GETBIT, BITCOUNT, BITPOS", lambda r: (r.getbit("user:1", 900), r.bitcount("user:2"),
                                           r.bitpos("user:empty", 1)), 2, 1),
    ("HKEYS and HVALS", lambda r: (r.hkeys("profile:1"), r.hvals("profile:2")), 1, 1),
    ("HSTRLEN of a missing field is a hit", lambda r: r.hstrlen("profile:1", "age"), 1, 0),
    ("HRANDFIELD", lambda r: (r.hrandfield("profile:1"), r.hrandfield("profile:2")), 1, 1),
    ("LPOS of a missing element is a hit", lambda r: (r.lpos("feed:1", "z"), r.lpos("feed:2", "a")), 1, 1),
    ("SMISMEMBER and SRANDMEMBER", lambda r: (r.smismember("tags:1", ["q"]), r.srandmember("tags:9")), 1, 1),
    ("SDIFF looks up every key", lambda r: r.sdiff("tags:1", "tags:9", "tags:2"), 2, 1),
    ("ZMSCORE, ZRANK, ZREVRANK", lambda r: (r.zmscore("rank:1", ["bob"]), r.zrank("rank:1", "ann"),
                                           r.zrevrank("rank:2", "ann")), 2, 1),
    ("ZREVRANGE, ZRANGEBYSCORE, ZREVRANGEBYSCORE, ZRANGEBYLEX, ZREVRANGEBYLEX", lambda r: (
        r.zrevrange("rank:1", 5, 9), r.zrangebyscore("rank:1", 5, 9), r.zrevrangebyscore("rank:2", 9, 5),
        r.zrangebylex("rank:1", "[x", "[y"), r.zrevrangebylex("rank:1", "[y", "[x")), 4, 1),
    ("ZCOUNT, ZLEXCOUNT, ZRANDMEMBER", lambda r: (r.zcount("rank:1", 5, 9), r.zlexcount("rank:2", "-", "+"),
                                                 r.zrandmember("rank:1")), 2, 1),
    ("KEYS and SCAN do not count", lambda r: (r.keys("user:*"), r.scan(0)), 0, 0),
    ("HSCAN, SSCAN, ZSCAN", lambda r: (r.hscan("profile:1"), r.sscan("tags:9"), r.zscan("rank:1")), 2, 1),
    ("BITFIELD reads only when every operation is GET",
     lambda r: (r.bitfield("user:1").get("u8", 0).execute(), r.bitfield("n:2").set("u8", 0, 1).execute()), 1, 0),
    ("SORT of a list", lambda r: (r.sort("feed:9"), r.sort("feed:1", alpha=True)), 1, 1),
    ("OBJECT ENCODING", lambda r: (r.object("encoding", "user:1"), r.object("encoding", "user:9")), 1, 1),
]

FAKEREDIS_LACKS = {"TOUCH counts each key", "OBJECT ENCODING"}  # fakeredis 2.41 has neither


def test_every_rule_has_a_case_in_the_table() -> None:
    from pytest_migsafe.cache.rules import RULES as RULE_TABLE

    named = set(re.findall(r"[A-Z]+", " ".join(name for name, *_ in RULES)))
    missing = [command for command in RULE_TABLE if command not in named]
    assert missing == []


def run_measured(client: redis.Redis, action: Callable[[redis.Redis], Any]) -> tuple[CacheStats, tuple[int, int]]:
    """Run ``action`` in a cache_stats block; also return the INFO delta read independently."""
    before = server_counts(client) if not isinstance(client, fakeredis.FakeRedis) else (0, 0)
    with cache_stats(client) as stats:
        action(client)
    after = server_counts(client) if not isinstance(client, fakeredis.FakeRedis) else (0, 0)
    return stats, (after[0] - before[0], after[1] - before[1])


@pytest.mark.parametrize(("name", "action", "hits", "misses"), RULES, ids=[rule[0] for rule in RULES])
def test_client_side_accounting_matches_info_stats(real: redis.Redis, fake: redis.Redis, name: str,
                                                   action: Callable[[redis.Redis], Any],
                                                   hits: int | None, misses: int | None) -> None:
    seed(real)
    stats, info = run_measured(real, action)
    if hits is not None:
        assert info == (hits, misses), f"the rule table is wrong about {name}: INFO says {info}"
    assert (stats.hits, stats.misses) == info
    assert (stats.client_hits, stats.client_misses) == info, stats.by_command

    if name in FAKEREDIS_LACKS:
        return
    seed(fake)
    fake_stats, _ = run_measured(fake, action)
    assert fake_stats.source == "client"
    assert (fake_stats.hits, fake_stats.misses) == info
    assert fake_stats.by_prefix == stats.by_prefix
    assert fake_stats.by_command == stats.by_command


def test_lazily_expired_key_is_a_miss_on_both(real: redis.Redis, fake: redis.Redis) -> None:
    for client in (real, fake):
        client.set("session:1", "x", px=1)
        time.sleep(0.01)  # let the key expire; not a timing assertion
        stats, _ = run_measured(client, lambda r: r.get("session:1"))
        assert (stats.hits, stats.misses) == (0, 1)
        assert (stats.client_hits, stats.client_misses) == (0, 1)


def workload(r: redis.Redis) -> None:
    """A cache-like mix: single commands, MGET, both kinds of pipeline, WATCH, errors inside."""
    r.set("user:1", "ann")
    r.hset("profile:1", "name", "ann")
    r.get("user:1")
    r.get("user:2")
    r.mget(["user:1", "user:2", "user:3", "profile:1"])
    with r.pipeline() as pipe:  # MULTI/EXEC
        pipe.get("user:1").mget("user:1", "user:4").hget("profile:1", "age").hgetall("profile:9")
        pipe.exists("user:1", "user:9").execute()
    with r.pipeline(transaction=False) as pipe:
        pipe.get("user:5").get("user:1").set("user:5", "eve").get("user:5").execute()
    with r.pipeline() as pipe:  # an error inside: execute raises, every lookup still counts
        pipe.get("user:1").get("profile:1").get("user:6")
        with pytest.raises(redis.ResponseError):
            pipe.execute()
    with r.pipeline(transaction=False) as pipe:
        pipe.hget("user:1", "x").get("user:1")
        results = pipe.execute(raise_on_error=False)
        assert isinstance(results[0], redis.ResponseError)
    with r.pipeline() as pipe:  # WATCH: commands before MULTI run immediately
        pipe.watch("user:1")
        pipe.get("user:1")
        pipe.get("user:7")
        pipe.multi()
        pipe.set("user:1", "bob").get("user:1")
        pipe.execute()


def test_real_and_fakeredis_give_identical_figures_for_one_workload(real: redis.Redis, fake: redis.Redis) -> None:
    real_stats, info = run_measured(real, workload)
    fake_stats, _ = run_measured(fake, workload)
    assert info == (15, 9)
    assert (real_stats.hits, real_stats.misses) == info
    assert (real_stats.client_hits, real_stats.client_misses) == info
    assert (fake_stats.hits, fake_stats.misses) == info
    assert fake_stats.by_prefix == real_stats.by_prefix == {
        "profile": Tally(hits=3, misses=1), "user": Tally(hits=12, misses=8)}
    assert fake_stats.by_command == real_stats.by_command
    assert real_stats.by_command["MGET"] == Tally(hits=3, misses=3)


def test_transaction_aborted_at_queue_time_counts_nothing(real: redis.Redis, fake: redis.Redis) -> None:
    def aborted(r: redis.Redis) -> None:
        with r.pipeline() as pipe:
            pipe.get("user:1").execute_command("NO-SUCH-COMMAND").get("user:2")
            with pytest.raises(redis.ResponseError):
                pipe.execute()

    for client in (real, fake):
        stats, _ = run_measured(client, aborted)
        assert (stats.hits, stats.misses) == (0, 0)
        assert (stats.client_hits, stats.client_misses) == (0, 0)


def test_lua_reads_count_in_server_totals_but_not_in_breakdowns(real: redis.Redis) -> None:
    real.set("user:1", "ann")
    stats, info = run_measured(real, lambda r: r.eval("return redis.call('GET', KEYS[1])", 1, "user:1"))
    assert info == (1, 0)
    assert (stats.hits, stats.misses) == (1, 0)
    assert (stats.client_hits, stats.client_misses) == (0, 0)
    assert stats.by_prefix == {}


def lua_workload(r: redis.Redis) -> None:
    """Reads inside scripts: alone, in a MULTI/EXEC pipeline, and by EVALSHA."""
    r.set("user:1", "ann")
    r.eval("return redis.call('GET', KEYS[1])", 1, "user:1")
    r.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2, "user:1", "user:2")
    with r.pipeline() as pipe:
        pipe.eval("return redis.call('EXISTS', KEYS[1])", 1, "user:3").get("user:1").execute()
    sha = r.script_load("return redis.call('HGET', KEYS[1], 'name')")
    r.evalsha(sha, 1, "profile:1")


def test_reads_inside_lua_count_on_fakeredis_as_the_server_counts_them(real: redis.Redis, fake: redis.Redis) -> None:
    pytest.importorskip("lupa", reason="fakeredis runs Lua through lupa (pip install 'fakeredis[lua]')")
    _, info = run_measured(real, lua_workload)
    fake_stats, _ = run_measured(fake, lua_workload)
    assert (fake_stats.hits, fake_stats.misses) == info
    assert fake_stats.by_prefix == {"profile": Tally(0, 1), "user": Tally(3, 2)}
    assert fake_stats.by_command["MGET"] == Tally(1, 1)


@pytest.mark.asyncio
async def test_reads_inside_lua_count_on_asyncio_fakeredis(redis_server: RunningRedis) -> None:
    pytest.importorskip("lupa", reason="fakeredis runs Lua through lupa (pip install 'fakeredis[lua]')")
    real_client = redis.asyncio.Redis.from_url(redis_server.url)
    fake_client = fakeredis.FakeAsyncRedis()
    try:
        figures = []
        for client in (real_client, fake_client):
            await client.flushdb()
            await client.set("user:1", "ann")
            async with cache_stats(client) as stats:
                await client.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2, "user:1", "user:2")
            figures.append((stats.hits, stats.misses))
        assert figures[0] == figures[1]
    finally:
        await real_client.aclose()
        await fake_client.aclose()


def test_hit_rate_is_none_without_reads(real: redis.Redis, fake: redis.Redis) -> None:
    for client in (real, fake):
        with cache_stats(client) as stats:
            client.set("user:1", "x")
        assert stats.hit_rate is None
        assert stats.figures().hit_rate is None


def test_reset_measures_only_after_the_warm_up(real: redis.Redis, fake: redis.Redis) -> None:
    for client in (real, fake):
        client.set("user:1", "x")
        with cache_stats(client) as stats:
            client.get("user:2")
            client.get("user:3")
            stats.reset()
            client.get("user:1")
        assert (stats.hits, stats.misses) == (1, 0)
        assert stats.by_prefix == {"user": Tally(1, 0)}
        assert stats.hit_rate == 1.0


def test_warmup_callable_is_not_counted(real: redis.Redis, fake: redis.Redis) -> None:
    for client in (real, fake):
        client.set("user:1", "x")
        with cache_stats(client, warmup=lambda c=client: [c.get(f"user:{i}") for i in range(5)]) as stats:
            client.get("user:1")
            client.get("user:2")
        assert (stats.hits, stats.misses) == (1, 1)
        assert stats.hit_rate == 0.5


def test_figures_are_live_inside_the_block(real: redis.Redis) -> None:
    real.set("user:1", "x")
    with cache_stats(real) as stats:
        real.get("user:1")
        assert stats.hits == 1
        real.get("user:2")
        assert (stats.hits, stats.misses) == (1, 1)


def test_other_clients_on_the_same_server_are_accounted(real: redis.Redis, redis_server: RunningRedis) -> None:
    other = redis.Redis.from_url(redis_server.url, decode_responses=True)
    elsewhere = fakeredis.FakeRedis()
    try:
        with cache_stats(real) as stats:
            other.get("user:1")
            elsewhere.get("user:1")  # another server: not this block's
        assert (stats.client_hits, stats.client_misses) == (0, 1)
        assert (stats.hits, stats.misses) == (0, 1)
    finally:
        other.close()


def test_decoded_and_bytes_keys_group_under_one_prefix(real: redis.Redis, redis_server: RunningRedis) -> None:
    decoded = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with cache_stats(real) as stats:
            decoded.get("user:1")
            real.get(b"user:2")
            real.get("plain")
        assert stats.by_prefix == {"plain": Tally(0, 1), "user": Tally(0, 2)}
    finally:
        decoded.close()


def test_tracked_keys_are_counted_one_by_one(fake: redis.Redis) -> None:
    fake.set("user:1", "x")
    with cache_stats(fake, track_keys=["user:1", "user:2"]) as stats:
        fake.mget("user:1", "user:2", "user:3")
        fake.get("user:1")
    assert stats.by_key == {"user:1": Tally(2, 0), "user:2": Tally(0, 1)}


def test_nested_blocks_each_count(fake: redis.Redis) -> None:
    with cache_stats(fake) as outer:
        fake.get("a:1")
        with cache_stats(fake) as inner:
            fake.get("a:2")
    assert (outer.misses, inner.misses) == (2, 1)


def test_probe_is_not_counted_by_the_server(real: redis.Redis) -> None:
    real.hset("profile:1", "name", "ann")
    before = server_counts(real)
    assert probe_exists(real, ["profile:1", "profile:2"]) == [True, False]
    assert server_counts(real) == before


def test_figures_round_trip_through_the_record(real: redis.Redis) -> None:
    real.set("user:1", "x")
    with cache_stats(real) as stats:
        real.get("user:1")
        real.get("user:2")
    figures = stats.figures(min_hit_rate=0.9, target=0.8, alert=0.7)
    assert figures == CacheFigures(hits=1, misses=1, backend="redis", by_prefix={"user": [1, 1]},
                                   by_command={"GET": [1, 1]}, min_hit_rate=0.9, source="server",
                                   target=0.8, alert=0.7)
    assert figures.under_alert() and figures.under_target()
    record = TestRecord(nodeid="t", cache=figures)
    assert TestRecord.from_dict(record.to_dict()).cache == figures


def test_sum_figures_adds_blocks() -> None:
    one = CacheFigures(hits=1, misses=2, backend="fakeredis", by_prefix={"a": [1, 2]}, source="client")
    two = CacheFigures(hits=3, misses=0, backend="fakeredis", by_prefix={"a": [1, 0], "b": [2, 0]},
                       source="client")
    total = sum_figures([one, two])
    assert total is not None and (total.hits, total.misses) == (4, 2)
    assert total.by_prefix == {"a": [2, 2], "b": [2, 0]}
    assert sum_figures([]) is None


def test_sync_with_on_an_asyncio_client_is_refused(redis_server: RunningRedis) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    with pytest.raises(TypeError, match="async with"), cache_stats(client):
        pass


@pytest.mark.asyncio
async def test_asyncio_client_info_delta_and_accounting(redis_server: RunningRedis) -> None:
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        await client.flushdb()
        await client.set("user:1", "ann")
        await client.hset("profile:1", "name", "ann")
        async with cache_stats(client) as stats:
            await client.get("user:1")
            await client.get("user:2")
            await client.hget("profile:1", "age")  # a hit the reply cannot show: probed
            async with client.pipeline() as pipe:
                pipe.mget("user:1", "user:3").get("user:1")
                await pipe.execute()
        assert (stats.hits, stats.misses) == (4, 2)
        assert stats.source == "server"
        assert (stats.client_hits, stats.client_misses) == (4, 2)
        assert stats.by_prefix == {"profile": Tally(1, 0), "user": Tally(3, 2)}
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_asyncio_fakeredis_counts_client_side() -> None:
    client = fakeredis.FakeAsyncRedis()
    await client.hset("profile:1", "name", "ann")
    async with cache_stats(client) as stats:
        await client.hget("profile:1", "age")
        await client.get("user:1")
    assert (stats.hits, stats.misses) == (1, 1)
    assert stats.backend == "fakeredis"


def test_backend_and_source(real: redis.Redis, fake: redis.Redis, tmp_path: Path) -> None:
    assert CacheStats(real).backend == "redis"
    assert CacheStats(fake).backend == "fakeredis"
    with cache_stats(real) as stats:
        pass
    assert stats.source == "server"


class _ReadsFromInside:
    """A listener that reads a key on the same thread while a lookup is handed to it, as a
    finalizer the garbage collector runs there may."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.identity = cache_hooks.pool_identity(client.connection_pool)[0]
        self.seen: list[tuple[str, Any, bool]] = []

    def add(self, command: str, key: Any, hit: bool) -> None:
        self.seen.append((command, key, hit))
        if len(self.seen) == 1:
            self.client.get("inner")


def test_a_read_during_a_hand_over_on_the_same_thread_is_counted_not_hung() -> None:
    """The hooks' lock is re-entrant: with a plain lock the inner read waited, forever, for the
    lock its own thread held (the pool's events and the query capture use re-entrant ones too)."""
    client = fakeredis.FakeRedis()
    listener = _ReadsFromInside(client)
    assert not hangs(functools.partial(_read_once, client, listener), cache_hooks._lock), \
        "the read made during the hand-over hung on the cache hooks' lock"
    assert [key for _, key, _ in listener.seen] == ["outer", "inner"]


def _read_once(client: redis.Redis, listener: _ReadsFromInside) -> None:
    cache_hooks.start(listener)
    try:
        client.get("outer")
    finally:
        cache_hooks.stop(listener)


def _reads(client: redis.Redis, n: int) -> None:
    for j in range(n):
        client.get("a:1" if j % 2 else f"b:{j}")


def test_the_figures_of_an_active_block_are_of_one_moment() -> None:
    """figures() read while threads read keys: its totals and its breakdowns come from one
    reading of the client-side accounting (they were read under three acquisitions of the
    hooks' lock, and disagreed: hits/misses (8, 9) beside a by_command of (33, 33))."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    client.set("a:1", "v")
    workers, per_worker = 2, 3000
    torn = []

    def read() -> None:
        figures = stats.figures()
        by_command = tuple(map(sum, zip(*figures.by_command.values()))) or (0, 0)
        by_prefix = tuple(map(sum, zip(*figures.by_prefix.values()))) or (0, 0)
        if not by_command == by_prefix == (figures.hits, figures.misses):
            torn.append(((figures.hits, figures.misses), by_command, by_prefix))

    with cache_stats(client) as stats:
        reads = read_while_running([functools.partial(_reads, client, per_worker)] * workers, read)
    assert reads > 0
    assert torn == []
    assert stats.totals() == (workers * per_worker // 2, workers * per_worker // 2)


@pytest.mark.parametrize("command", ["get", "mget"])  # the lean path (GET) and the general one (deliver)
def test_an_ended_block_counts_no_read_after_its_stop_returned(real: redis.Redis, command: str) -> None:
    """A block's figures are final once it ended: a read whose hand-over looked up the started
    blocks just before the block stopped (and then waited for the hooks' lock, which stop()
    took first) counts nothing for it afterwards (its by_command grew by the read after the
    block: figures of an ended block changed under readers that no longer take the lock)."""
    read = functools.partial(real.get, "gone") if command == "get" else functools.partial(real.mget, "gone", "away")
    read()  # (the command's path warmed: no lock taken before the hand-over's own)
    stats = cache_stats(real)
    stats.__enter__()  # (the hooks installed: the hook's own execute_command is looked up below)
    where = redis.Redis.execute_command if command == "get" else cache_hooks.deliver
    with cache_hooks._lock:
        thread = waiting_at(read, where, "with _lock:")
        stats.__exit__(None, None, None)
        at_stop = stats.figures()
    thread.join(30)
    assert not thread.is_alive()
    assert stats.figures() == at_stop
    assert at_stop.by_command == {}
