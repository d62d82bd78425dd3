"""RepeatTracker tallies statements per (shape, origin) and groups them when read: the groups
must be those of grouping each statement as it comes (the rule's definition, written out
here), whatever the order, the flushes, and however often the tally is folded midway."""

from __future__ import annotations

import functools
import random
import threading
from typing import Any

import loops
import pytest
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from threaded import hangs, read_while_running, wait_until_at, waiting_at

from pytest_migsafe.queries import dispatch, repeats
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
    with count_queries() as counter:
        read_while_running([functools.partial(_send, engine, per_worker)] * workers,
                           lambda: counter.n_plus_one(threshold=1))
    suspects = [s for s in counter.n_plus_one(threshold=1) if "SELECT" in s.shape]
    assert counter.count == workers * per_worker
    assert sum(s.count for s in suspects) == workers * per_worker


class _Base(DeclarativeBase):
    pass


class _Parent(_Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    children: Mapped[list[_Child]] = relationship(back_populates="parent")


class _Child(_Base):
    __tablename__ = "children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("parents.id"))
    parent: Mapped[_Parent] = relationship(back_populates="children")


def _lazy_loads(engine: Any, queries: int) -> None:
    """An application loop: ``queries`` times, the parents read, then their children one by one."""
    for _ in range(queries):
        with Session(engine) as session:
            loops.load_each(session.scalars(select(_Parent)).all(), "children")


@pytest.mark.allow_n_plus_one("_Parent.children", 5)  # (the N+1 is the point: the session's own counter sees it too)
def test_reading_the_suspects_while_other_threads_lazy_load(tmp_path: Any) -> None:
    """n_plus_one() on an active counter while threads lazy-load: the ORM loads are handed to
    the counter under the capture's lock and read under it, so the read neither raises
    ("dictionary changed size during iteration": loads were recorded outside the lock) nor
    sees half a load; the suspect is that of one query's rows."""
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    _Base.metadata.create_all(engine)
    parents = 5
    with Session(engine) as session:
        session.add_all(_Parent(children=[_Child()]) for _ in range(parents))
        session.commit()
    workers, queries = 2, 200
    with count_queries() as counter:
        reads = read_while_running([functools.partial(_lazy_loads, engine, queries)] * workers,
                                   lambda: counter.n_plus_one(threshold=1))
    engine.dispose()
    assert reads > 0
    assert counter.count == workers * queries * (1 + parents)
    (suspect,) = [s for s in counter.n_plus_one() if s.relationship]
    assert (suspect.relationship, suspect.parents, suspect.count) == ("_Parent.children", parents, parents)


def _send_shapes(engine: Any, n: int, tag: str) -> None:
    """``n`` statements of ``n`` shapes (a new column name each), from two lines."""
    with engine.connect() as conn:
        for i in range(n):
            loops.run_statements(conn, f"SELECT {i} AS {tag}{i}", 1)
            loops.run_driver_sql(conn, f"SELECT {i} AS {tag}{i}", 1)


def test_reading_the_figures_of_a_counter_other_threads_still_feed() -> None:
    """summary(), describe() and figures() of an active counter while threads add shapes and
    call sites: read from copies taken under the capture's lock (the shapes' dictionary grew
    under the reader: "dictionary changed size during iteration")."""
    engine = create_engine("sqlite://")  # (in memory: a connection of its own for each thread)
    workers, per_worker = 2, 1500

    def read() -> None:
        counter.summary()
        counter.describe(limit=None)
        counter.figures()

    with count_queries() as counter:
        reads = read_while_running([functools.partial(_send_shapes, engine, per_worker, f"w{k}_")
                                    for k in range(workers)], read)
    assert reads > 0
    assert counter.count == 2 * workers * per_worker
    assert sum(stats.count for stats in counter.summary()) == 2 * workers * per_worker


class _SendsFromInside:
    """A receiver that sends a statement on the same thread while one is handed to it, as a
    finalizer the garbage collector runs there may (a ``__del__`` that writes to the database)."""

    include_transaction_control = False
    _filtered = False

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.received: list[str] = []

    @property
    def count(self) -> int:
        return len(self.received)

    def _accepts(self, sql: str, target: str) -> bool:
        return True

    def _add(self, sql: str, *rest: Any) -> None:
        self.received.append(sql)
        if len(self.received) == 1:
            self.conn.exec_driver_sql("SELECT 2")


def test_a_statement_sent_during_a_hand_over_on_the_same_thread_is_recorded_not_hung() -> None:
    """The capture's lock is re-entrant: with a plain lock the inner statement waited for the
    lock its own thread held, forever."""
    engine = create_engine("sqlite://")
    received: list[str] = []
    assert not hangs(functools.partial(_send_once, engine, received), dispatch._lock), \
        "the statement sent during the hand-over hung on the capture's lock"
    assert received == ["SELECT 1", "SELECT 2"]


def _send_once(engine: Any, received: list[str]) -> None:
    with count_queries(), engine.connect() as conn:  # (count_queries: the driver hooks installed)
        receiver = _SendsFromInside(conn)
        receiver.received = received
        dispatch.start(receiver)
        try:
            conn.exec_driver_sql("SELECT 1")
        finally:
            dispatch.stop(receiver)


def _send_pairs(dsn: str, n: int) -> None:
    """``n`` round trips of two statements each (a string of two, through psycopg)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        for _ in range(n):
            cursor.execute("SELECT 1; SELECT 2")


def test_the_figures_of_an_active_counter_are_of_one_moment(pg_dsn: str) -> None:
    """figures() and round_trips() read while threads send strings of two statements: the
    count, the shapes and the round trips are of one moment (count = 2 x round trips, the
    shapes summing to the count), as a reader gets them from copies taken under the lock."""
    pytest.importorskip("psycopg")
    from pytest_migsafe.queries import dispatch

    workers, per_worker = 2, 1500
    torn: list[tuple[int, ...]] = []

    def read() -> None:
        figures = counter.figures()
        trips = figures.round_trips or 0
        if figures.count != 2 * trips or figures.count != sum(shape.count for shape in figures.shapes):
            torn.append((figures.count, trips, sum(shape.count for shape in figures.shapes)))
        before = counter.count
        trips_after = dispatch.round_trips(counter)  # never fewer than half a count read before it
        if 2 * trips_after < before:
            torn.append((before, trips_after))

    with count_queries() as counter:
        reads = read_while_running([functools.partial(_send_pairs, pg_dsn, per_worker)] * workers, read)
    assert reads > 0
    assert torn == []
    assert counter.count == 2 * workers * per_worker
    assert dispatch.round_trips(counter) == workers * per_worker


def _send_one(engine: Any) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 7")


def test_a_counter_receives_no_statement_after_its_stop_returned() -> None:
    """stop() leaves a counter's figures final: a statement whose hand-over read the active
    counters just before stop() and then waited for the capture's lock (which stop() took
    first) is not delivered to it once stop() returned (it was: the count went from 0 to 1
    after the block, under readers that no longer take the lock)."""
    engine = create_engine("sqlite://")  # (in memory: a connection of its own for each thread)
    _send_one(engine)  # its shape cached: the worker's hand-over takes no lock before its own
    counter = count_queries()
    counter.__enter__()
    with dispatch.recording:
        thread = waiting_at(functools.partial(_send_one, engine), dispatch.record_entry, "with _lock:")
        counter.__exit__(None, None, None)
        at_stop = counter.count
    thread.join(30)
    assert not thread.is_alive()
    assert (at_stop, counter.count, counter.n_plus_one(threshold=1)) == (0, 0, [])


def test_a_counter_receives_no_orm_load_after_its_stop_returned(tmp_path: Any) -> None:
    """The same for an ORM lazy load: one whose hand-over began while the counter was active
    (the loader read the active counters) and reached the lock after stop() is not recorded
    as the stopped counter's evidence."""
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    _Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(_Parent(children=[_Child()]))
        session.commit()
    _lazy_loads(engine, 1)  # its statements' shapes cached (no lock taken before the load's own)
    ready, go = threading.Event(), threading.Event()

    def load_later() -> None:
        with Session(engine) as session:
            parents = session.scalars(select(_Parent)).all()  # (before the lock is held)
            ready.set()
            go.wait(30)
            loops.load_each(parents, "children")

    thread = threading.Thread(target=load_later, daemon=True)
    thread.start()
    assert ready.wait(30)
    counter = count_queries()
    counter.__enter__()
    with dispatch.recording:
        go.set()
        wait_until_at(thread, dispatch.record_load, "with _lock:")
        counter.__exit__(None, None, None)
    thread.join(30)
    engine.dispose()
    assert not thread.is_alive()
    assert counter._repeats is not None and counter._repeats.loads == {}


@pytest.mark.allow_n_plus_one("_Parent.children", 5)  # (the N+1 is the point: the session's own counter sees it too)
@pytest.mark.parametrize("held", [0, 1, 5])
def test_lazy_loads_of_rows_the_session_already_held_are_those_of_the_query_that_returned_them(
        tmp_path: Any, held: int) -> None:
    """A query returning rows the Session still holds (made and committed by it, expired by the
    commit; a fixture keeps some) refreshes them in part, and SQLAlchemy stamps them with no
    runid: their lazy loads were counted under an unknown query, apart from the other rows'
    (a loop over 5 authors said 4 rows, 4 statements). The expected count is SQLAlchemy's own:
    the statements its cursor events saw, less the parents' query."""
    from sqlalchemy import event

    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    _Base.metadata.create_all(engine)
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    with Session(engine) as session:
        parents = [_Parent(id=i, children=[_Child(), _Child()]) for i in range(1, 6)]
        session.add_all(parents)
        session.commit()  # (every row expired)
        kept = parents[:held]  # rows a fixture holds: still in the identity map, refreshed in part
        del parents
        sent.clear()
        with count_queries() as counter:
            loops.load_each(session.scalars(select(_Parent)).all(), "children")
        assert len(kept) == held
    engine.dispose()
    (suspect,) = [s for s in counter.n_plus_one() if s.relationship]
    assert (suspect.parents, suspect.count) == (5, len(sent) - 1) == (5, 5)


def test_the_query_sites_kept_for_lazy_loads_are_bounded_over_a_suite(pytester: pytest.Pytester) -> None:
    """Where each ORM query ran is kept for its rows' later loads; the plugin's counter of each
    test never empties it, so a suite kept every ORM query's entry until it ended (3,000 after
    300 tests of 10 queries): bounded by QUERY_SITES_KEPT (checked every 1,024 queries)."""
    pytester.makepyfile(test_queries="""
        from sqlalchemy import create_engine, select
        from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

        from pytest_migsafe.queries import orm

        class Base(DeclarativeBase):
            pass

        class Row(Base):
            __tablename__ = "rows"
            id: Mapped[int] = mapped_column(primary_key=True)

        def test_queries(monkeypatch):
            monkeypatch.setattr(orm, "QUERY_SITES_KEPT", 100, raising=False)
            engine = create_engine("sqlite://")
            Base.metadata.create_all(engine)
            with Session(engine) as session:
                for _ in range(1_300):
                    session.scalars(select(Row)).all()
            assert len(orm._query_sites) < 1_000
    """)
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)


def test_a_string_rule_matches_a_lazy_loads_sql_by_its_shape() -> None:
    """``allow_n_plus_one("<the SQL>", n)`` matches a lazy-load suspect by the SQL it sends
    (its literals and spacing aside), as it matches a repeated statement's (the rule was
    compared with the relationship name and the suspect's label alone)."""
    from pytest_migsafe.queries.repeats import rule_matches
    from pytest_migsafe.report.record import NPlusOne

    suspect = NPlusOne(shape="A.bs (lazy load)", call_site="app.py:3", count=6, kind="lazy_load",
                       relationship="A.bs", parents=6)
    sent = "SELECT b.id AS b_id FROM b, link WHERE ? = link.a_id AND b.id = link.b_id"
    assert rule_matches("select b.id as b_id from b, link where 1 = link.a_id and b.id = link.b_id", suspect, sent)
    assert not rule_matches("SELECT c.id FROM c WHERE c.a_id = 1", suspect, sent)
    assert rule_matches("A.bs", suspect, None)


@pytest.mark.parametrize("dialect", ["postgresql+psycopg", "sqlite"])
def test_paging_values_are_read_from_the_statement_as_the_dialect_sends_it(dialect: str) -> None:
    """The values bound to a statement's OFFSET and keyset bound, found in the text and the
    parameters as SQLAlchemy compiles them for psycopg (``%(name)s::INTEGER``) and SQLite
    (``?``, by position): what tells pages (they move on) from a per-row loop (they do not)."""
    from sqlalchemy import Column, Integer, MetaData, Table, select
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.dialects.postgresql import psycopg

    from pytest_migsafe.queries.repeats import pages_advance, paging_keys, paging_values

    orders = Table("orders", MetaData(), Column("id", Integer, primary_key=True), Column("customer_id", Integer))
    engine_dialect = sqlite.dialect() if dialect == "sqlite" else psycopg.dialect()

    def values(sql: str, params: object) -> list[object] | None:
        return paging_values(paging_keys(sql), params)

    def sent(customer: int, after: int, offset: int) -> tuple[str, object]:
        stmt = (select(orders).where(orders.c.customer_id == customer, orders.c.id > after)
                .order_by(orders.c.id).limit(5).offset(offset))
        compiled = stmt.compile(dialect=engine_dialect)
        params = compiled.params
        if compiled.positiontup is not None:  # (a positional dialect sends a tuple)
            params = tuple(params[name] for name in compiled.positiontup)
        return str(compiled), params

    first = values(*sent(1, 100, 0))
    assert first == [100, 0]
    assert pages_advance(first, values(*sent(1, 100, 5)))  # the OFFSET moved on: pages
    assert pages_advance(first, values(*sent(1, 105, 0)))  # the keyset bound moved on: pages
    assert not pages_advance(first, values(*sent(7, 100, 0)))  # another customer's first page


def test_paging_values_of_an_offset_expression_and_of_parameters_changed_in_place() -> None:
    """Every placeholder of the OFFSET expression is a paging value (``:size * (:page - 1)``:
    only ``:size``, which never moves, was compared, and real pages were a suspect); values are
    read when the statement runs (a parameters dict the code changes in place for the next
    page was read at the end, so its first and last pages looked alike)."""
    from pytest_migsafe.queries.repeats import pages_advance, paging_keys, paging_values

    sql = "SELECT id FROM items ORDER BY id LIMIT :size OFFSET :size * (:page - 1)"
    keys = paging_keys(sql)
    assert keys == ("size", "page")
    params = {"size": 5, "page": 1}
    first = paging_values(keys, params)
    params["page"] = 4
    assert pages_advance(first, paging_values(keys, params))
    assert paging_keys("SELECT * FROM t WHERE data->>'x' > $1 AND a <> $2 ORDER BY id LIMIT $3 OFFSET $4") == (0, 3)


def test_paging_keys_read_one_placeholder_style_and_end_the_offset_clause() -> None:
    """psycopg's %s texts leave jsonb's ? operator alone (it shifted the OFFSET's position past
    the parameters: unknown values, taken for pages); an OFFSET inside a CTE ends at its
    parenthesis (the row's key after it was read as a paging value); a column named "offset"
    and a not-equal filter make no page shape."""
    from pytest_migsafe.queries.repeats import is_pagination, paging_keys

    assert paging_keys("SELECT id FROM o WHERE data ? 'vip' AND customer_id = %s ORDER BY id LIMIT 1 OFFSET %s") == (1,)
    assert paging_keys("WITH recent AS (SELECT * FROM o ORDER BY created DESC OFFSET %s) "
                       "SELECT id FROM recent WHERE customer_id = %s") == (0,)
    assert not is_pagination('SELECT "offset" FROM orders WHERE customer_id = ?')
    assert not is_pagination("SELECT id FROM o WHERE c = ? AND status <> ? ORDER BY created DESC LIMIT 1")
    assert is_pagination("SELECT id FROM o WHERE id > ? ORDER BY id LIMIT 10")


def test_primary_keys_of_two_classes_of_one_name_are_not_mixed_up() -> None:
    """Two mapped classes named alike with other primary keys: the advice names neither's key
    (it named the first one seen, which the other does not have)."""
    from sqlalchemy import Integer, inspect
    from sqlalchemy.orm import DeclarativeBase, mapped_column

    from pytest_migsafe.queries import orm

    class BillingBase(DeclarativeBase):
        pass

    class ShopBase(DeclarativeBase):
        pass

    billing = type("Order", (BillingBase,), {"__tablename__": "billing_orders",
                                             "id": mapped_column(Integer, primary_key=True)})
    shop = type("Order", (ShopBase,), {"__tablename__": "shop_orders",
                                       "number": mapped_column(Integer, primary_key=True)})
    orm.primary_keys.pop("Order", None)
    orm._note_primary_key("Order", inspect(shop()))
    assert orm.primary_keys["Order"] == ("number",)
    orm._note_primary_key("Order", inspect(billing()))
    assert orm.primary_keys["Order"] == ("<primary key>",)
    orm.primary_keys.pop("Order", None)


@pytest.mark.parametrize(("statement", "setup", "advice"), [
    ("INSERT INTO t (v) VALUES (:i)", "CREATE TABLE t (v INT)", "bulk_create"),
    ("UPDATE t SET v = :i WHERE v = 0", "CREATE TABLE t (v INT)", "bulk_update"),
    ("DELETE FROM t WHERE v = :i", "CREATE TABLE t (v INT)", "QuerySet.delete()"),
    ("SELECT :i AS _check WHERE 1 = 1", None, "full_clean(exclude=[...])"),
    ("SELECT v FROM t WHERE v = :i", "CREATE TABLE t (v INT)", "WHERE ... IN (...)"),
])
def test_the_fix_of_a_repeated_statement_fits_its_kind(statement: str, setup: str | None, advice: str) -> None:
    # a row-by-row write is batched, a per-row check that reads no table is run once: the JOIN /
    # IN (...) advice of a repeated read would mislead there
    from loops import run_statements
    from sqlalchemy import create_engine, text

    from pytest_migsafe import count_queries
    from pytest_migsafe.queries.repeats import describe

    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        if setup:
            conn.execute(text(setup))
        with count_queries() as counter:
            run_statements(conn, statement, 12)
    suspects = counter.n_plus_one()
    assert [s.count for s in suspects] == [12]
    message = describe(suspects, 10)
    assert advice in message
    others = {"bulk_create", "bulk_update", "QuerySet.delete()", "full_clean(exclude=[...])", "WHERE ... IN (...)"}
    assert not any(other in message for other in others - {advice})
