"""The ``migsafe`` command line: one module per command group."""
