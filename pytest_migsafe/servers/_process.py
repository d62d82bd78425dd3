"""Child server processes that never outlive the test session: stop(), atexit, SIGTERM, parent death."""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ._users import SERVER_USER

_LIVE: dict[int, ManagedProcess] = {}
_LIVE_LOCK = threading.Lock()
_SIGTERM_INSTALLED = False
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved before any fork: preexec_fn must not load libraries


def child_setup(death_signal: int) -> Callable[[], None] | None:
    """A preexec_fn making the child receive ``death_signal`` when we die (Linux), else None.

    This covers SIGKILL of the test process, where neither atexit nor a signal handler runs.
    The kernel ties the parent-death signal to the forking *thread*, so it is only used
    from the main thread; the signal is set after subprocess switched uid (a uid change
    clears it), which is the order CPython's _posixsubprocess uses.
    """
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    prctl = _PRCTL
    parent = os.getpid()

    def _setup() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # parent already gone before prctl took effect
            os._exit(1)

    return _setup


class ManagedProcess:
    """A server child process stopped exactly once: by stop(), at interpreter exit, or on SIGTERM."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        *,
        stop_signals: Sequence[tuple[int, float]],
        before_stop: Callable[[], None] | None = None,
        cleanup_dirs: Sequence[Path] = (),
        keep_files: Sequence[tuple[Path, Path]] = (),
    ) -> None:
        """Track ``proc``; ``stop_signals`` are (signal, seconds to wait) tried in order.

        ``keep_files`` are (source, destination) pairs copied once the process has exited
        and before ``cleanup_dirs`` are removed (a server log kept for debugging).
        """
        self.proc = proc
        self.stop_signals = list(stop_signals)
        self.before_stop = before_stop
        self.cleanup_dirs = list(cleanup_dirs)
        self.keep_files = list(keep_files)
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._stopped = False
        with _LIVE_LOCK:
            _LIVE[id(self)] = self
        _install_sigterm_handler()

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """Stop the process (graceful first, SIGKILL last) and remove temp dirs; idempotent."""
        with self._lock:
            if self._stopped or os.getpid() != self._owner:
                return
            self._stopped = True
        with _LIVE_LOCK:
            _LIVE.pop(id(self), None)
        if self.alive() and self.before_stop is not None:
            try:
                self.before_stop()
            except Exception:
                pass
        graceful = self._wait(1.0 if self.before_stop else 0.0)
        for sig, timeout in self.stop_signals:
            if graceful:
                break
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                break
            graceful = self._wait(timeout)
        if not graceful:
            # the server did not exit: kill its whole process group (it leads one).
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._wait(10.0)
        for source, destination in self.keep_files:
            try:
                shutil.copyfile(source, destination)
            except OSError:
                pass
        for directory in self.cleanup_dirs:
            shutil.rmtree(directory, ignore_errors=True)

    def _wait(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


def stop_all() -> None:
    """Stop every server this process started and has not stopped yet, then remove the temp
    dirs it made (:func:`session_temp_dir`) that are still there: at interpreter exit and on
    SIGTERM, where no ``close()`` of a session ran (an interrupted ``initdb``, the session's
    exported servers' dir), none is left for a later session to reap."""
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for managed in live:
        managed.stop()
    if os.getpid() == _TEMP_DIRS_OWNER:
        while _TEMP_DIRS:
            shutil.rmtree(_TEMP_DIRS.pop(), ignore_errors=True)


atexit.register(stop_all)


def _on_sigterm(signum: int, frame: object) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def is_servers_sigterm_handler(handler: object) -> bool:
    """True when ``handler`` (what ``signal.getsignal(SIGTERM)`` returned) is the one the servers
    install: it stops them and dies of the signal, as the default action would. A handler that
    interrupts the run instead (the report's, which must write its files) may replace it, and
    put it back (or call it) for a second SIGTERM."""
    return handler is _on_sigterm


def _install_sigterm_handler() -> None:
    """On SIGTERM, stop our servers and then die of SIGTERM as before (only if nobody else handles it)."""
    global _SIGTERM_INSTALLED
    if _SIGTERM_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    _SIGTERM_INSTALLED = True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


_REAPED = False


_TEMP_DIRS: list[Path] = []  # made by session_temp_dir, removed by stop_all if still there
_TEMP_DIRS_OWNER = os.getpid()


def session_temp_dir(kind: str) -> Path:
    """A fresh 0700 dir in the system temp dir, named with our pid so a later session can reap
    it (after a SIGKILL); removed at interpreter exit or SIGTERM at the latest (:func:`stop_all`)."""
    global _TEMP_DIRS_OWNER
    _reap_stale_temp_dirs()
    _install_sigterm_handler()  # (before the dir exists: a SIGTERM during initdb removes it too)
    made = Path(tempfile.mkdtemp(prefix=f"migsafe-{kind}-{os.getpid()}-"))
    if os.getpid() != _TEMP_DIRS_OWNER:  # (a forked child: its own list)
        _TEMP_DIRS.clear()
        _TEMP_DIRS_OWNER = os.getpid()
    _TEMP_DIRS.append(made)
    return made


def _reap_stale_temp_dirs() -> None:
    """Once per process: remove migsafe-<kind>-<pid>-* temp dirs left by dead processes (e.g. SIGKILL)."""
    global _REAPED
    if _REAPED:
        return
    _REAPED = True
    owners = {os.geteuid()}
    if os.geteuid() == 0:
        try:
            owners.add(pwd.getpwnam(SERVER_USER).pw_uid)
        except KeyError:
            pass
    for entry in Path(tempfile.gettempdir()).glob("migsafe-*-*-*"):
        pid = entry.name.split("-")[2]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            st = entry.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid in owners:
            shutil.rmtree(entry, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (empty string if unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def child_env(**extra: str) -> dict[str, str]:
    """os.environ without libpq/PG* variables, plus ``extra``: children see no stray PGDATA/PGPORT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(extra)
    return env
