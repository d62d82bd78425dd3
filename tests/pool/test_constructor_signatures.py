"""Wrapped constructors and pool methods keep the library's own parameters.

``create_engine()`` reads which keyword arguments belong to the engine from the code of
``Engine.__init__``: a wrapper taking ``(self, *args, **kwargs)`` made every engine keyword
(``echo``, ``logging_name``, ``execution_options``, ...) an "Invalid argument" for any engine
created while the plugin was installed. An ``async def`` wrapper taking any argument raised
a bad argument's ``TypeError`` only when awaited.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from sqlalchemy import create_engine, engine_from_config, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine

from pytest_migsafe.pool import psycopg as pool_psycopg
from pytest_migsafe.pool import targets

ENGINE_KEYWORDS: dict[str, Any] = {"echo": False, "logging_name": "migsafe-test", "query_cache_size": 10,
                                   "execution_options": {"isolation_level": "AUTOCOMMIT"}, "hide_parameters": True}


def own_parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function, follow_wrapped=False).parameters.values()]


def test_engine_init_is_wrapped_with_its_own_parameters() -> None:
    targets.install()
    wrapped = Engine.__init__
    original = wrapped._migsafe_wraps  # type: ignore[attr-defined]
    assert own_parameters(wrapped) == own_parameters(original)


def test_wrapped_pool_internals_show_sqlalchemy_s_parameters() -> None:
    """``inspect.signature()`` of the wrapped ``_finalize_fairy`` and
    ``_ConnectionRecord.checkout`` showed ``(*args, **kwargs)`` and no annotations."""
    from sqlalchemy.pool import base

    from pytest_migsafe.pool import sqlalchemy as pool_sqlalchemy

    targets.install()
    originals = pool_sqlalchemy._originals
    assert base._finalize_fairy is not originals["finalize"]  # (wrapped)
    assert inspect.signature(base._finalize_fairy) == inspect.signature(originals["finalize"])
    assert "dbapi_connection" in inspect.signature(base._finalize_fairy).parameters
    assert inspect.signature(base._ConnectionRecord.checkout) == inspect.signature(
        classmethod(originals["checkout"]).__get__(None, base._ConnectionRecord))  # (pool: Pool) -> _ConnectionFairy


@pytest.mark.parametrize("keyword", list(ENGINE_KEYWORDS))
def test_create_engine_takes_every_engine_keyword(keyword: str) -> None:
    targets.install()
    assert hasattr(Engine.__init__, "_migsafe_wraps")
    engine = create_engine("sqlite://", **{keyword: ENGINE_KEYWORDS[keyword]})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_engine_from_config_and_create_async_engine_take_engine_keywords() -> None:
    targets.install()
    engine = engine_from_config({"sqlalchemy.url": "sqlite://", "sqlalchemy.echo": "false",
                                 "sqlalchemy.logging_name": "from-config"})
    assert engine.logging_name == "from-config"
    engine.dispose()
    # (no connection is made: the engine is only built)
    async_engine = create_async_engine("postgresql+psycopg://u@localhost/db", echo=False, logging_name="async")
    assert async_engine.sync_engine.logging_name == "async"
    asyncio.run(async_engine.dispose())

def test_an_engine_made_in_a_test_module_with_echo_collects(pytester: pytest.Pytester) -> None:
    """The reproduction: an engine with ``echo=False`` at a test module's import was a
    collection error with the plugin installed."""
    pytester.makepyfile(test_engine="""
        from sqlalchemy import create_engine, text
        engine = create_engine("sqlite://", echo=False, logging_name="app")

        def test_it():
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
    """)
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)


def test_psycopg_pool_constructor_and_async_getconn_take_their_own_parameters() -> None:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    targets.install()
    for cls, name in ((psycopg_pool.ConnectionPool, "__init__"), (psycopg_pool.AsyncConnectionPool, "__init__"),
                      (psycopg_pool.AsyncConnectionPool, "getconn")):
        method = vars(cls)[name]
        original = getattr(method, pool_psycopg._PATCHED_FLAG)
        assert own_parameters(method) == own_parameters(original), (cls, name)


def test_async_getconn_rejects_a_bad_argument_at_the_call(pg_dsn: str) -> None:
    psycopg_pool = pytest.importorskip("psycopg_pool")
    targets.install()

    async def main() -> None:
        async with psycopg_pool.AsyncConnectionPool(pg_dsn, min_size=1, max_size=1, open=False) as pool:
            with pytest.raises(TypeError):
                pool.getconn(bogus=1)  # not awaited: the driver's coroutine function raises here
            async with pool.connection() as conn:
                assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)

    asyncio.run(main())

