"""Servers a real application can use: settings exported before conftest files are imported.

Each application here is written by the test under pytester's directory and configured by
the ini keys only; the truth is what the server says (SHOW, INFO, its pid file, /proc).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from pytest_migsafe.servers import POSTGRES_FIELDS, REDIS_FIELDS, parse_exports, worker_database, worker_dbname

pytest.importorskip("pydantic_settings")


def _gone(pid: int, timeout: float = 15.0) -> bool:
    """True once process ``pid`` and every process of its group have exited (zombies aside)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if (int(entry.name) == pid or int(fields[2]) == pid) and fields[0] != "Z":
                    alive = True
        if not alive:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """The inner session is given no server: the plugin starts its own."""
    for name in ("MIGSAFE_POSTGRES_URL", "MIGSAFE_TEST_POSTGRES_DSN", "MIGSAFE_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


PYDANTIC_APP = {
    "myapp/__init__.py": "",
    "myapp/settings.py": """
        from pydantic import PostgresDsn, RedisDsn
        from pydantic_settings import BaseSettings

        class Settings(BaseSettings):
            database_url: PostgresDsn
            redis_url: RedisDsn | None = None

        settings = Settings()  # at import time, from the environment
    """,
    "myapp/db.py": """
        from sqlalchemy import create_engine
        from myapp.settings import settings

        engine = create_engine(str(settings.database_url))
    """,
}

PYDANTIC_CONFTEST = """
    from myapp.db import engine  # noqa: F401  (the engine exists before any test or fixture)
"""

PYDANTIC_TEST = """
    import os
    import psycopg
    from sqlalchemy import text
    from myapp.db import engine

    def test_app_and_fixture_share_the_database(migsafe_postgres):
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS app_rows (n int)"))
            conn.execute(text("INSERT INTO app_rows VALUES (42)"))
            listen = conn.execute(text("SHOW listen_addresses")).scalar()
            data = conn.execute(text("SHOW data_directory")).scalar()
            version = conn.execute(text("SHOW server_version")).scalar()
        with psycopg.connect(migsafe_postgres.dsn) as conn:  # the plugin's fixture, same rows
            assert conn.execute("SELECT n FROM app_rows").fetchall() == [(42,)]
            assert conn.execute("SHOW data_directory").fetchone()[0] == data
        with open(os.path.join(data, "postmaster.pid")) as pidfile:
            pid = pidfile.readline().strip()
        print(f"LISTEN={listen!r} PID={pid} VERSION={version}")
"""


def _write(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _field(output: str, name: str) -> str:
    return output.split(f"{name}=", 1)[1].split()[0]


@pytest.mark.parametrize("tcp", [False, True], ids=["unix-socket", "tcp"])
def test_pydantic_settings_app_builds_its_engine_at_import(pytester: pytest.Pytester, fresh: None,
                                                           tcp: bool) -> None:
    _write(pytester, PYDANTIC_APP)
    pytester.makeconftest(PYDANTIC_CONFTEST)
    pytester.makepyfile(test_app=PYDANTIC_TEST)
    pytester.makeini("[pytest]\nmigsafe_export_postgres = DATABASE_URL=url\n"
                     + ("migsafe_postgres_tcp = true\n" if tcp else ""))
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    output = result.stdout.str()
    assert _field(output, "LISTEN") == ("'127.0.0.1'" if tcp else "''")
    version = output.split("VERSION=", 1)[1].splitlines()[0]
    result.stdout.fnmatch_lines([f"migsafe: PostgreSQL {version} from *, {'TCP 127.0.0.1:*' if tcp else 'unix socket *'}",
                                 "migsafe: exported: MIGSAFE_POSTGRES_URL, DATABASE_URL"])
    assert _gone(int(_field(output, "PID")))  # stopped at the end of the session


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_the_report_names_the_server_started_for_the_exports(pytester: pytest.Pytester, fresh: None,
                                                             workers: list[str]) -> None:
    """The servers started for exported settings were named in pytest's header only (which -q
    hides; the JSON never had it): the report's notes name them too, as they name the one the
    migsafe_postgres fixture gives."""
    import json

    pytester.makeini("[pytest]\nmigsafe_export_postgres = DATABASE_URL=libpq_url\n")
    pytester.makepyfile(test_app="""
        import os
        import psycopg

        def test_version():
            with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
                print("VERSION=" + conn.execute("SHOW server_version").fetchone()[0].split()[0])
    """)
    result = pytester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider", "--migsafe-report",
                                           "--migsafe-report-json=report.json", *workers)
    result.assert_outcomes(passed=1)
    # once (the xdist workers' own note of the same server, by its URL, was a second line)
    assert result.stdout.str().count("note: PostgreSQL:") == 1, result.stdout.str()
    if workers:
        return  # (the workers' output, with the server's version, is not shown)
    version = _field(result.stdout.str(), "VERSION")
    result.stdout.fnmatch_lines([f"note: PostgreSQL: PostgreSQL {version}* from *, unix socket *"])
    notes = json.loads((pytester.path / "report.json").read_text())["notes"]
    assert [note for note in notes if note.startswith(f"PostgreSQL: PostgreSQL {version}") and "unix socket" in note]


def test_without_the_export_the_app_cannot_even_be_imported(pytester: pytest.Pytester, fresh: None) -> None:
    """The control: the same app with no ini key fails at conftest import (so the export is what makes it work)."""
    _write(pytester, PYDANTIC_APP)
    pytester.makeconftest(PYDANTIC_CONFTEST)
    pytester.makepyfile(test_app=PYDANTIC_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*database_url*", "*Field required*"])
    assert "migsafe: PostgreSQL" not in result.stdout.str()  # nothing started without the settings


DJANGO_PROJECT = {
    "mysite/__init__.py": "",
    "mysite/settings.py": """
        import os

        SECRET_KEY = "test-only"
        USE_TZ = True
        INSTALLED_APPS = []
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": os.environ["PGHOST"],
                "PORT": os.environ["PGPORT"],
                "USER": os.environ["PGUSER"],
                "PASSWORD": os.environ["PGPASSWORD"],
                "NAME": os.environ["PGDATABASE"],
            }
        }
    """,
    "conftest.py": """
        import os
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
        django.setup()
    """,
    "test_django.py": """
        import psycopg
        from django.db import connection

        def test_a_query_through_django(migsafe_postgres):
            with connection.cursor() as cursor:
                cursor.execute("CREATE TABLE IF NOT EXISTS django_rows (n int)")
                cursor.execute("INSERT INTO django_rows VALUES (%s)", [7])
                cursor.execute("SELECT current_database(), current_setting('listen_addresses')")
                dbname, listen = cursor.fetchone()
            connection.close()
            with psycopg.connect(migsafe_postgres.dsn) as conn:
                assert conn.execute("SELECT n FROM django_rows").fetchall() == [(7,)]
            assert dbname == migsafe_postgres.dbname
            print(f"LISTEN={listen!r}")
    """,
}


@pytest.mark.parametrize("tcp", [False, True], ids=["unix-socket", "tcp"])
def test_django_project_reads_the_exported_parts(pytester: pytest.Pytester, fresh: None, tcp: bool) -> None:
    pytest.importorskip("django")
    _write(pytester, DJANGO_PROJECT)
    pytester.makeini("[pytest]\nmigsafe_export_postgres =\n    PGHOST=host PGPORT=port PGUSER=user\n"
                     "    PGPASSWORD=password PGDATABASE=dbname\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *(["--migsafe-postgres-tcp"] if tcp else []))
    result.assert_outcomes(passed=1)
    assert _field(result.stdout.str(), "LISTEN") == ("'127.0.0.1'" if tcp else "''")


XDIST_TEST = """
    import json, os
    import psycopg
    from sqlalchemy import text
    from myapp.db import engine
    from myapp.settings import settings
    import redis

    def test_where(migsafe_postgres, migsafe_redis):
        with engine.connect() as conn:
            app_db = conn.execute(text("SELECT current_database()")).scalar()
            data = conn.execute(text("SHOW data_directory")).scalar()
        app_redis = redis.Redis.from_url(str(settings.redis_url))
        app_redis.set("written-by-app", "1")
        record = {
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "none"),
            "app_db": app_db, "fixture_db": migsafe_postgres.dbname, "data": data,
            "app_redis_db": app_redis.connection_pool.connection_kwargs["db"],
            "fixture_sees_app_key": migsafe_redis.get("written-by-app") == b"1",
            "redis_pid": app_redis.info("server")["process_id"],
        }
        app_redis.close()
        with open(os.environ["RECORDS"], "a") as out:
            out.write(json.dumps(record) + "\\n")
"""


@pytest.mark.parametrize("xdist", [[], ["-n0"], ["-n2", "--dist", "each"]], ids=["no-xdist", "n0", "n2"])
def test_workers_use_the_controllers_servers(pytester: pytest.Pytester, fresh: None,
                                              monkeypatch: pytest.MonkeyPatch, xdist: list[str]) -> None:
    """One PostgreSQL and one Redis for the whole run; each worker gets its own database on them."""
    pytest.importorskip("xdist")
    _write(pytester, PYDANTIC_APP)
    pytester.makeconftest(PYDANTIC_CONFTEST)
    pytester.makepyfile(test_where=XDIST_TEST)
    pytester.makeini("[pytest]\nmigsafe_export_postgres = DATABASE_URL=url\nmigsafe_export_redis = REDIS_URL=url\n"
                     "migsafe_postgres_tcp = true\nmigsafe_redis_tcp = true\n")
    records_file = pytester.path / "records.jsonl"
    monkeypatch.setenv("RECORDS", str(records_file))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *xdist)
    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    assert result.ret == 0, result.stdout.str()
    workers = {r["worker"] for r in records}
    assert workers == ({"gw0", "gw1"} if xdist[:1] == ["-n2"] else {"none"})
    assert len({r["data"] for r in records}) == 1  # one PostgreSQL cluster for every worker
    assert len({r["redis_pid"] for r in records}) == 1  # one Redis server
    for r in records:
        assert r["app_db"] == r["fixture_db"]
        assert r["fixture_sees_app_key"]
        if r["worker"] != "none":
            assert r["app_db"] == worker_dbname("migsafe", r["worker"])
            assert r["app_redis_db"] == worker_database(r["worker"])
        else:
            assert r["app_db"] == "migsafe" and r["app_redis_db"] == 0


@pytest.mark.parametrize("report", [False, True], ids=["", "json"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_servers_stop_when_the_session_is_interrupted(pytester: pytest.Pytester, fresh: None, sig: int,
                                                      report: bool) -> None:
    """The exported servers stop on Ctrl-C and on SIGTERM; with a JSON report asked for, a
    SIGTERM interrupts the run as Ctrl-C does, and the report is written, marked interrupted
    (the servers' own SIGTERM handler, installed first as the exports start before the
    conftests, once kept the report's from being installed: the run died with no report)."""
    _write(pytester, PYDANTIC_APP)
    pytester.makeconftest(PYDANTIC_CONFTEST)
    pytester.makepyfile(test_block="""
        import os
        import redis
        from sqlalchemy import text
        from myapp.db import engine
        from myapp.settings import settings

        def test_block():
            with engine.connect() as conn:
                data = conn.execute(text("SHOW data_directory")).scalar()
            with open(os.path.join(data, "postmaster.pid")) as pidfile:
                pg_pid = pidfile.readline().strip()
            client = redis.Redis.from_url(str(settings.redis_url))
            redis_pid = client.info("server")["process_id"]
            print(f"PIDS {pg_pid} {redis_pid}", flush=True)
            read_end, _ = os.pipe()
            os.read(read_end, 1)  # blocks until the signal
    """)
    pytester.makeini("[pytest]\nmigsafe_export_postgres = DATABASE_URL=url\nmigsafe_export_redis = REDIS_URL=url\n"
                     "migsafe_redis_tcp = true\n")
    # Ctrl-C reaches pytest as it does in a terminal, however this suite was started: a shell
    # starts a background job with SIGINT ignored, and a Python started so keeps ignoring it
    args = ["--migsafe-report-json=report.json"] if report else []
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", *args], cwd=pytester.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("PIDS "):
                break
        else:
            raise AssertionError("".join(seen))
        pg_pid, redis_pid = (int(x) for x in line.split()[1:])
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # pragma: no cover - the failure shown; its servers stop with it
            proc.terminate()
            proc.communicate(timeout=60)
    assert proc.returncode == (2 if sig == signal.SIGINT or report else -signal.SIGTERM)
    assert _gone(pg_pid) and _gone(redis_pid)
    if report:
        assert json.loads((pytester.path / "report.json").read_text())["interrupted"] is True
    # and their temp dirs (SIGTERM left /tmp/migsafe-session-<pid>-* with the server's log)
    left = sorted(path.name for path in Path(tempfile.gettempdir()).glob(f"migsafe-*-{proc.pid}-*"))
    assert left == []


def test_bad_export_settings_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.makeini("[pytest]\nmigsafe_export_postgres = DATABASE_URL\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*migsafe: ini option migsafe_export_postgres: 'DATABASE_URL' is not VARIABLE=field*"])
    pytester.makeini("[pytest]\nmigsafe_export_redis = REDIS_URL=uri\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*migsafe_export_redis: 'REDIS_URL=uri': unknown field 'uri'*"])


def test_a_server_that_cannot_be_had_stops_the_session_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.makeini("[pytest]\nmigsafe_export_postgres = DATABASE_URL=url\n")
    result = pytester.runpytest("--migsafe-postgres-url", "postgresql://app:e@127.0.0.1:1/app")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "cannot connect to PostgreSQL at postgresql://app:***@127.0.0.1:1/app: connection failed" in err
    assert "DATABASE_URL" not in os.environ


def test_an_in_process_run_puts_the_environment_back(pytester: pytest.Pytester) -> None:
    """The outer session's server (MIGSAFE_POSTGRES_URL) is reused, and the variables are removed after."""
    before = os.environ["MIGSAFE_POSTGRES_URL"]
    pytester.makepyfile(test_env="""
        import os

        def test_env(migsafe_postgres):
            assert os.environ["PGDATABASE"] == migsafe_postgres.dbname
            assert os.environ["MIGSAFE_POSTGRES_URL"] == os.environ["OUTER_URL"]
    """)
    pytester.makeini("[pytest]\nmigsafe_export_postgres = PGDATABASE=dbname\n")
    os.environ["OUTER_URL"] = before
    try:
        result = pytester.runpytest()
    finally:
        del os.environ["OUTER_URL"]
    result.assert_outcomes(passed=1)
    assert "PGDATABASE" not in os.environ and os.environ["MIGSAFE_POSTGRES_URL"] == before


def test_parse_exports() -> None:
    assert parse_exports(["DATABASE_URL=url PGHOST=host", "PGPORT=port"], POSTGRES_FIELDS) == [
        ("DATABASE_URL", "url"), ("PGHOST", "host"), ("PGPORT", "port")]
    assert parse_exports("REDIS_URL=url", REDIS_FIELDS) == [("REDIS_URL", "url")]
    for bad, why in (("A=url A=dsn", "named twice"), ("1X=url", "not an environment variable name"),
                     ("=url", "is not VARIABLE=field"), ("X=", "is not VARIABLE=field")):
        with pytest.raises(ValueError, match=why):
            parse_exports(bad, POSTGRES_FIELDS)


def test_help_lists_the_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--migsafe-postgres-tcp*", "*--migsafe-redis-tcp*",
                                 "*migsafe_export_postgres*", "*migsafe_export_redis*"])


def test_every_public_name_of_the_servers_package_is_there_when_read() -> None:
    """The package imports its modules when a name is first read (the plugin masks with
    ``servers.masking`` in every session without starting the server modules): every name
    of ``__all__`` resolves, to the object of its module, and an unknown one is an AttributeError."""
    import importlib

    import pytest_migsafe.servers as servers

    for name in servers.__all__:
        value = getattr(servers, name)
        module = importlib.import_module(servers._MODULE_OF[name], "pytest_migsafe.servers")
        assert value is getattr(module, name)
    assert set(servers.__all__) <= set(dir(servers))
    with pytest.raises(AttributeError, match="no attribute 'start_mysql'"):
        servers.start_mysql
