"""The pytest plugin (entry point ``migsafe``): the wiring only, one module per capability.

Each module adds its options, ini keys, markers, fixtures and hooks; the logic they call
lives in the plain subpackages (``queries``, ``cache``, ``pool``, ``shadow``, ``report``,
``servers``). ``-p no:migsafe`` disables every part at once.

The parts listed in ``pytest_plugins``: :mod:`~pytest_migsafe.plugin.queries` (the real
PostgreSQL, ``migsafe_db``, budgets, N+1, and the one call-phase hook for every part),
:mod:`~pytest_migsafe.plugin.cache`, :mod:`~pytest_migsafe.plugin.pool`,
:mod:`~pytest_migsafe.plugin.shadow` and :mod:`~pytest_migsafe.plugin.report`. Their
helpers: :mod:`~pytest_migsafe.plugin.options` (CLI > environment > ini),
:mod:`~pytest_migsafe.plugin.markers`, :mod:`~pytest_migsafe.plugin.stash` (state under
``pytest.StashKey``), :mod:`~pytest_migsafe.plugin.record_keeper` (records handed to the
run report) and :mod:`~pytest_migsafe.plugin.report_session` (loaded only with a report
option).
"""

pytest_plugins = [
    "pytest_migsafe.plugin.invocation",
    "pytest_migsafe.plugin.queries",
    "pytest_migsafe.plugin.cache",
    "pytest_migsafe.plugin.pool",
    "pytest_migsafe.plugin.shadow",
    "pytest_migsafe.plugin.explain",
    "pytest_migsafe.plugin.report",
    "pytest_migsafe.plugin.servers",
]
