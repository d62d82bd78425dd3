"""The account server processes run as: the current user, or an unprivileged one when we are root."""

from __future__ import annotations

import fcntl
import functools
import os
import pwd
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Dedicated system account created (once) when the session runs as root.
#: PostgreSQL refuses to run as root; a dedicated account (rather than ``nobody``)
#: keeps the data files private to the test servers.
SERVER_USER = "migsafe"
_FALLBACK_USERS = ("postgres", "nobody")


@dataclass(frozen=True)
class ServerUser:
    """An account that server processes run as."""

    name: str
    uid: int
    gid: int

    @property
    def is_current(self) -> bool:
        """True when this is the account we already run as (no switch needed)."""
        return self.uid == os.geteuid()

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for subprocess.Popen/run that start the child as this user."""
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        """Give ``path`` to this user (only possible, and only needed, as root)."""
        if not self.is_current:
            os.chown(path, self.uid, self.gid)

    def make_private(self, path: Path) -> Path:
        """Make the directory ``path`` owned by this user with mode 0700, and return it."""
        self.chown(path)
        path.chmod(0o700)
        return path

    def can_traverse(self, path: Path) -> bool:
        """True if this user can reach ``path`` (search permission on every ancestor)."""
        if self.uid == 0:
            return True
        groups = set(os.getgrouplist(self.name, self.gid))
        current = Path(os.path.realpath(path))
        for directory in (current, *current.parents):
            try:
                st = directory.stat()
            except OSError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                continue
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid in groups:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        return True


def pytest_tmp_root(basetemp: Path) -> Path:
    """The top of pytest's tmp tree around ``basetemp``: its ``pytest-of-<user>`` directory
    in the system temp dir if it has one (xdist workers' basetemps sit two levels below),
    else ``basetemp`` itself (a ``--basetemp`` the user chose).

    Nothing is changed there any more: every pytest session resets the mode of
    ``pytest-of-<user>`` to 0700 when it starts, so access granted on it to the server's
    account does not last while another session starts (see :func:`start_postgres`).
    """
    real = Path(os.path.realpath(basetemp))
    system_tmp = Path(os.path.realpath(tempfile.gettempdir()))
    owner = pwd.getpwuid(os.geteuid()).pw_name
    for directory in (real, *real.parents):
        if directory.name == f"pytest-of-{owner}" and directory.parent == system_tmp:
            return directory
    return real


def _lookup(name: str) -> ServerUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_system_user(name: str) -> None:
    # Sessions started together would race: useradd fails while another holds the lock on
    # /etc/passwd. An flock makes the second wait, then find the account made by the first.
    lock_path = Path(tempfile.gettempdir()) / ".migsafe-useradd.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _lookup(name) is None:
            _useradd(name)
    finally:
        os.close(fd)


def _useradd(name: str) -> None:
    subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "pytest-migsafe test servers",
            name,
        ],
        capture_output=True,
        check=False,
        timeout=30,
    )


@functools.cache
def server_user(preferred: str = SERVER_USER) -> ServerUser:
    """Return the current user, or as root an unprivileged account (created with useradd if needed)."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    user = _lookup(preferred)
    if user is None:
        try:
            _create_system_user(preferred)
        except (OSError, subprocess.SubprocessError):
            pass
        user = _lookup(preferred)
    for name in _FALLBACK_USERS:
        if user is not None and user.uid != 0:
            break
        user = _lookup(name)
    if user is None or user.uid == 0:
        raise RuntimeError(
            f"running as root and no unprivileged account to run servers as "
            f"(could not create {preferred!r} with useradd; no {' or '.join(_FALLBACK_USERS)} user)"
        )
    return user
