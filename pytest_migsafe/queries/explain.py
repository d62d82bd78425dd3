"""The index check: EXPLAIN the SELECTs a block ran, flag sequential scans an index would avoid.

Usable without pytest::

    with assert_no_seq_scan():          # raises SeqScanFound, the CREATE INDEX in its message
        run_code()

The plugin's ``@pytest.mark.no_seq_scan`` and ``--migsafe-explain=warn|fail`` run the same
steps after a test's call phase:

1. While the block runs, a :class:`SelectCollector` (a query counter) keeps, for each
   distinct SELECT shape per PostgreSQL database, the first statement's text (and its
   parameters, only with ``--migsafe-capture-params``), and where to reach that database:
   the connection information of the psycopg connection that sent it (password kept in
   memory only, never shown) or, for SQLAlchemy on another driver, the engine's URL.
2. After the block, :class:`Explainer` plans each shape once per session (the plans are
   cached by database and shape): ``EXPLAIN (FORMAT JSON, VERBOSE, GENERIC_PLAN)`` on
   PostgreSQL 16 and later, with the driver's placeholders turned into ``$1..$n``; on 12 to
   15 the same generic plan through ``PREPARE`` and ``EXPLAIN EXECUTE`` with
   ``plan_cache_mode = force_generic_plan`` (no parameter values needed); where the
   server cannot infer a parameter's type, the values of the first run when parameters
   were captured, else the shape is skipped with an :class:`ExplainSkippedWarning`.
   The EXPLAIN runs on a separate connection (with ``pg_stat_statements.track = none``
   when the role may set it, so that nothing lands in ``pg_stat_statements``), in a
   read-only transaction that is rolled back, with ``lock_timeout`` 100 ms and
   ``statement_timeout`` 5 s, under the ``search_path`` of the connection that ran the
   statement: on PostgreSQL 18 and later the server reports it to the client, and the
   collector reads libpq's copy as the statement runs (no statement sent); before 18, only
   when a table the plan reads has a namesake in another schema, a ``SHOW search_path`` on
   the application's connection once the block is over (when it is idle or in a healthy
   transaction; else the shape is a note, never judged on the wrong table); where that connection cannot see a table (created in the
   test's uncommitted transaction), on the connection that ran the statement, inside a
   savepoint rolled back at once. Every command goes through libpq directly
   (``pgconn.exec_``), under no driver hook: no query counter ever sees it.
3. :func:`seq_scan_candidates` reads the plan: a ``Seq Scan`` whose ``Filter`` compares
   one of its table's columns (or an expression of them) with ``=``, ``= ANY``, ``<``,
   ``<=``, ``>``, ``>=`` to a value, a parameter or another table's column, or whose table
   meets another one in a ``Hash Cond`` / ``Merge Cond`` / ``Join Filter`` while the other
   side is restricted (it has a filter or an index condition), is a candidate with those
   index keys (equality keys first, then one range key).
4. A column under casts is settled against the catalogs (``pg_cast``, ``pg_proc``): a
   cast PostgreSQL only relabels (``varchar`` -> ``text``) keeps the column as the key; a
   conversion (``int`` -> ``text``, ``timestamp`` -> ``date``) makes the key an expression,
   served only by an expression index on it; a cast that depends on settings
   (``timestamptz`` -> ``date``), which no index can hold, is no key.
5. A candidate is a :class:`SeqScanFinding` when no valid index of the table starts with
   one of its filter keys (its equality keys, when it has any), or with one of its join
   keys (``pg_index``, ``pg_get_indexdef``); a partial index counts only when each
   conjunct of its predicate is one of the scan's filter. The index to create covers the
   group(s) no index serves, its table named by the server's ``quote_ident`` (qualified
   unless it is the only one of its name, in ``public``). Where an index serves each group,
   the scan is the planner's choice for a small table, not a missing index. The judgement
   reads no row counts, so it holds on a test database's few rows, and it does not know
   which values the application looks up: where ``pg_stats`` shows one value of a key
   shared by half the rows or more, the message says so (the planner reads the whole
   table for that value, index or not). ``min_rows`` skips tables the planner estimates
   smaller (``pg_class.reltuples``, or the planner's estimate when the table was never
   analyzed).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from pytest_migsafe.queries import dispatch
from pytest_migsafe.queries.counter import QueryCounter, ShapeStats
from pytest_migsafe.text import plural, shorten

MODES = ("off", "warn", "fail")
LOCK_TIMEOUT_MS = 100
STATEMENT_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_S = 5
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
_UNSEEN = ("42P01", "42883", "42704", "3F000")  # undefined table, function, object, schema
_NO_TYPE = ("42P18", "42P08")  # indeterminate datatype, ambiguous parameter


class SeqScanFound(AssertionError):
    """A block ran a SELECT whose plan reads a whole table an index would let it skip."""


class SeqScanWarning(UserWarning):
    """A sequential scan an index would avoid, found by ``--migsafe-explain=warn``."""


class ExplainSkippedWarning(UserWarning):
    """A SELECT shape the index check could not plan (why is in the message); shown once per session."""


def parse_mode(text: str) -> str:
    """``off``, ``warn`` or ``fail`` (any case) from an option, ini key or environment; else ValueError."""
    mode = str(text).strip().lower()
    if mode not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {text!r}")
    return mode


# -- what to check ----------------------------------------------------------------------
@dataclass(frozen=True)
class ExplainOptions:
    """What one check looks at: the marker's arguments (see :func:`no_seq_scan_signature`).

    ``tables``: lower-case table names (``name`` or ``schema.name``) to check, None for all;
    ``min_rows``: tables the planner estimates below this many rows are not flagged (rows);
    ``using``: only statements on this database name; ``dsn``: a libpq conninfo or URL to
    EXPLAIN on instead of the connection information the statements came with (not shown
    by ``repr``: it may hold a password).
    """

    tables: frozenset[str] | None = None
    min_rows: int = 0
    using: str | None = None
    dsn: str | None = field(default=None, repr=False)

    def covers(self, schema: str, table: str) -> bool:
        """True when ``schema.table`` is among ``tables`` (or ``tables`` is None)."""
        if self.tables is None:
            return True
        return table.lower() in self.tables or f"{schema}.{table}".lower() in self.tables


def _psycopg_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("psycopg") is not None


def no_seq_scan_signature(*, tables: str | Iterable[str] | None = None, min_rows: int = 0,
                          using: str | None = None, dsn: str | None = None) -> ExplainOptions:
    """no_seq_scan(*, tables=None, min_rows=0, using=None, dsn=None): the checked arguments.

    ``tables``: a table name or a list of them (``orders`` or ``shop.orders``);
    ``min_rows``: a whole number >= 0; ``using``: a database name; ``dsn``: a libpq
    conninfo or ``postgresql://`` URL. Raises ValueError for a wrong value and TypeError
    (from Python) for an unknown or positional argument.
    """
    names: frozenset[str] | None = None
    if tables is not None:
        listed = [tables] if isinstance(tables, str) else list(tables) if isinstance(tables, Iterable) else None
        if not listed or any(not isinstance(t, str) or not t.strip() for t in listed):
            raise ValueError(f"tables= expects a table name or a list of them, got {tables!r}")
        names = frozenset(t.strip().lower() for t in listed)
    if isinstance(min_rows, bool) or not isinstance(min_rows, int) or min_rows < 0:
        raise ValueError(f"min_rows= expects a whole number of rows >= 0, got {min_rows!r}")
    if using is not None and (not isinstance(using, str) or not using):
        raise ValueError(f"using= expects a database name, got {using!r}")
    if dsn is not None and (not isinstance(dsn, str) or not dsn.strip() or (
            ("psycopg" in sys.modules or _psycopg_installed()) and conninfo_of(dsn) is None)):
        # (not echoed: a connection string holds the password)
        raise ValueError("dsn= expects a libpq connection string (host=... dbname=...) or a "
                         "postgresql:// URL of a PostgreSQL database; the one given cannot be read as either")
    return ExplainOptions(tables=names, min_rows=min_rows, using=using, dsn=dsn)


# -- placeholders ---------------------------------------------------------------------
_PLACEHOLDER_RE = re.compile(
    r"""(?P<skip>'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|(?P<tag>\$[A-Za-z_]*\$).*?(?P=tag))"""
    r"""|(?P<pct>%%)|%\((?P<name>[^)]+)\)[sbt]|(?P<pos>%[sbt])|\$(?P<num>\d+)""",
    re.DOTALL,
)


def numbered_placeholders(sql: str) -> tuple[str, int]:
    """``sql`` with psycopg's placeholders (``%s``, ``%b``, ``%t``, ``%(name)s``) as ``$1..$n``.

    Returns ``(text, n)``: ``n`` is the number of parameters (0 for a statement without
    any). A repeated ``%(name)s`` keeps its number, ``%%`` becomes ``%``; ``$n`` already
    there (asyncpg) are counted; text in quotes, dollar quotes and comments is left alone.
    """
    names: dict[str, int] = {}
    count = 0
    highest = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal count, highest
        if m.group("skip") is not None:
            return m.group(0)
        if m.group("pct") is not None:
            return "%"
        if m.group("num") is not None:
            highest = max(highest, int(m.group("num")))
            return m.group(0)
        name = m.group("name")
        if name is not None:
            if name not in names:
                count += 1
                names[name] = count
            return f"${names[name]}"
        count += 1
        return f"${count}"

    text = _PLACEHOLDER_RE.sub(sub, sql)
    return text, max(count, highest)


# -- reading a plan ---------------------------------------------------------------------
@dataclass(frozen=True)
class IndexKey:
    """One key an index would need: a column name as PostgreSQL quotes it (``email``,
    ``"userId"``) or an expression (``lower((email)::text)``); ``equality`` for ``=`` and
    ``= ANY``, False for a range comparison. A column under casts (``(created)::date``) is an
    expression with its ``column`` and ``casts`` set, until the catalogs tell whether each
    cast is a relabelling PostgreSQL sees through (then the key is the column) or a
    conversion (then only an expression index on the same expression serves it)."""

    text: str
    expression: bool = False
    equality: bool = True
    column: str = ""  # for a column under casts: the column (as quoted in the plan) ...
    casts: tuple[str, ...] = ()  # ... and the types it is cast to, innermost first

    @property
    def ddl(self) -> str:
        """The key as written in ``CREATE INDEX``: expressions in parentheses."""
        return f"({self.text})" if self.expression else self.text


@dataclass(frozen=True)
class ScanCandidate:
    """A ``Seq Scan`` an index could replace: by a lookup on its join keys (the other side of
    the join is restricted) or on its filter keys.

    ``schema``/``table``: the relation scanned; ``alias``: its name in the plan;
    ``join_keys`` / ``filter_keys``: the keys of each kind (filter: equality keys, then one
    range key); ``join_condition`` / ``filter``: the plan's conditions they came from, as
    printed ("" when none); ``scan_filter``: the scan's own ``Filter`` ("" when none).
    """

    schema: str
    table: str
    alias: str
    join_keys: tuple[IndexKey, ...] = ()
    filter_keys: tuple[IndexKey, ...] = ()
    join_condition: str = ""
    filter: str = ""
    scan_filter: str = ""  # the scan's whole Filter (what a partial index's predicate must follow from)

    @property
    def keys(self) -> tuple[IndexKey, ...]:
        """Every key: join equality keys, then filter equality keys, then one range key."""
        return _ordered([*self.join_keys, *self.filter_keys])

    @property
    def predicate(self) -> str:
        """The conditions the keys came from, as printed in the plan."""
        return " and ".join(text for text in (self.join_condition, self.filter) if text)


# compiled at the first use, not at import: its identifier classes span \x80-\uffff, whose
# charset sre builds byte by byte (about 10 ms, in every session, for a check that is off
# unless asked for)
_TOKEN_PATTERN = (
    r"""(?P<str>'(?:[^']|'')*')"""
    r"""|(?P<ident>(?:"(?:[^"]|"")*"|[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)"""
    r"""(?:\.(?:"(?:[^"]|"")*"|[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*))*)"""
    r"""|(?P<param>\$\d+)|(?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<cast>::)"""
    r"""|(?P<open>[(\[])|(?P<close>[)\]])|(?P<comma>,)|(?P<op>[+\-*/<>=~!@#%^&|`?]+)|(?P<ws>\s+)|(?P<other>.)"""
)


@functools.cache
def _token_re() -> re.Pattern[str]:
    return re.compile(_TOKEN_PATTERN, re.DOTALL)


_IDENT_PART_RE = re.compile(r'"(?:[^"]|"")*"|[^."]+')
_RANGE_OPS = ("<", "<=", ">", ">=")


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    out = []
    for m in _token_re().finditer(text):
        kind = m.lastgroup or "other"
        if kind != "ws":
            out.append(_Token(kind, m.group(0), m.start(), m.end()))
    return out


def _unquote(part: str) -> str:
    return part[1:-1].replace('""', '"') if part.startswith('"') else part.lower()


def _ident_parts(text: str) -> list[str]:
    return _IDENT_PART_RE.findall(text)


def _matching(tokens: list[_Token], i: int) -> int:
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].kind == "open":
            depth += 1
        elif tokens[j].kind == "close":
            depth -= 1
            if depth == 0:
                return j
    return len(tokens) - 1


def _strip_parens(tokens: list[_Token]) -> list[_Token]:
    while len(tokens) >= 2 and tokens[0].text == "(" and _matching(tokens, 0) == len(tokens) - 1:
        tokens = tokens[1:-1]
    return tokens


def _split_top(tokens: list[_Token], word: str) -> list[list[_Token]]:
    parts: list[list[_Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.kind == "open":
            depth += 1
        elif tok.kind == "close":
            depth -= 1
        if depth == 0 and tok.kind == "ident" and tok.text.upper() == word:
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


def _cast_chain(tokens: list[_Token], source: str) -> tuple[str, tuple[str, ...]] | None:
    """``(column, types)`` when ``tokens`` are one column under one or more ``::type`` casts
    (``((t.created)::date)``: the column as quoted, the types innermost first), else None."""
    types: list[str] = []
    tokens = _strip_parens(tokens)
    while not (len(tokens) == 1 and tokens[0].kind == "ident"):
        depth = 0
        cut = None
        for i, tok in enumerate(tokens):
            if tok.kind == "open":
                depth += 1
            elif tok.kind == "close":
                depth -= 1
            elif depth == 0 and tok.kind == "cast":
                cut = i
        if cut is None or cut == len(tokens) - 1:
            return None
        rest = tokens[cut + 1:]
        if any(t.kind not in ("ident", "open", "close", "num", "comma") for t in rest):
            return None
        types.insert(0, source[rest[0].start:rest[-1].end])
        tokens = _strip_parens(tokens[:cut])
        if not tokens:
            return None
    return (_ident_parts(tokens[0].text)[-1], tuple(types)) if types else None


def _column_refs(tokens: list[_Token]) -> list[tuple[str, str, _Token]]:
    """``(qualifier, column, token)`` of every qualified column reference (functions excluded)."""
    refs = []
    after_cast = False
    for i, tok in enumerate(tokens):
        if tok.kind == "cast":
            after_cast = True
            continue
        if tok.kind != "ident":
            after_cast = False
            continue
        if after_cast:
            continue  # a type name
        if i + 1 < len(tokens) and tokens[i + 1].text == "(":
            continue  # a function name
        parts = _ident_parts(tok.text)
        if len(parts) >= 2:
            refs.append((".".join(_unquote(p) for p in parts[:-1]), parts[-1], tok))
    return refs


def _comparisons(condition: str) -> list[tuple[list[_Token], str, list[_Token], str]]:
    """``(left, operator, right, text)`` of each top-level AND conjunct of the form ``a OP b``."""
    tokens = _strip_parens(_tokens(condition))
    out = []
    for conjunct in _split_top(tokens, "AND"):
        conjunct = _strip_parens(conjunct)
        if not conjunct or len(_split_top(conjunct, "OR")) > 1:
            continue
        depth = 0
        found = None
        for i, tok in enumerate(conjunct):
            if tok.kind == "open":
                depth += 1
            elif tok.kind == "close":
                depth -= 1
            elif depth == 0 and tok.kind == "op" and tok.text in ("=", *_RANGE_OPS):
                if found is not None:
                    found = None
                    break
                found = i
        if found is None or found == 0 or found == len(conjunct) - 1:
            continue
        text = condition[conjunct[0].start:conjunct[-1].end]
        out.append((conjunct[:found], conjunct[found].text, conjunct[found + 1:], text))
    return out


def _key_of(side: list[_Token], source: str, alias: str) -> IndexKey | None:
    """The index key of an expression over ``alias``'s columns only, else None."""
    refs = _column_refs(side)
    if not refs or any(q != alias for q, _, _ in refs):
        return None
    bare = _strip_parens(side)
    if len(bare) == 1 and bare[0].kind == "ident":
        return IndexKey(_ident_parts(bare[0].text)[-1])
    chain = _cast_chain(side, source)  # settled against the catalogs by _settle_casts
    side = _strip_parens(side)
    if any(t.kind == "param" or t.text in ("SubPlan", "InitPlan") for t in side):
        return None  # not an expression an index can hold
    start, end = side[0].start, side[-1].end
    pieces, at = [], start
    for _, column, tok in refs:  # the expression with its columns unqualified
        pieces.append(source[at:tok.start])
        pieces.append(column)
        at = tok.end
    pieces.append(source[at:end])
    if chain is not None:
        return IndexKey("".join(pieces), expression=True, column=chain[0], casts=chain[1])
    return IndexKey("".join(pieces), expression=True)


def _keys_from(condition: str, alias: str, *, join: bool) -> list[IndexKey]:
    keys = []
    for left, op, right, _ in _comparisons(condition):
        for mine, other in ((left, right), (right, left)):
            key = _key_of(mine, condition, alias)
            if key is None:
                continue
            other_refs = _column_refs(other)
            if any(q == alias for q, _, _ in other_refs):
                continue  # both sides read this table: no lookup value
            if join and not other_refs:
                continue  # a join key pairs with another table's column
            if other and other[0].kind == "ident" and other[0].text.upper() == "ALL":
                continue
            equality = op == "="
            keys.append(IndexKey(key.text, key.expression, equality, key.column, key.casts))
            break
    return keys


_JOIN_CONDITIONS = ("Hash Cond", "Merge Cond", "Join Filter")
_RESTRICTING = ("Filter", "Index Cond", "Recheck Cond", "TID Cond")


def _restricted(node: Mapping[str, Any]) -> bool:
    if any(node.get(key) for key in _RESTRICTING) or node.get("Node Type") == "Limit":
        return True
    return any(_restricted(child) for child in node.get("Plans", ())
               if child.get("Parent Relationship") not in ("InitPlan", "SubPlan"))


def _ordered(keys: list[IndexKey]) -> tuple[IndexKey, ...]:
    seen: set[str] = set()
    equal: list[IndexKey] = []
    ranged: list[IndexKey] = []
    for key in keys:
        if key.text in seen:
            continue
        seen.add(key.text)
        (equal if key.equality else ranged).append(key)
    return tuple(equal + ranged[:1])


def seq_scan_candidates(plan: Any) -> list[ScanCandidate]:
    """The sequential scans of an ``EXPLAIN (FORMAT JSON, VERBOSE)`` result an index could replace.

    ``plan`` is the JSON document (a list holding one ``{"Plan": ...}``, or that dict, or
    a plan node). A candidate needs an indexable predicate on its table (see the module
    doc, step 3); scans of ``pg_catalog``, ``information_schema`` and ``pg_toast`` are
    left out. Plans without ``VERBOSE`` (unqualified columns) give none. A column under
    casts is an expression key with its ``column`` and ``casts`` (whether PostgreSQL only
    relabels it, ``varchar`` -> ``text``, is for the catalogs to say: the check settles it).
    """
    if isinstance(plan, list):
        plan = plan[0] if plan else {}
    if isinstance(plan, Mapping) and "Plan" in plan:
        plan = plan["Plan"]
    found: list[ScanCandidate] = []

    def walk(node: Mapping[str, Any], joins: list[tuple[str, bool]]) -> None:
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name"):
            schema = str(node.get("Schema") or "public")
            if schema not in _SYSTEM_SCHEMAS and not schema.startswith("pg_temp"):
                alias = str(node.get("Alias") or node["Relation Name"])  # as named, unquoted
                join_keys: list[IndexKey] = []
                joined = []
                for condition, other_restricted in joins:
                    if not other_restricted:
                        continue
                    keys = _keys_from(condition, alias, join=True)
                    if keys:
                        join_keys.extend(keys)
                        joined.append(condition)
                filter_keys = _keys_from(str(node["Filter"]), alias, join=False) if node.get("Filter") else []
                if join_keys or filter_keys:
                    found.append(ScanCandidate(
                        schema, str(node["Relation Name"]), alias, _ordered(join_keys), _ordered(filter_keys),
                        " and ".join(joined), str(node["Filter"]) if filter_keys else "",
                        str(node.get("Filter") or "")))
        children = [c for c in node.get("Plans", ()) if isinstance(c, Mapping)]
        conditions = [str(node[key]) for key in _JOIN_CONDITIONS if node.get(key)]
        sides = [c for c in children if c.get("Parent Relationship") in ("Outer", "Inner")]
        for child in children:
            inherited = joins
            if conditions and len(sides) == 2 and any(child is side for side in sides):
                other = sides[1] if child is sides[0] else sides[0]
                inherited = joins + [(cond, _restricted(other)) for cond in conditions]
            walk(child, inherited)

    if isinstance(plan, Mapping):
        walk(plan, [])
    return found


# -- where the statements came from -----------------------------------------------------
class ConnectionSource:
    """How to reach the database a statement ran on: a libpq conninfo (it may hold a
    password: kept in memory only, masked by ``repr``) and, for psycopg, the connection
    itself (weakly: a closed or collected connection is simply not reused)."""

    __slots__ = ("_conninfo", "_ref")

    def __init__(self, conninfo: str, connection: Any = None) -> None:
        self._conninfo = conninfo
        self._ref: Callable[[], Any] | None = None
        if connection is not None:
            try:
                self._ref = weakref.ref(connection)
            except TypeError:
                self._ref = None

    @property
    def conninfo(self) -> str:
        """The libpq connection string (never print it)."""
        return self._conninfo

    def connection(self) -> Any:
        """The sync psycopg connection that ran the statement, if still open, else None."""
        conn = self._ref() if self._ref is not None else None
        psycopg = sys.modules.get("psycopg")
        if conn is None or psycopg is None or not isinstance(conn, psycopg.Connection) or conn.closed:
            return None
        return conn

    def reported_search_path(self) -> str | None:
        """The connection's ``search_path`` as the server last reported it (PostgreSQL 18 and
        later report it with every change; None before 18, or without a psycopg connection).

        Read from libpq's copy: no statement is sent.
        """
        conn = self._ref() if self._ref is not None else None
        try:
            return None if conn is None or conn.closed else conn.info.parameter_status("search_path")
        except Exception:
            return None

    def __repr__(self) -> str:
        from pytest_migsafe.servers.masking import mask_url

        return f"ConnectionSource({mask_url(self._conninfo)!r})"


_LIBPQ_KEYWORDS: frozenset[str] | None = None


def _libpq_keywords() -> frozenset[str]:
    global _LIBPQ_KEYWORDS
    if _LIBPQ_KEYWORDS is None:
        from psycopg import pq

        _LIBPQ_KEYWORDS = frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())
    return _LIBPQ_KEYWORDS


def _shown_conninfo(conninfo: str) -> str:
    """``conninfo`` without its password: ``host=... port=... dbname=...``."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return "a connection string"
    params = conninfo_to_dict(conninfo)
    return " ".join(f"{key}={params[key]}" for key in ("host", "port", "dbname", "user") if params.get(key))


def conninfo_of(obj: Any) -> str | None:
    """A libpq conninfo (password included) for a psycopg connection, a SQLAlchemy
    Engine / Connection / URL on PostgreSQL, or a conninfo / ``postgresql://`` URL string;
    None for anything else (another database, an unreadable connection)."""
    try:
        from psycopg.conninfo import make_conninfo
    except ImportError:
        return None
    psycopg = sys.modules.get("psycopg")
    try:
        if isinstance(obj, str):
            text = obj.strip()
            if "://" in text and "+" in text.split("://", 1)[0]:
                from sqlalchemy.engine import make_url

                return conninfo_of(make_url(text))
            return make_conninfo(text)
        if psycopg is not None and isinstance(obj, (psycopg.Connection, psycopg.AsyncConnection)):
            params = dict(obj.info.get_parameters())
            password = obj.info.password
            if password:
                params["password"] = password
            return make_conninfo("", **params)
        url = getattr(getattr(obj, "engine", obj), "url", obj)
        if not hasattr(url, "get_backend_name") or url.get_backend_name() != "postgresql":
            return None
        keywords = _libpq_keywords()
        params = {"host": url.host, "port": url.port, "user": url.username, "password": url.password,
                  "dbname": url.database}
        for key, value in url.query.items():
            if key in keywords and isinstance(value, str):
                params[key] = value
        return make_conninfo("", **{k: v for k, v in params.items() if v not in (None, "")})
    except Exception:
        return None


def _source_from_stack(frame: FrameType | None) -> ConnectionSource | None:
    """The connection behind the driver hook on the stack (frames of this package only)."""
    psycopg = sys.modules.get("psycopg")
    f = frame
    while f is not None and f.f_code.co_filename.startswith(_PACKAGE_DIR):
        local = f.f_locals
        for name in ("self", "conn", "pipeline"):
            obj = local.get(name)
            module = type(obj).__module__ or ""
            if psycopg is not None and module.startswith("psycopg"):
                conn = obj if isinstance(obj, (psycopg.Connection, psycopg.AsyncConnection)) else \
                    getattr(obj, "connection", None) if hasattr(type(obj), "connection") else getattr(obj, "_conn", None)
                if isinstance(conn, (psycopg.Connection, psycopg.AsyncConnection)):
                    info = conninfo_of(conn)
                    return ConnectionSource(info, conn) if info is not None else None
            elif module.startswith("sqlalchemy") and hasattr(obj, "engine"):
                info = conninfo_of(obj)
                return ConnectionSource(info) if info is not None else None
        f = f.f_back
    return None


# -- collecting the statements ------------------------------------------------------------
@dataclass
class SelectStatement:
    """The first statement of one SELECT shape on one database: its text as sent, its
    parameters (only with ``capture_params``), where to reach the database (None when
    the driver's connection could not be read) and the connection's ``search_path`` when it
    ran (PostgreSQL 18 and later report it to the client; None before, or unknown)."""

    target: str
    shape: str
    sql: str
    params: Any = None
    source: ConnectionSource | None = None
    key: str = ""  # the shape key the counter groups its statements by (dispatch.shape_key)
    search_path: str | None = None  # the connection's as it ran, where the server reports it (18+)


class SelectCollector(QueryCounter):
    """A query counter that also keeps the first statement of each SELECT shape per
    PostgreSQL database (``statements``, in the order first seen) with its connection;
    ``result`` is set by :func:`assert_no_seq_scan` after its check.

    Reading the connection walks the driver hook's few frames once per new shape; other
    statements cost what any counter costs. ``using`` keeps one database (its name).
    """

    def __init__(self, *, using: str | None = None) -> None:
        super().__init__(using=using, track_repeats=False, keep=0)
        self.statements: dict[tuple[str, str], SelectStatement] = {}
        self.result: ExplainResult | None = None
        self._looked_at: set[tuple[str, str]] = set()  # (database, shape key) of every statement seen

    def _add(self, sql: str, shape: str, seconds: float, site: str, target: str,  # type: ignore[override]
             *rest: Any) -> None:
        super()._add(sql, shape, seconds, site, target, *rest)
        seen = (target, shape)  # shape: the shape key (the text itself, for most)
        if seen in self._looked_at or not target.startswith("postgresql://"):
            return
        self._looked_at.add(seen)
        from pytest_migsafe.queries.normalize import statement_kind

        if statement_kind(sql) != "select":
            return
        readable = dispatch.readable_shape(shape, sql)
        key = (target, readable)
        if key in self.statements:
            return
        params = rest[1] if len(rest) > 1 else None
        source = _source_from_stack(sys._getframe(1))
        self.statements[key] = SelectStatement(target, readable, sql, params, source, key=shape,
                                               search_path=source.reported_search_path() if source else None)

    def by_shape(self) -> dict[str, ShapeStats]:
        """The statements counted, by readable shape (every text and database of one shape
        together): ``{shape: ShapeStats}`` with counts and ``{path:line: statements}``."""
        return {stats.shape: stats for stats in self.summary()}


# -- talking to the server ----------------------------------------------------------------
class _SqlError(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class _Link:
    """Commands sent through libpq directly on one psycopg connection: no hook sees them."""

    def __init__(self, conn: Any, *, own: bool) -> None:
        self.conn = conn
        self.own = own
        self.encoding = conn.info.encoding or "utf-8"
        self.version = int(conn.info.server_version)
        self.search_path: str | None = None  # own connection: the search_path to plan under (None: its own)

    def run(self, sql: str, params: list[str] | None = None) -> list[tuple[str | None, ...]]:
        from psycopg import pq

        command = sql.encode(self.encoding)
        if params is None:
            result = self.conn.pgconn.exec_(command)
        else:
            result = self.conn.pgconn.exec_params(command, [p.encode(self.encoding) for p in params])
        if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
            state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
            text = (result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message or b"")
            raise _SqlError(state, text.decode(self.encoding, "replace").strip())
        rows = []
        for row in range(result.ntuples):
            values = []
            for col in range(result.nfields):
                value = result.get_value(row, col)
                values.append(None if value is None else value.decode(self.encoding, "replace"))
            rows.append(tuple(values))
        return rows

    @contextmanager
    def sandbox(self) -> Iterator[None]:
        """A transaction (own connection, read only, under ``search_path`` when set) or a
        savepoint (the application's), rolled back.

        On the application's connection, ``SAVEPOINT``, the ``SET LOCAL`` that stops
        ``pg_stat_statements`` tracking and the final ``RELEASE`` are recorded by
        ``pg_stat_statements`` (as utility statements); nothing else is.
        """
        if self.own:
            self.run("BEGIN READ ONLY")
            if self.search_path is not None:  # the application's, for this transaction only
                self.run("SELECT set_config('search_path', $1, true)", [self.search_path])
        else:
            self.run("SAVEPOINT migsafe_explain")
            try:  # what follows stays out of pg_stat_statements where the role may ask that
                self.run("SET LOCAL pg_stat_statements.track = none")
            except _SqlError:
                self.run("ROLLBACK TO SAVEPOINT migsafe_explain")
        try:
            self.run(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            self.run(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            yield
        finally:
            if self.own:
                self.run("ROLLBACK")
            else:
                self.run("ROLLBACK TO SAVEPOINT migsafe_explain")
                self.run("RELEASE SAVEPOINT migsafe_explain")


# PostgreSQL's keywords it will not take as a bare name (``SELECT word FROM pg_get_keywords()
# WHERE catcode <> 'U'`` on 18): what ``quote_ident()`` quotes. Used only where no server is at hand.
_KEYWORDS = frozenset((
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization", "between",
    "bigint", "binary", "bit", "boolean", "both", "case", "cast", "char", "character", "check", "coalesce",
    "collate", "collation", "column", "concurrently", "constraint", "create", "cross", "current_catalog",
    "current_date", "current_role", "current_schema", "current_time", "current_timestamp", "current_user", "dec",
    "decimal", "default", "deferrable", "desc", "distinct", "do", "else", "end", "except", "exists", "extract",
    "false", "fetch", "float", "for", "foreign", "freeze", "from", "full", "grant", "greatest", "group", "grouping",
    "having", "ilike", "in", "initially", "inner", "inout", "int", "integer", "intersect", "interval", "into", "is",
    "isnull", "join", "json", "json_array", "json_arrayagg", "json_exists", "json_object", "json_objectagg",
    "json_query", "json_scalar", "json_serialize", "json_table", "json_value", "lateral", "leading", "least",
    "left", "like", "limit", "localtime", "localtimestamp", "merge_action", "national", "natural", "nchar", "none",
    "normalize", "not", "notnull", "null", "nullif", "numeric", "offset", "on", "only", "or", "order", "out",
    "outer", "overlaps", "overlay", "placing", "position", "precision", "primary", "real", "references",
    "returning", "right", "row", "select", "session_user", "setof", "similar", "smallint", "some", "substring",
    "symmetric", "system_user", "table", "tablesample", "then", "time", "timestamp", "to", "trailing", "treat",
    "trim", "true", "union", "unique", "user", "using", "values", "varchar", "variadic", "verbose", "when", "where",
    "window", "with", "xmlattributes", "xmlconcat", "xmlelement", "xmlexists", "xmlforest", "xmlnamespaces",
    "xmlparse", "xmlpi", "xmlroot", "xmlserialize", "xmltable",
))


def _quote_ident(name: str) -> str:
    """``name`` as an SQL identifier, quoted as PostgreSQL's ``quote_ident()`` would (the
    server's own is used wherever a server is at hand)."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def _connect(conninfo: str) -> Any:
    """A new connection that pg_stat_statements does not track when the role may ask that."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    options = str(conninfo_to_dict(conninfo).get("options") or "")
    quiet = make_conninfo(conninfo, options=f"{options} -c pg_stat_statements.track=none".strip())
    try:
        return psycopg.connect(quiet, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:  # a role that may not set it: FATAL at connection, no SQLSTATE
        if "pg_stat_statements" not in str(exc):
            raise
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


# -- findings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeqScanFinding:
    """A sequential scan an index would avoid, and the statement that made it.

    ``schema``/``table``: the table; ``keys``: the index keys to create (see
    :class:`IndexKey`); ``predicate``: the plan's filter or join condition, as printed
    (``$n`` are parameters); ``rows``: the planner's estimate of the table's rows
    (``pg_class.reltuples``; None when unknown); ``shape``/``target``: the statement shape
    and ``postgresql://host:port/db`` it ran on; ``runs``: its statements in the block;
    ``call_sites``: ``{path:line: statements}``; ``relation``: the table as written in the
    ``CREATE INDEX`` (quoted by the server's ``quote_ident``; schema-qualified unless it is
    the only table of that name and in ``public``; "" to quote it here); ``common``: the keys
    of which one value holds at least half of the rows, with that share (``pg_stats``).
    """

    schema: str
    table: str
    keys: tuple[IndexKey, ...]
    predicate: str
    rows: float | None
    shape: str
    target: str
    runs: int = 0
    call_sites: Mapping[str, int] = field(default_factory=dict)
    relation: str = ""
    common: tuple[tuple[str, float], ...] = ()

    @property
    def create_index(self) -> str:
        """The statement that creates the missing index: ``CREATE INDEX ON table (keys);``."""
        name = self.relation or (_quote_ident(self.table) if self.schema == "public" else
                                 f"{_quote_ident(self.schema)}.{_quote_ident(self.table)}")
        return f"CREATE INDEX ON {name} ({', '.join(k.ddl for k in self.keys)});"


@dataclass
class ExplainResult:
    """What one check found: ``findings`` (to fail or warn about), ``notes`` (shapes that
    could not be planned, with the reason, each at most once per session), ``explained``
    (shapes planned now) and ``cached`` (shapes whose plan came from the session cache)."""

    findings: list[SeqScanFinding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    explained: int = 0
    cached: int = 0


@dataclass(frozen=True)
class _Facts:
    """What the catalogs say about a flagged table: its rows (planner's estimate), its name as
    written in SQL, and the keys one value of which most rows share (column, share)."""

    rows: float | None
    relation: str
    common: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class _Verdict:
    """A planned shape's candidates that no index serves, with their tables' facts;
    ``portable``: the verdict holds whatever the search_path (it may be cached)."""

    missing: tuple[tuple[ScanCandidate, _Facts], ...]
    portable: bool = True


class _Unplannable(Exception):
    """The shape cannot be planned here; the message says why (a note, not a finding)."""

    def __init__(self, reason: str, *, once: str) -> None:
        super().__init__(reason)
        self.once = once  # what the note is deduplicated by


class Explainer:
    """Plans SELECT shapes once per session and judges their sequential scans.

    ``fallback(target)`` returns a conninfo for a database whose statements came without
    one (the plugin gives the ``migsafe_postgres`` server's when host and port match);
    ``capture_params``: statements carry their parameter values (``--migsafe-capture-params``).
    Thread-safe; one instance per session.
    """

    def __init__(self, *, fallback: Callable[[str], str | None] | None = None,
                 capture_params: bool = False) -> None:
        self.fallback = fallback
        self.capture_params = capture_params
        self._verdicts: dict[tuple[str, str, str | None, str | None], _Verdict] = {}  # (target, shape, search_path, dsn)
        self._noted: set[str] = set()
        self._lock = threading.Lock()
        self._prepared = 0

    def check(self, collector: SelectCollector, options: ExplainOptions | None = None,
              *, fallback: Callable[[str], str | None] | None = None) -> ExplainResult:
        """Plan the collector's SELECT shapes not planned yet and return the findings.

        ``options`` default to checking every table; ``fallback`` overrides the
        instance's for this call. Raises nothing for a shape that cannot be planned: it
        becomes a note (see :class:`ExplainResult`).
        """
        options = options or ExplainOptions()
        result = ExplainResult()
        links: dict[str, _Link | _SqlError | Exception] = {}
        by_shape: dict[str, ShapeStats] | None = None
        try:
            for statement in collector.statements.values():
                if options.using is not None and not dispatch.names_database({options.using}, statement.target):
                    continue
                # (planned where dsn= says, when given: a verdict on another database is not this one's)
                key = (statement.target, statement.shape, statement.search_path, options.dsn)
                with self._lock:
                    verdict = self._verdicts.get(key)
                if verdict is not None:
                    result.cached += 1
                else:
                    try:
                        verdict = self._plan(statement, options, links, fallback or self.fallback)
                    except _Unplannable as exc:
                        self._note(result, str(exc), exc.once)
                        continue
                    except Exception as exc:  # a lost connection, a plan we cannot read: never a finding
                        from pytest_migsafe.servers.masking import mask_text

                        self._note(result, f"cannot EXPLAIN {shorten(statement.shape, 100)} on "
                                           f"{statement.target}: {type(exc).__name__}: "
                                           f"{mask_text(str(exc).strip().splitlines()[0] if str(exc).strip() else '')}",
                                   once=f"explain {statement.target} {statement.shape}")
                        continue
                    if verdict.portable:
                        with self._lock:
                            self._verdicts[key] = verdict
                    result.explained += 1
                for candidate, facts in verdict.missing:
                    rows = facts.rows
                    if not options.covers(candidate.schema, candidate.table):
                        continue
                    if options.min_rows and (rows is None or rows < options.min_rows):
                        continue
                    if by_shape is None:  # the collector's statements by readable shape, once per check
                        by_shape = collector.by_shape()
                    stats = by_shape.get(statement.shape)
                    result.findings.append(SeqScanFinding(
                        candidate.schema, candidate.table, candidate.keys, candidate.predicate, rows,
                        statement.shape, statement.target, stats.count if stats is not None else 0,
                        dict(stats.call_sites) if stats is not None else {}, facts.relation, facts.common))
        finally:
            for link in links.values():
                if isinstance(link, _Link):
                    link.conn.close()
        return result

    def _note(self, result: ExplainResult, text: str, once: str) -> None:
        with self._lock:
            if once in self._noted:
                return
            self._noted.add(once)
        result.notes.append(text)

    # -- one shape ---------------------------------------------------------------------
    def _plan(self, statement: SelectStatement, options: ExplainOptions,
              links: dict[str, _Link | _SqlError | Exception],
              fallback: Callable[[str], str | None] | None) -> _Verdict:
        short = shorten(statement.shape, 100)
        conninfo = options.dsn and conninfo_of(options.dsn)
        if not conninfo and statement.source is not None:
            conninfo = statement.source.conninfo
        if not conninfo and fallback is not None:
            conninfo = fallback(statement.target)
        if not conninfo:
            raise _Unplannable(
                f"cannot reach {statement.target} to EXPLAIN its SELECTs (the driver's connection "
                f"could not be read): pass dsn= to @pytest.mark.no_seq_scan", once=f"reach {statement.target}")
        link = links.get(conninfo)
        if link is None:
            try:
                link = _Link(_connect(conninfo), own=True)
            except Exception as exc:
                link = exc
            links[conninfo] = link
        if not isinstance(link, _Link):
            from pytest_migsafe.servers.masking import mask_text

            where = (f"the dsn= of no_seq_scan ({_shown_conninfo(conninfo)})" if options.dsn
                     else statement.target)
            raise _Unplannable(f"cannot connect to {where} to EXPLAIN its SELECTs: "
                               f"{mask_text(str(link).strip().splitlines()[0] if str(link).strip() else type(link).__name__)}",
                               once=f"connect {where}")
        link.search_path = statement.search_path
        try:
            return self._plan_on(link, statement, resolve_path=True)
        except _SqlError as exc:
            app = statement.source.connection() if statement.source is not None else None
            if exc.sqlstate in _UNSEEN and app is not None:
                try:
                    with _borrowed(app) as borrowed:
                        return self._plan_on(borrowed, statement)
                except _SqlError as again:
                    exc = again
                except _Busy:
                    pass
            raise _Unplannable(f"cannot EXPLAIN {short} on {statement.target}: {exc}",
                               once=f"explain {statement.target} {statement.shape}") from None

    def _plan_on(self, link: _Link, statement: SelectStatement, *, resolve_path: bool = False) -> _Verdict:
        """Plan and judge ``statement`` on ``link``. ``resolve_path`` (the check's own
        connection): when the server did not report the application's search_path (before
        18) and a table the plan reads has a namesake in another schema, read it from the
        application's connection and plan again under it (a verdict that is not cached)."""
        plan = self._explain(link, statement)
        portable = True
        if resolve_path and link.own and statement.search_path is None and _ambiguous(link, plan):
            link.search_path = self._app_search_path(statement)
            plan = self._explain(link, statement)
            portable = False
        candidates = seq_scan_candidates(plan)
        missing: list[tuple[ScanCandidate, _Facts]] = []
        if candidates:
            with link.sandbox():
                for candidate in candidates:
                    settled = _settle_casts(link, candidate)
                    if settled is None:
                        continue
                    facts, leading = _table_facts(link, settled)
                    unserved = _unserved(settled, leading)
                    if unserved is not None:
                        missing.append((unserved, replace(facts, common=_common_values(link, unserved))))
        return _Verdict(tuple(missing), portable)

    @staticmethod
    def _app_search_path(statement: SelectStatement) -> str:
        """``SHOW search_path`` on the application's connection, when it is idle or in a healthy
        transaction (one utility statement, which pg_stat_statements records); else
        :class:`_Unplannable`: better no verdict than one on another schema's table."""
        app = statement.source.connection() if statement.source is not None else None
        why = "its connection could not be read"
        if app is not None:
            try:
                with _borrowed(app) as borrowed:
                    return borrowed.run("SHOW search_path")[0][0] or ""
            except _Busy:
                why = "its connection was busy"
            except _SqlError as exc:
                why = str(exc)
        raise _Unplannable(f"cannot EXPLAIN {shorten(statement.shape, 100)} on {statement.target}: a table it "
                           f"reads has a namesake in another schema and the search_path it ran under is "
                           f"unknown ({why})", once=f"explain {statement.target} {statement.shape}")

    def _explain(self, link: _Link, statement: SelectStatement) -> Any:
        sql = statement.sql.strip().rstrip(";")
        numbered, count = numbered_placeholders(sql)
        short = shorten(statement.shape, 100)
        if count == 0:
            with link.sandbox():
                return json.loads(link.run(f"EXPLAIN (FORMAT JSON, VERBOSE) {numbered}")[0][0] or "[]")
        failure: _SqlError | None = None
        try:
            if link.version >= 160000:
                with link.sandbox():
                    return json.loads(link.run(
                        f"EXPLAIN (FORMAT JSON, VERBOSE, GENERIC_PLAN) {numbered}")[0][0] or "[]")
            if link.version >= 120000:
                return self._generic_by_prepare(link, numbered, count)
        except _SqlError as exc:
            if exc.sqlstate not in _NO_TYPE:
                raise
            failure = exc
        if statement.params is not None:
            import psycopg

            try:
                literal = psycopg.ClientCursor(link.conn).mogrify(statement.sql, statement.params)
            except Exception as exc:
                raise _Unplannable(f"cannot EXPLAIN {short} on {statement.target}: its parameters do not "
                                   f"fit its placeholders ({type(exc).__name__})",
                                   once=f"explain {statement.target} {statement.shape}") from None
            with link.sandbox():
                return json.loads(link.run(f"EXPLAIN (FORMAT JSON, VERBOSE) {literal}")[0][0] or "[]")
        why = (f"the server could not tell a parameter's type ({failure})" if failure is not None
               else f"PostgreSQL {link.version // 10000} plans a statement with placeholders only with values "
                    "(a generic plan needs 12 or later)")
        hint = "" if self.capture_params else "; --migsafe-capture-params lets it use the values of the first run"
        raise _Unplannable(f"cannot EXPLAIN {short} on {statement.target}: {why}{hint}",
                           once=f"explain {statement.target} {statement.shape}")

    def _generic_by_prepare(self, link: _Link, numbered: str, count: int) -> Any:
        with self._lock:
            self._prepared += 1
            name = f"migsafe_explain_{os.getpid()}_{self._prepared}"
        nulls = ", ".join(["NULL"] * count)
        prepared = False
        try:
            with link.sandbox():
                link.run("SET LOCAL plan_cache_mode = force_generic_plan")
                link.run(f"PREPARE {name} AS {numbered}")
                prepared = True
                return json.loads(link.run(f"EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE {name}({nulls})")[0][0] or "[]")
        finally:
            if prepared:
                link.run(f"DEALLOCATE {name}")


class _Busy(Exception):
    """The application's connection is in use or in a state where nothing can be sent."""


@contextmanager
def _borrowed(conn: Any) -> Iterator[_Link]:
    """The application's sync psycopg connection, under its lock, if idle or in a healthy
    transaction and not in pipeline mode; else :class:`_Busy`."""
    from psycopg import pq

    if not conn.lock.acquire(blocking=False):
        raise _Busy()
    try:
        status = conn.pgconn.transaction_status
        if conn.closed or getattr(conn, "_pipeline", None) is not None or status not in (
                pq.TransactionStatus.IDLE, pq.TransactionStatus.INTRANS):
            raise _Busy()
        yield _Link(conn, own=status == pq.TransactionStatus.IDLE)
    finally:
        conn.lock.release()


_OTHER_SCHEMAS = ("AND m.nspname NOT LIKE 'pg\\_%' AND m.nspname <> 'information_schema' "
                  "AND o.relkind IN ('r', 'p', 'v', 'm', 'f')")


def _relation_names(plan: Any) -> set[str]:
    """The names of the tables a plan reads (outside the system schemas)."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, Mapping):
            if node.get("Relation Name") and str(node.get("Schema") or "public") not in _SYSTEM_SCHEMAS:
                names.add(str(node["Relation Name"]))
            for key in ("Plan", "Plans"):
                if key in node:
                    walk(node[key])

    walk(plan)
    return names


def _ambiguous(link: _Link, plan: Any) -> bool:
    """True when a table the plan reads has a namesake in another schema: the search_path
    decides which one a statement means."""
    names = sorted(_relation_names(plan))
    if not names:
        return False
    with link.sandbox():
        return bool(link.run(
            "SELECT 1 FROM pg_class o JOIN pg_namespace m ON m.oid = o.relnamespace "
            f"WHERE o.relname IN (SELECT json_array_elements_text($1::json)) {_OTHER_SCHEMAS} "
            "GROUP BY o.relname HAVING count(*) > 1 LIMIT 1", [json.dumps(names)]))


_CAST_SQL = (
    "SELECT t.oid, s.oid = t.oid OR s.typbasetype = t.oid OR coalesce(k.castmethod = 'b', false), "
    "CASE WHEN t.typtype = 'd' THEN NULL "
    "WHEN k.castmethod = 'f' THEN (SELECT p.provolatile::text FROM pg_proc p WHERE p.oid = k.castfunc) "
    "WHEN k.castmethod = 'i' OR (k.oid IS NULL AND 'S' IN (s.typcategory, t.typcategory)) THEN "
    "CASE WHEN (SELECT o.provolatile FROM pg_proc o WHERE o.oid = s.typoutput) = 'i' "
    "AND (SELECT i.provolatile FROM pg_proc i WHERE i.oid = t.typinput) = 'i' THEN 'i' ELSE 's' END END "
    "FROM pg_type s JOIN pg_type t ON t.oid = to_regtype($2) "
    "LEFT JOIN pg_cast k ON k.castsource = s.oid AND k.casttarget = t.oid WHERE s.oid = $1::oid")


def _cast_kind(link: _Link, schema: str, table: str, column: str, casts: tuple[str, ...]) -> str | None:
    """How PostgreSQL casts ``column`` through ``casts``: ``"relabel"`` when each cast only
    relabels the value (binary-coercible, ``varchar`` -> ``text``, a domain to its base type:
    an index on the column serves it), ``"immutable"`` when an expression index can hold it,
    None when none can (a cast that depends on settings, e.g. ``timestamptz`` -> ``date``) or
    the catalogs cannot tell."""
    rows = link.run(
        "SELECT a.atttypid FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 "
        "AND a.attname = $3 AND a.attnum > 0 AND NOT a.attisdropped", [schema, table, _unquote(column)])
    if not rows or rows[0][0] is None:
        return None
    source, kind = rows[0][0], "relabel"
    for target in casts:
        found = link.run(_CAST_SQL, [source, target])
        if not found or found[0][0] is None:
            return None
        target_oid, relabel, volatility = found[0]
        if relabel == "t" and "(" not in target:  # a typmod is a length coercion, not a relabelling
            pass
        elif volatility == "i":
            kind = "immutable"
        else:
            return None
        source = str(target_oid)
    return kind


def _settle_casts(link: _Link, candidate: ScanCandidate) -> ScanCandidate | None:
    """The candidate with each key under casts settled (see :func:`_cast_kind`): the column
    for a relabelling, the expression for an immutable conversion, left out when no index can
    hold it; None when no key is left."""
    def settle(key: IndexKey) -> IndexKey | None:
        if not key.casts:
            return key
        kind = _cast_kind(link, candidate.schema, candidate.table, key.column, key.casts)
        if kind == "relabel":
            return IndexKey(key.column, equality=key.equality)
        return key if kind == "immutable" else None

    if not any(key.casts for key in (*candidate.join_keys, *candidate.filter_keys)):
        return candidate
    join = _ordered([k for k in map(settle, candidate.join_keys) if k is not None])
    where = _ordered([k for k in map(settle, candidate.filter_keys) if k is not None])
    if not join and not where:
        return None
    return replace(candidate, join_keys=join, filter_keys=where,
                   join_condition=candidate.join_condition if join else "", filter=candidate.filter if where else "")


def _table_facts(link: _Link, candidate: ScanCandidate) -> tuple[_Facts, list[str]]:
    """(the table's facts, first key of each valid index that can serve the candidate: not
    partial, or partial with a predicate its scan's filter states, conjunct by conjunct)."""
    rows = link.run(
        "SELECT c.reltuples::float8, pg_get_indexdef(i.indexrelid, 1, false), pg_get_expr(i.indpred, i.indrelid), "
        "quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
        "CASE WHEN n.nspname = 'public' AND NOT EXISTS (SELECT FROM pg_class o JOIN pg_namespace m "
        f"ON m.oid = o.relnamespace WHERE o.relname = c.relname AND o.oid <> c.oid {_OTHER_SCHEMAS}) "
        "THEN quote_ident(c.relname) ELSE quote_ident(n.nspname) || '.' || quote_ident(c.relname) END "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisvalid "
        "WHERE n.nspname = $1 AND c.relname = $2", [candidate.schema, candidate.table])
    if not rows:
        return _Facts(None, f"{_quote_ident(candidate.schema)}.{_quote_ident(candidate.table)}"), []
    estimate = float(rows[0][0]) if rows[0][0] is not None else -1.0
    leading = [r[1] for r in rows if r[1] is not None and (r[2] is None or _implied(r[2], candidate))]
    if estimate < 0:  # never analyzed: the planner's own estimate from the table's size
        plan = json.loads(link.run(f"EXPLAIN (FORMAT JSON) SELECT * FROM {rows[0][3]}")[0][0] or "[]")
        estimate = float(plan[0]["Plan"]["Plan Rows"]) if plan else -1.0
    return _Facts(estimate if estimate >= 0 else None, str(rows[0][4])), leading


def _conjuncts(text: str) -> set[str]:
    """The top-level AND conjuncts of a condition, each without outer parentheses and spaces."""
    return {"".join(t.text for t in _strip_parens(part))
            for part in _split_top(_strip_parens(_tokens(text)), "AND") if part}


def _unqualified(text: str, alias: str) -> str:
    """``text`` with the columns of ``alias`` unqualified (``t.deleted`` -> ``deleted``)."""
    pieces, at = [], 0
    for qualifier, column, tok in _column_refs(_tokens(text)):
        if qualifier == alias:
            pieces += [text[at:tok.start], column]
            at = tok.end
    return "".join(pieces) + text[at:]


def _implied(predicate: str, candidate: ScanCandidate) -> bool:
    """True when each conjunct of a partial index's predicate is a conjunct of the scan's
    filter (then every row the query wants is in the index); False when that cannot be told."""
    have = _conjuncts(_unqualified(candidate.scan_filter, candidate.alias))
    return bool(have) and _conjuncts(predicate) <= have


def _common_values(link: _Link, candidate: ScanCandidate) -> tuple[tuple[str, float], ...]:
    """The candidate's equality columns one value of which holds at least half of the table's
    rows, with that share (``pg_stats.most_common_freqs``, as of the last ANALYZE)."""
    columns = [key.text for key in candidate.keys if key.equality and not key.expression]
    if not columns:
        return ()
    rows = link.run(
        "SELECT attname, most_common_freqs[1]::float8 FROM pg_stats WHERE schemaname = $1 AND tablename = $2 "
        "AND attname IN (SELECT json_array_elements_text($3::json)) ORDER BY inherited",
        [candidate.schema, candidate.table, json.dumps([_unquote(c) for c in columns])])
    share: dict[str, float] = {}
    for name, freq in rows:
        if name is not None and freq is not None:
            share.setdefault(name, float(freq))
    return tuple((c, share[_unquote(c)]) for c in columns if share.get(_unquote(c), 0.0) >= 0.5)


def _unserved(candidate: ScanCandidate, leading: list[str]) -> ScanCandidate | None:
    """The candidate reduced to its groups of keys (join, filter) that no index starts with,
    or None when an index serves each group: then the scan is the planner's choice."""
    def served(keys: tuple[IndexKey, ...]) -> bool:
        # an index on a range key serves a group only when it has no equality key
        lookups = [key for key in keys if key.equality] or list(keys)
        return any(_same_key(key.text, first) for key in lookups for first in leading)

    join_open = bool(candidate.join_keys) and not served(candidate.join_keys)
    filter_open = bool(candidate.filter_keys) and not served(candidate.filter_keys)
    if not (join_open or filter_open):
        return None
    return replace(candidate, join_keys=candidate.join_keys if join_open else (),
                   filter_keys=candidate.filter_keys if filter_open else (),
                   join_condition=candidate.join_condition if join_open else "",
                   filter=candidate.filter if filter_open else "")


def _same_key(key: str, first: str) -> bool:
    def norm(text: str) -> str:
        text = re.sub(r"\s+", "", text)
        while text.startswith("(") and text.endswith(")"):
            text = text[1:-1]
        return text

    return norm(key) == norm(first)


# -- messages --------------------------------------------------------------------------
def seq_scan_message(what: str, findings: list[SeqScanFinding], *, verbose: bool = False,
                     width: int = 120) -> str:
    """Expected and found first (found: distinct missing indexes), then each missing index: the table, the predicate, the
    ``CREATE INDEX`` to paste and the statement shapes that scanned it with their call sites.

    ``what`` names the check (``no_seq_scan``); shapes are cut to ``width`` characters and
    the list to 10 tables unless ``verbose``.
    """
    head = (f"{what}: expected no sequential scan that an index would avoid, "
            f"{len({(f.schema, f.table, f.keys) for f in findings})} found")
    groups: dict[tuple[str, str, tuple[IndexKey, ...]], list[SeqScanFinding]] = {}
    for finding in findings:
        groups.setdefault((finding.schema, finding.table, finding.keys), []).append(finding)
    ordered = sorted(groups.values(), key=lambda g: (-sum(f.runs for f in g), g[0].table))
    shown = ordered if verbose else ordered[:10]
    lines = [head]
    for group in shown:
        first = group[0]
        rows = f" (~{plural(round(first.rows), 'row')})" if first.rows is not None else ""
        lines.append(f"  Seq Scan on {first.schema}.{first.table}{rows} for {shorten(first.predicate, width)}")
        lines.append(f"    {first.create_index}")
        for column, share in first.common:
            lines.append(f"    {share:.1%} of rows have one value of {column} (pg_stats): "
                         "the index serves only the rarer values")
        seen = set()
        for finding in group:
            if finding.shape in seen:
                continue
            seen.add(finding.shape)
            sites = sorted(finding.call_sites.items(), key=lambda kv: -kv[1])
            where = ", ".join(site for site, _ in sites[:3]) or "?"
            lines.append(f"    {shorten(finding.shape, width)} x{finding.runs} at {where}")
    if len(shown) < len(ordered):
        lines.append(f"  ... and {len(ordered) - len(shown)} more tables (use -v to see all)")
    return "\n".join(lines)


@contextmanager
def assert_no_seq_scan(*, tables: str | Iterable[str] | None = None, min_rows: int = 0,
                       using: str | None = None, dsn: str | None = None,
                       explainer: Explainer | None = None,
                       verbose: bool = False) -> Iterator[SelectCollector]:
    """Fail with :class:`SeqScanFound` when a SELECT the block ran scans a table an index would serve.

    Arguments as :func:`no_seq_scan_signature` (ValueError for a wrong one);
    ``explainer`` shares a plan cache (default: a new one). The EXPLAIN runs after the
    block (see the module doc). Afterwards ``collector.result`` is the
    :class:`ExplainResult`: shapes that could not be planned raise nothing, they are in
    its ``notes``.
    """
    options = no_seq_scan_signature(tables=tables, min_rows=min_rows, using=using, dsn=dsn)
    collector = SelectCollector(using=options.using)
    with collector:
        yield collector
    result = collector.result = (explainer or Explainer()).check(collector, options)
    if result.findings:
        raise SeqScanFound(seq_scan_message("assert_no_seq_scan", result.findings, verbose=verbose))
