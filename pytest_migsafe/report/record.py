"""The data model: what one test measured, and what a whole run measured.

Capture, cache, pool and shadow code fill these records; the report code renders and
compares them. Every record converts to and from plain JSON-able dicts, so that
pytest-xdist workers can send them to the controller and baselines can store them.
Records hold no SQL parameter values unless the user opted in at capture time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class ShapeFigure:
    """One normalized statement shape within a test: how often, how long, from where."""

    shape: str
    count: int
    total_ms: float
    max_ms: float
    call_sites: dict[str, int] = field(default_factory=dict)

    @property
    def top_site(self) -> str:
        """The call site that sent this shape most often."""
        if not self.call_sites:
            return "<unknown>"
        return max(self.call_sites.items(), key=lambda item: item[1])[0]


@dataclass
class NPlusOne:
    """A shape repeated from one call site at least the N+1 threshold: a suspect."""

    shape: str
    call_site: str
    count: int
    allowed: bool = False


@dataclass
class QueryFigures:
    """The statements of one test's call phase."""

    count: int
    executions: int
    total_ms: float
    budget: int | None = None
    shapes: list[ShapeFigure] = field(default_factory=list)
    n_plus_one: list[NPlusOne] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QueryFigures:
        """Rebuild from :func:`asdict` output."""
        return cls(
            count=data["count"],
            executions=data["executions"],
            total_ms=data["total_ms"],
            budget=data.get("budget"),
            shapes=[ShapeFigure(**s) for s in data.get("shapes", [])],
            n_plus_one=[NPlusOne(**n) for n in data.get("n_plus_one", [])],
        )


@dataclass
class CacheFigures:
    """Redis hits and misses during one test's call phase."""

    hits: int
    misses: int
    backend: str
    by_prefix: dict[str, list[int]] = field(default_factory=dict)
    by_command: dict[str, list[int]] = field(default_factory=dict)
    min_hit_rate: float | None = None
    min_hit_rate_prefix: str | None = None  # the marker's prefix=: the rate checked is that prefix's
    source: str = "server"  # totals from "server" (INFO stats) or "client" (client-side accounting)
    target: float | None = None  # ini migsafe_hit_rate_target
    alert: float | None = None  # ini migsafe_hit_rate_alert: the report marks tests under it

    @property
    def hit_rate(self) -> float | None:
        """hits / (hits + misses), or None when there was no cache read."""
        reads = self.hits + self.misses
        return self.hits / reads if reads else None

    def prefix_hit_rate(self, prefix: str) -> float | None:
        """The client-side hit rate of one key prefix, or None when it had no read."""
        hits, misses = self.by_prefix.get(prefix, (0, 0))
        return hits / (hits + misses) if hits + misses else None

    def under_alert(self) -> bool:
        """True when the test read the cache and its hit rate is below the alert line."""
        rate = self.hit_rate
        return self.alert is not None and rate is not None and rate < self.alert

    def under_target(self) -> bool:
        """True when the test read the cache and its hit rate is below the target."""
        rate = self.hit_rate
        return self.target is not None and rate is not None and rate < self.target

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CacheFigures:
        """Rebuild from :func:`asdict` output (unknown keys, such as ``hit_rate``, are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class Leak:
    """A pooled connection checked out during the test and not returned by its end.

    ``dropped``: it was dropped without ``close()`` and only the garbage collector
    returned it; otherwise it was still checked out.
    """

    pool: str
    call_site: str
    dropped: bool = False


@dataclass
class PoolFigures:
    """Connection-pool behaviour during one test's call phase, summed over its pools."""

    created: int = 0
    closed: int = 0
    invalidated: int = 0
    checkouts: int = 0
    checkins: int = 0
    peak_checked_out: int = 0
    overflow_used: int = 0
    wait_ms_p50: float = 0.0
    wait_ms_p99: float = 0.0
    wait_ms_max: float = 0.0
    timeouts: int = 0
    leaks: list[Leak] = field(default_factory=list)
    pool_sizes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolFigures:
        """Rebuild from :func:`asdict` output."""
        data = dict(data)
        data["leaks"] = [Leak(**leak) for leak in data.get("leaks", [])]
        return cls(**data)


@dataclass
class ShadowFigures:
    """One shadow experiment: control against candidate."""

    name: str
    result: str  # "matched", "mismatched" or "ignored"
    runs: int
    mismatches: int
    ignored: int
    seed: int
    control_queries: int
    candidate_queries: int
    control_p99_ms: float
    candidate_p99_ms: float
    control_errors: int = 0
    candidate_errors: int = 0
    control_p50_ms: float = 0.0
    candidate_p50_ms: float = 0.0
    mode: str = "fail"  # "observe" when no run of it could fail the test
    control_cache_hits: int | None = None  # None: the cache was not measured
    control_cache_misses: int | None = None
    candidate_cache_hits: int | None = None
    candidate_cache_misses: int | None = None


@dataclass
class TestRecord:
    """Everything migsafe measured for one test."""

    __test__ = False  # not a test class, though its name starts with "Test"

    nodeid: str
    outcome: str = "passed"
    queries: QueryFigures | None = None
    cache: CacheFigures | None = None
    pool: PoolFigures | None = None
    shadows: list[ShadowFigures] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; cache records carry their hit rate for readers."""
        data = asdict(self)
        if self.cache is not None:
            data["cache"]["hit_rate"] = self.cache.hit_rate
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestRecord:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            nodeid=data["nodeid"],
            outcome=data.get("outcome", "passed"),
            queries=QueryFigures.from_dict(data["queries"]) if data.get("queries") else None,
            cache=CacheFigures.from_dict(data["cache"]) if data.get("cache") else None,
            pool=PoolFigures.from_dict(data["pool"]) if data.get("pool") else None,
            shadows=[ShadowFigures(**s) for s in data.get("shadows", [])],
        )


@dataclass
class RunReport:
    """All test records of a run, plus one-line notes (for example "fakeredis used").

    ``tests`` holds the tests that measured something; ``unmeasured`` maps every other
    test that ran to its outcome (a passed test there ran its call phase with zero queries).
    """

    tests: dict[str, TestRecord] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    unmeasured: dict[str, str] = field(default_factory=dict)

    def add(self, record: TestRecord) -> None:
        """Add or replace the record of one test."""
        self.tests[record.nodeid] = record

    def note(self, text: str) -> None:
        """Add a note once."""
        if text not in self.notes:
            self.notes.append(text)

    def merge(self, other: RunReport) -> list[str]:
        """Fold another report (an xdist worker's or a CI shard's) into this one.

        A test in both keeps ``other``'s record (last wins); returns those test ids.
        """
        replaced = sorted(nodeid for nodeid in (*other.tests, *other.unmeasured)
                          if nodeid in self.tests or nodeid in self.unmeasured)
        for record in other.tests.values():
            self.unmeasured.pop(record.nodeid, None)
            self.add(record)
        for nodeid, outcome in other.unmeasured.items():
            self.tests.pop(nodeid, None)
            self.unmeasured[nodeid] = outcome
        for text in other.notes:
            self.note(text)
        self.interrupted = self.interrupted or other.interrupted
        return replaced

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, tests sorted by node id so output is stable."""
        return {
            "schema_version": SCHEMA_VERSION,
            "interrupted": self.interrupted,
            "notes": sorted(self.notes),
            "tests": {nodeid: self.tests[nodeid].to_dict() for nodeid in sorted(self.tests)},
            "unmeasured": dict(sorted(self.unmeasured.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """Rebuild from :meth:`to_dict` output (the caller checks schema_version)."""
        return cls(
            tests={k: TestRecord.from_dict(v) for k, v in data.get("tests", {}).items()},
            notes=list(data.get("notes", [])),
            interrupted=bool(data.get("interrupted", False)),
            unmeasured=dict(data.get("unmeasured", {})),
        )
