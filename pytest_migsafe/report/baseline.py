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
    """The figures of one test that a later run is compared against."""

    queries: int | None = None
    n_plus_one: list[str] = field(default_factory=list)
    cache_hit_rate: float | None = None
    connections_created: int | None = None
    shadows: dict[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when the test produced no figure at all."""
        return (self.queries is None and not self.n_plus_one and self.cache_hit_rate is None
                and self.connections_created is None and not self.shadows)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: figures the test did not produce are left out."""
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
        """Rebuild from :meth:`to_dict` output; ``where`` names the entry in error messages."""
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
    """The baseline figures of one test record."""
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
    """The baseline figures of every test, by node id."""

    tests: dict[str, BaselineEntry] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON content, tests sorted by node id."""
        return {
            "kind": BASELINE_KIND,
            "schema_version": BASELINE_SCHEMA_VERSION,
            "tests": {nodeid: self.tests[nodeid].to_dict() for nodeid in sorted(self.tests)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        """Rebuild from :meth:`to_dict` output; a malformed entry raises ValueError."""
        tests = data.get("tests")
        if not isinstance(tests, dict):
            raise ValueError("'tests': expected an object mapping test ids to figures")
        return cls({nodeid: BaselineEntry.from_dict(entry, f"tests[{nodeid!r}]")
                    for nodeid, entry in tests.items()})


def passed_entries(report: RunReport) -> dict[str, BaselineEntry]:
    """The baseline figures of every test that passed in ``report``.

    The call phase of every test runs under a query counter, so a passed test without
    query figures ran zero queries and is recorded as such.
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
    """The figures of the tests that passed in ``report``, as a baseline."""
    return Baseline(passed_entries(report))


def updated_baseline(old: Baseline | None, report: RunReport, removed: Iterable[str] = ()) -> Baseline:
    """``old`` updated with this run: passed tests replaced, removed tests dropped, others kept."""
    tests = dict(old.tests) if old is not None else {}
    for nodeid in removed:
        tests.pop(nodeid, None)
    tests.update(passed_entries(report))
    return Baseline(tests)


def read_baseline(path: str | os.PathLike[str]) -> Baseline:
    """The baseline in ``path``; raises :class:`ReportFileError` when missing or malformed."""
    data = read_json_object(path, BASELINE_KIND, BASELINE_SCHEMA_VERSION)
    try:
        return Baseline.from_dict(data)
    except ValueError as exc:
        raise ReportFileError(f"{path}: {exc}") from None


def write_baseline(path: str | os.PathLike[str], baseline: Baseline) -> None:
    """Write ``baseline`` to ``path`` atomically, in its stable form."""
    write_json_atomic(path, baseline.to_dict())
