"""The per-test record, the run report, baselines, regressions and their renderers.

- :mod:`~pytest_migsafe.report.record`: the data model (``TestRecord`` per test,
  ``RunReport`` per session; durations in ms, rates as fractions 0..1), JSON-able;
- :mod:`~pytest_migsafe.report.baseline`: the baseline file and its update rules;
- :mod:`~pytest_migsafe.report.shapekey`: shape keys from our own canonical tokens, so that
  a baseline compares equal whatever sqlglot version rendered its shapes;
- :mod:`~pytest_migsafe.report.regressions`: the comparison of a run with the baseline;
- :mod:`~pytest_migsafe.report.render`: the terminal summary, the GitHub step summary
  (Markdown with a Mermaid chart), JUnit properties and pytest-html cells;
- :mod:`~pytest_migsafe.report.sarif`: SARIF 2.1.0 findings and GitHub workflow-command
  annotations at the call sites;
- :mod:`~pytest_migsafe.report.files`: JSON files written atomically, read back with a
  kind and schema check (``ReportFileError``).

Renderers read records only; they never reach back into capture.
"""

#: Statements the terminal summary shows per heaviest test (``--migsafe-heaviest``, ini
#: ``migsafe_heaviest``): here, not in :mod:`~pytest_migsafe.report.render`, so that the
#: option's help text does not import the renderers at start-up
DEFAULT_HEAVIEST = 5
