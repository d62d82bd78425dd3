"""The ``migsafe`` command line: one module per command group.

:mod:`~pytest_migsafe.cli.main` is the entry point; :mod:`~pytest_migsafe.cli.cache`
(``hot-reads``, ``hit-rate``), :mod:`~pytest_migsafe.cli.pool` (``pool-size``) and
:mod:`~pytest_migsafe.cli.report` (``report merge``, ``report diff``) each add their
subcommands; a user mistake raises :class:`~pytest_migsafe.cli.errors.CommandError`
(exit status 2).
"""
