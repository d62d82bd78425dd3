"""Shadow comparisons: run the old path (control) and the new one (candidate), compare.

Modelled on GitHub's Scientist: :meth:`Shadow.run` calls both paths with the same
arguments, in a random order, returns the control's result, and keeps what each path
did (value or exception, statements, cache hits and misses, duration). Unlike
Scientist, both paths run on every call and each starts from the same database and
cache state: a savepoint is opened before each path and rolled back after it, and the
cache can be flushed before and after each path, so neither warms or dirties the state
for the other. Usable without pytest::

    lab = Shadow(session=session, seed=7)
    price = lab.run("price", old_price, new_price, order_id)
    assert lab.failure_message() is None

Timing: durations are ``time.perf_counter`` around the path call only. Percentiles use
the nearest-rank method: the p-th percentile of n samples is the ``ceil(p/100 * n)``-th
smallest, so it is always an observed sample (p99 of fewer than 100 samples is the
maximum). :meth:`Shadow.run_many` interleaves the paths input by input, alternating
which goes first, so machine noise falls on both; compare p99 between paths only. It
first runs each path once, unrecorded (``warmup=1``), so one-time costs (imports, the
query capture's first parse of a statement, compiled-statement caches) do not land on
one path's samples.

Errors: :class:`ShadowRegression` (an ``AssertionError``) from the performance checks;
``ValueError`` / ``TypeError`` for bad arguments (an empty experiment name, a path that
is not callable or is a coroutine function, a bad mode, repeat or tolerance);
:class:`~pytest_migsafe.shadow.state.ShadowIsolationError` when a path's writes cannot
be rolled back. A path's own exception is captured, never lost: :meth:`Shadow.run`
re-raises the control's after both paths ran.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pytest_migsafe.percentiles import percentile
from pytest_migsafe.report.record import ShadowFigures
from pytest_migsafe.shadow.diff import describe_error, indent, outcome_diff, shorten_repr
from pytest_migsafe.shadow.inputs import own_copy
from pytest_migsafe.shadow.modes import MODES, check_mode, new_seed  # noqa: F401 (re-exported)
from pytest_migsafe.shadow.snapshot import ResultReadOnce, read_once, taken
from pytest_migsafe.shadow.state import ShadowIsolationError, cache_meter, flusher, isolated  # noqa: F401 (re-exported)

SHOWN_RUNS = 3  # mismatched runs shown per experiment in a failure message unless verbose

Compare = Callable[[Any, Any], bool]
IgnoreRule = Callable[[Any, Any], bool]


class ShadowMismatchWarning(UserWarning):
    """An experiment in observe mode mismatched: reported as a warning, the test not failed."""


class ShadowRegression(AssertionError):
    """The candidate is slower (p99) or fails more often than the control, beyond the
    tolerance (an ``AssertionError``, so pytest shows it as a failure)."""


# -- what one path did ------------------------------------------------------------------
@dataclass
class Observation:
    """What one path did in one run.

    ``path``: ``"control"`` or ``"candidate"``; ``value`` / ``error``: its return value as
    compared (see :func:`observe`) or the ``Exception`` it raised; ``returned``: the value
    as the test gets it (the path's own, or an equivalent of a result read once);
    ``seconds``: ``time.perf_counter`` wall time of the call (and of reading a result read
    once) alone, in seconds (not the savepoint or cache flush around it); ``queries``: SQL
    statements counted by :func:`~pytest_migsafe.queries.counter.count_queries` during
    the call; ``shapes``: ``{statement shape: count}``; ``cache_hits`` /
    ``cache_misses``: keyspace hits and misses of the experiment's ``cache`` client
    during the call (see :class:`~pytest_migsafe.cache.stats.CacheStats`), None when no
    cache was measured.
    """

    path: str  # "control" or "candidate"
    value: Any = None
    error: Exception | None = None
    seconds: float = 0.0
    queries: int = 0
    shapes: dict[str, int] = field(default_factory=dict)
    cache_hits: int | None = None
    cache_misses: int | None = None
    returned: Any = None

    @property
    def outcome(self) -> Any:
        """The exception if the path raised, else its value (what ignore rules receive)."""
        return self.error if self.error is not None else self.value


def same_error(control: Exception, candidate: Exception) -> bool:
    """The default error comparison: True when both exceptions have exactly the same type
    and the same ``str()``."""
    return type(control) is type(candidate) and str(control) == str(candidate)


def same_value(control: Any, candidate: Any) -> bool:
    """The default value comparison: ``bool(control == candidate)`` (an exception from
    ``__eq__`` propagates), with a NaN equal to a NaN (``float`` or ``Decimal``, alone or at the
    same place in lists, tuples and dicts of the same type): both paths computed the same
    not-a-number, which ``==`` never calls equal."""
    return bool(control == candidate) or _same_nan(control, candidate)


def _same_nan(control: Any, candidate: Any) -> bool:
    if type(control) is not type(candidate):
        return False
    if isinstance(control, float):
        return math.isnan(control) and math.isnan(candidate)
    if isinstance(control, Decimal):
        return control.is_nan() and candidate.is_nan()
    if isinstance(control, (list, tuple)):
        return len(control) == len(candidate) and all(
            bool(a == b) or _same_nan(a, b) for a, b in zip(control, candidate))
    if isinstance(control, dict):
        return control.keys() == candidate.keys() and all(
            bool(item == candidate[key]) or _same_nan(item, candidate[key]) for key, item in control.items())
    return False


@dataclass
class Trial:
    """One run of both paths on one input, and the verdict.

    ``index``: the run's number within its experiment, from 1; ``args`` / ``kwargs``: the
    caller's input (each path got its own copy of its built-in containers:
    :mod:`~pytest_migsafe.shadow.inputs`; ``run()``'s control the caller's objects themselves,
    which it may have changed); ``call``: that input as given, shortened, for the messages;
    ``candidate_first``: True when the candidate ran first; ``result``: ``"matched"``,
    ``"mismatched"`` or ``"ignored"`` (from :func:`judge`); ``mode``: ``"fail"`` or
    ``"observe"``; ``clean``: the callable applied to values before they are shown in a diff.
    """

    name: str
    index: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    control: Observation
    candidate: Observation
    candidate_first: bool
    result: str  # "matched", "mismatched" or "ignored"
    mode: str
    clean: Callable[[Any], Any] | None = None
    call: str = ""  # the input as the paths were given it, shortened: ``1, [2, 3], key='a'``

    @property
    def fails(self) -> bool:
        """True when this run mismatched in fail mode (it fails the test)."""
        return self.result == "mismatched" and self.mode == "fail"

    def diff(self) -> str:
        """The difference between the paths, as text: a unified diff of the values (cleaned
        with ``clean``), or one line per path saying what it returned or raised (see
        :func:`~pytest_migsafe.shadow.diff.outcome_diff`)."""
        shown = self.clean or (lambda value: value)
        control = shown(self.control.value) if self.control.error is None else None
        candidate = shown(self.candidate.value) if self.candidate.error is None else None
        return outcome_diff(control, self.control.error, candidate, self.candidate.error)

    def describe(self) -> str:
        """A header naming the run and its input, the diff, then the paths' figures
        (statement counts and durations in ms), as lines of text."""
        call = self.call or _call_text(self.args, self.kwargs)
        first = "candidate" if self.candidate_first else "control"
        lines = [f"run {self.index} ({self.name}({call}), {first} ran first):", indent(self.diff())]
        c, d = self.control, self.candidate
        lines.append(f"    queries: control {c.queries}, candidate {d.queries}; "
                     f"time: control {c.seconds * 1000:.3f} ms, candidate {d.seconds * 1000:.3f} ms")
        return "\n".join(lines)


def _call_text(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return ", ".join([*(shorten_repr(a) for a in args), *(f"{k}={shorten_repr(v)}" for k, v in kwargs.items())])


def judge(control: Observation, candidate: Observation, *, compare: Compare = same_value,
          compare_errors: Compare = same_error, ignore: Sequence[IgnoreRule] = ()) -> str:
    """``"matched"``, ``"ignored"`` (an ignore rule accepted the difference) or ``"mismatched"``.

    Two values go through ``compare`` (default ``==``), two errors through
    ``compare_errors`` (default: same type and message); a value against an error never
    matches. Each ``ignore`` rule gets ``(control outcome, candidate outcome)`` (the value,
    or the exception) and returns True to accept the difference. Exceptions from
    ``compare``, ``compare_errors`` or a rule propagate.
    """
    if control.error is None and candidate.error is None:
        matched = compare(control.value, candidate.value)
    elif control.error is not None and candidate.error is not None:
        matched = compare_errors(control.error, candidate.error)
    else:
        matched = False
    if matched:
        return "matched"
    if any(rule(control.outcome, candidate.outcome) for rule in ignore):
        return "ignored"
    return "mismatched"


# -- the runs of one experiment -----------------------------------------------------------
@dataclass
class Experiment:
    """The runs of one named experiment, with figures per path.

    :meth:`Shadow.run_many` returns one for the runs of that call; :attr:`Shadow.experiments`
    holds one per name, aggregating every run under that name. ``seed`` is the
    :class:`Shadow`'s seed; ``trials`` the runs (:class:`Trial`), in order. Durations are
    in milliseconds (nearest-rank percentiles of :attr:`Observation.seconds`); error
    rates are fractions from 0 to 1. The methods taking ``path`` raise ``ValueError`` for
    anything but ``"control"`` or ``"candidate"``.
    """

    name: str
    seed: int
    trials: list[Trial] = field(default_factory=list)

    @property
    def runs(self) -> int:
        """How many times both paths ran (warm-up runs of ``run_many`` not included)."""
        return len(self.trials)

    @property
    def mismatches(self) -> int:
        """Runs whose outcomes differed and no ignore rule accepted."""
        return sum(t.result == "mismatched" for t in self.trials)

    @property
    def ignored(self) -> int:
        """Runs whose outcomes differed but an ignore rule accepted."""
        return sum(t.result == "ignored" for t in self.trials)

    @property
    def result(self) -> str:
        """``"mismatched"`` if any run mismatched, else ``"ignored"`` if any was ignored, else ``"matched"``."""
        if self.mismatches:
            return "mismatched"
        return "ignored" if self.ignored else "matched"

    def observations(self, path: str) -> list[Observation]:
        """Every :class:`Observation` of ``path`` (``"control"`` or ``"candidate"``), in run
        order; ``ValueError`` for another path name."""
        if path not in ("control", "candidate"):
            raise ValueError(f"path expects 'control' or 'candidate', got {path!r}")
        return [getattr(t, path) for t in self.trials]

    def p50_ms(self, path: str) -> float:
        """Nearest-rank median duration of ``path`` in milliseconds (0.0 with no runs)."""
        return percentile([o.seconds * 1000 for o in self.observations(path)], 50)

    def p99_ms(self, path: str) -> float:
        """Nearest-rank 99th percentile duration of ``path`` in milliseconds (the maximum
        below 100 runs; 0.0 with no runs)."""
        return percentile([o.seconds * 1000 for o in self.observations(path)], 99)

    def errors(self, path: str) -> int:
        """Runs in which ``path`` raised an exception."""
        return sum(o.error is not None for o in self.observations(path))

    def error_rate(self, path: str) -> float:
        """The share of runs in which ``path`` raised, a fraction from 0 to 1 (0.0 with no runs)."""
        return self.errors(path) / self.runs if self.runs else 0.0

    def queries(self, path: str) -> int:
        """SQL statements ``path`` ran (:func:`~pytest_migsafe.queries.counter.count_queries`
        counts), summed over the runs."""
        return sum(o.queries for o in self.observations(path))

    def cache(self, path: str) -> tuple[int, int] | None:
        """``(hits, misses)``: keyspace hits and misses of ``path`` summed over the measured runs
        (``INFO stats`` deltas on real Redis, client-side accounting on fakeredis), or None
        if the cache was not measured."""
        measured = [o for o in self.observations(path) if o.cache_hits is not None]
        if not measured:
            return None
        return sum(o.cache_hits or 0 for o in measured), sum(o.cache_misses or 0 for o in measured)

    # shorthands for the common figures
    control_p50_ms = property(lambda self: self.p50_ms("control"), doc="Control nearest-rank median duration, in ms.")
    candidate_p50_ms = property(lambda self: self.p50_ms("candidate"), doc="Candidate nearest-rank median duration, in ms.")
    control_p99_ms = property(lambda self: self.p99_ms("control"), doc="Control nearest-rank p99 duration, in ms.")
    candidate_p99_ms = property(lambda self: self.p99_ms("candidate"), doc="Candidate nearest-rank p99 duration, in ms.")
    control_error_rate = property(lambda self: self.error_rate("control"), doc="Control error rate, a fraction 0..1.")
    candidate_error_rate = property(lambda self: self.error_rate("candidate"), doc="Candidate error rate, a fraction 0..1.")

    def assert_p99_not_worse(self, tolerance: float = 0.1) -> None:
        """Raise :class:`ShadowRegression` unless candidate p99 <= control p99 * (1 + tolerance).

        ``tolerance`` is a fraction (0.1 allows the candidate's p99 to be 10% slower);
        the p99s are nearest-rank, in ms, over this experiment's runs. ``ValueError`` for a
        negative or non-numeric tolerance, or an experiment with no runs.
        """
        _check_tolerance("assert_p99_not_worse", tolerance)
        self._need_runs("assert_p99_not_worse")
        control, candidate = self.control_p99_ms, self.candidate_p99_ms
        limit = control * (1 + tolerance)
        if candidate > limit:
            raise ShadowRegression(
                f"shadow experiment {self.name!r}: candidate p99 {candidate:.3f} ms > control p99 "
                f"{control:.3f} ms + {tolerance:.0%} = {limit:.3f} ms\n"
                f"  {self.runs} runs per path, interleaved; nearest-rank p99; "
                f"p50: control {self.control_p50_ms:.3f} ms, candidate {self.candidate_p50_ms:.3f} ms; "
                f"seed {self.seed}")

    def assert_error_rate_flat(self, tolerance: float = 0.0) -> None:
        """Raise :class:`ShadowRegression` unless candidate error rate <= control error rate + tolerance.

        Rates and ``tolerance`` are fractions from 0 to 1 (0.05: five percentage points
        more). The message lists the candidate's first three errors. ``ValueError`` for a
        negative or non-numeric tolerance, or an experiment with no runs.
        """
        _check_tolerance("assert_error_rate_flat", tolerance)
        self._need_runs("assert_error_rate_flat")
        control, candidate = self.control_error_rate, self.candidate_error_rate
        if candidate > control + tolerance + 1e-12:
            raise ShadowRegression(
                f"shadow experiment {self.name!r}: candidate error rate {candidate:.2%} "
                f"({self.errors('candidate')} of {self.runs}) > control error rate {control:.2%} "
                f"({self.errors('control')} of {self.runs}) + {tolerance:.2%}\n"
                + _first_errors(self.observations("candidate")) + f"\n  seed {self.seed}")

    def _need_runs(self, what: str) -> None:
        if not self.runs:
            raise ValueError(f"{what}: experiment {self.name!r} has no runs to compare")

    def figures(self) -> ShadowFigures:
        """The JSON-able record of this experiment for the report.

        Durations are rounded to 0.001 ms; ``mode`` is ``"fail"`` if any run was in fail
        mode, else ``"observe"``; the cache fields are None when no run measured the cache.
        """
        control_cache = self.cache("control")
        candidate_cache = self.cache("candidate")
        return ShadowFigures(
            name=self.name,
            result=self.result,
            runs=self.runs,
            mismatches=self.mismatches,
            ignored=self.ignored,
            seed=self.seed,
            control_queries=self.queries("control"),
            candidate_queries=self.queries("candidate"),
            control_p99_ms=round(self.control_p99_ms, 3),
            candidate_p99_ms=round(self.candidate_p99_ms, 3),
            control_errors=self.errors("control"),
            candidate_errors=self.errors("candidate"),
            control_p50_ms=round(self.control_p50_ms, 3),
            candidate_p50_ms=round(self.candidate_p50_ms, 3),
            mode="fail" if any(t.mode == "fail" for t in self.trials) else "observe",
            control_cache_hits=control_cache[0] if control_cache else None,
            control_cache_misses=control_cache[1] if control_cache else None,
            candidate_cache_hits=candidate_cache[0] if candidate_cache else None,
            candidate_cache_misses=candidate_cache[1] if candidate_cache else None,
        )

    def describe(self, *, failing_only: bool = True, verbose: bool = False, hint: str = "") -> str:
        """``shadow experiment 'name': k of n runs mismatched (...; seed S)`` then the mismatched
        runs (only those that fail unless ``failing_only`` is False; 3 of them unless
        ``verbose``); ``hint`` follows the seed (how to reproduce the order)."""
        shown = [t for t in self.trials if (t.fails if failing_only else t.result == "mismatched")]
        seed = f"seed {self.seed}" + (f": {hint}" if hint else "")
        lines = [f"shadow experiment {self.name!r}: {self.mismatches} of {self.runs} runs mismatched"
                 f" ({self.ignored} ignored; {seed})"]
        limit = None if verbose else SHOWN_RUNS
        lines += [indent(t.describe(), "  ") for t in shown[:limit]]
        if limit is not None and len(shown) > limit:
            lines.append(f"  ... and {len(shown) - limit} more mismatched runs (use -v to see all)")
        return "\n".join(lines)


def _check_tolerance(what: str, tolerance: float) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"{what}: tolerance expects a number >= 0, got {tolerance!r}")


def _first_errors(observations: list[Observation], limit: int = 3) -> str:
    errors = [describe_error(o.error) for o in observations if o.error is not None]
    lines = [f"  candidate raised {text}" for text in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more")
    return "\n".join(lines)


# -- keeping the paths apart: see pytest_migsafe.shadow.state -------------------------------
# -- the lab ------------------------------------------------------------------------------------
_DEFAULT: Any = object()


@dataclass
class _Options:
    name: str
    compare: Compare
    compare_errors: Compare
    ignore: tuple[IgnoreRule, ...]
    clean: Callable[[Any], Any] | None
    mode: str
    session: Any
    flush: Callable[[], Any] | None
    cache: Any
    before_each: Callable[[], Any] | None
    after_each: Callable[[], Any] | None


class Shadow:
    """Runs shadow experiments and keeps them, one :class:`Experiment` per name.

    ``session`` (SQLAlchemy Session/Connection or psycopg Connection) gets a savepoint
    around each path; ``flush`` (a Redis client or a callable) empties the cache before
    and after each path; ``cache`` (a Redis client) has its hits and misses counted per
    path; ``before_each`` / ``after_each`` run around each path for any other state.
    ``seed`` (random when None) and ``label`` seed the order of the paths. ``mode``:
    ``"fail"`` or ``"observe"`` (the default of every experiment); ``hint`` is appended
    to the seed in failure messages. Each option can be overridden per call of
    :meth:`run` / :meth:`run_many`. ``ValueError`` for a bad mode, ``TypeError`` for a
    ``flush`` that is neither a Redis client nor a callable.
    """

    def __init__(self, *, seed: int | None = None, label: str = "", mode: str = "fail",
                 session: Any = None, flush: Any = None, cache: Any = None,
                 before_each: Callable[[], Any] | None = None,
                 after_each: Callable[[], Any] | None = None, hint: str = "") -> None:
        self.seed = new_seed() if seed is None else seed
        self.random = random.Random(f"{self.seed}:{label}")
        self._mode = check_mode(mode)
        self.session = session
        self.flush = flusher(flush)
        self.cache = cache
        self.before_each = before_each
        self.after_each = after_each
        self.hint = hint
        self.experiments: dict[str, Experiment] = {}

    @property
    def mode(self) -> str:
        """``"fail"`` (a mismatch fails) or ``"observe"`` (a mismatch is only reported)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        """Set the default mode; ``ValueError`` for anything but ``"fail"`` or ``"observe"``."""
        self._mode = check_mode(value)

    def run(self, name: str, control: Callable[..., Any], candidate: Callable[..., Any], /,
            *args: Any, compare: Compare | None = None, compare_errors: Compare | None = None,
            ignore: IgnoreRule | Iterable[IgnoreRule] | None = None,
            clean: Callable[[Any], Any] | None = None, mode: str | None = None,
            session: Any = _DEFAULT, flush: Any = _DEFAULT, cache: Any = _DEFAULT,
            before_each: Callable[[], Any] | None = _DEFAULT,
            after_each: Callable[[], Any] | None = _DEFAULT, **kwargs: Any) -> Any:
        """Run both paths with ``*args, **kwargs``; return the control's result (or raise its error).

        Keyword arguments named like the options here are options, not path arguments
        (wrap the path in :func:`functools.partial` to pass one of those names through).
        The order of the two paths is a seeded coin toss. Raises ``ValueError`` /
        ``TypeError`` for a bad name, path, comparison or mode (before anything runs),
        :class:`~pytest_migsafe.shadow.state.ShadowIsolationError` when a path's writes
        cannot be rolled back, and the control's own exception after both paths ran.
        A mismatch does not raise: see :meth:`failure_message`.
        """
        options = self._options(name, control, candidate, compare, compare_errors, ignore, clean,
                                mode, session, flush, cache, before_each, after_each)
        trial = self._trial(name, control, candidate, args, kwargs, options,
                            candidate_first=self.random.random() < 0.5)
        if trial.control.error is not None:
            raise trial.control.error
        return trial.control.returned

    def run_many(self, name: str, control: Callable[..., Any], candidate: Callable[..., Any],
                 inputs: Iterable[Any], /, *, repeat: int = 1, warmup: int = 1,
                 compare: Compare | None = None,
                 compare_errors: Compare | None = None,
                 ignore: IgnoreRule | Iterable[IgnoreRule] | None = None,
                 clean: Callable[[Any], Any] | None = None, mode: str | None = None,
                 session: Any = _DEFAULT, flush: Any = _DEFAULT, cache: Any = _DEFAULT,
                 before_each: Callable[[], Any] | None = _DEFAULT,
                 after_each: Callable[[], Any] | None = _DEFAULT) -> Experiment:
        """Run both paths on every input, ``repeat`` times; return this call's runs.

        Each input is a tuple of positional arguments, or a single argument (wrap a
        tuple argument as ``(value,)``). The paths alternate which goes first from one
        run to the next, starting from a seeded coin toss. Errors are counted, not raised.
        ``warmup`` runs of each path on the first input come first and are not recorded.
        Raises ``ValueError`` for ``repeat`` < 1, ``warmup`` < 0, a non-integer either, or
        empty ``inputs``, and the argument errors of :meth:`run`. The returned
        :class:`Experiment` holds ``len(inputs) * repeat`` runs; they are also added to
        :attr:`experiments` under ``name``.
        """
        options = self._options(name, control, candidate, compare, compare_errors, ignore, clean,
                                mode, session, flush, cache, before_each, after_each)
        for label, value, least in (("repeat", repeat, 1), ("warmup", warmup, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"run_many({name!r}): {label} expects a whole number >= {least}, "
                                 f"got {value!r}")
        arg_lists = [item if isinstance(item, tuple) else (item,) for item in inputs]
        if not arg_lists:
            raise ValueError(f"run_many({name!r}): inputs is empty")
        for _ in range(warmup):
            observe("control", control, own_copy(arg_lists[0]), {}, options)
            observe("candidate", candidate, own_copy(arg_lists[0]), {}, options)
        first = self.random.random() < 0.5
        result = Experiment(name, self.seed)
        for round_ in range(repeat):
            for position, args in enumerate(arg_lists):
                flip = (round_ * len(arg_lists) + position) % 2 == 1
                result.trials.append(self._trial(name, control, candidate, args, {}, options,
                                                 candidate_first=first != flip, control_copies=True))
        return result

    def _options(self, name: Any, control: Any, candidate: Any, compare: Compare | None,
                 compare_errors: Compare | None, ignore: Any, clean: Any, mode: str | None,
                 session: Any, flush: Any, cache: Any, before_each: Any, after_each: Any) -> _Options:
        if not isinstance(name, str) or not name:
            raise ValueError(f"shadow: the experiment name expects a non-empty string, got {name!r}")
        for label, fn in (("control", control), ("candidate", candidate), ("compare", compare),
                          ("compare_errors", compare_errors), ("clean", clean)):
            if fn is not None and not callable(fn):
                raise TypeError(f"shadow experiment {name!r}: {label} expects a callable, "
                                f"got {type(fn).__name__}")
            if inspect.iscoroutinefunction(fn):
                raise TypeError(f"shadow experiment {name!r}: {label} is a coroutine function; "
                                "shadow runs synchronous callables (wrap it with asyncio.run)")
        rules = () if ignore is None else (ignore,) if callable(ignore) else tuple(ignore)
        for rule in rules:
            if not callable(rule):
                raise TypeError(f"shadow experiment {name!r}: ignore expects a callable "
                                f"(control, candidate) -> bool or a list of them, got {rule!r}")
        return _Options(
            name=name,
            compare=compare or same_value,
            compare_errors=compare_errors or same_error,
            ignore=rules,
            clean=clean,
            mode=self._mode if mode is None else check_mode(mode),
            session=self.session if session is _DEFAULT else session,
            flush=self.flush if flush is _DEFAULT else flusher(flush),
            cache=self.cache if cache is _DEFAULT else cache,
            before_each=self.before_each if before_each is _DEFAULT else before_each,
            after_each=self.after_each if after_each is _DEFAULT else after_each,
        )

    def _trial(self, name: str, control: Callable[..., Any], candidate: Callable[..., Any],
               args: tuple[Any, ...], kwargs: dict[str, Any], options: _Options,
               candidate_first: bool, control_copies: bool = False) -> Trial:
        # each path its own input (shadow.inputs): the candidate's a copy, the control's the
        # caller's objects (run() returns its result, as the code in production would run), or
        # a copy too (``control_copies``: run_many, whose inputs serve several runs); the input
        # as given kept for the messages
        shown = _call_text(args, kwargs)  # (the input as given, before a path may change it)
        candidate_args, candidate_kwargs = own_copy((args, kwargs))
        control_args, control_kwargs = own_copy((args, kwargs)) if control_copies else (args, kwargs)
        if candidate_first:
            tried = observe("candidate", candidate, candidate_args, candidate_kwargs, options)
            controlled = observe("control", control, control_args, control_kwargs, options)
        else:
            controlled = observe("control", control, control_args, control_kwargs, options)
            tried = observe("candidate", candidate, candidate_args, candidate_kwargs, options)
        result = judge(controlled, tried, compare=options.compare,
                       compare_errors=options.compare_errors, ignore=options.ignore)
        experiment = self.experiments.setdefault(name, Experiment(name, self.seed))
        trial = Trial(name, experiment.runs + 1, args, kwargs, controlled, tried, candidate_first,
                      result, options.mode, options.clean, shown)
        experiment.trials.append(trial)
        return trial

    # -- reading --------------------------------------------------------------------------------
    def failing(self) -> list[Experiment]:
        """Experiments (:class:`Experiment`) with a mismatched run in fail mode, in the order
        they first ran."""
        return [e for e in self.experiments.values() if any(t.fails for t in e.trials)]

    def observed(self) -> list[Experiment]:
        """Experiments with mismatched runs in observe mode only (reported, not failed), in
        the order they first ran."""
        return [e for e in self.experiments.values()
                if e.mismatches and not any(t.fails for t in e.trials)]

    def failure_message(self, verbose: bool = False) -> str | None:
        """Every failing experiment with its mismatched runs' diffs (3 runs each unless
        ``verbose``), as text, or None when none failed."""
        failing = self.failing()
        if not failing:
            return None
        return "\n".join(e.describe(verbose=verbose, hint=self.hint) for e in failing)

    def figures(self) -> list[ShadowFigures]:
        """One :class:`~pytest_migsafe.report.record.ShadowFigures` per experiment, in the
        order they first ran."""
        return [e.figures() for e in self.experiments.values()]


def observe(path: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
            options: Any) -> Observation:
    """Run one path in its own state (savepoint, flushed cache) and measure it.

    ``path`` is ``"control"`` or ``"candidate"``; ``options`` carries ``session``,
    ``flush``, ``cache``, ``before_each`` and ``after_each`` (see :class:`Shadow`).
    Returns an :class:`Observation`; an ``Exception`` from ``fn`` (or from reading its
    result) is stored in it, not raised. A result read once (a generator or other iterator,
    a SQLAlchemy ``Result``) is read as part of the path
    (:func:`~pytest_migsafe.shadow.snapshot.read_once`). Its value is the one ``fn``
    returned with the SQLAlchemy ORM objects in it copied as they were when ``fn`` returned
    (:func:`~pytest_migsafe.shadow.snapshot.taken`), before the savepoint is rolled back.
    Errors of the state handling itself propagate
    (:class:`~pytest_migsafe.shadow.state.ShadowIsolationError`, ``TypeError`` for a bad
    session, or for a result that cannot be given back once read, naming ``path``).
    """
    from pytest_migsafe.queries.counter import count_queries

    observation = Observation(path)
    with isolated(options):
        with ExitStack() as meters:
            counter = meters.enter_context(count_queries())
            cache = meters.enter_context(cache_meter(options.cache)) if options.cache is not None else None
            start = time.perf_counter()
            returned = value = None
            try:
                returned = fn(*args, **kwargs)
            except Exception as exc:
                observation.error = exc
            else:
                try:
                    returned, value = read_once(returned)
                except ResultReadOnce as exc:
                    raise TypeError(f"shadow experiment {options.name!r}: the {path} path {exc}") from None
                except Exception as exc:  # reading it ran the path's code: its error
                    observation.error = exc
            observation.seconds = time.perf_counter() - start
            # the ORM objects it returned as they are now: the rollback below expires them (and
            # both paths get the same identity-map objects from a shared Session)
            observation.returned = returned
            observation.value = taken(value)
        observation.queries = counter.count
        observation.shapes = {s.shape: s.count for s in counter.summary()}
        if cache is not None:
            observation.cache_hits, observation.cache_misses = cache.hits, cache.misses
    return observation
