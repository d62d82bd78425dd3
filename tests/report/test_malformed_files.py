"""Every field of a real run's report and baseline, replaced by a value of another kind, or
removed: ``migsafe report diff``, ``report merge`` and ``pool-size --from-report`` (and the
plugin's own baseline reader) end with an exit code and a one-line message, never a traceback.

JSON gives values of any kind in any place: the readers once checked ``v in {...}`` on a list
(``unhashable type``: an INTERNALERROR before any test ran, and ``report diff`` exited 1, which a
CI gate reads as "regressions") and ``int()`` on ``Infinity`` (``OverflowError``).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_migsafe.cli.main import main
from pytest_migsafe.report.baseline import read_baseline
from pytest_migsafe.report.files import ReportFileError

pytestmark = pytest.mark.filterwarnings("ignore::pytest_migsafe.queries.counter.NPlusOneWarning")

APP = """
from sqlalchemy import text

def per_row(conn, ids):
    return [conn.execute(text("SELECT :i"), {"i": i}).scalar() for i in ids]
"""

SUITE = """
import pytest
from sqlalchemy import create_engine, text
from app import per_row

engine = create_engine("sqlite:///" + __file__ + ".db")  # a file: a QueuePool, hold times

def test_loop():
    with engine.connect() as conn:
        assert per_row(conn, range(12)) == list(range(12))

def test_cache(migsafe_redis):
    migsafe_redis.set("k", "v")
    assert migsafe_redis.get("k") == b"v"
    assert migsafe_redis.get("missing") is None

def test_shadow(shadow):
    shadow.run("prices", lambda: 1, lambda: 1)
"""

# values of every JSON kind, and numbers json.loads lets through that are no count
ODD_VALUES: list[Any] = [None, -1, "x", "", True, [], [1], {}, {"a": 1}, 0.5, 10**30, float("inf"),
                         float("nan")]
_REMOVED = object()


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _mutants(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(what was changed, the changed copy)`` for every field and every odd value."""
    for path in _paths(document):
        for value in [*ODD_VALUES, _REMOVED]:
            changed = copy.deepcopy(document)
            place = changed
            for key in path[:-1]:
                place = place[key]
            if value is _REMOVED:
                if isinstance(place, list):
                    continue
                del place[path[-1]]
            else:
                place[path[-1]] = value
            yield f"{'.'.join(map(str, path))}={'removed' if value is _REMOVED else repr(value)}", changed


@pytest.fixture(scope="module")
def real_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run report and a baseline written by a real run: statements, an N+1 suspect, pool hold
    times, cache figures (fakeredis) and a shadow experiment."""
    root = tmp_path_factory.mktemp("real")
    (root / "app.py").write_text(APP)
    (root / "test_real.py").write_text(SUITE)
    (root / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "--migsafe-redis=fake", "--migsafe-report-json=run.json", "--migsafe-baseline=base.json",
                           "--migsafe-update-baseline"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "run.json", root / "base.json"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)  # (an exception here fails the test: that is the fault)
    return code, capsys.readouterr().err


def test_the_real_files_hold_every_part(real_files: tuple[Path, Path]) -> None:
    report, baseline = (json.loads(path.read_text()) for path in real_files)
    records = report["tests"]
    assert records["test_real.py::test_loop"]["queries"]["n_plus_one"]
    assert records["test_real.py::test_loop"]["pool"]["hold_times"]["count"] >= 1
    assert records["test_real.py::test_cache"]["cache"] is not None
    assert records["test_real.py::test_shadow"]["shadows"]
    assert baseline["tests"]["test_real.py::test_shadow"]["shadows"] == {"prices": "matched"}


def test_every_field_of_a_baseline_changed_is_an_exit_code_and_one_line(
        real_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, baseline = real_files
    bad = tmp_path / "bad.json"
    tried = 0
    for what, changed in _mutants(json.loads(baseline.read_text())):
        bad.write_text(json.dumps(changed))
        code, err = _run(["report", "diff", str(bad), str(report)], capsys)
        assert code in (0, 1, 2), what
        if code == 2:
            assert err.startswith("migsafe: ") and err.count("\n") == 1, (what, err)
            with pytest.raises(ReportFileError):  # the plugin's reader (--migsafe-baseline) refuses it too
                read_baseline(bad)
        tried += 1
    assert tried > 100


@pytest.mark.parametrize("command", ["diff-new", "diff-old", "merge", "pool-size"])
def test_every_field_of_a_run_report_changed_is_an_exit_code_and_one_line(
        real_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    report, baseline = real_files
    bad = tmp_path / "bad.json"
    out = tmp_path / "out.json"
    argv = {"diff-new": ["report", "diff", str(baseline), str(bad)],
            "diff-old": ["report", "diff", str(bad), str(report)],
            "merge": ["report", "merge", str(report), str(bad), "-o", str(out)],
            "pool-size": ["pool-size", "--peak-rps", "100", "--from-report", str(bad)]}[command]
    refused = 0
    for what, changed in _mutants(json.loads(report.read_text())):
        bad.write_text(json.dumps(changed))
        code, err = _run(argv, capsys)
        assert code in (0, 1, 2), what
        if code == 2:
            assert err.startswith("migsafe: ") and err.count("\n") == 1, (what, err)
            refused += 1
    assert refused > 100
