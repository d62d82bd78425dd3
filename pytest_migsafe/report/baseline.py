"""The baseline: a few figures per test, kept in git and compared run after run.

File format (default ``.migsafe/baseline.json``)::

    {
      "kind": "migsafe-baseline",
      "schema_version": 2,
      "shape_key": "tokens-1",
      "tests": {
        "tests/test_orders.py::test_list_orders": {
          "cache_hit_rate": 0.9,
          "n_plus_one": {"5d1c0a9e4f3b2a17": "SELECT orders.id FROM orders WHERE orders.user_id = ?"},
          "queries": 12,
          "shadows": {"orders-query": "matched"},
          "shapes": {
            "5d1c0a9e4f3b2a17": {"call_sites": {"app/orders.py:45": 11}, "count": 11,
                                 "shape": "SELECT orders.id FROM orders WHERE orders.user_id = ?"}
          }
        }
      }
    }

A figure the test did not produce is left out. Keys are sorted and rates rounded, so
rewriting an unchanged baseline gives the same bytes and a git diff shows only figures
that changed. Update rules (:func:`updated_baseline`): a test that passed in this run gets
its new figures; a test that failed, errored, was skipped or did not run keeps its old
entry; a test listed as removed loses it. A passed test that ran no query is kept
with ``"queries": 0``, so a test that starts querying is a regression.

Shapes are keyed by :func:`~pytest_migsafe.report.shapekey.shape_key` (16 hex digits
from our own canonical tokens of the display shape), never by sqlglot's rendering, which
changes between the sqlglot versions migsafe allows; ``shape_key`` at the top names the
key rules (:data:`~pytest_migsafe.report.shapekey.KEY_VERSION`): a file written under
other rules, or a schema 1 file (``n_plus_one`` a list of display shapes, no ``shapes``),
has its keys derived again from its display shapes when read.

Where each figure comes from (the test's :class:`~pytest_migsafe.report.record.TestRecord`):
``queries``, the statements counted in the call phase; ``shapes``, per shape key the
display shape, its statement count and its count per call site (``path:line``);
``n_plus_one``, the shapes of the N+1 suspects not allowed by ``allow_n_plus_one``;
``cache_hit_rate``, a fraction 0..1 rounded to 4 digits (``INFO stats`` keyspace hits /
(hits + misses) on real Redis); ``shadows``, experiment name -> ``"matched"`` /
``"mismatched"`` / ``"ignored"``. Connections created are not stored: how many a test
opens depends on which test warmed a shared pool first (the test order, the xdist
worker), so it is no baseline figure; a ``connections_created`` read from an older file
is ignored and dropped when the file is rewritten.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pytest_migsafe.report.files import ReportFileError, read_json_object, write_json_atomic
from pytest_migsafe.report.record import RunReport, TestRecord, cache_rating
from pytest_migsafe.report.shapekey import KEY_VERSION, shape_key

BASELINE_KIND = "migsafe-baseline"
BASELINE_SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
RATE_DIGITS = 4
DEFAULT_BASELINE_PATH = os.path.join(".migsafe", "baseline.json")
# when one test runs an experiment twice, the worse result stands
_SHADOW_RANK = {"ignored": 0, "matched": 1, "mismatched": 2}
_FIGURES = {"queries", "n_plus_one", "cache_hit_rate", "connections_created", "shadows", "shapes"}


@dataclass
class ShapeCount:
    """One statement shape of a test in the baseline: ``shape``, the display shape (as
    :func:`~pytest_migsafe.queries.normalize.normalize` rendered it); ``count``, statements
    of it in the call phase; ``call_sites``, ``{"path:line": statements sent from there}``."""

    shape: str
    count: int
    call_sites: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``shape``, ``count``, ``call_sites`` sorted by site."""
        return {"call_sites": dict(sorted(self.call_sites.items())), "count": self.count, "shape": self.shape}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ShapeCount:
        """Rebuild from :meth:`to_dict` output; ``ValueError`` naming ``where`` for a
        missing shape, a count that is not a whole number >= 0 or malformed call sites."""
        if not isinstance(data, dict) or not isinstance(data.get("shape"), str):
            raise ValueError(f"{where}: expected an object with a 'shape' string")
        sites = data.get("call_sites", {})
        if not isinstance(sites, dict) or not all(isinstance(k, str) for k in sites):
            raise ValueError(f"{where}.call_sites: expected call sites mapped to counts")
        return cls(shape=data["shape"], count=_count(data.get("count"), f"{where}.count") or 0,
                   call_sites={k: _count(v, f"{where}.call_sites[{k!r}]") or 0 for k, v in sites.items()})


@dataclass
class BaselineEntry:
    """The figures of one test that a later run is compared against.

    ``queries``: statement count (None: not measured); ``shapes``: ``{shape key:
    ShapeCount}`` (keys from :func:`~pytest_migsafe.report.shapekey.shape_key`);
    ``n_plus_one``: ``{shape key: display shape}`` of the suspects; ``cache_hit_rate``: a
    fraction 0..1 (None: no cache read); ``connections_created``: a count (None: no pool
    observed), kept in memory for readers but neither written nor compared (see the module
    docstring); ``shadows``: ``{experiment name: "matched" | "mismatched" | "ignored"}``,
    the worst result when a test runs an experiment twice.
    """

    queries: int | None = None
    n_plus_one: dict[str, str] = field(default_factory=dict)
    cache_hit_rate: float | None = None
    connections_created: int | None = None
    shadows: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, ShapeCount] = field(default_factory=dict)

    def is_empty(self) -> bool:
        """True when the test produced no stored figure (every field None or empty)."""
        return (self.queries is None and not self.n_plus_one and self.cache_hit_rate is None
                and not self.shadows and not self.shapes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (a dict): figures the test did not produce are left out, shapes and
        N+1 suspects by key, the hit rate rounded to 4 digits, shadows sorted by name;
        ``connections_created`` is not written."""
        data: dict[str, Any] = {}
        if self.queries is not None:
            data["queries"] = self.queries
        if self.shapes:
            data["shapes"] = {key: self.shapes[key].to_dict() for key in sorted(self.shapes)}
        if self.n_plus_one:
            data["n_plus_one"] = dict(sorted(self.n_plus_one.items()))
        if self.cache_hit_rate is not None:
            data["cache_hit_rate"] = round(self.cache_hit_rate, RATE_DIGITS)
        if self.shadows:
            data["shadows"] = dict(sorted(self.shadows.items()))
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str, rekey: bool = False, schema: int = 1) -> BaselineEntry:
        """Rebuild from :meth:`to_dict` output (or a schema 1 entry); ``where`` names the
        entry in error messages; ``rekey`` derives every shape key again from its display
        shape (a file written under other key rules).

        Raises ``ValueError`` for a non-object, an unknown figure, a count that is not a
        whole number >= 0, a rate outside [0, 1], N+1 shapes that are neither a list of
        strings (``schema`` 1 only) nor an object of strings, malformed shapes, or a shadow
        result other than matched / mismatched / ignored.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(data)}")
        unknown = set(data) - _FIGURES
        if unknown:
            raise ValueError(f"{where}: unknown figure {sorted(unknown)[0]!r}")
        suspects = data.get("n_plus_one", {})
        if isinstance(suspects, list) and schema == 1 and all(isinstance(s, str) for s in suspects):
            suspects = {shape_key(s): s for s in suspects}  # schema 1: display shapes only
        elif isinstance(suspects, dict) and all(isinstance(s, str) for s in suspects.values()):
            if rekey:
                suspects = {shape_key(s): s for s in suspects.values()}
        else:
            raise ValueError(f"{where}.n_plus_one: expected statement shapes by key")
        raw_shapes = data.get("shapes", {})
        if not isinstance(raw_shapes, dict):
            raise ValueError(f"{where}.shapes: expected an object of shapes by key")
        shapes: dict[str, ShapeCount] = {}
        for key, raw in raw_shapes.items():
            shape = ShapeCount.from_dict(raw, f"{where}.shapes[{key!r}]")
            add_shape(shapes, shape_key(shape.shape) if rekey else key, shape)
        shadows = data.get("shadows", {})
        if not isinstance(shadows, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v in _SHADOW_RANK for k, v in shadows.items()
        ):
            raise ValueError(f"{where}.shadows: expected experiment names mapped to "
                             "'matched', 'mismatched' or 'ignored'")
        return cls(
            queries=_count(data.get("queries"), f"{where}.queries"),
            n_plus_one=dict(suspects),
            cache_hit_rate=_rate(data.get("cache_hit_rate"), f"{where}.cache_hit_rate"),
            connections_created=_count(data.get("connections_created"), f"{where}.connections_created"),
            shadows=dict(shadows),
            shapes=shapes,
        )


def add_shape(shapes: dict[str, ShapeCount], key: str, shape: ShapeCount) -> None:
    """Add ``shape`` under ``key`` to ``shapes`` (``{key: ShapeCount}``, changed in place):
    two renderings with one key add up, the display shape that sorts first stands."""
    old = shapes.get(key)
    if old is None:
        shapes[key] = ShapeCount(shape.shape, shape.count, dict(shape.call_sites))
        return
    old.count += shape.count
    for site, count in shape.call_sites.items():
        old.call_sites[site] = old.call_sites.get(site, 0) + count
    old.shape = min(old.shape, shape.shape)


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

    ``queries`` is ``record.queries.count``; ``shapes`` its shapes by key with their counts
    and call sites; ``n_plus_one`` the shapes of the suspects not allowed;
    ``cache_hit_rate`` the record's hit rate rounded to 4 digits, when it is rated (left None
    without a cache read, and for a test whose rate says nothing of the cache: an
    ``assert_cache_aside`` proof, a shadow experiment, too few reads; see
    :func:`~pytest_migsafe.report.record.cache_rating`), so the gate compares workloads'
    rates only; ``connections_created`` is ``record.pool.created`` (not written, not compared);
    for an experiment seen twice the worse result stands (mismatched > matched > ignored).
    """
    entry = BaselineEntry()
    if record.queries is not None:
        entry.queries = record.queries.count
        entry.n_plus_one = {shape_key(s.shape): s.shape for s in
                            sorted(record.queries.n_plus_one, key=lambda s: s.shape, reverse=True)
                            if not s.allowed}
        for figure in record.queries.shapes:
            add_shape(entry.shapes, shape_key(figure.shape),
                      ShapeCount(figure.shape, figure.count, dict(figure.call_sites)))
    if record.cache is not None and record.cache.hit_rate is not None and cache_rating(record) is None:
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
        """The file's JSON content (``kind``, ``schema_version``, ``shape_key``, ``tests``),
        tests sorted by node id."""
        return {
            "kind": BASELINE_KIND,
            "schema_version": BASELINE_SCHEMA_VERSION,
            "shape_key": KEY_VERSION,
            "tests": {nodeid: self.tests[nodeid].to_dict() for nodeid in sorted(self.tests)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Baseline:
        """Rebuild from :meth:`to_dict` output (``kind`` and ``schema_version`` are the
        caller's to check; shape keys are derived again when ``shape_key`` is not this
        version's :data:`~pytest_migsafe.report.shapekey.KEY_VERSION`); a missing ``tests`` object or a malformed entry raises
        ``ValueError`` naming it."""
        tests = data.get("tests")
        if not isinstance(tests, dict):
            raise ValueError("'tests': expected an object mapping test ids to figures")
        rekey = data.get("shape_key") != KEY_VERSION
        schema = data.get("schema_version", 1)  # (a list of N+1 shapes is schema 1's form only)
        return cls({nodeid: BaselineEntry.from_dict(entry, f"tests[{nodeid!r}]", rekey, schema)
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
    """The baseline in ``path`` (schema 1 or 2); raises :class:`ReportFileError` when the file
    is missing, unreadable, not JSON, of another kind or schema version, or has a malformed entry (the
    message names the file and the entry)."""
    data = read_json_object(path, BASELINE_KIND, READABLE_SCHEMA_VERSIONS)
    try:
        return Baseline.from_dict(data)
    except ValueError as exc:
        raise ReportFileError(f"{path}: {exc}") from None


def write_baseline(path: str | os.PathLike[str], baseline: Baseline) -> None:
    """Write ``baseline`` to ``path`` atomically, in its stable form (sorted keys, two-space
    indent; see :func:`~pytest_migsafe.report.files.write_json_atomic`). Creates missing
    parent directories; ``OSError`` when the file cannot be written (the old file stays)."""
    write_json_atomic(path, baseline.to_dict())
