"""Redis hits and misses over a block of code: ``with cache_stats(client) as stats:``.

On a real Redis the totals are the server's own: the change in ``INFO stats``
``keyspace_hits`` / ``keyspace_misses`` over the block (never ``CONFIG RESETSTAT``).
Those counters are server-wide: every client and every database of that server counts,
so the figures are the test's own when the server serves one test at a time, as the
plugin's private server does (each pytest-xdist worker starts its own). Reads made by
Lua scripts count in the totals but not in the breakdowns.

The breakdowns (``by_prefix``, ``by_command``, ``by_key``) come from client-side
accounting (:mod:`pytest_migsafe.cache.hooks`) of every redis-py client that talks to
the same server, following Redis's own counting rules (:mod:`pytest_migsafe.cache.rules`).
fakeredis has no ``INFO stats``, so there the totals come from that accounting too.

Usable without pytest::

    with cache_stats(client, warmup=lambda: load_all(ids)) as stats:
        load_all(ids)
    print(stats.hits, stats.misses, stats.hit_rate, stats.by_prefix)

For ``redis.asyncio`` clients use ``async with cache_stats(client) as stats:``.

A hit rate here is a fraction from 0 to 1 (``hits / (hits + misses)``), None when
nothing was read; it is printed as a percentage (:func:`format_rate`).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_migsafe.cache import hooks as cache_hooks
from pytest_migsafe.cache.keys import KeyPrefixes, default_prefixes
from pytest_migsafe.cache.marker import MIN_HIT_RATE_HELP, min_cache_hit_rate_signature  # noqa: F401 (re-exported)
from pytest_migsafe.report.record import CacheFigures


@dataclass
class Tally:
    """Keyspace hits and misses of one slice (a key prefix, a command, a key).

    Counts from the client-side accounting (:mod:`pytest_migsafe.cache.hooks`), never
    from ``INFO stats``, which has no breakdown.
    """

    hits: int = 0
    misses: int = 0

    @property
    def reads(self) -> int:
        """Lookups of the slice: hits + misses."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float | None:
        """hits / reads as a fraction from 0 to 1, or None when there was no read."""
        return self.hits / self.reads if self.reads else None


def key_text(key: Any) -> str:
    """A Redis key as ``str``: bytes-like keys decoded as UTF-8 (undecodable bytes replaced),
    anything else through ``str``."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key).decode("utf-8", "replace")
    return str(key)


def server_counts(client: Any) -> tuple[int, int]:
    """``(keyspace_hits, keyspace_misses)`` from ``INFO stats`` of a sync client's server.

    Totals since the server started (or its last ``CONFIG RESETSTAT``), server-wide.
    Raises what the client raises (``redis.exceptions.ResponseError`` when ``INFO`` is
    refused, ``ConnectionError`` when the server is gone) and ``KeyError`` when the reply
    lacks the two fields.
    """
    info = client.info("stats")
    return int(info["keyspace_hits"]), int(info["keyspace_misses"])


async def server_counts_async(client: Any) -> tuple[int, int]:
    """``(keyspace_hits, keyspace_misses)`` from ``INFO stats`` of an asyncio client's server
    (the same figures and errors as :func:`server_counts`)."""
    info = await client.info("stats")
    return int(info["keyspace_hits"]), int(info["keyspace_misses"])


def is_async_client(client: Any) -> bool:
    """True for ``redis.asyncio`` clients (their ``execute_command`` is a coroutine function)."""
    return inspect.iscoroutinefunction(getattr(type(client), "execute_command", None))


class CacheStats:
    """Hits and misses on one Redis server while the block runs; a context manager.

    ``hits`` / ``misses`` / ``hit_rate`` are the server's ``INFO stats`` deltas on real
    Redis (``source == "server"``) and the client-side accounting on fakeredis
    (``source == "client"``). Read inside the block they are live (a sync client asks
    the server); after it they are final. ``by_prefix`` / ``by_command`` map a key prefix
    (the part before the first ``:``) / a command name to a :class:`Tally`; ``by_key``
    does so for the keys named in ``track_keys``; ``key_patterns`` (default: the ini key
    ``migsafe_cache_key_pattern``) say how a key's prefix is found
    (:mod:`pytest_migsafe.cache.keys`). ``reset()`` starts counting afresh
    (for example after a warm-up); ``warmup=`` is a callable run first and not counted. A
    block entered again inside itself (``with stats:`` within ``with stats:``) is one block,
    counted from its outer start to its outer end; entered again after it ended, it starts
    afresh.

    ``client`` is a redis-py client (``redis.Redis``, ``redis.asyncio.Redis``, or a
    fakeredis one). ``backend`` is ``"redis"`` or ``"fakeredis"``; ``identity`` the server
    identity of :func:`pytest_migsafe.cache.hooks.client_identity`. When ``INFO`` is
    refused (ACL) or stops answering, the totals fall back to the client side
    (``source == "client"``); so do they with ``server_totals=False`` (a server other
    processes read at the same time, such as pytest-xdist workers sharing one: its
    ``INFO stats`` are server-wide). Django's cache (``django.core.cache.cache`` on
    ``RedisCache``) is measured through the redis-py client it reads with
    (:func:`redis_client_of`). Errors: ``TypeError`` for anything else that is not a redis-py
    client, and for ``with`` on an asyncio client;
    ``ImportError`` on entering without redis-py installed;
    :class:`~pytest_migsafe.cache.keys.KeyPatternError` for a bad key pattern.
    """

    def __init__(self, client: Any, *, warmup: Callable[[], Any] | None = None,
                 track_keys: Iterable[Any] = (),
                 key_patterns: Sequence[str | re.Pattern[str]] | None = None,
                 server_totals: bool = True) -> None:
        client = redis_client_of(client)
        self.client = client
        self.server_totals = server_totals
        self.prefixes = default_prefixes() if key_patterns is None else KeyPrefixes(key_patterns)
        self._plain = False
        self.warmup = warmup
        self.identity, fake = cache_hooks.client_identity(client)
        self.backend = "fakeredis" if fake else "redis"
        self.is_async = is_async_client(client)
        self._tracked = {key_text(key) for key in track_keys}
        self._start: tuple[int, int] | None = None
        self._end: tuple[int, int] | None = None
        self._resets = 0  # cache_hooks.stat_resets() when the server's counters were first read
        self._server_error: str | None = None
        self._active = False
        self.entered = False  # True once the block has started
        self._blocks: BlocksOfATest | None = None  # the test's blocks this one counts in, if any
        self._reentered = 0  # times entered again inside its own block, not yet left
        self._clear()

    # -- the listener side (called by the cache.hooks wrappers under their lock) ---
    def _clear(self) -> None:
        self._counts: dict[tuple[str, Any, bool], int] = {}  # (command, raw prefix, hit)
        self._keys: dict[str, list[int]] = {}

    def add(self, command: str, key: Any, hit: bool) -> None:
        """Count one lookup from the hooks (called under their lock): ``command`` (upper-case
        name) read ``key`` (``bytes`` or ``str``); ``hit`` True for a keyspace hit, False for
        a miss. Feeds ``by_prefix`` (the key's prefix by :attr:`prefixes`), ``by_command``,
        ``by_key`` and the client-side totals."""
        if self._plain and isinstance(key, bytes) and not key.startswith(b":"):
            prefix: Any = key.partition(b":")[0]  # the hot path; decoded once per prefix when read
        else:
            prefix = self.prefixes.raw(key)
        slot = (command, prefix, hit)
        counts = self._counts
        counts[slot] = counts.get(slot, 0) + 1
        if self._tracked:
            text = key_text(key)
            if text in self._tracked:
                self._keys.setdefault(text, [0, 0])[0 if hit else 1] += 1

    def _slices(self) -> list[tuple[str, Any, bool, int]]:
        with cache_hooks._lock:
            return [(command, prefix, hit, n) for (command, prefix, hit), n in self._counts.items()]

    @property
    def client_hits(self) -> int:
        """Keyspace hits seen by the client-side accounting (whatever ``source`` is)."""
        return sum(n for _, _, hit, n in self._slices() if hit)

    @property
    def client_misses(self) -> int:
        """Keyspace misses seen by the client-side accounting (whatever ``source`` is)."""
        return sum(n for _, _, hit, n in self._slices() if not hit)

    # -- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> CacheStats:
        if self.is_async:
            raise TypeError("cache_stats() of a redis.asyncio client: use `async with`, not `with`")
        if self._active:  # entered again inside its own block: one block, counted from the outer start
            self._reentered += 1
            return self
        self._activate()
        if self.warmup is not None:
            self.warmup()
        self._start = self._read_server()
        self._clear_client()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._reentered:
            self._reentered -= 1
            return
        self._finish(self._read_server())

    async def __aenter__(self) -> CacheStats:
        if self._active:  # (see __enter__)
            self._reentered += 1
            return self
        self._activate()
        if self.warmup is not None:
            result = self.warmup()
            if inspect.isawaitable(result):
                await result
        self._start = await self._read_server_async()
        self._clear_client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reentered:
            self._reentered -= 1
            return
        self._finish(await self._read_server_async())

    def _activate(self) -> None:
        self._plain = self.prefixes.plain()  # Django's settings are read as the block starts
        self._end = None
        self._clear_client()
        self._active = self.entered = True
        cache_hooks.start(self)
        if self._blocks is not None:
            self._blocks.started(self)

    def _finish(self, end: tuple[int, int] | None) -> None:
        cache_hooks.stop(self)
        self._active = False
        self._end = end
        if end is None:  # the server stopped answering INFO: fall back to the client side
            self._start = None
        if self._blocks is not None:
            self._blocks.ended(self)

    def _clear_client(self) -> None:
        with cache_hooks._lock:
            self._clear()

    def reset(self) -> None:
        """Forget everything counted so far: measure from this point on.

        While active, re-reads ``INFO stats`` as the new starting point. Raises
        ``TypeError`` for an asyncio client (use ``warmup=`` there), and what
        :func:`server_counts` raises for a connection error.
        """
        if self.is_async:
            raise TypeError("reset() needs a sync client; with redis.asyncio use warmup=")
        self._clear_client()
        if self._active:
            self._start = self._read_server()
            self._end = None
        else:
            self._start = self._end = None

    # -- the server side -----------------------------------------------------------
    def _read_server(self) -> tuple[int, int] | None:
        if self.backend != "redis" or not self.server_totals:
            return None
        from redis.exceptions import ResponseError

        if self._start is None:
            self._resets = cache_hooks.stat_resets()
        try:
            return server_counts(self.client)
        except (ResponseError, KeyError) as exc:  # INFO refused (ACL) or unusual server
            self._server_error = str(exc)
            return None

    async def _read_server_async(self) -> tuple[int, int] | None:
        if self.backend != "redis" or not self.server_totals:
            return None
        from redis.exceptions import ResponseError

        if self._start is None:
            self._resets = cache_hooks.stat_resets()
        try:
            return await server_counts_async(self.client)
        except (ResponseError, KeyError) as exc:
            self._server_error = str(exc)
            return None

    def _server_delta(self) -> tuple[int, int] | None:
        start = self._start
        if start is None:
            return None
        end = self._end
        if end is None:
            if not self._active or self.is_async:
                return None
            end = self._read_server()
            if end is None:
                return None
        delta = end[0] - start[0], end[1] - start[1]
        if cache_hooks.stat_resets() != self._resets or delta[0] < 0 or delta[1] < 0:
            # the server's counters restarted from zero during the block (CONFIG RESETSTAT, here
            # or, seen as a negative delta, from another process): its delta says nothing
            self._server_error = "INFO stats was reset during the block (CONFIG RESETSTAT)"
            self._start = None
            return None
        return delta

    # -- reading -------------------------------------------------------------------
    @property
    def source(self) -> str:
        """Where the totals come from: ``"server"`` (``INFO stats`` keyspace_hits /
        keyspace_misses deltas) or ``"client"`` (the client-side accounting: fakeredis, a
        server whose ``INFO`` was refused, or one whose statistics were reset during the
        block by ``CONFIG RESETSTAT``)."""
        if self._start is not None and self._end is not None:
            self._server_delta()  # (an ended block's, no round trip: a reset found there falls back)
        if self._start is not None and cache_hooks.stat_resets() != self._resets:
            return "client"
        return "server" if self._start is not None else "client"

    def totals(self) -> tuple[int, int]:
        """``(hits, misses)``: keyspace hits and misses over the block, from one reading.

        ``source == "server"``: the ``INFO stats`` keyspace_hits / keyspace_misses deltas
        (read live from a sync client while active); else the client-side accounting.
        Raises ``RuntimeError`` when read inside the ``async with`` block of an asyncio
        client on real Redis (known only after the block).
        """
        return self._totals_and_slices()[0]

    def _totals_and_slices(self) -> tuple[tuple[int, int], list[tuple[str, Any, bool, int]]]:
        """:meth:`totals` and the client-side accounting's slices of one moment: ``INFO stats``
        read first, then the slices (a read the server counted is in them, unless its reply is
        still on its way to a thread of this process), the client-side totals from those slices."""
        delta = self._server_delta()
        if delta is None and self.is_async and self._active and self.backend == "redis":
            raise RuntimeError("the figures of an asyncio client are known after the `async with` block")
        slices = self._slices()
        if delta is not None:
            return delta, slices
        return (sum(n for _, _, hit, n in slices if hit), sum(n for _, _, hit, n in slices if not hit)), slices

    @property
    def hits(self) -> int:
        """Keyspace hits counted while active (see :meth:`totals` for source and errors)."""
        return self.totals()[0]

    @property
    def misses(self) -> int:
        """Keyspace misses counted while active (see :meth:`totals` for source and errors)."""
        return self.totals()[1]

    @property
    def reads(self) -> int:
        """Keyspace lookups counted while active: hits + misses (see :meth:`totals`)."""
        return sum(self.totals())

    @property
    def hit_rate(self) -> float | None:
        """hits / (hits + misses) as a fraction from 0 to 1, or None when nothing was read."""
        hits, misses = self.totals()
        return hits / (hits + misses) if hits + misses else None

    @property
    def by_prefix(self) -> dict[str, Tally]:
        """Client-side hits and misses per key prefix (:mod:`pytest_migsafe.cache.keys`: the
        part before the first ``:`` once a framework's own prefix is taken off, or a
        ``key_patterns`` match): ``{prefix: Tally}``, sorted by prefix."""
        return self._grouped(_prefix_of)

    @property
    def by_command(self) -> dict[str, Tally]:
        """Client-side hits and misses per command: ``{"GET": Tally, ...}``, sorted by name."""
        return self._grouped(_command_of)

    def _grouped(self, group: Callable[[str, Any], str],
                 slices: list[tuple[str, Any, bool, int]] | None = None) -> dict[str, Tally]:
        merged: dict[str, Tally] = {}
        for command, prefix, hit, n in self._slices() if slices is None else slices:
            tally = merged.setdefault(group(command, prefix), Tally())
            if hit:
                tally.hits += n
            else:
                tally.misses += n
        return dict(sorted(merged.items()))

    @property
    def by_key(self) -> dict[str, Tally]:
        """Client-side hits and misses of each key named in ``track_keys``:
        ``{key as str: Tally}`` (a key never read has ``Tally(0, 0)``), sorted by key."""
        with cache_hooks._lock:
            return {key: Tally(*self._keys.get(key, (0, 0))) for key in sorted(self._tracked)}

    def figures(self, *, min_hit_rate: float | None = None, prefix: str | None = None,
                target: float | None = None, alert: float | None = None) -> CacheFigures:
        """The JSON-able record of this block for the report.

        ``min_hit_rate`` (the marker's rate, a fraction 0..1) and ``prefix`` (its prefix)
        are stored for the report; ``target`` and ``alert`` are ini
        ``migsafe_hit_rate_target`` / ``migsafe_hit_rate_alert`` (fractions 0..1). Totals as
        :meth:`totals` (and its ``RuntimeError``); ``by_prefix`` / ``by_command`` become
        ``{name: [hits, misses]}``.
        """
        (hits, misses), slices = self._totals_and_slices()  # (of one moment: other threads may be reading)
        by_prefix = self._grouped(_prefix_of, slices)
        by_command = self._grouped(_command_of, slices)
        return CacheFigures(
            hits=hits,
            misses=misses,
            backend=self.backend,
            by_prefix={name: [t.hits, t.misses] for name, t in by_prefix.items()},
            by_command={name: [t.hits, t.misses] for name, t in by_command.items()},
            min_hit_rate=min_hit_rate,
            min_hit_rate_prefix=prefix,
            source=self.source,
            target=target,
            alert=alert,
        )

    def describe(self) -> str:
        """Totals, then the per-prefix and per-command breakdowns, one line each
        (:func:`describe_figures` of :meth:`figures`)."""
        return describe_figures(self.figures())

    def __repr__(self) -> str:
        hits, misses = self.totals()
        return f"<CacheStats {self.backend} hits={hits} misses={misses} source={self.source}>"


def _prefix_of(command: str, prefix: Any) -> str:
    return key_text(prefix)  # (a slice's group in by_prefix)


def _command_of(command: str, prefix: Any) -> str:
    return command  # (a slice's group in by_command)


def cache_stats(client: Any, *, warmup: Callable[[], Any] | None = None,
                track_keys: Iterable[Any] = (),
                key_patterns: Sequence[str | re.Pattern[str]] | None = None) -> CacheStats:
    """A :class:`CacheStats` to use as ``with cache_stats(client) as stats:``.

    ``client``: a redis-py or fakeredis client (``async with`` for ``redis.asyncio``);
    ``warmup``: a callable run first, not counted; ``track_keys``: keys (``str`` or
    ``bytes``) whose hits and misses ``by_key`` reports; ``key_patterns``: regular
    expressions with a named group ``prefix`` that find a key's prefix for ``by_prefix``
    (default: ini ``migsafe_cache_key_pattern``, see :mod:`pytest_migsafe.cache.keys`).
    Nothing is read until the block starts. Raises
    :class:`~pytest_migsafe.cache.keys.KeyPatternError` for a bad pattern.
    """
    return CacheStats(client, warmup=warmup, track_keys=track_keys, key_patterns=key_patterns)


def format_rate(rate: float | None) -> str:
    """A hit rate (a fraction 0..1) as a percentage with one decimal (``0.696`` ->
    ``"69.6%"``), or ``"n/a"`` for None (nothing was read)."""
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def client_totals(figures: CacheFigures) -> tuple[int, int]:
    """``(hits, misses)`` the client-side accounting saw: the sums of ``by_command`` (each
    counted lookup is in exactly one command and one prefix)."""
    table = figures.by_command or figures.by_prefix
    return sum(pair[0] for pair in table.values()), sum(pair[1] for pair in table.values())


def unseen_reads(figures: CacheFigures) -> tuple[int, int]:
    """``(hits, misses)`` that ``INFO stats`` counted and the client-side accounting did not
    see: reads inside Lua scripts on a real server, SORT's BY/GET lookups, clients in other
    processes (or, on a shared server, other users). ``(0, 0)`` when the totals are the
    client side's own (``source == "client"``). Exact for a block that ended; of figures read
    inside the block while threads of this process still read keys, it also holds the reads
    whose replies were on their way back (the server counted them, the client side had not
    yet: at most one a thread reading)."""
    if figures.source == "client":
        return 0, 0
    seen_hits, seen_misses = client_totals(figures)
    return max(figures.hits - seen_hits, 0), max(figures.misses - seen_misses, 0)


def _source_name(figures: CacheFigures) -> str:
    return {"server": "INFO stats", "client": "client-side accounting"}.get(
        figures.source, "INFO stats and client-side accounting")


def describe_figures(figures: CacheFigures) -> str:
    """Multi-line description of cache figures, for failure messages; every figure names its
    source.

    First line: hits, misses, hit rate (percent), backend and where the totals come from
    (``INFO stats`` or the client-side accounting); then one line per non-empty breakdown,
    ``name hits/reads`` (always the client-side accounting); then, when ``INFO stats``
    counted reads the client side did not see, a line saying how many.
    """
    lines = [(f"hits {figures.hits}, misses {figures.misses}, hit rate {format_rate(figures.hit_rate)} "
              f"({figures.backend}, {_source_name(figures)})")]
    for title, table in (("by prefix", figures.by_prefix), ("by command", figures.by_command)):
        if table:
            parts = [f"{name or repr(name)} {hits}/{hits + misses}" for name, (hits, misses) in table.items()]
            lines.append(f"  {title} (hits/reads, client-side accounting): " + ", ".join(parts))
    hidden_hits, hidden_misses = unseen_reads(figures)
    if hidden_hits or hidden_misses:
        seen = sum(client_totals(figures))
        lines.append(f"  the client-side accounting saw {seen} of the {figures.hits + figures.misses} reads "
                     f"INFO stats counted; {hidden_hits + hidden_misses} ({hidden_hits} hits, {hidden_misses} "
                     "misses) have no key or command: reads inside Lua scripts, SORT BY/GET lookups or "
                     "clients in another process")
    return "\n".join(lines)


def redis_client_of(client: Any) -> Any:
    """The redis-py client to measure for ``client``: itself for a redis-py (or fakeredis)
    client, the client Django's ``RedisCache`` reads with (``cache._cache.get_client()``: one
    server; with several, the one reads go to first) for Django's cache. ``TypeError`` naming
    what is expected for anything else (an object without a ``connection_pool``)."""
    if hasattr(client, "connection_pool"):
        return client
    backend = getattr(client, "_cache", None)  # Django's RedisCache -> its RedisCacheClient
    get_client = getattr(backend, "get_client", None)
    if get_client is not None and type(client).__module__.startswith("django."):
        found = get_client()
        if hasattr(found, "connection_pool"):
            return found
    raise TypeError(f"cache_stats() expects a redis-py client (redis.Redis, redis.asyncio.Redis, a fakeredis "
                    f"client) or Django's cache on RedisCache, got {type(client).__module__}.{type(client).__qualname__}")


class BlocksOfATest:
    """The cache figures of a test that measures with ``cache_stats`` blocks (no test-wide
    client): the reads made while any of its blocks was active, each counted once.

    Each block's figures are taken as it ends (a block entered twice gives two stretches, both
    counted); a block entered while another block on the same server (its ``identity``) was
    active is nested in it and left out, its reads being the outer block's already. (A block
    entered inside another that ends first is left out whole: its reads after the outer
    block's end are not counted.) Blocks join with :meth:`add` before they are entered.
    """

    def __init__(self) -> None:
        self.blocks: list[CacheStats] = []
        self._open: dict[Any, int] = {}  # server identity -> blocks active on it now
        self._nested: set[int] = set()  # id() of the blocks whose current stretch is nested
        self._stretches: list[CacheFigures] = []

    def add(self, stats: CacheStats) -> None:
        """Count ``stats``'s blocks in the test's figures (before it is entered)."""
        stats._blocks = self
        self.blocks.append(stats)

    def started(self, stats: CacheStats) -> None:
        """``stats``'s block began (called by the block)."""
        active = self._open.get(stats.identity, 0)
        if active:
            self._nested.add(id(stats))
        else:
            self._nested.discard(id(stats))
        self._open[stats.identity] = active + 1

    def ended(self, stats: CacheStats) -> None:
        """``stats``'s block ended (called by the block, its end read): its stretch is kept
        unless it was nested."""
        self._open[stats.identity] = max(0, self._open.get(stats.identity, 0) - 1)
        if id(stats) not in self._nested:
            self._stretches.append(stats.figures())

    def figures(self) -> CacheFigures | None:
        """The test's figures (:func:`sum_figures` of the stretches, with those of outer blocks
        still active, live); None when no block was entered."""
        live = [stats.figures() for stats in self.blocks if stats._active and id(stats) not in self._nested]
        return sum_figures([*self._stretches, *live])


def sum_figures(parts: Sequence[CacheFigures]) -> CacheFigures | None:
    """Figures of several blocks added together (None for an empty sequence).

    Hits, misses and the per-prefix / per-command pairs are summed; ``backend`` and
    ``source`` become ``"mixed"`` when the parts disagree. The marker fields
    (``min_hit_rate``, ``target``, ``alert``) are not carried over.
    """
    if not parts:
        return None
    total = CacheFigures(hits=0, misses=0, backend=parts[0].backend, source=parts[0].source)
    for part in parts:
        total.hits += part.hits
        total.misses += part.misses
        if part.backend != total.backend:
            total.backend = "mixed"
        if part.source != total.source:
            total.source = "mixed"
        for mine, theirs in ((total.by_prefix, part.by_prefix), (total.by_command, part.by_command)):
            for name, (hits, misses) in theirs.items():
                pair = mine.setdefault(name, [0, 0])
                pair[0] += hits
                pair[1] += misses
    return total




def hit_rate_failure(figures: CacheFigures | None, rate: float, prefix: str | None = None) -> str | None:
    """The failure message when ``figures`` miss the ``rate`` (None when they meet it).

    ``rate`` is a fraction 0..1. Without ``prefix`` the rate checked is the totals' (``INFO
    stats`` on real Redis). With ``prefix`` it is that prefix's, which only the client-side
    accounting has: when ``INFO stats`` counted reads it did not see, the prefix's rate is
    known only between two bounds (every unseen read a hit of the prefix, or every unseen
    miss a miss of it); the marker passes when the lower bound meets ``rate``, fails as
    below when the upper bound is under it, and otherwise fails as *unmeasured*, giving the
    bounds. A prefix the accounting saw no read of fails with "no cache reads" when every
    read was seen, and as unmeasured when some were not. No figures (no measured client) or
    no reads at all fail with "no cache reads". The message starts with the marker and the
    figure checked, each with its source, then :func:`describe_figures`.
    """
    head = f"min_cache_hit_rate({rate:g}" + (f", prefix={prefix!r}" if prefix else "") + ")"
    if figures is None:
        return (f"{head}: no cache reads: the test used no Redis client migsafe measures "
                "(use the migsafe_redis fixture, or measure your client, or Django's cache, with "
                "cache_stats: `with cache_stats(django.core.cache.cache):`)")
    details = describe_figures(figures)
    if prefix is None:
        actual = figures.hit_rate
        if actual is None:
            return f"{head}: no cache reads during the test ({_source_name(figures)}: 0 hits, 0 misses)\n{details}"
        if actual < rate:
            return (f"{head}: hit rate {format_rate(actual)} ({figures.hits} hits, {figures.misses} misses, "
                    f"{_source_name(figures)}) is below {format_rate(rate)}\n{details}")
        return None
    hits, misses = figures.by_prefix.get(prefix, (0, 0))
    hidden_hits, hidden_misses = unseen_reads(figures)
    where = "client-side accounting"
    if hits + misses == 0:
        if hidden_hits + hidden_misses == 0:
            return (f"{head}: no cache reads of keys with prefix {prefix!r} during the test "
                    f"(the {where} saw every read and none had that prefix)\n{details}")
        return (f"{head}: the hit rate of prefix {prefix!r} is unmeasured: only the {where} has per-prefix "
                f"figures and it saw none of that prefix, while INFO stats counted "
                f"{hidden_hits + hidden_misses} reads it did not see\n{details}")
    low = hits / (hits + misses + hidden_misses)
    high = (hits + hidden_hits) / (hits + misses + hidden_hits)
    if low >= rate:
        return None
    measured = f"{hits} hits, {misses} misses, {where}"
    if high < rate:
        actual = hits / (hits + misses)
        extra = (f"; counting the {hidden_hits + hidden_misses} reads it did not see, at most {format_rate(high)}"
                 if hidden_hits + hidden_misses else "")
        return (f"{head}: hit rate of prefix {prefix!r} {format_rate(actual)} ({measured}{extra}) is below "
                f"{format_rate(rate)}\n{details}")
    return (f"{head}: the hit rate of prefix {prefix!r} is unmeasured: between {format_rate(low)} and "
            f"{format_rate(high)} ({measured}, plus {hidden_hits + hidden_misses} reads INFO stats counted "
            f"that it did not see), and {format_rate(rate)} lies between\n{details}")
