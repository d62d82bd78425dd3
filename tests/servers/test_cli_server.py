"""``migsafe server``: real servers started, their URLs printed (masked), stopped on Ctrl-C and SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis as redis_py

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _listening(port: int) -> list[str]:
    """Local addresses listening on TCP ``port`` (hex, from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":
                found.append(address)
    return found


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Run ``migsafe server ARGS`` until it prints "ready"; returns the process and what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGSAFE_", "PG"))}
    proc = subprocess.Popen([sys.executable, "-m", "pytest_migsafe.cli.main", "server", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(env, PYTHONPATH=str(REPO)))
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("ready"):
            return proc, "".join(lines)
    proc.wait()
    raise AssertionError("".join(lines))


def _printed(output: str) -> dict[str, dict[str, str]]:
    """``{"PostgreSQL": {"url": ..., "libpq_url": ..., "dsn": ...}, "Redis": {"url": ...}}`` from the output."""
    servers: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith(("PostgreSQL ", "Redis ")):
            current = servers.setdefault(line.split()[0], {"describe": line})
        elif line.startswith("  ") and ":" in line:
            name, _, value = line.strip().partition(":")
            current[name] = value.strip()
    return servers


def test_tcp_urls_are_masked_and_sigterm_stops_both(tmp_path: Path) -> None:
    proc, output = _start("--tcp", "--redis")
    try:
        servers = _children(proc.pid)
        assert len(servers) == 2  # postgres and redis-server, the command's own children
        printed = _printed(output)
        pg_url, redis_url = printed["PostgreSQL"]["url"], printed["Redis"]["url"]
        # booleans and counts only: a failing assertion must not print what it looks for
        masked = [re.fullmatch(r"postgresql\+psycopg://postgres:\*\*\*@127\.0\.0\.1:\d+/migsafe", pg_url) is not None,
                  re.fullmatch(r"redis://:\*\*\*@127\.0\.0\.1:\d+/0", redis_url) is not None]
        assert masked == [True, True]
        unmasked = len(re.findall(r"://[^:/@\s]*:(?!\*\*\*@)[^@\s]+@", output) + re.findall(r"password=(?!\*\*\*)", output))
        assert unmasked == 0
        for url in (pg_url, redis_url):
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            assert _listening(port) == ["0100007F"]  # 127.0.0.1 only
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert all(_gone(pid) for pid in servers)


def test_show_password_gives_working_urls_and_ctrl_c_stops_them() -> None:
    proc, output = _start("--tcp", "--redis", "--show-password")
    try:
        servers = _children(proc.pid)
        printed = _printed(output)
        with psycopg.connect(printed["PostgreSQL"]["libpq_url"]) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("migsafe",)
            assert conn.execute("SHOW shared_preload_libraries").fetchone() == ("pg_stat_statements",)
        client = redis_py.Redis.from_url(printed["Redis"]["url"])
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert "stopping" in rest
    assert len(servers) == 2 and all(_gone(pid) for pid in servers)


def test_default_is_a_private_unix_socket() -> None:
    proc, output = _start()
    try:
        dsn = _printed(output)["PostgreSQL"]["dsn"]
        with psycopg.connect(dsn) as conn:
            socket_dir = conn.execute("SHOW unix_socket_directories").fetchone()[0]  # type: ignore[index]
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        assert dsn.startswith(f"host={socket_dir}")
        assert os.stat(socket_dir).st_mode & 0o777 == 0o700
        assert f"unix socket {socket_dir}/.s.PGSQL.5432" in output
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0


def test_a_server_that_dies_ends_the_command_with_an_error() -> None:
    proc, _ = _start()
    (server,) = _children(proc.pid)
    os.kill(server, signal.SIGKILL)
    rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1
    assert re.search(r"migsafe: PostgreSQL .* exited", rest), rest


@pytest.mark.parametrize("args", [["--pg-ctl", "/nonexistent/pg_ctl"],
                                  ["--redis-server", "/nonexistent/redis-server"]], ids=["pg-ctl", "redis-server"])
def test_errors_name_the_commands_own_options(args: list[str], tmp_path: Path) -> None:
    # the servers' messages named the pytest options (--migsafe-pg-ctl), which this command has
    # not; --redis-server alone asks for Redis (it was silently ignored without --redis)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGSAFE_", "PG"))}
    done = subprocess.run([sys.executable, "-m", "pytest_migsafe.cli.main", "server", "--base-dir",
                           str(tmp_path), *args], capture_output=True, text=True, timeout=120,
                          env=dict(env, PYTHONPATH=str(REPO)))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{args[0]} {args[1]}" in done.stderr
    assert "--migsafe-" not in done.stdout + done.stderr


def test_help_names_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_migsafe.cli.main", "server", "--help"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0
    for flag in ("--tcp", "--redis", "--show-password", "--pg-ctl"):
        assert flag in done.stdout


@pytest.mark.parametrize("args", [["--tcp"], []], ids=["tcp", "unix-socket"])
def test_printed_url_passes_pydantic(args: list[str]) -> None:
    pydantic = pytest.importorskip("pydantic")
    proc, output = _start(*args, "--show-password")
    try:
        url = _printed(output)["PostgreSQL"]["url"]
        assert str(pydantic.TypeAdapter(pydantic.PostgresDsn).validate_python(url)) == url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_the_work_dir_of_a_killed_command_is_reaped_by_the_next_session() -> None:
    """SIGKILL leaves ``migsafe server``'s temporary directory behind (the servers themselves
    stop: they watch their parent); it is named with the command's pid, so the next session
    that starts a server removes it."""
    import tempfile

    proc, _ = _start()
    try:
        found = list(Path(tempfile.gettempdir()).glob(f"migsafe-server-{proc.pid}-*"))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert len(found) == 1, "the work dir is not named with the command's pid"
    work = found[0]
    assert work.exists()
    reaper = subprocess.run([sys.executable, "-c",
                             "from pytest_migsafe.servers._process import session_temp_dir; "
                             "import shutil; shutil.rmtree(session_temp_dir('probe'))"],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert reaper.returncode == 0, reaper.stderr
    deadline = time.monotonic() + 15
    while work.exists() and time.monotonic() < deadline:  # (rmtree races the server's own exit)
        time.sleep(0.1)
    assert not work.exists()
