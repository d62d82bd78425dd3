"""pytest wiring of checks on the command line itself (see :mod:`pytest_migsafe.plugin.options`)."""

from __future__ import annotations

import pytest

from pytest_migsafe.plugin.options import check_space_form_paths, value_options

_PARSER = pytest.StashKey[pytest.Parser]()
_parsers: list[pytest.Parser] = []  # the parser of the session being configured (addoption has no config)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Keep the parser: the other parts add their options to it after this module."""
    _parsers.append(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Refuse a ``--migsafe-OPTION PATH`` that moved pytest's rootdir, before anything runs."""
    parser = _parsers.pop() if _parsers else None
    if parser is not None:
        check_space_form_paths(config, value_options(parser))
