"""Django over psycopg 3: the plugin's count equals Django's own CaptureQueriesContext.

Django sends every statement through psycopg cursors, so the psycopg hooks see them with
no Django-specific code; Django's own query log is the independent count to agree with.
Runs in a subprocess: ``settings.configure`` is once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("django")

# Django configured on the test server from the URL in argv[1] (once per process)
DJANGO_SETUP = textwrap.dedent("""
    import json, sys
    from urllib.parse import parse_qs, urlsplit

    import django
    from django.conf import settings

    url = urlsplit(sys.argv[1])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes"],
        DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
            "USER": url.username or "postgres", "PASSWORD": url.password or "",
            "HOST": query.get("host", url.hostname or ""), "PORT": query.get("port", url.port or ""),
        }},
        USE_TZ=True,
    )
    django.setup()
""")

SCRIPT = DJANGO_SETUP + textwrap.dedent("""
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext
    from django.contrib.contenttypes.models import ContentType

    from pytest_migsafe import count_queries

    call_command("migrate", "contenttypes", verbosity=0)
    connection.ensure_connection()
    with CaptureQueriesContext(connection) as django_log, \\
            count_queries(include_transaction_control=True) as every, count_queries() as default:
        ContentType.objects.count()
        list(ContentType.objects.all())
        with transaction.atomic():
            ContentType.objects.get_or_create(app_label="migsafe", model="probe")
            with transaction.atomic():  # a savepoint
                ContentType.objects.filter(app_label="migsafe").update(model="probe2")
        for i in range(3):
            ContentType.objects.filter(pk=i).exists()
        ContentType.objects.filter(app_label="migsafe").delete()
    print(json.dumps({
        "django": len(django_log.captured_queries),
        "django_sql": [q["sql"] for q in django_log.captured_queries],
        "every": every.count,
        "default": default.count,
        "control": sum(1 for q in every.queries if q.shape.split()[0] in ("SAVEPOINT", "RELEASE", "ROLLBACK")),
        "ours": [q.sql for q in every.queries],
    }))
""")


def test_count_equals_djangos_capture_queries_context() -> None:
    import json

    url = os.environ["MIGSAFE_POSTGRES_URL"].replace("postgresql+psycopg://", "postgresql://")
    out = subprocess.run([sys.executable, "-c", SCRIPT, url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # Django also logs the BEGIN / COMMIT it sends through the driver (connection.commit()),
    # not through a cursor: those are the only entries the plugin does not see
    driver_level = [sql for sql in figures["django_sql"] if sql in ("BEGIN", "COMMIT", "ROLLBACK")]
    assert len(driver_level) == 4
    assert figures["every"] == figures["django"] - len(driver_level), (figures["django_sql"], figures["ours"])
    # by default the plugin leaves out the savepoints too: SAVEPOINT/RELEASE of two atomic blocks
    assert figures["control"] == 4
    assert figures["default"] == figures["every"] - figures["control"] == 9


WHAT_DJANGO_MISSES = DJANGO_SETUP + textwrap.dedent("""
    import threading

    import psycopg
    from django.core.management import call_command
    from django.db import connection, connections, transaction
    from django.test.utils import CaptureQueriesContext
    from django.contrib.contenttypes.models import ContentType

    from pytest_migsafe import count_queries

    # the server's own count, read below the hooks (psycopg's libpq wrapper): neither side sees it
    server = psycopg.pq.PGconn.connect(sys.argv[2].encode())
    SERVER_CALLS = (b"SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                    b" WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'"
                    b" AND s.query !~* '^\\\\s*(begin|commit|rollback|savepoint|release|start transaction|end)'")

    def server_calls():
        return int(server.exec_(SERVER_CALLS).get_value(0, 0))

    call_command("migrate", "contenttypes", verbosity=0)
    connection.ensure_connection()

    def in_another_thread():
        with connections["default"].cursor() as cursor:  # this thread's own Django connection
            cursor.execute("SELECT 'threaded'")
        connections.close_all()

    before = server_calls()
    with CaptureQueriesContext(connection) as django_log, count_queries() as plugin:
        with transaction.atomic():
            ContentType.objects.count()
            with transaction.atomic():  # a savepoint: Django logs it, the plugin leaves it out
                ContentType.objects.filter(pk=0).exists()
        with connection.connection.cursor() as raw:  # psycopg's cursor under Django's wrapper
            raw.execute("SELECT 42")
        thread = threading.Thread(target=in_another_thread)
        thread.start()
        thread.join()
    after = server_calls()
    print(json.dumps({
        "django_sql": [q["sql"] for q in django_log.captured_queries],
        "plugin_sql": [q.sql for q in plugin.queries],
        "plugin": plugin.count,
        "server": after - before,
    }))
""")


def test_what_djangos_log_and_the_plugin_count_differently_each_kind(pg_dsn: str) -> None:
    """Savepoints and the driver-level BEGIN/COMMIT: in Django's log, not in the plugin's count
    (nor the server's, transaction control excluded); a raw psycopg cursor and another
    thread's connection: in the plugin's count and the server's, not in Django's log."""
    import json

    url = os.environ["MIGSAFE_POSTGRES_URL"].replace("postgresql+psycopg://", "postgresql://")
    out = subprocess.run([sys.executable, "-c", WHAT_DJANGO_MISSES, url, pg_dsn], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    django_sql, plugin_sql = figures["django_sql"], figures["plugin_sql"]
    assert figures["plugin"] == figures["server"], figures  # the server's own count is the truth
    # transaction control: Django logs BEGIN/COMMIT (sent through the driver) and the
    # savepoint pair; the plugin and the server's count (transaction control excluded) do not
    control = [sql for sql in django_sql if sql.split()[0].upper() in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")]
    assert len(control) == 4, django_sql
    assert not any(sql.split()[0].upper() in ("SAVEPOINT", "RELEASE") for sql in plugin_sql)
    # the raw cursor and the other thread: counted by the plugin (and the server), not by Django
    assert "SELECT 42" in plugin_sql and "SELECT 42" not in django_sql
    assert "SELECT 'threaded'" in plugin_sql and "SELECT 'threaded'" not in django_sql
    # nor the statement Django sends to set up a connection it opens (the other thread's)
    set_up = [sql for sql in plugin_sql if "set_config('TimeZone'" in sql]
    assert len(set_up) == 1 and not any("set_config" in sql for sql in django_sql)
    # everything else is the same statements (Django logs them with the parameters filled in)
    others = [sql for sql in plugin_sql if sql not in ("SELECT 42", "SELECT 'threaded'", *set_up)]
    assert len(others) == len(django_sql) - len(control), (django_sql, plugin_sql)



SQLITE_CONFTEST = """
    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
                                  "other": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
                       INSTALLED_APPS=["django.contrib.contenttypes"], USE_TZ=True)
    django.setup()

    import pytest
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", "contenttypes", verbosity=0)

    @pytest.fixture
    def sqlite_trace():
        \"\"\"Every statement SQLite itself runs on the connection during the test (its trace
        callback: the independent count), transaction control left out, as migsafe does.\"\"\"
        connection.ensure_connection()
        seen = []
        connection.connection.set_trace_callback(seen.append)
        yield seen
        connection.connection.set_trace_callback(None)
        control = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
        kept = [sql for sql in seen if not sql.lstrip().upper().startswith(control)]
        with open("trace.txt", "a") as out:
            out.write(f"{len(kept)}\\n")
"""

SQLITE_TESTS = """
    import pytest
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection, transaction

    from app_sqlite import labels

    def test_orm_and_raw(sqlite_trace):
        ContentType.objects.count()
        list(ContentType.objects.all())
        with transaction.atomic():
            ContentType.objects.get_or_create(app_label="migsafe", model="probe")
            with transaction.atomic():
                ContentType.objects.filter(app_label="migsafe").update(model="probe2")
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        for pk in range(3):
            ContentType.objects.filter(pk=pk).exists()
        labels(12)

    @pytest.mark.max_queries(0)
    def test_a_budget_counts_sqlite(sqlite_trace):
        ContentType.objects.count()

    def test_executemany(sqlite_trace):
        with connection.cursor() as cursor:
            cursor.execute("CREATE TEMP TABLE IF NOT EXISTS rows_sent (n int)")
            cursor.executemany("INSERT INTO rows_sent VALUES (%s)", [(1,), (2,), (3,)])
"""

APP_SQLITE = """
    from django.contrib.contenttypes.models import ContentType

    def labels(n):
        return [ContentType.objects.filter(app_label=f"app{i}").exists() for i in range(n)]
"""


def test_django_on_sqlite_is_counted_as_sqlite_runs_it(pytester: pytest.Pytester) -> None:
    """Django on SQLite (the default test database of most Django projects) was not measured
    at all (a budget held over statements that ran; an empty report): its statements are
    counted at Django's executors, as many as SQLite's own trace callback sees run in each
    test; a budget fails; an N+1 loop is a suspect; no "not measured" warning."""
    import json

    pytester.makeconftest(SQLITE_CONFTEST)
    pytester.makepyfile(test_sqlite=SQLITE_TESTS, app_sqlite=APP_SQLITE)
    off = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:migsafe")
    off.assert_outcomes(passed=3)
    (pytester.path / "trace.txt").unlink()
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--migsafe-report", "--migsafe-report-json=r.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["max_queries: expected at most 0 queries, 1 ran"])
    assert "not measured" not in result.stdout.str()
    traced = [int(line) for line in (pytester.path / "trace.txt").read_text().split()]
    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    figures = [tests[f"test_sqlite.py::{name}"]["queries"]
               for name in ("test_orm_and_raw", "test_a_budget_counts_sqlite", "test_executemany")]
    # (SQLite traces each row of executemany: the report's executions; the count is one statement a call)
    assert [figures[0]["count"], figures[1]["count"], figures[2]["executions"]] == traced, (figures, traced)
    assert figures[2]["count"] == 2 and traced[0] > 10
    suspects = tests["test_sqlite.py::test_orm_and_raw"]["queries"]["n_plus_one"]
    assert [suspect["count"] for suspect in suspects] == [12]
    assert suspects[0]["call_site"].startswith("app_sqlite.py:")


def test_the_unmeasured_database_warning_points_at_the_settings_databases_line(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Django migsafe does not hook (older than 4.2; here: its version made to read so) leaves
    SQLite unmeasured, which a warning says: it was shown at the rootdir, line 0 (``.:0`` in the
    warnings summary), now at the line of the settings module that defines ``DATABASES``."""
    pytester.makepyfile(shop_settings="""
        \"\"\"Settings: DATABASES is set below (a mention, not the line to point at).\"\"\"
        SECRET_KEY = "not-secret"
        INSTALLED_APPS = []
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    """)
    pytester.makeconftest("import django\ndjango.__version__ = '4.1.13'\ndjango.setup()\n")
    pytester.makepyfile(test_nothing="def test_plain():\n    pass\n")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "shop_settings")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:django")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*shop_settings.py:4: PytestWarning: migsafe: Django's database 'default'*"])


def test_django_on_psycopg2_is_measured_at_djangos_executors(pytester: pytest.Pytester) -> None:
    # psycopg 3 not importable (here: blocked in sys.modules), a PostgreSQL database, no model:
    # Django's backend is not imported by the end of collection, and Django will take psycopg2,
    # whose statements migsafe counts at Django's executors: no "not measured" warning (it was
    # one); a Django too old to hook still gets it
    conftest = """
        import sys
        sys.modules["psycopg"] = None  # (as if not installed: Django then takes psycopg2)
        import django
        from django.conf import settings
        OLD
        settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "app"}},
                           INSTALLED_APPS=[])
        django.setup()
    """
    pytester.makepyfile(test_nothing="def test_plain():\n    pass\n")
    pytester.makeconftest(conftest.replace("OLD", ""))
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert "not measured" not in result.stdout.str()
    pytester.makeconftest(conftest.replace("OLD", "django.__version__ = '4.1.13'"))
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*migsafe: Django's database 'default' (django.db.backends.postgresql) is not measured*"])


def test_only_a_psycopg3_connection_is_taken_for_rolling_back() -> None:
    # assert_constant_queries rolls back on Django's open connection: never on psycopg2's
    psycopg = pytest.importorskip("psycopg")
    from pytest_migsafe.queries.django import is_psycopg3_connection

    class Psycopg2Connection:  # the class psycopg2 gives Django (psycopg2.extensions.connection)
        pass

    Psycopg2Connection.__module__ = "psycopg2.extensions"
    assert not is_psycopg3_connection(Psycopg2Connection())
    assert is_psycopg3_connection(psycopg.Connection.__new__(psycopg.Connection))


SAVEPOINT_SITES = textwrap.dedent("""
    import json

    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}})
    django.setup()
    from django.db import connection, transaction

    from pytest_migsafe import count_queries

    connection.ensure_connection()
    with count_queries() as default:
        with count_queries(include_transaction_control=True) as every:
            with transaction.atomic():
                with transaction.atomic():  # SAVEPOINT, then RELEASE SAVEPOINT: this line
                    connection.cursor().execute("SELECT 1")
    print(json.dumps({"every": [[q.sql.split()[0], q.call_site] for q in every.queries],
                      "default": [q.sql for q in default.queries]}))
""")


def test_django_savepoints_keep_their_call_site_where_a_counter_receives_them(tmp_path: os.PathLike[str]) -> None:
    """Django's executors (SQLite here: no psycopg below them) skip the call-site walk of a
    savepoint only when no active counter receives it: one with include_transaction_control
    gets each SAVEPOINT and RELEASE at the line of the atomic block that sent it."""
    import json
    from pathlib import Path

    script = Path(tmp_path) / "savepoints.py"
    script.write_text(SAVEPOINT_SITES)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    line = next(n for n, text in enumerate(SAVEPOINT_SITES.splitlines(), 1) if "this line" in text)
    # (on SQLite Django sends the outer block's BEGIN through a cursor too; COMMIT goes to the driver)
    assert figures["every"] == [["BEGIN", f"savepoints.py:{line - 1}"], ["SAVEPOINT", f"savepoints.py:{line}"],
                                ["SELECT", f"savepoints.py:{line + 1}"], ["RELEASE", f"savepoints.py:{line}"]]
    assert figures["default"] == ["SELECT 1"]
