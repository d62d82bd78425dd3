"""pytest 9's native TOML configuration (``[tool.pytest]``): migsafe's ini keys take typed values.

A TOML file writes ``true``, ``5`` or ``0.9`` unquoted; a key registered as a plain string made
pytest stop the run before any test ("expects a string, got bool"). The keys whose value is a
bool, an int or a float are registered as ``kind | str`` on pytest >= 9.2
(``plugin/options.py: ini_type``), so both spellings reach migsafe's own check.
"""

from __future__ import annotations

import pytest

from pytest_migsafe.plugin.options import _TYPE_EXPRESSIONS

pytestmark = pytest.mark.skipif(not _TYPE_EXPRESSIONS, reason="pytest < 9.2 has no type expressions for ini keys")

TYPED = """
[tool.pytest]
migsafe_fail_on_leaks = {bool}
migsafe_include_transaction_control = {bool}
migsafe_shape_cache = {bool}
migsafe_postgres_tcp = {bool}
migsafe_redis_tcp = {bool}
migsafe_keep_queries = 500
migsafe_n_plus_one_threshold = {threshold}
migsafe_query_tolerance = 2
migsafe_heaviest = 3
migsafe_hit_rate_min_reads = 4
migsafe_hit_rate_target = 0.9
migsafe_hit_rate_alert = 0.6
migsafe_hit_rate_tolerance = 0.1
"""

APP = """
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")

def run(n):
    with engine.connect() as conn:
        for i in range(n):
            conn.execute(text("SELECT :i"), {"i": i})
"""

TESTS = """
import pytest
from app import run

def test_three_repeats_under_a_threshold_of_three():
    run(3)

@pytest.mark.no_n_plus_one
def test_three_repeats_fail_with_the_marker():
    run(3)
"""


@pytest.mark.parametrize("flag", ["false", "true"])
def test_unquoted_toml_values_are_read(pytester: pytest.Pytester, flag: str) -> None:
    pytester.makefile(".toml", pyproject=TYPED.format(bool=flag, threshold=3))
    pytester.makepyfile(app=APP, test_app=TESTS)
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)  # the threshold of 3 was read: 3 repeats are an N+1
    result.stdout.fnmatch_lines(["*N+1*"])


def test_quoted_toml_values_are_read_too(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject=TYPED.replace("= {bool}", '= "{bool}"').format(bool="no", threshold='"3"'))
    pytester.makepyfile(app=APP, test_app=TESTS)
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1, failed=1)


@pytest.mark.parametrize(("line", "key"), [
    ("migsafe_n_plus_one_threshold = 1", "migsafe_n_plus_one_threshold"),
    ("migsafe_hit_rate_target = 2.5", "migsafe_hit_rate_target"),
    ('migsafe_shape_cache = "maybe"', "migsafe_shape_cache"),
    ("migsafe_keep_queries = 0", "migsafe_keep_queries"),
    ('migsafe_junit_properties = "maybe"', "migsafe_junit_properties"),  # (read without --junitxml too)
])
def test_a_bad_typed_value_is_a_usage_error_naming_the_key(pytester: pytest.Pytester, line: str, key: str) -> None:
    pytester.makefile(".toml", pyproject=f"[tool.pytest]\n{line}\n")
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{key}*"])
