"""SARIF 2.1.0 and GitHub workflow commands: findings at the lines of code that caused them.

Three kinds of finding, each a SARIF rule:

- ``migsafe/n-plus-one`` (level ``warning``): an N+1 suspect no ``allow_n_plus_one`` rule
  covers, at its call site (``path:line`` from
  :func:`pytest_migsafe.queries.callsite.call_site`);
- ``migsafe/query-budget`` (``error``): a test that ran more statements than its
  ``max_queries`` budget, at the call site that sent its most frequent shape;
- ``migsafe/regression`` (``error``): a figure that regressed against the baseline, at the
  call site whose statements grew most (queries), of the new suspect (N+1), else at the
  test's file, line 1.

:func:`sarif_document` builds the SARIF log (a JSON-able dict with ``version``
``"2.1.0"``, ``$schema``, one run with ``tool.driver`` and its rules, and ``results``,
each with ``ruleId``, ``level``, ``message.text`` and one ``physicalLocation``: a
relative ``artifactLocation.uri`` under ``uriBaseId`` ``%SRCROOT%`` and a
``region.startLine`` >= 1). :func:`github_annotations` renders the N+1 suspects and
regressions as ``::warning`` / ``::error`` workflow commands, escaped by GitHub's rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pytest_migsafe import __version__
from pytest_migsafe.report.record import RunReport
from pytest_migsafe.report.regressions import Change, Comparison, file_of
from pytest_migsafe.report.render import elide_shape, format_value, suspects_of

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/pytest-migsafe/pytest-migsafe"
RULES = {
    "migsafe/n-plus-one": ("warning", "N+1 suspect: one statement shape repeated from one call site"),
    "migsafe/query-budget": ("error", "A test ran more statements than its max_queries budget"),
    "migsafe/regression": ("error", "A figure regressed against the migsafe baseline"),
}


@dataclass(frozen=True)
class Finding:
    """One finding: ``rule`` (a key of :data:`RULES`), ``level`` (``"warning"`` or
    ``"error"``), ``path`` (relative to the rootdir) and ``line`` (1-based) of its call
    site, ``title`` (one line) and ``message`` (may span lines)."""

    rule: str
    level: str
    path: str
    line: int
    title: str
    message: str


def split_site(site: str, fallback: str) -> tuple[str, int]:
    """``path:line`` as ``(path, line)``; a site without a line number (``<unknown>``) gives
    ``(fallback, 1)``, ``fallback`` being the test's file."""
    path, _, line = site.rpartition(":")
    if path and line.isdigit() and int(line) >= 1 and not path.startswith("<"):
        return path, int(line)
    return fallback, 1


def findings(report: RunReport, comparison: Comparison | None) -> list[Finding]:
    """Every finding of the run: N+1 suspects and budget failures by test id, then the
    regressions in the comparison's order."""
    found: list[Finding] = []
    for nodeid in sorted(report.tests):
        record = report.tests[nodeid]
        test_file = file_of(nodeid)
        for suspect in suspects_of(record):
            path, line = split_site(suspect.call_site, test_file)
            found.append(Finding(
                "migsafe/n-plus-one", "warning", path, line, f"N+1 suspect x{suspect.count}",
                f"{nodeid}: {elide_shape(suspect.shape, 200)} repeated {suspect.count} times from "
                f"{suspect.call_site}"))
        figures = record.queries
        if figures is not None and figures.budget is not None and figures.count > figures.budget:
            top = max(figures.shapes, key=lambda s: (s.count, s.shape)) if figures.shapes else None
            path, line = split_site(top.top_site if top else "", test_file)
            detail = f"; most frequent: x{top.count} {elide_shape(top.shape, 200)}" if top else ""
            found.append(Finding(
                "migsafe/query-budget", "error", path, line,
                f"{figures.count} statements over a budget of {figures.budget}",
                f"{nodeid}: {figures.count} statements, max_queries({figures.budget}){detail}"))
    for change in (comparison.regressions if comparison else []):
        found.append(regression_finding(change, report))
    return found


def regression_finding(change: Change, report: RunReport) -> Finding:
    """The finding of one regression, at the call site that explains it best (see the
    module docstring)."""
    test_file = file_of(change.nodeid)
    site = ""
    if change.figure == "queries":
        grown = [d for d in change.shapes if d.get("delta", 0) > 0 and d.get("call_site")]
        site = grown[0]["call_site"] if grown else ""
    elif change.figure == "n_plus_one":
        record = report.tests.get(change.nodeid)
        for suspect in suspects_of(record) if record is not None else []:
            if suspect.shape == change.after:
                site = suspect.call_site
                break
    path, line = split_site(site, test_file)
    before = format_value(change.figure, change.before, 200)
    after = format_value(change.figure, change.after, 200)
    title = f"migsafe regression: {change.label}"
    message = f"{change.nodeid}: {change.label} {before} -> {after}"
    if change.note:
        message += f" ({change.note})"
    for delta in change.shapes[:3]:
        where = f" at {delta['call_site']}" if delta.get("call_site") else ""
        message += f"\n{delta['delta']:+d} {elide_shape(delta['shape'], 200)}{where}"
    return Finding("migsafe/regression", "error", path, line, title, message)


def sarif_document(report: RunReport, comparison: Comparison | None) -> dict[str, Any]:
    """The SARIF 2.1.0 log of the run's findings (see the module docstring for its shape)."""
    rules = [{"id": rule_id, "name": rule_id.split("/", 1)[1],
              "shortDescription": {"text": text},
              "defaultConfiguration": {"level": level},
              "helpUri": f"{INFORMATION_URI}#the-ci-report"}
             for rule_id, (level, text) in RULES.items()]
    index = {rule_id: position for position, rule_id in enumerate(RULES)}
    results = [{
        "ruleId": finding.rule,
        "ruleIndex": index[finding.rule],
        "level": finding.level,
        "message": {"text": finding.message},
        "locations": [{"physicalLocation": {
            # a relative URI reference (SARIF 2.1.0 3.10): "#", "%", spaces... percent-encoded
            "artifactLocation": {"uri": quote(finding.path, safe="/"), "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": finding.line},
        }}],
    } for finding in findings(report, comparison)]
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {"name": "pytest-migsafe", "version": __version__,
                                "informationUri": INFORMATION_URI, "rules": rules}},
            "results": results,
        }],
    }


def escape_data(text: str) -> str:
    """A workflow command's message escaped by GitHub's rules: ``%`` -> ``%25``,
    ``\\r`` -> ``%0D``, ``\\n`` -> ``%0A``."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value (``file=``, ``title=``) escaped: as
    :func:`escape_data`, plus ``:`` -> ``%3A`` and ``,`` -> ``%2C``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(report: RunReport, comparison: Comparison | None) -> list[str]:
    """``::warning file=...,line=...,title=...::message`` lines for the N+1 suspects and
    ``::error ...`` lines for the regressions (budget failures are left to pytest's own
    failure output), one a line, escaped."""
    lines = []
    for finding in findings(report, comparison):
        if finding.rule == "migsafe/query-budget":
            continue
        command = "warning" if finding.level == "warning" else "error"
        lines.append(f"::{command} file={escape_property(finding.path)},line={finding.line},"
                     f"title={escape_property(finding.title)}::{escape_data(finding.message)}")
    return lines
