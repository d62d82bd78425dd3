"""Passwords out of URLs, DSNs and error messages: masked where they stand, nowhere else.

A password is replaced by ``***`` in the places a URL or a libpq connection string puts
it - the userinfo of ``scheme://user:PASSWORD@host`` and the value of ``password=`` (a
URL's query string or a key/value DSN, ``sslpassword=`` too) - and never by searching a
message for the password's characters: a password ``e`` must not turn "connection failed"
into "conn***ction fail***d", and a password ``postgres`` must not hide the user name in
``password authentication failed for user "postgres"``.

A URL or DSN the user gave (:func:`mask_url`) is read the way a browser reads it: the
password is all the user wrote between the user name's ``:`` and the *last* ``@``, whatever
it holds (a space, ``#``, ``?``, ``/``, ``@``, quotes); a ``password=`` value runs to the
next ``&`` of a URL's query, or to the next ``key=`` of a DSN.

Drivers read such a password differently and quote what they made of it: libpq quotes a
piece of its input in its *parse* errors (``unexpected spaces found in "p w"``), and a
password cut at a URL delimiter ends up in another field that errors quote (redis-py's
``Port could not be cast to integer value as 'head'`` for ``redis://:head#tail@h``,
libpq's host ``tail@h`` for ``postgresql://u:head@tail@h``). :func:`error_message` (and
:func:`mask_message` for a message built around such an error) masks those pieces of the
password where the message quotes them, as whole tokens, never elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"

# scheme://user:password@  - the password runs to the last "@" before whitespace or a
# quote (a password may hold an unencoded "@" or "/"; masking a little too much is safe).
_URL_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][\w+.-]*://[^\s:/@?#\"'<>]*:)(?P<secret>[^\s\"'<>]*)@")
# ?password=... or &password=... in a URL's query string
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:ssl)?password=)(?P<secret>[^&#\s\"'<>]*)", re.IGNORECASE)
# password=... in a key/value DSN: quoted ('it\'s') or up to whitespace, a backslash escaping
# the next character there as libpq reads it (password=two\ words)
_DSN_PASSWORD = re.compile(
    r"(?P<head>(?<![\w?&])(?:ssl)?password\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'?|(?:\\.|[^\s'\"\\])+\\?)",
    re.IGNORECASE,
)
# Python's urllib on a URL whose port is not a number (redis-py's from_url): that "port" is
# text of the URL after a ":", most often the head of a password cut at "#", "?" or "/"
# (redis://:head#tail@h), so it is masked even where the URL is not known
_URL_PORT_ERROR = re.compile(r"(?P<head>Port could not be cast to integer value as )(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")")
_QUOTED = re.compile(r"(\"[^\"]*\")")  # libpq's quoting
# where a driver's message repeats a field it read: "libpq's" or 'Python's repr' quoting, and
# the host (or socket path) redis-py names in "Error 111 connecting to HOST:PORT."
_QUOTED_OR_HOST = re.compile(r"(\"[^\"]*\"|'[^']*'|(?<=connecting to )[^\s\"']+)")

# A whole string given as one URL or DSN, as the user wrote it:
_SCHEME = re.compile(r"\s*[A-Za-z][\w+.-]*://")
# ?password= / &password= in a URL: the value runs to the next "&" (a space, "#" or "?" too)
_WHOLE_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:ssl)?password=)(?P<secret>[^&]*)", re.IGNORECASE)
# password= in a DSN: quoted, or up to the next "key=" (a space too: "password=sec ret" is
# what the user typed, though libpq rejects it)
_WHOLE_DSN_PASSWORD = re.compile(
    r"(?P<head>(?<![\w?&])(?:ssl)?password\s*=\s*)"
    r"(?P<secret>(?:'(?:[^'\\]|\\.)*'?|(?:\\.|[^\\])+?\\?)(?=\s+[A-Za-z_]\w*\s*=|\s*$))",
    re.IGNORECASE | re.DOTALL,
)

# Characters at which a parser may cut a password written unencoded: libpq's URI parser
# ends the userinfo at the first "@" or "/"; Python's urllib (redis-py) ends the authority at
# "/", "?" or "#" and chokes on "[" "]"; libpq's DSN parser cuts at whitespace. Once a
# password is cut there, a ":" in what follows separates a host from a port.
_CUTS_LIBPQ = "@/"
_CUTS_ANY = "@/?#[] \t\r\n"
_HOST_PORT = ":"
# libpq's parse errors quote the token they stopped at: cut at every delimiter of a URL or DSN
_CUTS_PARSE = _CUTS_ANY + ":&=,;'\"\\"
# what may stand either side of a piece where a message repeats it (a quote, a delimiter)
_PIECE_EDGE = r"\s\"'@/:?#&=,;\[\]\\"
# the longest run of a password's pieces masked as one (see password_pieces)
_MAX_CUTS_SPANNED = 8


def mask_text(text: str) -> str:
    """``text`` with every password in a URL or DSN it contains replaced by ``***``.

    Covers ``scheme://user:PASSWORD@`` anywhere in the text (postgresql, redis, any
    scheme), ``?password=`` / ``&password=`` in query strings and ``password=VALUE`` /
    ``password='quoted value'`` in key/value DSNs (also ``sslpassword``), and the port
    Python's URL parser could not read (``Port could not be cast to integer value as '***'``:
    redis-py's error for ``redis://:head#tail@h`` quotes the password's head as the port).
    Nothing else in the text changes. Never raises.
    """
    text = _URL_PORT_ERROR.sub(lambda m: f"{m['head']}'{MASK}'", text)
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}@" if m["secret"] else m[0], text)
    text = _QUERY_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return _DSN_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def _url_password(given: str) -> tuple[int, int, bool] | None:
    """Where the password of ``given`` (one whole URL) lies as the user wrote it - from the
    user name's ``:`` to the last ``@`` - and whether the user name holds a character a
    parser cuts at; None for a DSN or a URL without a password."""
    scheme = _SCHEME.match(given)
    if scheme is None:
        return None
    at = given.rfind("@", scheme.end())
    colon = given.find(":", scheme.end(), at) if at >= 0 else -1
    if colon < 0:
        return None
    return colon + 1, at, any(ch in _CUTS_ANY for ch in given[scheme.end():colon])


def _written(given: str) -> list[tuple[str, bool]]:
    """The passwords in ``given`` (one whole URL or DSN) as the user wrote them, each with
    whether a parser may have read all of it as another field (a user name cut short)."""
    if _SCHEME.match(given) is None:
        return [(m["secret"], False) for m in _WHOLE_DSN_PASSWORD.finditer(given)]
    found: list[tuple[str, bool]] = []
    query_from = 0
    span = _url_password(given)
    if span is not None:
        start, end, cut_user = span
        found.append((given[start:end], cut_user))
        query_from = end
    return found + [(m["secret"], False) for m in _WHOLE_QUERY_PASSWORD.finditer(given, query_from)]


def mask_url(url: str) -> str:
    """``url`` (a ``postgresql://`` / ``redis://`` URL or a libpq conninfo string) with its password as ``***``.

    ``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``; ``host=h password=pw`` ->
    ``host=h password=***``; a URL without a password is returned unchanged. The whole
    string is taken as one URL or DSN, as the user wrote it: a URL's password runs from the
    user name's ``:`` to the last ``@`` (``redis://:a#b/c?d@h`` -> ``redis://:***@h``), a
    ``password=`` value to the next ``&`` of the query or the next ``key=`` of a DSN
    (``password=sec ret dbname=d`` -> ``password=*** dbname=d``), whatever it holds.
    """
    if _SCHEME.match(url) is None:
        url = _WHOLE_DSN_PASSWORD.sub(lambda m: m["head"] + MASK, url)
    else:
        head, rest = "", url
        span = _url_password(url)
        if span is not None:
            start, end, _ = span
            head, rest = url[:start] + (MASK if end > start else ""), url[end:]
        url = head + _WHOLE_QUERY_PASSWORD.sub(lambda m: m["head"] + MASK, rest)
    return mask_text(url)


def _variants(secret: str) -> list[str]:
    """``secret`` as written, without its DSN quotes, percent-decoded and with libpq's DSN
    backslash escapes read (``two\\ words``): the forms a driver may repeat."""
    if len(secret) >= 2 and secret[0] == "'" and secret[-1] == "'":
        secret = secret[1:-1]
    unescaped = re.sub(r"\\(.)", r"\1", secret)
    return [value for value in dict.fromkeys((secret, unquote(secret), unescaped)) if value]


def passwords_in(given: str) -> list[str]:
    """The passwords written in ``given`` (a URL or DSN), raw and percent-decoded; may be empty.

    Read from the whole string as :func:`mask_url` reads it (everything the user wrote for
    the password, however malformed) and by the patterns :func:`mask_text` masks, so it
    works on strings libpq cannot parse.
    """
    raw = [secret for secret, _ in _written(given)]
    for pattern in (_URL_USERINFO, _QUERY_PASSWORD, _DSN_PASSWORD):
        raw += [match["secret"] for match in pattern.finditer(given)]
    return list(dict.fromkeys(value for secret in raw for value in _variants(secret)))


def password_pieces(secret: str, cuts: str, *, whole: bool = False) -> list[str]:
    """The pieces of ``secret`` a parser that cuts at the characters ``cuts`` may read as
    other fields: every run from the start or a cut to a cut or the end (``a#b/c`` cut at
    ``#/``: ``a``, ``a#b``, ``b``, ``b/c``, ``c``), longest first; the whole secret only if
    ``whole``. Pieces never start or end with a cut character, and span at most
    ``_MAX_CUTS_SPANNED`` cuts (a longer run is still masked piece by piece: its cuts stand
    between the pieces where a message repeats it)."""
    cut_at = [i for i, ch in enumerate(secret) if ch in cuts]
    starts = [0] + [i + 1 for i in cut_at]
    ends = cut_at + [len(secret)]
    spans = {(s, e) for k, s in enumerate(starts) for e in ends[k:k + _MAX_CUTS_SPANNED + 1]}
    spans.add((0, len(secret)))
    pieces = {secret[s:e] for s, e in spans
              if s < e and secret[s] not in cuts and secret[e - 1] not in cuts
              and (whole or (s, e) != (0, len(secret)))}
    return sorted(pieces, key=lambda piece: (-len(piece), piece))


def misread_pieces(given: str, cuts: str = _CUTS_ANY) -> list[str]:
    """The pieces of the passwords in ``given`` (one URL or DSN as the user wrote it) that a
    parser cutting at ``cuts`` reads as another field, for masking where a message quotes
    them: ``redis://:head#tail@h`` -> ``head`` (redis-py's port), ``tail``;
    ``postgresql://u:Wrong@Pw7777@h`` -> ``Pw7777`` (libpq's host ``Pw7777@h``) and
    ``Wrong``; once cut there, a ``:`` parts a host from a port too (``u:a@host:12@h`` ->
    ``host``). A password with no such character gives none (``postgresql://postgres:postgres@h``:
    the server's ``for user "postgres"`` stays), unless the user name has one (the whole
    password may then be read as a port or a database)."""
    found: list[str] = []
    for secret, cut_user in _written(given):
        for value in _variants(secret):
            if cut_user or any(ch in cuts for ch in value):
                found += password_pieces(value, cuts + _HOST_PORT, whole=cut_user)
    return list(dict.fromkeys(found))


def _forms(pieces: Iterable[str]) -> list[str]:
    """``pieces`` and their repr with doubled backslashes (Python's ``'a\\\\b'``), longest first."""
    forms = {form for piece in pieces if piece for form in (piece, piece.replace("\\", "\\\\"))}
    return sorted(forms, key=lambda form: (-len(form), form))


def _mask_quoted_whole(text: str, pieces: Iterable[str]) -> str:
    """``text`` with every quoted part that is exactly one of ``pieces`` - ``"piece"``,
    ``'piece'`` or its Python repr - replaced by the same quotes around ``***``, whatever
    the piece holds (quotes, spaces: libpq quotes ``"%s"`` without escaping)."""
    for piece in _forms(pieces):
        for quote in ('"', "'"):
            text = text.replace(f"{quote}{piece}{quote}", f"{quote}{MASK}{quote}")
        shown = repr(piece)
        if shown[1:-1] != piece:
            text = text.replace(shown, shown[0] + MASK + shown[-1])
    return text


def _pieces_pattern(pieces: Iterable[str]) -> re.Pattern[str] | None:
    """One pattern for ``pieces`` (and their repr with doubled backslashes), longest first,
    each only where a quote or a delimiter stands either side; None for no pieces."""
    forms = _forms(pieces)
    if not forms:
        return None
    alternatives = "|".join(re.escape(form) for form in forms)
    return re.compile(rf"(?<![^{_PIECE_EDGE}])(?:{alternatives})(?![^{_PIECE_EDGE}])", re.IGNORECASE)


def _bounded(secret: str) -> re.Pattern[str]:
    # a whole token: not glued to letters or digits on either side
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")


def mask_parse_error(message: str, secrets: Iterable[str]) -> str:
    """A libpq parse error for a malformed URL/DSN, with the password masked where it is quoted.

    libpq quotes pieces of its input in these messages (``invalid percent-encoded token:
    "p%zzss"``, ``missing "=" after "words"``). A quoted part that is exactly one of
    ``secrets`` becomes ``"***"`` whatever it holds (quotes too); inside each double-quoted part, every
    whole-token occurrence of one of ``secrets`` (from :func:`passwords_in`) becomes ``***``,
    and so does every piece of one cut at a URL or DSN delimiter (:func:`password_pieces`)
    where a quote or a delimiter stands either side; URLs and DSNs are masked as in
    :func:`mask_text`. Text outside quotes is left alone. Use it only for parse errors: a
    server's message quotes user names (``for user "postgres"``), never passwords.
    """
    secrets = [secret for secret in secrets if secret]
    pieces = [piece for secret in secrets for piece in password_pieces(secret, _CUTS_PARSE)]
    message = _mask_quoted(_mask_quoted_whole(message, secrets), secrets, _QUOTED)
    return mask_text(_mask_pieces(message, pieces, _QUOTED))


def _mask_quoted(text: str, secrets: Iterable[str], quoted: re.Pattern[str]) -> str:
    """``text`` with every whole-token occurrence of one of ``secrets`` inside the pieces
    ``quoted`` finds (quotes included in its group 1) replaced by ``***``; the rest as it is."""
    patterns = [_bounded(s) for s in sorted(set(secrets), key=len, reverse=True) if s]

    def piece(match: re.Match[str]) -> str:
        inner = match[1]
        for pattern in patterns:
            inner = pattern.sub(MASK, inner)
        return inner

    return quoted.sub(piece, text) if patterns else text


def _mask_pieces(text: str, pieces: Iterable[str], quoted: re.Pattern[str]) -> str:
    """``text`` with every one of ``pieces`` that stands between quotes or delimiters inside
    the parts ``quoted`` finds (its group 1) replaced by ``***``; the rest as it is."""
    pieces = list(pieces)
    pattern = _pieces_pattern(pieces)
    if pattern is None:
        return text
    text = _mask_quoted_whole(text, pieces)
    return quoted.sub(lambda match: pattern.sub(MASK, match[1]), text)


def mask_message(message: str, given: str | None, cuts: str = _CUTS_ANY) -> str:
    """``message`` (built around a driver's error for a call handed the URL or DSN
    ``given``) with passwords masked as in :func:`mask_text`, and the pieces of the given
    password a parser cutting at ``cuts`` read as another field (:func:`misread_pieces`)
    masked where the message quotes them (``as 'head'``, ``host "tail@h"``) or names a host
    redis-py could not reach (``connecting to tail:6379``). Nothing else changes: a password
    ``e#x`` leaves "Error connecting" whole. Never raises."""
    if not given:
        return mask_text(message)
    return mask_text(_mask_pieces(message, misread_pieces(given, cuts), _QUOTED_OR_HOST))


def error_message(error: BaseException, given: str | None = None) -> str:
    """``str(error)``, stripped, with passwords masked; the class name if the message is empty.

    ``given`` is the URL or DSN the failing call was handed: when ``error`` is a psycopg
    ``ProgrammingError`` (libpq could not parse it), the quoted pieces of the message are
    masked too (:func:`mask_parse_error`). Other errors (connection refused, password
    authentication failed, redis-py's ``ValueError`` for a port it cannot read) get
    :func:`mask_message`: the pieces of the password a parser read as another field masked
    where the message quotes them - cut where libpq cuts a URL (``@`` and ``/``) for a
    psycopg error, where any parser may (``#``, ``?``, ``/``, ``@``, ...) for others.
    """
    text = str(error).strip() or type(error).__name__
    if not given:
        return mask_text(text)
    if type(error).__name__ == "ProgrammingError":
        return mask_parse_error(text, passwords_in(given))
    psycopg_error = type(error).__module__.split(".")[0] == "psycopg"
    return mask_message(text, given, _CUTS_LIBPQ if psycopg_error else _CUTS_ANY)
