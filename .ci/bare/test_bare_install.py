"""Run by .ci/run in a venv with the plugin's base install only (no driver, no server)."""

import importlib.util
import sqlite3
from typing import Any

import pytest


def test_no_driver_was_installed_with_the_plugin() -> None:
    for name in ("sqlalchemy", "psycopg", "psycopg_pool", "redis", "fakeredis"):
        assert importlib.util.find_spec(name) is None, f"{name} came with the base install"


@pytest.mark.max_queries(1)
def test_a_budget_without_drivers_holds() -> None:
    sqlite3.connect(":memory:").execute("select 1")


def test_count_queries_without_drivers() -> None:
    from pytest_migsafe import count_queries

    with count_queries() as counter:
        pass
    assert counter.count == 0


@pytest.mark.parametrize(("command", "extra"), [
    (["hit-rate", "--redis-url", "redis://127.0.0.1:1/0"], "redis"),
    (["hot-reads", "--dsn", "postgresql://app@127.0.0.1:1/app"], "psycopg"),
])
def test_a_command_needing_a_driver_says_which_extra(command: list[str], extra: str) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pytest_migsafe.cli.main", *command],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"pip install 'pytest-migsafe[{extra}]'" in done.stderr and "Traceback" not in done.stderr


def test_a_server_started_without_psycopg_names_the_extra_not_another_server(tmp_path: Any) -> None:
    """``migsafe server --pg-ctl PATH`` without psycopg: every way to a server needs psycopg, so
    the advice is the extra, not "or pass --pg-ctl PATH" (which the user just did)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "pytest_migsafe.cli.main", "server", "--pg-ctl",
                           str(tmp_path / "pg_ctl"), "--base-dir", str(tmp_path / "base")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'pytest-migsafe[postgres]'" in done.stderr and "or pass" not in done.stderr, done.stderr


pytest_plugins = ["pytester"]


@pytest.mark.parametrize(("args", "env", "extra"), [
    ([], {"MIGSAFE_POSTGRES_URL": "postgresql://app:pw@127.0.0.1:1/app"}, "psycopg"),
    ([], {"MIGSAFE_REDIS_URL": "redis://:pw@127.0.0.1:1/0"}, "redis"),
    (["--migsafe-redis=fake"], {}, "redis"),
], ids=["postgres url", "redis url", "fakeredis"])
def test_a_server_fixture_without_its_driver_says_which_extra_in_one_line(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str],
        extra: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    fixture = "migsafe_postgres" if "MIGSAFE_POSTGRES_URL" in env else "migsafe_redis"
    pytester.makepyfile(f"def test_uses({fixture}):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert f"pip install 'pytest-migsafe[{extra}]'" in output, output
    assert "ModuleNotFoundError" not in output and "Traceback" not in output, output
