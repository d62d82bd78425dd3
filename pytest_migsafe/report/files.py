"""JSON files of migsafe: written atomically and stably, read back with a schema check.

Every file migsafe writes (the baseline, the run report) goes through
:func:`write_json_atomic`: keys sorted, two-space indent, a final newline, written to a
temporary file in the target's directory and moved into place with :func:`os.replace`, so
a reader never sees half a file and an interrupted write leaves the old file whole. A
symlink is written through (its target is replaced, the link stays) and a file keeps its
permission mode.

Every file migsafe reads (a baseline, a run report, ``migsafe report merge`` / ``diff`` /
``pool-size --from-report`` inputs) is read by :func:`read_regular_bytes`: only a regular
file of at most :data:`MAX_JSON_BYTES`, refused before reading otherwise (a named pipe
would wait for a writer forever, ``/dev/zero`` fill the memory).

The run report (``--migsafe-report-json``) is :meth:`RunReport.to_dict` plus
``"kind": "migsafe-report"`` and the comparison with the baseline (``regressions``,
``improvements``, ``removed``) and ``errors``. Durations in it are milliseconds and
rates fractions from 0 to 1, as in :mod:`pytest_migsafe.report.record`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_migsafe.report.record import (
    SCHEMA_VERSION,
    RunReport,
    Scalar,
    is_finite_number,
    list_of,
    object_fields,
    shown,
)

REPORT_KIND = "migsafe-report"
MAX_JSON_BYTES = 1024 ** 3  # a bigger "JSON file" is not one of ours: refused before reading
MAX_SYMLINKS = 40  # links followed from a path written to (Linux's own limit): more is a loop


class ReportFileError(Exception):
    """A migsafe file that is missing, unreadable, not JSON, of another kind or schema
    version, or malformed; the message starts with the file's path."""


def dumps_stable(data: Any) -> str:
    """``data`` as JSON text that only changes where a value changed: keys sorted, two-space
    indent, non-ASCII kept as is, a final newline. ``TypeError`` for a value JSON cannot
    hold."""
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` to ``path`` as stable JSON (:func:`dumps_stable`): all of it or none of it.

    Creates missing parent directories of ``path``. A symlink is written through: its final
    target (a link to a link followed to the end, relative links from their own directory)
    is the file replaced, and the link stays (a baseline shared between checkouts by a link
    gets the new figures). Writes a temporary file beside that target, flushes it to disk
    (``fsync``) and renames it over the target with :func:`os.replace`; on any error the
    temporary file is removed and the error (``OSError``, among them ``ELOOP`` for a symlink
    loop; ``TypeError`` for data JSON cannot hold) propagates, leaving the old file whole. A
    lone surrogate in a string is written as its JSON escape (read back as the same string).
    A file that existed keeps its permission mode (a ``0640`` baseline stays ``0640``); a new
    one gets the mode a plain ``open(path, "w")`` would give it (``0o666`` less the umask),
    not the temporary file's 0600.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    target = final_target(path)
    text = dumps_stable(data)
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    else:
        mode = stat.S_IMODE(existing.st_mode) if stat.S_ISREG(existing.st_mode) else 0o666 & ~current_umask()
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(handle, mode)
        # a lone surrogate (a SQL text read from bytes with surrogateescape, a quoted identifier
        # of such a text in a shape) has no UTF-8 form: written as its JSON escape, ``\\udc80``
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


def final_target(path: str | os.PathLike[str]) -> Path:
    """The file a write to ``path`` should replace: ``path`` itself, or for a symlink the
    end of its chain of links (each relative link read from its own directory; the target
    need not exist). Directories on the way are left as they are. ``OSError`` (``ELOOP``)
    after :data:`MAX_SYMLINKS` links: a loop."""
    target = Path(path)
    for _ in range(MAX_SYMLINKS):
        if not target.is_symlink():
            return target
        target = target.parent / os.readlink(target)  # (an absolute link replaces the whole path)
    raise OSError(errno.ELOOP, f"{os.strerror(errno.ELOOP)} (more than {MAX_SYMLINKS} links)", str(path))


@contextlib.contextmanager
def locked_directory(directory: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (created if missing) for the block: two
    processes updating one file in it (pytest runs writing one baseline) take turns, each
    reading the file after the other wrote it. ``flock`` on the directory itself (no lock
    file is left beside the baseline); where there is no ``fcntl`` (Windows) or the
    directory cannot be opened, the block runs unlocked. ``OSError`` when the directory
    cannot be created."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (closing releases the lock)


def current_umask() -> int:
    """The process's umask (an int such as ``0o022``): from ``/proc/self/status`` on Linux,
    else by ``os.umask``, which can only be read by setting it (it is set back at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_regular_bytes(path: str | os.PathLike[str], kind: str) -> bytes:
    """The bytes of the regular file at ``path`` (a symlink followed), read only when it is
    one and at most :data:`MAX_JSON_BYTES` long: a named pipe would wait forever for a
    writer, a device such as ``/dev/zero`` never end, a huge file fill the memory.

    Raises ``OSError`` when the file cannot be opened or read (``FileNotFoundError`` when it
    is missing), :class:`ReportFileError` naming ``path`` and saying that a regular JSON file
    (a ``kind`` file) is expected when it is a directory, named pipe, device or socket, or
    larger than the cap (checked before reading, and again on what the read returned).
    """
    # O_NONBLOCK: opening a named pipe returns at once instead of waiting for a writer (it
    # changes nothing for a regular file); O_NOCTTY: a terminal device does not become ours
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    handle = os.open(path, flags)
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise ReportFileError(f"{path}: is {_file_type(info.st_mode)}; expected a regular JSON file "
                                  f"(a {kind} file)")
        if info.st_size > MAX_JSON_BYTES:
            raise _too_big(path, info.st_size, kind)
    except BaseException:
        os.close(handle)
        raise
    with open(handle, "rb") as stream:  # (closes the handle)
        content = stream.read(MAX_JSON_BYTES + 1)  # (a file that grew since fstat reads no further)
    if len(content) > MAX_JSON_BYTES:
        raise _too_big(path, len(content), kind)
    return content


def _too_big(path: str | os.PathLike[str], size: int, kind: str) -> ReportFileError:
    return ReportFileError(f"{path}: {size:,} bytes; expected a regular JSON file of at most "
                           f"{MAX_JSON_BYTES:,} bytes (a {kind} file)")


def _file_type(mode: int) -> str:
    """What a file that is not a regular one is, from its ``st_mode``: ``"a named pipe"``..."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_json_object(path: str | os.PathLike[str], kind: str,
                     version: int | tuple[int, ...]) -> dict[str, Any]:
    """The JSON object in ``path``, checked to be a ``kind`` file of schema ``version`` (one
    version, or a tuple of the versions accepted).

    Raises :class:`ReportFileError` when the file is missing or unreadable, not a regular
    file or larger than :data:`MAX_JSON_BYTES` (see :func:`read_regular_bytes`: refused
    before reading), not valid JSON, not an object, or its ``kind`` / ``schema_version`` differ.
    """
    try:
        text = read_regular_bytes(path, kind).decode("utf-8")
    except FileNotFoundError:
        raise ReportFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ReportFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ReportFileError(f"{path}: not UTF-8 text (byte {exc.start}): not a {kind} file") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ReportFileError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ReportFileError(f"{path}: JSON nested too deeply to be a {kind} file") from None
    if not isinstance(data, dict):
        raise ReportFileError(f"{path}: expected a JSON object, found {type(data).__name__}")
    found_kind = data.get("kind")
    if found_kind != kind:
        raise ReportFileError(f"{path}: expected a {kind} file, found kind {found_kind!r}")
    found_version = data.get("schema_version")
    accepted = version if isinstance(version, tuple) else (version,)
    if found_version not in accepted or isinstance(found_version, bool):
        readable = " or ".join(str(v) for v in accepted)
        raise ReportFileError(
            f"{path}: schema_version {found_version!r}, this migsafe reads version {readable}"
        )
    return data


def file_kind(path: str | os.PathLike[str]) -> str | None:
    """The ``kind`` of the migsafe JSON file at ``path`` (None when it has none, is unreadable,
    or is no regular file of at most :data:`MAX_JSON_BYTES`: see :func:`read_regular_bytes`)."""
    try:
        data = json.loads(read_regular_bytes(path, "migsafe").decode("utf-8"))
    except (OSError, ValueError, RecursionError, ReportFileError):  # (a decoding error is a ValueError)
        return None
    return data.get("kind") if isinstance(data, dict) else None


def report_document(
    report: RunReport,
    *,
    regressions: list[dict[str, Any]] | None = None,
    improvements: list[dict[str, Any]] | None = None,
    removed: list[str] | None = None,
    errors: list[str] | None = None,
) -> dict[str, Any]:
    """The run report file's content: the run's figures and what the comparison found.

    :meth:`RunReport.to_dict` plus ``kind`` (``"migsafe-report"``), ``regressions`` and
    ``improvements`` (lists of :meth:`Change.to_dict
    <pytest_migsafe.report.regressions.Change.to_dict>` dicts), ``removed`` (sorted node
    ids) and ``errors`` (lines of text); missing lists are empty.
    """
    document = report.to_dict()
    document["kind"] = REPORT_KIND
    document["regressions"] = list(regressions or [])
    document["improvements"] = list(improvements or [])
    document["removed"] = sorted(removed or [])
    document["errors"] = list(errors or [])
    return document


def read_report_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run report file's content (a dict), checked; raises :class:`ReportFileError` for
    the reasons of :func:`read_json_object`, a ``tests`` that is not an object, or a
    ``regressions`` / ``improvements`` / ``removed`` / ``errors`` that is not a list of what
    :func:`report_document` puts there (changes: objects with a ``nodeid`` and a ``figure``
    string, ``before`` and ``after`` each a finite number, a string or null, shape deltas
    with whole-number counts; node ids and errors: strings). The message names the file and
    the field: ``run.json: regressions[0]: expected an object, got 5``. The test records
    are checked by :func:`run_report_of`."""
    data = read_json_object(path, REPORT_KIND, SCHEMA_VERSION)
    tests = data.get("tests")
    if not isinstance(tests, dict):
        raise ReportFileError(f"{path}: tests: expected an object of test records, got {shown(tests)}")
    try:
        for key in ("regressions", "improvements"):
            list_of(_change)(data.get(key, []), key)
        for key in ("removed", "errors"):
            list_of(_text)(data.get(key, []), key)
    except ValueError as exc:
        raise ReportFileError(f"{path}: {exc}") from None
    return data


_text = Scalar("a string", lambda value: isinstance(value, str))
_whole = Scalar("a whole number", lambda value: isinstance(value, int) and not isinstance(value, bool))
_figure_value = Scalar("a finite number, a string or null",
                       lambda value: value is None or isinstance(value, str) or is_finite_number(value))


def _shape_delta(data: Any, where: str) -> Any:
    """A :class:`~pytest_migsafe.report.regressions.ShapeDelta` dict of a change, checked
    (``where``: its path); ``ValueError`` naming the field."""
    object_fields(data, where, {"delta": _whole, "shape": _text, "key": _text, "call_site": _text,
                                "before": _whole, "after": _whole},
                  ("delta", "shape", "key", "call_site", "before", "after"))
    return data


def _change(data: Any, where: str) -> Any:
    """A :class:`~pytest_migsafe.report.regressions.Change` dict of a report's
    ``regressions`` or ``improvements``, checked (``where``: its path; regressions.py is not
    imported: it imports this module through the baseline); ``ValueError`` naming the field."""
    object_fields(data, where, {"nodeid": _text, "figure": _text, "before": _figure_value,
                                "after": _figure_value, "subject": _text, "note": _text,
                                "shapes": list_of(_shape_delta)},
                  ("nodeid", "figure", "before", "after"))
    return data


def run_report_of(document: dict[str, Any], path: str | os.PathLike[str]) -> RunReport:
    """The :class:`RunReport` in a checked report document (see
    :meth:`RunReport.from_dict`); raises :class:`ReportFileError` naming ``path`` and the
    malformed field: ``run.json: a test record is malformed: tests["t.py::a"].queries.count:
    expected a whole number >= 0, got 'x'``, ``run.json: notes: expected a list, got 'abc'``."""
    try:
        return RunReport.from_dict(document)
    except ValueError as exc:
        text = str(exc)
        what = "a test record is malformed: " if text.startswith("tests[") else ""
        raise ReportFileError(f"{path}: {what}{text}") from None
