"""The N+1 scenario suite for Django's ORM: every kind flagged, no false alarm.

A small Django project (``shop/models.py``, ``shop/services.py``: the code under test) and
one test module run in a ``pytester`` subprocess against the session's real PostgreSQL
(``MIGSAFE_POSTGRES_URL``), in a database created for the run and dropped after it. The
project's conftest calls ``django.setup()``, creates the tables with Django's schema
editor, runs each test in a transaction it rolls back (no pytest-django), and writes each
test's N+1 suspects to a file; each is compared with what the scenario is: an N+1 or not.
Where a suspect's count is a number of statements, the number comes from the server
(``pg_stat_statements`` read around the code), not from the plugin.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("django")

MODELS = '''
from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=50)
    code = models.CharField(max_length=20, null=True, unique=True)
    tags = models.ManyToManyField("Tag", related_name="customers")

    class Meta:
        app_label = "shop"


class Tag(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        app_label = "shop"


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    note = models.CharField(max_length=50, default="n")
    amount = models.IntegerField(default=1, db_column="amount_cents")
    coded_customer = models.ForeignKey(Customer, on_delete=models.CASCADE, to_field="code", null=True,
                                       related_name="orders_by_code")

    class Meta:
        app_label = "shop"


class Profile(models.Model):
    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="profile")
    bio = models.CharField(max_length=50, default="b")

    class Meta:
        app_label = "shop"


class Stamped(models.Model):  # (an abstract class of the hierarchy with an override of its own)
    class Meta:
        abstract = True
        app_label = "shop"

    def refresh_from_db(self, *args, **kwargs):
        super().refresh_from_db(*args, **kwargs)


class Note(Stamped):  # two refresh_from_db overrides between Django's getter and the load
    text = models.CharField(max_length=50)
    slug = models.CharField(max_length=50, default="")

    class Meta:
        app_label = "shop"

    def save(self, *args, **kwargs):
        self.slug = self.text.lower()
        super().save(*args, **kwargs)

    def refresh_from_db(self, *args, **kwargs):
        super().refresh_from_db(*args, **kwargs)
'''

SERVICES = '''
import pickle

from django.db import connection

from shop.models import Customer, Note, Order, Profile, Tag


def seed(n, tags=0, profiles=False):
    customers = Customer.objects.bulk_create([Customer(name=f"c{i}") for i in range(n)])
    orders = Order.objects.bulk_create([Order(customer=c) for c in customers])
    if profiles:
        Profile.objects.bulk_create([Profile(customer=c) for c in customers])
    if tags:
        made = Tag.objects.bulk_create([Tag(name=f"t{i}") for i in range(tags)])
        link = Customer.tags.through
        link.objects.bulk_create([link(customer=c, tag=t) for c in customers for t in made])
    return [o.pk for o in orders]


def customer_names():
    return [order.customer.name for order in Order.objects.order_by("id")]


def customer_names_fetching_peers():
    from django.db.models import FETCH_PEERS  # Django 6.1: one query loads the relation for every peer row

    return [order.customer.name for order in Order.objects.fetch_mode(FETCH_PEERS).order_by("id")]


def notes_fetching_peers():
    from django.db.models import FETCH_PEERS

    return [order.note for order in Order.objects.fetch_mode(FETCH_PEERS).only("id").order_by("id")]


def customer_names_selected():
    return [order.customer.name for order in Order.objects.select_related("customer")]


def customer_names_prefetched():
    return [order.customer.name for order in Order.objects.prefetch_related("customer")]


def one_customer_name(order_id):
    return Order.objects.get(pk=order_id).customer.name


def through_middleware(view):
    """Application code every request passes through (a middleware's get_response)."""
    return view()  # MIDDLEWARE


def customer_names_view():
    orders = list(Order.objects.order_by("id"))  # VIEW-QUERY
    return [order.customer.name for order in orders]  # VIEW-LOOP


def customer_name_of(order):
    return order.customer.name


def create_and_read_customers(n):
    for i in range(n):
        customer = Customer.objects.create(name=f"made{i}")
        list(customer.orders.all())


def order_ids():
    return [[order.id for order in customer.orders.all()] for customer in Customer.objects.all()]


def order_counts():
    return [customer.orders.count() for customer in Customer.objects.all()]


def have_orders():
    return [customer.orders.exists() for customer in Customer.objects.all()]


def order_ids_prefetched():
    customers = Customer.objects.prefetch_related("orders")
    return [[order.id for order in customer.orders.all()] for customer in customers]


def order_counts_prefetched():
    return [customer.orders.count() for customer in Customer.objects.prefetch_related("orders")]


def filtered_after_prefetch():
    customers = Customer.objects.prefetch_related("orders")
    return [list(customer.orders.filter(note="n")) for customer in customers]


def filtered_without_prefetch():
    return [list(customer.orders.filter(note="n")) for customer in Customer.objects.all()]


def first_order_by_index():
    # an index on the manager's own queryset (django-oscar's product.stockrecords.all()[0]): a
    # plain prefetch_related serves it (the index reads the prefetched rows)
    return [customer.orders.all()[0].id for customer in Customer.objects.all()]


def first_order_by_index_prefetched():
    return [customer.orders.all()[0].id for customer in Customer.objects.prefetch_related("orders")]


def first_filtered_order_by_index():
    return [customer.orders.filter(note="n")[0].id for customer in Customer.objects.prefetch_related("orders")]


def rendered_orders():
    # a template of the project's own reads each order's customer (a TemplateResponse renders it
    # the same way, after its view returned): the load's line is the template's
    from django.template.loader import render_to_string

    return render_to_string("orders.html", {"orders": Order.objects.all()})


def excluded_after_prefetch():
    customers = Customer.objects.prefetch_related("orders")
    return [list(customer.orders.exclude(note="x")) for customer in customers]


def ordered_after_prefetch():
    customers = Customer.objects.prefetch_related("orders")
    return [[order.id for order in customer.orders.order_by("-id")] for customer in customers]


def filtered_tags_after_prefetch():
    customers = Customer.objects.prefetch_related("tags")
    return [list(customer.tags.filter(name="t0")) for customer in customers]


def filtered_counts_after_prefetch():
    customers = Customer.objects.prefetch_related("orders")
    return [customer.orders.filter(note="n").count() for customer in customers]


def filtered_exists_after_prefetch():
    customers = Customer.objects.prefetch_related("orders")
    return [customer.orders.filter(note="n").exists() for customer in customers]


def streamed_after_prefetch():
    customers = Customer.objects.prefetch_related("orders")
    return [[order.id for order in customer.orders.iterator()] for customer in customers]


def filtered_with_a_prefetch_object():
    from django.db.models import Prefetch

    customers = Customer.objects.prefetch_related(
        Prefetch("orders", queryset=Order.objects.filter(note="n"), to_attr="selected_orders"))
    return [[order.id for order in customer.selected_orders] for customer in customers]


def counts_and_filtered():
    # one loop, two kinds of per-row read of one relation: .count() (which prefetch_related
    # serves) and .filter() (which only a Prefetch with a queryset does)
    return [(customer.orders.count(), list(customer.orders.filter(note="n")))
            for customer in Customer.objects.all()]


def filtered_counts_annotated():
    from django.db.models import Count, Q

    customers = Customer.objects.annotate(orders_count=Count("orders", filter=Q(orders__note="n")))
    return [customer.orders_count for customer in customers]


def newest_order_per_customer():
    from django.db.models import Max

    return [customer.orders.aggregate(newest=Max("id"))["newest"] for customer in Customer.objects.all()]


def order_totals_per_customer():
    from django.db.models import Sum

    return [customer.orders.aggregate(total=Sum("amount"))["total"] for customer in Customer.objects.all()]


def newest_order_annotated():
    from django.db.models import Max

    return [customer.orders_max for customer in Customer.objects.annotate(orders_max=Max("orders__id"))]


def orders_by_code():
    return [list(customer.orders_by_code.all()) for customer in Customer.objects.all()]


def mark_orders():
    return [customer.orders.update(note="x") for customer in Customer.objects.all()]


def tag_names():
    return [[tag.name for tag in customer.tags.all()] for customer in Customer.objects.all()]


def tag_names_prefetched():
    customers = Customer.objects.prefetch_related("tags")
    return [[tag.name for tag in customer.tags.all()] for customer in customers]


def customers_of_tags():
    return [[c.name for c in tag.customers.all()] for tag in Tag.objects.all()]


def profile_bios():
    return [customer.profile.bio for customer in Customer.objects.all()]


def profile_bios_selected():
    return [customer.profile.bio for customer in Customer.objects.select_related("profile")]


def profile_owners():
    return [profile.customer.name for profile in Profile.objects.all()]


def bios_of_joined_customers(fixed=False):
    orders = Order.objects.select_related("customer__profile" if fixed else "customer")  # the fix advised
    return [order.customer.profile.bio for order in orders]


def order_ids_of_joined_customers(fixed=False):
    orders = Order.objects.select_related("customer")
    if fixed:
        orders = orders.prefetch_related("customer__orders")  # the fix advised
    return [[other.id for other in order.customer.orders.all()] for order in orders]


def customers_of_prefetched_tags(fixed=False):
    customers = Customer.objects.order_by("id").prefetch_related("tags__customers" if fixed else "tags")
    return [[other.id for other in tag.customers.all()] for customer in customers for tag in customer.tags.all()]


def bio_of_order(order_id):
    return Order.objects.select_related("customer").get(pk=order_id).customer.profile.bio


def notes():
    return [order.note for order in Order.objects.only("id")]


def notes_of_raw_rows():
    return [order.note for order in Order.objects.raw("SELECT id FROM shop_order")]


def slugs():
    Note.objects.bulk_create([Note(text=f"N{i}", slug=f"n{i}") for i in range(3)])
    return [note.slug for note in Note.objects.only("text")]


def refresh_each_note_field():
    orders = list(Order.objects.all())
    for order in orders:
        order.refresh_from_db(fields=["note"])
    return orders


def pickled_orders():
    return pickle.dumps(Customer.objects.first().orders.all())


def notes_loaded():
    return [order.note for order in Order.objects.only("id", "note")]


def names_raw(n):
    with connection.cursor() as cursor:
        names = []
        for i in range(n):
            cursor.execute("SELECT name FROM shop_customer WHERE id = %s", [i])
            names.append(cursor.fetchone())
        return names


def add_orders_in_bulk(n):
    customer = Customer.objects.create(name="bulk")
    return len(Order.objects.bulk_create([Order(customer=customer) for _ in range(n)]))


def add_orders_in_batches(n, batch_size):
    customer = Customer.objects.create(name="bulk")
    return len(Order.objects.bulk_create([Order(customer=customer) for _ in range(n)], batch_size=batch_size))


def rename_customers_in_batches(batch_size):
    customers = list(Customer.objects.all())
    for customer in customers:
        customer.name = customer.name.upper()
    return Customer.objects.bulk_update(customers, ["name"], batch_size=batch_size)


def customer_names_streamed():
    # rows in chunks of 2, each Order dropped as the loop goes on: CPython reuses their memory
    return [order.customer.name for order in Order.objects.order_by("id").iterator(chunk_size=2)]
'''

CONFTEST = '''
import json
import os
import uuid
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import pytest
from psycopg import sql

from pytest_migsafe.plugin.stash import existing_record, want_records

URL = os.environ["MIGSAFE_POSTGRES_URL"].replace("postgresql+psycopg://", "postgresql://")
DATABASE = f"migsafe_django_{uuid.uuid4().hex[:12]}"
SUSPECTS = {}
TRUTH = {}
OUTCOMES = {}
LATE = bool(os.environ.get("SHOP_DJANGO_IN_TEST"))  # the test itself imports Django's ORM


def pytest_configure(config):
    want_records(config)  # this conftest reads the records (at the defaults nothing does)
    from django.conf import settings

    parts = urlsplit(URL)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    settings.configure(
        INSTALLED_APPS=["shop"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                    "DIRS": [os.path.join(os.path.dirname(__file__), "shop", "templates")]}],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": DATABASE,
            "USER": unquote(parts.username or "postgres"), "PASSWORD": unquote(parts.password or ""),
            "HOST": query.get("host", parts.hostname or ""), "PORT": query.get("port", parts.port or ""),
        }},
        USE_TZ=True,
    )
    if not LATE:
        set_up_django()


def set_up_django():
    """django.setup(), then the tables of the shop app (and pg_stat_statements) in the new database."""
    import django

    django.setup()
    from django.apps import apps
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    with connection.schema_editor() as editor:
        for model in apps.get_app_config("shop").get_models():
            editor.create_model(model)


def pytest_unconfigure(config):
    import sys

    if "django.db" in sys.modules:
        sys.modules["django.db"].connections.close_all()
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))


@pytest.fixture(autouse=True)
def rolled_back():
    """Each test in a transaction rolled back after it: every test starts from empty tables."""
    if LATE:
        yield
        return
    from django.db import transaction

    atomic = transaction.atomic()
    atomic.__enter__()
    try:
        yield
    finally:
        transaction.set_rollback(True)
        atomic.__exit__(None, None, None)


@pytest.fixture
def server_calls(request):
    """``server_calls(pattern)``: executions the server counted in this database for statements
    whose text contains ``pattern`` (pg_stat_statements); ``record(name, n)`` keeps a figure."""
    from django.db import connection

    def calls(pattern):
        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                           "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                           "AND query LIKE %s", ["%" + pattern + "%"])
            return int(cursor.fetchone()[0])

    calls.record = lambda n: TRUTH.__setitem__(request.node.name, n)
    return calls


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    record = existing_record(item)
    found = record.queries.n_plus_one if record is not None and record.queries is not None else []
    SUSPECTS[item.name] = [{"kind": s.kind, "relationship": s.relationship, "count": s.count,
                            "parents": s.parents, "allowed": s.allowed, "site": s.call_site,
                            "chain": s.chain, "shape": s.shape, "fix": s.fix,
                            "loaded_at": s.loaded_at} for s in found]


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        OUTCOMES[report.nodeid.rpartition("::")[2]] = report.outcome


def pytest_sessionfinish(session):
    with open("suspects.json", "w") as f:
        json.dump({"suspects": SUSPECTS, "truth": TRUTH, "outcomes": OUTCOMES}, f)
'''

TESTS = '''
import re

import pytest
from django.db import models

from shop import services as app
from shop.models import Customer, Note, Order

CUSTOMER_BY_ID = 'FROM "shop_customer" WHERE "shop_customer"."id" = '
ORDERS_OF_CUSTOMER = 'FROM "shop_order" WHERE "shop_order"."customer_id" = '


def test_forward_fk_over_2_parents():
    app.seed(2)
    app.customer_names()


def test_forward_fk_over_3_parents():
    app.seed(3)
    app.customer_names()


def test_forward_fk_over_50_parents(server_calls):
    app.seed(50)
    before = server_calls(CUSTOMER_BY_ID)
    app.customer_names()
    server_calls.record(server_calls(CUSTOMER_BY_ID) - before)


def test_reverse_fk_all_over_3_parents():
    app.seed(3)
    app.order_ids()


def test_reverse_fk_count_over_3_parents(server_calls):
    app.seed(3)
    before = server_calls(ORDERS_OF_CUSTOMER)
    app.order_counts()
    server_calls.record(server_calls(ORDERS_OF_CUSTOMER) - before)


def test_reverse_fk_exists_over_3_parents():
    app.seed(3)
    app.have_orders()


def test_many_to_many_over_3_parents():
    app.seed(3, tags=2)
    app.tag_names()


def test_reverse_many_to_many_over_2_parents():
    app.seed(3, tags=2)
    app.customers_of_tags()


def test_forward_one_to_one_over_3_parents():
    app.seed(3, profiles=True)
    app.profile_owners()


def test_reverse_one_to_one_over_3_parents():
    app.seed(3, profiles=True)
    app.profile_bios()


def test_forward_fk_of_one_parent_is_fine():
    (order_id, *_) = app.seed(3)
    app.one_customer_name(order_id)


def test_two_single_lookups_are_fine():
    (first, second, _) = app.seed(3)
    app.one_customer_name(first)
    app.one_customer_name(second)


def test_loads_from_rows_joined_by_two_single_lookups_are_fine():
    (first, second, _) = app.seed(3, profiles=True)
    app.bio_of_order(first)
    app.bio_of_order(second)


def test_select_related_fix_is_fine():
    app.seed(50)
    app.customer_names_selected()


def test_prefetch_related_of_a_forward_fk_is_fine():
    app.seed(50)
    app.customer_names_prefetched()


def test_prefetch_related_fix_is_fine():
    app.seed(50)
    app.order_ids_prefetched()


def test_prefetch_related_fix_of_per_row_count_is_fine():
    app.seed(50)
    app.order_counts_prefetched()


def test_prefetch_related_fix_of_many_to_many_is_fine():
    app.seed(20, tags=3)
    app.tag_names_prefetched()


def test_reverse_one_to_one_of_parents_select_related_joined():
    app.seed(3, profiles=True)
    app.bios_of_joined_customers()


def test_chained_select_related_fix_is_fine():
    app.seed(3, profiles=True)
    app.bios_of_joined_customers(fixed=True)


def test_reverse_fk_of_parents_select_related_joined():
    app.seed(3)
    app.order_ids_of_joined_customers()


def test_chained_prefetch_related_fix_is_fine():
    app.seed(3)
    app.order_ids_of_joined_customers(fixed=True)


def test_many_to_many_of_parents_a_prefetch_loaded():
    app.seed(3, tags=2)
    app.customers_of_prefetched_tags()


def test_chained_prefetch_fix_through_a_prefetch_is_fine():
    app.seed(3, tags=2)
    app.customers_of_prefetched_tags(fixed=True)


def test_select_related_fix_of_reverse_one_to_one_is_fine():
    app.seed(20, profiles=True)
    app.profile_bios_selected()


def test_filter_after_prefetch_is_a_load_per_row():
    app.seed(3)
    app.filtered_after_prefetch()


def test_count_and_filter_in_one_loop_are_two_suspects_with_their_fixes():
    app.seed(3)
    app.counts_and_filtered()


def test_filter_without_prefetch_is_a_load_per_row():
    app.seed(3)
    app.filtered_without_prefetch()


def test_index_of_the_related_manager_is_a_load_per_row():
    app.seed(3)
    app.first_order_by_index()


def test_prefetch_related_fix_of_an_index_is_fine():
    app.seed(3)
    app.first_order_by_index_prefetched()


def test_index_of_a_filter_after_prefetch_is_a_load_per_row():
    app.seed(3)
    app.first_filtered_order_by_index()


def test_template_line_of_a_load_per_row():
    app.seed(3)
    app.rendered_orders()


def test_exclude_after_prefetch_is_a_load_per_row():
    app.seed(3)
    app.excluded_after_prefetch()


def test_order_by_after_prefetch_is_a_load_per_row():
    app.seed(3)
    app.ordered_after_prefetch()


def test_many_to_many_filter_after_prefetch_is_a_load_per_row():
    app.seed(3, tags=2)
    app.filtered_tags_after_prefetch()


def test_filtered_count_after_prefetch_is_a_load_per_row(server_calls):
    app.seed(3)
    filtered = 'FROM "shop_order" WHERE ("shop_order"."customer_id" = '  # and its note
    before = server_calls(filtered)
    app.filtered_counts_after_prefetch()
    server_calls.record(server_calls(filtered) - before)


def test_filtered_exists_after_prefetch_is_a_load_per_row():
    app.seed(3)
    app.filtered_exists_after_prefetch()


def test_iterator_after_prefetch_is_a_load_per_row():
    app.seed(3)
    app.streamed_after_prefetch()


def test_prefetch_object_fix_of_a_filter_is_fine():
    app.seed(50)
    app.filtered_with_a_prefetch_object()


def test_annotated_count_fix_of_a_filtered_count_is_fine():
    app.seed(50)
    app.filtered_counts_annotated()


def test_an_aggregate_per_row_is_a_load_per_row():
    app.seed(3)
    app.newest_order_per_customer()


def test_an_aggregate_of_a_renamed_column_per_row_is_a_load_per_row():
    app.seed(3)
    app.order_totals_per_customer()


def test_annotated_aggregate_fix_of_an_aggregate_per_row_is_fine():
    app.seed(50)
    app.newest_order_annotated()


def test_related_manager_that_sends_nothing_is_not_a_load():
    app.seed(3)  # no customer has a code: Django answers customer.orders_by_code.all() without SQL
    app.orders_by_code()


def test_updates_through_a_related_manager_are_not_loads():
    app.seed(3)
    app.mark_orders()


if hasattr(models, "FETCH_PEERS"):
    def test_fetch_peers_fix_of_a_forward_fk_is_fine():
        app.seed(3)
        app.customer_names_fetching_peers()

    def test_fetch_peers_fix_of_a_deferred_field_is_fine():
        app.seed(3)
        app.notes_fetching_peers()


def test_deferred_field_over_3_rows():
    app.seed(3)
    app.notes()


def test_deferred_field_of_raw_rows():
    app.seed(3)
    app.notes_of_raw_rows()


def test_deferred_field_through_a_refresh_from_db_override():
    app.slugs()


def test_explicit_refresh_is_not_a_deferred_load():
    app.seed(3)
    app.refresh_each_note_field()


def test_a_related_queryset_pickles_without_naming_the_plugin():
    import pickle

    app.seed(2)
    data = app.pickled_orders()
    assert b"pytest_migsafe" not in data
    assert len(pickle.loads(data)) == 1


def test_patches_keep_signatures_and_install_once():
    import inspect

    from django.db.models import Model
    from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor
    from django.db.models.query import ModelIterable
    from django.db.models.sql.compiler import SQLCompiler
    from django.db.models.sql.query import Query

    from pytest_migsafe.queries import django as django_orm

    patched = (SQLCompiler.execute_sql, ModelIterable.__iter__, ForwardManyToOneDescriptor.get_queryset,
               Model.refresh_from_db, Customer.orders.related_manager_cls.get_queryset, Query.chain)
    assert all(hasattr(f, "__wrapped__") for f in patched)
    assert list(inspect.signature(SQLCompiler.execute_sql).parameters) == [
        "self", "result_type", "chunked_fetch", "chunk_size"]
    assert list(inspect.signature(Query.chain).parameters) == ["self", "klass"]
    assert "fields" in inspect.signature(Model.refresh_from_db).parameters
    assert django_orm.install() is True
    assert SQLCompiler.execute_sql is patched[0]  # a second install patches nothing again


def test_field_loaded_with_only_is_fine():
    app.seed(50)
    app.notes_loaded()


def test_raw_sql_loop_of_20():
    app.seed(3)
    app.names_raw(20)


def test_raw_sql_loop_of_3_is_below_the_default_threshold():
    app.seed(3)
    app.names_raw(3)


def test_set_up_loop_in_the_test_body_is_fine():
    (order_id,) = app.seed(1)
    for i in range(30):
        Customer.objects.create(name=f"s{i}")
    app.one_customer_name(order_id)


def test_save_override_called_from_11_lines_of_the_test_is_fine():
    Note(text="A").save()
    Note(text="B").save()
    Note(text="C").save()
    Note(text="D").save()
    Note(text="E").save()
    Note(text="F").save()
    Note(text="G").save()
    Note(text="H").save()
    Note(text="I").save()
    Note(text="J").save()
    Note(text="K").save()


def test_bulk_create_of_many_rows_is_fine():
    assert app.add_orders_in_bulk(500) == 500


def test_forward_fk_in_a_view_behind_a_middleware():
    app.seed(3)
    app.through_middleware(app.customer_names_view)


def test_rows_created_one_by_one_each_loading_its_relation_are_fine():
    """Each row made by its own INSERT, as a row fetched by its own query: not one query's rows
    (healthchecks' suite: a Check created per request, its channels read, flagged for 3 rows)."""
    app.create_and_read_customers(3)


@pytest.fixture
def orders_a_fixture_made_one_by_one():
    made = []
    for i in range(2):
        customer = Customer.objects.create(name=f"fixture{i}")
        made.append(Order.objects.create(customer_id=customer.id))
    return made


def test_rows_a_fixture_created_one_by_one_each_loading_its_relation_are_fine(orders_a_fixture_made_one_by_one):
    """The same rows made by a fixture (before the test's counter started) had no note, and
    their loads counted as one unknown query's: an N+1 of 2 rows."""
    first, second = orders_a_fixture_made_one_by_one
    app.customer_name_of(first)
    app.customer_name_of(second)


def test_rows_created_then_loaded_by_one_query_are_an_n_plus_one():
    app.create_and_read_customers(3)
    app.order_ids()


def test_bulk_create_in_batches_is_fine():
    assert app.add_orders_in_batches(150, batch_size=10) == 150


def test_bulk_update_in_batches_is_fine():
    app.seed(120)
    app.rename_customers_in_batches(batch_size=10)


def test_forward_fk_over_12_streamed_parents():
    app.seed(12)
    app.customer_names_streamed()


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
@pytest.mark.allow_n_plus_one(re.compile(r"select name from shop_customer where id"), 20)
def test_allowed_by_a_lowercase_regex_on_the_sql():
    app.seed(3)
    app.names_raw(20)


@pytest.mark.max_queries(3)
def test_budget_counts_lazy_loads():
    app.seed(3)
    app.customer_names()
'''

LATE_TEST = '''
import sys


def test_first_import_of_the_orm_inside_the_test():
    assert "django.db.models" not in sys.modules
    from conftest import set_up_django

    set_up_django()  # django.setup() imports django.db.models here, in the test
    from shop import services as app

    app.seed(3)
    app.customer_names()
'''

# test name -> the suspects it must have: (kind, relationship or a piece of the shape)
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "test_forward_fk_over_2_parents": [("lazy_load", "Order.customer")],
    "test_forward_fk_over_3_parents": [("lazy_load", "Order.customer")],
    "test_forward_fk_over_12_streamed_parents": [("lazy_load", "Order.customer")],
    "test_bulk_create_in_batches_is_fine": [],
    "test_bulk_update_in_batches_is_fine": [],
    "test_forward_fk_over_50_parents": [("lazy_load", "Order.customer")],
    "test_reverse_fk_all_over_3_parents": [("lazy_load", "Customer.orders")],
    "test_reverse_fk_count_over_3_parents": [("lazy_load", "Customer.orders")],
    "test_reverse_fk_exists_over_3_parents": [("lazy_load", "Customer.orders")],
    "test_many_to_many_over_3_parents": [("lazy_load", "Customer.tags")],
    "test_reverse_many_to_many_over_2_parents": [("lazy_load", "Tag.customers")],
    "test_forward_one_to_one_over_3_parents": [("lazy_load", "Profile.customer")],
    "test_reverse_one_to_one_over_3_parents": [("lazy_load", "Customer.profile")],
    "test_forward_fk_of_one_parent_is_fine": [],
    "test_two_single_lookups_are_fine": [],
    "test_loads_from_rows_joined_by_two_single_lookups_are_fine": [],
    "test_select_related_fix_is_fine": [],
    "test_reverse_one_to_one_of_parents_select_related_joined": [("lazy_load", "Customer.profile")],
    "test_chained_select_related_fix_is_fine": [],
    "test_reverse_fk_of_parents_select_related_joined": [("lazy_load", "Customer.orders")],
    "test_chained_prefetch_related_fix_is_fine": [],
    "test_many_to_many_of_parents_a_prefetch_loaded": [("lazy_load", "Tag.customers")],
    "test_chained_prefetch_fix_through_a_prefetch_is_fine": [],
    "test_prefetch_related_of_a_forward_fk_is_fine": [],
    "test_prefetch_related_fix_is_fine": [],
    "test_prefetch_related_fix_of_per_row_count_is_fine": [],
    "test_prefetch_related_fix_of_many_to_many_is_fine": [],
    "test_select_related_fix_of_reverse_one_to_one_is_fine": [],
    "test_filter_after_prefetch_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_filter_without_prefetch_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    # (one suspect fixed by prefetch_related("orders") left the .filter() one: the advice named the first only)
    "test_count_and_filter_in_one_loop_are_two_suspects_with_their_fixes": [
        ("lazy_load", "Customer.orders"), ("lazy_load", "Customer.orders")],
    "test_exclude_after_prefetch_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_template_line_of_a_load_per_row": [("lazy_load", "Order.customer")],
    "test_index_of_the_related_manager_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_prefetch_related_fix_of_an_index_is_fine": [],
    "test_index_of_a_filter_after_prefetch_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_order_by_after_prefetch_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_many_to_many_filter_after_prefetch_is_a_load_per_row": [("lazy_load", "Customer.tags")],
    "test_filtered_count_after_prefetch_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_an_aggregate_per_row_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_an_aggregate_of_a_renamed_column_per_row_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_annotated_aggregate_fix_of_an_aggregate_per_row_is_fine": [],
    "test_filtered_exists_after_prefetch_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_iterator_after_prefetch_is_a_load_per_row": [("lazy_load", "Customer.orders")],
    "test_prefetch_object_fix_of_a_filter_is_fine": [],
    "test_annotated_count_fix_of_a_filtered_count_is_fine": [],
    "test_related_manager_that_sends_nothing_is_not_a_load": [],
    "test_updates_through_a_related_manager_are_not_loads": [],
    "test_deferred_field_over_3_rows": [("deferred_column", "Order.note")],
    "test_deferred_field_of_raw_rows": [("deferred_column", "Order.note")],
    "test_deferred_field_through_a_refresh_from_db_override": [("deferred_column", "Note.slug")],
    "test_explicit_refresh_is_not_a_deferred_load": [],
    "test_a_related_queryset_pickles_without_naming_the_plugin": [],
    "test_patches_keep_signatures_and_install_once": [],
    "test_field_loaded_with_only_is_fine": [],
    "test_raw_sql_loop_of_20": [("repeated_statement", "shop_customer")],
    "test_raw_sql_loop_of_3_is_below_the_default_threshold": [],
    "test_set_up_loop_in_the_test_body_is_fine": [],
    "test_save_override_called_from_11_lines_of_the_test_is_fine": [],
    "test_bulk_create_of_many_rows_is_fine": [],
    "test_forward_fk_in_a_view_behind_a_middleware": [("lazy_load", "Order.customer")],
    "test_rows_created_one_by_one_each_loading_its_relation_are_fine": [],
    "test_rows_a_fixture_created_one_by_one_each_loading_its_relation_are_fine": [],
    "test_rows_created_then_loaded_by_one_query_are_an_n_plus_one": [("lazy_load", "Customer.orders")],
    "test_allowed_by_relationship_name": [("lazy_load", "Order.customer")],
    "test_allowed_relationship_over_its_ceiling_fails": [("lazy_load", "Order.customer")],
    "test_allowed_by_a_lowercase_regex_on_the_sql": [("repeated_statement", "shop_customer")],
    "test_budget_counts_lazy_loads": [("lazy_load", "Order.customer")],
}

def _fetch_modes() -> bool:
    """Django 6.1 and later: ``QuerySet.fetch_mode(FETCH_PEERS)``, the scenarios of its fixes."""
    from django.db import models

    return hasattr(models, "FETCH_PEERS")


if _fetch_modes():  # one query loads the relation (or the field) for every row of the queryset
    EXPECTED.update({"test_fetch_peers_fix_of_a_forward_fk_is_fine": [],
                     "test_fetch_peers_fix_of_a_deferred_field_is_fine": []})

FAILING = ("test_allowed_relationship_over_its_ceiling_fails", "test_budget_counts_lazy_loads")
Run = dict[str, Any]


def _write_project(pytester: pytest.Pytester) -> None:
    pytester.mkpydir("shop")
    (pytester.path / "shop" / "models.py").write_text(MODELS)
    (pytester.path / "shop" / "services.py").write_text(SERVICES)
    (pytester.path / "shop" / "templates").mkdir()
    (pytester.path / "shop" / "templates" / "orders.html").write_text(
        "<ul>\n{% for order in orders %}\n<li>{{ order.customer.name }}</li>\n{% endfor %}\n</ul>\n")
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\n")


def _run_scenarios(pytester: pytest.Pytester) -> Run:
    """Write the project and run its tests in a subprocess; suspects, server figures, output."""
    _write_project(pytester)
    pytester.makepyfile(test_scenarios=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider",
                                           "-W", "ignore::DeprecationWarning", timeout=600)
    written = json.loads((pytester.path / "suspects.json").read_text())
    return {"suspects": written["suspects"], "truth": written["truth"], "outcomes": written["outcomes"],
            "result": result,
            "output": "\n".join(result.outlines)}


@pytest.fixture(scope="module")
def _runs() -> dict[str, Run]:
    return {}


@pytest.fixture
def scenario_run(pytester: pytest.Pytester, _runs: dict[str, Run]) -> Run:
    """The scenario suite's run: made by the first test of this module that asks, then shared."""
    if not os.environ.get("MIGSAFE_POSTGRES_URL"):
        pytest.skip("needs the session's PostgreSQL (MIGSAFE_POSTGRES_URL)")
    if "run" not in _runs:
        _runs["run"] = _run_scenarios(pytester)
    return _runs["run"]


def test_orm_first_imported_inside_a_test_is_watched_from_then_on(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.environ.get("MIGSAFE_POSTGRES_URL"):
        pytest.skip("needs the session's PostgreSQL (MIGSAFE_POSTGRES_URL)")
    _write_project(pytester)
    pytester.makepyfile(test_late=LATE_TEST)
    monkeypatch.setenv("SHOP_DJANGO_IN_TEST", "1")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider",
                                           "-W", "ignore::DeprecationWarning", timeout=600)
    result.assert_outcomes(passed=1, warnings=None)
    (suspect,) = json.loads((pytester.path / "suspects.json").read_text())["suspects"][
        "test_first_import_of_the_orm_inside_the_test"]
    assert (suspect["kind"], suspect["relationship"], suspect["parents"]) == ("lazy_load", "Order.customer", 3)


@pytest.mark.parametrize("test", sorted(EXPECTED))
def test_each_scenario_is_flagged_exactly_when_it_is_an_n_plus_one(scenario_run: Run, test: str) -> None:
    suspects = scenario_run["suspects"]
    assert test in suspects, scenario_run["output"][-3000:]
    # the scenario's own assertions held; only the two the plugin must fail did fail
    assert scenario_run["outcomes"][test] == ("failed" if test in FAILING else "passed"), scenario_run["output"][-3000:]
    found = suspects[test]
    expected = EXPECTED[test]
    assert len(found) == len(expected), found
    for (kind, what), suspect in zip(expected, found):
        assert suspect["kind"] == kind, suspect
        assert what in (suspect["relationship"] or suspect["shape"]), suspect


def test_a_load_a_django_template_sends_shows_the_template_line(scenario_run: Run) -> None:
    """The customer of each order read by {{ order.customer.name }} on line 3 of the project's
    template: the chain ends at that line (it ended at the function that called the render, and
    a TemplateResponse rendered after its view returned showed only a middleware's line)."""
    (suspect,) = scenario_run["suspects"]["test_template_line_of_a_load_per_row"]
    assert (suspect["relationship"], suspect["parents"]) == ("Order.customer", 3), suspect
    assert suspect["site"].startswith(os.path.join("shop", "services.py") + ":"), suspect
    assert suspect["chain"][-1] == os.path.join("shop", "templates", "orders.html") + ":3", suspect


def test_suspect_counts_are_the_statements_the_server_ran(scenario_run: Run) -> None:
    suspects, truth = scenario_run["suspects"], scenario_run["truth"]
    for test in ("test_forward_fk_over_50_parents", "test_reverse_fk_count_over_3_parents",
                 "test_filtered_count_after_prefetch_is_a_load_per_row"):
        (suspect,) = suspects[test]
        assert truth[test] > 0, truth  # pg_stat_statements saw the loads
        assert suspect["count"] == suspect["parents"] == truth[test], (suspect, truth)


def test_parents_call_sites_and_the_loading_query_are_exact(scenario_run: Run) -> None:
    suspects = scenario_run["suspects"]
    for test, parents in (("test_forward_fk_over_2_parents", 2), ("test_forward_fk_over_3_parents", 3),
                          ("test_forward_fk_over_12_streamed_parents", 12),
                          ("test_reverse_fk_all_over_3_parents", 3), ("test_many_to_many_over_3_parents", 3),
                          ("test_reverse_many_to_many_over_2_parents", 2),
                          ("test_reverse_one_to_one_over_3_parents", 3), ("test_deferred_field_over_3_rows", 3),
                          ("test_deferred_field_of_raw_rows", 3),
                          ("test_deferred_field_through_a_refresh_from_db_override", 3)):
        (suspect,) = suspects[test]
        assert (suspect["parents"], suspect["count"]) == (parents, parents), suspect
        assert suspect["site"].startswith(os.path.join("shop", "services.py") + ":"), suspect
        # the parents were loaded by one query, in the same application function
        assert suspect["loaded_at"] == suspect["site"], suspect
    (raw,) = suspects["test_raw_sql_loop_of_20"]
    assert raw["count"] == 20 and raw["chain"][0].startswith(os.path.join("shop", "services.py") + ":"), raw


def test_a_load_in_a_view_is_reported_at_the_view_not_the_middleware_above_it(scenario_run: Run) -> None:
    """The outermost application frame is the middleware every request passes through (app D,
    healthchecks: three N+1s all reported at its get_response line); the function that loaded
    the parents and goes over them is the frame that loops."""
    (suspect,) = scenario_run["suspects"]["test_forward_fk_in_a_view_behind_a_middleware"]
    lines = SERVICES.splitlines()
    services = os.path.join("shop", "services.py")

    def line(tag: str) -> str:
        return f"{services}:{next(n for n, text in enumerate(lines, 1) if tag in text)}"

    assert (suspect["site"], suspect["loaded_at"]) == (line("VIEW-LOOP"), line("VIEW-QUERY")), suspect
    assert line("MIDDLEWARE") not in suspect["chain"], suspect


def test_fixes_name_select_related_prefetch_related_and_only(scenario_run: Run) -> None:
    suspects = scenario_run["suspects"]
    expected = {
        "test_forward_fk_over_3_parents": 'Order.objects.select_related("customer")',
        "test_forward_one_to_one_over_3_parents": 'Profile.objects.select_related("customer")',
        "test_reverse_one_to_one_over_3_parents": 'Customer.objects.select_related("profile")',
        "test_reverse_fk_count_over_3_parents": 'Customer.objects.prefetch_related("orders")',
        # an index on .all() reads the prefetched rows: the plain prefetch (was a Prefetch with a
        # filter and a to_attr, and "slices run a query per row even on a prefetched relation")
        "test_index_of_the_related_manager_is_a_load_per_row": 'Customer.objects.prefetch_related("orders")',
        "test_many_to_many_over_3_parents": 'Customer.objects.prefetch_related("tags")',
        "test_reverse_many_to_many_over_2_parents": 'Tag.objects.prefetch_related("customers")',
        # parents select_related joined into another model's query: through them (the advice for
        # the parents' own query, Customer.objects..., had no place in the code)
        "test_reverse_one_to_one_of_parents_select_related_joined": 'Order.objects.select_related("customer__profile")',
        "test_reverse_fk_of_parents_select_related_joined": 'Order.objects.prefetch_related("customer__orders")',
        "test_many_to_many_of_parents_a_prefetch_loaded": 'Customer.objects.prefetch_related("tags__customers")',
        "test_deferred_field_over_3_rows": 'load "note" with the Order rows: add it to .only(...), '
                                           'or take it out of .defer(...)',
    }
    if _fetch_modes():  # Django 6.1: a fetch mode fixes a deferred field or a forward / one-to-one relation
        expected = {test: fix if "prefetch_related" in fix else f"{fix}, or .fetch_mode(models.FETCH_PEERS) on the query"
                    for test, fix in expected.items()}
    assert {test: suspects[test][0]["fix"] for test in expected} == expected


def test_fixes_name_a_prefetch_object_where_the_related_manager_is_narrowed_per_row(scenario_run: Run) -> None:
    """A queryset made per row from a related manager (.filter(), .exclude(), .order_by()) runs
    a query per row whether or not the relation is prefetched: prefetch_related("orders") is no
    fix (the code may have it already); a Prefetch with the queryset and a to_attr is, and the
    advice says why. A per-row count or exists of one: annotate(Count(...)), or the Prefetch."""
    suspects = scenario_run["suspects"]
    prefetch = ('Customer.objects.prefetch_related(Prefetch("orders", queryset=Order.objects.filter(...), '
                'to_attr="selected_orders")), then read customer.selected_orders')
    prefetched = (': .filter() on a prefetched relation runs a query per row (so do .exclude(), .order_by() '
                  'and .annotate()): move them into the Prefetch queryset')
    count = ('Customer.objects.annotate(orders_count=Count("orders", filter=Q(orders__...))), then read '
             'customer.orders_count (or len() of a Prefetch("orders", queryset=Order.objects.filter(...), '
             'to_attr="selected_orders")): .count() / .exists() / .aggregate() of a .filter() (.exclude(), ...) '
             'on customer.orders runs a query per row, even on a prefetched relation')
    expected = {
        "test_filter_after_prefetch_is_a_load_per_row": prefetch + prefetched,
        "test_exclude_after_prefetch_is_a_load_per_row": prefetch + prefetched,
        "test_order_by_after_prefetch_is_a_load_per_row": prefetch + prefetched,
        "test_index_of_a_filter_after_prefetch_is_a_load_per_row": prefetch + prefetched,
        "test_many_to_many_filter_after_prefetch_is_a_load_per_row":
            'Customer.objects.prefetch_related(Prefetch("tags", queryset=Tag.objects.filter(...), '
            'to_attr="selected_tags")), then read customer.selected_tags' + prefetched,
        "test_filter_without_prefetch_is_a_load_per_row":
            prefetch + ': .filter() on customer.orders runs a query per row, even with prefetch_related("orders") '
            '(so do .exclude(), .order_by() and .annotate()): move them into the Prefetch queryset',
        "test_filtered_count_after_prefetch_is_a_load_per_row": count,
        # .aggregate(Max("id")) per row: the same aggregate annotated (not a Count of a .filter())
        "test_an_aggregate_per_row_is_a_load_per_row":
            'Customer.objects.annotate(orders_max=Max("orders__id")), then read customer.orders_max: .aggregate() '
            'on customer.orders runs a query per row (add filter=Q(orders__...) to it for a .filter() on '
            'customer.orders)',
        # the field's name, not its column's (db_column="amount_cents"): Sum("orders__amount")
        "test_an_aggregate_of_a_renamed_column_per_row_is_a_load_per_row":
            'Customer.objects.annotate(orders_sum=Sum("orders__amount")), then read customer.orders_sum: .aggregate() '
            'on customer.orders runs a query per row (add filter=Q(orders__...) to it for a .filter() on '
            'customer.orders)',
        "test_filtered_exists_after_prefetch_is_a_load_per_row": count,
        "test_iterator_after_prefetch_is_a_load_per_row":
            'read customer.orders.all() (the prefetched rows): .iterator() on a prefetched relation runs '
            'a query per row',
    }
    assert {test: suspects[test][0]["fix"] for test in expected} == expected
    # one loop reading .count() and .filter() of one relation: both fixes, one suspect each
    fixes = sorted(suspect["fix"] for suspect in suspects["test_count_and_filter_in_one_loop_are_two_suspects_with_their_fixes"])
    assert fixes == sorted(['Customer.objects.prefetch_related("orders")',
                            expected["test_filter_without_prefetch_is_a_load_per_row"]]), fixes
    # every one of them one query per parent row, as the server counted it
    for test in expected:
        (suspect,) = suspects[test]
        assert (suspect["parents"], suspect["count"]) == (3, 3), suspect


def test_django_fix_text_for_each_direction() -> None:
    from pytest_migsafe.queries import django as django_orm

    peers = ", or .fetch_mode(models.FETCH_PEERS) on the query" if _fetch_modes() else ""
    assert django_orm.fix_for("lazy_load", "Order.customer", django_orm.SELECT_RELATED) == \
        'Order.objects.select_related("customer")' + peers
    assert django_orm.fix_for("lazy_load", "Customer.orders", django_orm.PREFETCH_RELATED) == \
        'Customer.objects.prefetch_related("orders")'
    assert django_orm.fix_for("deferred_column", "Order.note", django_orm.DEFERRED) == \
        'load "note" with the Order rows: add it to .only(...), or take it out of .defer(...)' + peers
    # no app registry to name the related model (Django not set up in this process)
    assert django_orm.fix_for("lazy_load", "Customer.orders", django_orm.PER_ROW_QUERYSET).startswith(
        'Customer.objects.prefetch_related(Prefetch("orders", queryset=<related model>.objects.filter(...), '
        'to_attr="selected_orders")), then read customer.selected_orders: .filter() on customer.orders runs')
    assert django_orm.fix_for("lazy_load", "Customer.orders", django_orm.PER_ROW_AGGREGATE).startswith(
        'Customer.objects.annotate(orders_count=Count("orders", filter=Q(orders__...)))')


def test_execute_sql_of_another_signature_is_wrapped_as_it_is() -> None:
    from pytest_migsafe.queries import django as django_orm

    def execute_sql(self: object, result_type: str = "multi", *, future: int = 0) -> tuple[str, int]:
        return result_type, future

    compiler = SimpleNamespace(query=SimpleNamespace())  # a compiler of an unmarked query
    wrapped = django_orm._wrap_execute_sql(execute_sql, writes=())
    assert wrapped.__wrapped__ is execute_sql  # type: ignore[attr-defined]
    assert wrapped(compiler, "single", future=2) == ("single", 2)
    assert wrapped(compiler) == ("multi", 0)


def test_allow_rules_and_budgets_decide_the_outcomes(scenario_run: Run) -> None:
    suspects, output = scenario_run["suspects"], scenario_run["output"]
    assert suspects["test_allowed_by_relationship_name"][0]["allowed"] is True
    assert suspects["test_allowed_relationship_over_its_ceiling_fails"][0]["allowed"] is False
    assert suspects["test_allowed_by_a_lowercase_regex_on_the_sql"][0]["allowed"] is True
    scenario_run["result"].assert_outcomes(passed=len(EXPECTED) - len(FAILING), failed=len(FAILING), warnings=None)
    scenario_run["result"].stdout.fnmatch_lines([
        "*FAILED test_scenarios.py::test_allowed_relationship_over_its_ceiling_fails*",
        "*FAILED test_scenarios.py::test_budget_counts_lazy_loads*",
    ])
    assert "N+1 suspected: Order.customer lazy-loaded for 3 Order rows" in output


def test_a_forward_relation_of_rows_a_prefetch_loaded_is_prefetched_through_it() -> None:
    """No select_related goes through a prefetch: a forward FK of rows prefetch_related("lines")
    loaded is advised prefetch_related("lines__product") (it was Line.objects.select_related(...),
    with no place in the code)."""
    from pytest_migsafe.queries import django as django_loads

    via = ("Order", (("lines", django_loads.PREFETCH_RELATED),))
    assert django_loads.fix_for("lazy_load", "Line.product", django_loads.SELECT_RELATED, via).startswith(
        'Order.objects.prefetch_related("lines__product")')
    joined = ("Order", (("customer", django_loads.SELECT_RELATED),))
    assert django_loads.fix_for("lazy_load", "Customer.region", django_loads.SELECT_RELATED, joined).startswith(
        'Order.objects.select_related("customer__region")')
