"""Find the first stack frame in the user's own code, cheaply, and where a statement came from.

"Library" code is anything under site-packages or dist-packages, the standard library,
and pytest_migsafe itself. A library frame is stepped over by its code's file name (one
set lookup of a string whose hash is cached); what a user frame's code is (application
or test) is cached by the code object's id; ``path:line`` is cached per (code, instruction
offset). The driver hooks (:func:`call_site_of_caller`, :func:`site_from`) walk every time:
nothing short of the whole walk tells a library frame from a user frame between the hook
and the first user frame.
"""

from __future__ import annotations

import contextvars
import fnmatch
import inspect
import os
import sys
import sysconfig
import threading
import weakref
from collections.abc import Callable
from types import CodeType, FrameType

# the whole pytest_migsafe package (this file is in pytest_migsafe/queries/)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _library_prefixes() -> tuple[str, ...]:
    paths = {_PACKAGE_DIR}
    scheme = sysconfig.get_paths()  # once: each call expands the whole install scheme again
    for name in ("stdlib", "platstdlib", "purelib", "platlib", "scripts"):  # scripts: the pytest launcher
        path = scheme.get(name)
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

# What the walks need to know of a frame's code, looked up by ``id(code)`` (an int hashes
# in nanoseconds; a code object hashes its constants every time): (shown path or None for
# library code, kind, the code itself, which also keeps the id from being reused).
APP, TEST, LIBRARY = 0, 1, 2
_codes: dict[int, tuple[str | None, int, CodeType]] = {}
# file names of library code: the walks step over a frame whose code's file is one (a
# string's hash is cached, so a step costs one set lookup and no call)
_library_files: set[str] = set()
# (id(code), f_lasti) -> "path:line" (a frame's f_lineno scans the line table each time)
_lines: dict[tuple[int, int], str] = {}
#: Origins kept for reuse in each of the two caches below (a few hundred bytes each); past
#: it, an Origin is made per statement as before
ORIGINS_KEPT = 20_000
# (id(code), f_lasti) -> (call site, Origin) of a statement a test module or conftest sends
# there outside an ORM flush (Origins are never changed once made)
_test_origins: dict[tuple[int, int], tuple[str, Origin]] = {}
# (id(code), f_lasti, id(the test's code), its f_lasti) -> (call site, Origin) of a statement
# an application function sends there when a test module or conftest called it, outside a flush
_called_origins: dict[tuple[int, int, int, int], tuple[str, Origin]] = {}


#: The ORM flush (unit of work) running in this context: a number the ORM hook gives each
#: ``Session.flush()`` (:mod:`pytest_migsafe.queries.orm`), None outside a flush. The
#: statements of one flush are its rows, not the user's loop.
unit_of_work: contextvars.ContextVar[int | None] = contextvars.ContextVar("migsafe_unit_of_work", default=None)
_current_unit = unit_of_work.get
#: unit of work number of an ORM flush -> the position of the user's frame that ran it (the
#: frame its own statements come from: a statement of the flush sent from another user frame,
#: such as a mapper event listener's SELECT per row, is the user's own, counted as any other).
#: Bounded: the newest :data:`FLUSH_SENDERS_KEPT` flushes.
flush_senders: dict[int, Position | None] = {}
FLUSH_SENDERS_KEPT = 1000


def _learn(code: CodeType, frame: FrameType | None = None) -> tuple[str | None, int, CodeType]:
    filename = code.co_filename
    if filename in _verdicts:
        shown = _verdicts[filename]
    else:
        shown = _verdicts[filename] = _classify(filename)
    if shown is None:  # stepped over by its file name from now on: no entry (keeps no code alive)
        _library_files.add(filename)
        return (None, LIBRARY, code)
    entry = _codes[id(code)] = (shown, TEST if _test_file(filename) else APP, code)
    if frame is not None and not filename.endswith(".py"):  # (a template's compiled code: see _template_lines)
        lines = _template_lines(frame)
        if lines is not None:
            _line_maps[id(code)] = lines
    return entry


# id(code) of a template's compiled code -> its line numbers mapped to the template's
_line_maps: dict[int, Callable[[int], int]] = {}


def _template_lines(frame: FrameType) -> Callable[[int], int] | None:
    """For a frame of a Jinja template's compiled code (its file name is the template's, its line
    numbers the generated Python's): the template's own ``get_corresponding_lineno``, which maps a
    generated line to the template's line; None for any other code. Only a Jinja ``Template``
    (told by its class's module) is asked: no other object of the frame's is read."""
    template = frame.f_globals.get("__jinja_template__")
    if template is None or not type(template).__module__.startswith("jinja2."):
        return None
    if not callable(getattr(template, "get_corresponding_lineno", None)):
        return None
    try:
        held = weakref.ref(template)  # (weak: the template, its environment and loader are freed as without the plugin)
    except TypeError:
        return None

    def template_line(line: int) -> int:
        found = held()
        if found is None:
            return line
        try:
            return int(found.get_corresponding_lineno(line))
        except Exception:  # (a template whose debug information is not as Jinja 3 keeps it)
            return line

    return template_line


#: The directory call sites are shown relative to: the working directory when this module was
#: first imported (the pytest plugin's: where pytest was started), fixed then. A test that changes
#: the working directory (``os.chdir``, never changed back) would otherwise show the files first
#: seen after it by their absolute paths, and those seen before by relative ones
#: (:func:`set_display_root` sets it anew)
try:
    _display_root = os.getcwd()
except OSError:  # (a working directory removed under the process: paths shown absolute until set)
    _display_root = os.sep


def set_display_root(path: str | os.PathLike[str]) -> str:
    """Show call sites relative to ``path`` (a directory; the pytest plugin gives pytest's
    invocation directory) from now on; returns the directory they were shown relative to
    until now. Files are told again from here on; a code object already learnt keeps what it
    was shown as until :func:`set_test_files` forgets them all (a session's start)."""
    global _display_root
    before, _display_root = _display_root, os.path.abspath(path)
    if _display_root != before:
        _verdicts.clear()  # (by file name; what a code object was learnt as stays: a counter
        _is_test.clear()  # still active may hold positions in it, see line_of)
    return before


def _classify(filename: str) -> str | None:
    if filename.startswith("<"):
        return None
    # a relative file name (a module imported through a relative sys.path entry) is relative to
    # the directory the run started in, not to where a test may have moved since
    path = os.path.normpath(os.path.join(_display_root, filename))
    if path.startswith(_PREFIXES) or any(marker in path for marker in _SITE_MARKERS):
        return None
    try:
        rel = os.path.relpath(path, _display_root)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


def shown_user_file(filename: str) -> str | None:
    """How a call site shows ``filename`` (``app/templates/books.html``) when it is the user's
    own (not a library's, nor the standard library's); None otherwise."""
    verdict = _verdicts.get(filename, _classify)
    if verdict is _classify:
        verdict = _verdicts[filename] = _classify(filename)
    return verdict  # type: ignore[return-value]


# (shown path, line) -> the code id of a place that is no Python code's (a line of a Django
# template), and its "path:line": ids below zero, which no code object has
_places: dict[tuple[str, int], int] = {}
_place_lines: dict[int, str] = {}


def place_position(shown: str, line: int) -> Position:
    """A :data:`Position` for line ``line`` of the file shown as ``shown`` that no Python code
    runs (a Django template's line): :func:`line_of` gives ``shown:line``; no code object has
    it, so no walk ever matches it and :func:`holds_line` is False for it."""
    key = (shown, line)
    code_id = _places.get(key)
    if code_id is None:
        code_id = _places[key] = -1 - len(_places)
        _place_lines[code_id] = f"{shown}:{line}"
    return (shown, code_id, 0)


def is_user_file(filename: str) -> bool:
    """True when ``filename`` is the user's own code, not a library or the stdlib."""
    return shown_user_file(filename) is not None


def _site_of(f: FrameType, key: int, shown: str) -> str:
    """``path:line`` of the user's frame ``f`` (code id ``key``), cached per instruction."""
    lasti = f.f_lasti
    site = _lines.get((key, lasti))
    if site is None:
        line = f.f_lineno
        template_line = _line_maps.get(key) if _line_maps else None
        site = _lines[(key, lasti)] = f"{shown}:{line if template_line is None else template_line(line)}"
    return site


def _found(f: FrameType, key: int, shown: str, kind: int) -> str:
    """The call site of the user's frame ``f`` (code id ``key``); leaves it with its
    :class:`Origin` for :func:`origin_for`. The common shapes are built here without a walk,
    once for each place (one dict lookup then): a statement sent straight from a test, or
    from an application function a test called."""
    lasti = f.f_lasti
    flush = _current_unit()
    if kind == TEST:  # sent straight from a test module or conftest: the test's own arrangement
        if flush is None:  # the same for every statement from this instruction: made once
            found = _test_origins.get((key, lasti))
            if found is None:
                found = (_site_of(f, key, shown), Origin([], None, True, None, (shown, key, lasti)))
                if len(_test_origins) < ORIGINS_KEPT:
                    _test_origins[(key, lasti)] = found
        else:
            found = (_lines.get((key, lasti)) or _site_of(f, key, shown),
                     Origin([], None, True, flush, (shown, key, lasti)))
        _last.found = found
        return found[0]
    parent = f.f_back
    if parent is not None:
        parent_key = id(parent.f_code)
        parent_lasti = parent.f_lasti
        if flush is None:  # the same for every statement from these two instructions: made once
            called = (key, lasti, parent_key, parent_lasti)
            found = _called_origins.get(called)  # (kept only where the caller is test code)
            if found is not None:
                _last.found = found
                return found[0]
        entry = _codes.get(parent_key) if parent_key == _running_test else None
        if entry is not None and entry[1] == TEST:
            # an application function the running test called straight from its body (not
            # through a helper of its own, nor a fixture: origin_of tells those, see test_key)
            found = (_site_of(f, key, shown),
                     Origin([(shown, key, lasti)], key, False, flush, (str(entry[0]), parent_key, parent_lasti)))
            if flush is None and len(_called_origins) < ORIGINS_KEPT:
                _called_origins[called] = found
            _last.found = found
            return found[0]
    site = _lines.get((key, lasti)) or _site_of(f, key, shown)  # (known: no call)
    _last.found = (site, origin_of(f, flush))
    return site


def _called_by_test_code(frame: FrameType | None) -> bool:
    """True when ``frame`` (the caller of a test-code frame) is test code too, a test module or
    conftest: the test's own helper sits between the test and what it calls (its code is
    learnt as needed)."""
    if frame is None:
        return False
    code = frame.f_code
    if code.co_filename in _library_files:
        return False
    entry = _codes.get(id(code)) or _learn(code, frame)
    return entry[1] == TEST


def call_site(frame: FrameType | None = None) -> str:
    """``path:line`` of the innermost user frame at or above ``frame`` (default: caller).

    It also leaves the statement's :class:`Origin` for :func:`origin_for` (the N+1 rule
    needs the frames above the user's first one): one walk of the stack serves both.
    """
    return site_from(frame if frame is not None else sys._getframe(1))


#: What :func:`site_from` returns, with ``greenlets=False``, for a stack without a user frame
#: (compared by identity)
_NOT_FOUND = "<no user frame>"


def _no_user_frame(start: FrameType, origin: bool = True) -> str:
    """The call site of a statement with no user frame above ``start``: the first user frame
    on the stack of an ancestor greenlet (SQLAlchemy's asyncio layer runs the driver in a
    child greenlet), each ancestor looked at once; else the framework that sent it (an
    asyncio task made from a library coroutine, ``asyncio.gather(session.scalar(...))``,
    has no user frame on any stack)."""
    greenlet = sys.modules.get("greenlet")
    try:
        if greenlet is not None:
            parent = greenlet.getcurrent().parent
            while parent is not None:
                frame = parent.gr_frame
                if frame is not None:
                    site = site_from(frame, origin, greenlets=False)
                    if site is not _NOT_FOUND:
                        return site
                parent = parent.parent
        site = framework_site(start)
    except Exception:  # a greenlet or frame in a state not foreseen: a site unknown, never the user's error
        site = "<unknown>"
    _last.found = (site, _NO_ORIGIN)
    return site


# What the driver hooks ask for: a statement's call site and origin, or a pool checkout's
# call site alone (for a leak).
STATEMENT, CHECKOUT = 0, 1


def call_site_of_caller(hook_depth: int = 1, purpose: int = STATEMENT) -> str:
    """:func:`call_site` of the frame ``hook_depth`` above the caller (1: the caller of the
    driver hook that calls this). ``purpose``: :data:`STATEMENT` (the site, and the
    statement's :class:`Origin` for :func:`origin_for`) or :data:`CHECKOUT` (the site alone).

    Every call walks the frames: a path remembered from an earlier walk (same depth, same
    code below the user's frame and in it) was once trusted here, and gave a wrong site when
    user code sat between (a user context manager around ``engine.connect()`` where the
    remembered path had ``Engine.begin()``; a library calling back into user code).
    """
    return site_from(sys._getframe(hook_depth + 1), purpose == STATEMENT)


def site_from(start: FrameType, origin: bool = True, greenlets: bool = True) -> str:
    """:func:`call_site` from the frame ``start`` in one pass (``origin``: leave the
    statement's :class:`Origin` too): what :func:`call_site_of_caller` calls, for the hot
    driver hooks to call with ``sys._getframe(1)`` themselves (one Python call less).
    ``greenlets=False``: :data:`_NOT_FOUND` for a stack without a user frame (no look at the
    ancestor greenlets' stacks)."""
    f: FrameType | None = start
    library = _library_files
    codes = _codes
    while True:
        try:
            while f.f_code.co_filename in library:  # type: ignore[union-attr]
                f = f.f_back  # type: ignore[union-attr]
        except AttributeError:  # f is None: the stack ended with no user frame
            return _no_user_frame(start, origin) if greenlets else _NOT_FOUND
        code = f.f_code  # type: ignore[union-attr]
        key = id(code)
        try:
            shown, kind, _ = codes[key]
        except KeyError:
            shown, kind, _ = _learn(code, f)
        if kind == LIBRARY:  # seen for the first time just now
            f = f.f_back  # type: ignore[union-attr]
            continue
        if not origin:
            return _site_of(f, key, shown)  # type: ignore[arg-type]
        return _found(f, key, shown, kind)  # type: ignore[arg-type]


def user_position(frame: FrameType | None, greenlets: bool = True) -> Position | None:
    """The position ``(shown path, code id, instruction)`` of the innermost user frame at or
    above ``frame`` (test code too), as :class:`Origin` keeps positions; on a stack with none,
    the first ancestor greenlet's (SQLAlchemy's asyncio layer: an ``AsyncSession``'s flush runs
    in a child greenlet); None for none."""
    found = _user_position(frame)
    if found is None and greenlets and "greenlet" in sys.modules:
        parent = sys.modules["greenlet"].getcurrent().parent
        while found is None and parent is not None:
            if parent.gr_frame is not None:
                found = _user_position(parent.gr_frame)
            parent = parent.parent
    return found


def _user_position(frame: FrameType | None) -> Position | None:
    f = frame
    while f is not None:
        code = f.f_code
        if code.co_filename not in _library_files:
            key = id(code)
            entry = _codes.get(key)
            if entry is None:
                entry = _learn(code, f)
            if entry[1] != LIBRARY:
                return (entry[0], key, f.f_lasti)  # type: ignore[return-value]
        f = f.f_back
    return None


class _Last(threading.local):
    # the site call_site returned last and the statement's origin: one attribute, one
    # thread-local write a statement
    found: tuple[str | None, Origin | None] = (None, None)


_last = _Last()  # per thread


def last_site() -> str | None:
    """The call site :func:`call_site` returned last in this thread (None before any)."""
    return _last.found[0]


def remember(site: str, origin: Origin) -> None:
    """Make ``(site, origin)`` the last call site found in this thread: a hook recording a
    statement later than it was sent (psycopg's pipeline mode) hands the counters the
    origin of where it was sent."""
    _last.found = (site, origin)


def origin_for(site: str, frame: FrameType | None) -> Origin:
    """The :class:`Origin` of the statement whose call site :func:`call_site` just returned as
    ``site`` (the same string object), else a fresh walk from ``frame``."""
    found = _last.found
    if found[0] is site and found[1] is not None:
        return found[1]
    return origin_of(frame)


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
#: Names of directories whose files are all test code, however they are named: a test tree's
#: helpers (``tests/helpers.py``, ``tests/checkout/__init__.py``) and a test kit an application
#: ships (``src/shop/test/factories.py``). A directory counts when it is on the file's path
#: below the directory call sites are shown relative to (see :func:`set_display_root`)
TEST_DIR_NAMES: frozenset[str] = frozenset({"tests", "test", "testing"})
_is_test: dict[str, bool] = {}


def set_test_files(patterns: list[str], dir_names: list[str] | None = None,
                   forget_codes: bool = True) -> Callable[[], None]:
    """The basenames of the test modules (pytest's ``python_files``); conftest.py is always one.
    ``dir_names``: the names of directories whose files are test code (default: as they are,
    :data:`TEST_DIR_NAMES`; ``[]``: none, a file is test code by its name alone);
    ``forget_codes``: forget what every code object was learnt as (a session's start). Returns a
    function that puts back what was set before (a pytest session nested in another's test: the
    outer test's counter may still hold positions of the code the nested session learnt)."""
    global TEST_DIR_NAMES
    before = (TEST_FILE_PATTERNS[:-1], sorted(TEST_DIR_NAMES))
    TEST_FILE_PATTERNS[:] = [*patterns, "conftest.py"]
    if dir_names is not None:
        TEST_DIR_NAMES = frozenset(dir_names)
    _is_test.clear()

    def put_back() -> None:
        set_test_files(*before, forget_codes=False)

    if not forget_codes:
        return put_back
    # every cache keyed by a code object's id goes with the references that kept the id unique
    _lines.clear()
    _test_origins.clear()
    _called_origins.clear()
    _codes.clear()
    return put_back


#: id() of the code of the test function running now (unwrapped): what the call-site walk's
#: shortcut for "an application function the test called" checks its caller against (a helper
#: of the test's, called from elsewhere, must not be remembered as the test's own line)
_running_test: int | None = None


def mark_test_code(function: object) -> None:
    """Treat the code of ``function`` (the test about to run) as test code wherever its file
    is: a test method inherited from a base class in a module not named like a test module
    (``tests/base.py``, a mixin) is the test's own code, not the application's. Decorated
    functions are unwrapped; library code (a test shipped in an installed package) is left."""
    global _running_test
    code = getattr(function, "__code__", None)
    if code is not None and _is_test.get(code.co_filename) and not hasattr(function, "__wrapped__"):
        _running_test = id(code)
        return  # the common case, told without a call: a plain test in a test module (seen before)
    function = getattr(function, "__func__", function)
    if hasattr(function, "__wrapped__") and callable(function):
        function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    _running_test = id(code) if isinstance(code, CodeType) else None
    if not isinstance(code, CodeType) or _test_file(code.co_filename):
        return  # the common case: a test in a test module is test code already
    entry = _codes.get(id(code))
    if entry is None:
        entry = _learn(code)
    if entry[0] is not None and entry[1] != TEST:
        _codes[id(code)] = (entry[0], TEST, code)


def _test_file(filename: str) -> bool:
    verdict = _is_test.get(filename)
    if verdict is None:
        base = os.path.basename(filename)
        verdict = _is_test[filename] = (any(fnmatch.fnmatch(base, p) for p in TEST_FILE_PATTERNS)
                                        or _in_test_dir(filename))
    return verdict


def _in_test_dir(filename: str) -> bool:
    """True when a directory on ``filename``'s path below the display root is named like a
    test directory (:data:`TEST_DIR_NAMES`); False for a file outside the display root."""
    if not TEST_DIR_NAMES:
        return False
    folder = os.path.dirname(os.path.normpath(os.path.join(_display_root, filename)))
    try:
        rel = os.path.relpath(folder, _display_root)
    except ValueError:  # another drive on Windows
        return False
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return False
    return not TEST_DIR_NAMES.isdisjoint(rel.split(os.sep))


# (shown path, id of the code object, f_lasti): a line, computed when shown; hashes fast
Position = tuple[str, int, int]


def holds_line(position: Position, site: str) -> bool:
    """True when ``site`` (``path:line``) is a line of the function of ``position`` (the same
    shown path, a line of the same code object): the same function, at another line."""
    path, _, line = site.rpartition(":")
    if path != position[0] or not line.isdigit():
        return False
    entry = _codes.get(position[1])
    if entry is None:
        return False
    number = int(line)
    template_line = _line_maps.get(position[1])
    if template_line is not None:
        return any(found is not None and template_line(found) == number for _, _, found in entry[2].co_lines())
    return any(found == number for _, _, found in entry[2].co_lines())


def line_of(position: Position) -> str:
    """``path:line`` of a :data:`Position` (the line is looked up only here, off the hot path)."""
    shown, code_id, lasti = position
    site = _lines.get((code_id, lasti))
    if site is not None:
        return site
    entry = _codes.get(code_id)
    if entry is None:  # a place no code runs (place_position), or a code forgotten since (a
        return _place_lines.get(code_id) or f"{shown}:?"  # pytest session started in a test)
    line = 0
    for start, end, number in entry[2].co_lines():
        if start <= lasti < end and number is not None:
            line = number
            break
    template_line = _line_maps.get(code_id)
    return f"{shown}:{line if template_line is None else template_line(line)}"


class Origin:
    """Where a statement came from, for the N+1 rule.

    Built on every statement, so it keeps raw positions (path, code, instruction offset)
    and turns them into ``path:line`` only when read. ``loop``: the position of the
    outermost application frame (user code that is not a test module or conftest), the frame
    whose loop repeats a statement; ``function``: that frame's code object (the grouping
    key: repeats are counted per function, across its lines); ``inner``: the application
    positions below it, outermost first; ``test_own``: the statement came straight from a
    test module or conftest (the test's own arrangement); ``unit_of_work``: the identity of
    the ORM flush the statement was sent in (None outside a flush); ``test``: the position
    of the test module or conftest line that called in, if one did.
    """

    __slots__ = ("function", "loop", "positions", "test", "test_chain", "test_own", "unit_of_work")

    def __init__(self, positions: list[Position], function: int | None, test_own: bool,
                 unit_of_work: int | None = None, test: Position | None = None,
                 test_chain: tuple[Position, ...] | None = None) -> None:
        self.positions = positions  # innermost first
        self.loop = positions[-1] if positions else None
        self.function = function
        self.test_own = test_own
        self.unit_of_work = unit_of_work
        self.test = test
        self.test_chain = test_chain

    @property
    def test_key(self) -> Position | tuple[Position, ...] | None:
        """What tells one call of the test's apart from another: the position of the test's
        line that called in, or, through test code calling test code (a helper of the test's,
        the test body inside a decorator's wrapper), every such line, innermost first."""
        return self.test_chain or self.test

    @property
    def inner(self) -> list[Position]:
        """The application positions below :attr:`loop`, outermost first."""
        return self.positions[-2::-1]

    @property
    def looping(self) -> str | None:
        """``path:line`` of the frame that loops (None without an application frame)."""
        return line_of(self.loop) if self.loop is not None else None

    @property
    def test_site(self) -> str | None:
        """``path:line`` of the test module or conftest line that called in, if one did."""
        return line_of(self.test) if self.test is not None else None

    @property
    def chain(self) -> list[str]:
        """``path:line`` of each application frame, outermost first (a comprehension's frame
        on its function's line shows once)."""
        lines: list[str] = []
        for position in ([self.loop] if self.loop is not None else []) + self.inner:
            text = line_of(position)
            if not lines or lines[-1] != text:
                lines.append(text)
        return lines


MAX_CHAIN = 12


def origin_of(frame: FrameType | None, flush: int | None = None, greenlets: bool = True) -> Origin:
    """The :class:`Origin` of a statement sent at ``frame`` (walks up to the test's frame).

    ``flush``: the ORM flush it was sent in (default: the one running, :data:`unit_of_work`).
    A stack without a user frame: the first ancestor greenlet's stack that has one (each
    looked at once; ``greenlets=False``: none).
    """
    if flush is None:
        flush = _current_unit()
    positions: list[Position] = []
    function = None
    test = None
    chain = None
    codes = _codes
    library = _library_files
    f = frame
    while f is not None:
        code = f.f_code
        if code.co_filename in library:
            f = f.f_back
            continue
        key = id(code)
        try:
            shown, kind, _ = codes[key]
        except KeyError:
            shown, kind, _ = _learn(code, f)
        if kind == APP:
            function = key
            positions.append((shown, key, f.f_lasti))  # type: ignore[arg-type]
        elif kind == TEST:
            # the test (or a fixture) called into the application here: through a helper of its
            # own (a test client's get() in a conftest), the test's line is the outermost of the
            # test frames in a row, so that calls from different lines of the test count apart
            test = (str(shown), key, f.f_lasti)
            above = f.f_back  # the common case, told without a call: the test's caller is pytest's
            if above is not None and above.f_code.co_filename not in library:
                chain = _test_chain(f, test)
            break
        f = f.f_back
    else:
        if positions and threading.get_ident() != _MAIN_THREAD:
            # sent from another thread (a test client running the application in a worker
            # thread): the test's line is where the main thread is, waiting for it
            test, chain = _test_line_of_main_thread()
        if not positions and greenlets and "greenlet" in sys.modules:
            # SQLAlchemy's asyncio layer runs the driver in a child greenlet: the user's
            # coroutine frames are on the stack of the greenlet that switched to it
            parent = sys.modules["greenlet"].getcurrent().parent
            while parent is not None:
                if parent.gr_frame is not None:
                    found = origin_of(parent.gr_frame, flush, greenlets=False)
                    if found.positions or found.test is not None:
                        return found
                parent = parent.parent
    if len(positions) > MAX_CHAIN:  # keep the innermost (the sender) and the outermost (the loop)
        positions = positions[: MAX_CHAIN // 2] + positions[-(MAX_CHAIN // 2):]
    return Origin(positions, function, not positions and f is not None, flush, test, chain)


def _test_chain(frame: FrameType, innermost: Position) -> tuple[Position, ...] | None:
    """The positions of ``frame`` (test code, at ``innermost``) and of the test code that called
    it, up to the first caller that is not test code; None when the caller is not test code."""
    above = frame.f_back
    if not _called_by_test_code(above):
        return None
    chain = [innermost]
    while above is not None and _called_by_test_code(above):
        key = id(above.f_code)
        chain.append((str(_codes[key][0]), key, above.f_lasti))
        above = above.f_back
    return tuple(chain)


_NO_ORIGIN = Origin([], None, test_own=False)
_MAIN_THREAD = threading.main_thread().ident


def _test_line_of_main_thread() -> tuple[Position | None, tuple[Position, ...] | None]:
    """The position of the test's line the main thread is at, and its test chain (see
    :func:`origin_of`); ``(None, None)`` when it is in no test code."""
    frame = sys._current_frames().get(_MAIN_THREAD)  # type: ignore[arg-type]
    while frame is not None:
        code = frame.f_code
        if code.co_filename not in _library_files:
            entry = _codes.get(id(code)) or _learn(code, frame)
            if entry[1] == TEST:
                key = id(code)
                test = (str(entry[0]), key, frame.f_lasti)
                return test, _test_chain(frame, test)  # type: ignore[arg-type]
        frame = frame.f_back
    return None, None
