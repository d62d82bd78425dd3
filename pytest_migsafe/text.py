"""Small text helpers shared by messages and reports."""

from __future__ import annotations

import unicodedata


def shorten(text: str, width: int) -> str:
    """``text`` on one line (runs of whitespace become one space), cut to ``width``
    characters, the last three of them ``...``, when longer."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` with thousands separators and the word, plural unless 1: ``1 query``,
    ``3 queries`` (``many`` is the plural; default ``word + "s"``)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"


def display_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: 2 for a wide or full-width character (CJK, most
    emoji: East Asian Width W or F), 0 for a combining mark, 1 for any other."""
    width = 0
    for char in text:
        if char.isascii():
            width += 1
        elif unicodedata.combining(char):
            continue
        else:
            width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width
