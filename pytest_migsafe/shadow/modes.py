"""What a shadow experiment's settings may be: its modes and the seed of the order of its paths.

Apart from :mod:`~pytest_migsafe.shadow.experiment` so that reading the settings at start-up
(the pytest options) does not import the experiments themselves.
"""

from __future__ import annotations

import secrets

#: The modes of an experiment: ``"fail"`` (a mismatch fails the test) or ``"observe"``
#: (a mismatch is reported only)
MODES = ("fail", "observe")


def new_seed() -> int:
    """A fresh random seed for the order of the paths: an int in [0, 2**32), from :mod:`secrets`."""
    return secrets.randbelow(2**32)


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES` (``"fail"``, ``"observe"``), else a ``ValueError``
    naming them."""
    if mode not in MODES:
        raise ValueError(f"shadow mode expects one of {', '.join(map(repr, MODES))}, got {mode!r}")
    return mode
