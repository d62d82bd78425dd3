"""Passwords out of URLs, DSNs and error messages: masked where they stand, nowhere else.

A password is replaced by ``***`` in the places a URL or a libpq connection string puts
it - the userinfo of ``scheme://user:PASSWORD@host`` and the value of ``password=`` (a
URL's query string or a key/value DSN, ``sslpassword=`` too) - and never by searching a
message for the password's characters: a password ``e`` must not turn "connection failed"
into "conn***ction fail***d", and a password ``postgres`` must not hide the user name in
``password authentication failed for user "postgres"``.

The one exception is libpq's *parse* errors for a malformed URL or DSN, which quote a
piece of the input (``unexpected spaces found in "p w"``): :func:`mask_parse_error`
masks the password where it stands as a whole token inside those quoted pieces.
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
_QUOTED = re.compile(r"(\"[^\"]*\")")  # libpq's quoting
_QUOTED_EITHER = re.compile(r"(\"[^\"]*\"|'[^']*')")  # "libpq's" or 'Python's repr' quoting
# a whole string that is one URL: its password runs to the last "@" before the query (a space too)
_WHOLE_URL = re.compile(r"^(?P<head>\s*[A-Za-z][\w+.-]*://[^\s:/@?#]*:)(?P<secret>[^?#]*)@")


def mask_text(text: str) -> str:
    """``text`` with every password in a URL or DSN it contains replaced by ``***``.

    Covers ``scheme://user:PASSWORD@`` anywhere in the text (postgresql, redis, any
    scheme), ``?password=`` / ``&password=`` in query strings and ``password=VALUE`` /
    ``password='quoted value'`` in key/value DSNs (also ``sslpassword``). Nothing else in
    the text changes. Never raises.
    """
    text = _URL_USERINFO.sub(lambda m: f"{m['head']}{MASK}@" if m["secret"] else m[0], text)
    text = _QUERY_PASSWORD.sub(lambda m: m["head"] + MASK, text)
    return _DSN_PASSWORD.sub(lambda m: m["head"] + MASK, text)


def mask_url(url: str) -> str:
    """``url`` (a ``postgresql://`` / ``redis://`` URL or a libpq conninfo string) with its password as ``***``.

    ``postgresql://u:pw@h/db`` -> ``postgresql://u:***@h/db``; ``host=h password=pw`` ->
    ``host=h password=***``; a URL without a password is returned unchanged. The whole
    string is taken as one URL: its password runs to the last ``@``, even if it holds
    characters a URL may not (a space).
    """
    url = _WHOLE_URL.sub(lambda m: f"{m['head']}{MASK}@" if m["secret"] else m[0], url, count=1)
    return mask_text(url)


def passwords_in(given: str) -> list[str]:
    """The passwords written in ``given`` (a URL or DSN), raw and percent-decoded; may be empty.

    Found by the patterns :func:`mask_text` masks, so it works on strings libpq cannot parse.
    """
    found: list[str] = []
    for pattern in (_WHOLE_URL, _URL_USERINFO, _QUERY_PASSWORD, _DSN_PASSWORD):
        for match in pattern.finditer(given):
            secret = match["secret"]
            if len(secret) >= 2 and secret[0] == "'" and secret[-1] == "'":
                secret = secret[1:-1]
            unescaped = re.sub(r"\\(.)", r"\1", secret)  # as libpq reads a DSN value (two\ words)
            for value in (secret, unquote(secret), unescaped):
                if value and value not in found:
                    found.append(value)
    return found


def _bounded(secret: str) -> re.Pattern[str]:
    # a whole token: not glued to letters or digits on either side
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])")


def mask_parse_error(message: str, secrets: Iterable[str]) -> str:
    """A libpq parse error for a malformed URL/DSN, with the password masked where it is quoted.

    libpq quotes pieces of its input in these messages (``invalid percent-encoded token:
    "p%zzss"``). Inside each double-quoted piece, every whole-token occurrence of one of
    ``secrets`` (from :func:`passwords_in`) becomes ``***``; URLs and DSNs are masked as
    in :func:`mask_text`. Text outside quotes is left alone. Use it only for parse errors:
    a server's message quotes user names (``for user "postgres"``), never passwords.
    """
    return mask_text(_mask_quoted(message, secrets, _QUOTED))


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


def error_message(error: BaseException, given: str | None = None) -> str:
    """``str(error)``, stripped, with passwords masked; the class name if the message is empty.

    ``given`` is the URL or DSN the failing call was handed: when ``error`` is a psycopg
    ``ProgrammingError`` (libpq could not parse it), the quoted pieces of the message are
    masked too (:func:`mask_parse_error`). Other errors (connection refused, password
    authentication failed) get :func:`mask_text`, and the pieces of a password libpq read as
    another field (:func:`misread_fragments`) masked where the message quotes them.
    """
    text = str(error).strip() or type(error).__name__
    if not given:
        return mask_text(text)
    secrets = passwords_in(given)
    if type(error).__name__ == "ProgrammingError":
        return mask_parse_error(text, secrets)
    # a password libpq split at an unencoded "@": its tail quoted as a host name, say
    fragments = [fragment for secret in secrets for fragment in misread_fragments(secret)]
    return mask_text(_mask_quoted(text, fragments, _QUOTED_EITHER))


def misread_fragments(secret: str) -> list[str]:
    """The pieces of a password that a URL parser reads as another field when the password
    holds an unencoded ``@``: libpq takes the userinfo to the first ``@``, so what follows
    each ``@`` of the password starts the host (``u:Wrong@Pw7777@h`` -> host
    ``Pw7777@h``), which connection errors quote. Empty for a password without ``@``."""
    parts = secret.split("@")
    pieces = ["@".join(parts[i:]) for i in range(1, len(parts))] + parts[1:]
    return [piece for piece in pieces if piece]
