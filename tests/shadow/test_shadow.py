"""Shadow comparisons as a plain module (no pytest wiring), against real PostgreSQL and Redis."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import types
from collections.abc import Iterator
from typing import Any

import fakeredis
import psycopg
import pytest
import redis as redis_py
from sqlalchemy import Engine, ForeignKey, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from pytest_migsafe.report import record as records
from pytest_migsafe.servers import start_redis
from pytest_migsafe.shadow.diff import value_diff
from pytest_migsafe.shadow.experiment import (
    Experiment,
    Observation,
    Shadow,
    ShadowIsolationError,
    ShadowRegression,
    Trial,
    judge,
    percentile,
)

# Shadow runs in a loop repeat the paths' statements from one call site by design.
pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "shadow_author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Book(Base):
    __tablename__ = "shadow_book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    author_id: Mapped[int] = mapped_column(ForeignKey("shadow_author.id"))


@pytest.fixture
def db(migsafe_db: Session) -> Session:
    """migsafe_db with two authors and three books (all rolled back after the test)."""
    Base.metadata.create_all(migsafe_db.connection())
    migsafe_db.add_all([Author(id=1, name="Ada"), Author(id=2, name="Grace")])
    migsafe_db.flush()
    migsafe_db.add_all([Book(id=1, title="Notes", author_id=1), Book(id=2, title="Sketch", author_id=1),
                        Book(id=3, title="Cobol", author_id=2)])
    migsafe_db.flush()
    return migsafe_db


def books(session: Session) -> int:
    return session.execute(text("SELECT count(*) FROM shadow_book")).scalar_one()


def add_book_then_count(session: Session) -> int:
    session.add(Book(id=99, title="Extra", author_id=2))
    session.flush()
    return books(session)


def titles_n_plus_one(session: Session) -> list[tuple[str, str]]:
    """The old path: one query for authors, then one per author."""
    out = []
    for author_id, name in session.execute(text("SELECT id, name FROM shadow_author ORDER BY id")).all():
        rows = session.execute(text("SELECT title FROM shadow_book WHERE author_id = :a ORDER BY id"),
                               {"a": author_id}).scalars()
        out += [(name, title) for title in rows]
    return out


def titles_joined(session: Session) -> list[tuple[str, str]]:
    """The new path: one join."""
    rows = session.execute(text("SELECT a.name, b.title FROM shadow_author a "
                                "JOIN shadow_book b ON b.author_id = a.id ORDER BY a.id, b.id"))
    return [tuple(row) for row in rows]


def both_orders(lab: Shadow, name: str) -> set[bool]:
    return {trial.candidate_first for trial in lab.experiments[name].trials}


# -- comparing -------------------------------------------------------------------------------
def test_run_returns_the_control_result_and_records_a_match() -> None:
    lab = Shadow(seed=3)
    assert lab.run("double", lambda x: x * 2, lambda x: x + x, 21) == 42
    experiment = lab.experiments["double"]
    assert (experiment.result, experiment.runs, experiment.mismatches) == ("matched", 1, 0)
    assert lab.failure_message() is None


def test_a_mismatch_is_reported_with_a_line_diff_of_the_pretty_printed_values() -> None:
    lab = Shadow(seed=11)
    old = {"id": 7, "tags": ["a", "b"], "total": 10}
    new = {"id": 7, "tags": ["a", "b"], "total": 12}
    assert lab.run("order", lambda: old, lambda: new) is old
    message = lab.failure_message()
    assert message is not None
    assert "shadow experiment 'order': 1 of 1 runs mismatched (0 ignored; seed 11)" in message
    assert "--- control" in message and "+++ candidate" in message
    assert "-{'id': 7, 'tags': ['a', 'b'], 'total': 10}" in message
    assert "+{'id': 7, 'tags': ['a', 'b'], 'total': 12}" in message


def test_long_values_diff_only_the_lines_that_differ() -> None:
    control = {f"key{i}": i for i in range(40)}
    candidate = dict(control, key17=-1)
    diff = value_diff(control, candidate)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert changed == ["- 'key17': 17,", "+ 'key17': -1,"]


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __repr__(self) -> str:
        return "Money(...)"


def test_values_that_print_alike_but_compare_different_say_so() -> None:
    text = value_diff(Money(1), Money(2))
    assert text == "both print as Money(...) (Money vs Money), but the comparison reported them different"


def test_compare_function_decides_equality() -> None:
    lab = Shadow(seed=1)
    lab.run("case", lambda: "ADA", lambda: "ada", compare=lambda c, d: c.lower() == d.lower())
    assert lab.experiments["case"].result == "matched"


def test_ignore_rules_turn_a_mismatch_into_ignored_single_or_list() -> None:
    lab = Shadow(seed=1)
    lab.run("one", lambda: [1, 2], lambda: [2, 1], ignore=lambda c, d: sorted(c) == sorted(d))
    lab.run("many", lambda: 5, lambda: None,
            ignore=[lambda c, d: False, lambda c, d: d is None])
    lab.run("none-apply", lambda: 5, lambda: 6, ignore=[lambda c, d: d is None])
    assert lab.experiments["one"].result == "ignored"
    assert lab.experiments["many"].result == "ignored"
    assert (lab.experiments["many"].ignored, lab.experiments["many"].mismatches) == (1, 0)
    assert lab.experiments["none-apply"].result == "mismatched"
    assert [e.name for e in lab.failing()] == ["none-apply"]


def test_ignore_rules_receive_the_exception_when_a_path_raised() -> None:
    seen = []

    def candidate() -> int:
        raise TimeoutError("slow")

    lab = Shadow(seed=1)
    lab.run("timeout", lambda: 1, candidate,
            ignore=lambda c, d: seen.append((c, d)) or isinstance(d, TimeoutError))
    assert lab.experiments["timeout"].result == "ignored"
    assert seen[0][0] == 1 and isinstance(seen[0][1], TimeoutError)


def test_clean_changes_what_the_diff_shows_not_what_is_compared() -> None:
    lab = Shadow(seed=1)
    control = {"total": 10, "at": "2024-01-01T00:00:00.123"}
    candidate = {"total": 11, "at": "2024-01-01T00:00:00.456"}
    lab.run("clean", lambda: control, lambda: candidate,
            clean=lambda v: {k: v for k, v in v.items() if k != "at"})
    message = lab.failure_message()
    assert message is not None
    assert "-{'total': 10}" in message and "+{'total': 11}" in message
    assert "2024" not in message
    lab2 = Shadow(seed=1)
    lab2.run("same-after-clean", lambda: {"at": 1}, lambda: {"at": 2}, clean=lambda v: {})
    assert lab2.experiments["same-after-clean"].result == "mismatched"


# -- errors ------------------------------------------------------------------------------------
def raiser(kind: type[Exception], message: str) -> Any:
    def path(*args: Any) -> Any:
        raise kind(message)
    return path


def test_same_error_type_and_message_is_a_match_and_the_control_error_is_reraised() -> None:
    lab = Shadow(seed=1)
    with pytest.raises(KeyError, match="missing"):
        lab.run("err", raiser(KeyError, "missing"), raiser(KeyError, "missing"))
    experiment = lab.experiments["err"]
    assert (experiment.result, experiment.errors("control"), experiment.errors("candidate")) == ("matched", 1, 1)


def test_a_different_error_message_is_a_mismatch_showing_both_errors() -> None:
    lab = Shadow(seed=1)
    with pytest.raises(ValueError, match="bad price"):
        lab.run("err", raiser(ValueError, "bad price"), raiser(ValueError, "price < 0"))
    message = lab.failure_message()
    assert message is not None
    assert "control raised ValueError: bad price" in message
    assert "candidate raised ValueError: price < 0" in message


def test_a_different_error_type_is_a_mismatch_and_compare_errors_can_relax_it() -> None:
    lab = Shadow(seed=1)
    with pytest.raises(LookupError):
        lab.run("type", raiser(LookupError, "x"), raiser(KeyError, "x"))
    assert lab.experiments["type"].result == "mismatched"
    with pytest.raises(ValueError):
        lab.run("loose", raiser(ValueError, "a"), raiser(ValueError, "b"),
                compare_errors=lambda c, d: type(c) is type(d))
    assert lab.experiments["loose"].result == "matched"


def test_a_candidate_error_is_captured_not_raised_and_mismatches_a_value() -> None:
    lab = Shadow(seed=1)
    assert lab.run("x", lambda: 3, raiser(RuntimeError, "boom")) == 3
    message = lab.failure_message()
    assert message is not None
    assert "control returned 3" in message and "candidate raised RuntimeError: boom" in message


def test_the_control_error_is_reraised_after_the_run_is_recorded() -> None:
    calls = []
    lab = Shadow(seed=1)
    with pytest.raises(ZeroDivisionError):
        lab.run("div", lambda: 1 / 0, lambda: calls.append("candidate") or 0)
    assert calls == ["candidate"]
    assert lab.figures()[0].control_errors == 1
    assert lab.figures()[0].result == "mismatched"


# -- modes, order, aggregation ---------------------------------------------------------------------
def test_observe_mode_records_the_mismatch_without_failing() -> None:
    lab = Shadow(seed=1, mode="observe")
    lab.run("o", lambda: 1, lambda: 2)
    assert lab.experiments["o"].result == "mismatched"
    assert lab.failure_message() is None
    assert [e.name for e in lab.observed()] == ["o"]
    assert lab.figures()[0].mode == "observe"


def test_per_run_mode_overrides_the_lab_mode() -> None:
    lab = Shadow(seed=1)
    lab.run("quiet", lambda: 1, lambda: 2, mode="observe")
    assert lab.failure_message() is None
    lab.mode = "observe"
    lab.run("loud", lambda: 1, lambda: 2, mode="fail")
    assert [e.name for e in lab.failing()] == ["loud"]


def test_order_is_random_per_run_and_reproducible_from_the_seed_and_label() -> None:
    def orders(seed: int, label: str) -> list[bool]:
        lab = Shadow(seed=seed, label=label)
        for _ in range(40):
            lab.run("o", lambda: 1, lambda: 1)
        return [t.candidate_first for t in lab.experiments["o"].trials]

    first = orders(5, "test_a")
    assert first == orders(5, "test_a")
    assert True in first and False in first
    assert first != orders(6, "test_a") and first != orders(5, "test_b")


def test_the_order_actually_followed_is_the_recorded_one() -> None:
    lab = Shadow(seed=2)
    for _ in range(10):
        ran: list[str] = []
        lab.run("o", lambda ran=ran: ran.append("control"), lambda ran=ran: ran.append("candidate"))
        assert ran[0] == ("candidate" if lab.experiments["o"].trials[-1].candidate_first else "control")


def test_runs_with_one_name_aggregate_into_one_experiment() -> None:
    lab = Shadow(seed=4)
    lab.run("x", lambda n: n, lambda n: n, 1)
    lab.run("x", lambda n: n, lambda n: n + 1, 2)
    lab.run("y", lambda: 0, lambda: 0)
    figures = lab.figures()
    assert [(f.name, f.runs, f.mismatches, f.result) for f in figures] == [
        ("x", 2, 1, "mismatched"), ("y", 1, 0, "matched")]
    assert all(f.seed == 4 for f in figures)
    message = lab.failure_message()
    assert message is not None and "run 2 (x(2)" in message and "run 1 " not in message


def test_shadow_figures_survive_the_record_round_trip_and_old_records_load() -> None:
    lab = Shadow(seed=9)
    lab.run("x", lambda: 1, lambda: 2)
    record = records.TestRecord(nodeid="t", shadows=lab.figures())
    data = record.to_dict()
    assert records.TestRecord.from_dict(data).shadows == record.shadows
    for key in ("control_p50_ms", "candidate_p50_ms", "mode", "control_cache_hits",
                "control_cache_misses", "candidate_cache_hits", "candidate_cache_misses"):
        del data["shadows"][0][key]
    old = records.TestRecord.from_dict(data).shadows[0]
    assert (old.name, old.mode, old.control_cache_hits) == ("x", "fail", None)


def test_before_each_and_after_each_wrap_every_path_without_pytest() -> None:
    events: list[str] = []
    lab = Shadow(seed=1, before_each=lambda: events.append("before"),
                 after_each=lambda: events.append("after"))
    lab.run("x", lambda: events.append("control"), lambda: events.append("candidate"))
    assert events in (["before", "control", "after", "before", "candidate", "after"],
                      ["before", "candidate", "after", "before", "control", "after"])


def test_mismatched_runs_shown_are_capped_unless_verbose() -> None:
    lab = Shadow(seed=1)
    lab.run_many("cap", lambda n: n, lambda n: -n, range(1, 6))
    short, full = lab.failure_message(), lab.failure_message(verbose=True)
    assert short is not None and full is not None
    assert short.count("ran first") == 3 and "... and 2 more mismatched runs (use -v to see all)" in short
    assert full.count("ran first") == 5


async def async_abs(n: int) -> int:
    return abs(n)


@pytest.mark.parametrize("call, error", [
    (lambda lab: lab.run("", abs, abs), "name expects a non-empty string"),
    (lambda lab: lab.run("x", abs, 3), "candidate expects a callable"),
    (lambda lab: lab.run("x", abs, abs, compare="=="), "compare expects a callable"),
    (lambda lab: lab.run("x", abs, abs, ignore=[None]), "ignore expects a callable"),
    (lambda lab: lab.run("x", abs, abs, mode="loud"), "mode expects one of 'fail', 'observe'"),
    (lambda lab: lab.run("x", abs, abs, flush=3), "flush= expects a Redis client or a callable"),
    (lambda lab: lab.run("x", abs, abs, 1, session=object()), "session= expects a SQLAlchemy"),
    (lambda lab: lab.run("x", abs, async_abs, 1), "candidate is a coroutine function"),
    (lambda lab: lab.run_many("x", abs, abs, [], ), "inputs is empty"),
    (lambda lab: lab.run_many("x", abs, abs, [1], repeat=0), "repeat expects a whole number >= 1"),
    (lambda lab: lab.run_many("x", abs, abs, [1], warmup=-1), "warmup expects a whole number >= 0"),
])
def test_bad_arguments_are_clear_errors(call: Any, error: str) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        call(Shadow(seed=1))


def test_setting_a_bad_mode_on_the_lab_is_refused() -> None:
    lab = Shadow(seed=1)
    with pytest.raises(ValueError, match="mode expects one of"):
        lab.mode = "strict"


# -- percentiles and run_many ---------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    samples = [float(x) for x in (5, 1, 4, 2, 3, 10, 9, 8, 7, 6)]
    assert percentile(samples, 50) == 5.0
    assert percentile(samples, 90) == 9.0
    assert percentile(samples, 99) == 10.0  # fewer than 100 samples: p99 is the maximum
    hundred = [float(x) for x in range(1, 101)]
    assert percentile(hundred, 99) == 99.0
    assert percentile(hundred, 100) == 100.0
    assert percentile([3.0], 1) == 3.0
    assert percentile([], 99) == 0.0
    with pytest.raises(ValueError, match="0 < p <= 100"):
        percentile(samples, 0)


def test_run_many_takes_tuples_as_args_and_anything_else_as_one_arg() -> None:
    lab = Shadow(seed=1)
    result = lab.run_many("add", lambda a, b=0: a + b, lambda a, b=0: b + a, [(1, 2), 5, (7,)], repeat=2)
    assert result.runs == 6 and result.mismatches == 0
    assert [t.args for t in result.trials] == [(1, 2), (5,), (7,)] * 2
    assert [t.control.value for t in result.trials] == [3, 5, 7] * 2


def test_run_many_warms_each_path_up_once_unrecorded() -> None:
    calls: list[tuple[str, int]] = []
    lab = Shadow(seed=1)
    result = lab.run_many("warm", lambda n: calls.append(("control", n)),
                          lambda n: calls.append(("candidate", n)), [3, 4])
    assert calls[:2] == [("control", 3), ("candidate", 3)]
    assert sorted(calls[2:]) == [("candidate", 3), ("candidate", 4), ("control", 3), ("control", 4)]
    assert result.runs == 2 and lab.experiments["warm"].runs == 2
    calls.clear()
    lab.run_many("cold", lambda n: calls.append(("control", n)), lambda n: calls.append(("candidate", n)),
                 [3], warmup=0)
    assert len(calls) == 2


def test_run_many_alternates_which_path_goes_first() -> None:
    lab = Shadow(seed=8)
    result = lab.run_many("alt", abs, abs, range(7), repeat=2)
    firsts = [t.candidate_first for t in result.trials]
    assert all(a != b for a, b in itertools.pairwise(firsts))


def test_run_many_counts_errors_mismatches_and_aggregates_with_run() -> None:
    def candidate(n: int) -> int:
        if n % 4 == 0:
            raise ValueError(f"bad {n}")
        return n

    lab = Shadow(seed=1)
    lab.run("mixed", abs, abs, 1)
    result = lab.run_many("mixed", abs, candidate, range(1, 9))
    assert (result.runs, result.mismatches, result.errors("candidate")) == (8, 2, 2)
    assert (result.control_error_rate, result.candidate_error_rate) == (0.0, 0.25)
    assert lab.experiments["mixed"].runs == 9
    assert lab.figures()[0].candidate_errors == 2


def observation(path: str, ms: float, error: Exception | None = None) -> Observation:
    return Observation(path, value=None, error=error, seconds=ms / 1000)


def synthetic(control_ms: list[float], candidate_ms: list[float],
              candidate_errors: int = 0, control_errors: int = 0) -> Experiment:
    """An experiment from given durations: the assertion logic without any timing noise."""
    experiment = Experiment("synthetic", seed=0)
    for i, (c, d) in enumerate(zip(control_ms, candidate_ms)):
        c_error = ValueError("c") if i < control_errors else None
        d_error = ValueError("d") if i < candidate_errors else None
        trial = Trial("synthetic", i + 1, (i,), {}, observation("control", c, c_error),
                      observation("candidate", d, d_error), i % 2 == 1, "matched", "fail")
        experiment.trials.append(trial)
    return experiment


def test_p99_assertion_compares_candidate_to_control_with_a_tolerance() -> None:
    control = [10.0] * 19 + [20.0]
    synthetic(control, [10.0] * 19 + [21.9]).assert_p99_not_worse(0.1)  # 21.9 <= 22.0
    synthetic(control, [1.0] * 20).assert_p99_not_worse(0.0)
    with pytest.raises(ShadowRegression, match=r"candidate p99 22\.100 ms > control p99 20\.000 ms \+ 10% = 22\.000 ms"):
        synthetic(control, [10.0] * 19 + [22.1]).assert_p99_not_worse(0.1)
    with pytest.raises(ShadowRegression, match="nearest-rank p99"):
        synthetic(control, [20.5] * 20).assert_p99_not_worse(0.0)


def test_error_rate_assertion_compares_candidate_to_control_with_a_tolerance() -> None:
    synthetic([1.0] * 10, [1.0] * 10, candidate_errors=2, control_errors=2).assert_error_rate_flat()
    synthetic([1.0] * 10, [1.0] * 10, candidate_errors=1).assert_error_rate_flat(0.1)
    with pytest.raises(ShadowRegression, match=r"candidate error rate 20\.00% \(2 of 10\) > control "
                                               r"error rate 10\.00% \(1 of 10\) \+ 0\.00%"):
        synthetic([1.0] * 10, [1.0] * 10, candidate_errors=2, control_errors=1).assert_error_rate_flat()
    with pytest.raises(ValueError, match="tolerance expects a number >= 0"):
        synthetic([1.0], [1.0]).assert_error_rate_flat(-0.1)
    with pytest.raises(ValueError, match="has no runs"):
        Experiment("empty", 0).assert_p99_not_worse()


def test_p99_assertion_on_real_work_fails_for_a_costlier_candidate_and_passes_reversed(
        migsafe_db: Session) -> None:
    """pg_sleep(0.25) is a floor of 250 ms a run; the other path is a bare SELECT 1 (< 1 ms).

    A wrong verdict would need the fast path's slowest run to stall for over 225 ms:
    the outcome is certain, not a guess near a threshold.
    """
    def fast(i: int) -> int:
        return migsafe_db.execute(text("SELECT 1")).scalar_one()

    def slow(i: int) -> int:
        return migsafe_db.execute(text("SELECT 1 FROM pg_sleep(0.25)")).scalar_one()

    lab = Shadow(seed=1)
    worse = lab.run_many("slower", fast, slow, range(6))
    assert worse.mismatches == 0
    assert worse.candidate_p50_ms >= 250.0
    with pytest.raises(ShadowRegression, match="candidate p99"):
        worse.assert_p99_not_worse(tolerance=0.1)
    better = lab.run_many("faster", slow, fast, range(6))
    better.assert_p99_not_worse(tolerance=0.1)
    assert better.control_p50_ms >= 250.0


def test_error_rate_assertion_on_real_database_errors(migsafe_db: Session) -> None:
    def old(n: int) -> int:
        return migsafe_db.execute(text("SELECT 100 / :n"), {"n": n + 1}).scalar_one()

    def new(n: int) -> int:
        return migsafe_db.execute(text("SELECT 100 / :n"), {"n": n % 3}).scalar_one()  # 0 every third

    lab = Shadow(seed=1, session=migsafe_db, mode="observe")
    result = lab.run_many("division", old, new, range(9))
    assert (result.errors("control"), result.errors("candidate")) == (0, 3)
    with pytest.raises(ShadowRegression, match=r"DivisionByZero"):
        result.assert_error_rate_flat()
    lab.run_many("same", old, old, range(9)).assert_error_rate_flat()


# -- the database: same starting state, measured per path ---------------------------------------------
def test_savepoints_keep_a_candidate_insert_from_the_control_in_either_order(db: Session) -> None:
    lab = Shadow(seed=1, session=db)
    for _ in range(12):
        assert lab.run("insert", books, add_book_then_count, db) == 3
    experiment = lab.experiments["insert"]
    assert both_orders(lab, "insert") == {True, False}
    assert [t.candidate.value for t in experiment.trials] == [4] * 12
    assert experiment.mismatches == 12
    assert books(db) == 3


def test_without_a_session_the_candidate_insert_leaks_into_the_control(db: Session) -> None:
    """The contrast: what the savepoint prevents does happen without it."""
    lab = Shadow(seed=1)

    def add_once(session: Session) -> int:
        session.execute(text("INSERT INTO shadow_book (title, author_id) VALUES ('x', 1)"))
        return books(session)

    lab.run_many("leak", books, add_once, [(db,)] * 4)
    seen = [t.control.value for t in lab.experiments["leak"].trials]
    assert seen != [3, 3, 3, 3]


def test_a_path_that_commits_migsafe_db_is_still_undone(db: Session) -> None:
    def commit_a_book(session: Session) -> int:
        session.add(Book(id=50, title="Committed", author_id=1))
        session.commit()
        return books(session)

    lab = Shadow(seed=1, session=db)
    for _ in range(6):
        lab.run("commit", lambda s: books(s) + 1, commit_a_book, db)
    assert both_orders(lab, "commit") == {True, False}
    assert lab.experiments["commit"].result == "matched"
    assert books(db) == 3


def test_a_path_that_commits_a_plain_session_is_an_isolation_error(migsafe_engine: Engine) -> None:
    with migsafe_engine.begin() as conn:
        conn.execute(text("CREATE TABLE shadow_commit_probe (id int)"))
    try:
        with Session(migsafe_engine) as session:
            def commit(s: Session) -> None:
                s.execute(text("INSERT INTO shadow_commit_probe VALUES (1)"))
                s.commit()

            lab = Shadow(seed=1, session=session)
            with pytest.raises(ShadowIsolationError, match="committed or rolled back"):
                lab.run("commit", lambda s: None, commit, session)
    finally:
        with migsafe_engine.begin() as conn:
            conn.execute(text("DROP TABLE shadow_commit_probe"))


def test_savepoints_on_a_sqlalchemy_connection(migsafe_engine: Engine) -> None:
    with migsafe_engine.connect() as conn, conn.begin():
        conn.execute(text("CREATE TEMP TABLE t (id int)"))

        def insert(c: Any) -> int:
            c.execute(text("INSERT INTO t VALUES (1)"))
            return c.execute(text("SELECT count(*) FROM t")).scalar_one()

        lab = Shadow(seed=1, session=conn)
        for _ in range(6):
            lab.run("conn", insert, insert, conn)
        assert lab.experiments["conn"].result == "matched"
        assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 0


def test_savepoints_on_a_psycopg_connection(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TEMP TABLE t (id int)")

        def insert(c: psycopg.Connection) -> int:
            c.execute("INSERT INTO t VALUES (1)")
            return c.execute("SELECT count(*) FROM t").fetchone()[0]

        def fails(c: psycopg.Connection) -> int:
            c.execute("INSERT INTO t VALUES (1)")
            return c.execute("SELECT 1 / 0").fetchone()[0]

        lab = Shadow(seed=1, session=conn)
        for _ in range(6):
            assert lab.run("pg", insert, insert, conn) == 1
        assert lab.experiments["pg"].result == "matched"
        assert lab.run("pg-error", insert, fails, conn) == 1  # the aborted savepoint is rolled back
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


def test_queries_are_counted_per_path_with_their_shapes(db: Session) -> None:
    lab = Shadow(seed=1, session=db)
    assert lab.run("titles", titles_n_plus_one, titles_joined, db) == titles_joined(db)
    trial = lab.experiments["titles"].trials[0]
    assert (trial.control.queries, trial.candidate.queries) == (3, 1)
    assert sorted(trial.control.shapes.values()) == [1, 2]
    assert len(trial.candidate.shapes) == 1
    lab.run("titles", titles_n_plus_one, titles_joined, db)
    figures = lab.figures()[0]
    assert (figures.control_queries, figures.candidate_queries, figures.result) == (6, 2, "matched")


def test_objects_loaded_by_one_path_are_not_served_to_the_other(db: Session) -> None:
    """session.get() answers from the identity map; the session is expired around each path."""
    db.get(Author, 1)  # the test itself has it loaded

    def name(session: Session) -> str:
        return session.get(Author, 1).name

    lab = Shadow(seed=1, session=db)
    for _ in range(6):
        lab.run("get", name, name, db)
    trials = lab.experiments["get"].trials
    assert both_orders(lab, "get") == {True, False}
    assert [(t.control.queries, t.candidate.queries) for t in trials] == [(1, 1)] * 6


def rename(session: Session, name: str) -> Author:
    author = session.get(Author, 1)
    author.name = name
    session.flush()
    return author


def renamed_authors(session: Session, shout: bool) -> list[Author]:
    """Every author, renamed in memory only (no flush) when ``shout``."""
    authors = list(session.scalars(select(Author).order_by(Author.id)))
    for author in authors:
        author.name = author.name.upper() if shout else author.name
    return authors


def test_orm_objects_are_compared_as_each_path_left_them(db: Session) -> None:
    """Both paths share the Session, so they return the same identity-map object, which the
    rollback after each path expires: compared afterwards, both showed the rolled-back row and
    a candidate writing another value matched (the paths' own reads of .name, the control of
    this test, mismatched). Each value is now copied as its path left it; its diff shows the
    rows, and a compare= written for the objects reads the copies' attributes."""
    lab = Shadow(seed=1, session=db, mode="observe")
    for _ in range(4):  # (each order of the paths)
        lab.run("rename", lambda: rename(db, "Ann"), lambda: rename(db, "ANN"))
        lab.run("rename-name", lambda: rename(db, "Ann").name, lambda: rename(db, "ANN").name)
        lab.run("rename-same", lambda: rename(db, "Ann"), lambda: rename(db, "Ann"))
        lab.run("list", lambda: renamed_authors(db, False), lambda: renamed_authors(db, True))
        lab.run("by-id", lambda: rename(db, "Ann"), lambda: rename(db, "ANN"), compare=lambda a, b: a.id == b.id)
    assert both_orders(lab, "rename") == {True, False}
    results = {name: {trial.result for trial in experiment.trials} for name, experiment in lab.experiments.items()}
    assert results == {"rename": {"mismatched"}, "rename-name": {"mismatched"}, "rename-same": {"matched"},
                       "list": {"mismatched"}, "by-id": {"matched"}}
    diff = lab.experiments["rename"].trials[0].diff()
    assert "-Author(id=1, name='Ann')" in diff and "+Author(id=1, name='ANN')" in diff
    assert db.get(Author, 1).name == "Ada"  # (both paths undone)


@dataclasses.dataclass(frozen=True)
class Held:
    author: Author
    n: int


Pair = collections.namedtuple("Pair", "author n")


def test_orm_objects_in_any_container_are_compared_as_each_path_left_them(db: Session) -> None:
    """Named tuples, OrderedDict, defaultdict and dataclass instances holding ORM objects were
    compared as they were after the rollback (both paths' the same identity-map object):
    a rename matched. Each is copied as its path left it, of its own type."""
    lab = Shadow(seed=1, session=db, mode="observe")
    wraps = {"pair": lambda a: Pair(a, 1), "ordered": lambda a: collections.OrderedDict(a=a),
             "default": lambda a: collections.defaultdict(list, a=[a]), "dataclass": lambda a: Held(a, 1),
             "list-subclass": lambda a: type("Authors", (list,), {})([a])}
    for _ in range(4):  # (each order of the paths)
        for name, wrap in wraps.items():
            lab.run(name, lambda wrap=wrap: wrap(rename(db, "Ann")), lambda wrap=wrap: wrap(rename(db, "ANN")))
            lab.run(f"{name}-same", lambda wrap=wrap: wrap(rename(db, "Ann")), lambda wrap=wrap: wrap(rename(db, "Ann")))
    results = {name: {trial.result for trial in experiment.trials} for name, experiment in lab.experiments.items()}
    assert results == {**{name: {"mismatched"} for name in wraps}, **{f"{name}-same": {"matched"} for name in wraps}}
    compared = [lab.experiments[name].trials[0].control.value for name in ("pair", "ordered", "default", "dataclass")]
    assert [type(value) for value in compared] == [Pair, collections.OrderedDict, collections.defaultdict, Held]
    assert "+Pair(author=Author(id=1, name='ANN'), n=1)" in lab.experiments["pair"].trials[0].diff()


def test_an_orm_object_expired_by_a_commit_in_the_path_is_compared_by_its_identity(db: Session) -> None:
    """A commit inside a path expires every object: its copy held no loaded value, and two
    copies of one class with no loaded value in common matched whatever rows they were (row 2
    returned for row 1 matched). The copy keeps the object's identity (its primary key)."""
    def get_then_commit(author_id: int) -> Author:
        author = db.get(Author, author_id)
        db.commit()  # (migsafe_db: a savepoint released; the path's own savepoint undoes it)
        return author

    lab = Shadow(seed=1, session=db, mode="observe")
    for _ in range(4):
        lab.run("wrong-row", lambda: db.get(Author, 1), lambda: get_then_commit(2))
        lab.run("right-row", lambda: db.get(Author, 1), lambda: get_then_commit(1))
    results = {name: {trial.result for trial in experiment.trials} for name, experiment in lab.experiments.items()}
    assert results == {"wrong-row": {"mismatched"}, "right-row": {"matched"}}
    assert "Author(<expired, identity (2,)>)" in lab.experiments["wrong-row"].trials[0].diff()


def test_run_returns_the_control_s_own_orm_object(db: Session) -> None:
    """run() returned the control's copy (an OrmSnapshot): the test could not delete it, test it
    with isinstance() or read a relationship. It returns the object the control returned."""
    lab = Shadow(seed=1, session=db)
    author = lab.run("get", lambda: db.get(Author, 1), lambda: db.get(Author, 1))
    assert type(author) is Author and author is db.get(Author, 1)
    assert [book.title for book in db.scalars(select(Book).where(Book.author_id == author.id).order_by(Book.id))] == [
        "Notes", "Sketch"]


def test_results_read_once_are_read_as_part_of_their_path(db: Session) -> None:
    """A path returning a generator or a SQLAlchemy Result always mismatched (two generator
    objects are never equal), and a lazy generator ran after its path's rollback. Each is
    read as part of its path: compared by its items, and the test gets an equivalent back."""
    def names(shout: bool) -> Iterator[str]:
        rename(db, "ANN" if shout else "Ada")
        return (author.name for author in db.scalars(select(Author).order_by(Author.id)))

    def rows() -> Any:
        return db.execute(select(Author.id, Author.name).order_by(Author.id))

    lab = Shadow(seed=1, session=db, mode="observe")
    for _ in range(4):
        same = lab.run("generator", lambda: names(False), lambda: names(False))
        lab.run("generator-renamed", lambda: names(False), lambda: names(True))
        result = lab.run("result", rows, rows)
        lab.run("map", lambda: map(str.upper, ["a", "b"]), lambda: map(str.upper, ["a", "b"]))
    results = {name: {trial.result for trial in experiment.trials} for name, experiment in lab.experiments.items()}
    assert results == {"generator": {"matched"}, "generator-renamed": {"mismatched"}, "result": {"matched"},
                       "map": {"matched"}}
    assert isinstance(same, types.GeneratorType) and list(same) == ["Ada", "Grace"]
    assert [tuple(row) for row in result.all()] == [(1, "Ada"), (2, "Grace")]
    assert "+['ANN', 'Grace']" in lab.experiments["generator-renamed"].trials[0].diff()
    with pytest.raises(TypeError, match=r"shadow experiment 'scalars': the (control|candidate) path returned a "
                                        r"ScalarResult, .* return its rows \(\.all\(\)\) instead"):
        lab.run("scalars", lambda: db.scalars(select(Author.id)), lambda: db.scalars(select(Author.id)))


# -- the cache --------------------------------------------------------------------------------------
def cached_double(client: Any, n: int) -> str:
    """Cache-aside: the value and whether it came from the cache."""
    hit = client.get(f"double:{n}")
    if hit is not None:
        return f"hit {hit.decode()}"
    client.set(f"double:{n}", n * 2)
    return f"miss {n * 2}"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of our own: INFO stats are server-wide, so exact figures need a private server."""
    server = start_redis(tmp_path_factory.mktemp("shadow-redis"))
    yield server.url
    server.stop()


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis_py.Redis]:
    client = redis_py.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def test_flush_makes_both_paths_start_cold(real_redis: redis_py.Redis) -> None:
    real_redis.set("double:4", 8)  # warm from the test: flushed before each path
    lab = Shadow(seed=1, flush=real_redis, cache=real_redis)
    for _ in range(4):
        assert lab.run("cache", cached_double, cached_double, real_redis, 4) == "miss 8"
    experiment = lab.experiments["cache"]
    assert experiment.result == "matched"
    assert experiment.cache("control") == (0, 4) and experiment.cache("candidate") == (0, 4)
    assert real_redis.dbsize() == 0  # flushed after the last path too
    figures = lab.figures()[0]
    assert (figures.control_cache_hits, figures.control_cache_misses) == (0, 4)


@pytest.mark.parametrize("backend", ["redis", "fakeredis"])
def test_without_flush_the_first_path_warms_the_cache_for_the_second(
        backend: str, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue("real_redis") if backend == "redis" else fakeredis.FakeRedis()
    lab = Shadow(seed=1, cache=client)
    lab.run("warm", cached_double, cached_double, client, 5)
    trial = lab.experiments["warm"].trials[0]
    first, second = (trial.candidate, trial.control) if trial.candidate_first else (trial.control, trial.candidate)
    assert (first.value, second.value) == ("miss 10", "hit 10")
    assert (first.cache_hits, first.cache_misses, second.cache_hits, second.cache_misses) == (0, 1, 1, 0)


def test_flush_with_fakeredis_and_a_callable() -> None:
    fake = fakeredis.FakeRedis()
    lab = Shadow(seed=1, flush=fake)
    lab.run_many("fake", cached_double, cached_double, [(fake, n) for n in range(4)] * 2)
    assert lab.experiments["fake"].result == "matched"
    flushed: list[int] = []
    lab.run("callable", abs, abs, 1, flush=lambda: flushed.append(1))
    assert flushed == [1, 1, 1, 1]


def test_judge_is_usable_alone() -> None:
    c, d = Observation("control", value=1), Observation("candidate", value=1.0)
    assert judge(c, d) == "matched"
    assert judge(c, d, compare=lambda a, b: type(a) is type(b)) == "mismatched"


@pytest.mark.parametrize("seed", range(8))
def test_a_path_that_changes_its_input_leaves_the_other_paths_input_as_given(seed: int) -> None:
    """Both paths were called with the same list: the control appended to it, and when it ran
    first the candidate got [1, 2, 3, 99] (4 == 4: the difference was missed under about half
    the seeds), and the message showed the input as the control left it."""
    def old(items: list[int], options: dict[str, Any]) -> int:
        items.append(99)
        options.pop("limit")
        return len(items)

    def new(items: list[int], options: dict[str, Any]) -> int:
        return len(items) + options["limit"] - 1  # (3 on the input as given)

    given = [1, 2, 3]
    lab = Shadow(seed=seed)
    returned = lab.run("length", old, new, given, {"limit": 1})
    assert returned == 4 and given == [1, 2, 3, 99]  # the control ran on the caller's own objects
    trial = lab.experiments["length"].trials[0]
    assert trial.result == "mismatched"  # 4 against 3, whichever ran first
    assert "length([1, 2, 3], {'limit': 1})" in trial.describe()
    shared = [[0]]
    grow = lambda xs: xs.append(1) or len(xs)  # noqa: E731 (each path on its own copy: 2 and 2)
    many = lab.run_many("many", grow, grow, [(shared,)] * 2, warmup=1)
    assert [t.result for t in many.trials] == ["matched", "matched"] and shared == [[0]]


def test_paths_that_both_return_nan_match() -> None:
    lab = Shadow(seed=1)
    lab.run("nan", lambda: float("nan"), lambda: float("nan"))
    lab.run("nested", lambda: {"p99": [float("nan"), 1.0]}, lambda: {"p99": [float("nan"), 1.0]})
    lab.run("differ", lambda: float("nan"), lambda: 1.0)
    assert [e.trials[0].result for e in lab.experiments.values()] == ["matched", "matched", "mismatched"]


def test_inputs_nested_deep_large_or_cyclic_are_copied_or_passed_as_they_are() -> None:
    """A list nested 5,000 deep raised RecursionError (it is passed as it is); a cycle through
    a tuple lost its identity in the candidate's copy (``x[0][0] is x`` differed); a large
    input of scalars is copied at C speed (checked by its result, not by time)."""
    lab = Shadow(seed=2)
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    lab.run("deep", len, len, deep)
    items: list[Any] = []
    cycle = (items,)
    items.append(cycle)
    lab.run("cycle", lambda x: x[0][0] is x, lambda x: x[0][0] is x, cycle)
    big = list(range(300_000))
    lab.run("big", sum, sum, big)
    assert [e.trials[0].result for e in lab.experiments.values()] == ["matched"] * 3
    from pytest_migsafe.shadow.inputs import own_copy

    copied = own_copy(cycle)
    assert copied is not cycle and copied[0] is not items and copied[0][0] is copied
