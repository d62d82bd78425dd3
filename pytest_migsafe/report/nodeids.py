"""The id a test is recorded under in the run report and the baseline."""

from __future__ import annotations

from collections.abc import Sequence


def without_loadgroup_suffix(nodeid: str, groups: Sequence[str]) -> str:
    """``nodeid`` without the suffix pytest-xdist's ``--dist loadgroup`` adds to a test marked
    ``xdist_group`` with the names ``groups`` (closest marker first).

    With pytest before 9, ``--dist loadgroup`` renames such a test on its worker:
    ``tests/test_cache.py::test_hits`` becomes ``tests/test_cache.py::test_hits@redis``, so a
    baseline written by workers would share no id with one written serially. The suffix is
    ``@`` and the group names, sorted and joined by ``_`` (pytest-xdist 3.6 and later), or the
    closest name alone (earlier); ``nodeid`` is returned unchanged when it ends in neither
    (an ``@`` that is part of the test's own name or parameter id stays).
    """
    if not groups:
        return nodeid
    for suffix in ("@" + "_".join(sorted(set(groups))), "@" + groups[0]):
        if nodeid.endswith(suffix) and len(nodeid) > len(suffix):
            return nodeid[: -len(suffix)]
    return nodeid
