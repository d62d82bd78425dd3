"""Explain per-test count differences between the plugin and pg_stat_statements by documented causes.

Usage: ``python bench/realapps/explain_counts.py PLUGIN_JSON PSS_JSON``

The plugin counts a psycopg server-side (named) cursor once per ``execute`` (its
``DECLARE``); the server also records each ``FETCH`` and the ``CLOSE`` (README, "What is
counted"). This subtracts those server entries and prints, for each test: tests equal
as they are, tests equal once FETCH/CLOSE are taken out, tests measured only by the
server (the plugin recorded no statement), and the tests still unexplained with their
statements. Exit code 0.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

_CURSOR_TRAFFIC = re.compile(r"^\s*(FETCH|CLOSE)\b", re.IGNORECASE)


def main(argv: list[str]) -> int:
    """Print the classification; returns 0."""
    plugin = json.loads(Path(argv[0]).read_text())["tests"]
    server = json.loads(Path(argv[1]).read_text())
    equal: list[str] = []
    cursor: list[tuple[str, int]] = []
    only_server: list[tuple[str, int]] = []
    zero_both: list[tuple[str, int]] = []
    rest: list[tuple[str, int, int, int]] = []
    for nodeid, s in sorted(server.items()):
        p = plugin.get(nodeid)
        mine = (p or {}).get("queries", {}).get("count", 0) if p else 0
        traffic = sum(c for q, c in s["statements"] if _CURSOR_TRAFFIC.match(q))
        if p is None:
            (zero_both if s["calls"] == 0 else only_server).append((nodeid, s["calls"]))
        elif mine == s["calls"]:
            equal.append(nodeid)
        elif mine == s["calls"] - traffic:
            cursor.append((nodeid, traffic))
        else:
            rest.append((nodeid, mine, s["calls"], traffic))
    print(f"equal: {len(equal)}")
    print(f"equal once FETCH/CLOSE of server-side cursors are taken out: {len(cursor)} "
          f"({sum(t for _, t in cursor)} FETCH/CLOSE calls)")
    print(f"no statement on either side: {len(zero_both)}")
    print(f"statements on the server, none recorded by the plugin: {len(only_server)} "
          f"({sum(c for _, c in only_server)} calls)")
    for nodeid, calls in only_server:
        print(f"   {nodeid}: server {calls}")
    print(f"unexplained: {len(rest)}")
    for nodeid, mine, calls, traffic in rest:
        print(f"   {nodeid}: plugin {mine}, server {calls} (FETCH/CLOSE {traffic})")
        for q, c in server[nodeid]["statements"]:
            print(f"      x{c} {q[:200]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
