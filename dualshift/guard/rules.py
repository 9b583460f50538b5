"""`dualshift check`: the rules a change is held to while a migration is in flight, and after cleanup.

Findings come from the call-site records of a scan and the plan; each has a stable rule id. A
`// dualshift-ignore: DS001 reason` (`# dualshift-ignore: …` in Python) on the call's line or the line
above silences that rule there, and is itself reported (DS900), so nothing is hidden from review.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dualshift.analyzer.records import CallSite
from dualshift.codemods.wrap import is_wrapped
from dualshift.plan import Plan

Level = Literal["error", "warning", "note"]
Stage = Literal["in-flight", "cleaned"]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    level: Level
    summary: str


RULES = {
    rule.id: rule
    for rule in (
        Rule(
            "DS001",
            "unwrapped-write",
            "error",
            "A write to a planned old table does not go through the dual-write wrapper.",
        ),
        Rule(
            "DS002",
            "runtime-table-write",
            "warning",
            "A write through a run-time table name could reach a planned old table.",
        ),
        Rule("DS003", "write-to-archived-table", "error", "A write names an old table the migration has archived."),
        Rule(
            "DS004",
            "read-of-archived-table",
            "warning",
            "A read names an old table: it goes through a compatibility view.",
        ),
        Rule("DS900", "ignored", "note", "A finding silenced by a dualshift-ignore comment."),
    )
}
IGNORE = re.compile(r"(?://|#)\s*dualshift-ignore:\s*(DS\d{3})\b[ \t]*(.*)")


@dataclass(frozen=True)
class Finding:
    rule: str
    file: str
    line: int
    column: int
    table: str | None
    message: str
    code: str

    @property
    def level(self) -> Level:
        return RULES[self.rule].level

    @property
    def fingerprint(self) -> str:
        """Stable across unrelated edits (no line number): rule, file, table and the call's code."""
        text = " ".join(self.code.split())
        return hashlib.sha256(f"{self.rule}\0{self.file}\0{self.table}\0{text}".encode()).hexdigest()[:24]


def findings(calls: Iterable[CallSite], plan: Plan, stage: Stage) -> list[Finding]:
    found: dict[tuple, Finding] = {}
    mapping = plan.table_mapping  # built on each access: once here, not once per call
    for call in calls:
        finding = _finding(call, plan, mapping, stage)
        if finding is not None:
            found.setdefault((finding.rule, call.file, call.start_byte), finding)  # one per site, not per table
    return sorted(found.values(), key=lambda f: (f.file, f.line, f.column, f.rule))


def _finding(call: CallSite, plan: Plan, mapping: dict[str, str], stage: Stage) -> Finding | None:
    where = (call.file, call.line, call.column)
    if call.table is None:
        if call.is_write and not is_wrapped(call) and stage == "in-flight":
            message = (
                f"{call.operation} through the run-time table name `{call.table_expression}`, which could be a"
                f" planned old table: wrap the client by hand (dualWrite(client)) or use a literal name"
            )
            return Finding("DS002", *where, None, message, call.code)
        return None
    new_table = mapping.get(call.table)
    if new_table is None:
        return None
    if stage == "in-flight":
        if call.is_write and not is_wrapped(call):
            message = (
                f"{call.operation} on {call.table} bypasses the dual-write wrapper while it is being merged into"
                f" {new_table}: run `dualshift codemod wrap . --plan PLAN --file {call.file}`"
            )
            return Finding("DS001", *where, call.table, message, call.code)
        return None
    renamed = plan.table(new_table).column_mapping(call.table)
    mapping = ", ".join(f"{old} → {new}" for old, new in renamed.items() if old != new) or "same column names"
    if call.is_write:
        message = f"{call.operation} on {call.table}, archived by the migration: write to {new_table} ({mapping})"
        return Finding("DS003", *where, call.table, message, call.code)
    message = f"{call.table} is now a compatibility view: read {new_table} instead ({mapping})"
    return Finding("DS004", *where, call.table, message, call.code)


def apply_ignores(found: list[Finding], root: Path) -> list[Finding]:
    """Silence each finding whose line or the line above carries `dualshift-ignore: <its rule>`."""
    lines_of: dict[str, list[str]] = {}
    kept: list[Finding] = []
    for finding in found:
        if finding.file not in lines_of:
            try:
                lines_of[finding.file] = (root / finding.file).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                lines_of[finding.file] = []
        lines = lines_of[finding.file]
        reason = _ignore_reason(lines, finding)
        if reason is None:
            kept.append(finding)
            continue
        note = f"{finding.rule} ignored: {reason or '(no reason given)'} — {finding.message}"
        kept.append(Finding("DS900", finding.file, finding.line, finding.column, finding.table, note, finding.code))
    return kept


def _ignore_reason(lines: list[str], finding: Finding) -> str | None:
    for number in (finding.line, finding.line - 1):
        if 1 <= number <= len(lines):
            match = IGNORE.search(lines[number - 1])
            if match and match.group(1) == finding.rule:
                return match.group(2).strip()
    return None
