"""What the plugin does for each test (statements, a pool, Redis; with and without the report)
runs no import statement and no ``round()``: both cost the interpreter's slow paths (the
import machinery's look-up, a decimal conversion) on every test of a long suite. Counted from
the second test on, in the plugin's own frames."""

from __future__ import annotations

import pytest

CONFTEST = '''
import builtins
import sys

import pytest

CALLS = {"import": 0, "round": 0}
_import, _round = builtins.__import__, builtins.round


def _ours():
    frame = sys._getframe(2)
    return frame.f_globals.get("__name__", "").startswith("pytest_migsafe")


def counting_import(*args, **kwargs):
    if _ours():
        CALLS["import"] += 1
    return _import(*args, **kwargs)


def counting_round(*args):
    if _ours():
        CALLS["round"] += 1
    return _round(*args)


def pytest_runtest_setup(item):
    if item.name == "test_second":  # the first test paid the one-time imports
        builtins.__import__, builtins.round = counting_import, counting_round


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):  # the last test's reports are in: per-test work is done
    builtins.__import__, builtins.round = _import, _round


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"HOT-PATH imports={CALLS['import']} rounds={CALLS['round']}")
'''

TESTS = '''
from sqlalchemy import create_engine, text
from sqlalchemy.pool import QueuePool

ENGINE = create_engine("sqlite://", poolclass=QueuePool)


def work():
    with ENGINE.connect() as conn:
        conn.execute(text("SELECT 1")).all()
        conn.execute(text("SELECT 2 WHERE 1 = :x"), {"x": 1}).all()


def test_first(migsafe_redis):
    work()
    migsafe_redis.get("k")


def test_second(migsafe_redis):
    work()
    migsafe_redis.set("k", "v")
    migsafe_redis.get("k")


def test_third(migsafe_redis):
    work()
    migsafe_redis.get("k")
'''


@pytest.mark.parametrize("args", [("--migsafe-report",), ()], ids=["report", "defaults"])
def test_no_import_statement_or_round_per_test(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "--migsafe-redis=fake",
                                           *args)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["HOT-PATH imports=0 rounds=0"])
