"""Compare two ``--junitxml`` files test by test: same test ids, same outcome each.

Usage: ``python bench/realapps/compare_outcomes.py OFF.xml ON.xml``

The outcome of a test case is ``passed``, ``failed``, ``error``, ``skipped`` (an
``<error>`` beside a ``<failure>`` or a pass, as pytest writes for a failing teardown,
makes ``error`` part of it: ``passed+error``). Prints the counts per outcome of each file,
then every test id whose outcome differs or that is in only one file. Exit code 0 when
identical, 1 otherwise.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter


def outcomes(path: str) -> dict[str, str]:
    """``{classname::name: outcome}`` of every ``<testcase>`` in the junit XML at ``path``."""
    result: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        base = "failed" if "failure" in tags else "skipped" if "skipped" in tags else "passed"
        outcome = f"{base}+error" if "error" in tags and base != "failed" else base
        if tags == ["error"]:
            outcome = "error"
        key = f"{case.get('classname')}::{case.get('name')}"
        while key in result:  # a test with both a call failure and a teardown error is written twice
            key += "'"
        result[key] = outcome
    return result


def main(argv: list[str]) -> int:
    """Print the comparison; 0 if every test has the same outcome in both files, else 1."""
    off, on = outcomes(argv[0]), outcomes(argv[1])
    print(f"{argv[0]}: {len(off)} tests {dict(Counter(off.values()))}")
    print(f"{argv[1]}: {len(on)} tests {dict(Counter(on.values()))}")
    bad = 0
    for key in sorted(set(off) | set(on)):
        if off.get(key) != on.get(key):
            bad += 1
            print(f"DIFFERENT {key}: {off.get(key)} -> {on.get(key)}")
    print("identical outcomes" if not bad else f"{bad} tests differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
