"""The N+1 scenario suite for SQLAlchemy: every kind flagged, no false alarm.

One application module (``shop_app.py``: models and the code under test) and one test
module run in a pytester session; a conftest writes each test's N+1 suspects to a file,
and each test's suspects are compared with what the scenario is: an N+1 or not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

APP = '''
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import ForeignKey, String, create_engine, delete, event, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncAttrs, async_sessionmaker, create_async_engine
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, joinedload, mapped_column, relationship,
                            selectinload, with_polymorphic)
from sqlalchemy.pool import StaticPool


class Base(AsyncAttrs, DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    orders: Mapped[list["Order"]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    note: Mapped[str] = mapped_column(String(50), deferred=True, default="n")
    customer: Mapped[Customer] = relationship(back_populates="orders")


class Profile(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    bio: Mapped[str] = mapped_column(String(50), deferred=True, deferred_group="big", default="b")
    notes: Mapped[str] = mapped_column(String(50), deferred=True, deferred_group="big", default="n")


class Employee(Base):
    __tablename__ = "employees"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "employee"}


class Engineer(Employee):
    __tablename__ = "engineers"
    id: Mapped[int] = mapped_column(ForeignKey("employees.id"), primary_key=True)
    language: Mapped[str] = mapped_column(String(20), default="py")
    __mapper_args__ = {"polymorphic_identity": "engineer"}


class Shipment(Base):
    __tablename__ = "shipments"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    label: Mapped[str] = mapped_column(String(50), default="")


@event.listens_for(Shipment, "before_insert")
def _label(mapper, connection, target):
    """A mapper event listener reading a row per inserted row (its own loop: an N+1)."""
    name = connection.execute(select(Customer.name).where(Customer.id == target.customer_id)).scalar()
    target.label = f"for {name}"


class Lead(Engineer):
    """A second level of joined inheritance: its columns span the engineers' and the leads' tables."""
    __tablename__ = "leads"
    id: Mapped[int] = mapped_column(ForeignKey("engineers.id"), primary_key=True)
    team: Mapped[str] = mapped_column(String(20), default="t")
    __mapper_args__ = {"polymorphic_identity": "lead"}


class Ticket(Base):
    """A primary key not named id."""
    __tablename__ = "tickets"
    number: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    customer: Mapped[Customer] = relationship()


ENGINE = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
Base.metadata.create_all(ENGINE)


def seed_leads(n):
    with Session(ENGINE) as session:
        for model in (Lead, Engineer, Employee):
            session.execute(delete(model))
        session.add_all([Lead() for _ in range(n)] + [Employee()])
        session.commit()


def lead_teams(option=None):
    with Session(ENGINE) as session:
        query = select(Employee) if option is None else select(Employee).options(option)
        return [(e.team, e.language) for e in session.scalars(query) if isinstance(e, Lead)]


def lead_teams_joined():
    with Session(ENGINE) as session:
        query = select(with_polymorphic(Employee, [Engineer, Lead]))
        return [(e.team, e.language) for e in session.scalars(query) if isinstance(e, Lead)]


def seed_tickets(n):
    with Session(ENGINE) as session:
        session.execute(delete(Ticket))
        session.add_all([Ticket(number=100 + i, customer_id=c) for i, c in
                         enumerate(session.scalars(select(Customer.id)).all()[:n])])
        session.commit()


def ticket_customers(tickets):
    return [ticket.customer.name for ticket in tickets]


async def ship_async(url):
    """Shipments added through an AsyncSession: the before_insert listener reads a row per row."""
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with async_sessionmaker(engine)() as session:
        session.add_all([Customer(name=f"s{i}") for i in range(12)])
        await session.commit()
    async with async_sessionmaker(engine)() as session:
        customers = (await session.scalars(select(Customer))).all()
        session.add_all([Shipment(customer_id=c.id) for c in customers])
        await session.commit()
    await engine.dispose()


def ship_to_every_customer():
    with Session(ENGINE) as session:
        session.add_all([Shipment(customer_id=c.id) for c in session.scalars(select(Customer)).all()])
        session.commit()


def seed_people(n):
    with Session(ENGINE) as session:
        for model in (Profile, Engineer, Employee):
            session.execute(delete(model))
        session.add_all([Profile() for _ in range(n)] + [Engineer() for _ in range(n)] + [Employee()])
        session.commit()


def profile_texts(option=None):
    with Session(ENGINE) as session:
        query = select(Profile) if option is None else select(Profile).options(option)
        return [profile.bio + profile.notes for profile in session.scalars(query)]


def engineer_languages(option=None):
    with Session(ENGINE) as session:
        query = select(Employee) if option is None else select(Employee).options(option)
        return [e.language for e in session.scalars(query) if isinstance(e, Engineer)]


def seed(n):
    with Session(ENGINE) as session:
        session.execute(text("DELETE FROM orders"))
        session.execute(text("DELETE FROM customers"))
        session.add_all([Order(customer=Customer(name=f"c{i}")) for i in range(n)])
        session.commit()


def customer_names():
    with Session(ENGINE) as session:
        return [order.customer.name for order in session.scalars(select(Order))]


def through_middleware(view):
    """Application code every request passes through (a middleware)."""
    return view()  # MIDDLEWARE


def customer_names_view():
    with Session(ENGINE) as session:
        orders = session.scalars(select(Order)).all()  # VIEW-QUERY
        return [order.customer.name for order in orders]  # VIEW-LOOP


def customer_names_selectin():
    with Session(ENGINE) as session:
        orders = session.scalars(select(Order).options(selectinload(Order.customer)))
        return [order.customer.name for order in orders]


def customer_names_joined():
    with Session(ENGINE) as session:
        orders = session.scalars(select(Order).options(joinedload(Order.customer)))
        return [order.customer.name for order in orders]


def customer_names_streamed():
    # rows in chunks of 2, each Order dropped as the loop goes on: CPython reuses their memory
    with Session(ENGINE) as session:
        return [order.customer.name for order in session.scalars(select(Order).execution_options(yield_per=2))]


def add_customers_in_one_bulk_insert(n):
    # one call; SQLAlchemy sends it as INSERT ... RETURNING batches (insertmanyvalues), 1000 rows each
    with Session(ENGINE) as session:
        ids = session.scalars(insert(Customer).returning(Customer.id), [{"name": f"b{i}"} for i in range(n)]).all()
        session.rollback()
        return ids


def customer_names_selectin_in_chunks():
    # selectinload loads the customers of 5,500 orders in eleven IN (...) statements of 500 keys
    with Session(ENGINE) as session:
        orders = session.scalars(select(Order).options(selectinload(Order.customer))).all()
        return [order.customer.name for order in orders]


def order_counts():
    with Session(ENGINE) as session:
        return [len(customer.orders) for customer in session.scalars(select(Customer))]


def one_customer_name(order_id):
    with Session(ENGINE) as session:
        return session.get(Order, order_id).customer.name


def notes():
    with Session(ENGINE) as session:
        return [order.note for order in session.scalars(select(Order))]


def _name_of(conn, customer_id):
    return conn.execute(text("SELECT name FROM customers WHERE id = :id"), {"id": customer_id}).scalar()


def names_core(n):
    with ENGINE.connect() as conn:
        return [conn.execute(select(Customer.name).where(Customer.id == i)).scalar() for i in range(n)]


def names_text(n):
    with ENGINE.connect() as conn:
        return [_name_of(conn, i) for i in range(n)]


def names_by_id_lists(sizes):
    # one loop, one statement: an IN list of literals whose length varies, some texts over
    # 4 kB (keyed by a digest of the text) and some short
    with ENGINE.connect() as conn:
        return [conn.execute(text(f"SELECT name FROM customers WHERE id IN ({', '.join(map(str, range(n)))})")).all()
                for n in sizes]


def names_in_two_loops(n):
    with ENGINE.connect() as conn:
        first = [_name_of(conn, i) for i in range(n)]
        second = [_name_of(conn, i) for i in range(n)]
    return first + second


def names_one_loop(n):
    with ENGINE.connect() as conn:
        return [_name_of(conn, i) for i in range(n)]


def other_names_one_loop(n):
    with ENGINE.connect() as conn:
        return [_name_of(conn, i) for i in range(n)]


def pages(page_size):
    out, offset = [], 0
    with ENGINE.connect() as conn:
        while True:
            rows = conn.execute(text("SELECT id FROM customers ORDER BY id LIMIT :n OFFSET :o"),
                                {"n": page_size, "o": offset}).all()
            if not rows:
                return out
            out += rows
            offset += page_size


def orm_pages(page_size):
    out, offset = [], 0
    with Session(ENGINE) as session:
        while True:
            rows = session.scalars(select(Customer).order_by(Customer.id).limit(page_size).offset(offset)).all()
            if not rows:
                return out
            out += rows
            offset += page_size


def latest_order_per_customer(min_id):
    """A page-shaped read (ORDER BY ... LIMIT, an id > bound) per customer: the bound never moves."""
    with Session(ENGINE) as session:
        return [session.scalars(select(Order).where(Order.customer_id == c.id, Order.id > min_id)
                                .order_by(Order.id.desc()).limit(1)).first()
                for c in session.scalars(select(Customer)).all()]


def first_page_per_customer():
    """OFFSET 0 per customer: a per-row loop, not pages."""
    with Session(ENGINE) as session:
        return [session.scalars(select(Order).where(Order.customer_id == c.id).order_by(Order.id)
                                .limit(5).offset(0)).all()
                for c in session.scalars(select(Customer)).all()]


POOL = ThreadPoolExecutor(2)  # a test client running the application in a worker thread


def latest_other_order_per_customer():
    """ORDER BY ... LIMIT 1 with a not-equal filter, per customer: a per-row loop (<> is no keyset bound)."""
    with ENGINE.connect() as conn:
        return [conn.execute(text("SELECT id FROM orders WHERE customer_id = :c AND note <> :n ORDER BY id DESC LIMIT 1"),
                             {"c": c, "n": "x"}).first() for c in range(1, 13)]


def for_each(ids, callback):
    """Application code calling back a function it is given."""
    return [callback(i) for i in ids]


def customer_names_of(orders):
    """An application loop over rows its caller fetched one by one."""
    return [order.customer.name for order in orders]


def keyset_pages(page_size):
    out, last = [], 0
    with ENGINE.connect() as conn:
        while True:
            rows = conn.execute(text("SELECT id FROM customers WHERE id > :last ORDER BY id LIMIT :n"),
                                {"last": last, "n": page_size}).all()
            if not rows:
                return out
            out += rows
            last = rows[-1][0]


def add_customers_in_one_flush(n):
    with Session(ENGINE) as session:
        session.add_all([Customer(name=f"new{i}") for i in range(n)])
        session.flush()
        session.rollback()


# no batched INSERT on this engine: a flush sends one INSERT per new row
ROW_BY_ROW = create_engine("sqlite://", poolclass=StaticPool, use_insertmanyvalues=False,
                           connect_args={"check_same_thread": False})
Base.metadata.create_all(ROW_BY_ROW)


def add_customers_in_one_flush_row_by_row(n):
    with Session(ROW_BY_ROW) as session:
        session.add_all([Customer(name=f"one{i}") for i in range(n)])
        session.flush()
        session.rollback()


def flush_each_new_customer(n):
    with Session(ROW_BY_ROW) as session:
        for i in range(n):
            session.add(Customer(name=f"each{i}"))
            session.flush()
        session.rollback()


def one_order(session, order_id):
    return session.get(Order, order_id)


def all_orders(session):
    return session.scalars(select(Order)).all()


def orders_made_one_by_one(n, commit=False):
    # each order created, flushed (or committed), then its customer read: no query returned
    # these rows, each lazy load is for a row of its own flush (not an N+1 of a query)
    with Session(ENGINE) as session:
        names = []
        for customer_id in session.scalars(select(Customer.id)).all()[:n]:
            order = Order(customer_id=customer_id)
            session.add(order)
            session.commit() if commit else session.flush()
            names.append((order.customer.name, order.note))
        session.rollback()
        return names


def order_counts_of_joined_customers(fixed=False):
    # the customers came in with their orders (joinedload): each one's orders lazy-loaded
    option = joinedload(Order.customer)
    if fixed:
        option = joinedload(Order.customer).selectinload(Customer.orders)  # the fix the plugin advises
    with Session(ENGINE) as session:
        orders = session.scalars(select(Order).options(option)).unique().all()
        return [len(order.customer.orders) for order in orders]


def customer_ids_after_commit():
    # the rows of one query, expired by a commit, then read row by row: each row's expired
    # attributes are loaded again, one statement per row
    with Session(ENGINE) as session:
        orders = session.scalars(select(Order)).all()
        session.commit()
        return [order.customer_id for order in orders]


def customer_name_of(order):
    return order.customer.name


def orders_made_one_by_one_then_listed(n):
    # the same rows, then a query returns them (from the identity map) and a loop reads each
    # one's customer: an N+1 of that query
    with Session(ENGINE) as session:
        session.execute(text("DELETE FROM orders"))
        for customer_id in session.scalars(select(Customer.id)).all()[:n]:
            session.add(Order(customer_id=customer_id))
            session.flush()
        names = [order.customer.name for order in session.scalars(select(Order)).all()]
        session.rollback()
        return names


def orders_made_in_one_flush_then_read(n):
    # rows of one flush, then a loop reads each one's customer: one lazy load per row of a set
    with Session(ENGINE) as session:
        orders = [Order(customer_id=customer_id) for customer_id in session.scalars(select(Customer.id)).all()[:n]]
        session.add_all(orders)
        session.flush()
        names = [order.customer.name for order in orders]
        session.rollback()
        return names


def rename_row_by_row(n):
    with ENGINE.begin() as conn:
        for i in range(n):
            conn.execute(update(Customer).where(Customer.id == i).values(name="x"))


ASYNC_ENGINE = None


async def customer_names_async(url):
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with async_sessionmaker(engine)() as session:
        session.add_all([Order(customer=Customer(name=f"a{i}")) for i in range(3)])
        await session.commit()
    async with async_sessionmaker(engine)() as session:
        names = [(await order.awaitable_attrs.customer).name for order in await session.scalars(select(Order))]
    await engine.dispose()
    return names
'''

TESTS = '''
import asyncio
import functools
import re
from operator import attrgetter

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, selectin_polymorphic, undefer_group

import shop_app as app


def test_lazy_load_over_2_parents():
    app.seed(2)
    app.customer_names()


def test_lazy_load_in_a_view_behind_a_middleware():
    app.seed(3)
    app.through_middleware(app.customer_names_view)


def test_lazy_load_over_3_parents():
    app.seed(3)
    app.customer_names()


def test_lazy_load_over_50_parents():
    app.seed(50)
    app.customer_names()


def test_one_to_many_lazy_load_over_3_parents():
    app.seed(3)
    app.order_counts()


def test_lazy_load_over_12_streamed_parents():
    app.seed(12)
    app.customer_names_streamed()


def test_one_bulk_insert_sent_in_batches_is_fine():
    app.add_customers_in_one_bulk_insert(12_000)


def test_selectinload_in_chunks_is_fine():
    app.seed(5500)
    app.customer_names_selectin_in_chunks()


def test_lazy_load_of_one_parent_is_fine():
    app.seed(3)
    app.one_customer_name(1)


def test_two_single_lookups_are_fine():
    app.seed(3)
    app.one_customer_name(1)
    app.one_customer_name(2)


def test_selectinload_fix_is_fine():
    app.seed(50)
    app.customer_names_selectin()


def test_joinedload_fix_is_fine():
    app.seed(50)
    app.customer_names_joined()


def test_deferred_column_over_3_rows():
    app.seed(3)
    app.notes()


def test_core_loop_of_20():
    app.seed(3)
    app.names_core(20)


def test_text_loop_of_20():
    app.seed(3)
    app.names_text(20)


def test_id_list_loop_of_12_with_short_and_long_lists():
    app.seed(3)
    app.names_by_id_lists([10, 20, 30, 40, 50, 60, 70, 1500, 1600, 1700, 1800, 1900])


def test_core_loop_of_3_is_below_the_default_threshold():
    app.seed(3)
    app.names_core(3)


@pytest.mark.no_n_plus_one(3)
def test_core_loop_of_3_with_threshold_3():
    app.seed(3)
    app.names_core(3)


def test_two_loops_of_6_through_a_helper_in_one_function():
    app.seed(3)
    app.names_in_two_loops(6)


def test_loops_of_6_in_two_functions_are_fine():
    app.seed(3)
    app.names_one_loop(6)
    app.other_names_one_loop(6)


def test_offset_pagination_is_fine():
    app.seed(50)
    app.pages(3)


def test_orm_offset_pagination_is_fine():
    app.seed(50)
    app.orm_pages(3)


def test_a_page_shaped_read_per_parent_row():
    app.seed(12)
    app.latest_order_per_customer(0)


def test_offset_0_per_parent_row():
    app.seed(12)
    app.first_page_per_customer()


@pytest.fixture
def orders_committed_one_by_one():
    app.seed(12)
    with Session(app.ENGINE) as session:
        orders = []
        for customer_id in session.scalars(select(app.Customer.id)).all():
            orders.append(app.Order(customer_id=customer_id))
            session.add(orders[-1])
            session.commit()
        yield orders


def test_rows_a_fixture_committed_one_by_one_read_in_an_application_loop_are_fine(orders_committed_one_by_one):
    app.customer_names_of(orders_committed_one_by_one)


def test_lazy_loads_over_rows_fetched_one_by_one():
    app.seed(12)
    with Session(app.ENGINE) as session:
        orders = [session.get(app.Order, n) for n in range(1, 13)]
        app.customer_names_of(orders)


@pytest.mark.no_n_plus_one(3)
def test_requests_in_a_worker_thread_from_separate_lines_are_fine():
    app.seed(4)
    app.POOL.submit(app.one_customer_name, 1).result()
    app.POOL.submit(app.one_customer_name, 2).result()
    app.POOL.submit(app.one_customer_name, 3).result()
    app.POOL.submit(app.one_customer_name, 4).result()


def test_a_core_loop_in_a_worker_thread():
    app.seed(3)
    app.POOL.submit(app.names_core, 20).result()


def test_keyset_pagination_is_fine():
    app.seed(50)
    app.keyset_pages(3)


def test_set_up_loop_in_the_test_body_is_fine():
    app.seed(1)
    with app.ENGINE.begin() as conn:
        for i in range(30):
            conn.execute(text("INSERT INTO customers (name) VALUES (:n)"), {"n": f"s{i}"})
    app.one_customer_name(1)


def test_one_flush_of_many_rows_is_fine():
    app.seed(1)
    app.add_customers_in_one_flush(40)


def test_one_flush_sending_one_insert_per_row_is_fine():
    app.add_customers_in_one_flush_row_by_row(40)


def test_a_flush_per_row_from_an_application_loop():
    app.flush_each_new_customer(12)


def test_single_row_loads_beside_a_list_count_apart():
    # the relation read by library code (no application frame: a serializer, say), first for
    # one row at a time, then for the rows of one query: the suspect is that query's rows
    app.seed(2)
    with Session(app.ENGINE) as session:
        for order_id in session.execute(text("SELECT id FROM orders")).scalars().all():
            list(map(attrgetter("customer"), [app.one_order(session, order_id)]))  # ONE-ROW
            session.expunge_all()
        list(map(attrgetter("customer"), app.all_orders(session)))  # LIST


def test_objects_made_one_by_one_each_reading_its_relation_are_fine():
    app.seed(3)
    app.orders_made_one_by_one(3)


def test_objects_committed_one_by_one_each_reading_its_relation_are_fine():
    app.seed(3)
    app.orders_made_one_by_one(3, commit=True)


def test_lazy_load_of_parents_an_eager_load_brought():
    app.seed(3)
    app.order_counts_of_joined_customers()


def test_the_chained_fix_for_parents_an_eager_load_brought_is_fine():
    app.seed(3)
    app.order_counts_of_joined_customers(fixed=True)


def test_rows_read_after_their_commit_expired_them():
    app.seed(3)
    app.customer_ids_after_commit()


@pytest.fixture
def orders_a_fixture_made_one_by_one():
    app.seed(2)
    with Session(app.ENGINE, expire_on_commit=False) as session:
        made = []
        for customer_id in session.scalars(app.select(app.Customer.id)).all():
            order = app.Order(customer_id=customer_id)
            session.add(order)
            session.commit()
            made.append(order)
        yield made


def test_rows_a_fixture_made_one_by_one_each_reading_its_relation_are_fine(orders_a_fixture_made_one_by_one):
    first, second = orders_a_fixture_made_one_by_one
    app.customer_name_of(first)
    app.customer_name_of(second)


def test_objects_made_one_by_one_then_listed_by_a_query():
    app.seed(3)
    app.orders_made_one_by_one_then_listed(3)


def test_objects_of_one_flush_each_reading_its_relation():
    app.seed(3)
    app.orders_made_in_one_flush_then_read(3)


def test_row_by_row_writes_from_an_application_loop():
    app.seed(3)
    app.rename_row_by_row(12)


def test_async_lazy_load_over_3_parents(tmp_path):
    asyncio.run(app.customer_names_async(f"sqlite+aiosqlite:///{tmp_path}/async.db"))


@pytest.mark.no_n_plus_one
@pytest.mark.allow_n_plus_one("Order.customer", 3)
def test_allowed_by_relationship_name():
    app.seed(3)
    app.customer_names()


@pytest.mark.no_n_plus_one
@pytest.mark.allow_n_plus_one("Order.customer", 2)
def test_allowed_relationship_over_its_ceiling_fails():
    app.seed(3)
    app.customer_names()


@pytest.mark.no_n_plus_one
@pytest.mark.allow_n_plus_one(re.compile(r"select name from customers where id"), 20)
def test_allowed_by_a_lowercase_regex_on_the_sql():
    app.seed(3)
    app.names_text(20)


@pytest.mark.no_n_plus_one
@pytest.mark.allow_n_plus_one(re.compile(r"from customers\\s+where customers\\.id ="), 3)
def test_lazy_load_allowed_by_a_regex_on_its_sql():
    app.seed(3)
    app.customer_names()


def test_deferred_group_over_3_rows():
    app.seed_people(3)
    app.profile_texts()


def test_the_undefer_group_fix_is_fine():
    app.seed_people(3)
    app.profile_texts(undefer_group("big"))


def test_subclass_columns_over_3_rows():
    app.seed_people(3)
    app.engineer_languages()


def test_the_selectin_polymorphic_fix_is_fine():
    app.seed_people(3)
    app.engineer_languages(selectin_polymorphic(app.Employee, [app.Engineer]))


def test_a_select_per_row_in_a_mapper_event_listener():
    app.seed(12)
    app.ship_to_every_customer()


def get_name(customer_id):
    """The test's own helper (a test client's get()): each call from its own line of the test."""
    return app.one_customer_name(customer_id)


def with_tenant(test):
    """A decorator of the test's own: the test body runs inside its wrapper."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return test(*args, **kwargs)
    return wrapper


@pytest.mark.no_n_plus_one(3)
@with_tenant
def test_separate_lines_of_a_decorated_test_are_fine():
    app.seed(4)
    app.one_customer_name(1)
    app.one_customer_name(2)
    app.one_customer_name(3)
    app.one_customer_name(4)


def run_steps():
    """Steps of the test in a function of its module, each line once."""
    app.one_customer_name(1)
    app.one_customer_name(2)
    app.one_customer_name(3)
    app.one_customer_name(4)


@pytest.mark.no_n_plus_one(3)
def test_separate_lines_of_a_step_function_of_the_test_are_fine():
    app.seed(4)
    run_steps()


def test_a_loop_in_the_test_through_its_helper():
    app.seed(12)
    for n in range(1, 13):
        get_name(n)


def test_a_helper_of_the_test_called_back_by_the_application():
    app.seed(4)
    app.for_each([1, 2], get_name)  # (its origin must not be remembered for the next test's lines)


def test_a_not_equal_filter_with_order_by_limit_per_row():
    app.seed(12)
    app.latest_other_order_per_customer()


def test_the_tests_own_loop_over_rows_it_fetched_one_by_one_is_fine():
    app.seed(12)
    with Session(app.ENGINE) as session:
        orders = [session.get(app.Order, n) for n in range(1, 13)]
        assert all(order.customer.name for order in orders)


@pytest.mark.no_n_plus_one(3)
def test_calls_through_a_helper_of_the_test_from_separate_lines_are_fine():
    app.seed(4)
    get_name(1)
    get_name(2)
    get_name(3)
    get_name(4)


def test_subclass_columns_of_two_levels_over_3_rows():
    app.seed_leads(3)
    app.lead_teams()


def test_the_selectin_polymorphic_fix_of_two_levels_is_fine():
    app.seed_leads(3)
    app.lead_teams_joined()


def test_lazy_loads_over_rows_fetched_one_by_one_by_another_key():
    app.seed(12)
    app.seed_tickets(12)
    with Session(app.ENGINE) as session:
        app.ticket_customers([session.get(app.Ticket, 100 + n) for n in range(12)])


def test_a_select_per_row_in_a_mapper_event_listener_of_an_async_flush(tmp_path):
    asyncio.run(app.ship_async(f"sqlite+aiosqlite:///{tmp_path}/ship.db"))


@pytest.mark.max_queries(3)
def test_budget_counts_lazy_loads():
    app.seed(3)
    app.customer_names()
'''

CONFTEST = '''
import json
import pytest
from pytest_migsafe.plugin.stash import existing_record, want_records

SUSPECTS = {}

def pytest_configure(config):
    want_records(config)  # this conftest reads the records (at the defaults nothing does)

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    finally:
        pass

@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    record = existing_record(item)
    found = record.queries.n_plus_one if record is not None and record.queries is not None else []
    SUSPECTS[item.name] = [{"kind": s.kind, "relationship": s.relationship, "count": s.count,
                            "parents": s.parents, "allowed": s.allowed, "site": s.call_site,
                            "chain": s.chain, "shape": s.shape, "loaded_at": s.loaded_at,
                            "fix": s.fix} for s in found]

def pytest_sessionfinish(session):
    with open("suspects.json", "w") as f:
        json.dump(SUSPECTS, f)
'''

# test name -> the suspects it must have: (kind, relationship or a piece of the shape)
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "test_lazy_load_over_2_parents": [("lazy_load", "Order.customer")],
    "test_lazy_load_over_3_parents": [("lazy_load", "Order.customer")],
    "test_lazy_load_in_a_view_behind_a_middleware": [("lazy_load", "Order.customer")],
    "test_lazy_load_over_50_parents": [("lazy_load", "Order.customer")],
    "test_one_to_many_lazy_load_over_3_parents": [("lazy_load", "Customer.orders")],
    "test_lazy_load_over_12_streamed_parents": [("lazy_load", "Order.customer")],
    "test_one_bulk_insert_sent_in_batches_is_fine": [],
    "test_selectinload_in_chunks_is_fine": [],
    "test_lazy_load_of_one_parent_is_fine": [],
    "test_two_single_lookups_are_fine": [],
    "test_selectinload_fix_is_fine": [],
    "test_joinedload_fix_is_fine": [],
    "test_deferred_column_over_3_rows": [("deferred_column", "Order.note")],
    "test_core_loop_of_20": [("repeated_statement", "customers")],
    "test_text_loop_of_20": [("repeated_statement", "customers")],
    "test_id_list_loop_of_12_with_short_and_long_lists": [("repeated_statement", "customers")],
    "test_core_loop_of_3_is_below_the_default_threshold": [],
    "test_core_loop_of_3_with_threshold_3": [("repeated_statement", "customers")],
    "test_two_loops_of_6_through_a_helper_in_one_function": [("repeated_statement", "customers")],
    "test_loops_of_6_in_two_functions_are_fine": [],
    "test_offset_pagination_is_fine": [],
    "test_keyset_pagination_is_fine": [],
    "test_orm_offset_pagination_is_fine": [],
    "test_requests_in_a_worker_thread_from_separate_lines_are_fine": [],
    "test_a_core_loop_in_a_worker_thread": [("repeated_statement", "customers")],
    "test_lazy_loads_over_rows_fetched_one_by_one": [("lazy_load", "Order.customer")],
    "test_rows_a_fixture_committed_one_by_one_read_in_an_application_loop_are_fine": [],
    "test_a_page_shaped_read_per_parent_row": [("repeated_statement", "FROM orders")],
    "test_offset_0_per_parent_row": [("repeated_statement", "FROM orders")],
    "test_set_up_loop_in_the_test_body_is_fine": [],
    "test_one_flush_of_many_rows_is_fine": [],
    "test_row_by_row_writes_from_an_application_loop": [("repeated_statement", "UPDATE customers")],
    "test_single_row_loads_beside_a_list_count_apart": [("lazy_load", "Order.customer")],
    "test_objects_made_one_by_one_each_reading_its_relation_are_fine": [],
    "test_objects_committed_one_by_one_each_reading_its_relation_are_fine": [],
    "test_objects_made_one_by_one_then_listed_by_a_query": [("lazy_load", "Order.customer")],
    "test_rows_read_after_their_commit_expired_them": [("deferred_column", "Order.<expired columns>")],
    "test_lazy_load_of_parents_an_eager_load_brought": [("lazy_load", "Customer.orders")],
    "test_the_chained_fix_for_parents_an_eager_load_brought_is_fine": [],
    "test_rows_a_fixture_made_one_by_one_each_reading_its_relation_are_fine": [],
    "test_objects_of_one_flush_each_reading_its_relation": [("lazy_load", "Order.customer")],
    "test_one_flush_sending_one_insert_per_row_is_fine": [],
    "test_a_flush_per_row_from_an_application_loop": [("repeated_statement", "INSERT INTO customers")],
    "test_async_lazy_load_over_3_parents": [("lazy_load", "Order.customer")],
    "test_allowed_by_relationship_name": [("lazy_load", "Order.customer")],
    "test_allowed_relationship_over_its_ceiling_fails": [("lazy_load", "Order.customer")],
    "test_allowed_by_a_lowercase_regex_on_the_sql": [("repeated_statement", "customers")],
    "test_budget_counts_lazy_loads": [("lazy_load", "Order.customer")],
    "test_lazy_load_allowed_by_a_regex_on_its_sql": [("lazy_load", "Order.customer")],
    "test_deferred_group_over_3_rows": [("deferred_column", "Profile.bio")],
    "test_the_undefer_group_fix_is_fine": [],
    "test_subclass_columns_over_3_rows": [("deferred_column", "Engineer.language")],
    "test_the_selectin_polymorphic_fix_is_fine": [],
    "test_a_select_per_row_in_a_mapper_event_listener": [("repeated_statement", "FROM customers")],
    "test_subclass_columns_of_two_levels_over_3_rows": [("deferred_column", "Lead.")],
    "test_the_selectin_polymorphic_fix_of_two_levels_is_fine": [],
    "test_lazy_loads_over_rows_fetched_one_by_one_by_another_key": [("lazy_load", "Ticket.customer")],
    "test_a_select_per_row_in_a_mapper_event_listener_of_an_async_flush": [("repeated_statement", "FROM customers")],
    "test_calls_through_a_helper_of_the_test_from_separate_lines_are_fine": [],
    "test_a_helper_of_the_test_called_back_by_the_application": [],
    "test_a_not_equal_filter_with_order_by_limit_per_row": [("repeated_statement", "FROM orders")],
    "test_the_tests_own_loop_over_rows_it_fetched_one_by_one_is_fine": [],
    "test_separate_lines_of_a_decorated_test_are_fine": [],
    "test_separate_lines_of_a_step_function_of_the_test_are_fine": [],
    "test_a_loop_in_the_test_through_its_helper": [("lazy_load", "Order.customer"),
                                                   ("repeated_statement", "FROM orders")],
}


def _run_scenarios(root: Path, conftest: str) -> str:
    """Run the scenario suite in ``root`` in a subprocess with ``conftest``; its output."""
    import subprocess
    import sys

    (root / "shop_app.py").write_text(APP)
    (root / "test_scenarios.py").write_text(TESTS)
    (root / "conftest.py").write_text(conftest)
    (root / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
                           "-W", "ignore::DeprecationWarning"],
                          cwd=root, capture_output=True, text=True, timeout=300)
    return done.stdout


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[dict]], str]:
    """Run the scenario suite once in a subprocess, reading each test's record; its suspects
    per test and its output."""
    root = tmp_path_factory.mktemp("n_plus_one_scenarios")
    output = _run_scenarios(root, CONFTEST)
    return json.loads((root / "suspects.json").read_text()), output


def test_the_defaults_flag_what_the_records_hold(scenario_run: tuple[dict[str, list[dict]], str],
                                                 tmp_path: Path) -> None:
    """At the defaults (nothing reads a record) a test keeps only the N+1 rule's evidence: the
    same suite then warns and fails exactly as when its records are read."""
    _, with_records = scenario_run
    at_defaults = _run_scenarios(tmp_path, "")

    def verdicts(output: str) -> list[str]:
        keep = ("FAILED ", "shop_app.py:", "NPlusOneWarning", "test_scenarios.py::")
        return [line.rstrip() for line in output.splitlines() if line.lstrip().startswith(keep)
                or "NPlusOneWarning" in line]

    assert verdicts(at_defaults) == verdicts(with_records)
    assert sum("NPlusOneWarning" in line for line in verdicts(at_defaults)) >= 10


@pytest.mark.parametrize("test", sorted(EXPECTED))
def test_each_scenario_is_flagged_exactly_when_it_is_an_n_plus_one(
        scenario_run: tuple[dict[str, list[dict]], str], test: str) -> None:
    suspects, output = scenario_run
    assert test in suspects, output[-3000:]
    found = suspects[test]
    expected = EXPECTED[test]
    assert len(found) == len(expected), found
    for (kind, what), suspect in zip(expected, found):
        assert suspect["kind"] == kind, suspect
        assert what in (suspect["relationship"] or suspect["shape"]), suspect


def test_parents_and_call_sites_are_exact(scenario_run: tuple[dict[str, list[dict]], str]) -> None:
    suspects, _ = scenario_run
    for test, parents in (("test_lazy_load_over_2_parents", 2), ("test_lazy_load_over_3_parents", 3),
                          ("test_lazy_load_over_50_parents", 50), ("test_async_lazy_load_over_3_parents", 3),
                          ("test_lazy_load_over_12_streamed_parents", 12)):
        (suspect,) = suspects[test]
        assert (suspect["parents"], suspect["count"]) == (parents, parents), suspect
        assert suspect["site"].startswith("shop_app.py:"), suspect
    (listed,) = suspects["test_single_row_loads_beside_a_list_count_apart"]
    list_line = TESTS.split("\n").index(next(line for line in TESTS.split("\n") if line.endswith("# LIST"))) + 1
    assert (listed["parents"], listed["count"], listed["site"]) == (2, 2, f"test_scenarios.py:{list_line}"), listed
    (chained,) = suspects["test_lazy_load_of_parents_an_eager_load_brought"]
    # (the fix the customers' own query would need, select(Customer)..., has no place in this code)
    assert chained["fix"] == "select(Order).options(joinedload(Order.customer).selectinload(Customer.orders))", chained
    assert "option = joinedload(Order.customer).selectinload(Customer.orders)" in APP  # (the fixed scenario: no suspect)
    (expired,) = suspects["test_rows_read_after_their_commit_expired_them"]
    assert expired["fix"].startswith("select(Order) without expiring the rows first"), expired  # (not undefer())
    # the fix each advises is the option its fixed twin passes (no suspect there): undefer() of
    # one column of a deferred group left the others deferred; a joined-inheritance subclass's
    # columns were "expired rows" whose fix, select(Engineer), dropped every other Employee
    (group,) = suspects["test_deferred_group_over_3_rows"]
    assert group["fix"] == "select(Profile).options(undefer_group('big'))", group
    (subclass,) = suspects["test_subclass_columns_over_3_rows"]
    assert subclass["fix"] == "select(Employee).options(selectin_polymorphic(Employee, [Engineer]))", subclass
    assert "app.profile_texts(undefer_group(\"big\"))" in TESTS
    assert "app.engineer_languages(selectin_polymorphic(app.Employee, [app.Engineer]))" in TESTS
    (one_by_one,) = suspects["test_lazy_loads_over_rows_fetched_one_by_one"]
    assert (one_by_one["count"], one_by_one["site"].startswith("shop_app.py:")) == (12, True), one_by_one
    assert one_by_one["fix"].startswith("select(Order).where(Order.id.in_(...)).options(joinedload(Order.customer))")
    (levels,) = suspects["test_subclass_columns_of_two_levels_over_3_rows"]
    assert levels["fix"] == "select(with_polymorphic(Employee, [Engineer, Lead]))", levels
    assert "select(with_polymorphic(Employee, [Engineer, Lead]))" in APP  # (the fixed twin: no suspect)
    (tickets,) = suspects["test_lazy_loads_over_rows_fetched_one_by_one_by_another_key"]
    assert tickets["fix"].startswith("select(Ticket).where(Ticket.number.in_(...))"), tickets  # (it has no .id)
    (flushes,) = suspects["test_a_flush_per_row_from_an_application_loop"]
    assert flushes["count"] == 12  # each flush is its own unit of work, however the frames are reused
    (two_loops,) = suspects["test_two_loops_of_6_through_a_helper_in_one_function"]
    assert two_loops["count"] == 12
    assert two_loops["chain"][0].count("shop_app.py:") == 2  # both loop lines of the function
    assert two_loops["chain"][1].startswith("shop_app.py:")  # via the helper


def test_a_load_in_a_view_is_reported_at_the_view_not_the_middleware_above_it(
        scenario_run: tuple[dict[str, list[dict]], str]) -> None:
    suspects, _ = scenario_run
    (suspect,) = suspects["test_lazy_load_in_a_view_behind_a_middleware"]
    lines = APP.splitlines()

    def line(tag: str) -> str:
        return f"shop_app.py:{next(n for n, text in enumerate(lines, 1) if tag in text)}"

    assert (suspect["site"], suspect["loaded_at"]) == (line("VIEW-LOOP"), line("VIEW-QUERY")), suspect
    assert line("MIDDLEWARE") not in suspect["chain"], suspect


def test_allow_rules_and_budgets_decide_the_outcomes(scenario_run: tuple[dict[str, list[dict]], str]) -> None:
    suspects, output = scenario_run
    assert suspects["test_allowed_by_relationship_name"][0]["allowed"] is True
    assert suspects["test_allowed_relationship_over_its_ceiling_fails"][0]["allowed"] is False
    assert suspects["test_allowed_by_a_lowercase_regex_on_the_sql"][0]["allowed"] is True
    # a regex on the SQL a lazy load sends (it was searched in the relationship's name alone)
    assert suspects["test_lazy_load_allowed_by_a_regex_on_its_sql"][0]["allowed"] is True
    assert "PASSED" not in output  # -q run: only failures are named
    for failing in ("test_core_loop_of_3_with_threshold_3", "test_allowed_relationship_over_its_ceiling_fails",
                    "test_budget_counts_lazy_loads"):
        assert f"FAILED test_scenarios.py::{failing}" in output
    assert output.count("FAILED test_scenarios.py::") == 3, output[-3000:]
    # the failure names the rule it went over (before: only a generic "or accept it" line)
    assert ('over its allowance: @pytest.mark.allow_n_plus_one(\'Order.customer\', 2) allows up to 2 '
            'parent rows, this test has 3') in output
    assert "fix: select(Order).options(joinedload(Order.customer))" in output


def test_one_core_insert_sent_in_batches_is_one_unit_without_the_orm(pytester: pytest.Pytester) -> None:
    """insertmanyvalues batches of one Core ``execute`` are one unit of work also when
    ``sqlalchemy.orm`` is never imported (the hook was installed with the ORM's loaders)."""
    pytester.makepyfile(core_app="""
        from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert

        ENGINE = create_engine("sqlite://")
        META = MetaData()
        ITEMS = Table("items", META, Column("id", Integer, primary_key=True), Column("name", String))
        META.create_all(ENGINE)


        def add_items(n):
            with ENGINE.begin() as conn:
                return conn.execute(insert(ITEMS).returning(ITEMS.c.id), [{"name": str(i)} for i in range(n)]).all()
    """)
    pytester.makepyfile(test_core="""
        import sys

        import pytest

        import core_app


        @pytest.mark.no_n_plus_one
        def test_one_bulk_insert():
            assert len(core_app.add_items(12_000)) == 12_000
            assert "sqlalchemy.orm" not in sys.modules
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
