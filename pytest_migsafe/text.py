"""Small text helpers shared by messages and reports."""

from __future__ import annotations


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 query`` / ``3 queries``."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"
