"""The main job: the example suite with the report, as the README runs it (on this session's servers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_example_suite_passes_and_its_report_shows_each_migration() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "examples", "--migsafe-report", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-2000:]
    assert "16 passed, 3 warnings" in out
    # the N+1 (migration 3): the naive directory, as warnings and in the report
    assert "N+1 suspects: 3" in out
    assert "NPlusOneWarning: N+1 suspected" in out
    assert out.count("x69  at examples/shop/views.py:14") == 1  # grows with the data
    assert out.count("x32  at examples/shop/views.py:14") == 2  # the report's table
    # the cache (migration 2) and the pool (migration 1), and the shadow runs of all three
    assert "cache: 32 hits, 14 misses, hit rate 69.6%" in out
    assert "shadow: 3 matched, 0 mismatched" in out
    assert "totals: 15 tests measured, 387 queries, 3 N+1 suspects" in out
