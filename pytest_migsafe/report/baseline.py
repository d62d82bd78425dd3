"""The baseline: a few figures per test, kept in git and compared run after run.

File format (default ``.migsafe/baseline.json``)::

    {
      "kind": "migsafe-baseline",
      "schema_version": 1,
      "tests": {
        "tests/test_orders.py::test_list_orders": {
          "cache_hit_rate": 0.9,
          "connections_created": 1,
          "n_plus_one": ["SELECT orders.id FROM orders WHERE orders.user_id = ?"],
          "queries": 12,
          "shadows": {"orders-query": "matched"}
        }
      }
    }

A figure the test did not produce is left out. Keys are sorted and rates rounded, so
rewriting an unchanged baseline gives the same bytes and a git diff shows only figures
that changed. Update rules (:func:`updated_baseline`): a test that passed in this run gets
its new figures; a test that failed, errored, was skipped or did not run keeps its old
entry; a test listed as removed loses it. A passed test that ran no query is kept
with ``"queries": 0``, so a test that starts querying is a regression.

Where each figure comes from (the test's :class:`~pytest_migsafe.report.record.TestRecord`):
``queries``, the statements counted in the call phase; ``n_plus_one``, the shapes of the
N+1 suspects not allowed by ``allow_n_plus_one``; ``cache_hit_rate``, a fraction 0..1
rounded to 4 digits (``INFO stats`` keyspace hits / (hits + misses) on real Redis);
``connections_created``, DBAPI connections the observed pools opened; ``shadows``,
experiment name -> ``"matched"`` / ``"mismatched"`` / ``"ignored"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_migsafe.report.files import ReportFileError, read_json_object, write_json_atomic
from pytest_migsafe.report.record import RunReport, TestRecord

BASELINE_KIND = "migsafe-baseline"
BASELINE_SCHEMA_VERSION = 1
RATE_DIGITS = 4
DEFAULT_BASELINE_PATH = os.path.join(".migsafe", "baseline.json")
# when one test runs an experiment twice, the worse result stands
_SHADOW_RANK = {"ignored": 0, "matched": 1, "mismatched": 2}


@dataclass
class BaselineEntry:
    """The figures of one test that a later run is compared against.

    ``queries``: statement count (None: not measured); ``n_plus_one``: list of statement
    shapes; ``cache_hit_rate``: a fraction 0..1 (None: no cache read);
    ``connections_created``: count (None: no pool observed); ``shadows``: ``{experiment
    name: "matched" | "mismatched" | "ignored"}``, the worst result when a test runs an
    experiment twice.
    """

    queries: int | None = None
    n_plus_one: list[str] = field(default_factory=list)
    cache_hit_rate: float | None = None
    connections_created: int | None = None
    shadows: dict[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when the test produced no figure at all (every field None or empty)."""
        return (self.queries is None and not self.n_plus_one and self.cache_hit_rate is None
                and self.connections_created is None and not self.shadows)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (a dict): figures the test did not produce are left out, N+1 shapes
        deduplicated and sorted, the hit rate rounded to 4 digits, shadows sorted by name."""
        data: dict[str, Any] = {}
        if self.queries is not None:
            data["queries"] = self.queries
        if self.n_plus_one:
            data["n_plus_one"] = sorted(set(self.n_plus_one))
        if self.cache_hit_rate is not None:
            data["cache_hit_rate"] = round(self.cache_hit_rate, RATE_DIGITS)
        if self.connections_created is not None:
            data["connections_created"] = self.connections_created
        if self.shadows:
            data["shadows"] = dict(sorted(self.shadows.items()))
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> BaselineEntry:
        """Rebuild from :meth:`to_dict` output; ``where`` names the entry in error messages.

        Raises ``ValueError`` for a non-object, an unknown figure, a count that is not a
        whole number >= 0, a rate outside [0, 1], N+1 shapes that are not a list of
        strings, or a shadow result other than matched / mismatched / ignored.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(data)}")
        unknown = set(data) - {"queries", "n_plus_one", "cache_hit_rate", "connections_created", "shadows"}
        if unknown:
            raise ValueError(f"{where}: unknown figure {sorted(unknown)[0]!r}")
        shapes = data.get("n_plus_one", [])
        if not isinstance(shapes, list) or not all(isinstance(s, str) for s in shapes):
            raise ValueError(f"{where}.n_plus_one: expected a list of statement shapes")
        shadows = data.get("shadows", {})
        if not isinstance(shadows, dict) or not all(
            isinstance(k, str) and v in _SHADOW_RANK for k, v in shadows.items()
        ):
            raise ValueError(f"{where}.shadows: expected experiment names mapped to "
                             "'matched', 'mismatched' or 'ignored'")
        return cls(
            queries=_count(data.get("queries"), f"{where}.queries"),
            n_plus_one=list(shapes),
            cache_hit_rate=_rate(data.get("cache_hit_rate"), f"{where}.cache_hit_rate"),
            connections_created=_count(data.get("connections_created"), f"{where}.connections_created"),
            shadows=dict(shadows),
        )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: expected a whole number of at least 0, got {value!r}")
    return value


def _rate(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{where}: expected a rate between 0 and 1, got {value!r}")
    return float(value)


def entry_of(record: TestRecord) -> BaselineEntry:
    """The baseline figures of one test record (whatever its outcome).

    ``queries`` is ``record.queries.count``; ``n_plus_one`` the shapes of the suspects
    not allowed; ``cache_hit_rate`` the record's hit rate rounded to 4 digits (left None
    without a cache read); ``connections_created`` is ``record.pool.created``; for an
    experiment seen twice the worse result stands (mismatched > matched > ignored).
    """
    entry = BaselineEntry()
    if record.queries is not None:
        entry.queries = record.queries.count
        entry.n_plus_one = sorted({s.shape for s in record.queries.n_plus_one if not s.allowed})
    if record.cache is not None and record.cache.hit_rate is not None:
        entry.cache_hit_rate = round(record.cache.hit_rate, RATE_DIGITS)
    if record.pool is not None:
        entry.connections_created = record.pool.created
    for shadow in record.shadows:
        old = entry.shadows.get(shadow.name)
        if old is None or _SHADOW_RANK.get(shadow.result, 0) > _SHADOW_RANK.get(old, 0):
            entry.shadows[shadow.name] = shadow.result
    return entry


@dataclass
class Baseline:
    """The baseline figures of every test: ``tests`` maps a pytest node id to its
    :class:`BaselineEntry`."""

    tests: dict[str, BaselineEntry] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON content (``kind``, ``schema_version``, ``tests``), tests sorted by
        node id."""
        return {
            "kind": BASELINE_KIND,
            "schema_version": BASELINE_SCHEMA_VERSION,
            "tests": {nodeid: self.tests[nodeid].to_dict() for nodeid in sorted(self.tests)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        """Rebuild from :meth:`to_dict` output (``kind`` and ``schema_version`` are the
        caller's to check); a missing ``tests`` object or a malformed entry raises
        ``ValueError`` naming it."""
        tests = data.get("tests")
        if not isinstance(tests, dict):
            raise ValueError("'tests': expected an object mapping test ids to figures")
        return cls({nodeid: BaselineEntry.from_dict(entry, f"tests[{nodeid!r}]")
                    for nodeid, entry in tests.items()})


def passed_entries(report: RunReport) -> dict[str, BaselineEntry]:
    """The baseline figures of every test that passed in ``report``: ``{node id: entry}``.

    A passed test without query figures (its record has none, or it is in
    ``report.unmeasured``) sent no statement through a hooked driver in its call phase,
    so it is recorded with ``queries = 0``.
    """
    entries = {}
    for nodeid, record in report.tests.items():
        if record.outcome == "passed":
            entry = entry_of(record)
            if entry.queries is None:
                entry.queries = 0
            entries[nodeid] = entry
    for nodeid, outcome in report.unmeasured.items():
        if outcome == "passed":
            entries[nodeid] = BaselineEntry(queries=0)
    return entries


def baseline_of_run(report: RunReport) -> Baseline:
    """The figures of the tests that passed in ``report``, as a :class:`Baseline`
    (see :func:`passed_entries`)."""
    return Baseline(passed_entries(report))


def updated_baseline(old: Baseline | None, report: RunReport, removed: Iterable[str] = ()) -> Baseline:
    """``old`` updated with this run: passed tests replaced, removed tests dropped, others kept.

    ``old`` None starts from an empty baseline; ``removed`` holds node ids (see
    :func:`pytest_migsafe.report.regressions.removed_tests`). ``old`` is not modified.
    """
    tests = dict(old.tests) if old is not None else {}
    for nodeid in removed:
        tests.pop(nodeid, None)
    tests.update(passed_entries(report))
    return Baseline(tests)


def read_baseline(path: str | os.PathLike[str]) -> Baseline:
    """The baseline in ``path``; raises :class:`ReportFileError` when the file is missing,
    unreadable, not JSON, of another kind or schema version, or has a malformed entry (the
    message names the file and the entry)."""
    data = read_json_object(path, BASELINE_KIND, BASELINE_SCHEMA_VERSION)
    try:
        return Baseline.from_dict(data)
    except ValueError as exc:
        raise ReportFileError(f"{path}: {exc}") from None


def write_baseline(path: str | os.PathLike[str], baseline: Baseline) -> None:
    """Write ``baseline`` to ``path`` atomically, in its stable form (sorted keys, two-space
    indent; see :func:`~pytest_migsafe.report.files.write_json_atomic`). Creates missing
    parent directories; ``OSError`` when the file cannot be written (the old file stays)."""
    write_json_atomic(path, baseline.to_dict())
