"""Query budgets for a block of code, usable without pytest.

``assert_max_queries(5)`` and ``assert_num_queries(3)`` are context managers that raise
:class:`QueryBudgetExceeded` (an ``AssertionError``) with the budget, the count and the
statements grouped by shape, worst first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pytest_migsafe.queries.counter import QueryCounter, count_queries


class QueryBudgetExceeded(AssertionError):
    """A block ran more (or, for an exact budget, other) statements than its budget."""


def budget_message(what: str, budget: int, counter: QueryCounter, *, exact: bool = False,
                   verbose: bool = False) -> str:
    """Budget and count first, then the statements by shape with their call sites."""
    relation = "expected exactly" if exact else "expected at most"
    noun = "query" if budget == 1 else "queries"
    head = f"{what}: {relation} {budget} {noun}, {counter.count} ran"
    details = counter.describe(limit=None if verbose else 10)
    return f"{head}\n{details}" if details else head


def check_budget(n: Any, name: str) -> int:
    """``n`` as a query budget: a whole number of at least 0, else ValueError."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"{name} expects a whole number of queries, got {n!r}")
    if n < 0:
        raise ValueError(f"{name} expects a number of queries >= 0, got {n}")
    return n


@contextmanager
def assert_max_queries(n: int, *, match: str | None = None, ignore: str | None = None,
                       using: str | None = None, engine: Any = None,
                       verbose: bool = False) -> Iterator[QueryCounter]:
    """Fail if the block runs more than ``n`` statements."""
    check_budget(n, "assert_max_queries")
    with count_queries(match=match, ignore=ignore, using=using, engine=engine) as counter:
        yield counter
    if counter.count > n:
        raise QueryBudgetExceeded(budget_message("assert_max_queries", n, counter, verbose=verbose))


@contextmanager
def assert_num_queries(n: int, *, match: str | None = None, ignore: str | None = None,
                       using: str | None = None, engine: Any = None,
                       verbose: bool = False) -> Iterator[QueryCounter]:
    """Fail unless the block runs exactly ``n`` statements."""
    check_budget(n, "assert_num_queries")
    with count_queries(match=match, ignore=ignore, using=using, engine=engine) as counter:
        yield counter
    if counter.count != n:
        raise QueryBudgetExceeded(
            budget_message("assert_num_queries", n, counter, exact=True, verbose=verbose))
