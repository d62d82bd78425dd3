"""pytest sessions started at the same time each get a working PostgreSQL, as root and as an ordinary user.

Every pytest session resets the mode of pytest's temporary root (``/tmp/pytest-of-<user>``)
to 0700 when it starts; access given there to the server's account (root runs PostgreSQL
as an unprivileged account) was taken away by a session starting meanwhile, and initdb
failed with "Permission denied". The sessions here run with pytest's real temporary root
(not pytester's), as a user would run them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import psycopg
import pytest

from pytest_migsafe.servers import start_postgres

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0
ORDINARY_USER = "tester"

SUITE = textwrap.dedent(
    """
    import os
    import psycopg

    def test_query(migsafe_postgres):
        with psycopg.connect(migsafe_postgres.dsn) as conn:
            data = conn.execute("SHOW data_directory").fetchone()[0]
            assert conn.execute("SELECT 1").fetchone() == (1,)
        print("DATA", data)
    """
)


def _session_env(**extra: str) -> dict[str, str]:
    """The environment of a session a user starts: no server given, pytest's real temp root."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MIGSAFE_", "PYTEST_", "PG"))}  # PYTEST_DEBUG_TEMPROOT: pytester's
    env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _run_together(commands: list[list[str]], cwd: Path, env: dict[str, str]) -> list[tuple[int, str]]:
    """Start every command at once, then wait for all: (exit code, output) each."""
    procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd in commands]
    return [(proc.wait(timeout=300), proc.communicate()[0]) for proc in procs]


def _pytest(python: str = sys.executable) -> list[str]:
    return [python, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:randomly", "test_suite.py"]


def _assert_all_passed(results: list[tuple[int, str]]) -> None:
    dirs = set()
    for code, output in results:
        assert code == 0, output
        assert "1 passed" in output, output
        dirs.add(output.split("DATA ", 1)[1].split()[0])
    assert len(dirs) == len(results)  # each session had its own cluster


@pytest.mark.parametrize("sessions", [2, 3])
def test_sessions_started_together_all_get_a_server(pytester: pytest.Pytester, sessions: int) -> None:
    pytester.makepyfile(test_suite=SUITE)
    results = _run_together([_pytest()] * sessions, pytester.path, _session_env(PYTHONPATH=str(REPO)))
    _assert_all_passed(results)


HOLD_CONFTEST = textwrap.dedent(
    """
    import os
    from pytest_migsafe.servers import postgres

    _run_as = postgres._run_as

    def _held_run_as(user, args, *rest, **kwargs):
        # every initdb waits for a word on the FIFO named by HOLD_INITDB
        if os.path.basename(args[0]) == "initdb" and os.environ.get("HOLD_INITDB"):
            print("HOLDING", flush=True)
            with open(os.environ["HOLD_INITDB"]) as fifo:
                fifo.read()
        return _run_as(user, args, *rest, **kwargs)

    postgres._run_as = _held_run_as
    """
)


def test_a_session_starting_while_another_starts_its_server(pytester: pytest.Pytester) -> None:
    """Session A holds just before each initdb; another session runs meanwhile; then A goes on.

    Any pytest session resets pytest-of-<user> when it starts, so the other one needs no
    database: this is the order that failed with "initdb failed ... Permission denied",
    made certain (for every source A falls back to).
    """
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeconftest(HOLD_CONFTEST)
    other = pytester.mkdir("other")
    (other / "test_other.py").write_text("def test_other(tmp_path):\n    assert tmp_path.is_dir()\n")
    fifo = pytester.path / "hold"
    os.mkfifo(fifo)
    env = _session_env(PYTHONPATH=str(REPO))
    first = subprocess.Popen(_pytest(), cwd=pytester.path, env=dict(env, HOLD_INITDB=str(fifo)),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert first.stdout is not None
    output, holds = [], 0
    for line in first.stdout:
        output.append(line)
        if line.strip() == "HOLDING":
            holds += 1
            try:
                second = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                         "test_other.py"], cwd=other, env=env, capture_output=True, text=True,
                                        timeout=300)
                assert second.returncode == 0, second.stdout + second.stderr
            finally:
                with open(fifo, "w") as release:
                    release.write("go")
    assert holds >= 1
    _assert_all_passed([(first.wait(timeout=300), "".join(output))])


def _ordinary_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(ORDINARY_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                        "--comment", "pytest-migsafe tests", ORDINARY_USER], check=True, capture_output=True)
        return pwd.getpwnam(ORDINARY_USER)


def _python_for(user: str, env: dict[str, str]) -> tuple[str, str]:
    """An interpreter ``user`` can run with pytest and psycopg, and the PYTHONPATH that gives them.

    Here the venv's python links into /root (0700); a system python of the same minor
    version with the venv's site-packages on PYTHONPATH works instead.
    """
    site = str(Path(psycopg.__file__).parents[1])
    for python, path in ((sys.executable, str(REPO)),
                         (f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}", f"{REPO}:{site}")):
        probe = subprocess.run(["runuser", "-u", user, "--", python, "-c", "import psycopg, pytest, pytest_migsafe"],
                               capture_output=True, env=dict(env, PYTHONPATH=path), cwd="/")
        if probe.returncode == 0:
            return python, path
    pytest.skip(f"no python with pytest and psycopg runnable by {user}")


@pytest.mark.skipif(not IS_ROOT, reason="runs sessions as another user: needs root")
@pytest.mark.parametrize("sessions", [2, 3])
def test_sessions_started_together_as_an_ordinary_user(sessions: int) -> None:
    user = _ordinary_user()
    suite = Path(tempfile.mkdtemp(prefix="migsafe-concurrent-"))
    try:
        suite.chmod(0o755)
        (suite / "test_suite.py").write_text(SUITE)
        os.chown(suite, user.pw_uid, user.pw_gid)
        env = _session_env()
        python, path = _python_for(user.pw_name, env)
        command = ["runuser", "-u", user.pw_name, "--", *_pytest(python)]
        results = _run_together([command] * sessions, suite, dict(env, PYTHONPATH=path))
        _assert_all_passed(results)
    finally:
        shutil.rmtree(suite, ignore_errors=True)


def test_start_under_pytests_tmp_while_its_mode_is_reset(tmp_path: Path) -> None:
    """What a session starting meanwhile does to pytest-of-<user>, done over and over during the start.

    pytest's ``getbasetemp`` drops group and other bits of that directory at every
    session start; the cluster must start regardless (and, as root, live elsewhere).
    """
    top = next((d for d in (tmp_path, *tmp_path.parents) if d.name.startswith("pytest-of-")), None)
    assert top is not None, tmp_path
    done = threading.Event()
    resets = 0

    def reset_like_a_new_session() -> None:
        nonlocal resets
        while not done.is_set():
            mode = stat.S_IMODE(top.stat().st_mode)
            if mode & 0o077:
                os.chmod(top, mode & ~0o077)
                resets += 1

    resetter = threading.Thread(target=reset_like_a_new_session)
    resetter.start()
    try:
        running = start_postgres(tmp_path / "pg", tmp_root=top)  # what the fixture passes
    finally:
        done.set()
        resetter.join()
    try:
        with psycopg.connect(running.dsn) as conn:
            data = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        running.stop()
    print("resets during the start:", resets)
    if IS_ROOT:
        assert not data.startswith(str(top))  # out of the tree other sessions reset
        assert not stat.S_IMODE(top.stat().st_mode) & 0o077
