"""Readable shapes kept between runs: the parser's work on a SQL text, saved in a file.

Working out a text's readable shape (:func:`pytest_migsafe.queries.normalize.normalize`)
parses it with sqlglot: 1-10 ms a text, and importing sqlglot costs about 0.1 s. A suite
runs the same texts run after run, so the plugin keeps what the parser found (the shape and
the tables read and written) in pytest's cache directory (``.pytest_cache/d/migsafe/shapes.json``)
and reads it back at the first shape the next run needs: a run whose texts are all known
neither parses nor imports sqlglot.

What the file holds: for each text, the 32-hex-digit BLAKE2b digest of the text and its
analysis. Only texts without literals are kept (:func:`storable`: values sent as parameters,
as ORMs send them): a text with a literal can hold personal data or a secret, which its shape
could show (a parser's misreading) and its digest would let anyone with the file guess
offline (the shape gives the rest of the text). The file is tagged with the version of the
code that worked the shapes out (a digest of ``normalize.py``, sqlglot's version, Python's and
its Unicode database's): a file of another version is not read. Writes go to a temporary file
renamed over the old one (a reader never sees half a file; concurrent writers, such as
pytest-xdist workers, lose at most each other's additions). At most :data:`MAX_ENTRIES`
analyses and about :data:`MAX_SAVED_BYTES` are kept, this run's first.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

Analysis = tuple[str, tuple[str, ...], tuple[str, ...]]  # (shape, tables read, tables written)

MAX_ENTRIES = 20_000  # about 3 MB of JSON at 150 bytes an analysis
MAX_SAVED_BYTES = 16 * 1024 * 1024  # what save() writes at most (roughly: the shapes' characters)
MAX_FILE_BYTES = 64 * 1024 * 1024  # a bigger file is not this module's: not read
STALE_TEMPORARY_S = 3600  # a temporary file this old was left by a killed writer: removed
FORMAT = 2  # of the file itself

# what may stand in a text kept in the file: quoted identifiers, placeholders, words (whose
# digits are part of a name), a LIMIT or OFFSET count (Django writes them in the text), the 1
# of SELECT 1 (SQLAlchemy's and Django's EXISTS subqueries, Django's exists())
_HARMLESS = (
    r'"(?:[^"]|"")*"|`[^`]*`'
    r"|%\(\w+\)s|%s|\$\d+|\?\d*|(?<![:\w]):[^\W\d]\w*"
    r"|\b(?:LIMIT|OFFSET)\s+\d+\b|\bSELECT\s+1\b(?!\s*[.\d])"  # the constant of EXISTS (SELECT 1 ...)
    r"|[^\W\d][\w$]*"
)
# what is left may not hold a string, dollar-quoted or number literal, nor a comment
_LITERAL_OR_COMMENT = r"['$\d]|--|/\*"
# the last item of a row: SQLAlchemy's insertmanyvalues ends each VALUES row with its counter
_ROW_END = r",\s*(\d+)\s*\)"


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The three patterns, compiled at the first text a store sees (not at start-up)."""
    return (re.compile(_HARMLESS, re.IGNORECASE), re.compile(_LITERAL_OR_COMMENT), re.compile(_ROW_END))


def storable(sql: str) -> bool:
    """True when ``sql`` holds no literal and no comment, so that neither its shape nor its
    digest can give a value away: every value is a placeholder (``%s``, ``%(name)s``, ``$1``,
    ``:name``, ``?``), digits only inside names, as a ``LIMIT``/``OFFSET`` count, the ``1`` of
    ``SELECT 1`` (an ``EXISTS`` subquery's constant), or as the
    row counters of SQLAlchemy's insertmanyvalues (``... AS imp_sen(p0, sen_counter)`` over
    ``VALUES (%(a__0)s, 0), (%(a__1)s, 1), ...``: numbered from 0, in order, known from the
    text's own form)."""
    harmless, literal_or_comment, _ = _patterns()
    if "sen_counter" in sql:
        sql = _without_row_counters(sql)
    return literal_or_comment.search(harmless.sub(" ", sql)) is None


def _without_row_counters(sql: str) -> str:
    """``sql`` less the numbers that end rows as counters 0, 1, 2... in order (any other number,
    out of that sequence, is left for :func:`storable` to refuse)."""
    parts = []
    start = expected = 0
    for match in _patterns()[2].finditer(sql):
        if match.group(1) == str(expected):
            parts.append(sql[start:match.start(1)])
            start = match.end(1)
            expected += 1
    parts.append(sql[start:])
    return "".join(parts)


current: ShapeStore | None = None  # the store normalize reads and fills (set by the plugin)


def use(store: ShapeStore | None) -> ShapeStore | None:
    """Make ``store`` the one :mod:`~pytest_migsafe.queries.normalize` reads before parsing and
    gives what it parses (None: none); returns the store used until now, to put back."""
    global current
    previous, current = current, store
    return previous


def code_version() -> str:
    """The version a saved analysis is valid for, a string such as
    ``"2:<16 hex digits>:sqlglot-30.30.0:python-3.11:unicode-14.0.0"``: the file format,
    ``normalize.py``'s source digest, sqlglot's installed version (``none`` when it is not
    installed), Python's and its Unicode database's. Costs a read of one file and of sqlglot's
    installed metadata (no import of sqlglot, nor of normalize)."""
    source = (Path(__file__).parent / "normalize.py").read_bytes()
    try:
        parser = metadata.version("sqlglot")
    except metadata.PackageNotFoundError:
        parser = "none"
    import unicodedata

    python = "{}.{}".format(*sys.version_info[:2])  # a tox run shares one cache directory between Pythons
    return (f"{FORMAT}:{hashlib.blake2b(source, digest_size=8).hexdigest()}:sqlglot-{parser}"
            f":python-{python}:unicode-{unicodedata.unidata_version}")


def text_digest(sql: str) -> str:
    """The key of ``sql`` in the file: its 16-byte BLAKE2b digest, in hex."""
    return hashlib.blake2b(sql.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class ShapeStore:
    """The analyses saved by earlier runs, and those worked out in this one.

    ``locate()`` returns the file's path (called at the first :meth:`get`, and at :meth:`save`:
    a run that needs no shape never touches the disk). ``version`` defaults to
    :func:`code_version`. An unreadable, malformed or other-version file reads as empty.
    """

    def __init__(self, locate: Callable[[], Path], version: str | None = None,
                 max_entries: int = MAX_ENTRIES) -> None:
        self._locate = locate
        self._version = version
        self.max_entries = max_entries
        self._saved: dict[str, list[Any]] | None = None  # read at the first get()
        self._used: dict[str, list[Any]] = {}  # this run's: found in the file, or worked out
        self.added = 0  # analyses worked out in this run (what save() has to write)
        self.hits = 0

    @property
    def version(self) -> str:
        """The version this store reads and writes (:func:`code_version`, worked out once)."""
        if self._version is None:
            self._version = code_version()
        return self._version

    def get(self, sql: str) -> Analysis | None:
        """The saved analysis of ``sql``, or None (always for a text that is not :func:`storable`)."""
        if not storable(sql):
            return None
        if self._saved is None:
            self._saved = self._read()
        key = text_digest(sql)
        found = self._saved.get(key)
        if found is None:
            return None
        self._used[key] = found
        self.hits += 1
        shape, read, written = found
        return shape, tuple(read), tuple(written)

    def put(self, sql: str, analysis: Analysis) -> None:
        """Keep ``analysis`` of ``sql``, worked out in this run, for :meth:`save` (not for a text
        that is not :func:`storable`)."""
        if not storable(sql):
            return
        shape, read, written = analysis
        self._used[text_digest(sql)] = [shape, list(read), list(written)]
        self.added += 1

    def save(self) -> bool:
        """Write this run's analyses with the file's others (up to ``max_entries``, this run's
        first), atomically; False when there was nothing new to write. Raises ``OSError``
        when the directory cannot be written."""
        if not self.added:
            return False
        path = self._locate()
        merged: dict[str, list[Any]] = {}
        size = 0
        # this run's first, then the file's as it is now (another process may have added)
        for key, value in itertools.chain(self._used.items(), self._read(path).items()):
            if len(merged) >= self.max_entries or size >= MAX_SAVED_BYTES:
                break
            if key not in merged:
                merged[key] = value
                size += 48 + len(value[0]) + sum(len(t) + 3 for t in value[1]) + sum(len(t) + 3 for t in value[2])
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".shapes-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"version": self.version, "analyses": merged}, out, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.added = 0
        return True

    def _read(self, path: Path | None = None) -> dict[str, list[Any]]:
        try:
            path = path or self._locate()
            status = path.stat()
            if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_FILE_BYTES:
                return {}  # (a FIFO would block the read for ever)
            data = json.loads(path.read_text(encoding="utf-8"))
        except Exception:  # missing, unreadable, not JSON, nested too deep: a cache, read as empty
            return {}
        if not isinstance(data, dict) or data.get("version") != self.version:
            return {}
        analyses = data.get("analyses")
        if not isinstance(analyses, dict):
            return {}
        return {key: value for key, value in analyses.items() if _well_formed(value)}


def _remove_stale_temporaries(directory: Path) -> None:
    """Remove the temporary files of writers killed before their rename (SIGKILL, SIGTERM with
    no handler) once they are an hour old: a live writer's is seconds old."""
    now = time.time()
    try:
        for leftover in directory.glob(".shapes-*.tmp"):
            try:
                if now - leftover.stat().st_mtime > STALE_TEMPORARY_S:
                    leftover.unlink()
            except OSError:
                pass
    except OSError:
        pass


def _well_formed(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(tables, list) and all(isinstance(t, str) for t in tables)
                    for tables in value[1:]))
