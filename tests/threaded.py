"""Helpers of the tests that read live figures while threads feed them, and of those that
send from inside a hand-over (importable from every test directory: ``tests`` holds the
root conftest, which pytest puts on ``sys.path``)."""

from __future__ import annotations

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
