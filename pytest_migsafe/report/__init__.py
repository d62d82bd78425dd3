"""The per-test record, the run report, baselines, regressions and their renderers."""
