"""The readiness gate: may reads switch to the new tables, may the old ones be archived?

Not while a write that can reach an old table skips the dual-write wrapper, unless the database's
sync triggers (`backfill --sync triggers`) mirror that table anyway. The code side is read from a scan
(the same rules as `dualshift check`); which tables the triggers cover is the executor's to say.
A new table that merges its sources (precedence = "coalesce") is written by the sync triggers only (the
wrapper leaves it to them): its old tables are ready only when the triggers cover them, whatever the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dualshift.analyzer.records import CallSite
from dualshift.guard.rules import Finding, apply_ignores, findings
from dualshift.plan import Plan


@dataclass(frozen=True)
class Readiness:
    blockers: dict[str, list[Finding]]  # old table → the writes that keep it from being ready
    covered_by_triggers: frozenset[str]
    needs_triggers: frozenset[str] = frozenset()  # old tables of a merging new table, not yet covered

    @property
    def ready(self) -> bool:
        return not any(self.blockers.values()) and not self.needs_triggers

    def trigger_lines(self) -> list[str]:
        """One line per old table that only the sync triggers can make ready."""
        return [
            f'{table}: its new table merges its sources (precedence = "coalesce"): only the sync triggers write'
            " it (`dualshift migrate backfill --sync triggers`)"
            for table in sorted(self.needs_triggers)
        ]

    def lines(self) -> list[str]:
        """One line per blocking site: `file:line: table operation: why`."""
        seen: set[tuple[str, int]] = set()
        out = []
        for table, found in sorted(self.blockers.items()):
            for finding in found:
                if (finding.file, finding.line) in seen:
                    continue
                seen.add((finding.file, finding.line))
                out.append(
                    f"{finding.file}:{finding.line}: {table if finding.table else '(run-time name)'}: {finding.message}"
                )
        return out


def merging_old_tables(plan: Plan) -> frozenset[str]:
    """Old tables whose new table merges its sources: the wrapper does not write it, the triggers do."""
    return frozenset(s.table for t in plan.tables if t.merges_sources for s in t.sources)


def assess(calls: Iterable[CallSite], root: Path, plan: Plan, covered_by_triggers: Iterable[str] = ()) -> Readiness:
    covered = frozenset(covered_by_triggers)
    found = [f for f in apply_ignores(findings(calls, plan, "in-flight"), root) if f.rule in ("DS001", "DS002")]
    blockers: dict[str, list[Finding]] = {table: [] for table in plan.old_tables}
    for finding in found:
        # A run-time name could be any old table: it blocks every table the triggers do not cover.
        for table in [finding.table] if finding.table else plan.old_tables:
            if table in blockers and table not in covered:
                blockers[table].append(finding)
    return Readiness(blockers, covered, merging_old_tables(plan) - covered)


def assess_tree(roots: Iterable[Path], plan: Plan, covered_by_triggers: Iterable[str] = ()) -> Readiness:
    """The gate over one or more source trees (`--code ROOT`, repeatable)."""
    from dualshift.analyzer.scan import scan_tree

    merged: dict[str, list[Finding]] = {}
    covered = frozenset(covered_by_triggers)
    for root in roots:
        result = assess(scan_tree(root).calls, root, plan, covered)
        for table, found in result.blockers.items():
            merged.setdefault(table, []).extend(found)
    return Readiness(merged, covered, merging_old_tables(plan) - covered)
