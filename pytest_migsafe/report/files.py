"""JSON files of migsafe: written atomically and stably, read back with a schema check.

Every file migsafe writes (the baseline, the run report) goes through
:func:`write_json_atomic`: keys sorted, two-space indent, a final newline, written to a
temporary file in the target directory and moved into place with :func:`os.replace`, so a
reader never sees half a file and an interrupted write leaves the old file whole.

The run report (``--migsafe-report-json``) is :meth:`RunReport.to_dict` plus
``"kind": "migsafe-report"`` and the comparison with the baseline (``regressions``,
``improvements``, ``removed``) and ``errors``. Durations in it are milliseconds and
rates fractions from 0 to 1, as in :mod:`pytest_migsafe.report.record`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pytest_migsafe.report.record import SCHEMA_VERSION, RunReport

REPORT_KIND = "migsafe-report"


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

    Creates missing parent directories, writes a temporary file beside the target, flushes
    it to disk (``fsync``) and renames it over the target with :func:`os.replace`; on any
    error the temporary file is removed and the error (``OSError``, ``TypeError`` for data
    JSON cannot hold) propagates, leaving the old file whole. A lone surrogate in a string is
    written as its JSON escape (read back as the same string). The file gets the mode a
    plain ``open(path, "w")`` would give it (``0o666`` less the umask), not the temporary
    file's 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = dumps_stable(data)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(handle, 0o666 & ~current_umask())
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


def read_json_object(path: str | os.PathLike[str], kind: str,
                     version: int | tuple[int, ...]) -> dict[str, Any]:
    """The JSON object in ``path``, checked to be a ``kind`` file of schema ``version`` (one
    version, or a tuple of the versions accepted).

    Raises :class:`ReportFileError` when the file is missing or unreadable, not valid
    JSON, not an object, or its ``kind`` / ``schema_version`` differ.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
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
    """The ``kind`` of the migsafe JSON file at ``path`` (None when it has none or is unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # (a decoding error is a ValueError)
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
    ``regressions`` / ``improvements`` / ``removed`` / ``errors`` that is not a list."""
    data = read_json_object(path, REPORT_KIND, SCHEMA_VERSION)
    tests = data.get("tests")
    if not isinstance(tests, dict):
        raise ReportFileError(f"{path}: 'tests' must be an object of test records")
    for key in ("regressions", "improvements", "removed", "errors"):
        if not isinstance(data.get(key, []), list):
            raise ReportFileError(f"{path}: {key!r} must be a list")
    return data


def run_report_of(document: dict[str, Any], path: str | os.PathLike[str]) -> RunReport:
    """The :class:`RunReport` in a checked report document; a malformed test record raises
    :class:`ReportFileError` naming ``path`` and the error."""
    try:
        return RunReport.from_dict(document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportFileError(f"{path}: a test record is malformed ({type(exc).__name__}: {exc})") from None
