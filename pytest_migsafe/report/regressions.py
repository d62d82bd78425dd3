"""Compare a run with the baseline: regressions, improvements, removed tests.

Rules, per test present in both (only tests that passed in the run are compared, since a
failing test's figures stop where it failed):

- ``queries``: more than the baseline plus the query tolerance is a regression; fewer than
  the baseline minus the tolerance is an improvement. The change names the shapes whose
  counts moved (:class:`ShapeDelta`: ``+4 SELECT ... at app/api/items.py:45``) when both
  sides store shapes.
- ``n_plus_one``: each suspect shape not in the baseline is a regression; each baseline
  shape no longer suspected is an improvement. Shapes are matched by their key
  (:func:`~pytest_migsafe.report.shapekey.shape_key`), not by sqlglot's rendering.
- ``cache_hit_rate``: a fall of more than the hit-rate tolerance is a regression, and so is
  a rate now under the alert line when the baseline's was not; a rise of more than the
  tolerance is an improvement.
- ``connections_created`` is not compared: how many connections a test opens depends on
  which test warmed a shared pool first (the order, the xdist worker).
- ``shadow``: an experiment that matched and now mismatches is a regression; the reverse
  is an improvement.

Removed tests (:func:`removed_tests`): a baseline test id is removed when this run did not
collect it and either its file was collected in full (not narrowed to some of its tests
with ``file.py::name``) or its file no longer exists. Deselection by ``-k``/``-m`` happens
after collection, so a deselected test is never taken for removed; neither is a test in a
file that this run did not collect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_migsafe.report.baseline import Baseline, BaselineEntry

FIGURE_LABELS = {
    "queries": "queries",
    "n_plus_one": "N+1 suspect",
    "cache_hit_rate": "cache hit rate",
    "connections_created": "connections created",
    "shadow": "shadow",
}


@dataclass(frozen=True)
class Tolerances:
    """How far a figure may move before it counts as a change.

    ``queries``: statements (ini ``migsafe_query_tolerance``, default 0); ``hit_rate``: a
    fall or rise of the hit rate, a fraction (ini ``migsafe_hit_rate_tolerance``, 0.05 is
    five percentage points); ``hit_rate_alert``: the alert line, a fraction 0..1 (ini
    ``migsafe_hit_rate_alert``, 0.7).
    """

    queries: int = 0
    hit_rate: float = 0.05
    hit_rate_alert: float = 0.7


@dataclass
class ShapeDelta:
    """How one statement shape of a test moved against the baseline.

    ``delta``: statements now minus statements in the baseline (``+4``, ``-2``); ``shape``:
    the display shape (this run's rendering when it ran, else the baseline's); ``key``: its
    :func:`~pytest_migsafe.report.shapekey.shape_key`; ``call_site``: the ``path:line``
    whose count moved most in the direction of ``delta`` (``""`` when none is known);
    ``before`` / ``after``: the counts.
    """

    delta: int
    shape: str
    key: str
    call_site: str
    before: int
    after: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        return asdict(self)


def shape_deltas(old: BaselineEntry, new: BaselineEntry) -> list[ShapeDelta]:
    """The shapes whose statement counts differ between ``old`` and ``new`` (both with
    stored shapes, else []), largest move first (then by shape)."""
    if not old.shapes or not new.shapes:
        return []
    deltas = []
    for key in set(old.shapes) | set(new.shapes):
        before = old.shapes.get(key)
        after = new.shapes.get(key)
        count_before = before.count if before else 0
        count_after = after.count if after else 0
        if count_before == count_after:
            continue
        sites_before = before.call_sites if before else {}
        sites_after = after.call_sites if after else {}
        sign = 1 if count_after > count_before else -1
        moves = {site: sign * (sites_after.get(site, 0) - sites_before.get(site, 0))
                 for site in set(sites_before) | set(sites_after)}
        site = max(sorted(moves), key=lambda s: moves[s]) if moves else ""
        shown = after.shape if after else (before.shape if before else "")
        deltas.append(ShapeDelta(count_after - count_before, shown, key, site, count_before, count_after))
    deltas.sort(key=lambda d: (-abs(d.delta), -d.delta, d.shape))
    return deltas


@dataclass
class Change:
    """One figure of one test that moved: a regression or an improvement.

    ``figure`` is a key of :data:`FIGURE_LABELS`; ``before`` / ``after`` its baseline and
    new value (a count, a hit rate as a fraction 0..1, a shape for ``n_plus_one`` with
    None on the side where it is absent, or a shadow result); ``subject`` the experiment
    name of a shadow change; ``note`` a remark such as "new N+1 suspect"; ``shapes`` (a
    ``queries`` change) the :class:`ShapeDelta` dicts of the shapes whose counts moved,
    largest first.
    """

    nodeid: str
    figure: str  # a key of FIGURE_LABELS
    before: Any
    after: Any
    subject: str = ""  # the experiment name of a shadow change
    note: str = ""
    shapes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The figure as a reader calls it (``shadow orders-query``)."""
        label = FIGURE_LABELS.get(self.figure, self.figure)
        return f"{label} {self.subject}" if self.subject else label

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields (``nodeid``, ``figure``, ``before``, ``after``,
        ``subject``, ``note``, ``shapes``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        """Rebuild from :meth:`to_dict` output (``shapes`` may be missing: older files);
        ``TypeError`` for a missing or unknown key."""
        return cls(**data)


@dataclass
class Comparison:
    """What changed between the baseline and the run: lists of :class:`Change`, ordered by
    node id, then queries, N+1 shapes, cache hit rate, shadow experiments;
    and ``removed``, the sorted node ids of removed tests."""

    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``regressions``, ``improvements`` (lists of :meth:`Change.to_dict` dicts) and
        ``removed`` (sorted node ids) keys of the report file."""
        return {
            "regressions": [c.to_dict() for c in self.regressions],
            "improvements": [c.to_dict() for c in self.improvements],
            "removed": sorted(self.removed),
        }


def compare(before: Baseline, after: Baseline, tolerances: Tolerances = Tolerances(),
            removed: Iterable[str] = ()) -> Comparison:
    """Regressions and improvements of every test in both ``before`` and ``after``.

    ``before`` is the baseline, ``after`` the run's passed tests as a baseline
    (:func:`~pytest_migsafe.report.baseline.baseline_of_run`); ``removed`` is copied into
    the result, sorted. Tests in only one of them are not compared.
    """
    result = Comparison(removed=sorted(removed))
    for nodeid in sorted(set(before.tests) & set(after.tests)):
        regressions, improvements = compare_entry(nodeid, before.tests[nodeid], after.tests[nodeid],
                                                  tolerances)
        result.regressions.extend(regressions)
        result.improvements.extend(improvements)
    return result


def compare_entry(nodeid: str, old: BaselineEntry, new: BaselineEntry,
                  tolerances: Tolerances) -> tuple[list[Change], list[Change]]:
    """``(regressions, improvements)`` of one test, by the rules in this module's docstring.

    A figure missing (None) on either side is not compared, nor is ``connections_created``.
    """
    worse: list[Change] = []
    better: list[Change] = []
    if old.queries is not None and new.queries is not None:
        if new.queries > old.queries + tolerances.queries:
            worse.append(Change(nodeid, "queries", old.queries, new.queries,
                                shapes=[d.to_dict() for d in shape_deltas(old, new)]))
        elif new.queries < old.queries - tolerances.queries:
            better.append(Change(nodeid, "queries", old.queries, new.queries,
                                 shapes=[d.to_dict() for d in shape_deltas(old, new)]))
        for shape in sorted(new.n_plus_one[key] for key in set(new.n_plus_one) - set(old.n_plus_one)):
            worse.append(Change(nodeid, "n_plus_one", None, shape, note="new N+1 suspect"))
        for shape in sorted(old.n_plus_one[key] for key in set(old.n_plus_one) - set(new.n_plus_one)):
            better.append(Change(nodeid, "n_plus_one", shape, None, note="no longer suspected"))
    if old.cache_hit_rate is not None and new.cache_hit_rate is not None:
        old_rate, new_rate = old.cache_hit_rate, new.cache_hit_rate
        alert = tolerances.hit_rate_alert
        if old_rate - new_rate > tolerances.hit_rate + 1e-9 or new_rate < alert <= old_rate:
            worse.append(Change(nodeid, "cache_hit_rate", old_rate, new_rate,
                                note=_under_alert(new_rate, alert)))
        elif new_rate - old_rate > tolerances.hit_rate + 1e-9:
            better.append(Change(nodeid, "cache_hit_rate", old_rate, new_rate))
    for name in sorted(set(old.shadows) & set(new.shadows)):
        was, now = old.shadows[name], new.shadows[name]
        if was == "matched" and now == "mismatched":
            worse.append(Change(nodeid, "shadow", was, now, subject=name))
        elif was == "mismatched" and now == "matched":
            better.append(Change(nodeid, "shadow", was, now, subject=name))
    return worse, better


def _under_alert(rate: float, alert: float) -> str:
    return f"under the alert line {alert:.0%}" if rate < alert else ""


def removed_tests(
    baseline_ids: Iterable[str],
    collected: set[str],
    narrowed_files: set[str],
    file_exists: Callable[[str], bool],
) -> list[str]:
    """Baseline test ids that no longer exist, by the rule in this module's docstring.

    ``collected``: node ids this run collected; ``narrowed_files``: files collected only
    in part (``file.py::name`` arguments); ``file_exists``: tells whether a file path from
    a node id exists. Returns the removed ids, sorted.
    """
    collected_files = {file_of(nodeid) for nodeid in collected}
    removed = []
    for nodeid in baseline_ids:
        if nodeid in collected:
            continue
        path = file_of(nodeid)
        whole_file_collected = path in collected_files and path not in narrowed_files
        if whole_file_collected or not file_exists(path):
            removed.append(nodeid)
    return sorted(removed)


def file_of(nodeid: str) -> str:
    """The file part of a node id (``tests/test_a.py`` of ``tests/test_a.py::test_b[1]``)."""
    return nodeid.split("::", 1)[0]
