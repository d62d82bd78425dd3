"""Helpers of the tests that read live figures while threads feed them, and of those that
send from inside a hand-over (importable from every test directory: ``tests`` holds the
root conftest, which pytest puts on ``sys.path``)."""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable
from typing import Any


def read_while_running(workers: list[Callable[[], Any]], read: Callable[[], Any]) -> int:
    """Run each of ``workers`` in a thread of its own and call ``read()`` until all have
    ended, the interpreter switching threads as often as it can; the number of reads."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work) for work in workers]
        for thread in threads:
            thread.start()
        reads = 0
        while any(thread.is_alive() for thread in threads):
            read()
            reads += 1
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    return reads


def hangs(work: Callable[[], Any], lock: Any) -> bool:
    """True when ``work()``, run in a thread, did not end in 30 s: it waits on ``lock`` its own
    thread holds. The lock (a plain one, which any thread may release) is then released, so
    that the thread and the next tests go on."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if not thread.is_alive():
        return False
    lock.release()
    thread.join(timeout=30)
    return True


def waiting_at(work: Callable[[], Any], function: Any, line_text: str) -> threading.Thread:
    """Start ``work()`` in a thread and return the thread once it waits at ``function``'s line
    holding ``line_text`` (see :func:`wait_until_at`)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    wait_until_at(thread, function, line_text)
    return thread


def wait_until_at(thread: threading.Thread, function: Any, line_text: str) -> None:
    """Return once ``thread``'s innermost frame is ``function``'s (its own code, even if it
    names a ``__wrapped__``) at the first line holding ``line_text``: a ``with`` of a lock the
    caller holds, so the thread stays there until the caller lets it go. Polls the thread's
    stack (``sys._current_frames``), never a clock; ``AssertionError`` saying where the thread
    is if it ends first or is not there in 30 s (the lock is the caller's to release)."""
    code = function.__code__  # (this very function's, not what its __wrapped__ names)
    lines, first = inspect.getsourcelines(code)
    line = first + next(i for i, text in enumerate(lines) if line_text in text)
    for _ in range(30_000):
        frame = sys._current_frames().get(thread.ident)  # type: ignore[arg-type]
        if frame is not None and frame.f_code is code and frame.f_lineno == line:
            return
        if not thread.is_alive():
            raise AssertionError(f"the thread ended without waiting at {function.__qualname__}: {line_text}")
        thread.join(0.001)
    frame = sys._current_frames().get(thread.ident)  # type: ignore[arg-type]
    where = f"{frame.f_code.co_qualname} line {frame.f_lineno}" if frame is not None else "nowhere"
    raise AssertionError(f"the thread did not wait at {function.__qualname__}: {line_text} in 30 s "
                         f"(it is at {where})")
