"""Shadow experiments: run an old and a new code path on the same state and compare them.

- :mod:`~pytest_migsafe.shadow.experiment`: ``Shadow.run`` / ``Shadow.run_many``, the
  verdict (matched, mismatched, ignored) and the performance checks (nearest-rank p99 in
  ms, error rates as fractions 0..1);
- :mod:`~pytest_migsafe.shadow.state`: the state each path starts from (a savepoint
  rolled back after it, a flushed cache);
- :mod:`~pytest_migsafe.shadow.diff`: a readable difference between the two outcomes.
"""
