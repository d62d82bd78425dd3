"""RepeatTracker tallies statements per (shape, origin) and groups them when read: the groups
must be those of grouping each statement as it comes (the rule's definition, written out
here), whatever the order, the flushes, and however often the tally is folded midway."""

from __future__ import annotations

import random
import sys
import threading
from typing import Any

import loops
import pytest
from sqlalchemy import create_engine

from pytest_migsafe.queries import repeats
from pytest_migsafe.queries.callsite import Origin
from pytest_migsafe.queries.counter import count_queries


def _grouped_one_by_one(statements: list[tuple[str, str, Origin]]) -> dict[Any, tuple[Any, ...]]:
    """The groups, statement by statement: per (shape, function, test line); a flush counts once."""
    groups: dict[Any, dict[str, Any]] = {}
    for sql, shape, origin in statements:
        if origin.loop is None:
            continue
        key = (shape, origin.function, origin.test)
        group = groups.setdefault(key, {"sql": sql, "inner": origin.inner, "count": 0, "lines": {},
                                        "flushes": set()})
        if origin.unit_of_work is not None:
            if origin.unit_of_work in group["flushes"]:
                continue
            group["flushes"].add(origin.unit_of_work)
        group["count"] += 1
        group["lines"][origin.loop] = group["lines"].get(origin.loop, 0) + 1
    return {key: (g["sql"], g["inner"], g["count"], list(g["lines"].items()), g["flushes"])
            for key, g in groups.items()}


def _grouped_by_tracker(tracker: repeats.RepeatTracker) -> dict[Any, tuple[Any, ...]]:
    tracker.fold()
    return {key: (g.sample_sql, g.inner, g.count, list(g.lines.items()), g.flushes)
            for key, g in tracker.statements.items()}


def _origins(rng: random.Random) -> list[Origin]:
    """Origins of a few call sites: shared ones (as the call-site cache hands out), fresh ones
    per flush, the test's own (no loop), from two functions and two test lines."""
    found = []
    for i in range(12):
        positions = [(f"app/{i % 3}.py", 100 + i, i), (f"app/loop{i % 2}.py", 200 + i % 4, 2 * i)]
        found.append(Origin(positions if i % 5 else [], function=1000 + i % 2, test_own=not i % 5,
                            unit_of_work=rng.choice([None, None, 7, 8, 9]),
                            test=(f"tests/test_{i % 2}.py", 3000, i % 2)))
    return found


@pytest.mark.parametrize("kept", [1, 2, 5, repeats.TALLY_KEPT])
@pytest.mark.parametrize("seed", range(6))
def test_the_tally_groups_as_one_statement_at_a_time(monkeypatch: pytest.MonkeyPatch, seed: int, kept: int) -> None:
    monkeypatch.setattr(repeats, "TALLY_KEPT", kept)
    rng = random.Random(seed)
    origins = _origins(rng)
    statements = []
    for n in range(400):
        shape = rng.choice(["s1", "s2", "s3"])
        origin = rng.choice(origins) if rng.random() < 0.8 else Origin(  # a fresh one, as deeper stacks get
            [("app/deep.py", 50, 1), ("app/loop0.py", 201, 4)], 1000, False, rng.choice([None, 7, 10 + n]),
            ("tests/test_0.py", 3000, 0))
        statements.append((f"{shape} text {n}", shape, origin))
    tracker = repeats.RepeatTracker()
    for sql, shape, origin in statements:
        tracker.statement(sql, shape, origin)
        assert len(tracker.tally) <= kept
    expected = _grouped_one_by_one(statements)
    assert expected  # (the scenario has groups)
    assert _grouped_by_tracker(tracker) == expected


def _send(engine: Any, n: int) -> None:
    """An application loop (one call site: its statements share one origin, tallied)."""
    with engine.connect() as conn:
        loops.run_statements(conn, "SELECT :i", n)


def test_reading_the_suspects_of_a_counter_other_threads_still_feed_loses_no_statement() -> None:
    """n_plus_one() on an active counter groups the tally while threads add to it: every
    statement must end up in the group once (a fold outside the capture's lock lost the
    increments made on a tally entry it had just read)."""
    engine = create_engine("sqlite://")  # (in memory: a connection of its own for each thread)
    workers, per_worker = 2, 3000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        with count_queries() as counter:
            threads = [threading.Thread(target=_send, args=(engine, per_worker)) for _ in range(workers)]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                counter.n_plus_one(threshold=1)
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    suspects = [s for s in counter.n_plus_one(threshold=1) if "SELECT" in s.shape]
    assert counter.count == workers * per_worker
    assert sum(s.count for s in suspects) == workers * per_worker
