"""unittest-style tests count their test method alone: setUp, tearDown and cleanups do not count.

The expected figure comes from the server: each part of the test runs a statement with a
marker of its own, pg_stat_statements counts them around the run, and the plugin's count
for the test must equal the server's count of the test method's statement alone.
"""

from __future__ import annotations

import json
import os
import textwrap
import uuid

import psycopg
import pytest

DSN = os.environ["MIGSAFE_TEST_POSTGRES_DSN"]
URL = os.environ["MIGSAFE_POSTGRES_URL"]

RECORDS = '''
import json
import pytest
from pytest_migsafe.plugin.stash import existing_record, want_records

COUNTS = {}

def pytest_configure(config):
    want_records(config)  # this conftest reads the records (at the defaults nothing does)

@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    record = existing_record(item)
    queries = record.queries if record is not None else None
    COUNTS[item.name] = None if queries is None else {
        "count": queries.count, "sites": sorted({site for s in queries.shapes for site in s.call_sites})}

def pytest_sessionfinish(session):
    with open("counts.json", "w") as f:
        json.dump(COUNTS, f)
'''


def marker_tables(*names: str) -> None:
    """One new empty table per marker (a fresh name each run: pg_stat_statements folds
    constants, but never relations, and keeps the figures of earlier runs)."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {name} (x int)")


def server_calls(marker: str) -> int:
    """pg_stat_statements calls of the statements that read the table ``marker``."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                           "WHERE query LIKE %s AND query NOT LIKE 'CREATE %%'",
                           (f"%{marker}%",)).fetchone()
    return int(row[0]) if row else 0


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    pytester.makeconftest(RECORDS)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    return result, json.loads((pytester.path / "counts.json").read_text())


def test_unittest_setup_teardown_and_cleanups_are_not_the_tests_statements(pytester: pytest.Pytester) -> None:
    tag = f"ut{uuid.uuid4().hex[:12]}"
    pytester.makepyfile(test_unit=textwrap.dedent(f"""
        import unittest
        import psycopg
        import pytest

        DSN = {DSN!r}

        class TestPhases(unittest.TestCase):
            def setUp(self):
                self.conn = psycopg.connect(DSN, autocommit=True)
                for _ in range(5):
                    self.conn.execute("SELECT count(*) FROM setup_{tag}")
                self.addCleanup(lambda: self.conn.execute("SELECT count(*) FROM cleanup_{tag}"))

            def tearDown(self):
                for _ in range(3):
                    self.conn.execute("SELECT count(*) FROM teardown_{tag}")

            @pytest.mark.max_queries(2)
            def test_method(self):
                self.conn.execute("SELECT count(*) FROM method_{tag}")
                self.conn.execute("SELECT count(*) FROM method_{tag}")
    """))
    marker_tables(*(f"{part}_{tag}" for part in ("setup", "teardown", "cleanup", "method")))
    result, counts = run(pytester)
    result.assert_outcomes(passed=1)
    assert (server_calls(f"setup_{tag}"), server_calls(f"teardown_{tag}"), server_calls(f"cleanup_{tag}")) == (5, 3, 1)
    assert counts["test_method"]["count"] == server_calls(f"method_{tag}") == 2


def test_async_unittest_counts_its_test_method_alone(pytester: pytest.Pytester) -> None:
    tag = f"aut{uuid.uuid4().hex[:12]}"
    pytester.makepyfile(test_async_unit=textwrap.dedent(f"""
        import unittest
        import psycopg

        DSN = {DSN!r}

        class TestAsync(unittest.IsolatedAsyncioTestCase):
            async def asyncSetUp(self):
                self.conn = await psycopg.AsyncConnection.connect(DSN, autocommit=True)
                for _ in range(4):
                    await self.conn.execute("SELECT count(*) FROM setup_{tag}")

            async def asyncTearDown(self):
                await self.conn.execute("SELECT count(*) FROM teardown_{tag}")
                await self.conn.close()

            async def test_method(self):
                await self.conn.execute("SELECT count(*) FROM method_{tag}")
    """))
    marker_tables(*(f"{part}_{tag}" for part in ("setup", "teardown", "method")))
    result, counts = run(pytester)
    result.assert_outcomes(passed=1)
    assert (server_calls(f"setup_{tag}"), server_calls(f"teardown_{tag}")) == (4, 1)
    assert counts["test_method"]["count"] == server_calls(f"method_{tag}") == 1


DJANGO_CONFTEST = '''
from urllib.parse import parse_qs, urlsplit

import django
from django.conf import settings

url = urlsplit({url!r}.replace("postgresql+psycopg://", "postgresql://"))
query = {{k: v[0] for k, v in parse_qs(url.query).items()}}
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes"],
    DATABASES={{"default": {{
        "ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
        "USER": url.username or "postgres", "PASSWORD": url.password or "",
        "HOST": query.get("host", url.hostname or ""), "PORT": query.get("port", url.port or ""),
    }}}},
    USE_TZ=True,
)
django.setup()
from django.core.management import call_command
call_command("migrate", "contenttypes", verbosity=0)
'''


@pytest.mark.parametrize("base", ["TestCase", "TransactionTestCase"])
def test_django_test_cases_count_their_test_method_alone(pytester: pytest.Pytester, base: str) -> None:
    pytest.importorskip("django")
    tag = f"dj{base.lower()}{uuid.uuid4().hex[:12]}"
    marker_tables(f"method_{tag}")
    pytester.makepyfile(conftest=DJANGO_CONFTEST.format(url=URL) + RECORDS)
    pytester.makepyfile(test_django=textwrap.dedent(f"""
        from django.contrib.contenttypes.models import ContentType
        from django.db import connection
        from django.test import {base}

        class TestWithData({base}):
            def setUp(self):
                for i in range(6):  # data loading in setUp: Django's most common pattern
                    ContentType.objects.create(app_label="{tag}", model=f"m{{i}}")

            def test_method(self):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT count(*) FROM method_{tag}")
                assert ContentType.objects.filter(app_label="{tag}").count() == 6
    """))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    counts = json.loads((pytester.path / "counts.json").read_text())
    # the method's own two statements: its marker SELECT (the server's count) and the COUNT(*)
    assert counts["test_method"]["count"] == server_calls(f"method_{tag}") + 1 == 2
    # Django's own statements around the method (savepoints, the flush of TransactionTestCase)
    # are named for Django, never for the pytest launcher
    assert not any("bin/pytest" in site for site in counts["test_method"]["sites"])


def test_a_statement_no_user_code_sent_is_named_for_the_framework_that_sent_it() -> None:
    import threading
    import unittest

    from sqlalchemy import create_engine

    from pytest_migsafe import count_queries

    engine = create_engine("sqlite://", connect_args={"check_same_thread": False})
    with engine.connect() as conn:
        case = unittest.TestCase()
        case.addCleanup(conn.exec_driver_sql, "SELECT 1")  # no user frame: unittest calls the driver
        with count_queries() as counter:
            thread = threading.Thread(target=case.doCleanups)
            thread.start()
            thread.join()
    (query,) = counter.queries
    assert query.call_site == "<unittest.case.TestCase.doCleanups>"


RUNS_THE_CASE_ITSELF = """
import pytest

@pytest.fixture(autouse=True)
def run_the_case_itself(request):
    # what pytest-django does for Django test cases: call the TestCase directly, so unittest
    # looks the test method up on the instance, not on the item
    item = request.node
    if getattr(item, "instance", None) is not None:
        item.runtest = lambda: item.instance(result=item)
"""


def test_a_test_case_run_by_its_instance_counts_its_method(pytester: pytest.Pytester) -> None:
    tag = f"inst{uuid.uuid4().hex[:12]}"
    marker_tables(f"setup_{tag}", f"method_{tag}")
    pytester.makeconftest(RECORDS + RUNS_THE_CASE_ITSELF)
    pytester.makepyfile(test_instance=textwrap.dedent(f"""
        import unittest
        import psycopg

        DSN = {DSN!r}

        class TestByInstance(unittest.TestCase):
            def setUp(self):
                self.conn = psycopg.connect(DSN, autocommit=True)
                self.conn.execute("SELECT count(*) FROM setup_{tag}")

            def tearDown(self):
                self.conn.close()

            def test_method(self):
                self.conn.execute("SELECT count(*) FROM method_{tag}")
    """))
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    counts = json.loads((pytester.path / "counts.json").read_text())
    assert counts["test_method"]["count"] == server_calls(f"method_{tag}") == 1


def test_a_wrapper_another_hook_put_on_the_instance_still_runs(pytester: pytest.Pytester) -> None:
    """A hook running before migsafe's (another plugin measuring the method, say) puts its own
    wrapper on the test case instance; migsafe wrapped the item's method instead and replaced
    it, so that wrapper never ran (async methods: unittest looks them up on the instance)."""
    pytester.makeconftest("""
        import functools, inspect
        import pytest
        import sqlalchemy  # (a driver imported: migsafe measures the tests)

        RAN = []

        @pytest.hookimpl(hookwrapper=True, tryfirst=True)
        def pytest_runtest_call(item):
            instance, method = item.instance, item.obj
            if inspect.iscoroutinefunction(method):
                @functools.wraps(method)
                async def theirs(*args, **kwargs):
                    RAN.append(item.name)
                    return await method(*args, **kwargs)
            else:
                @functools.wraps(method)
                def theirs(*args, **kwargs):
                    RAN.append(item.name)
                    return method(*args, **kwargs)
            instance.__dict__[item.name] = theirs  # (unittest looks an async method up there)
            if not inspect.iscoroutinefunction(method):
                item.obj = theirs  # (pytest puts item.obj on the instance for a sync one)
            yield
            item.obj = method
            instance.__dict__.pop(item.name, None)

        def pytest_sessionfinish(session):
            print("RAN", sorted(RAN))
    """)
    pytester.makepyfile(test_cases="""
        import unittest

        class TestBoth(unittest.IsolatedAsyncioTestCase):
            async def test_async(self):
                pass

            def test_sync(self):
                pass
    """)
    for plugin in ("-p", "no:migsafe"), ():
        result = pytester.runpytest_subprocess("-s", "-p", "no:randomly", *plugin)
        result.assert_outcomes(passed=2)
        assert "RAN ['test_async', 'test_sync']" in result.stdout.str()


def test_a_unittest_method_is_its_own_bound_method_while_counted(pytester: pytest.Pytester) -> None:
    """The test method a unittest case looks up on itself is its own bound method, the class's
    function, with the plugin as without it (the plugin once put a plain wrapper function on
    the item and the instance: ``inspect.ismethod`` failed and ``__func__`` was missing); its
    statements are still counted, setUp's not (the counts come from pg_stat_statements)."""
    test_table, setup_table = (f"mu_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("test", "setup"))
    marker_tables(test_table, setup_table)
    pytester.makeconftest("import psycopg  # (a driver imported: migsafe measures the tests)\n" + RECORDS)
    pytester.makepyfile(test_cases=f"""
        import inspect, unittest
        import psycopg

        class TestSync(unittest.TestCase):
            def setUp(self):
                with psycopg.connect({DSN!r}) as conn:
                    conn.execute("SELECT * FROM {setup_table}")

            def test_bound(self):
                method = getattr(self, self._testMethodName)
                self.assertTrue(inspect.ismethod(method))
                self.assertIs(method.__self__, self)
                self.assertIs(type(self).__dict__[self._testMethodName], method.__func__)
                with psycopg.connect({DSN!r}) as conn:
                    conn.execute("SELECT * FROM {test_table}")

        class TestAsync(unittest.IsolatedAsyncioTestCase):
            async def test_async_bound(self):
                method = getattr(self, self._testMethodName)
                self.assertTrue(inspect.ismethod(method))
                self.assertIs(type(self).__dict__[self._testMethodName], method.__func__)
                async with await psycopg.AsyncConnection.connect({DSN!r}) as conn:
                    await conn.execute("SELECT * FROM {test_table}")
    """)
    before = server_calls(test_table), server_calls(setup_table)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2)
    test_calls = server_calls(test_table) - before[0]
    assert (test_calls, server_calls(setup_table) - before[1]) == (2, 1)
    counts = json.loads((pytester.path / "counts.json").read_text())
    assert counts["test_bound"]["count"] + counts["test_async_bound"]["count"] == test_calls
    assert pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:migsafe").ret == 0
