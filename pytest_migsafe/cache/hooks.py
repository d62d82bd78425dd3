"""Client-side hit/miss accounting: hooks in redis-py and the registry of active listeners.

The hooks wrap redis-py's command paths once per process, for every client class
(``redis.Redis`` and its subclasses such as ``fakeredis.FakeRedis``, and the
``redis.asyncio`` ones):

- ``Redis.execute_command`` (one command),
- ``Pipeline.immediate_execute_command`` (commands sent while WATCHing),
- ``Pipeline._execute_transaction`` / ``Pipeline._execute_pipeline`` (MULTI/EXEC and
  plain pipelines; every reply, errors included, is accounted before any error is raised).

While no listener is active a hook costs one check. A listener (a
:class:`~pytest_migsafe.cache.stats.CacheStats`) receives the reads of every client whose
connection pool points at the same server as its own client (same unix socket, or same
host and port, loopback names treated alike; for fakeredis the same fake server).
Replies that cannot tell a hit from a miss are resolved with a probe Redis does not
count in ``INFO stats``: ``MEMORY USAGE key`` (``EXISTS`` on fakeredis, which keeps no
statistics), sent on the pipeline's own connection or a pooled one.

What a hook counts is one keyspace hit or miss per key a command looks up for reading,
by the rules of :mod:`pytest_migsafe.cache.rules`; it is the client side's view of
``INFO stats`` ``keyspace_hits`` / ``keyspace_misses``, and the source of the per-prefix
and per-command breakdowns. A hook never swallows an error: the command's own exception
is accounted (a ``WRONGTYPE`` reply to a one-key read is a hit, as Redis counts it) and
re-raised.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pytest_migsafe.cache.rules import (
    RULES,
    VALUE,
    command_name,
    is_set_with_get,
    judge,
    judge_error,
    rule_for,
)

Entry = tuple[str, Any, "bool | None"]  # (command, key, hit / miss / unknown)


class Listener(Protocol):
    """What the hooks feed: a server identity and a sink for hits and misses.

    ``identity`` is the tuple :func:`pool_identity` gives for the listener's own client;
    the hooks deliver the reads of every client whose pool has the same identity.
    """

    identity: tuple[Any, ...]

    def add(self, command: str, key: Any, hit: bool) -> None:
        """Count one lookup: ``command`` (upper-case name, e.g. ``"GET"``) read ``key``
        (``bytes`` or ``str`` as the caller passed it); ``hit`` True for a keyspace hit,
        False for a keyspace miss. Called under the registry lock; must not raise."""


_lock = threading.Lock()
_listeners: tuple[Listener, ...] = ()
_generation = 0  # bumped on every start/stop, so per-pool listener caches know they are stale
_POOL_CACHE = "_migsafe_listeners"  # attribute on a pool: (generation, listeners, is_fakeredis)
_identities: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], bool]] = weakref.WeakKeyDictionary()
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def start(listener: Listener) -> None:
    """Feed ``listener`` from now on (installs the hooks on first use, see :func:`install`).

    Raises ``ImportError`` when redis-py is not installed.
    """
    global _listeners, _generation
    install()
    with _lock:
        _listeners = (*_listeners, listener)
        _generation += 1


def stop(listener: Listener) -> None:
    """Stop feeding ``listener`` (a listener that was not started is ignored)."""
    global _listeners, _generation
    with _lock:
        _listeners = tuple(item for item in _listeners if item is not listener)
        _generation += 1


def is_active() -> bool:
    """True while at least one listener is active (the hooks then account every read)."""
    return bool(_listeners)


# -- which server a pool talks to ----------------------------------------------------
def pool_identity(pool: Any) -> tuple[tuple[Any, ...], bool]:
    """``(identity, is_fakeredis)`` of a redis-py connection pool; cached per pool.

    ``identity`` names the server, not the client: ``("unix", real path of the socket)``,
    ``("tcp", host, port)`` with every loopback name (``localhost``, ``127.0.0.1``,
    ``::1``, ``ip6-localhost``) spelled ``"loopback"`` and the port 6379 by default, or
    ``("fakeredis-server", id(server))`` for a fakeredis pool given a server; a fakeredis
    pool's identity is prefixed with ``"fakeredis"``. ``is_fakeredis`` is True when the
    pool's connection class comes from the ``fakeredis`` package. Never raises.
    """
    try:
        return _identities[pool]
    except (KeyError, TypeError):
        pass
    fake = getattr(getattr(pool, "connection_class", None), "__module__", "").startswith("fakeredis")
    kwargs = getattr(pool, "connection_kwargs", {}) or {}
    if kwargs.get("server") is not None:
        identity: tuple[Any, ...] = ("fakeredis-server", id(kwargs["server"]))
    elif kwargs.get("path"):
        identity = ("unix", os.path.realpath(str(kwargs["path"])))
    else:
        host = str(kwargs.get("host", "localhost"))
        identity = ("tcp", "loopback" if host in _LOOPBACK else host, int(kwargs.get("port", 6379)))
    if fake:
        identity = ("fakeredis", *identity)
    result = (identity, fake)
    try:
        _identities[pool] = result
    except TypeError:  # an unhashable pool: not cached
        pass
    return result


def client_identity(client: Any) -> tuple[tuple[Any, ...], bool]:
    """``(identity, is_fakeredis)`` of a redis-py client (sync or asyncio): its
    ``connection_pool``'s, see :func:`pool_identity`. ``AttributeError`` for an object
    without a ``connection_pool``."""
    return pool_identity(client.connection_pool)


def _targets(pool: Any) -> tuple[tuple[Listener, ...], bool]:
    """The active listeners on ``pool``'s server, and whether it is fakeredis (cached on the pool)."""
    cached = getattr(pool, _POOL_CACHE, None)
    if cached is not None and cached[0] == _generation:
        return cached[1], cached[2]
    generation = _generation
    identity, fake = pool_identity(pool)
    listeners = tuple(item for item in _listeners if item.identity == identity)
    try:
        setattr(pool, _POOL_CACHE, (generation, listeners, fake))
    except AttributeError:  # a pool with __slots__: not cached
        pass
    return listeners, fake


# -- turning commands and replies into entries -------------------------------------
def _rule(args: Sequence[Any]) -> tuple[str | None, str]:
    """The rule of a command and its upper-case name; ``(None, name)`` when it reads no key."""
    if not args:
        return None, ""
    name = args[0]
    rule = RULES.get(name) if isinstance(name, str) else None
    if rule is not None:
        return rule, name
    name = command_name(name)
    rule = rule_for(name)
    if rule is None and name == "SET" and is_set_with_get(args):
        return VALUE, name
    return rule, name


def entries_for(args: Sequence[Any], reply: Any, rule: str | None = None, name: str = "") -> list[Entry]:
    """The entries of one command and its reply (or the exception it raised).

    ``args`` is the command as redis-py sends it (name first, then arguments). Returns a
    list of ``(command name, key, verdict)`` tuples, one per key the command looks up
    for reading, where the verdict is True (keyspace hit), False (miss) or None (the
    reply cannot tell; a probe decides). A command that reads no key, or an exception
    other than a ``redis.exceptions.ResponseError``, gives ``[]``. ``rule`` and ``name``
    skip the rule lookup when the caller has done it.
    """
    if rule is None:
        rule, name = _rule(args)
        if rule is None:
            return []
    if isinstance(reply, BaseException):
        verdicts = judge_error(rule, args, reply) if _is_response_error(reply) else []
    else:
        verdicts = judge(rule, args, reply)
    return [(name, key, verdict) for key, verdict in verdicts]


def _is_response_error(error: BaseException) -> bool:
    from redis.exceptions import ResponseError

    return isinstance(error, ResponseError)


def _probe_commands(keys: Sequence[Any], fake: bool) -> list[tuple[Any, ...]]:
    return [("EXISTS", key) if fake else ("MEMORY", "USAGE", key) for key in keys]


def _probe_answer(reply: Any, fake: bool) -> bool | None:
    if isinstance(reply, BaseException):
        return None
    return bool(reply) if fake else reply is not None


def _unknown_keys(entries: Iterable[Entry]) -> list[Any]:
    return [key for _, key, verdict in entries if verdict is None]


def _deliver(listeners: Sequence[Listener], entries: Sequence[Entry], answers: Sequence[bool | None]) -> None:
    answer_iter = iter(answers)
    with _lock:
        for name, key, verdict in entries:
            if verdict is None:
                verdict = next(answer_iter, None)
                if verdict is None:
                    continue  # the server would not say: not counted client-side
            for listener in listeners:
                listener.add(name, key, verdict)


# -- sync probes and hooks ---------------------------------------------------------
def _probe_sync(pool: Any, keys: Sequence[Any], fake: bool, connection: Any = None) -> list[bool | None]:
    from redis.exceptions import RedisError, ResponseError

    if not keys:
        return []
    own = connection is None
    try:
        if own:
            connection = _get_connection_sync(pool)
        connection.send_packed_command(connection.pack_commands(_probe_commands(keys, fake)))
        answers: list[bool | None] = []
        for _ in keys:
            try:
                answers.append(_probe_answer(connection.read_response(), fake))
            except ResponseError:
                answers.append(None)
        return answers
    except (RedisError, OSError):
        if connection is not None:
            connection.disconnect()
        return [None] * len(keys)
    finally:
        if own and connection is not None:
            pool.release(connection)


def _get_connection_sync(pool: Any) -> Any:
    try:
        return pool.get_connection()
    except TypeError:  # redis-py < 5.1 wants a command name
        return pool.get_connection("MEMORY")


def probe_exists(client: Any, keys: Sequence[Any]) -> list[bool | None]:
    """Whether each key exists, asked in a way Redis does not count as a hit or a miss.

    Sends ``MEMORY USAGE key`` per key (``EXISTS`` on fakeredis) in one round trip on a
    connection from the client's pool. Returns one entry per key, in order: True (the
    key exists), False (it does not), or None when the server would not say (an error
    reply, or a connection error: ``RedisError`` and ``OSError`` are not raised).
    """
    _, fake = client_identity(client)
    return _probe_sync(client.connection_pool, list(keys), fake)


def _account_sync(pool: Any, entries: list[Entry], connection: Any = None) -> None:
    if not entries:
        return
    listeners, fake = _targets(pool)
    if not listeners:
        return
    unknown = _unknown_keys(entries)
    answers = _probe_sync(pool, unknown, fake, connection) if unknown else []
    _deliver(listeners, entries, answers)


def _hook_execute_command(original: Any) -> Any:
    def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        if not _listeners:
            return original(self, *args, **options)
        name = args[0]
        rule = RULES.get(name)
        if rule is None:
            rule, name = _rule(args)
            if rule is None:
                return original(self, *args, **options)
        try:
            reply = original(self, *args, **options)
        except Exception as exc:
            _account_sync(self.connection_pool, entries_for(args, exc, rule, name))
            raise
        if rule is VALUE:  # the common case (GET), kept lean
            listeners = _targets(self.connection_pool)[0]
            if listeners:
                hit = reply is not None
                with _lock:
                    for listener in listeners:
                        listener.add(name, args[1], hit)
            return reply
        _account_sync(self.connection_pool, entries_for(args, reply, rule, name))
        return reply

    execute_command.__wrapped__ = original  # type: ignore[attr-defined]
    return execute_command


def _hook_immediate(original: Any) -> Any:
    def immediate_execute_command(self: Any, *args: Any, **options: Any) -> Any:
        if not _listeners:
            return original(self, *args, **options)
        rule, name = _rule(args)
        if rule is None:
            return original(self, *args, **options)
        try:
            reply = original(self, *args, **options)
        except Exception as exc:
            _account_sync(self.connection_pool, entries_for(args, exc, rule, name), self.connection)
            raise
        _account_sync(self.connection_pool, entries_for(args, reply, rule, name), self.connection)
        return reply

    immediate_execute_command.__wrapped__ = original  # type: ignore[attr-defined]
    return immediate_execute_command


def _pipeline_entries(commands: Sequence[tuple[Sequence[Any], dict[str, Any]]], replies: Sequence[Any]) -> list[Entry]:
    entries: list[Entry] = []
    for (args, _options), reply in zip(commands, replies):
        entries.extend(entries_for(args, reply))
    return entries


def _hook_batch(original: Any) -> Any:
    def execute_batch(self: Any, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        if not _listeners:
            return original(self, connection, commands, raise_on_error)
        replies = original(self, connection, commands, False)
        _account_sync(self.connection_pool, _pipeline_entries(commands, replies), connection)
        if raise_on_error:
            self.raise_first_error(commands, replies)
        return replies

    execute_batch.__wrapped__ = original  # type: ignore[attr-defined]
    return execute_batch


# -- asyncio probes and hooks ------------------------------------------------------
async def _probe_async(pool: Any, keys: Sequence[Any], fake: bool, connection: Any = None) -> list[bool | None]:
    from redis.exceptions import RedisError, ResponseError

    if not keys:
        return []
    own = connection is None
    try:
        if own:
            try:
                connection = await pool.get_connection()
            except TypeError:
                connection = await pool.get_connection("MEMORY")
        await connection.send_packed_command(connection.pack_commands(_probe_commands(keys, fake)))
        answers: list[bool | None] = []
        for _ in keys:
            try:
                answers.append(_probe_answer(await connection.read_response(), fake))
            except ResponseError:
                answers.append(None)
        return answers
    except (RedisError, OSError):
        if connection is not None:
            await connection.disconnect()
        return [None] * len(keys)
    finally:
        if own and connection is not None:
            await pool.release(connection)


async def _account_async(pool: Any, entries: list[Entry], connection: Any = None) -> None:
    if not entries:
        return
    listeners, fake = _targets(pool)
    if not listeners:
        return
    unknown = _unknown_keys(entries)
    answers = await _probe_async(pool, unknown, fake, connection) if unknown else []
    _deliver(listeners, entries, answers)


def _pinned(client: Any, pinned: bool) -> Any:
    """A WATCHing pipeline's own connection (read after the call that may have opened it)."""
    return client.connection if pinned else None


def _hook_async_command(original: Any, pinned: bool) -> Any:
    """Wrap an asyncio client's ``execute_command`` (or, ``pinned``, a pipeline's immediate one)."""
    async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        if not _listeners:
            return await original(self, *args, **options)
        rule, name = _rule(args)
        if rule is None:
            return await original(self, *args, **options)
        try:
            reply = await original(self, *args, **options)
        except Exception as exc:
            await _account_async(self.connection_pool, entries_for(args, exc, rule, name), _pinned(self, pinned))
            raise
        await _account_async(self.connection_pool, entries_for(args, reply, rule, name), _pinned(self, pinned))
        return reply

    execute_command.__wrapped__ = original  # type: ignore[attr-defined]
    return execute_command


def _hook_async_batch(original: Any) -> Any:
    async def execute_batch(self: Any, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        if not _listeners:
            return await original(self, connection, commands, raise_on_error)
        replies = await original(self, connection, commands, False)
        await _account_async(self.connection_pool, _pipeline_entries(commands, replies), connection)
        if raise_on_error:
            self.raise_first_error(commands, replies)
        return replies

    execute_batch.__wrapped__ = original  # type: ignore[attr-defined]
    return execute_batch


# -- installing --------------------------------------------------------------------
_installed: list[tuple[type, str, Any]] = []


def install() -> None:
    """Wrap redis-py's command paths, sync and asyncio (idempotent; imports redis).

    Wraps ``Redis.execute_command``, ``Pipeline.immediate_execute_command``,
    ``Pipeline._execute_transaction`` and ``Pipeline._execute_pipeline`` of
    ``redis.client`` and ``redis.asyncio.client``. Raises ``ImportError`` without redis-py.
    """
    if _installed:
        return
    import redis.asyncio.client as async_client
    import redis.client as sync_client

    plan = [
        (sync_client.Redis, "execute_command", _hook_execute_command),
        (sync_client.Pipeline, "immediate_execute_command", _hook_immediate),
        (sync_client.Pipeline, "_execute_transaction", _hook_batch),
        (sync_client.Pipeline, "_execute_pipeline", _hook_batch),
        (async_client.Redis, "execute_command", lambda original: _hook_async_command(original, False)),
        (async_client.Pipeline, "immediate_execute_command",
         lambda original: _hook_async_command(original, True)),
        (async_client.Pipeline, "_execute_transaction", _hook_async_batch),
        (async_client.Pipeline, "_execute_pipeline", _hook_async_batch),
    ]
    for cls, name, hook in plan:
        original = cls.__dict__[name]
        _installed.append((cls, name, original))
        setattr(cls, name, hook(original))


def uninstall() -> None:
    """Put redis-py's own methods back (for benchmarks and tests); a no-op when not installed."""
    while _installed:
        cls, name, original = _installed.pop()
        setattr(cls, name, original)
