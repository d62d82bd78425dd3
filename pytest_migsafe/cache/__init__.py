"""Redis keyspace hit and miss accounting, hit-rate rules, cache-aside checks and hot reads.

- :mod:`~pytest_migsafe.cache.stats`: ``cache_stats(client)``, hits and misses over a block
  (``INFO stats`` keyspace_hits / keyspace_misses deltas on real Redis, client-side
  accounting on fakeredis; hit rates as fractions 0..1) and the ``min_cache_hit_rate`` rule;
- :mod:`~pytest_migsafe.cache.rules`: Redis's own rules for which command and reply count
  as a keyspace hit or miss;
- :mod:`~pytest_migsafe.cache.hooks`: the redis-py hooks that apply them, per key prefix
  and command;
- :mod:`~pytest_migsafe.cache.aside`: ``assert_cache_aside``, miss then load, hit without
  SQL, no stale read after a write;
- :mod:`~pytest_migsafe.cache.hot_reads`: the SELECTs worth caching first, from
  ``pg_stat_statements`` calls and ``pg_stat_user_tables`` writes.

Plain code, usable without pytest; redis-py is imported only when a hook is installed.
"""
