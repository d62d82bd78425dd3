"""Regenerate the README's report sample from a real run of the example suite.

    python bench/update_readme_sample.py          # rewrite the block in README.md
    python bench/update_readme_sample.py --check  # exit 1 when the block is out of date

The block sits between ``<!-- report-sample:start -->`` and ``<!-- report-sample:end -->``
and holds the command and the ``migsafe report`` section it printed. ``tests/test_examples.py``
runs the same command and compares the block with its output, apart from what no two runs
share (:func:`comparable`: the p99 timings, the PostgreSQL server's description, column
padding), so the README cannot drift from what the plugin prints.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START = "<!-- report-sample:start -->"
END = "<!-- report-sample:end -->"
SHOWN_COMMAND = "pytest examples --migsafe-report --migsafe-shadow-seed=1"
ARGS = ["examples", "--migsafe-report", "--migsafe-shadow-seed=1", "-p", "no:randomly", "-p", "no:cacheprovider"]
INDENT = "  "  # the block sits in a list item


def run_examples(extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the example suite with the report, as the sample shows it (300 s at most)."""
    return subprocess.run([sys.executable, "-m", "pytest", *ARGS], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(extra_env or {})))


def report_section(output: str) -> list[str]:
    """The lines of the ``migsafe report`` section of a pytest run's output (without its
    separator line and pytest's final ``=== ... ===`` line); [] when there is none."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if re.fullmatch(r"-+ migsafe report -+", line)), None)
    if start is None:
        return []
    section = []
    for line in lines[start + 1:]:
        if line.startswith("=") or re.fullmatch(r"-+ .* -+", line):
            break
        section.append(line)
    return section


def sample_lines(section: list[str]) -> list[str]:
    """The README block: markers, fence, the command, the section, indented for the list."""
    body = [f"$ {SHOWN_COMMAND}", *section]
    return [START, f"{INDENT}```", *[(INDENT + line).rstrip() for line in body], f"{INDENT}```", END]


def readme_section(text: str) -> list[str]:
    """The report section in the README's block (without the command line), unindented;
    ``ValueError`` when the markers are missing."""
    start, end = text.index(START), text.index(END)
    lines = [line[len(INDENT):] if line.startswith(INDENT) else line for line in text[start:end].splitlines()[1:]]
    lines = [line for line in lines if line != "```"]
    return [line for line in lines if not line.startswith("$ ")]


def replace_block(text: str, section: list[str]) -> str:
    """``text`` (the README) with its block replaced by ``section``."""
    start, end = text.index(START), text.index(END) + len(END)
    return text[:start] + "\n".join(sample_lines(section)) + text[end:]


def comparable(section: list[str]) -> list[str]:
    """The section without what differs from run to run: the p99 cells of the shadow table
    (``<ms>``), the PostgreSQL server's description, and the padding between columns."""
    out = []
    p99 = None
    for line in section:
        cells = re.split(r"\s{2,}", line.strip())
        if "p99 ms" in cells:
            p99 = cells.index("p99 ms")
        elif p99 is not None and line.startswith("  ") and len(cells) > p99:
            cells[p99] = "<ms>"
        else:
            p99 = None if not line.startswith("  ") else p99
        text = " ".join(cells)
        if text.startswith("note: PostgreSQL: "):
            text = "note: PostgreSQL: <server>"
        out.append(text)
    return out


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or ``--check``) the README block; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only tell whether the block is up to date")
    args = parser.parse_args(argv)
    done = run_examples()
    section = report_section(done.stdout)
    if done.returncode != 0 or not section:
        print(done.stdout[-3000:] + done.stderr[-2000:], file=sys.stderr)
        return 2
    text = README.read_text(encoding="utf-8")
    if args.check:
        same = comparable(readme_section(text)) == comparable(section)
        print("README sample is up to date" if same else "README sample is out of date")
        return 0 if same else 1
    README.write_text(replace_block(text, section), encoding="utf-8")
    print(f"README sample rewritten ({len(section)} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
