"""The plugin's frames in the user's tracebacks: hidden where they only pass an error through.

A driver method migsafe wraps (psycopg's ``execute``, SQLAlchemy's ``do_execute``, a Redis
command, a pool checkout, Django's executors) sits between the user's call and the driver's
frames, so a failing statement's traceback showed a frame of ``pytest_migsafe`` and its
source that the same failure without the plugin does not have. A module holding such
wrappers sets ``__tracebackhide__ = hide_passed_through`` at its top: pytest reads the name in
a frame's globals and calls it with the exception, and hides the frame only when the
exception was raised below it, in the driver's code or the user's. An error raised in
migsafe's own code keeps every migsafe frame it passed (a fault of the plugin's stays
visible), as does ``--full-trace``.
"""

from __future__ import annotations

import os
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def hide_passed_through(excinfo: Any) -> bool:
    """pytest's ``__tracebackhide__`` callable: True (hide the frame) unless the exception of
    ``excinfo`` (a ``pytest.ExceptionInfo``) was raised in migsafe's own code (the innermost
    frame of its traceback is in this package, or in code migsafe generated)."""
    tb = getattr(excinfo, "tb", None)
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    return not (filename.startswith(_PACKAGE_DIR) or filename.startswith("<migsafe "))
