"""Find the first stack frame in the user's own code, cheaply.

"Library" code is anything under site-packages or dist-packages, the standard library,
and pytest_migsafe itself. The verdict is cached per file name, so after warm-up a
lookup costs one dict access per frame walked.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from types import FrameType

# the whole pytest_migsafe package (this file is in pytest_migsafe/queries/)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _library_prefixes() -> tuple[str, ...]:
    paths = {_PACKAGE_DIR}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
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
    return "<unknown>"
