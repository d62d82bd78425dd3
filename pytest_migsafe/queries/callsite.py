"""Find the first stack frame in the user's own code, cheaply.

"Library" code is anything under site-packages or dist-packages, the standard library,
and pytest_migsafe itself. The verdict is cached per file name, so after warm-up a
lookup costs one dict access per frame walked.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import sysconfig
from types import CodeType, FrameType

# the whole pytest_migsafe package (this file is in pytest_migsafe/queries/)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _library_prefixes() -> tuple[str, ...]:
    paths = {_PACKAGE_DIR}
    for name in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):  # scripts: the pytest launcher
        path = sysconfig.get_paths().get(name)
        if path:
            paths.add(os.path.abspath(path) + os.sep)
    for path in sys.path:
        if path.endswith(("site-packages", "dist-packages")):
            paths.add(os.path.abspath(path) + os.sep)
    return tuple(sorted(paths))


_PREFIXES = _library_prefixes()
_SITE_MARKERS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)
# file name -> display text ("app/views.py") for user files, None for library files
_verdicts: dict[str, str | None] = {}


def _classify(filename: str) -> str | None:
    if filename.startswith("<"):
        return None
    path = os.path.abspath(filename)
    if path.startswith(_PREFIXES) or any(marker in path for marker in _SITE_MARKERS):
        return None
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


def is_user_file(filename: str) -> bool:
    """True when ``filename`` is the user's own code, not a library or the stdlib."""
    verdict = _verdicts.get(filename, _classify)
    if verdict is _classify:
        verdict = _verdicts[filename] = _classify(filename)
    return verdict is not None


def call_site(frame: FrameType | None = None) -> str:
    """``path:line`` of the innermost user frame at or above ``frame`` (default: caller)."""
    f: FrameType | None = frame if frame is not None else sys._getframe(1)
    verdicts = _verdicts
    while f is not None:
        filename = f.f_code.co_filename
        try:
            shown = verdicts[filename]
        except KeyError:
            shown = verdicts[filename] = _classify(filename)
        if shown is not None:
            return f"{shown}:{f.f_lineno}"
        f = f.f_back
    greenlet = sys.modules.get("greenlet")
    if greenlet is not None:  # SQLAlchemy's asyncio layer: the user's frames are in the parent greenlet
        parent = greenlet.getcurrent().parent
        if parent is not None and parent.gr_frame is not None:
            return call_site(parent.gr_frame)
    return framework_site(frame if frame is not None else sys._getframe(1))


# the layers a statement passes through on its way down: never what sent it
_CARRIERS = ("pytest_migsafe", "sqlalchemy", "psycopg", "psycopg_pool", "django.db", "asyncio", "threading",
             "concurrent.futures", "greenlet", "contextlib", "functools", "_pytest", "pluggy", "runpy")


def framework_site(frame: FrameType | None) -> str:
    """``<module.function>`` of the framework code that sent a statement no user code sent.

    For example ``<django.test.testcases.TransactionTestCase.tearDownClass>`` or
    ``<unittest.case.TestCase.doCleanups>``: the innermost public function outside the
    database layers and the test runner (a framework's private helpers are passed over);
    ``<unknown>`` when there is none.
    """
    f = frame
    private = None
    while f is not None:
        module = f.f_globals.get("__name__", "")
        if module and not module.startswith(_CARRIERS) and module != "__main__":
            code = f.f_code
            name = f"<{module}.{getattr(code, 'co_qualname', code.co_name)}>"
            if not code.co_name.startswith("_") or code.co_name.startswith("__"):
                return name  # a public step of the framework (its own helpers are passed over)
            private = private or name
        elif private is not None:
            break
        f = f.f_back
    return private or "<unknown>"


# -- where a repeated statement comes from ---------------------------------------------
TEST_FILE_PATTERNS = ["test_*.py", "*_test.py", "conftest.py"]  # pytest's python_files, and conftests
_is_test: dict[str, bool] = {}


def set_test_files(patterns: list[str]) -> None:
    """The basenames of the test modules (pytest's ``python_files``); conftest.py is always one."""
    TEST_FILE_PATTERNS[:] = [*patterns, "conftest.py"]
    _is_test.clear()


def _test_file(filename: str) -> bool:
    verdict = _is_test.get(filename)
    if verdict is None:
        base = os.path.basename(filename)
        verdict = _is_test[filename] = any(fnmatch.fnmatch(base, p) for p in TEST_FILE_PATTERNS)
    return verdict


class Origin:
    """Where a statement came from, for the N+1 rule.

    ``chain``: the application frames (user code that is not a test module or conftest),
    outermost first, as ``path:line``; ``looping``: the outermost one (``chain[0]``), the
    frame whose loop repeats a statement; ``function``: the code object of that frame (the
    grouping key: repeats are counted per function, across its lines); ``test_own``: the
    statement came straight from a test module or conftest (the test's own arrangement);
    ``framework``: no user frame at all (a framework's own statement); ``unit_of_work``: the
    identity of the ORM flush the statement was sent in (None outside a flush); ``test_site``:
    the test module or conftest line that called in (``path:line``), if one did.
    """

    __slots__ = ("chain", "framework", "function", "looping", "test_own", "test_site", "unit_of_work")

    def __init__(self, chain: list[str], function: CodeType | None, test_own: bool,
                 unit_of_work: int | None = None, test_site: str | None = None) -> None:
        self.chain = chain
        self.unit_of_work = unit_of_work
        self.test_site = test_site
        self.looping = chain[0] if chain else None
        self.function = function
        self.test_own = test_own
        self.framework = not chain and not test_own


MAX_CHAIN = 12
UNIT_OF_WORK_CODES: set[CodeType] = set()  # code objects of ORM flushes (SQLAlchemy's Session._flush)


def origin_of(frame: FrameType | None) -> Origin:
    """The :class:`Origin` of a statement sent at ``frame`` (walks up to the test's frame)."""
    sites: list[tuple[str, int]] = []
    function = None
    flush = None
    test_site = None
    verdicts = _verdicts
    units = UNIT_OF_WORK_CODES
    f = frame
    while f is not None:
        code = f.f_code
        filename = code.co_filename
        try:
            shown = verdicts[filename]
        except KeyError:
            shown = verdicts[filename] = _classify(filename)
        if shown is not None:
            if _test_file(filename):
                test_site = f"{shown}:{f.f_lineno}"
                break  # the test (or a fixture) called into the application here
            site = (shown, f.f_lineno)
            if not sites or sites[-1] != site:  # a comprehension's frame sits on its function's line
                sites.append(site)
            function = code
        elif units and code in units:
            flush = id(f)
        f = f.f_back
    if f is None and not sites and "greenlet" in sys.modules:
        # SQLAlchemy's asyncio layer runs the driver in a child greenlet: the user's
        # coroutine frames are on the stack of the greenlet that switched to it
        parent = sys.modules["greenlet"].getcurrent().parent
        if parent is not None and parent.gr_frame is not None:
            return origin_of(parent.gr_frame)
    if len(sites) > MAX_CHAIN:  # keep the outermost (the loop) and the innermost (the sender)
        sites = sites[: MAX_CHAIN // 2] + sites[-(MAX_CHAIN // 2):]
    chain = [f"{shown}:{line}" for shown, line in reversed(sites)]
    return Origin(chain, function, test_own=not chain and f is not None, unit_of_work=flush,
                  test_site=test_site)
