"""Capture statements sent through psycopg 3, sync and async, as the server runs them.

Wrapped public methods: ``execute``, ``executemany``, ``stream`` and ``copy`` of ``Cursor``
and ``AsyncCursor`` (client and raw cursors inherit them), ``execute`` of ``ServerCursor``
and ``AsyncServerCursor``; ``Connection.execute`` goes through the cursor's. Each wrapper
hands its arguments to the driver untouched, so it accepts and rejects exactly what the
driver does, at the same moment, and ``inspect.signature`` gives the driver's. So raw
psycopg, Django and SQLAlchemy over psycopg are all seen here, once.

What is recorded is what the server ran, when its answer arrived (``pg_stat_statements``
counts a statement once it completes, and not at all if it fails). Three private methods
of psycopg's base classes are hooked to see the answers (found along the class hierarchy;
psycopg 3.1 to 3.3 have them, and without them psycopg is not hooked at all):
``_check_results`` (the results of each execution), ``BasePipeline._process_results``
(each result arriving in pipeline mode) and ``_stream_fetchone_gen`` (the end of a stream).

- ``execute``: recorded when it returns. A string of several statements counts one
  statement per statement the server ran: all of them, or those before the one that failed.
- ``executemany``: one statement, its executions the rows the server ran (those before a
  failing row). The rows are never copied: a generator stays a generator (and with
  ``capture_params`` only a list or tuple of rows is kept, not an iterator).
- pipeline mode: a statement is recorded when its result arrives (during a later call,
  ``sync()`` or the end of the block), timed from its call to then; one the server
  rejected, or skipped after an error, is not recorded.
- ``stream``: recorded when the server finished it: at the end of the rows, or, for a
  stream closed early, if psycopg's clean-up found it finished rather than cancelled.
  A stream never iterated sends nothing and counts nothing.
- ``copy``: one statement when the ``with`` block ends without error and the COPY completed
  (a ``COPY ... TO STDOUT`` block left before its last row, by ``break``, is not counted:
  psycopg neither finishes nor cancels it).
- server-side cursors: one statement per ``execute`` that succeeded (the ``DECLARE``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from time import perf_counter
from typing import Any

from pytest_migsafe.queries import callsite
from pytest_migsafe.queries import dispatch as capture
from pytest_migsafe.queries.callsite import call_site_of_caller, site_from
from pytest_migsafe.queries.exact import keep_signature, with_signature_of
from pytest_migsafe.tracebacks import hide_passed_through

#: pytest hides this module's wrapper frames in a traceback an error only passed through
#: (:mod:`pytest_migsafe.tracebacks`)
__tracebackhide__ = hide_passed_through

_PATCHED_FLAG = "__migsafe_original__"
_PIPELINE_STATE = "_migsafe_calls"
_MISSING: Any = object()
# libpq's ExecStatus of a statement the server completed: COMMAND_OK, TUPLES_OK
_COMPLETED = frozenset({1, 2})


def is_installed() -> bool:
    """True when the psycopg imported now has its cursor methods wrapped.

    Checked on the class itself, not a flag of this module: a test harness that drops
    and re-imports modules (pytester does) gets a fresh, unwrapped psycopg.
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return False
    return hasattr(vars(psycopg.Cursor).get("execute"), _PATCHED_FLAG)


def target_of(conn: Any) -> str:
    """``postgresql://host:port/dbname`` for a psycopg connection (cached on it)."""
    try:
        return conn._migsafe_target  # type: ignore[no-any-return]
    except AttributeError:
        pass
    try:
        info = conn.info
        target = f"postgresql://{info.host}:{info.port}/{info.dbname}"
    except Exception:  # closed or broken connection: still count the statement
        return "postgresql://?/?"
    try:
        conn._migsafe_target = target
    except AttributeError:
        pass
    return target


def _text(query: Any, cursor: Any) -> str:
    """The text of a query psycopg accepts, as an exact ``str`` (see
    :func:`~pytest_migsafe.queries.dispatch.exact_text`): a ``psycopg.sql`` composable as
    psycopg renders it for ``cursor``; none of the query's own methods is called otherwise."""
    composable = getattr(sys.modules.get("psycopg.sql"), "Composable", None)
    if composable is not None and isinstance(query, composable):
        try:
            query = query.as_string(cursor)
        except Exception:  # (rendered as a placeholder below)
            pass
    return capture.exact_text(query)


def _params_of(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> Any:
    """The parameters of a call, kept only with ``capture_params`` (never copied)."""
    if not capture.settings.capture_params:
        return None
    return args[1] if len(args) > 1 else kwargs.get(name)


def _rows_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The rows of an ``executemany``, kept only with ``capture_params`` and only when they
    are a list or tuple: an iterator is the driver's to consume, and is never copied."""
    rows = _params_of(args, kwargs, "params_seq")
    return rows if isinstance(rows, (list, tuple)) else None


def _ran(results: list[Any]) -> int:
    """Statements the server completed among one execution's results: those before the first error."""
    ran = 0
    for result in results:
        if result.status not in _COMPLETED:
            break
        ran += 1
    return ran


# -- watching the results of calls in progress ----------------------------------------
class _Results:
    """A string of several statements executed outside a pipeline: its results."""

    __slots__ = ("results",)

    def __init__(self) -> None:
        self.results: list[Any] | None = None

    def saw(self, results: list[Any]) -> None:
        self.results = results


class _Rows:
    """An ``executemany`` outside the user's pipeline: the executions the server completed."""

    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows = 0

    def saw(self, results: list[Any]) -> None:
        if results and results[0].status in _COMPLETED:
            self.rows += 1


class _Stream:
    """A stream being iterated: whether the server finished it, and when."""

    __slots__ = ("done", "end")

    def __init__(self) -> None:
        self.done: bool | None = None
        self.end = 0.0

    def finish(self, completed: bool) -> None:
        if self.done is None:  # the first outcome is the server's; later calls only drain
            self.done = completed
            self.end = perf_counter()


# cursor id -> the call in progress on it whose results the hooks report
_checking: dict[int, _Results | _Rows] = {}
_streaming: dict[int, _Stream] = {}


def _hook_check_results(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _check_results(self: Any, results: list[Any]) -> Any:
        if _checking:
            watch = _checking.get(id(self))
            if watch is not None:
                watch.saw(results)
        return original(self, results)

    setattr(_check_results, _PATCHED_FLAG, original)
    return _check_results


_FETCHONE_BODY = """\
    if _streaming:
        watch = _streaming.get(id(self))
        if watch is not None:
            return (yield from _observe_fetch({call}, watch))
    return (yield from {call})
"""


def _hook_stream_fetchone(original: Callable[..., Any]) -> Callable[..., Any]:
    # a generator function like the driver's (see _wrap_stream_sync)
    fetch = with_signature_of(original, _FETCHONE_BODY, {"_streaming": _streaming, "_observe_fetch": _observe_fetch})
    setattr(fetch, _PATCHED_FLAG, original)
    return fetch


def _observe_fetch(gen: Generator[Any, Any, Any], watch: _Stream) -> Generator[Any, Any, Any]:
    # psycopg returns None once the statement's final result arrived, raises on an error
    try:
        result = yield from gen
    except BaseException:
        watch.finish(False)
        raise
    if result is None:
        watch.finish(True)
    return result


# -- pipeline mode -------------------------------------------------------------------
class _PipelineCall:
    """A call made in pipeline mode: the result-queue positions that may be its, what ran."""

    __slots__ = ("cursor_id", "end", "many", "origin", "params", "ran", "site", "sql", "start", "t0",
                 "t_last", "target")

    def __init__(self, cursor: Any, sql: str, site: str, params: Any, many: bool) -> None:
        self.cursor_id = id(cursor)
        self.sql = sql
        self.site = site
        # the N+1 rule's origin of where it was sent (call_site just found it): its results
        # arrive later, wherever the pipeline syncs
        self.origin = callsite.origin_for(site, None) if callsite.last_site() is site else None
        self.params = params
        self.many = many
        self.target = target_of(cursor._conn)
        self.start = 0
        self.end: int | None = None  # known when the call returned
        self.ran = 0
        self.t0 = self.t_last = perf_counter()

    def record(self) -> None:
        if not self.ran:
            return
        if self.origin is not None:  # the counters read the statement's origin from here
            callsite.remember(self.site, self.origin)
        seconds = self.t_last - self.t0
        if self.many:
            capture.record_statement(self.sql, seconds, self.target, self.ran, self.params, self.site)
        else:
            capture.record_entry(self.sql, capture.entry_of(self.sql), seconds, self.target, 1,
                                 self.params, self.site, self.ran)


class _PipelineState:
    """Calls of one pipeline whose results are pending, and how many results were processed.

    psycopg queues one entry per statement sent and processes them in order, so the
    entries a call queued are those between the queue's length when it started and when
    it returned (nothing else queues meanwhile: the connection lock is held), counted
    from the first entry processed since the oldest pending call started.
    """

    __slots__ = ("calls", "processed")

    def __init__(self) -> None:
        self.processed = 0
        self.calls: deque[_PipelineCall] = deque()

    def arrived(self, position: int, cursor_id: int, results: list[Any]) -> None:
        now = perf_counter()
        for call in self.calls:
            if call.start > position:
                break
            if call.cursor_id == cursor_id and (call.end is None or position < call.end):
                if results and results[0].status in _COMPLETED:
                    call.ran += 1
                call.t_last = now
                break

    def flush(self) -> None:
        calls = self.calls
        while calls and calls[0].end is not None and calls[0].end <= self.processed:
            calls.popleft().record()


def _pipeline_begin(pipeline: Any, call: _PipelineCall) -> None:
    state = pipeline.__dict__.get(_PIPELINE_STATE)
    if state is None:
        state = pipeline.__dict__[_PIPELINE_STATE] = _PipelineState()
    if not state.calls:
        state.processed = 0  # positions count from here
    call.start = state.processed + len(pipeline.result_queue)
    state.calls.append(call)


def _pipeline_end(pipeline: Any, call: _PipelineCall) -> None:
    state = pipeline.__dict__[_PIPELINE_STATE]
    call.end = state.processed + len(pipeline.result_queue)
    state.flush()


def _hook_process_results(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def _process_results(self: Any, queued: Any, results: list[Any]) -> Any:
        state = self.__dict__.get(_PIPELINE_STATE)
        if state is None or not state.calls:
            return original(self, queued, results)
        position = state.processed
        state.processed = position + 1
        try:
            return original(self, queued, results)
        finally:
            if queued is not None:
                state.arrived(position, id(queued[0]), results)
            state.flush()

    setattr(_process_results, _PATCHED_FLAG, original)
    return _process_results


# -- the public methods, sync ----------------------------------------------------------
# Cursor.execute's parameters (psycopg 3.1 to 3.3). A wrapper that takes them as they are
# packs nothing into *args / **kwargs on the hot path, and its own signature is the
# driver's even to inspect.signature(..., follow_wrapped=False); a psycopg whose execute
# takes other parameters gets the wrapper that passes any arguments on.
_P = inspect.Parameter
_EXECUTE_PARAMETERS = (("self", _P.POSITIONAL_OR_KEYWORD, _P.empty), ("query", _P.POSITIONAL_OR_KEYWORD, _P.empty),
                       ("params", _P.POSITIONAL_OR_KEYWORD, None), ("prepare", _P.KEYWORD_ONLY, None),
                       ("binary", _P.KEYWORD_ONLY, None))


def _takes(original: Callable[..., Any], parameters: tuple[tuple[str, Any, Any], ...]) -> bool:
    """True when ``original``'s parameters are ``parameters`` (name, kind, default), exactly."""
    try:
        found = inspect.signature(original).parameters.values()
    except (TypeError, ValueError):
        return False
    return tuple((p.name, p.kind, p.default) for p in found) == parameters


def _execute_in_pipeline(pipeline: Any, cursor: Any, sql: str, site: str, params: Any,
                         run: Callable[[], Any]) -> Any:
    """``run()`` (the driver's execute) in pipeline mode: recorded when its results arrive."""
    call = _PipelineCall(cursor, sql, site, params, False)  # (kept by the counters only with capture_params)
    _pipeline_begin(pipeline, call)
    try:
        return run()
    finally:
        _pipeline_end(pipeline, call)


def _execute_several(cursor: Any, sql: str, entry: Any, site: str, params: Any, run: Callable[[], Any]) -> Any:
    """``run()`` of a text of several statements: those the server ran are recorded."""
    watch = _Results()
    key = id(cursor)
    _checking[key] = watch
    t0 = perf_counter()
    try:
        return run()
    finally:
        seconds = perf_counter() - t0
        _checking.pop(key, None)
        ran = _ran(watch.results) if watch.results is not None else 0
        if ran:
            capture.record_entry(sql, entry, seconds, target_of(cursor._conn), 1, params, site, ran)


def _wrap_execute_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    if not _takes(original, _EXECUTE_PARAMETERS):
        return _wrap_execute_any_sync(original)
    shapes = capture._shapes  # the shape cache (never rebound: emptied in place)
    record_entry = capture.record_entry

    @functools.wraps(original)
    def execute(self: Any, query: Any, params: Any = None, *, prepare: Any = None, binary: Any = None) -> Any:
        if not capture._active:
            return original(self, query, params, prepare=prepare, binary=binary)
        # the hot path, inline: every statement of psycopg (and of SQLAlchemy on psycopg) comes here
        # (no lambda in this function: one would make its arguments cells, five allocations a call)
        sql = query if type(query) is str else _text(query, self)
        conn = self._conn
        pipeline = conn._pipeline
        if pipeline is not None:
            return _execute_in_pipeline(pipeline, self, sql, site_from(sys._getframe(1)), params,
                                        functools.partial(original, self, query, params, prepare=prepare, binary=binary))
        entry = shapes.get(sql) or capture.entry_of(sql)
        if entry[1] and not capture.control_wanted:  # a BEGIN, SAVEPOINT, COMMIT no counter receives:
            return original(self, query, params, prepare=prepare, binary=binary)  # nothing to time or record
        if entry[2] is not None:
            return _execute_several(self, sql, entry, site_from(sys._getframe(1)), params,
                                    functools.partial(original, self, query, params, prepare=prepare, binary=binary))
        site = site_from(sys._getframe(1))  # call_site_of_caller(1), one call less
        t0 = perf_counter()  # one statement: it ran if the call returned
        result = original(self, query, params, prepare=prepare, binary=binary)
        seconds = perf_counter() - t0
        try:
            target = conn._migsafe_target
        except AttributeError:
            target = target_of(conn)
        # the parameters as given: the counters keep them only with capture_params (the N+1
        # rule reads a page-shaped read's paging values from them, see dispatch.statement_params)
        record_entry(sql, entry, seconds, target, 1, params, site)
        return result

    setattr(execute, _PATCHED_FLAG, original)
    return execute


def _wrap_execute_any_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    """The wrapper of an execute whose parameters are not psycopg 3.1-3.3's: any arguments."""
    @functools.wraps(original)
    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not capture._active:
            return original(self, *args, **kwargs)
        query = args[0] if args else kwargs.get("query", _MISSING)
        if query is _MISSING:
            return original(self, *args, **kwargs)  # the driver names the missing argument
        sql = query if type(query) is str else _text(query, self)
        params = args[1] if len(args) > 1 else kwargs.get("params")
        pipeline = self._conn._pipeline
        if pipeline is not None:
            return _execute_in_pipeline(pipeline, self, sql, site_from(sys._getframe(1)), params,
                                        functools.partial(original, self, *args, **kwargs))
        entry = capture._shapes.get(sql) or capture.entry_of(sql)
        if entry[1] and not capture.control_wanted:  # transaction control no counter receives
            return original(self, *args, **kwargs)
        if entry[2] is not None:
            return _execute_several(self, sql, entry, site_from(sys._getframe(1)), params,
                                    functools.partial(original, self, *args, **kwargs))
        site = site_from(sys._getframe(1))
        t0 = perf_counter()
        result = original(self, *args, **kwargs)
        capture.record_entry(sql, entry, perf_counter() - t0, target_of(self._conn), 1, params, site)
        return result

    setattr(execute, _PATCHED_FLAG, original)
    return execute


def _wrap_executemany_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def executemany(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not capture._active:
            return original(self, *args, **kwargs)
        query = args[0] if args else kwargs.get("query", _MISSING)
        if query is _MISSING:
            return original(self, *args, **kwargs)
        sql = _text(query, self)
        site = call_site_of_caller(1)
        params = _rows_of(args, kwargs)
        pipeline = self._conn._pipeline
        if pipeline is not None:
            call = _PipelineCall(self, sql, site, params, True)
            _pipeline_begin(pipeline, call)
            try:
                return original(self, *args, **kwargs)
            finally:
                _pipeline_end(pipeline, call)
        watch = _Rows()
        key = id(self)
        _checking[key] = watch
        t0 = perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            seconds = perf_counter() - t0
            _checking.pop(key, None)
            if watch.rows:
                capture.record_statement(sql, seconds, target_of(self._conn), watch.rows, params, site)

    setattr(executemany, _PATCHED_FLAG, original)
    return executemany


def _wrap_server_execute_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not capture._active:
            return original(self, *args, **kwargs)
        query = args[0] if args else kwargs.get("query", _MISSING)
        if query is _MISSING:
            return original(self, *args, **kwargs)
        sql = _text(query, self)
        site = call_site_of_caller(1)
        t0 = perf_counter()
        result = original(self, *args, **kwargs)
        capture.record_statement(sql, perf_counter() - t0, target_of(self._conn), 1,
                                 _params_of(args, kwargs, "params"), site)
        return result

    setattr(execute, _PATCHED_FLAG, original)
    return execute


_STREAM_BODY = """\
    rows = {call}
    return (yield from _observed_rows(rows, self, query, params))
"""


def _wrap_stream_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    # a generator function like the driver's, with its exact parameters: the arguments are
    # bound (and bad ones rejected) when stream() is called, as without the wrapper
    stream = with_signature_of(original, _STREAM_BODY, {"_observed_rows": _observed_rows})
    setattr(stream, _PATCHED_FLAG, original)
    return stream


def _observed_rows(rows: Iterator[Any], cursor: Any, query: Any, params: Any) -> Iterator[Any]:
    """``rows`` (psycopg's stream, not started yet) as the wrapper yields them: observed while
    a counter is active. Called at the first ``next()``, from the wrapper's generator: the
    call site is the frame that asked for the first row."""
    if not capture._active:
        return rows
    kept = params if capture.settings.capture_params else None
    return _observe_stream(rows, cursor, _text(query, cursor), kept, site_from(sys._getframe(1)))


def _observe_stream(rows: Iterator[Any], cursor: Any, sql: str, params: Any,
                    site: str) -> Generator[Any, Any, Any]:
    watch = _Stream()  # from the first next(): when psycopg sends the statement
    key = id(cursor)
    _streaming[key] = watch
    t0 = perf_counter()
    try:
        return (yield from rows)
    finally:  # also when closed early: yield from closed psycopg's generator first
        if _streaming.get(key) is watch:
            del _streaming[key]
        if watch.done:
            capture.record_statement(sql, watch.end - t0, target_of(cursor._conn), 1, params, site)


def _copy_completed(copy: Any) -> bool:
    """The COPY of psycopg's ``Copy`` object ``copy`` completed, its block having ended without
    an error: a ``COPY ... FROM STDIN`` is finished by the block's end; a ``COPY ... TO STDOUT``
    only if its rows were read to the end (a block left early, by ``break``, neither finishes
    nor cancels it, and the server counts it only if it ever completes)."""
    return bool(getattr(copy, "_finished", True))


class _CopyContext:
    """psycopg's ``copy()`` context manager, recording the COPY when the block ends cleanly
    and the COPY completed (:func:`_copy_completed`)."""

    __slots__ = ("_cm", "_copy", "_cursor", "_params", "_site", "_sql", "_t0")

    def __init__(self, cm: Any, cursor: Any, sql: str, params: Any, site: str) -> None:
        self._cm, self._cursor, self._sql, self._params, self._site = cm, cursor, sql, params, site
        self._t0 = 0.0
        self._copy: Any = None

    def __enter__(self) -> Any:
        self._t0 = perf_counter()
        self._copy = self._cm.__enter__()
        return self._copy

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        suppress = self._cm.__exit__(exc_type, exc, tb)
        if exc_type is None and _copy_completed(self._copy):  # completed: the server counted it
            capture.record_statement(self._sql, perf_counter() - self._t0, target_of(self._cursor._conn),
                                     1, self._params, self._site)
        return suppress


_WITH_BODY = """\
    with {call} as value:
        yield value
"""
_ASYNC_WITH_BODY = """\
    async with {call} as value:
        yield value
"""


def _made_like(original: Callable[..., Any], copy: Callable[..., Any]) -> Callable[..., Any]:
    """``copy`` (a wrapper returning a context manager) made as psycopg makes ``copy()``: with
    ``contextlib.contextmanager`` (``asynccontextmanager``) over a generator with the parameters
    of psycopg's own generator, so that ``cursor.copy(...)`` returns the context manager type
    psycopg's does, and the method's own parameters are its; ``copy`` as it is for a psycopg
    whose ``copy`` is made otherwise."""
    inner = getattr(original, "__wrapped__", None)
    make: Callable[[Any], Callable[..., Any]]
    if inspect.isgeneratorfunction(inner):
        body, kind, make = _WITH_BODY, "def", contextlib.contextmanager
    elif inspect.isasyncgenfunction(inner):
        body, kind, make = _ASYNC_WITH_BODY, "async def", contextlib.asynccontextmanager
    else:
        return copy
    try:
        generator = with_signature_of(inner, body, {}, kind=kind, target=copy)
    except ValueError:
        return copy
    made = make(generator)
    setattr(made, _PATCHED_FLAG, original)
    return made


def _wrap_copy_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        cm = original(self, *args, **kwargs)
        if not capture._active:
            return cm
        statement = args[0] if args else kwargs.get("statement", _MISSING)
        if statement is _MISSING:
            return cm
        return _CopyContext(cm, self, _text(statement, self), _params_of(args, kwargs, "params"),
                            call_site_of_caller(1))

    setattr(copy, _PATCHED_FLAG, original)
    return _made_like(original, copy)


# -- the public methods, async ---------------------------------------------------------
def _wrap_execute_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not capture._active:
            return await original(self, *args, **kwargs)
        query = args[0] if args else kwargs.get("query", _MISSING)
        if query is _MISSING:
            return await original(self, *args, **kwargs)
        sql = _text(query, self)
        pipeline = self._conn._pipeline
        if pipeline is not None:
            call = _PipelineCall(self, sql, call_site_of_caller(1), _params_of(args, kwargs, "params"), False)
            _pipeline_begin(pipeline, call)
            try:
                return await original(self, *args, **kwargs)
            finally:
                _pipeline_end(pipeline, call)
        entry = capture._shapes.get(sql) or capture.entry_of(sql)
        if entry[1] and not capture.control_wanted:  # transaction control no counter receives
            return await original(self, *args, **kwargs)
        site = call_site_of_caller(1)  # (before the first await: the caller's frames are on the stack now)
        if entry[2] is None:
            t0 = perf_counter()
            result = await original(self, *args, **kwargs)
            seconds = perf_counter() - t0
            params = args[1] if len(args) > 1 else kwargs.get("params")  # (kept only with capture_params)
            capture.record_entry(sql, entry, seconds, target_of(self._conn), 1, params, site)
            return result
        watch = _Results()
        key = id(self)
        _checking[key] = watch
        t0 = perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            seconds = perf_counter() - t0
            _checking.pop(key, None)
            ran = _ran(watch.results) if watch.results is not None else 0
            if ran:
                capture.record_entry(sql, entry, seconds, target_of(self._conn), 1,
                                     _params_of(args, kwargs, "params"), site, ran)

    exact = keep_signature(original, execute)
    setattr(exact, _PATCHED_FLAG, original)
    return exact


def _wrap_executemany_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def executemany(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not capture._active:
            return await original(self, *args, **kwargs)
        query = args[0] if args else kwargs.get("query", _MISSING)
        if query is _MISSING:
            return await original(self, *args, **kwargs)
        sql = _text(query, self)
        site = call_site_of_caller(1)
        params = _rows_of(args, kwargs)
        pipeline = self._conn._pipeline
        if pipeline is not None:
            call = _PipelineCall(self, sql, site, params, True)
            _pipeline_begin(pipeline, call)
            try:
                return await original(self, *args, **kwargs)
            finally:
                _pipeline_end(pipeline, call)
        watch = _Rows()
        key = id(self)
        _checking[key] = watch
        t0 = perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            seconds = perf_counter() - t0
            _checking.pop(key, None)
            if watch.rows:
                capture.record_statement(sql, seconds, target_of(self._conn), watch.rows, params, site)

    exact = keep_signature(original, executemany)
    setattr(exact, _PATCHED_FLAG, original)
    return exact


def _wrap_server_execute_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not capture._active:
            return await original(self, *args, **kwargs)
        query = args[0] if args else kwargs.get("query", _MISSING)
        if query is _MISSING:
            return await original(self, *args, **kwargs)
        sql = _text(query, self)
        site = call_site_of_caller(1)
        t0 = perf_counter()
        result = await original(self, *args, **kwargs)
        capture.record_statement(sql, perf_counter() - t0, target_of(self._conn), 1,
                                 _params_of(args, kwargs, "params"), site)
        return result

    exact = keep_signature(original, execute)
    setattr(exact, _PATCHED_FLAG, original)
    return exact


_ASYNC_STREAM_BODY = """\
    rows = _observed_rows_async({call}, self, query, params)
    try:
        async for row in rows:
            yield row
    finally:
        await rows.aclose()
"""


def _wrap_stream_async(original: Callable[..., Any]) -> Callable[..., Any]:
    # an async generator function like the driver's, with its exact parameters (see the sync one)
    stream = with_signature_of(original, _ASYNC_STREAM_BODY, {"_observed_rows_async": _observed_rows_async},
                               kind="async def")
    setattr(stream, _PATCHED_FLAG, original)
    return stream


def _observed_rows_async(rows: Any, cursor: Any, query: Any, params: Any) -> Any:
    """:func:`_observed_rows` of psycopg's async stream."""
    if not capture._active:
        return rows
    kept = params if capture.settings.capture_params else None
    return _observe_stream_async(rows, cursor, _text(query, cursor), kept, site_from(sys._getframe(1)))


async def _observe_stream_async(rows: Any, cursor: Any, sql: str, params: Any,
                                site: str) -> AsyncIterator[Any]:
    watch = _Stream()
    key = id(cursor)
    _streaming[key] = watch
    t0 = perf_counter()
    try:
        async for row in rows:
            yield row
    finally:
        try:
            await rows.aclose()  # psycopg's clean-up now, not when the generator is collected
        finally:
            if _streaming.get(key) is watch:
                del _streaming[key]
            if watch.done:
                capture.record_statement(sql, watch.end - t0, target_of(cursor._conn), 1, params, site)


class _AsyncCopyContext:
    """psycopg's async ``copy()`` context manager, recording the COPY when the block ends
    cleanly and the COPY completed (:func:`_copy_completed`)."""

    __slots__ = ("_cm", "_copy", "_cursor", "_params", "_site", "_sql", "_t0")

    def __init__(self, cm: Any, cursor: Any, sql: str, params: Any, site: str) -> None:
        self._cm, self._cursor, self._sql, self._params, self._site = cm, cursor, sql, params, site
        self._t0 = 0.0
        self._copy: Any = None

    async def __aenter__(self) -> Any:
        self._t0 = perf_counter()
        self._copy = await self._cm.__aenter__()
        return self._copy

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        suppress = await self._cm.__aexit__(exc_type, exc, tb)
        if exc_type is None and _copy_completed(self._copy):
            capture.record_statement(self._sql, perf_counter() - self._t0, target_of(self._cursor._conn),
                                     1, self._params, self._site)
        return suppress


def _wrap_copy_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        cm = original(self, *args, **kwargs)
        if not capture._active:
            return cm
        statement = args[0] if args else kwargs.get("statement", _MISSING)
        if statement is _MISSING:
            return cm
        return _AsyncCopyContext(cm, self, _text(statement, self), _params_of(args, kwargs, "params"),
                                 call_site_of_caller(1))

    setattr(copy, _PATCHED_FLAG, original)
    return _made_like(original, copy)


# -- installing -----------------------------------------------------------------------
def _defining(cls: type, name: str) -> type | None:
    """The class along ``cls``'s MRO that defines ``name``."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return klass
    return None


def _targets(psycopg: Any) -> list[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] | None:
    """Every (class, method, wrapper factory) to install; None if a private hook is missing."""
    check = _defining(psycopg.Cursor, "_check_results")
    fetch = _defining(psycopg.Cursor, "_stream_fetchone_gen")
    pipeline = _defining(psycopg.Pipeline, "_process_results")
    if check is None or fetch is None or pipeline is None or not pipeline.__dictoffset__:
        return None
    targets: list[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]]] = [
        (check, "_check_results", _hook_check_results),
        (fetch, "_stream_fetchone_gen", _hook_stream_fetchone),
        (pipeline, "_process_results", _hook_process_results),
        (psycopg.Cursor, "execute", _wrap_execute_sync),
        (psycopg.Cursor, "executemany", _wrap_executemany_sync),
        (psycopg.Cursor, "stream", _wrap_stream_sync),
        (psycopg.Cursor, "copy", _wrap_copy_sync),
        (psycopg.AsyncCursor, "execute", _wrap_execute_async),
        (psycopg.AsyncCursor, "executemany", _wrap_executemany_async),
        (psycopg.AsyncCursor, "stream", _wrap_stream_async),
        (psycopg.AsyncCursor, "copy", _wrap_copy_async),
        (psycopg.ServerCursor, "execute", _wrap_server_execute_sync),
        (psycopg.AsyncServerCursor, "execute", _wrap_server_execute_async),
    ]
    return [(cls, name, wrap) for cls, name, wrap in targets if name in vars(cls)]


def install(import_missing: bool = True) -> bool:
    """Wrap psycopg's cursor methods; False when psycopg is not (yet) importable or lacks a hook point.

    Without the private methods listed in the module docstring nothing is wrapped, so
    statements through SQLAlchemy over psycopg are counted by its own listener instead.
    """
    if is_installed():
        return True
    if "psycopg" not in sys.modules and not import_missing:
        return False
    try:
        import psycopg
    except ImportError:
        return False
    targets = _targets(psycopg)
    if targets is None:
        return False
    # the public execute goes last: is_installed() reads it, so a partial install is retried
    for cls, name, wrap in sorted(targets, key=lambda t: t[0] is psycopg.Cursor and t[1] == "execute"):
        original = vars(cls)[name]
        if not hasattr(original, _PATCHED_FLAG):
            setattr(cls, name, keep_signature(original, wrap(original)))
    return True


def uninstall() -> None:
    """Restore psycopg's original methods (for benchmarks and tests)."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return
    classes = {psycopg.Cursor, psycopg.AsyncCursor, psycopg.ServerCursor, psycopg.AsyncServerCursor}
    for name, start in (("_check_results", psycopg.Cursor), ("_stream_fetchone_gen", psycopg.Cursor),
                        ("_process_results", psycopg.Pipeline)):
        owner = _defining(start, name)
        if owner is not None:
            classes.add(owner)
    for cls in classes:
        for name, method in list(vars(cls).items()):
            original = getattr(method, _PATCHED_FLAG, None)
            if original is not None:
                setattr(cls, name, original)
