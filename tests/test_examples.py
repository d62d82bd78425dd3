"""The main job: the example suite with the report, as the README runs it (on this session's servers).

The README's report sample (between ``<!-- report-sample:start -->`` and
``<!-- report-sample:end -->``) must be what this run prints, apart from timings, the
PostgreSQL server's description and column padding; ``python bench/update_readme_sample.py``
rewrites it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def sample_tool() -> ModuleType:
    path = REPO / "bench" / "update_readme_sample.py"
    spec = importlib.util.spec_from_file_location("update_readme_sample", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_example_suite_passes_and_its_report_is_the_readme_sample() -> None:
    tool = sample_tool()
    done = tool.run_examples()
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    assert "16 passed" in out
    # the N+1 (migration 3): the naive directory, as warnings and in the report
    assert "NPlusOneWarning: N+1 suspected" in out
    section = tool.report_section(out)
    # the naive directory run at three scales: the suspect counts the largest query's rows (25 users)
    assert any("x25  at examples/shop/views.py:14" in line for line in section)
    # the shadow runs of all three migrations
    assert "shadow: 3 matched, 0 mismatched" in section
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert tool.comparable(tool.readme_section(readme)) == tool.comparable(section), (
        "the README's report sample is out of date: run python bench/update_readme_sample.py")


def test_the_sample_comparison_ignores_timings_and_padding_only() -> None:
    tool = sample_tool()
    section = ["shadow experiments: 1",
               "  test      experiment  result   runs  queries (control -> candidate)  p99 ms        seed",
               "  t.py::a   pooling     matched  30    30 -> 30                        39.8 -> 22    1",
               "note: PostgreSQL: pg_ctl /usr/lib/postgresql/15/bin/pg_ctl (PostgreSQL 15.18)",
               "totals: 1 test measured, 30 queries"]
    other = ["shadow experiments: 1",
             "  test      experiment  result   runs  queries (control -> candidate)  p99 ms          seed",
             "  t.py::a   pooling     matched  30    30 -> 30                        5.57 -> 2.481   1",
             "note: PostgreSQL: postgresql://migsafe@/db?host=/tmp/x",
             "totals: 1 test measured, 30 queries"]
    assert tool.comparable(section) == tool.comparable(other)
    assert tool.comparable(section) != tool.comparable([*other[:2], other[2].replace("30 -> 30", "30 -> 31"),
                                                        *other[3:]])
    text = "intro\n" + "\n".join(tool.sample_lines(section)) + "\nafter\n"
    assert tool.readme_section(text) == section
    assert tool.replace_block(text, other).endswith("\nafter\n")
    assert tool.readme_section(tool.replace_block(text, other)) == other
