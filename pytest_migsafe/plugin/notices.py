"""Warnings for what the plugin notices unasked: shown, never able to fail a test.

N+1 suspects, leaked connections and mismatches of shadow experiments in observe mode
are warnings. A project that turns warnings into errors (``filterwarnings = error``,
``-W error``, ``@pytest.mark.filterwarnings("error")``) would see them fail its tests,
which only a marker, fixture, ini key or flag of migsafe may do. :func:`notify` reads
the filters in force: a warning they ignore stays ignored; one they would raise is shown
instead (pytest's warnings summary records it like any other).

What the plugin notices about a test once its call is over (N+1 suspects, leaks, shadow
mismatches, index-check notes) goes to pytest's warnings summary directly, through the
``pytest_warning_recorded`` hook, not through the ``warnings`` module: a fixture of the
test that records warnings (``recwarn``, ``warnings.catch_warnings(record=True)``) and
asserts at its teardown that there were none would otherwise see them and fail the test.
"""

from __future__ import annotations

import sys
import warnings

import pytest


def _action(message: str, category: type[Warning], module: str, lineno: int) -> str:
    """The action of the first filter in force that matches, as the warnings module picks it.

    Filters hold compiled patterns (``filterwarnings``) or None (``simplefilter``).
    """
    for action, text, cls, mod, line in warnings.filters:
        if ((text is None or text.match(message)) and issubclass(category, cls)
                and (mod is None or mod.match(module)) and (line == 0 or line == lineno)):
            return str(action)
    return "default"


def notify(warning: Warning, filename: str, lineno: int, item: pytest.Item | None = None) -> None:
    """Issue ``warning`` at ``filename:lineno`` unless the filters ignore it; never as an error.

    ``item``: the test it is about, whose call is over: the warning goes straight to
    pytest's warnings summary under the test's id (see the module docstring), unseen by the
    test's own warning recorders. Without ``item`` (collection, or code of the test reading
    a figure) it is issued through the ``warnings`` module.
    """
    category = type(warning)
    module = filename[:-3] if filename.endswith(".py") else filename
    if _action(str(warning), category, module, lineno) == "ignore":
        return
    if item is not None:
        if not item.config.pluginmanager.has_plugin("warnings"):
            # -p no:warnings: pytest shows no warnings summary; written as Python shows a
            # warning pytest does not capture (on stderr, the test's captured output), seen by
            # no recorder, never raised
            sys.stderr.write(warnings.formatwarning(warning, category, filename, lineno))
            return
        message = warnings.WarningMessage(warning, category, filename, lineno)
        item.ihook.pytest_warning_recorded.call_historic(
            kwargs={"warning_message": message, "when": "runtest", "nodeid": item.nodeid, "location": None})
        return
    with warnings.catch_warnings():
        warnings.simplefilter("always", category)
        warnings.warn_explicit(warning, category, filename, lineno, module=module)
