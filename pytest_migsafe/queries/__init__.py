"""Statement capture for each driver, shapes, call sites, budgets, N+1 and scaling checks.

- :mod:`~pytest_migsafe.queries.counter`: ``count_queries()``, the statements of a block
  (count, ``executemany`` executions, durations in ms) and the N+1 suspects;
- :mod:`~pytest_migsafe.queries.dispatch`: the one call every driver hook makes;
  :mod:`~pytest_migsafe.queries.drivers` installs the hooks of
  :mod:`~pytest_migsafe.queries.sqlalchemy` and :mod:`~pytest_migsafe.queries.psycopg`;
- :mod:`~pytest_migsafe.queries.normalize` (statement shapes, with sqlglot) and
  :mod:`~pytest_migsafe.queries.callsite` (the first frame in the user's code);
- :mod:`~pytest_migsafe.queries.budgets` (``assert_max_queries``, ``assert_num_queries``)
  and :mod:`~pytest_migsafe.queries.scaling` (``assert_constant_queries``).

Plain code, usable without pytest; SQLAlchemy and psycopg are hooked only when in use.
"""
