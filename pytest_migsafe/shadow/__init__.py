"""Shadow experiments: run an old and a new code path on the same state and compare them."""
