"""SQL statement normalization: reduce a statement to its *shape*.

The shape is what stays the same when only the data changes: literals and
bind placeholders of every style become ``?``, ``IN (...)`` / ``ARRAY[...]``
lists and multi-row ``VALUES`` collapse to their distinct item shapes (usually
one), comments and whitespace disappear, keywords are upper case and unquoted
identifiers lower case.  ``NULL``, ``TRUE``, ``FALSE`` and ``DEFAULT`` stay as
written (``x IS NULL`` and ``x = ?`` are different queries); numbers in
``LIMIT``/``OFFSET``/``ORDER BY 1`` become ``?`` like every other literal.

Parser choice: we use sqlglot, a pure-Python parser that reads PostgreSQL,
SQLite and MySQL text and accepts every driver placeholder style (``$1``,
``%s``, ``%(name)s``, ``:name``, ``?``), and whose AST lets us render a readable,
deterministic shape.  pglast (libpg_query) is faster (a fingerprint of a
500-item IN query costs ~0.2 ms) but is a PostgreSQL-only C extension, rejects
``%s``-style placeholders, and its fingerprint is an opaque hash while its
``normalize`` keeps list lengths, so it cannot produce the readable shape we
print in failure messages.  Parsing is slow (about 1-3 ms per statement), so
every public function is cached per distinct SQL text, long literal lists are
collapsed by a cheap regex pass before parsing, and statements the parser
rejects (or that are longer than ``MAX_PARSE_CHARS`` even after that pass)
are normalized by a tokenizer-based fallback instead; nothing here raises.

What a huge text costs is bounded: a text longer than ``MAX_SHAPE_CHARS`` is
shaped by the tokenizer from its first ``SHAPE_PREFIX_CHARS`` characters only
(its shape ends with ``" ..."``), so a 300 kB statement costs about 2 ms, not
the 100 ms of a full pass.  The caches are bounded by bytes as well as entries
(``CACHE_BYTES`` each) and key a text longer than ``DIGEST_KEY_CHARS`` by a
16-byte BLAKE2b digest, so no cache keeps a long SQL text alive.

:func:`statement_spans` splits a string holding several statements the way
the server does (semicolons outside strings, quoted identifiers, dollar quotes
and comments), so that each one can be counted and shaped on its own.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from pytest_migsafe.queries import shape_store

__all__ = [
    "CACHE_BYTES",
    "CACHE_ENTRIES",
    "DIGEST_KEY_CHARS",
    "MAX_PARSE_CHARS",
    "MAX_SHAPE_CHARS",
    "SHAPE_PREFIX_CHARS",
    "CacheInfo",
    "TextCache",
    "clear_caches",
    "is_transaction_control",
    "normalize",
    "statement_kind",
    "statement_spans",
    "tables_read",
    "tables_written",
    "text_key",
    "token_shape",
]

#: Texts longer than this (after long lists have been collapsed) skip the
#: parser and use the tokenizer fallback.
MAX_PARSE_CHARS = 32_768

#: Texts longer than this (in characters) are not read whole: their shape is the
#: tokenizer's shape of their first ``SHAPE_PREFIX_CHARS`` characters followed by
#: ``" ..."``, and they report no tables read (the target of a leading INSERT,
#: UPDATE or DELETE is still reported as written).
MAX_SHAPE_CHARS = 65_536

#: How much of a text longer than ``MAX_SHAPE_CHARS`` its shape is made from.
SHAPE_PREFIX_CHARS = 4_096

#: Texts longer than this (in characters) are cached under a digest of their
#: text instead of the text itself, so that no cache keeps them alive.
DIGEST_KEY_CHARS = 4_096

#: Upper bound of the memory each cache of this module accounts for, in bytes
#: (keys and values as ``sys.getsizeof`` measures them, plus a per-entry overhead).
CACHE_BYTES = 8 * 1024 * 1024

#: Upper bound of the number of entries in each cache of this module.
CACHE_ENTRIES = 65_536

_ENTRY_OVERHEAD = 120  # an OrderedDict node and its links, roughly, in bytes
_MISSING = object()

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[[str], Any])


def _digest(sql: str) -> bytes:
    return hashlib.blake2b(sql.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def text_key(sql: str) -> str | bytes:
    """The cache key of a SQL text: the text itself up to ``DIGEST_KEY_CHARS``
    characters, else its 16-byte BLAKE2b digest (about 1 us per kB to compute)."""
    return sql if len(sql) <= DIGEST_KEY_CHARS else _digest(sql)


def _size(value: Any) -> int:
    """Bytes of ``value`` as accounted by the caches: ``sys.getsizeof``, summed
    through tuples (the values cached here are strings, bools and tuples of them)."""
    if type(value) is tuple:
        return sys.getsizeof(value) + sum(_size(item) for item in value)
    return sys.getsizeof(value)


class CacheInfo(NamedTuple):
    """Statistics of one :class:`TextCache` (``maxsize``/``currsize`` in entries,
    ``maxbytes``/``currbytes`` in bytes)."""

    hits: int
    misses: int
    maxsize: int
    currsize: int
    maxbytes: int
    currbytes: int


class TextCache:
    """Values computed from SQL texts, bounded by entries and by bytes.

    Keys come from :func:`text_key` (the text, or the digest of a long text).
    When a new entry would take the cache over ``max_entries`` or ``max_bytes``,
    the oldest entries are dropped first (first in, first out: a hit costs one
    dict lookup and moves nothing).  Reads need no lock; writes take one.
    """

    def __init__(self, max_entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES) -> None:
        self.data: OrderedDict[str | bytes, Any] = OrderedDict()
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._costs: dict[str | bytes, int] = {}
        self._lock = threading.Lock()

    def put(self, key: str | bytes, value: _T) -> _T:
        """Store ``value`` under ``key``, evicting the oldest entries to stay
        within both bounds; returns ``value``. A value bigger than the whole
        byte budget is not stored."""
        cost = _ENTRY_OVERHEAD + sys.getsizeof(key) + _size(value)
        if cost > self.max_bytes:
            return value
        with self._lock:
            data, costs = self.data, self._costs
            old = costs.pop(key, None)
            if old is not None:
                self.bytes -= old
                data.pop(key, None)
            while data and (self.bytes + cost > self.max_bytes or len(data) >= self.max_entries):
                evicted, _ = data.popitem(last=False)
                self.bytes -= costs.pop(evicted, 0)
            data[key] = value
            costs[key] = cost
            self.bytes += cost
        return value

    def clear(self) -> None:
        """Drop every entry (the hit and miss counts are kept)."""
        with self._lock:
            self.data.clear()
            self._costs.clear()
            self.bytes = 0

    def info(self) -> CacheInfo:
        """Hits, misses, bounds and current size."""
        return CacheInfo(self.hits, self.misses, self.max_entries, len(self.data),
                         self.max_bytes, self.bytes)


def _cached(digest_long: bool = True) -> Callable[[_F], _F]:
    """Cache a one-argument ``str`` function in a :class:`TextCache`.

    A text longer than ``DIGEST_KEY_CHARS`` is cached under its digest, or, with
    ``digest_long=False`` (for functions cheaper than a digest, which only look
    at the first words), not cached at all. ``cache_info``, ``cache_clear`` and
    ``cache`` are exposed on the wrapper."""

    def decorate(func: _F) -> _F:
        cache = TextCache()
        data = cache.data

        @functools.wraps(func)
        def wrapper(sql: str) -> Any:
            if type(sql) is not str:
                sql = _as_text(sql)
            if len(sql) <= DIGEST_KEY_CHARS:
                key: str | bytes = sql
            elif digest_long:
                key = _digest(sql)
            else:
                return func(sql)
            value = data.get(key, _MISSING)
            if value is not _MISSING:
                cache.hits += 1
                return value
            cache.misses += 1
            return cache.put(key, func(sql))

        wrapper.cache_info = cache.info  # type: ignore[attr-defined]
        wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
        wrapper.cache = cache  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


# ---------------------------------------------------------------------------
# Lexical building blocks (shared by the pre-collapse pass, the fallback
# tokenizer and the first-keyword scanners).
# ---------------------------------------------------------------------------

# String literal; backslash escapes are honoured (MySQL, E'' strings), doubled
# quotes too.  An unterminated string runs to the end of the text.
_STR = r"(?:[eEnNbBxX]|[uU]&)?'(?:[^'\\]|\\.|'')*(?:'|\Z)"
_DOLLAR = r"\$(?P<dtag>(?:[^\W\d]\w*)?)\$.*?(?:\$(?P=dtag)\$|\Z)"  # a tag may be any letters (PostgreSQL)
_QIDENT = r"\"(?:[^\"]|\"\")*(?:\"|\Z)|`[^`]*(?:`|\Z)"
_LINE_COMMENT = r"--[^\n]*"
_BLOCK_COMMENT = r"/\*.*?(?:\*/|\Z)"
_NUMBER = r"0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_PLACEHOLDER = r"\$\d+|%\(\w+\)s|%s|\?\d*|(?<![:\w]):[A-Za-z_]\w*"

_SKIP = "|".join((_STR, _DOLLAR, _QIDENT, _LINE_COMMENT, _BLOCK_COMMENT))

# One item of a literal list: a literal or placeholder (optionally negative,
# optionally with a ``::type`` cast) or NULL/TRUE/FALSE/DEFAULT.
_ITEM = (
    r"(?:(?P<kw>\b(?:NULL|TRUE|FALSE|DEFAULT)\b)"
    r"|(?:-\s*)?(?:" + _NUMBER + r")"
    r"|" + _STR.replace("(?:'|\\Z)", "'") + r""
    r"|" + _PLACEHOLDER + r")"
    r"(?P<cast>\s*::\s*[A-Za-z_]\w*(?:\s*\[\s*\])?)?"
)
_ITEM_NOGROUPS = re.sub(r"\(\?P<\w+>", "(?:", _ITEM)
_LIST = r"\(\s*" + _ITEM_NOGROUPS + r"(?:\s*,\s*" + _ITEM_NOGROUPS + r")*\s*\)"

# The three patterns below are compiled when a readable shape is first worked out (sre takes
# about 6 ms to compile them): a session that shows no shape never pays for them.
_PRECOLLAPSE_PATTERN = (
    r"(?P<skip>" + _SKIP + r")"
    r"|(?P<in>\bIN\s*" + _LIST + r")"
    r"|(?P<values>\bVALUES\s*" + _LIST + r"(?:\s*,\s*" + _LIST + r")+)"
    r"|(?P<array>\bARRAY\s*\[\s*"
    + _ITEM_NOGROUPS
    + r"(?:\s*,\s*"
    + _ITEM_NOGROUPS
    + r")*\s*\])"
    # PostgreSQL 16's number forms (1_000_000, 0o17, 0b101, 0x_ff), which the parser and the
    # fallback read as a number and a name: a plain 0, to be shaped as every number is
    r"|(?P<num>(?<![\w$.])(?:0x(?:_?[0-9a-f])+|0o(?:_?[0-7])+|0b(?:_?[01])+"
    r"|\d+(?:_\d+)+(?:\.\d+(?:_\d+)*)?(?:e[+-]?\d+)?)(?![\w$]))"
)


@functools.cache
def _precollapse_re() -> re.Pattern[str]:
    return re.compile(_PRECOLLAPSE_PATTERN, re.IGNORECASE | re.DOTALL)


@functools.cache
def _item_re() -> re.Pattern[str]:
    return re.compile(_ITEM, re.IGNORECASE | re.DOTALL)


@functools.cache
def _row_re() -> re.Pattern[str]:
    return re.compile(_LIST, re.IGNORECASE | re.DOTALL)


_WS_RE = re.compile(r"\s+")


def _item_key(m: re.Match[str]) -> str:
    """Shape of one literal-list item: ``?``, ``NULL``... or ``CAST(? AS type)``."""
    kw = m.group("kw")
    key = kw.upper() if kw else "?"
    cast = m.group("cast")
    if cast:
        # not "?::type": sqlglot lexes "?::" as one (JSON) operator
        key = "CAST(" + key + " AS " + _WS_RE.sub("", cast)[2:].lower() + ")"
    return key


def _item_keys(text: str) -> list[str]:
    """Shapes of the items of a literal list, deduplicated and sorted."""
    return sorted({_item_key(m) for m in _item_re().finditer(text)})


def _precollapse_sub(m: re.Match[str]) -> str:
    kind = m.lastgroup
    text = m.group(0)
    if kind == "in":
        return "IN (" + ", ".join(_item_keys(text[text.index("(") + 1 :])) + ")"
    if kind == "array":
        return "ARRAY[" + ", ".join(_item_keys(text[text.index("[") + 1 :])) + "]"
    if kind == "values":
        rows = {
            "("
            + ", ".join(_item_key(item) for item in _item_re().finditer(row.group(0)))
            + ")"
            for row in _row_re().finditer(text)
        }
        return "VALUES " + ", ".join(sorted(rows))
    if kind == "num":
        return "0"
    return text  # string / comment / quoted identifier: untouched


def _precollapse(sql: str) -> str:
    """Collapse IN/ARRAY/VALUES lists of plain literals and placeholders with
    one regex pass (strings, comments and quoted identifiers are skipped), so
    a 10,000-item IN list does not reach the parser."""
    return _precollapse_re().sub(_precollapse_sub, sql)


_PYFORMAT_RE = re.compile(r"(?P<skip>" + _SKIP + r")|%\(\w+\)s|%s|\?\d+", re.DOTALL)


def _pyformat_to_qmark(sql: str) -> str:
    """Replace ``%s`` / ``%(name)s`` / ``?1`` outside strings and comments
    with ``?`` (for the MySQL/SQLite parsers, which reject them)."""
    return _PYFORMAT_RE.sub(lambda m: m.group(0) if m.lastgroup == "skip" else "?", sql)


# ---------------------------------------------------------------------------
# Tokenizer fallback
# ---------------------------------------------------------------------------

# Leading whitespace is swallowed by each token match (fewer iterations).
_TOKEN_RE = re.compile(
    r"\s*(?:"
    r"(?P<comment>" + _LINE_COMMENT + "|" + _BLOCK_COMMENT + r")"
    r"|(?P<lit>" + _DOLLAR + "|" + _STR + "|" + _NUMBER + r")"
    r"|(?P<qid>" + _QIDENT + r")"
    r"|(?P<ph>" + _PLACEHOLDER + r")"
    r"|(?P<word>[^\W\d]\w*\$?\w*)"
    r"|(?P<op>::|<>|!=|<=|>=|\|\||->>|->|#>>|#>|@>|<@|\S))",
    re.DOTALL,
)

_EXTRA_KEYWORDS = frozenset(
    ["ADD", "BY", "CASCADE", "CAST", "CHECK", "CONFLICT", "DO", "FOREIGN", "GROUP", "IF", "KEY", "LAST", "LOCKED", "NOTHING", "NOWAIT", "NULLS", "OF", "ONLY", "ORDER", "PRIMARY", "RESTRICT", "SHARE", "SKIP", "TO", "ABORT", "ANALYZE", "BEGIN", "CALL", "CHECKPOINT", "CLUSTER", "COMMIT", "CONFLICT", "COPY", "DEALLOCATE", "DISCARD", "DO", "END", "EXCLUDED", "EXPLAIN", "FETCH", "GRANT", "IMMEDIATE", "DEFERRED", "EXCLUSIVE", "LISTEN", "LOCK", "MOVE", "NOTIFY", "NOTHING", "PRAGMA", "PREPARE", "PREPARED", "REINDEX", "RELEASE", "RESET", "REVOKE", "ROLLBACK", "SAVEPOINT", "SHOW", "START", "TRANSACTION", "UNLISTEN", "VACUUM", "WORK"]
)
# The words of sqlglot's tokenizer (``Tokenizer.KEYWORDS``, sqlglot 30.30) that are words,
# written out so that the tokenizer never imports sqlglot (and gives the same shapes whatever
# sqlglot version is installed). Regenerate with:
#   python -c "from sqlglot.tokens import Tokenizer as T; print(sorted({k for k in T.KEYWORDS
#              if k.replace('_', '').isalpha()}))"
_TOKENIZER_KEYWORDS = frozenset([
    "ALL", "ALTER", "ANALYZE", "AND", "ANTI", "ANY", "APPLY", "ARRAY", "AS", "ASC", "ASOF",
    "AUTOINCREMENT", "AUTO_INCREMENT", "BEGIN", "BETWEEN", "BIGDECIMAL", "BIGINT", "BIGNUM",
    "BIGNUMERIC", "BINARY", "BIT", "BLOB", "BOOL", "BOOLEAN", "BPCHAR", "BYTE", "BYTEA", "CACHE",
    "CALL", "CASE", "CHAR", "CHARACTER", "CLOB", "COLLATE", "COLUMN", "COMMENT", "COMMIT", "CONSTRAINT",
    "COPY", "CREATE", "CROSS", "CUBE", "CURRENT_CATALOG", "CURRENT_DATE", "CURRENT_SCHEMA",
    "CURRENT_TIME", "CURRENT_TIMESTAMP", "CURRENT_USER", "DATABASE", "DATE", "DATEMULTIRANGE",
    "DATERANGE", "DATETIME", "DEC", "DECFLOAT", "DECIMAL", "DEFAULT", "DELETE", "DESC", "DESCRIBE",
    "DISTINCT", "DIV", "DOUBLE", "DROP", "ELSE", "END", "ENUM", "ESCAPE", "EXCEPT", "EXECUTE", "EXISTS",
    "EXPLAIN", "FALSE", "FETCH", "FILE", "FILTER", "FIRST", "FIXED", "FLOAT", "FOR", "FORMAT", "FROM",
    "FULL", "FUNCTION", "GEOGRAPHY", "GEOMETRY", "GLOB", "GRANT", "HAVING", "HUGEINT", "ILIKE", "IN",
    "INDEX", "INET", "INNER", "INSERT", "INT", "INTEGER", "INTERSECT", "INTERVAL", "INTO", "IS",
    "ISNULL", "JOIN", "JSON", "JSONB", "KEEP", "KILL", "LATERAL", "LEFT", "LIKE", "LIMIT", "LIST",
    "LOAD", "LOCALTIME", "LOCALTIMESTAMP", "LOCK", "LONG", "LONGBLOB", "LONGTEXT", "LONGVARCHAR", "MAP",
    "MEDIUMBLOB", "MEDIUMINT", "MEDIUMTEXT", "MERGE", "NAMESPACE", "NATURAL", "NCHAR", "NEXT", "NOT",
    "NOTNULL", "NULL", "NULLABLE", "NUMBER", "NUMERIC", "NUMMULTIRANGE", "NUMRANGE", "NVARCHAR",
    "OBJECT", "OFFSET", "ON", "OPERATOR", "OPTIMIZE", "OR", "ORDINALITY", "OUT", "OUTER", "OVER",
    "OVERLAPS", "OVERWRITE", "PARTITION", "PARTITIONED_BY", "PERCENT", "PIVOT", "PRAGMA", "PREPARE",
    "PROCEDURE", "QUALIFY", "RANGE", "REAL", "RECURSIVE", "REF", "REFERENCES", "REGEXP", "RENAME",
    "REPLACE", "RETURNING", "REVOKE", "RIGHT", "RLIKE", "ROLLBACK", "ROLLUP", "ROW", "ROWS", "SCHEMA",
    "SELECT", "SEMI", "SEQUENCE", "SESSION", "SESSION_USER", "SET", "SETTINGS", "SHORT", "SHOW",
    "SMALLINT", "SOME", "STR", "STRAIGHT_JOIN", "STRING", "STRUCT", "TABLE", "TABLESAMPLE", "TEMP",
    "TEMPORARY", "TEXT", "THEN", "TIME", "TIMESTAMP", "TIMESTAMPLTZ", "TIMESTAMPNTZ", "TIMESTAMPTZ",
    "TIMESTAMP_LTZ", "TIMESTAMP_NTZ", "TIMETZ", "TIME_NS", "TINYBLOB", "TINYINT", "TINYTEXT", "TRIGGER",
    "TRUE", "TRUNCATE", "TSMULTIRANGE", "TSRANGE", "TSTZMULTIRANGE", "TSTZRANGE", "UHUGEINT", "UINT",
    "UNCACHE", "UNION", "UNIQUE", "UNKNOWN", "UNNEST", "UNPIVOT", "UPDATE", "USE", "USING", "UUID",
    "VACUUM", "VALUES", "VARBINARY", "VARCHAR", "VARIANT", "VECTOR", "VIEW", "VOLATILE", "WHEN",
    "WHERE", "WINDOW", "WITH", "XOR"
])
_KEYWORDS = _TOKENIZER_KEYWORDS | _EXTRA_KEYWORDS


_VALUE_END = frozenset({"?", ")", "]"})
_LIST_OPENERS = {"(": ")", "[": "]"}


def _fallback_tokens(sql: str) -> list[list[str]]:
    """Tokenize into statements of normalized tokens (literals -> ``?``)."""
    keywords = _KEYWORDS
    statements: list[list[str]] = []
    out: list[str] = []
    append = out.append
    for m in _TOKEN_RE.finditer(sql):
        kind = m.lastgroup
        assert kind is not None
        if kind == "comment":
            continue
        tok = m[kind]
        if kind == "lit" or kind == "ph":
            # a unary minus directly before a number belongs to the literal
            if (
                out
                and out[-1] == "-"
                and tok[:1].isdigit()
                and (len(out) == 1 or not _is_value_end(out[-2], keywords))
            ):
                out.pop()
            append("?")
        elif kind == "word":
            up = tok.upper()
            append(up if up in keywords else tok.lower())
        elif tok == ";":
            if out:
                statements.append(out)
            out = []
            append = out.append
        else:  # quoted identifier, operator, punctuation
            append(tok)
    if out:
        statements.append(out)
    return statements


def _is_value_end(tok: str, keywords: frozenset) -> bool:
    if tok in _VALUE_END or tok[:1] in '"`':
        return True
    return (tok[:1].isalpha() or tok[:1] == "_") and tok not in keywords


_MAX_COLLAPSE_DEPTH = 50


def _bracket_pairs(tokens: Sequence[str]) -> dict[int, int]:
    """Map the index of every balanced ``(``/``[`` to its closing bracket."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, t in enumerate(tokens):
        if t == "(" or t == "[":
            stack.append(i)
        elif (t == ")" or t == "]") and stack:
            j = stack.pop()
            if _LIST_OPENERS[tokens[j]] == t:
                pairs[j] = i
            else:  # mismatched: forget everything still open
                stack.clear()
    return pairs


def _dedupe(groups: list[list[str]]) -> list[list[str]]:
    """Distinct token groups, sorted (list order never matters for a shape)."""
    return [list(g) for g in sorted({tuple(g) for g in groups})]


def _collapse_tokens(
    tokens: Sequence[str],
    pairs: dict[int, int] | None = None,
    lo: int = 0,
    hi: int | None = None,
    depth: int = 0,
) -> list[str]:
    """Collapse ``IN (...)``, ``ARRAY[...]`` and ``VALUES (...), (...)``
    lists in ``tokens[lo:hi]`` to their distinct item shapes (recursively,
    linear time, nesting depth bounded)."""
    if pairs is None:
        pairs = _bracket_pairs(tokens)
    if hi is None:
        hi = len(tokens)
    if depth > _MAX_COLLAPSE_DEPTH:
        return list(tokens[lo:hi])
    out: list[str] = []
    i = lo
    while i < hi:
        t = tokens[i]
        if t in ("IN", "ARRAY") and i + 1 < hi and tokens[i + 1] in ("(", "["):
            end = pairs.get(i + 1, -1)
            if i + 2 < end < hi and tokens[i + 2] not in ("SELECT", "WITH", "VALUES"):
                # split at the commas of this level, jumping over nested brackets
                items: list[list[str]] = []
                a = k = i + 2
                while k < end:
                    if k in pairs:
                        k = pairs[k] + 1
                        continue
                    if tokens[k] == ",":
                        items.append(_collapse_tokens(tokens, pairs, a, k, depth + 1))
                        a = k + 1
                    k += 1
                items.append(_collapse_tokens(tokens, pairs, a, end, depth + 1))
                out.extend((t, tokens[i + 1]))
                for n, item in enumerate(_dedupe(items)):
                    if n:
                        out.append(",")
                    out.extend(item)
                out.append(tokens[end])
                i = end + 1
                continue
        elif t == "VALUES" and i + 1 < hi and tokens[i + 1] == "(":
            rows: list[list[str]] = []
            j = i + 1
            while j < hi and tokens[j] == "(":
                end = pairs.get(j, -1)
                if not j < end < hi:
                    break
                rows.append(
                    ["("]
                    + _collapse_tokens(tokens, pairs, j + 1, end, depth + 1)
                    + [")"]
                )
                j = end + 1
                if j + 1 < hi and tokens[j] == "," and tokens[j + 1] == "(":
                    j += 1
                else:
                    break
            if rows:
                out.append("VALUES")
                for n, row in enumerate(_dedupe(rows)):
                    if n:
                        out.append(",")
                    out.extend(row)
                i = j
                continue
        out.append(t)
        i += 1
    return out


_NO_SPACE_BEFORE = frozenset({",", ")", "]", ".", "::", ";"})
_NO_SPACE_AFTER = frozenset({"(", "[", ".", "::"})


def _render_tokens(tokens: Sequence[str], keywords: frozenset) -> str:
    parts: list[str] = []
    prev = ""
    for t in tokens:
        if (
            parts
            and not (
                t in _NO_SPACE_BEFORE
                or prev in _NO_SPACE_AFTER
                # function call: name(  (but keep "IN (", "VALUES (")
                or (
                    t == "("
                    and prev not in keywords
                    and (prev[:1].isalpha() or prev[:1] == "_")
                )
                or (t == "[" and prev == "ARRAY")
            )
        ):
            parts.append(" ")
        parts.append(t)
        prev = t
    return "".join(parts)


def _fallback_normalize(sql: str) -> str:
    """Tokenizer-based normalization used when the parser cannot help."""
    keywords = _KEYWORDS
    return "; ".join(
        _render_tokens(_collapse_tokens(stmt), keywords)
        for stmt in _fallback_tokens(sql)
    )


# ---------------------------------------------------------------------------
# Parser path (sqlglot, imported lazily: importing it costs ~0.1 s)
# ---------------------------------------------------------------------------

_sqlglot: Any = None


class _DropCommandFallbackWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to parsing as a 'Command'" not in str(record.msg)


def _load_sqlglot() -> Any:
    global _sqlglot
    if _sqlglot is None:
        import sqlglot

        logging.getLogger("sqlglot").addFilter(_DropCommandFallbackWarning())
        _sqlglot = sqlglot
    return _sqlglot


def _parse(sql: str) -> tuple[list[Any], str | None] | None:
    """Parse into sqlglot expressions, trying PostgreSQL, then MySQL and
    SQLite (with ``%s``/``%(name)s`` turned into ``?``).  None when the text
    is too long, unparseable, transaction control, or contains a statement
    sqlglot only understands as a generic ``Command`` or a bare expression."""
    if len(sql) > MAX_PARSE_CHARS or is_transaction_control(sql):
        return None
    try:
        sqlglot = _load_sqlglot()
    except Exception:  # pragma: no cover - sqlglot missing
        return None
    exp = sqlglot.exp
    qmark: str | None = None
    for dialect in ("postgres", "mysql", "sqlite"):
        if dialect == "postgres":
            text = sql
        else:
            if qmark is None:
                qmark = _pyformat_to_qmark(sql)
            text = qmark
        try:
            trees = [t for t in sqlglot.parse(text, read=dialect) if t is not None]
        except Exception:
            continue
        # sqlglot turns what it does not know into a Command, and reads junk
        # such as "FOO BAR" as an aliased column: leave those to the fallback
        if any(isinstance(t, _not_statements(exp)) for t in trees):
            return None
        return trees, dialect
    return None


def _not_statements(exp: Any) -> tuple[type, ...]:
    return (exp.Command, exp.Condition, exp.Alias, exp.Identifier)


_LITERAL_CLASSES = (
    "Literal",
    "Placeholder",
    "Parameter",
    "HexString",
    "BitString",
    "ByteString",
    "National",
    "RawString",
    "UnicodeString",
)


def _literal_types(exp: Any) -> tuple[type, ...]:
    """sqlglot node classes that are literals or bind parameters (tolerating
    classes missing from older sqlglot versions)."""
    return tuple(
        cls for cls in (getattr(exp, name, None) for name in _LITERAL_CLASSES) if cls
    )


def _shape_tree(tree: Any, dialect: str | None) -> str:
    """Rewrite one parsed statement in place into its shape and render it."""
    exp = _sqlglot.exp
    literal = _literal_types(exp)
    replace: list[Any] = []
    lists: list[Any] = []
    for node in tree.dfs(prune=lambda n: isinstance(n, exp.DataType)):
        if (
            isinstance(node, literal)
            or (isinstance(node, exp.Neg)
            and isinstance(node.this, literal))
        ):
            replace.append(node)
        elif isinstance(node, exp.Identifier):
            if not node.quoted and isinstance(node.this, str):
                node.set("this", node.this.lower())
        elif isinstance(node, (exp.In, exp.Array, exp.Values)):
            lists.append(node)
    for node in replace:
        if node is not tree:
            node.replace(exp.Var(this="?"))
    ignore = _sqlglot.ErrorLevel.IGNORE
    for node in reversed(lists):  # innermost first
        items = node.args.get("expressions")
        if not items or len(items) < 2:
            continue
        seen: dict[str, Any] = {}
        for item in items:
            seen.setdefault(
                item.sql(dialect=dialect, comments=False, unsupported_level=ignore),
                item,
            )
        node.set("expressions", [seen[key] for key in sorted(seen)])
    return str(tree.sql(dialect=dialect, comments=False, unsupported_level=ignore))


def _tables(tree: Any) -> tuple[list[str], list[str]]:
    exp = _sqlglot.exp
    if not isinstance(tree, (exp.Query, exp.Insert, exp.Update, exp.Delete, exp.Merge)):
        return [], []  # DDL, SET, COPY...: no reads/writes reported
    written: dict[str, None] = {}
    target_ids = set()
    for dml in tree.find_all(exp.Insert, exp.Update, exp.Delete, exp.Merge):
        target = dml.this
        if isinstance(target, exp.Schema):
            target = target.this
        if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
            target_ids.add(id(target))
            written.setdefault(target.name.lower(), None)
    cte_nodes = list(tree.find_all(exp.CTE, bfs=False))
    ctes = {cte.alias_or_name.lower() for cte in cte_nodes}
    read: dict[str, None] = {}
    # CTE bodies first: they come first in the text, but last in sqlglot's args
    tables = [t for cte in cte_nodes for t in cte.find_all(exp.Table, bfs=False)]
    tables.extend(tree.find_all(exp.Table, bfs=False))
    for table in tables:
        if id(table) in target_ids or not isinstance(table.this, exp.Identifier):
            continue
        name = table.name.lower()
        if name and name not in ctes:
            read.setdefault(name, None)
    return list(read), list(written)


# Shape, tables read, tables written.
_Analysis = tuple[str, tuple[str, ...], tuple[str, ...]]


def _as_text(sql: Any) -> str:
    """Tolerate bytes (psycopg2's ``cursor.query``) and other non-str input."""
    if isinstance(sql, str):
        return sql
    if isinstance(sql, (bytes, bytearray, memoryview)):
        return bytes(sql).decode("utf-8", "replace")
    return str(sql)


# ---------------------------------------------------------------------------
# Long texts: shaped from a prefix
# ---------------------------------------------------------------------------

_LITERAL_LIST_OPENERS = frozenset({"IN", "ARRAY"})
_SUBQUERY_STARTS = frozenset({"SELECT", "WITH", "VALUES"})


def _close_cut(tokens: list[str]) -> list[str]:
    """Make the tokens of a statement cut at an arbitrary point whole again.

    If the innermost bracket left open is an ``IN (...)``/``ARRAY[...]`` literal
    list, its partial last item is dropped; any other open group is dropped
    whole (so a multi-row ``VALUES`` keeps its complete rows). The brackets
    still open are then closed. So a statement gives the same shape wherever
    the lengths of its literals make the cut fall."""
    stack: list[int] = []
    for i, t in enumerate(tokens):
        if t == "(" or t == "[":
            stack.append(i)
        elif (t == ")" or t == "]") and stack and _LIST_OPENERS[tokens[stack.pop()]] != t:
            stack.clear()
    out = tokens
    if stack:
        j = stack[-1]
        listed = (j > 0 and out[j - 1] in _LITERAL_LIST_OPENERS
                  and (j + 1 >= len(out) or out[j + 1] not in _SUBQUERY_STARTS))
        last_comma = -1
        if listed:
            depth = 0
            for k in range(j + 1, len(out)):
                t = out[k]
                if t == "(" or t == "[":
                    depth += 1
                elif t == ")" or t == "]":
                    depth -= 1
                elif t == "," and depth == 0:
                    last_comma = k
        if last_comma > 0:
            out = out[:last_comma]
        else:
            out = out[: j - 1] if listed else out[:j]
            stack.pop()
            while out and out[-1] == ",":
                out = out[:-1]
    return out + [_LIST_OPENERS[out[i]] for i in reversed(stack) if i < len(out)]


def _prefix_shape(sql: str) -> str:
    """The tokenizer's shape of the first ``SHAPE_PREFIX_CHARS`` characters,
    cut clean (the last token, which the cut may have split, is dropped), then
    ``" ..."``."""
    keywords = _KEYWORDS
    statements = _fallback_tokens(sql[:SHAPE_PREFIX_CHARS])
    if statements:
        statements[-1] = _close_cut(statements[-1][:-1])
    shapes = [_render_tokens(_collapse_tokens(stmt), keywords) for stmt in statements if stmt]
    return "; ".join(shapes) + " ..."


_IDENT = r'(?:"(?:[^"]|"")+"|[^\W\d][\w$]*)'
_HEAD_WRITE_RE = re.compile(
    r"\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?"
    r"(?:" + _IDENT + r"\s*\.\s*)?(?P<table>" + _IDENT + r")",
    re.IGNORECASE,
)


def _analyze_long(sql: str) -> _Analysis:
    """Shape and tables of a text longer than ``MAX_SHAPE_CHARS``, from its beginning."""
    try:
        shape = _prefix_shape(sql)
    except Exception:  # pragma: no cover - never raise
        shape = " ".join(sql[:SHAPE_PREFIX_CHARS].split()) + " ..."
    m = _HEAD_WRITE_RE.match(sql)
    written: tuple[str, ...] = ()
    if m is not None:
        table = m.group("table")
        written = (table[1:-1].replace('""', '"') if table[0] == '"' else table.lower(),)
    return shape, (), written


# ---------------------------------------------------------------------------
# Splitting a string of several statements
# ---------------------------------------------------------------------------

# Everything up to the next semicolon that ends a statement: runs of ordinary
# characters, then strings ('' doubled quotes; backslash escapes in E'' strings
# only), quoted identifiers, comments and dollar quotes, each consumed whole
# (an unterminated one runs to the end of the text). Atomic, so linear: each
# ``(?>X*)`` is what ``X*+`` means, written as an atomic group because CPython's
# possessive repeats before 3.11.5 mis-match (gh-106052, gh-100061) and, on this
# pattern, grew memory without bound (Debian 12's Python 3.11.2: a MemoryError at
# any string of several statements).
_STATEMENT_RE = re.compile(
    r"""(?>(?:(?>[^;'"$/-]+)"""
    r"""|(?<=[eE])(?<![\w$][eE])'(?>[^'\\]*)(?>(?:(?:\\.|'')(?>[^'\\]*))*)(?:'|\Z)"""
    r"""|'(?>[^']*)(?>(?:''(?>[^']*))*)(?:'|\Z)"""
    r"""|"(?>[^"]*)(?>(?:""(?>[^"]*))*)(?:"|\Z)"""
    r"""|--(?>[^\n]*)"""
    r"""|/\*(?>[^*]*)(?>(?:\*(?!/)(?>[^*]*))*)(?:\*/|\Z)"""
    r"""|(?<![\w$])\$(?P<tag>(?:[^\W\d]\w*)?)\$(?:.*?\$(?P=tag)\$|.*\Z)"""
    r"""|[$/-])*)""",
    re.DOTALL,
)
# whitespace and comments only: a part the server does not count
_BLANK_RE = re.compile(r"(?>(?:(?>\s+)|--(?>[^\n]*)|/\*(?>[^*]*)(?>(?:\*(?!/)(?>[^*]*))*)(?:\*/|\Z))*)")


def statement_spans(sql: str) -> tuple[tuple[int, int], ...]:
    """``(start, end)`` offsets of each statement in ``sql``, split as the server splits them.

    Semicolons inside strings, quoted identifiers, dollar quotes and comments do
    not split; parts holding only whitespace and comments are left out (the
    server runs nothing for them), so ``""`` gives ``()`` and ``"SELECT 1;"``
    one span. Costs a ``str.find`` when the only semicolon ends the text, else
    one regex pass (about 10 ms per MB). Not recognised: nested block comments
    and the semicolons inside a ``BEGIN ATOMIC ... END`` function body."""
    if type(sql) is not str:
        sql = _as_text(sql)
    n = len(sql)
    first = sql.find(";")
    if first < 0 or (sql.find(";", first + 1) < 0 and _is_blank(sql, first + 1, n)):
        end = n if first < 0 else first
        return () if _is_blank(sql, 0, end) else ((0, end),)
    spans = []
    pos = 0
    while True:
        m = _STATEMENT_RE.match(sql, pos)
        end = m.end() if m is not None else n  # the pattern matches at every position
        if not _is_blank(sql, pos, end):
            spans.append((pos, end))
        if end >= n:
            break
        pos = end + 1  # past the semicolon
    return tuple(spans)


def _is_blank(sql: str, start: int, end: int) -> bool:
    m = _BLANK_RE.match(sql, start, end)
    return m is not None and m.end() == end


@_cached()
def _analyze(sql: str) -> _Analysis:
    if len(sql) > MAX_SHAPE_CHARS:
        return _analyze_long(sql)
    store = shape_store.current
    if store is None:
        return _analyze_short(sql)[0]
    try:
        found = store.get(sql)
    except Exception:  # a store never breaks a shape
        found = None
    if found is not None:
        return found
    analysis, shaped = _analyze_short(sql)
    if shaped and _sqlglot is not None:  # the parser ran (a text it could not read, too): worth keeping
        try:
            store.put(sql, analysis)
        except Exception:  # a store never breaks a shape
            pass
    return analysis


# a literal (string or dollar-quoted), or what may hold a quote without being one
# (a backslash escapes only in an E'' string: in a plain one it is a character, as PostgreSQL
# reads it with standard_conforming_strings, its default)
_STANDARD_STR = r"(?<![\w$])(?:[eE]'(?:[^'\\]|\\.|'')*|(?:[nNbBxX]|[uU]&)?'[^']*(?:''[^']*)*)(?:'|\Z)"
_LITERAL_SCAN = re.compile(
    r"(?P<lit>" + _STANDARD_STR + "|" + _DOLLAR + ")|" + _QIDENT + "|" + _LINE_COMMENT + "|" + _BLOCK_COMMENT,
    re.DOTALL)
_WORDS = re.compile(r"\w+")
# literals the parser keeps on purpose, as part of what a statement is: date and time units
# (date_trunc('day', x), date_part('year', x), interval '5 days'); JSON keys after -> / ->>
# and JSON paths ('$.key') are recognised by their place
_TIME_UNITS = frozenset(
    unit + plural for unit in ("microsecond", "millisecond", "second", "minute", "hour", "day", "week", "month",
                               "quarter", "year", "decade", "min", "sec", "mon", "hr", "yr", "msec", "usec")
    for plural in ("", "s")) | {"century", "centuries", "millennium", "millennia", "epoch", "dow", "doy", "isodow",
                                "isoyear", "timezone", "timezone_hour", "timezone_minute", "julian"}


def _keeps_a_literal(text: str, shape: str) -> bool:
    """True when ``shape`` (the parser's, of ``text``) still holds a word of one of the text's
    string or dollar-quoted literals that the text has nowhere else: sqlglot reads some strings as
    names (``COPY ... TO PROGRAM 'cmd --password=x'``, a function's ``$$ body $$``), and the
    shape, printed and written to files, showed them."""
    shape_words = set(_WORDS.findall(shape.lower()))
    outside: list[str] = []
    literals: list[str] = []
    position = 0
    for match in _LITERAL_SCAN.finditer(text):
        outside.append(text[position:match.start()])
        position = match.end()
        literal = match.group("lit")
        if literal is None:
            continue  # a quoted name or a comment
        if (text[max(0, match.start() - 16):match.start()].rstrip().endswith(("->", "->>"))
                or literal.lstrip("eEnN'").startswith("$.")):
            continue  # a JSON key or path: part of the statement
        literals.append(literal)
    outside.append(text[position:])
    outside_words = set(_WORDS.findall(" ".join(outside).lower()))
    return any(len(word) >= 3 and word in shape_words and word not in outside_words and word not in _TIME_UNITS
               for literal in literals for word in _WORDS.findall(literal.lower()))


def _analyze_short(sql: str) -> tuple[_Analysis, bool]:
    """``(analysis, shaped)`` of a text up to ``MAX_SHAPE_CHARS``: ``shaped`` is False for the last
    resort (the text with its literals, never to be saved)."""
    try:
        collapsed = _precollapse(sql)
    except Exception:  # pragma: no cover - regex failure is not expected
        collapsed = sql
    try:
        parsed = _parse(collapsed)
        if parsed is not None:
            trees, dialect = parsed
            read: dict[str, None] = {}
            written: dict[str, None] = {}
            for tree in trees:
                r, w = _tables(tree)
                read.update(dict.fromkeys(r))
                written.update(dict.fromkeys(w))
            shape = "; ".join(_shape_tree(tree, dialect) for tree in trees)
            if ("'" in collapsed or "$" in collapsed) and _keeps_a_literal(collapsed, shape):
                shape = _fallback_normalize(collapsed)  # the parser misread a literal as a name
            return (shape, tuple(read), tuple(written)), True
    except Exception:
        pass
    try:
        return (_fallback_normalize(collapsed), (), ()), True
    except Exception:  # pragma: no cover - last resort, never raise
        return (" ".join(sql.split()), (), ()), False


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def normalize(sql: str) -> str:
    """Return the statement's shape.

    Literals and placeholders of every style (``$1``, ``%s``, ``%(name)s``,
    ``:name``, ``?``, string and number literals, including negative numbers
    and ``LIMIT``/``OFFSET`` values) become ``?``; ``IN (...)``, ``ARRAY[...]``
    and multi-row ``VALUES`` lists collapse to their distinct item shapes
    (normally a single one); comments, whitespace, keyword case and the case of
    unquoted identifiers do not matter; ``NULL``/``TRUE``/``FALSE`` are kept.
    Several statements in one string are joined with ``"; "``.  A text longer
    than ``MAX_SHAPE_CHARS`` is shaped from its first ``SHAPE_PREFIX_CHARS``
    characters, and its shape ends with ``" ..."``.  Never raises; cached per
    distinct SQL text, bounded by bytes (``normalize.cache_info()``).
    """
    return _analyze(sql)[0]  # type: ignore[no-any-return]


normalize.cache_info = _analyze.cache_info  # type: ignore[attr-defined]
normalize.cache_clear = _analyze.cache_clear  # type: ignore[attr-defined]
normalize.cache = _analyze.cache  # type: ignore[attr-defined]


def _skip_leading(sql: str, pos: int = 0) -> int:
    return _LEADING_RE.match(sql, pos).end()  # type: ignore[union-attr]


_LEADING_RE = re.compile(r"(?:\s+|--[^\n]*|/\*.*?(?:\*/|\Z)|\()*", re.DOTALL)
_WORD_RE = re.compile(r"[A-Za-z_]+")


def _first_words(sql: str, count: int = 2) -> list[str]:
    sql = _as_text(sql)
    words: list[str] = []
    pos = 0
    for _ in range(count):
        pos = _skip_leading(sql, pos)
        m = _WORD_RE.match(sql, pos)
        if m is None:
            break
        words.append(m.group(0).upper())
        pos = m.end()
    return words


_TXN_FIRST = frozenset(
    {"BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE"}
)
_TXN_NEEDS_TRANSACTION = frozenset({"START", "PREPARE"})


@_cached()
def token_shape(sql: str) -> str:
    """The tokenizer's shape of ``sql``, without the parser (sqlglot is not imported): like
    :func:`normalize` for the texts of one statement that differ in their literal values,
    placeholders, ``IN``/``ARRAY``/``VALUES`` list lengths, comments, whitespace or keyword case
    (about 30 us a text against 1-3 ms for a parse; cached per text). It may tell apart texts
    :func:`normalize` merges when they are spelled differently (``x::int`` and ``CAST(x AS
    INT)``). A text longer than ``MAX_SHAPE_CHARS`` is shaped from its first
    ``SHAPE_PREFIX_CHARS`` characters. Never raises."""
    try:
        if len(sql) > MAX_SHAPE_CHARS:
            return _fallback_normalize(sql[:SHAPE_PREFIX_CHARS]) + " ..."
        return _fallback_normalize(sql)
    except Exception:  # pragma: no cover - the tokenizer is not expected to fail
        return sql


@_cached(digest_long=False)
def is_transaction_control(sql: str) -> bool:
    """True for BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK (including
    ROLLBACK TO SAVEPOINT and ROLLBACK PREPARED), ABORT, SAVEPOINT,
    RELEASE [SAVEPOINT], PREPARE TRANSACTION and COMMIT PREPARED.

    Looks only at the first keyword(s) after leading whitespace and comments
    (SET TRANSACTION is not transaction control).  Cached.
    """
    words = _first_words(sql)
    if not words:
        return False
    first = words[0]
    if first in _TXN_FIRST:
        return True
    return (
        first in _TXN_NEEDS_TRANSACTION and len(words) > 1 and words[1] == "TRANSACTION"
    )


_KIND_BY_FIRST = {
    "SELECT": "select",
    "VALUES": "select",
    "TABLE": "select",
    "INSERT": "insert",
    "REPLACE": "insert",
    "UPDATE": "update",
    "DELETE": "delete",
    "CREATE": "ddl",
    "ALTER": "ddl",
    "DROP": "ddl",
    "TRUNCATE": "ddl",
    "COMMENT": "ddl",
    "RENAME": "ddl",
    "GRANT": "ddl",
    "REVOKE": "ddl",
}
_MAIN_AFTER_WITH = {
    "SELECT": "select",
    "INSERT": "insert",
    "UPDATE": "update",
    "DELETE": "delete",
}


def _kind_after_with(sql: str) -> str:
    depth = 0
    for m in _TOKEN_RE.finditer(_as_text(sql)):
        kind = m.lastgroup
        assert kind is not None
        tok = m[kind]
        if kind == "op":
            if tok == "(":
                depth += 1
            elif tok == ")":
                depth -= 1
            elif tok == ";":
                break
        elif kind == "word" and depth == 0:
            found = _MAIN_AFTER_WITH.get(tok.upper())
            if found:
                return found
            if tok.upper() == "MERGE":
                return "other"
    return "other"


@_cached()
def statement_kind(sql: str) -> str:
    """Classify a statement as 'select', 'insert', 'update', 'delete',
    'transaction', 'ddl' or 'other' from its leading keyword.

    ``WITH ... SELECT`` is 'select' (``WITH ... INSERT`` is 'insert', etc.),
    ``VALUES``/``TABLE`` are 'select', ``REPLACE`` is 'insert', GRANT/REVOKE/
    TRUNCATE/COMMENT are 'ddl', EXPLAIN/SET/SHOW/MERGE/VACUUM are 'other'.
    For several statements in one string, the first one decides.  Cached.
    """
    if is_transaction_control(sql):
        return "transaction"
    words = _first_words(sql, 1)
    if not words:
        return "other"
    if words[0] == "WITH":
        return _kind_after_with(sql)
    return _KIND_BY_FIRST.get(words[0], "other")


def tables_read(sql: str) -> tuple[str, ...]:
    """Tables the statement reads (FROM/JOIN/subqueries/USING; not the target
    of an INSERT/UPDATE/DELETE, not CTE names), lower case, schema stripped,
    in order of first appearance.  () when the parser cannot tell, and for a
    text longer than ``MAX_SHAPE_CHARS``.  Cached (with :func:`normalize`)."""
    return _analyze(sql)[1]  # type: ignore[no-any-return]


def tables_written(sql: str) -> tuple[str, ...]:
    """Target tables of the INSERT/UPDATE/DELETE/MERGE statements in ``sql``
    (including data-modifying CTEs), lower case, schema stripped.  () for
    reads, DDL, or when the parser cannot tell; for a text longer than
    ``MAX_SHAPE_CHARS``, only the target of a leading INSERT, UPDATE or DELETE.
    Cached (with :func:`normalize`)."""
    return _analyze(sql)[2]  # type: ignore[no-any-return]


def clear_caches() -> None:
    """Empty every cache of this module (for tests and long-lived processes)."""
    for func in (_analyze, is_transaction_control, statement_kind):
        func.cache_clear()  # type: ignore[union-attr]
