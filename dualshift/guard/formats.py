"""The formats `dualshift check` writes: text, JSON, SARIF 2.1.0, GitHub Actions annotations, GitLab
code quality. Each takes the findings (and the rules) and returns the whole output as a string."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from dualshift import __version__
from dualshift.guard.rules import RULES, Finding

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
GITLAB_SEVERITY = {"error": "major", "warning": "minor", "note": "info"}
GITHUB_COMMAND = {"error": "error", "warning": "warning", "note": "notice"}


def text(found: list[Finding], root: Path) -> str:
    lines = [f"{f.file}:{f.line}:{f.column}: {f.level} {f.rule} {f.message}" for f in found]
    counts = {level: sum(f.level == level for f in found) for level in ("error", "warning", "note")}
    lines.append(f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['note']} ignored")
    return "\n".join(lines) + "\n"


def as_json(found: list[Finding], root: Path) -> str:
    return (
        json.dumps(
            {
                "tool": "dualshift check",
                "version": __version__,
                "findings": [
                    {
                        "rule": f.rule,
                        "name": RULES[f.rule].name,
                        "level": f.level,
                        "file": f.file,
                        "line": f.line,
                        "column": f.column,
                        "table": f.table,
                        "message": f.message,
                        "fingerprint": f.fingerprint,
                    }
                    for f in found
                ],
            },
            indent=2,
        )
        + "\n"
    )


def sarif(found: list[Finding], root: Path) -> str:
    rules = [
        {
            "id": rule.id,
            "name": rule.name,
            "shortDescription": {"text": rule.summary},
            "defaultConfiguration": {"level": rule.level},
        }
        for rule in RULES.values()
    ]
    index = {rule_id: number for number, rule_id in enumerate(RULES)}
    results = []
    for f in found:
        result = {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": f.level,
            "message": {"text": f.message},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.file, "uriBaseId": "SRCROOT"},
                        "region": {"startLine": f.line, "startColumn": f.column},
                    }
                }
            ],
            "partialFingerprints": {"dualshift/v1": f.fingerprint},
        }
        if f.rule == "DS900":
            result["suppressions"] = [{"kind": "inSource"}]
        results.append(result)
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dualshift",
                        "version": __version__,
                        "informationUri": "https://github.com/dualshift/dualshift",
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {"SRCROOT": {"uri": root.resolve().as_uri() + "/"}},
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def github(found: list[Finding], root: Path) -> str:
    """Workflow commands: each finding becomes an annotation on the pull request's diff."""

    def escape(value: str) -> str:
        return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    lines = [
        f"::{GITHUB_COMMAND[f.level]} file={escape(f.file)},line={f.line},col={f.column},title={f.rule}::"
        f"{escape(f.message)}"
        for f in found
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def gitlab(found: list[Finding], root: Path) -> str:
    """GitLab's code quality report (a Code Climate subset)."""
    issues = [
        {
            "description": f"{f.rule} {f.message}",
            "check_name": f.rule,
            "fingerprint": f.fingerprint,
            "severity": GITLAB_SEVERITY[f.level],
            "location": {"path": f.file, "lines": {"begin": f.line}},
        }
        for f in found
    ]
    return json.dumps(issues, indent=2) + "\n"


FORMATS: dict[str, Callable[[list[Finding], Path], str]] = {
    "text": text,
    "json": as_json,
    "sarif": sarif,
    "github": github,
    "gitlab": gitlab,
}
