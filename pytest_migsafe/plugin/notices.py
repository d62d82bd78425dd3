"""Warnings for what the plugin notices unasked: shown, never able to fail a test.

N+1 suspects, leaked connections and mismatches of shadow experiments in observe mode
are warnings. A project that turns warnings into errors (``filterwarnings = error``,
``-W error``, ``@pytest.mark.filterwarnings("error")``) would see them fail its tests,
which only a marker, fixture, ini key or flag of migsafe may do. :func:`notify` reads
the filters in force: a warning they ignore stays ignored; one they would raise is shown
instead (pytest's warnings summary records it like any other).
"""

from __future__ import annotations

import warnings


def _action(message: str, category: type[Warning], module: str, lineno: int) -> str:
    """The action of the first filter in force that matches, as the warnings module picks it.

    Filters hold compiled patterns (``filterwarnings``) or None (``simplefilter``).
    """
    for action, text, cls, mod, line in warnings.filters:
        if ((text is None or text.match(message)) and issubclass(category, cls)
                and (mod is None or mod.match(module)) and (line == 0 or line == lineno)):
            return str(action)
    return "default"


def notify(warning: Warning, filename: str, lineno: int) -> None:
    """Issue ``warning`` at ``filename:lineno`` unless the filters ignore it; never as an error."""
    category = type(warning)
    module = filename[:-3] if filename.endswith(".py") else filename
    if _action(str(warning), category, module, lineno) == "ignore":
        return
    with warnings.catch_warnings():
        warnings.simplefilter("always", category)
        warnings.warn_explicit(warning, category, filename, lineno, module=module)
