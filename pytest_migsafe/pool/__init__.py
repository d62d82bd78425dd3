"""Connection pool observation (SQLAlchemy and psycopg_pool), limits, warm-up checks and sizing.

- :mod:`~pytest_migsafe.pool.observe`: ``pool_stats()``, connections created (cold start
  and beyond warm), pool checkouts, peak use (the observed code's own and in all),
  checkout waits and hold times (ms, nearest-rank) and leaks over a block;
- :mod:`~pytest_migsafe.pool.tally`: the counts a run's totals need (connections created,
  leaks), from process-wide counters read at a block's start and end;
- :mod:`~pytest_migsafe.pool.holds` (the hold-time histogram, mergeable and bounded) and
  :mod:`~pytest_migsafe.pool.locality` (whether a pool's server is local);
- :mod:`~pytest_migsafe.pool.events` and :mod:`~pytest_migsafe.pool.targets`: the events
  the driver hooks report, and what can be watched;
- :mod:`~pytest_migsafe.pool.sqlalchemy` (pool events) and
  :mod:`~pytest_migsafe.pool.psycopg` (psycopg_pool ``get_stats()`` deltas): the hooks;
- :mod:`~pytest_migsafe.pool.limits` (the ``pool`` marker), :mod:`~pytest_migsafe.pool.warm`
  (``assert_pool_warm``), :mod:`~pytest_migsafe.pool.sizing` (``pool_size``), and
  :mod:`~pytest_migsafe.pool.metrics` (Prometheus ``db_connections_created_total``).

Plain code, usable without pytest.
"""
