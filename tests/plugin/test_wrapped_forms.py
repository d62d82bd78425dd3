"""Every method the plugin replaces in a driver or ORM keeps the form its callers can see:
its own parameters (``inspect.signature(..., follow_wrapped=False)``: names, kinds, default
values), whether it is a coroutine, generator or async generator function, and for psycopg's
``copy()`` the type of context manager it returns.

The expected forms are the libraries' own, read in a fresh interpreter before anything of
the plugin is installed; the check then covers every attribute of every class of those
libraries that the installation changed, whichever part of the plugin changed it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")
pytest.importorskip("redis")

SCRIPT = textwrap.dedent('''
    import inspect, json, sys
    try:
        import django
        from django.conf import settings
        settings.configure(DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}},
                           INSTALLED_APPS=[])
        django.setup()
        import django.db.models
    except ImportError:
        pass
    import psycopg, psycopg_pool, redis, redis.asyncio, sqlalchemy, sqlalchemy.orm, sqlalchemy.ext.asyncio
    try:
        import fakeredis
    except ImportError:
        pass

    PREFIXES = ("psycopg", "psycopg_pool", "sqlalchemy", "django", "redis", "fakeredis")

    def classes():
        for name, module in list(sys.modules.items()):
            if module is None or name.split(".")[0] not in PREFIXES:
                continue
            for value in list(vars(module).values()):
                if isinstance(value, type) and value.__module__ == name:
                    yield value

    def form(function):
        function = getattr(function, "__func__", function)
        try:
            params = [[p.name, str(p.kind), repr(p.default)]
                      for p in inspect.signature(function, follow_wrapped=False).parameters.values()]
        except (TypeError, ValueError):
            params = None
        return [params, inspect.iscoroutinefunction(function), inspect.isgeneratorfunction(function),
                inspect.isasyncgenfunction(function)]

    before = {cls: dict(vars(cls)) for cls in classes()}
    copy_types = [type(psycopg.Cursor.copy(object(), "COPY t FROM STDIN")).__name__,
                  type(psycopg.AsyncCursor.copy(object(), "COPY t FROM STDIN")).__name__]

    from pytest_migsafe.cache import hooks
    from pytest_migsafe.pool import targets
    from pytest_migsafe.queries import drivers
    drivers.install(import_missing=True)
    targets.install(import_missing=True)
    hooks.install()

    changed = {}
    for cls, attributes in before.items():
        for name, original in attributes.items():
            now = vars(cls).get(name)
            if now is not original and callable(original) and callable(now):
                changed[f"{cls.__module__}.{cls.__qualname__}.{name}"] = [form(original), form(now)]
    from pytest_migsafe.queries.counter import QueryCounter
    with QueryCounter():  # (the wrappers measure only while a counter is active)
        measured = [type(psycopg.Cursor.copy(object(), "COPY t FROM STDIN")).__name__,
                    type(psycopg.AsyncCursor.copy(object(), "COPY t FROM STDIN")).__name__]
    print(json.dumps({"changed": changed, "copy_types": [copy_types, measured]}))
''')


@pytest.fixture(scope="module")
def forms() -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_installation_replaced_the_driver_methods_it_measures(forms: dict) -> None:
    changed = forms["changed"]
    for name in ("psycopg.Cursor.execute", "psycopg.Cursor.executemany", "psycopg.Cursor.copy",
                 "psycopg.ServerCursor.execute", "psycopg_pool.pool.ConnectionPool.getconn",
                 "sqlalchemy.orm.session.Session._flush"):
        assert name in changed, sorted(changed)


def test_every_replaced_method_keeps_its_own_parameters_and_kind(forms: dict) -> None:
    differ = {name: pair for name, pair in forms["changed"].items() if pair[0] != pair[1]}
    assert not differ, json.dumps(differ, indent=1)[:5000]


def test_copy_returns_the_context_manager_type_psycopg_returns(forms: dict) -> None:
    before, after = forms["copy_types"]
    assert after == before
