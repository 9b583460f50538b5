"""Drafting a plan from the code's overlap clusters, and linting a plan against the code's call sites."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dualshift.analyzer.flow import Cluster, overlap_clusters
from dualshift.analyzer.records import CallSite
from dualshift.plan import Plan, _PlanReader

# ---------------------------------------------------------------------------------------------
# plan init


def _key_for(cluster: Cluster) -> str:
    ids = [c for c in cluster.shared_columns if c.endswith("_id")]
    return "decision_id" if "decision_id" in ids else (ids[0] if ids else "id")


def _columns_of(table: str, calls: list[CallSite]) -> list[str]:
    seen: list[str] = []
    for call in calls:
        if call.table == table:
            seen.extend(c for c in call.columns if c not in seen)
    return seen


def draft_plan(calls: Iterable[CallSite]) -> str:
    """A commented TOML plan with one new table per overlap cluster, for a human to finish."""
    calls = list(calls)
    clusters = overlap_clusters(calls)
    lines = [
        "# Draft written by `dualshift plan init` from the overlap clusters of the code.",
        "# Check every TODO: the new table names, the column types, the key, and the renames.",
        "# Sources are in precedence order: on a key conflict the first source wins.",
        "version = 1",
        'name = "consolidation"  # TODO: the migration\'s id; the executor keys its state by it',
        "",
        "[schemas]",
        'new = "public"',
        'target = "public"',
        'archive = "dualshift_archive"',
        "",
        "[verify]",
        "max_missing_rows = 0",
        "max_extra_rows = 0",
        "max_mismatched_rows = 0",
        "freshness_hours = 24",
    ]
    for number, cluster in enumerate(clusters, start=1):
        key = _key_for(cluster)
        columns: list[str] = [key]
        for table in cluster.tables:
            columns.extend(c for c in _columns_of(table, calls) if c not in columns)
        lines += [
            "",
            f"# ─── cluster {number}: {' + '.join(cluster.tables)} (score {cluster.score:.2f})",
            *(f"#     {reason}" for reason in cluster.reasons),
            "[[tables]]",
            f'name = "{cluster.tables[0]}_v2"  # TODO: the new table\'s name',
            f'key = ["{key}"]  # TODO: the columns that identify one row',
            "columns = [  # TODO: the types; every column the code uses on the old tables is listed",
            *(f'  {{ name = "{c}", type = "text"{", nullable = false" if c == key else ""} }},' for c in columns),
            "]",
        ]
        for table in cluster.tables:
            lines += ["", "  [[tables.sources]]", f'  table = "{table}"', f'  key = ["{key}"]']
    if not clusters:
        lines += ["", "# No overlapping tables were found; declare [[tables]] by hand."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# plan check


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    line: int | None
    message: str

    def render(self, plan_path: str) -> str:
        where = f"{plan_path}:{self.line}" if self.line else plan_path
        return f"{where}: {self.level}: {self.message}"


def _filter_columns(call: CallSite) -> list[str]:
    return [f.column for f in call.filters if f.column]


def check_plan(plan: Plan, plan_text: str, calls: Iterable[CallSite]) -> list[Finding]:
    """Lint a plan against the code: what it would lose, what it does not need, what could collide."""
    calls = list(calls)
    locate = _PlanReader(plan_text, plan.path).line_of
    findings: list[Finding] = []
    mapping = plan.table_mapping
    touched = {c.table for c in calls if c.table}
    for old, new in sorted(mapping.items()):
        table = plan.table(new)
        source = table.source(old) if table else None
        if table is None or source is None:
            continue
        where = locate(f'table = "{old}"')
        if old not in touched:
            findings.append(Finding("warning", where, f"old table {old} is in the plan but no code touches it"))
        findings.extend(_unmapped(old, table.name, table.column_names, source, calls, where))
    for call in calls:
        if call.table is None and call.is_write:
            findings.append(
                Finding(
                    "warning",
                    None,
                    f"{call.file}:{call.line}: a {call.operation} on a table known only at run time "
                    f"({call.table_expression}) could hit a planned table and bypass the dual write",
                )
            )
    for new_table in plan.tables:
        users = sorted({f"{c.file}:{c.line}" for c in calls if c.table == new_table.name})
        if users:
            findings.append(
                Finding(
                    "error",
                    locate(f'name = "{new_table.name}"'),
                    f"new table {new_table.name} already exists in the code ({', '.join(users[:3])})",
                )
            )
    return findings


def _unmapped(old: str, new: str, new_columns: tuple[str, ...], source, calls: list[CallSite], where: int | None):
    reported: set[tuple[str, str]] = set()
    for call in calls:
        if call.table != old:
            continue
        used = [(c, "writes") for c in call.write_columns]
        used += [(c, "filters on") for c in [*_filter_columns(call), *call.on_conflict]]
        used += [(c, "reads") for c in call.select_columns]
        for column, how in used:
            if source.new_column(column, new_columns) is not None or column in source.drop:
                continue
            if (column, how) in reported:
                continue
            reported.add((column, how))
            level = "warning" if how == "reads" else "error"
            yield Finding(
                level,
                where,
                f"{call.file}:{call.line} {how} {old}.{column}, which maps to no column of {new} "
                f"(add a rename, a column, or list it in drop)",
            )


def read_plan_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")
