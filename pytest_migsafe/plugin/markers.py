"""The query markers' signatures and their checks, run at collection time.

Each signature function is called with the marker's ``*args, **kwargs``, so Python
itself reports a missing or unknown argument (the pytest-django way); the range checks
follow. Errors are ``ValueError`` / ``TypeError`` texts the plugin turns into a usage
error naming the test and the marker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from pytest_migsafe.plugin.notices import notify
from pytest_migsafe.queries.budgets import check_budget
from pytest_migsafe.queries.counter import sql_regex

#: The markers migsafe reads. Each is also read under the name ``migsafe_<name>``
#: (``@pytest.mark.migsafe_pool(...)``): the name to use in a project that has a marker
#: of its own called ``pool`` (or any other of these).
MIGSAFE_MARKERS = ("max_queries", "no_n_plus_one", "allow_n_plus_one", "pool", "min_cache_hit_rate",
                   "no_seq_scan")
ALIAS_PREFIX = "migsafe_"
#: ``migsafe_<name>`` -> ``<name>``
ALIASES = {ALIAS_PREFIX + name: name for name in MIGSAFE_MARKERS}
_OWN_LINES = pytest.StashKey["set[str]"]()  # the ``markers`` ini lines migsafe added
_WARNED = pytest.StashKey["set[str]"]()  # the project's own markers already warned about

MARKER_HELP = {
    "max_queries": "max_queries(n, *, match=None, ignore=None, using=None): fail the test if its "
                   "call phase runs more than n SQL statements (match/ignore: regexes on the SQL; "
                   "using: a database name).",
    "no_n_plus_one": "no_n_plus_one(threshold=None): fail the test when a statement shape repeats "
                     "from one call site at least the N+1 threshold (ini migsafe_n_plus_one_threshold).",
    "allow_n_plus_one": "allow_n_plus_one(shape, max_repeats): accept a known N+1 of this shape "
                        "(exact SQL/shape text, or re.compile(...)) up to max_repeats repeats.",
}


def max_queries_signature(n: int, *, match: str | None = None, ignore: str | None = None,
                          using: str | None = None) -> dict[str, Any]:
    """max_queries(n, *, match=None, ignore=None, using=None)."""
    check_budget(n, "max_queries")
    for name, pattern in (("match", match), ("ignore", ignore)):
        if pattern is not None:
            try:
                sql_regex(pattern, name)
            except TypeError as exc:
                raise ValueError(str(exc)) from exc
            except re.error as exc:
                raise ValueError(f"{name}= expects a regular expression, got {pattern!r}: {exc}") from exc
    if using is not None and (not isinstance(using, str) or not using):
        raise ValueError(f"using= expects a database name, got {using!r}")
    return {"n": n, "match": match, "ignore": ignore, "using": using}


def no_n_plus_one_signature(threshold: int | None = None) -> int | None:
    """no_n_plus_one(threshold=None)."""
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int)
                                  or threshold < 2):
        raise ValueError(f"threshold expects a whole number >= 2, got {threshold!r}")
    return threshold


def allow_n_plus_one_signature(shape: str | re.Pattern[str], max_repeats: int) -> tuple[Any, int]:
    """allow_n_plus_one(shape, max_repeats)."""
    if not isinstance(shape, (str, re.Pattern)) or not (shape.pattern if isinstance(shape, re.Pattern) else shape):
        raise ValueError(f"shape expects SQL text or re.compile(...), got {shape!r}")
    if isinstance(shape, re.Pattern) and not isinstance(shape.pattern, str):
        raise ValueError(f"shape expects SQL text or re.compile(...) of a str pattern (the SQL is text), "
                         f"got a bytes pattern {shape.pattern!r}")
    if isinstance(max_repeats, bool) or not isinstance(max_repeats, int) or max_repeats < 1:
        raise ValueError(f"max_repeats expects a whole number >= 1, got {max_repeats!r}")
    return shape, max_repeats


SIGNATURES: dict[str, Callable[..., Any]] = {
    "max_queries": max_queries_signature,
    "no_n_plus_one": no_n_plus_one_signature,
    "allow_n_plus_one": allow_n_plus_one_signature,
}


def check_marker(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """The parsed marker, or ValueError with a message saying what is expected."""
    try:
        return SIGNATURES[name](*args, **kwargs)
    except TypeError as exc:
        text = str(exc).replace(f"{name}_signature()", name)
        raise ValueError(f"{text}; expected {MARKER_HELP[name].split(':')[0]}") from exc


def parse_threshold(text: str) -> int:
    """The N+1 threshold from the ini file: a whole number >= 2 (ValueError saying so)."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number >= 2, got {text!r}") from None
    if value < 2:
        raise ValueError(f"expected a whole number >= 2, got {text}")
    return value


def register_marker(config: pytest.Config, help_text: str) -> None:
    """Register one of migsafe's markers (``help_text``: ``"name(args): what it does"``) and its
    ``migsafe_<name>`` alias, and note both lines as migsafe's own."""
    name = marker_name(help_text)
    alias = f"{ALIAS_PREFIX}{name}: the same as @pytest.mark.{name} (for a project with a marker of its own named {name})"
    config.addinivalue_line("markers", help_text)
    config.addinivalue_line("markers", alias)
    own = config.stash.get(_OWN_LINES, None)
    if own is None:
        own = config.stash[_OWN_LINES] = set()
    own.update((help_text, alias))


def marker_name(line: str) -> str:
    """The marker's name in a ``markers`` ini line (``"pool(name): ..."`` -> ``"pool"``)."""
    return line.split(":")[0].split("(")[0].strip()


def project_registration(config: pytest.Config, name: str) -> str | None:
    """The ``markers`` line by which the project (its ini file, or another plugin) registers a
    marker ``name`` of its own, or None when only migsafe registers it."""
    own = config.stash.get(_OWN_LINES, set())
    for line in config.getini("markers"):
        if line not in own and marker_name(line) == name:
            return line
    return None


def argument_problem(exc: Exception) -> str:
    """What is wrong with a marker's arguments, from the exception its check raised: a check's
    own ``TypeError`` or ``ValueError`` text as it is; any other exception (an argument whose
    ``__repr__``, ``__eq__`` or iterator raised as migsafe read it) named by its type and text,
    the argument itself not shown (showing it is what may raise)."""
    try:
        text = str(exc)
    except Exception:  # (an exception of the user's whose __str__ raises too)
        text = ""
    if isinstance(exc, (TypeError, ValueError)):
        return text
    return f"an argument raised {type(exc).__name__}{': ' + text if text else ''} as migsafe read it"


#: On an xdist worker, the usage error's text of a test's refused marker: the test errors with
#: it at set-up (:class:`RefusedOnWorker`)
_REFUSED = pytest.StashKey[str]()


def refuse_marker(item: pytest.Item, name: str, mark: pytest.Mark, problem: str) -> None:
    """A ``name`` marker of ``item`` that migsafe's signature refuses (``problem``: what is wrong
    and what is expected): a ``pytest.UsageError`` naming the test and the marker, unless the
    project registers a marker of that name of its own (and ``mark`` is not the
    ``migsafe_<name>`` form): then the marker is the project's, left alone, with a warning
    (once per marker name) saying so and how to write migsafe's.

    On a pytest-xdist worker a usage error raised at collection is lost (the controller
    stops on an internal error of its own that names neither the test nor the marker): there
    the marker is left unchecked and its test errors at set-up with the same text
    (:class:`RefusedOnWorker`), so the run fails and says why."""
    line = project_registration(item.config, name) if mark.name == name else None
    if line is None:
        message = f"{item.nodeid}: @pytest.mark.{mark.name}: {problem}"
        if hasattr(item.config, "workerinput"):
            if _REFUSED not in item.stash:  # (the first refused marker of the test is named)
                item.stash[_REFUSED] = message
            manager = item.config.pluginmanager
            if not manager.has_plugin(RefusedOnWorker.NAME):  # (registered at the first refusal only)
                manager.register(RefusedOnWorker(), RefusedOnWorker.NAME)
            return
        raise pytest.UsageError(message)
    warned = item.config.stash.get(_WARNED, None)
    if warned is None:
        warned = item.config.stash[_WARNED] = set()
    if name in warned:
        return
    warned.add(name)
    notify(pytest.PytestWarning(
        f"migsafe: @pytest.mark.{name} on {item.nodeid} is taken for the project's own marker (registered as "
        f"{line!r}): its arguments are not migsafe's ({problem}), so migsafe leaves every such marker alone; "
        f"for migsafe's check write @pytest.mark.{ALIAS_PREFIX}{name}(...)"), str(item.path), 0)


def closest_checked(item: pytest.Item, name: str, marks: list[pytest.Mark], signature: Callable[..., Any],
                    expected: str) -> Any:
    """``signature(*mark.args, **mark.kwargs)`` of every ``name`` marker of ``item`` (``marks``,
    closest first: a class's or a module's is checked too), the closest one's value returned.
    A bad one is a ``pytest.UsageError`` naming the test and the marker, then ``expected``
    (:func:`refuse_marker`: the project's own marker of that name is left alone)."""
    value = None
    for mark in reversed(marks):
        try:
            value = signature(*mark.args, **mark.kwargs)
        except Exception as exc:
            text = argument_problem(exc).replace(f"{signature.__name__}()", name)
            refuse_marker(item, name, mark, f"{text}; expected {expected}")  # (returns for the project's own)
    return value


class RefusedOnWorker:
    """Registered on a pytest-xdist worker at its first refused marker only (no hook call per
    test elsewhere): a test whose migsafe marker was refused at collection
    (:func:`refuse_marker`) errors at set-up with the usage error's text, before its fixtures run."""

    NAME = "migsafe-refused-markers"

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Fail the set-up of a test whose marker was refused, with the refusal's text."""
        message = item.stash.get(_REFUSED, None)
        if message is not None:
            pytest.fail(f"migsafe: a marker migsafe cannot use (a usage error without pytest-xdist): {message}",
                        pytrace=False)
