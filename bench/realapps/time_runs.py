"""CPU time (user + sys) of an application's test suite without the plugin, at its defaults, and with the report.

Usage: ``python bench/realapps/time_runs.py [--runs 3] [--warmup 1] [--json OUT] -- PYTEST_COMMAND...``

Runs ``PYTEST_COMMAND`` (e.g. ``python -m pytest -q -p no:cacheprovider tests/``) with, in
turn, ``-p no:migsafe`` (off), nothing added (defaults), ``--migsafe-report
--migsafe-report-json=<temp file>`` (report) and the same with pytest's cache plugin on (the
command's ``-p no:cacheprovider`` dropped) in a cache directory kept across runs (report-kept: the shapes saved by the run before), ``--runs`` rounds, each starting one variant
later (off, defaults, report; defaults, report, off; ...), so that a slow spell of a noisy
machine, or a database the suite grows run after run, falls on every variant alike, after
``--warmup`` uncounted rounds of the three (bytecode caches written, files in the page
cache). Run it with bytecode writing on (no ``PYTHONDONTWRITEBYTECODE``; ``run.sh`` sets
``PYTHONPYCACHEPREFIX`` to a scratch directory): otherwise every run compiles the plugin's
modules from source (an editable install has no ``.pyc``), about 0.3 s of CPU that an
installed wheel never pays, and only the plugin's variants pay it. The figure of
a run is the user + sys CPU seconds of the pytest process and everything it waited for
(``os.wait4`` rusage; the PostgreSQL server's own CPU is not included), plus the wall time.
``--logs DIR`` keeps each run's output. Prints each run, then per variant the median CPU seconds and its ratio to off's median;
``--json`` also writes them. A run whose exit code differs from off's first run is reported
(the comparison is then meaningless). Exit code 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

VARIANTS = {
    "off": ["-p", "no:migsafe"],
    "defaults": [],
    "report": ["--migsafe-report", "--migsafe-report-json={json}"],
    # the report with pytest's cache plugin back on (run.sh's commands turn it off) in a cache
    # directory kept across this variant's runs: the readable shapes saved by the run before
    # (queries/shape_store.py), as on a developer's second run; also pays the cache plugin's
    # own work (its lastfailed file), which off does not. The cache plugin is put back by
    # dropping the command's own "-p no:cacheprovider" (see with_cache_plugin), not by adding
    # "-p cacheprovider": pytest warns that the module is already imported, an error in a
    # project with filterwarnings = error (the run exited at once)
    "report-kept": ["--migsafe-report", "--migsafe-report-json={json}", "-o", "cache_dir={cache}"],
}
#: the variants run with the command's "-p no:cacheprovider" dropped
WITH_CACHE_PLUGIN = {"report-kept"}


def with_cache_plugin(command: list[str]) -> list[str]:
    """``command`` without its ``-p no:cacheprovider`` (also written ``-pno:cacheprovider``,
    ``-p=no:cacheprovider`` is not pytest's form): pytest's cache plugin on again."""
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(command):
        if skip:
            skip = False
            continue
        if arg == "-p" and i + 1 < len(command) and command[i + 1] == "no:cacheprovider":
            skip = True
            continue
        if arg == "-pno:cacheprovider":
            continue
        kept.append(arg)
    return kept


def run_once(command: list[str], extra: list[str], log: str | None = None,
             cache: str = "") -> tuple[float, float, int]:
    """(user + sys CPU seconds, wall seconds, exit code) of one run of ``command + extra``.

    ``log``: a file for the run's output (else it is discarded); ``cache``: the directory
    ``{cache}`` stands for in ``extra``."""
    with tempfile.TemporaryDirectory() as tmp, open(log or os.devnull, "w") as out:
        args = [a.format(json=os.path.join(tmp, "run.json"), cache=cache) for a in extra]
        start = time.perf_counter()
        proc = subprocess.Popen(command + args, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall, proc.returncode


def main(argv: list[str]) -> int:
    """Run the variants alternately, in a rotating order, and print medians and ratios; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--logs", help="directory for each run's output (RUN-VARIANT.txt)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if ns.logs:
        os.makedirs(ns.logs, exist_ok=True)
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    codes: dict[str, list[int]] = {v: [] for v in VARIANTS}
    kept = tempfile.TemporaryDirectory(prefix="pytest-cache-")  # report-kept's, across its runs
    cache = os.path.join(kept.name, "cache")
    commands = {name: with_cache_plugin(command) if name in WITH_CACHE_PLUGIN else command for name in VARIANTS}
    for _ in range(ns.warmup):
        for name, extra in VARIANTS.items():
            run_once(commands[name], extra, cache=cache)
    names = list(VARIANTS)
    for i in range(ns.runs):
        # each round starts one variant later (off, defaults, report; then defaults, report, off;
        # ...): a suite whose database grows run after run (app A adds users every run) slows
        # every later run, which a fixed order charged to the plugin's variants
        for name in names[i % len(names):] + names[:i % len(names)]:
            extra = VARIANTS[name]
            log = os.path.join(ns.logs, f"{i + 1}-{name}.txt") if ns.logs else None
            c, w, code = run_once(commands[name], extra, log, cache)
            cpu[name].append(c)
            wall[name].append(w)
            codes[name].append(code)
            print(f"run {i + 1} {name:11} cpu {c:8.2f} s  wall {w:8.2f} s  exit {code}", flush=True)
    base = statistics.median(cpu["off"])
    summary = {}
    for name in VARIANTS:
        med = statistics.median(cpu[name])
        summary[name] = {"cpu_s": cpu[name], "wall_s": wall[name], "exit": codes[name],
                         "median_cpu_s": med, "ratio": med / base}
        print(f"{name:11} median cpu {med:8.2f} s  ratio {med / base:.3f}  "
              f"median wall {statistics.median(wall[name]):8.2f} s  exits {codes[name]}")
    if any(c != codes["off"][0] for v in codes.values() for c in v):
        print("WARNING: exit codes differ between runs")
    if ns.json:
        with open(ns.json, "w") as out:
            json.dump(summary, out, indent=1)
    kept.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
