"""Client-side hit/miss accounting: hooks in redis-py and fakeredis, and the registry of listeners.

The hooks wrap redis-py's command paths once per process, for every client class
(``redis.Redis`` and its subclasses such as ``fakeredis.FakeRedis``, and the
``redis.asyncio`` ones):

- ``Redis.execute_command`` (one command),
- ``Pipeline.immediate_execute_command`` (commands sent while WATCHing),
- ``Pipeline._execute_transaction`` / ``Pipeline._execute_pipeline`` (MULTI/EXEC and
  plain pipelines; every reply, errors included, is accounted before any error is raised),
- and fakeredis's command dispatch (``_run_command``), for the commands a Lua script or
  function runs (``redis.call`` inside EVAL, EVALSHA, FCALL): there whether each key
  exists is read from the fake database just before the command runs.

While no listener is active a hook costs one check. A listener (a
:class:`~pytest_migsafe.cache.stats.CacheStats`) receives the reads of every client whose
connection pool points at the same server as its own client (same unix socket, or same
host and port, loopback names treated alike; for fakeredis the same fake server).

Which commands read which keys, and how many lookups a key costs on the server's version,
comes from the command table (:mod:`pytest_migsafe.cache.commands`, generated from Redis's
own key specifications and measured with ``INFO stats``); the server's version is asked
once per pool (``INFO server``). Replies that cannot tell a hit from a miss
(:mod:`pytest_migsafe.cache.rules`) are resolved with a probe Redis does not count in
``INFO stats``: ``MEMORY USAGE key`` (``EXISTS`` on fakeredis, which keeps no statistics),
sent on the pipeline's own connection or a pooled one, before the command runs (it may
delete or create a key it reads); in a pipeline or MULTI/EXEC, before the batch for the keys
no earlier command of the batch names (:func:`batch_probes`), after it for the others, and
after it for every read of a pipeline that WATCHes keys (a probe that failed before the batch
would drop its connection, and the WATCH with it).

What the hooks count is the client side's view of ``INFO stats`` ``keyspace_hits`` /
``keyspace_misses``, and the source of the per-prefix and per-command breakdowns. On a real
Redis they cannot see the reads of a Lua script (the server runs it) nor the lookups of
SORT's BY/GET patterns (fakeredis, in-process, shows both: its command dispatch and its SORT
pattern lookup, ``_lookup_key``, are hooked), nor the reads of clients in other processes:
``INFO stats`` counts those, the breakdowns do not. A hook never swallows an error: the command's own exception
is accounted (a ``WRONGTYPE`` reply to a one-key read is a hit, as Redis counts it) and
re-raised.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, cast

from pytest_migsafe.cache import commands as command_table
from pytest_migsafe.cache.rules import ASK_EACH, COUNT, EACH, RULES, SHOWN_OR_ASK, VALUE, judge
from pytest_migsafe.tracebacks import hide_passed_through
from pytest_migsafe.versions import import_if_installed, install_guarded

#: pytest hides this module's wrapper frames in a traceback an error only passed through
#: (:mod:`pytest_migsafe.tracebacks`)
__tracebackhide__ = hide_passed_through

# One lookup of a key for reading, before the server version's counts are applied:
# (the command's Read, the key, True if it existed / False if not / None to be probed,
# the command's number within its batch, for commands that stop at the first missing key)
Entry = tuple[command_table.Read, Any, "bool | None", int]


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


# re-entrant: a finalizer that the garbage collector runs during a hand-over, on the same
# thread, may read a key (it is counted, not hung on the lock)
_lock = threading.RLock()
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


# -- commands that change how reads are counted ---------------------------------------
#: ``CONFIG RESETSTAT`` commands the hooks saw (any client, any server): ``INFO stats``
#: deltas over a stretch in which this moved say nothing (see :func:`stat_resets`)
_resets = 0
# id(client) -> (a weak reference to it, the commands it queued: (args, options)): a client inside
# a MULTI it sent by hand (execute_command("MULTI")), whose commands reply QUEUED until EXEC
Queued = list[tuple[Sequence[Any], dict[str, Any]]]
_by_hand: dict[int, tuple[weakref.ref[Any], Queued]] = {}
_NOTED = frozenset({"MULTI", "EXEC", "DISCARD", "CONFIG", "CONFIG RESETSTAT"})


def stat_resets() -> int:
    """How many ``CONFIG RESETSTAT`` commands the hooks saw while listening: a
    :class:`~pytest_migsafe.cache.stats.CacheStats` whose block saw this move cannot read
    its figures from ``INFO stats`` (the server's counters restarted from zero)."""
    return _resets


def _command_name(args: Sequence[Any]) -> str:
    first = args[0] if args else ""
    if isinstance(first, bytes):
        first = first.decode("latin-1")
    return str.__str__(first).upper() if isinstance(first, str) and len(first) <= 16 else ""


def _note_unplanned(client: Any, args: Sequence[Any]) -> None:
    """A command that reads no key, sent by ``client``'s ``execute_command``: a stats reset or
    a MULTI sent by hand begins, and an EXEC or DISCARD ends, a stretch counted otherwise."""
    global _resets
    name = _command_name(args)
    if name not in _NOTED:
        return
    if name.startswith("CONFIG"):
        rest = name[6:].strip() or (_command_name(args[1:]) if len(args) > 1 else "")
        if rest == "RESETSTAT":
            with _lock:
                _resets += 1
    elif name == "MULTI":
        try:
            _by_hand[id(client)] = (weakref.ref(client), [])
        except TypeError:  # (a client that cannot be weakly referenced: counted as before)
            pass


def _queued_by_hand(client: Any) -> Queued | None:
    """The commands queued so far by ``client`` inside a MULTI it sent by hand, else None."""
    held = _by_hand.get(id(client))
    if held is None:
        return None
    if held[0]() is not client:  # another client at a reused id
        del _by_hand[id(client)]
        return None
    return held[1]


def _exec_entries(client: Any, args: Sequence[Any], reply: Any,
                  known: Sequence[list[bool | None] | None] | None = None) -> list[Entry] | None:
    """The entries of the reads ``client`` queued by hand, once its EXEC (``reply``: the list of
    their replies) or DISCARD ran; None when ``args`` is neither or the client sent no MULTI.
    ``known``: whether each queued read's keys existed before the EXEC, where probed then
    (:func:`batch_probes`: a later queued command may change them)."""
    name = _command_name(args)
    if name not in ("EXEC", "DISCARD"):
        return None
    queued = _queued_by_hand(client)
    if queued is None:
        return None
    del _by_hand[id(client)]
    if name == "DISCARD" or not isinstance(reply, (list, tuple)) or len(reply) != len(queued):
        return []  # discarded, or aborted by a WATCH: nothing was looked up
    plans = [plan_for(command) for command, _ in queued]
    plans = [None if plan is None or plan.read.scripting else plan for plan in plans]
    return _pipeline_entries(plans, reply, known if known is not None else [None] * len(queued))


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


# -- which server version a pool talks to (the table's counts differ between versions) --
_versions: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _fake_version(pool: Any) -> str:
    kwargs = getattr(pool, "connection_kwargs", {}) or {}
    server = kwargs.get("server")
    version = getattr(server, "version", None) or kwargs.get("version") or (7,)
    if isinstance(version, (tuple, list)):
        return ".".join(str(part) for part in (*version, 0)[:2])
    return str(version)


def _remember_version(pool: Any, version: str | None) -> str:
    chosen = command_table.pick_version(version)
    try:
        _versions[pool] = chosen
    except TypeError:
        pass
    return chosen


def _info_version(reply: Any) -> str | None:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    if isinstance(reply, dict):
        value = reply.get("redis_version")
        return str(value) if value is not None else None
    if isinstance(reply, str):
        for line in reply.splitlines():
            if line.startswith("redis_version:"):
                return line.split(":", 1)[1].strip()
    return None


def table_version_sync(pool: Any, fake: bool, connection: Any = None) -> str:
    """The command table's version for ``pool``'s server (``"6.2"``, ``"7.0"``; see
    :func:`pytest_migsafe.cache.commands.pick_version`), asked once per pool: ``INFO server``
    ``redis_version`` on a real server (on ``connection`` if given, else a pooled one), the
    fake server's declared version on fakeredis. A server that refuses ``INFO`` gets the
    newest version. Never raises."""
    try:
        return _versions[pool]
    except (KeyError, TypeError):
        pass
    if fake:
        return _remember_version(pool, _fake_version(pool))
    from redis.exceptions import RedisError

    own = connection is None
    version = None
    try:
        if own:
            connection = _get_connection_sync(pool)
        connection.send_command("INFO", "server")
        version = _info_version(connection.read_response())
    except (RedisError, OSError):
        if connection is not None and own:
            connection.disconnect()
    finally:
        if own and connection is not None:
            pool.release(connection)
    return _remember_version(pool, version)


async def table_version_async(pool: Any, fake: bool, connection: Any = None) -> str:
    """:func:`table_version_sync` for a ``redis.asyncio`` pool."""
    try:
        return _versions[pool]
    except (KeyError, TypeError):
        pass
    if fake:
        return _remember_version(pool, _fake_version(pool))
    from redis.exceptions import RedisError

    own = connection is None
    version = None
    try:
        if own:
            try:
                connection = await pool.get_connection()
            except TypeError:
                connection = await pool.get_connection("INFO")
        await connection.send_command("INFO", "server")
        version = _info_version(await connection.read_response())
    except (RedisError, OSError):
        if connection is not None and own:
            await connection.disconnect()
    finally:
        if own and connection is not None:
            await pool.release(connection)
    return _remember_version(pool, version)


# -- turning commands and replies into entries -------------------------------------
class Plan:
    """What one command reads: its table entry, the whole command as the server sees it
    (name first, a container's subcommand split off), and its reply rule (None: probe)."""

    __slots__ = ("read", "rule", "whole")

    def __init__(self, read: command_table.Read, whole: list[Any]) -> None:
        self.read = read
        self.whole = whole
        self.rule = RULES.get(read.name)


_FAST: dict[str, Plan] = {}  # exact names redis-py sends ("GET") of one-lookup-per-key commands with a reply rule


def _build_fast() -> None:
    for name, read in command_table.reads().items():
        if (name in RULES and "|" not in name and not read.variable and not read.incomplete
                and read.stable == command_table.ONE_EACH):
            _FAST[name] = Plan(read, [name])


def plan_for(args: Sequence[Any]) -> Plan | None:
    """The :class:`Plan` of a command as redis-py's ``execute_command`` gets it (name first),
    or None for a command the table says never reads a key (writes, WATCH, MEMORY USAGE...)
    and for commands it does not know. Scripting commands (EVAL, FCALL...) get a plan that
    counts nothing: their reads happen inside the script. Never raises."""
    if not args:
        return None
    found = command_table.classify(args)
    if found is None:
        return None
    return Plan(found[0], found[1])


_numbers = itertools.count()  # numbers the commands of a batch apart (next() is atomic in CPython)


def entries_for(plan: Plan, reply: Any, known: Sequence[bool | None] | None = None) -> list[Entry]:
    """The entries of one command and its reply (or the exception it raised).

    One entry per key the command looks up for reading, in order: ``(Read, key, verdict,
    command number)`` where the verdict is True (the key existed), False (it did not) or
    None (the reply cannot tell: a probe decides). With a reply rule
    (:data:`pytest_migsafe.cache.rules.RULES`) the reply decides where it can; without one
    every key is probed. An error reply counts as Redis counts it: ``WRONGTYPE`` on a
    one-key read is a hit; an error the generator saw after the lookup (``no such key``,
    ``NOGROUP``) probes the keys; any other error (syntax, arity, ACL) counts nothing, and
    so does an exception that is not a ``redis.exceptions.ResponseError``. ``known``: whether
    each key existed, asked before the command ran (see :func:`probe_first`), used in place
    of a probe after it.
    """
    read, whole = plan.read, plan.whole
    if read.scripting:
        return []
    number = next(_numbers)
    if isinstance(reply, BaseException):
        if not _is_response_error(reply):
            return []
        text = str(reply.args[0]) if reply.args else str(reply)
        keys = command_table.keys_of(read, whole)
        if "WRONGTYPE" in text:
            return [(read, keys[0], True, number)] if len(keys) == 1 else []
        if command_table.error_after_lookup(read, text):
            if known is not None and len(known) == len(keys):
                return [(read, key, verdict, number) for key, verdict in zip(keys, known)]
            return [(read, key, None, number) for key in keys]
        return []
    if plan.rule is not None:
        verdicts = judge(plan.rule, whole, reply)
        if known is not None and len(known) == len(verdicts):  # what a probe before the batch found
            return [(read, key, known[index] if verdict is None else verdict, number)
                    for index, (key, verdict) in enumerate(verdicts)]
        return [(read, key, verdict, number) for key, verdict in verdicts]
    keys = command_table.keys_of(read, whole)
    if known is not None and len(known) == len(keys):
        return [(read, key, verdict, number) for key, verdict in zip(keys, known)]
    return [(read, key, None, number) for key in keys]


def probe_first(plan: Plan) -> bool:
    """True when a command's keys must be probed before it runs: it has no reply rule, so a
    probe decides, and a probe after it would answer for the state it left (PFMERGE creates
    the key it reads, GETDEL deletes it, SDIFFSTORE deletes its destination when that is one
    of its sources and the result is empty), not the one the server looked up. In a pipeline
    see :func:`batch_probes`."""
    return plan.rule is None and not plan.read.scripting


# Commands that may create or delete keys they do not name: a batch's reads after one are
# probed after the batch (see batch_probes)
_BARRIERS = frozenset({"FLUSHDB", "FLUSHALL", "SWAPDB", "SELECT"})


def _named(value: Any) -> Any:
    """A command argument as the server sees it, for comparing keys with arguments."""
    if isinstance(value, str):
        return str.encode(value, "utf-8", "surrogatepass")  # (not a subclass's own encode)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (int, float)):
        return repr(value).encode()  # as redis-py sends it
    return ("object", id(value))  # a type redis-py refuses: never hashed or compared


# Reply rules whose reply may not tell (a verdict None): a probe decides
_MAY_ASK = frozenset({EACH, COUNT, SHOWN_OR_ASK, ASK_EACH})


def _is_barrier(args: Sequence[Any], plan: Plan | None) -> bool:
    return (plan is not None and plan.read.scripting) or _command_name(args) in _BARRIERS


def batch_probes(commands: Sequence[tuple[Sequence[Any], Any]]) -> tuple[list[Plan | None], list[tuple[int, int, Any]]]:
    """Each command's :class:`Plan` (None: reads nothing), and the lookups of a pipeline
    (or MULTI/EXEC) to probe before it runs: ``(command index, key index, key)`` of each key
    that no earlier command of the batch names (nor any script or keyspace-wide command such
    as FLUSHDB runs before it), so the state before the batch is the state the server looked
    up: every key of a command without a reply rule, and each key of a command whose reply
    may not tell (``HGET``, ``SUNION``, ...) that a later command names (or a later
    keyspace-wide command may touch). The others are probed after the batch, which is right
    unless the batch itself changed whether they exist before the read."""
    plans: list[Plan | None] = []
    barriers: list[bool] = []
    last: dict[Any, int] = {}  # each argument -> the index of the last command naming it
    last_barrier = -1
    for index, (args, _options) in enumerate(commands):
        plan = plan_for(args)
        plans.append(plan)
        barriers.append(_is_barrier(args, plan))
        if barriers[-1]:
            last_barrier = index
        for arg in args:
            last[_named(arg)] = index
    wanted: list[tuple[int, int, Any]] = []
    named: set[Any] = set()
    for index, ((args, _options), plan) in enumerate(zip(commands, plans)):
        if plan is not None and not plan.read.scripting:
            first = probe_first(plan)
            if first or plan.rule in _MAY_ASK:
                for position, key in enumerate(command_table.keys_of(plan.read, plan.whole)):
                    name = _named(key)
                    if name not in named and (first or last[name] > index or last_barrier > index):
                        wanted.append((index, position, key))
        if barriers[index]:
            break  # (past a barrier the state before the batch says nothing)
        named.update(_named(arg) for arg in args)
    return plans, wanted


def _known_before(plans: Sequence[Plan | None], wanted: Sequence[tuple[int, int, Any]],
                  answers: Sequence[bool | None]) -> list[list[bool | None] | None]:
    """Per command, whether each of its keys existed before the batch (None: not probed then)."""
    known: list[list[bool | None] | None] = [None] * len(plans)
    for (index, position, _key), answer in zip(wanted, answers):
        plan = plans[index]
        assert plan is not None
        row = known[index]
        if row is None:
            row = known[index] = [None] * len(command_table.keys_of(plan.read, plan.whole))
        row[position] = answer
    return known


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
    return [key for _, key, verdict, _ in entries if verdict is None]


def _needs_version(entries: Iterable[Entry]) -> bool:
    return any(read.stable is None for read, _, _, _ in entries)


def deliver(listeners: Sequence[Listener], entries: Sequence[Entry], answers: Sequence[bool | None],
            version: str | None) -> None:
    """Count ``entries`` for those of ``listeners`` still started: each unknown verdict takes the next of ``answers``
    (a key the probe could not tell is not counted); each key counts the lookups the command
    table gives for ``version`` (existing / missing); after a missing key, a command that
    stops there (XREADGROUP) counts nothing more."""
    answer_iter = iter(answers)
    resolved = []
    for read, key, verdict, number in entries:
        if verdict is None:
            verdict = next(answer_iter, None)
        resolved.append((read, key, verdict, number))
    stopped: set[int] = set()
    with _lock:
        # of ``listeners``, those still started, read under the lock as stop() changes them: one
        # stopped since the hook looked them up counts nothing after its stop() returned
        started = _listeners
        listeners = [listener for listener in listeners if any(listener is one for one in started)]
        for read, key, verdict, number in resolved:
            if verdict is None or number in stopped:
                continue
            counts = read.stable or command_table.counts_for(read, version or command_table.pick_version(None))
            times = counts[0] if verdict else counts[1]
            for _ in range(times):
                for listener in listeners:
                    listener.add(read.label, key, verdict)
            if counts[2] and not verdict:
                stopped.add(number)


# -- fakeredis: the reads of Lua scripts -------------------------------------------------
# While a script command (EVAL, EVALSHA, FCALL...) runs on fakeredis, the listeners of its
# pool and the table version; fakeredis runs the script's redis.call in the caller's
# thread and task, so its command dispatch finds them here.
_script_context: contextvars.ContextVar[tuple[tuple[Listener, ...], str] | None] = \
    contextvars.ContextVar("migsafe_script_context", default=None)


# The SORT (or SORT_RO) fakeredis is running in this context, classified (its form: with
# STORE it counts as a write on Redis 6.2), for its pattern lookups (see _hook_fake_lookup_key)
_SORTS = frozenset({"SORT", "SORT_RO"})
_sort_running: contextvars.ContextVar[tuple[command_table.Read, list[Any]] | None] = \
    contextvars.ContextVar("migsafe_sort_running", default=None)


def _error_text(result: Any) -> str | None:
    if type(result).__name__ == "SimpleError":
        return str(getattr(result, "value", result))
    if isinstance(result, BaseException):
        return str(result)
    return None


def _hook_fake_run_command(original: Any) -> Any:
    """Wrap fakeredis's command dispatch (``_run_command``): a command a script runs while a
    listener watches its server counts like one sent by a client. Whether each key exists
    is read from the fake database just before the command runs (fakeredis has no keyspace
    counters and no probe is needed in-process)."""
    def _run_command(self: Any, func: Any, sig: Any, args: Any, from_script: bool) -> Any:
        context = _script_context.get()
        if context is None:
            return original(self, func, sig, args, from_script)
        name = str(getattr(sig, "name", ""))
        if name.upper() not in _SORTS:
            return _run_watched(self, func, sig, args, from_script, name, context)
        token = _sort_running.set(command_table.classify([name, *args]))  # for its pattern lookups
        try:
            return _run_watched(self, func, sig, args, from_script, name, context)
        finally:
            _sort_running.reset(token)

    def _run_watched(self: Any, func: Any, sig: Any, args: Any, from_script: bool, name: str,
                     context: tuple[tuple[Listener, ...], str]) -> Any:
        if not from_script:  # a client's own command: its hook counts it
            return original(self, func, sig, args, from_script)
        listeners, version = context
        found = command_table.classify([name, *args])
        if found is None or found[0].scripting:
            return original(self, func, sig, args, from_script)
        read, whole = found
        keys = command_table.keys_of(read, whole)
        database = self._db
        existed = [key in database for key in keys]
        result = original(self, func, sig, args, from_script)
        text = _error_text(result)
        if text is not None and "WRONGTYPE" not in text and not command_table.error_after_lookup(read, text):
            return result  # refused before the lookup (syntax, arity)
        number = next(_numbers)
        deliver(listeners, [(read, key, exists, number) for key, exists in zip(keys, existed)], [], version)
        return result

    _run_command.__wrapped__ = original  # type: ignore[attr-defined]
    return _run_command


def _hook_fake_lookup_key(original: Any) -> Any:
    """Wrap fakeredis's SORT pattern lookup (``_lookup_key``, its ``lookupKeyByPattern``):
    each BY or GET pattern key SORT looks up is a keyspace hit or miss on Redis, which the
    client side cannot see; fakeredis, in-process, tells which key and whether it exists. A
    pattern that is ``#`` or has no ``*`` looks nothing up, as in Redis."""
    def _lookup_key(self: Any, key: bytes, pattern: bytes) -> Any:
        context = _script_context.get()
        sort = _sort_running.get()
        if context is None or sort is None or pattern == b"#" or b"*" not in pattern:
            return original(self, key, pattern)
        listeners, version = context
        star = pattern.find(b"*")
        suffix = pattern[star + 1:]
        arrow = suffix.find(b"->", 0, -1)
        looked_up = pattern[:star] + key + (suffix[:arrow] if arrow != -1 else suffix)
        exists = looked_up in self._db
        deliver(listeners, [(sort[0], looked_up, exists, next(_numbers))], [], version)  # counted as the SORT's form
        return original(self, key, pattern)

    _lookup_key.__wrapped__ = original  # type: ignore[attr-defined]
    return _lookup_key


def _fake_sort_class() -> type | None:
    """The fakeredis class with SORT's pattern lookup ``_lookup_key(key, pattern)``, or None."""
    try:
        from fakeredis.commands_mixins.generic_mixin import GenericCommandsMixin
    except ImportError:
        return None
    return GenericCommandsMixin if "_lookup_key" in GenericCommandsMixin.__dict__ else None


def _fake_socket_class() -> type | None:
    """The fakeredis class whose ``_run_command(func, sig, args, from_script)`` every command
    passes through (scripts included), or None in a fakeredis without one."""
    for module_name, class_name in (("fakeredis._socket._base", "BaseFakeSocket"),
                                    ("fakeredis._basefakesocket", "BaseFakeSocket")):
        try:
            module = __import__(module_name, fromlist=[class_name])
        except ImportError:
            continue
        cls = getattr(module, class_name, None)
        if cls is not None and "_run_command" in cls.__dict__:
            return cast(type, cls)
    return None


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
    version = table_version_sync(pool, fake, connection) if _needs_version(entries) else None
    deliver(listeners, entries, answers, version)


def _probe_before_sync(pool: Any, plan: Plan) -> list[bool | None] | None:
    if not probe_first(plan):
        return None
    listeners, fake = _targets(pool)
    if not listeners:
        return None
    return _probe_sync(pool, command_table.keys_of(plan.read, plan.whole), fake)


def _probe_batch_sync(pool: Any, commands: Any, connection: Any, watching: bool) -> tuple[
        list[Plan | None], list[list[bool | None] | None]]:
    """The batch's plans and what its probes before it found (see :func:`batch_probes`), on
    the batch's own connection. Not while the pipeline WATCHes keys: a probe that failed would
    drop the connection (and with it the WATCH) before the batch; those reads are probed after."""
    plans, wanted = batch_probes(commands)
    if watching:
        wanted = []
    listeners, fake = _targets(pool) if wanted else ((), False)
    answers = _probe_sync(pool, [key for _, _, key in wanted], fake, connection) if listeners else []
    return plans, _known_before(plans, wanted if listeners else [], answers)


def _run_script_sync(pool: Any, call: Any, connection: Any = None) -> Any:
    """Run ``call()`` (a script command on ``pool``, or a SORT) with what fakeredis looks up
    inside it watched (the script's commands; SORT's BY/GET pattern keys)."""
    listeners, fake = _targets(pool)
    if not (fake and listeners):
        return call()
    token = _script_context.set((listeners, table_version_sync(pool, fake, connection)))
    try:
        return call()
    finally:
        _script_context.reset(token)


def _hook_execute_command(original: Any) -> Any:
    def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        if not _listeners:
            return original(self, *args, **options)
        if _by_hand and id(self) in _by_hand:
            return _by_hand_sync(self, original, args, options)
        # (a command name of the user's own str class is never hashed: plan_for reads it as text)
        fast = _FAST.get(args[0]) if args and type(args[0]) is str else None
        if fast is not None and fast.rule is VALUE:  # the common case (GET), kept lean
            try:
                reply = original(self, *args, **options)
            except Exception as exc:
                _account_sync(self.connection_pool, entries_for(Plan(fast.read, list(args)), exc))
                raise
            pool = self.connection_pool
            if _targets(pool)[0]:
                hit = reply is not None
                label = fast.read.label
                with _lock:
                    # the listeners started now, read under the lock as stop() changes them:
                    # one stopped since the read above counts nothing after its stop() returned
                    for listener in _targets(pool)[0]:
                        listener.add(label, args[1], hit)
            return reply
        plan = Plan(fast.read, list(args)) if fast is not None else plan_for(args)
        if plan is None:
            reply = original(self, *args, **options)
            _note_unplanned(self, args)
            return reply
        if plan.read.scripting:
            return _run_script_sync(self.connection_pool, functools.partial(original, self, *args, **options))
        known = _probe_before_sync(self.connection_pool, plan)
        try:
            if plan.read.incomplete:  # SORT: its BY/GET pattern lookups, on fakeredis
                reply = _run_script_sync(self.connection_pool, functools.partial(original, self, *args, **options))
            else:
                reply = original(self, *args, **options)
        except Exception as exc:
            _account_sync(self.connection_pool, entries_for(plan, exc, known))
            raise
        _account_sync(self.connection_pool, entries_for(plan, reply, known))
        return reply

    execute_command.__wrapped__ = original  # type: ignore[attr-defined]
    return execute_command


def _by_hand_sync(client: Any, original: Any, args: Sequence[Any], options: dict[str, Any]) -> Any:
    """A command of a client inside a MULTI it sent by hand (see :func:`_by_hand_done`); before
    its EXEC, the queued reads a later queued command may change are probed, on a connection of
    their own (the client's is inside the MULTI, where a probe would be queued too)."""
    queued = _queued_by_hand(client)
    known = None
    if queued and _command_name(args) == "EXEC":
        known = _probe_batch_sync(client.connection_pool, queued, None, False)[1]
    try:
        reply = original(client, *args, **options)
    except Exception:
        _by_hand_failed(client, args)
        raise
    entries = _by_hand_done(client, args, reply, queued, known)
    if entries:
        _account_sync(client.connection_pool, entries)
    return reply


def _by_hand_failed(client: Any, args: Sequence[Any]) -> None:
    """A command inside a MULTI sent by hand raised: an EXEC or DISCARD still ends it."""
    if _command_name(args) in ("EXEC", "DISCARD"):
        _by_hand.pop(id(client), None)


def _by_hand_done(client: Any, args: Sequence[Any], reply: Any, queued: Queued | None,
                  known: Sequence[list[bool | None] | None] | None = None) -> list[Entry]:
    """After a command of a client inside a MULTI it sent by hand (``queued``: the commands
    queued so far): an EXEC gives the entries of the reads queued, from its reply (``known``:
    the probes before it), as a pipeline's are counted; a DISCARD counts nothing; any other
    command that returned (the server queued it: one it refuses replies with an error, which
    redis-py raises) is queued, so that each read meets its own reply in EXEC's, which has one
    for every command queued, writes too. (Its reply, QUEUED, tells nothing, and redis-py's
    reply callbacks may have turned it into something else: ``True`` for EXPIRE.)"""
    if queued is None:
        return []
    if _command_name(args) in ("EXEC", "DISCARD"):
        return _exec_entries(client, args, reply, known) or []
    queued.append((tuple(args), {}))
    return []


def _hook_immediate(original: Any) -> Any:
    def immediate_execute_command(self: Any, *args: Any, **options: Any) -> Any:
        if not _listeners:
            return original(self, *args, **options)
        plan = plan_for(args)
        if plan is None:
            return original(self, *args, **options)
        if plan.read.scripting:
            return _run_script_sync(self.connection_pool, functools.partial(original, self, *args, **options))
        known = None  # a WATCHing pipeline's command: probed after it, on its own connection
        try:
            if plan.read.incomplete:  # SORT: its BY/GET pattern lookups, on fakeredis
                reply = _run_script_sync(self.connection_pool, functools.partial(original, self, *args, **options),
                                         self.connection)
            else:
                reply = original(self, *args, **options)
        except Exception as exc:
            _account_sync(self.connection_pool, entries_for(plan, exc, known), self.connection)
            raise
        _account_sync(self.connection_pool, entries_for(plan, reply, known), self.connection)
        return reply

    immediate_execute_command.__wrapped__ = original  # type: ignore[attr-defined]
    return immediate_execute_command


def _pipeline_entries(plans: Sequence[Plan | None], replies: Sequence[Any],
                      known: Sequence[list[bool | None] | None]) -> list[Entry]:
    entries: list[Entry] = []
    for plan, reply, before in zip(plans, replies, known):
        if plan is not None:
            entries.extend(entries_for(plan, reply, before))
    return entries


def _note_batch(pipeline: Any, commands: Any, plans: Sequence[Plan | None]) -> None:
    """:func:`_note_unplanned` of a batch's stats resets (a MULTI in a batch is its own)."""
    for (args, _options), plan in zip(commands, plans):
        if plan is None and _command_name(args).startswith("CONFIG"):
            _note_unplanned(pipeline, args)


def _hook_batch(original: Any) -> Any:
    def execute_batch(self: Any, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        if not _listeners:
            return original(self, connection, commands, raise_on_error)
        plans, known = _probe_batch_sync(self.connection_pool, commands, connection,
                                         bool(getattr(self, "watching", False)))
        if any(plan is not None and (plan.read.scripting or plan.read.incomplete) for plan in plans):
            replies = _run_script_sync(self.connection_pool,
                                       functools.partial(original, self, connection, commands, False), connection)
        else:
            replies = original(self, connection, commands, False)
        _note_batch(self, commands, plans)
        _account_sync(self.connection_pool, _pipeline_entries(plans, replies, known), connection)
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
    version = await table_version_async(pool, fake, connection) if _needs_version(entries) else None
    deliver(listeners, entries, answers, version)


async def _probe_before_async(pool: Any, plan: Plan) -> list[bool | None] | None:
    if not probe_first(plan):
        return None
    listeners, fake = _targets(pool)
    if not listeners:
        return None
    return await _probe_async(pool, command_table.keys_of(plan.read, plan.whole), fake)


async def _probe_batch_async(pool: Any, commands: Any, connection: Any, watching: bool) -> tuple[
        list[Plan | None], list[list[bool | None] | None]]:
    """:func:`_probe_batch_sync` for an asyncio pipeline."""
    plans, wanted = batch_probes(commands)
    if watching:
        wanted = []
    listeners, fake = _targets(pool) if wanted else ((), False)
    answers = await _probe_async(pool, [key for _, _, key in wanted], fake, connection) if listeners else []
    return plans, _known_before(plans, wanted if listeners else [], answers)


async def _run_script_async(pool: Any, call: Any, connection: Any = None) -> Any:
    listeners, fake = _targets(pool)
    if not (fake and listeners):
        return await call()
    token = _script_context.set((listeners, await table_version_async(pool, fake, connection)))
    try:
        return await call()
    finally:
        _script_context.reset(token)


def _pinned(client: Any, pinned: bool) -> Any:
    """A WATCHing pipeline's own connection (read after the call that may have opened it)."""
    return client.connection if pinned else None


def _hook_async_command(original: Any, pinned: bool) -> Any:
    """Wrap an asyncio client's ``execute_command`` (or, ``pinned``, a pipeline's immediate one)."""
    async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
        if not _listeners:
            return await original(self, *args, **options)
        if not pinned and _by_hand and id(self) in _by_hand:
            queued = _queued_by_hand(self)
            before = None
            if queued and _command_name(args) == "EXEC":  # (see _by_hand_sync)
                before = (await _probe_batch_async(self.connection_pool, queued, None, False))[1]
            try:
                reply = await original(self, *args, **options)
            except Exception:
                _by_hand_failed(self, args)
                raise
            entries = _by_hand_done(self, args, reply, queued, before)
            if entries:
                await _account_async(self.connection_pool, entries)
            return reply
        plan = plan_for(args)
        if plan is None:
            reply = await original(self, *args, **options)
            if not pinned:
                _note_unplanned(self, args)
            return reply
        if plan.read.scripting:
            return await _run_script_async(self.connection_pool, functools.partial(original, self, *args, **options))
        # a WATCHing pipeline's command is probed after it, on its own connection
        known = await _probe_before_async(self.connection_pool, plan) if not pinned else None
        try:
            if plan.read.incomplete:  # SORT: its BY/GET pattern lookups, on fakeredis
                reply = await _run_script_async(self.connection_pool, functools.partial(original, self, *args, **options))
            else:
                reply = await original(self, *args, **options)
        except Exception as exc:
            await _account_async(self.connection_pool, entries_for(plan, exc, known), _pinned(self, pinned))
            raise
        await _account_async(self.connection_pool, entries_for(plan, reply, known), _pinned(self, pinned))
        return reply

    execute_command.__wrapped__ = original  # type: ignore[attr-defined]
    return execute_command


def _hook_async_batch(original: Any) -> Any:
    async def execute_batch(self: Any, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        if not _listeners:
            return await original(self, connection, commands, raise_on_error)
        plans, known = await _probe_batch_async(self.connection_pool, commands, connection,
                                                bool(getattr(self, "watching", False)))
        if any(plan is not None and (plan.read.scripting or plan.read.incomplete) for plan in plans):
            replies = await _run_script_async(self.connection_pool,
                                              functools.partial(original, self, connection, commands, False), connection)
        else:
            replies = await original(self, connection, commands, False)
        _note_batch(self, commands, plans)
        await _account_async(self.connection_pool, _pipeline_entries(plans, replies, known), connection)
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
    ``redis.client`` and ``redis.asyncio.client``, and fakeredis's command and SORT lookup
    paths when it is installed. Raises ``ImportError`` without redis-py; a redis-py or
    fakeredis migsafe cannot hook (older than it supports, a stub in ``sys.modules``) is
    left unhooked and said (:data:`pytest_migsafe.versions.not_measured`), never raised.
    """
    if _installed:
        return
    import redis  # noqa: F401  # (ImportError without redis-py: the callers' contract)

    install_guarded("redis", _install)


def _install() -> bool:
    import redis.asyncio.client as async_client
    import redis.client as sync_client

    _build_fast()
    plan: list[tuple[type, str, Any]] = [
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
    fake: list[tuple[type, str, Any]] = []
    import_if_installed("fakeredis")  # (so that its version is checked before it is hooked)
    install_guarded("fakeredis", _fake_plan, fake)
    # every original read before any is replaced: a class without the method (a stub) leaves all as they are
    wrapped = [(cls, name, cls.__dict__[name], hook) for cls, name, hook in (*plan, *fake)]
    for cls, name, original, hook in wrapped:
        _installed.append((cls, name, original))
        setattr(cls, name, hook(original))
    return True


def _fake_plan(plan: list[tuple[type, str, Any]]) -> bool:
    """Add fakeredis's command and SORT lookup paths to ``plan`` (none when fakeredis is not installed)."""
    fake_socket = _fake_socket_class()
    if fake_socket is not None:
        plan.append((fake_socket, "_run_command", _hook_fake_run_command))
    fake_sort = _fake_sort_class()
    if fake_sort is not None:
        plan.append((fake_sort, "_lookup_key", _hook_fake_lookup_key))
    return bool(plan)


def uninstall() -> None:
    """Put redis-py's own methods back (for benchmarks and tests); a no-op when not installed."""
    while _installed:
        cls, name, original = _installed.pop()
        setattr(cls, name, original)
