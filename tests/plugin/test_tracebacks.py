"""The plugin's hook wrappers stay out of the user's tracebacks: an error in a fixture's set-up
shows the user's frames, as without the plugin, never a frame of ``pytest_migsafe``.

(A test item that is not a Python function keeps every frame of its call in its traceback,
pluggy's and every plugin's hook wrappers included: pytest filters none for such items, so
``__tracebackhide__`` cannot take the plugin's out there.)"""

from __future__ import annotations

import pytest

# the fixture in a conftest (in the test's own module, pytest's cut at the module hides pluggy's
# frames and the plugin's alike)
FAILING_FIXTURE = """
import pytest

@pytest.fixture
def broken():
    raise ValueError("the fixture's own error")
"""


@pytest.mark.parametrize("style", ["long", "short", "auto"])
def test_a_fixture_error_shows_no_frame_of_the_plugin(pytester: pytest.Pytester, style: str) -> None:
    pytester.makeconftest(FAILING_FIXTURE)
    pytester.makepyfile(test_fixture="def test_uses_it(broken):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", f"--tb={style}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the fixture's own error*"])
    assert "pytest_migsafe" not in result.stdout.str()



DRIVER_ERRORS = """
import os

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

URL = os.environ["MIGSAFE_POSTGRES_URL"]
DSN = os.environ["MIGSAFE_TEST_POSTGRES_DSN"]


def test_psycopg():
    with psycopg.connect(DSN) as conn:
        conn.execute("SELEC 1")


def test_psycopg_cursor_executemany():
    with psycopg.connect(DSN) as conn:
        conn.cursor().executemany("SELEC %s", [(1,), (2,)])


def test_sqlalchemy():
    with create_engine(URL).connect() as conn:
        conn.execute(text("SELEC 1"))


def test_orm_session():
    with Session(create_engine(URL)) as session:
        session.execute(text("SELEC 1"))


def test_redis():
    redis.Redis.from_url(os.environ["MIGSAFE_REDIS_URL"]).execute_command("NOSUCHCOMMAND")


def test_pool_checkout():
    with create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none").connect():
        pass
"""


@pytest.mark.parametrize("style", ["long", "short"])
def test_a_drivers_error_shows_no_frame_of_the_plugins_wrappers(pytester: pytest.Pytester, style: str) -> None:
    """A statement, command or checkout that fails in the driver passed through migsafe's
    wrapper (psycopg's execute and executemany, SQLAlchemy's do_execute, the ORM's, Redis's
    command, the pool's checkout): its frame and source showed in the traceback; hidden now,
    as pytest hides its own, the traceback the same as without the plugin."""
    pytester.makepyfile(test_drivers=DRIVER_ERRORS)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", f"--tb={style}")
    result.assert_outcomes(failed=6)
    output = result.stdout.str()
    assert output.count("SyntaxError") >= 4 and "ResponseError" in output and "OperationalError" in output
    assert "pytest_migsafe" not in output and "<migsafe" not in output
    without = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:migsafe",
                                            f"--tb={style}")
    without.assert_outcomes(failed=6)


def test_an_error_raised_in_the_plugins_own_code_keeps_its_frames() -> None:
    """The frames are hidden only for an error that passed through them: one raised in
    migsafe's own code (a fault of the plugin's) keeps them."""
    from pytest_migsafe.tracebacks import hide_passed_through
    from pytest_migsafe.values import parse_rate

    with pytest.raises(ValueError) as raised_in_migsafe:
        parse_rate("not a rate")
    with pytest.raises(ValueError) as raised_below:
        int("not a number")
    assert hide_passed_through(raised_in_migsafe) is False
    assert hide_passed_through(raised_below) is True
