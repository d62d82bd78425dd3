"""The id a test is recorded under in the run report and the baseline."""

from __future__ import annotations


def recorded_id(nodeid: str) -> str:
    """``nodeid`` without the ``@group`` suffix pytest-xdist's ``--dist loadgroup`` adds.

    With pytest before 9, ``--dist loadgroup`` renames every test that has an
    ``xdist_group`` marker: ``tests/test_cache.py::test_hits`` becomes
    ``tests/test_cache.py::test_hits@redis`` (groups joined by ``_``). A baseline written
    serially would then share no id with one written by workers, and every such test would
    read as removed and new. The suffix is the part of the last ``::`` name from an ``@``
    after its parameter id (an ``@`` inside ``[...]`` belongs to the parameter id and stays).
    """
    head, sep, name = nodeid.rpartition("::")
    at = name.find("@", name.rfind("]") + 1)
    if at == -1 or not sep:  # (no "::": a file, not a test function xdist renames)
        return nodeid
    return f"{head}{sep}{name[:at]}"
