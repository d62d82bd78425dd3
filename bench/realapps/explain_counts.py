"""Explain per-test count differences between the plugin and pg_stat_statements by documented causes.

Usage: ``python bench/realapps/explain_counts.py PLUGIN_JSON PSS_JSON``

Causes, each taken out in turn (README, "What is counted"):

- the plugin counts a psycopg server-side (named) cursor once per ``execute`` (its
  ``DECLARE``); the server also records each ``FETCH`` and the ``CLOSE``: those server
  entries are subtracted;
- the plugin counts an ``executemany`` as one statement and keeps its executions
  (``queries.executions`` in the report); the server counts each execution: the
  plugin's ``executions`` is compared instead of its ``count``;
- PostgreSQL runs a foreign key's check itself (``SELECT 1 FROM ONLY "t" x WHERE ... FOR KEY
  SHARE OF x``, the RI trigger), and a key declared ``DEFERRABLE INITIALLY DEFERRED`` (every
  Django foreign key) is checked at the commit: outside any statement the client sent, so
  ``pg_stat_statements`` records it as a top-level statement (a ``TransactionTestCase`` or
  an autocommit connection commits inside the test). The client never sent it: those
  server entries are subtracted;
- PostgreSQL records a statement sent with the extended protocol (psycopg's, with
  parameters) when its portal closes, at that connection's next statement or transaction
  end: a statement on a session left idle in a transaction at the end of the call phase (a
  fixture's session, closed at teardown) is recorded in the test's teardown window
  (``pss_conftest.py``'s ``teardown`` figures), not the call's. A test is explained so when
  every statement the plugin counted more than the server's call window did (matched by
  text, parameters' casts and placeholders, column aliases and white space left out: the
  server keeps one entry for statements differing only in their aliases) is in the teardown
  window at least as often, and the server's call window has nothing the plugin lacks.

Prints, for each test: tests equal as they are, equal once FETCH/CLOSE are taken out, equal
once ``executemany`` counts each execution, explained by late recording, equal once the
server's foreign-key checks are taken out, tests measured only by the server (the plugin
recorded no statement) or only by the plugin (the server side did not measure them), and
the tests still unexplained with their statements. Exit code 0.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

_CURSOR_TRAFFIC = re.compile(r"^\s*(FETCH|CLOSE)\b", re.IGNORECASE)
# the query PostgreSQL's referential-integrity trigger runs for a foreign key (ri_triggers.c)
_KEY_CHECK = re.compile(r"^\s*SELECT \S+ FROM ONLY \S+ x WHERE .+ FOR KEY SHARE OF x\s*$", re.IGNORECASE | re.DOTALL)
# the plugin's shapes write a bound parameter CAST(? AS TYPE); the server's normalized text
# writes $n::TYPE (PostgreSQL's type names, TIMESTAMP WITHOUT TIME ZONE included)
_PLUGIN_PARAM = re.compile(r"cast\(\?\s+as\s+[a-z_ ]+(\(\d+(,\s*\d+)?\))?\)")
_SERVER_PARAM = re.compile(r"\$\d+(::[a-z_]+( with(out)? time zone)?(\(\d+(,\s*\d+)?\))?)?")
_SPACE = re.compile(r"\s+")
# pg_stat_statements keeps one entry per query tree, whose text is the first one seen: two
# statements that differ in their column aliases only (SQLAlchemy's "users.id AS users_id")
# share it, so aliases are left out on both sides
_ALIAS = re.compile(r"\s+as\s+[a-z_][a-z0-9_]*")


def _key(text: str, server: bool) -> str:
    """A statement's text with parameters, casts of parameters and white space left out."""
    text = text.lower()
    text = (_SERVER_PARAM if server else _PLUGIN_PARAM).sub("?", text)
    return _SPACE.sub("", _ALIAS.sub("", text))


def _late(p: dict, s: dict) -> bool:
    """Whether the plugin's surplus over the server's call window is all in the teardown window."""
    teardown = s.get("teardown")
    if not teardown:
        return False
    mine = Counter()
    for shape in p["queries"].get("shapes", []):
        mine[_key(shape["shape"], False)] += shape["count"]
    call = Counter()
    for query, calls in s["statements"]:
        call[_key(query, True)] += calls
    late = Counter()
    for query, calls in teardown["statements"]:
        late[_key(query, True)] += calls
    if any(call[k] > mine[k] for k in call):
        return False
    surplus = {k: mine[k] - call[k] for k in mine if mine[k] > call[k]}
    return bool(surplus) and all(late[k] >= n for k, n in surplus.items())


def main(argv: list[str]) -> int:
    """Print the classification; returns 0."""
    plugin = json.loads(Path(argv[0]).read_text())["tests"]
    server = json.loads(Path(argv[1]).read_text())
    equal: list[str] = []
    cursor: list[tuple[str, int]] = []
    many: list[tuple[str, int, int]] = []
    late: list[tuple[str, int, int]] = []
    only_server: list[tuple[str, int]] = []
    key_checks: list[tuple[str, int]] = []
    zero_both: list[tuple[str, int]] = []
    rest: list[tuple[str, int, int, int]] = []
    for nodeid, s in sorted(server.items()):
        p = plugin.get(nodeid)
        mine = (p or {}).get("queries", {}).get("count", 0) if p else 0
        executions = (p or {}).get("queries", {}).get("executions", mine) if p else 0
        traffic = sum(c for q, c in s["statements"] if _CURSOR_TRAFFIC.match(q))
        checks = sum(c for q, c in s["statements"] if _KEY_CHECK.match(q))
        if p is None and s["calls"] == checks:
            (zero_both if s["calls"] == 0 else key_checks).append((nodeid, checks))
        elif p is None:
            only_server.append((nodeid, s["calls"]))
        elif mine == s["calls"]:
            equal.append(nodeid)
        elif mine == s["calls"] - traffic:
            cursor.append((nodeid, traffic))
        elif checks and mine in (s["calls"] - checks, s["calls"] - checks - traffic):
            key_checks.append((nodeid, checks))
        elif executions != mine and executions in (s["calls"], s["calls"] - traffic):
            many.append((nodeid, mine, executions))
        elif executions > s["calls"] and _late(p, s):
            late.append((nodeid, executions, s["calls"]))
        else:
            rest.append((nodeid, mine, s["calls"], traffic))
    print(f"equal: {len(equal)}")
    print(f"equal once FETCH/CLOSE of server-side cursors are taken out: {len(cursor)} "
          f"({sum(t for _, t in cursor)} FETCH/CLOSE calls)")
    print(f"equal once executemany counts each execution (the report's executions): {len(many)} "
          f"({sum(e - m for _, m, e in many)} executions beyond the statements)")
    print(f"the plugin's surplus recorded by the server at teardown (statements left in an open "
          f"transaction at the end of the call): {len(late)} ({sum(m - c for _, m, c in late)} statements)")
    for nodeid, mine, calls in late:
        print(f"   {nodeid}: plugin {mine}, server {calls} in the call, the rest at teardown")
    print(f"equal once the server's own foreign-key checks (run at a commit for deferred keys) are taken "
          f"out: {len(key_checks)} ({sum(c for _, c in key_checks)} checks)")
    print(f"no statement on either side: {len(zero_both)}")
    print(f"statements on the server, none recorded by the plugin: {len(only_server)} "
          f"({sum(c for _, c in only_server)} calls)")
    for nodeid, calls in only_server:
        print(f"   {nodeid}: server {calls}")
    only_plugin = [(nodeid, p["queries"]["count"]) for nodeid, p in sorted(plugin.items())
                   if nodeid not in server and (p.get("queries") or {}).get("count")]
    print(f"statements recorded by the plugin in tests the server side never measured: {len(only_plugin)}")
    for nodeid, mine in only_plugin:
        print(f"   {nodeid}: plugin {mine}")
    print(f"unexplained: {len(rest)}")
    for nodeid, mine, calls, traffic in rest:
        print(f"   {nodeid}: plugin {mine}, server {calls} (FETCH/CLOSE {traffic})")
        for q, c in server[nodeid]["statements"]:
            print(f"      x{c} {q[:200]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
