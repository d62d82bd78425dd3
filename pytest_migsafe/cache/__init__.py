"""Redis hit and miss accounting, hit-rate rules, cache-aside checks and hot reads."""
