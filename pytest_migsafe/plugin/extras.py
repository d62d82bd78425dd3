"""A fixture that needs a library migsafe does not install fails with one line naming the extra."""

from __future__ import annotations

import pytest

from pytest_migsafe.versions import need


def need_for_fixture(module: str, extra: str, fixture: str) -> None:
    """Fail the test (one line, no traceback) when ``module`` is not installed, naming
    ``fixture`` and ``pip install 'pytest-migsafe[extra]'``."""
    try:
        need(module, extra, fixture)
    except ImportError as exc:
        pytest.fail(str(exc), pytrace=False)
