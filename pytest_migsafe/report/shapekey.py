"""Shape keys: an identity for a statement shape that does not depend on sqlglot's rendering.

A shape (:func:`pytest_migsafe.queries.normalize.normalize`) is rendered by sqlglot, and
sqlglot renders the same statement differently from one version to the next (every
version that ``sqlglot>=25.0`` allows can be installed): 25.0 writes ``CAST(? AS SIGNED)``,
``ARRAY(...)``, ``NOT x IS NULL`` and ``DO UPDATE b = ...`` where 30.x writes
``CAST(? AS INT)``, ``ARRAY[...]``, ``x IS NOT NULL`` and ``DO UPDATE SET b = ...``. A
baseline that compared display shapes would then report regressions without any code
change. The baseline therefore stores, beside each display shape, a key computed here by
our own small tokenizer from the display shape, after folding what renderers disagree on:

- literals and bind placeholders of every style become ``?``, and so does a cast of one
  (``CAST(? AS INT)``, ``?::integer``: the bind type's spelling is the dialect's);
- whitespace and comments go, words are lower case, quoted identifiers lose their quotes
  (``"User"`` and ``user`` are one name), ``!=`` is ``<>``;
- type names in casts are folded to one spelling per family (``signed``, ``integer`` ->
  ``int``; ``varchar``, ``char``, ``text``, ``string`` -> ``text``);
- ``ARRAY[...]`` is ``ARRAY(...)``; ``NOT x IS NULL`` is ``x IS NOT NULL``; ``DO UPDATE
  SET`` is ``DO UPDATE``; the optional ``AS`` of an alias, ``INNER`` and ``OUTER`` of a
  join go.

:func:`shape_key` is the first 16 hex digits of the SHA-256 of the canonical tokens
joined by spaces. :data:`KEY_VERSION` names these rules; a baseline written under other
rules has its keys derived again from its display shapes when it is read. Nothing here
imports sqlglot, and nothing raises.
"""

from __future__ import annotations

import functools
import hashlib
import re

#: The version of the canonical-token rules; stored in the baseline (``shape_key``).
KEY_VERSION = "tokens-1"

_TOKEN_RE = re.compile(
    r"\s*(?:"
    r"(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))"
    r"|(?P<lit>(?:[eEnNbBxX]|[uU]&)?'(?:[^'\\]|\\.|'')*(?:'|\Z)"
    r"|\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?(?:\$(?P=tag)\$|\Z)"
    r"|0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<qid>\"(?:[^\"]|\"\")*(?:\"|\Z)|`[^`]*(?:`|\Z))"
    r"|(?P<ph>\$\d+|%\(\w+\)s|%s|\?\d*|(?<![:\w]):[A-Za-z_]\w*)"
    r"|(?P<word>[^\W\d]\w*)"
    r"|(?P<op>::|<>|!=|==|<=|>=|\|\||->>|->|#>>|#>|@>|<@|\S))",
    re.DOTALL,
)

_OPERATORS = {"!=": "<>", "==": "="}
_TYPE_FAMILIES = {
    **dict.fromkeys(("int", "integer", "int4", "signed", "mediumint"), "int"),
    **dict.fromkeys(("bigint", "int8"), "bigint"),
    **dict.fromkeys(("smallint", "int2", "tinyint"), "smallint"),
    **dict.fromkeys(("varchar", "char", "character", "text", "string", "nvarchar", "nchar", "bpchar"), "text"),
    **dict.fromkeys(("float", "double", "real", "float4", "float8", "precision"), "float"),
    **dict.fromkeys(("decimal", "numeric"), "decimal"),
    **dict.fromkeys(("bool", "boolean"), "bool"),
    **dict.fromkeys(("timestamp", "timestamptz", "datetime"), "timestamp"),
    **dict.fromkeys(("json", "jsonb"), "json"),
    **dict.fromkeys(("uuid",), "uuid"),
}


def _raw_tokens(shape: str) -> list[str]:
    """The shape's tokens: literals and placeholders ``?``, words lower case, quotes gone."""
    tokens: list[str] = []
    for match in _TOKEN_RE.finditer(shape):
        kind = match.lastgroup
        if kind is None or kind == "comment":
            continue
        text = match.group(kind)
        if kind in ("lit", "ph"):
            if tokens and tokens[-1] == "-" and (len(tokens) == 1 or tokens[-2] in _BEFORE_SIGN):
                tokens.pop()  # a negative number is one literal
            tokens.append("?")
        elif kind == "qid":
            inner = text[1:-1] if len(text) > 1 and text[-1] == text[0] else text[1:]
            tokens.append(inner.replace('""', '"').lower())
        elif kind == "word":
            tokens.append(text.lower())
        else:
            tokens.append(_OPERATORS.get(text, text))
    return tokens


# tokens after which a ``-`` is a sign, not a subtraction
_BEFORE_SIGN = frozenset({"(", ",", "=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "select", "where",
                          "and", "or", "not", "then", "else", "when", "in", "values", "limit", "offset",
                          "between", "is", "like", "ilike", "return", "set", "[", "by"})


def _matching(tokens: list[str], start: int) -> int:
    """The index of the bracket closing the one at ``start`` (-1 when unbalanced)."""
    opener = tokens[start]
    closer = ")" if opener == "(" else "]"
    depth = 0
    for index in range(start, len(tokens)):
        if tokens[index] == opener:
            depth += 1
        elif tokens[index] == closer:
            depth -= 1
            if depth == 0:
                return index
    return -1


def _type_end(tokens: list[str], start: int) -> int:
    """The index after a type name starting at ``start``: words, ``(n, m)``, ``[]``."""
    index = start
    while index < len(tokens) and tokens[index][:1].isalpha():
        index += 1
    if index < len(tokens) and tokens[index] == "(":
        close = _matching(tokens, index)
        if close > 0:
            index = close + 1
    while index + 1 < len(tokens) and tokens[index] == "[" and tokens[index + 1] == "]":
        index += 2
    return index


def _fold_type(words: list[str]) -> list[str]:
    if words and words[0] in _TYPE_FAMILIES:
        family = _TYPE_FAMILIES[words[0]]
        rest = [w for w in words[1:] if w not in ("precision", "varying")]
        if rest and rest[0] == "(":  # the length or precision of a text or number type
            close = _matching(rest, 0)
            rest = rest[close + 1:] if close > 0 else rest
        return [family, *rest]
    return words


def _fold(tokens: list[str]) -> list[str]:
    out: list[str] = []
    index = 0
    count = len(tokens)
    while index < count:
        token = tokens[index]
        nxt = tokens[index + 1] if index + 1 < count else ""
        # CAST(? AS type): a bind parameter's type is the dialect's spelling
        if token == "cast" and nxt == "(" and index + 3 < count and tokens[index + 2] == "?" \
                and tokens[index + 3] == "as":
            close = _matching(tokens, index + 1)
            if close > 0:
                out.append("?")
                index = close + 1
                continue
        if token == "cast" and nxt == "(":
            close = _matching(tokens, index + 1)
            if close > 0:
                inner = tokens[index + 2:close]
                depth, split = 0, -1
                for position, word in enumerate(inner):
                    depth += word in ("(", "[")
                    depth -= word in (")", "]")
                    if word == "as" and depth == 0:
                        split = position
                if split >= 0:
                    out += ["cast", "(", *_fold(inner[:split]), "as", *_fold_type(inner[split + 1:]), ")"]
                    index = close + 1
                    continue
        if token == "::":
            end = _type_end(tokens, index + 1)
            if out and out[-1] == "?":
                index = end  # ?::type is ?
                continue
            out += ["::", *_fold_type(tokens[index + 1:end])]
            index = end
            continue
        if token == "array" and nxt == "[":
            close = _matching(tokens, index + 1)
            if close > 0:
                out += ["array", "(", *_fold(tokens[index + 2:close]), ")"]
                index = close + 1
                continue
        if token == "not":
            # NOT a.b IS NULL -> a.b IS NOT NULL
            end = index + 1
            while end < count and (tokens[end][:1].isalpha() or tokens[end][:1] == "_"):
                if end + 1 < count and tokens[end + 1] == ".":
                    end += 2
                    continue
                end += 1
                break
            if end > index + 1 and end + 1 < count and tokens[end] == "is" and tokens[end + 1] == "null" \
                    and tokens[index + 1] not in _KEYWORDS_NOT_NAMES:
                out += [*tokens[index + 1:end], "is", "not", "null"]
                index = end + 2
                continue
        if token == "set" and out[-2:] == ["do", "update"]:
            index += 1
            continue
        if token == "as":
            index += 1  # an alias's optional AS (casts were handled above)
            continue
        if token in ("inner", "outer") and (nxt == "join" or (token == "inner" and nxt == "")):
            index += 1
            continue
        out.append(token)
        index += 1
    return out


_KEYWORDS_NOT_NAMES = frozenset({"exists", "null", "true", "false", "not", "select", "case", "in"})


def canonical_tokens(shape: str) -> list[str]:
    """The canonical tokens of a display shape (rules in the module docstring): a list of
    strings, lower case, literals and placeholders as ``?``. Never raises."""
    try:
        return _fold(_raw_tokens(shape))
    except Exception:  # pragma: no cover - a shape the rules cannot read keeps its words
        return shape.lower().split()


@functools.lru_cache(maxsize=4096)
def shape_key(shape: str) -> str:
    """The key of a display shape: 16 hex digits of the SHA-256 of its canonical tokens
    (:func:`canonical_tokens`) joined by spaces. Equal for the renderings of one statement
    by every sqlglot version the rules cover; cached per shape. Never raises."""
    text = " ".join(canonical_tokens(shape))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]  # (a lone surrogate: hashed, never an error)
