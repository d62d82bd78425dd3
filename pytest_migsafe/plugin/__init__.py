"""The pytest plugin (entry point ``migsafe``): the wiring only, one module per capability.

Each module adds its options, ini keys, markers, fixtures and hooks; the logic they call
lives in the plain subpackages (``queries``, ``cache``, ``pool``, ``shadow``, ``report``,
``servers``). ``-p no:migsafe`` disables every part at once.
"""

pytest_plugins = [
    "pytest_migsafe.plugin.queries",
    "pytest_migsafe.plugin.cache",
    "pytest_migsafe.plugin.pool",
    "pytest_migsafe.plugin.shadow",
    "pytest_migsafe.plugin.report",
]
