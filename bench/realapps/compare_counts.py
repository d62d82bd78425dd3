"""Compare the plugin's per-test statement counts with pg_stat_statements' (from pss_conftest.py),
or with SQLAlchemy's own events (from sa_events_conftest.py: its pool figures too).

Usage: ``python bench/realapps/compare_counts.py PLUGIN_JSON PSS_JSON``

``PLUGIN_JSON`` is a ``--migsafe-report-json`` file (``tests[nodeid].queries.count``);
``PSS_JSON`` is ``pss_conftest.py``'s output. Prints the totals, every test measured by only
one side (the plugin leaves out a test that ran no statement), and every test whose counts differ with both sides' statements (the plugin's
shapes with their counts, the server's normalized queries with their calls). Exit code 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    """Print the comparison; returns 0."""
    plugin = json.loads(Path(argv[0]).read_text())["tests"]
    server = json.loads(Path(argv[1]).read_text())
    same = differ = 0
    for nodeid in sorted(set(plugin) | set(server)):
        p, s = plugin.get(nodeid), server.get(nodeid)
        if p is None or s is None:
            figure = f"pg_stat_statements {s['calls']}" if p is None else f"plugin {p['queries']['count']}"
            print(f"ONLY {'server' if p is None else 'plugin'}: {nodeid}: {figure}")
            continue
        mine = (p.get("queries") or {}).get("count", 0)
        if mine == s["calls"]:
            same += 1
            continue
        differ += 1
        print(f"DIFF {nodeid}: plugin {mine}, pg_stat_statements {s['calls']}")
        for shape in (p.get("queries") or {}).get("shapes", []):
            print(f"   plugin  {json.dumps(shape)[:300]}")
        for query, calls in s["statements"]:
            print(f"   server  x{calls} {query[:240]!r}")
    print(f"{same} tests equal, {differ} differ; plugin total "
          f"{sum((v.get('queries') or {}).get('count', 0) for v in plugin.values())}, "
          f"server total {sum(v['calls'] for v in server.values())}")
    _compare_pools(plugin, server)
    return 0


def _compare_pools(plugin: dict[str, dict], counted: dict[str, dict]) -> None:
    """With ``sa_events_conftest.py``'s figures (``connects``, ``checkouts``): every test's
    connections created and pool checkouts against the plugin's (a test the plugin has no pool
    figures for counts as 0 of each)."""
    tests = [nodeid for nodeid, figures in counted.items() if "connects" in figures]
    if not tests:
        return
    same = 0
    for nodeid in sorted(tests):
        pool = (plugin.get(nodeid) or {}).get("pool") or {}
        mine = (pool.get("created", 0), pool.get("checkouts", 0))
        theirs = (counted[nodeid]["connects"], counted[nodeid]["checkouts"])
        if mine == theirs:
            same += 1
        else:
            print(f"POOL DIFF {nodeid}: plugin created {mine[0]}, checkouts {mine[1]}; "
                  f"events connect {theirs[0]}, checkout {theirs[1]}")
    print(f"pools: {same} of {len(tests)} tests equal; plugin created "
          f"{sum(((v.get('pool') or {}).get('created', 0)) for v in plugin.values())}, checkouts "
          f"{sum(((v.get('pool') or {}).get('checkouts', 0)) for v in plugin.values())}; events connect "
          f"{sum(counted[n]['connects'] for n in tests)}, checkout {sum(counted[n]['checkouts'] for n in tests)}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
