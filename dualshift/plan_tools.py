"""Drafting a plan from the code's overlap clusters, and linting a plan against the code's call sites."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dualshift.analyzer.flow import Cluster, overlap_clusters
from dualshift.analyzer.records import CallSite
from dualshift.findings import Finding
from dualshift.plan import Plan, Source, line_of

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


def _filter_columns(call: CallSite) -> list[str]:
    return [f.column for f in call.filters if f.column]


def check_plan(
    plan: Plan,
    plan_text: str,
    calls: Iterable[CallSite],
    database_columns: Mapping[str, Iterable[str]] | None = None,
) -> list[Finding]:
    """Lint a plan against the code: what it would lose, what it does not need, what could collide.

    With `database_columns` (old table → its columns in the live database), a column the code uses
    that the database lacks is a warning about the code (dead code, a bug, or a column to create),
    not an error that no plan can satisfy."""
    calls = list(calls)
    lines = plan_text.splitlines()

    def locate(*needles: str) -> int | None:
        return line_of(lines, *needles)

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
            findings.append(
                Finding(
                    "warning",
                    "code-untouched-table",
                    f"old table {old} is in the plan but no code touches it",
                    table=table.name,
                    source=f"{source.schema}.{old}",
                    line=where,
                )
            )
        present = None
        if database_columns is not None and database_columns.get(old):
            present = set(database_columns[old])
        findings.extend(_unmapped(table.name, table.column_names, source, calls, where, present))
    for call in calls:
        if call.table is None and call.is_write:
            findings.append(
                Finding(
                    "warning",
                    "code-dynamic-table",
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
                    "code-new-table-in-use",
                    f"new table {new_table.name} already exists in the code ({', '.join(users[:3])})",
                    table=new_table.name,
                    line=locate(f'name = "{new_table.name}"'),
                )
            )
    return findings


def _unmapped(
    new: str,
    new_columns: tuple[str, ...],
    source: Source,
    calls: list[CallSite],
    where: int | None,
    present: set[str] | None,
):
    old = source.table
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
            located = {"table": new, "source": f"{source.schema}.{old}", "column": column, "line": where}
            if present is not None and column not in present:
                yield Finding(
                    "warning",
                    "code-column-absent",
                    f"{call.file}:{call.line} {how} {old}.{column}, which the database does not have "
                    "(dead code, a bug, or a column to create first)",
                    **located,
                )
                continue
            yield Finding(
                "warning" if how == "reads" else "error",
                "code-unmapped-column",
                f"{call.file}:{call.line} {how} {old}.{column}, which maps to no column of {new} "
                f"(add a rename, a column, or list it in drop)",
                **located,
            )


def read_plan_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# the report: a table for people, JSON for tools


def report_json(plan_path: str, findings: list[Finding]) -> str:
    """`{"plan", "passed", "errors", "warnings", "findings": [{severity, check, message, table, source,
    column, line, count, samples}]}`, findings in the order they were found."""
    errors = sum(f.is_error for f in findings)
    return json.dumps(
        {
            "plan": plan_path,
            "passed": errors == 0,
            "errors": errors,
            "warnings": len(findings) - errors,
            "findings": [f.as_dict() for f in findings],
        },
        indent=2,
        default=str,
    )


def report_table(plan_path: str, findings: list[Finding], console: Console) -> None:
    table = Table(title=f"plan check: {plan_path}", title_justify="left")
    # Everything but the problem stays on one line, so a `where` can be copied as it is.
    for column in ("where", "severity", "check", "source", "column", "rows"):
        table.add_column(column, justify="right" if column == "rows" else "left", no_wrap=True)
    table.add_column("problem", overflow="fold", min_width=30)
    for finding in findings:
        problem = finding.message
        if finding.samples:
            problem += " · sample keys: " + ", ".join(json.dumps(s, default=str) for s in finding.samples)
        table.add_row(
            f"{plan_path}:{finding.line}" if finding.line else plan_path,
            finding.severity,
            finding.check,
            finding.source or finding.table or "",
            finding.column or "",
            "" if finding.count is None else str(finding.count),
            problem,
        )
    console.print(table, highlight=False)
