"""The Python versions pyproject.toml admits are those the package can run on."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# what the package uses that an older Python rejects, found in its source: re's possessive
# quantifiers and atomic groups (3.11: on 3.10, importing the statement splitter raised
# "multiple repeat" and every test running SQL failed with the plugin installed)
NEEDS = [(re.compile(r"[*+?}]\+|\(\?>"), (3, 11), "a possessive quantifier or atomic group in a pattern")]


def _floor() -> tuple[int, ...]:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    found = re.fullmatch(r">=\s*(\d+)\.(\d+)", spec.strip())
    assert found, f"requires-python {spec!r}: expected the form '>=3.N'"
    return int(found.group(1)), int(found.group(2))


_RAW_LITERAL = re.compile(r'\br"""(.*?)"""|\br"([^"\n]*)"|\br\'([^\'\n]*)\'', re.S)


def _pattern_literals(text: str) -> list[str]:
    """The raw string literals of a module (where its regular expressions are written)."""
    return ["".join(groups) for groups in _RAW_LITERAL.findall(text)]


def test_requires_python_admits_no_version_the_package_cannot_import_on() -> None:
    floor = _floor()
    for path in sorted((ROOT / "pytest_migsafe").rglob("*.py")):
        for literal in _pattern_literals(path.read_text()):
            for feature, needed, what in NEEDS:
                if feature.search(literal):
                    assert floor >= needed, (f"{path.relative_to(ROOT)} uses {what} ({literal[:40]!r}), new in "
                                             f"Python {needed[0]}.{needed[1]}: requires-python admits {floor}")


def test_the_lowest_python_classifier_is_the_floor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = sorted(tuple(int(n) for n in c.rsplit(":: ", 1)[1].split(".")) for c in project["classifiers"]
                   if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c))
    assert named and named[0] == _floor(), f"the lowest Python classifier {named[:1]} is not requires-python's {_floor()}"


def test_this_interpreter_is_admitted() -> None:
    assert sys.version_info[:2] >= _floor()
