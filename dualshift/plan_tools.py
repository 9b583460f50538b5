"""Drafting a plan from the code's overlap clusters, and linting a plan against the code's call sites."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dualshift.analyzer.flow import Cluster, overlap_clusters
from dualshift.analyzer.records import CallSite
from dualshift.executor.introspect import TableInfo
from dualshift.findings import Finding
from dualshift.plan import FORBIDDEN_IN_SNIPPET, Plan, Source, line_of

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
        "# Sources are in precedence order: on a key conflict the first source wins (or its first non-NULL value).",
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


def todo_findings(plan_text: str) -> list[Finding]:
    """A TODO left in the plan is a warning naming its line (a draft's TODOs are what a human must read)."""
    return [
        Finding("warning", "todo", line.split("TODO", 1)[1].lstrip(": ").strip() or "TODO", line=number)
        for number, line in enumerate(plan_text.splitlines(), start=1)
        if "TODO" in line
    ]


def read_plan_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# the report: a table for people, JSON for tools


def precedence_summary(plan: Plan) -> dict[str, dict[str, Any]]:
    """Per new table with more than one source: its precedence rule and the columns that override it."""
    summary: dict[str, dict[str, Any]] = {}
    for table in plan.tables:
        if len(table.sources) < 2:
            continue
        overrides = {
            c: table.column_precedence(c)
            for c in table.column_names
            if c not in table.key and table.column_precedence(c) != table.precedence
        }
        summary[table.name] = {"rule": table.precedence, "columns": overrides}
    return summary


def precedence_text(plan: Plan) -> str:
    """One line per table, e.g. `precedence: content_queue coalesce (status: first)`."""
    lines = []
    for name, rule in precedence_summary(plan).items():
        overrides = ", ".join(f"{c}: {r}" for c, r in rule["columns"].items())
        lines.append(f"precedence: {name} {rule['rule']}" + (f" ({overrides})" if overrides else ""))
    return "\n".join(lines)


def report_json(
    plan_path: str, findings: list[Finding], plan: Plan | None = None, dependents: list[dict] | None = None
) -> str:
    """`{"plan", "passed", "errors", "warnings", "findings": [{severity, check, message, table, source,
    column, line, count, samples}], "precedence": {new table: {"rule", "columns": {column: rule}}},
    "dependents": [{kind, name, old_table, detail, decision, can}]}` (dependents: with --dsn only),
    findings in the order they were found."""
    errors = sum(f.is_error for f in findings)
    return json.dumps(
        {
            "plan": plan_path,
            "passed": errors == 0,
            "errors": errors,
            "warnings": len(findings) - errors,
            "findings": [f.as_dict() for f in findings],
            "precedence": precedence_summary(plan) if plan is not None else {},
            "dependents": dependents or [],
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


# ---------------------------------------------------------------------------------------------
# plan init --dsn: a draft from the live catalog that loads and passes `plan check --dsn` as written

_INTEGERS = ("smallint", "integer", "bigint")
_WIDENINGS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({*_INTEGERS, "numeric"}), "numeric"),
    (frozenset({"real", "double precision"}), "double precision"),
    (frozenset({"timestamp without time zone", "timestamp with time zone"}), "timestamp with time zone"),
    (frozenset({"character varying", "character", "text"}), "text"),
    (frozenset({"json", "jsonb"}), "jsonb"),
)


def widest_type(types: Iterable[str]) -> tuple[str, bool]:
    """The narrowest type that holds every value of every given type without loss, and whether one
    was found (else text, which a human must confirm)."""
    distinct = list(dict.fromkeys(types))
    if len(distinct) == 1:
        return distinct[0], True
    bases = {re.sub(r"\(\d+(,\d+)?\)", "", t) for t in distinct}
    if bases <= set(_INTEGERS):
        return max(bases, key=_INTEGERS.index), True
    for family, wide in _WIDENINGS:
        if bases <= family:
            return wide, True
    return "text", False


@dataclass(frozen=True)
class _Key:
    """A unique NOT NULL key of one table as a candidate for the new table's key."""

    columns: tuple[str, ...]
    types: tuple[str, ...]

    def matches(self, table: TableInfo) -> tuple[str, ...] | None:
        """The table's own key that lines up with this one (same types; a name in common), if any."""
        for key in _natural_keys(table):
            types = tuple(table.column_type(c) for c in key)
            if types == self.types and set(key) & set(self.columns):
                return key
        return None


def _natural_keys(table: TableInfo) -> list[tuple[str, ...]]:
    """Unique NOT NULL keys that mean the same row in another table: not serial or identity counters."""
    return [k for k in table.keys if not all(table.columns[c].surrogate for c in k)]


def _choose_key(members: list[TableInfo]) -> tuple[_Key | None, dict[str, tuple[str, ...]]]:
    """The candidate key that the most tables share, and each sharing table's own key columns."""
    best: tuple[_Key | None, dict[str, tuple[str, ...]]] = (None, {})
    for table in members:
        for columns in _natural_keys(table):
            candidate = _Key(columns, tuple(table.column_type(c) for c in columns))
            sharing = {t.name: key for t in members if (key := candidate.matches(t)) is not None}
            if len(sharing) > len(best[1]):
                best = (candidate, sharing)
    return best


def _toml(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def draft_plan_from_database(
    tables: Mapping[str, TableInfo], clusters: Iterable[tuple[tuple[str, ...], Iterable[str]]]
) -> str:
    """A plan with one new table per cluster, typed, keyed and checked from the live catalog.

    Keys come only from real unique NOT NULL keys (serial and identity counters are per table and
    are dropped); a table that shares none with the others is left out, saying why. Each new column
    takes the widest type of its sources; it is NOT NULL only where every source has it NOT NULL; a
    default or a check is kept only where every source has the same one. `plan check --dsn` passes
    on the draft as written; its TODOs are warnings to read."""
    lines = [
        "# Draft written by `dualshift plan init --dsn` from the live catalog and the code's clusters.",
        "# Types, keys, nullability, defaults and checks are the database's; TODO marks what needs a human.",
        "# Sources are in precedence order: on a key conflict the first source wins (or its first non-NULL value).",
        "version = 1",
        'name = "consolidation"  # TODO: the migration\'s id; the executor keys its state by it',
    ]
    drafted = 0
    for number, (cluster, reasons) in enumerate(clusters, start=1):
        lines += ["", f"# ─── cluster {number}: {' + '.join(cluster)}", *(f"#     {r}" for r in reasons)]
        absent = [t for t in cluster if t not in tables]
        if absent:
            lines.append(f"#     not tables of the database (left out): {', '.join(absent)}")
        members = [tables[t] for t in cluster if t in tables]
        key, sharing = _choose_key(members)
        if key is None or len(sharing) < 2:
            lines.append("#     no new table drafted: no unique NOT NULL key is shared by two of these tables")
            lines += [f"#       {t.name}: keys {[list(k) for k in t.keys] or 'none'}" for t in members]
            continue
        for table in members:
            if table.name not in sharing:
                keys = [list(k) for k in _natural_keys(table)] or "none"
                lines.append(
                    f"#     {table.name} left out: none of its unique NOT NULL keys ({keys}) lines up with {list(key.columns)}"
                )
        sources = [t for t in members if t.name in sharing]
        lines += _draft_table(sources, sharing)
        drafted += 1
    if not drafted:
        lines += ["", "# No cluster could be drafted; declare [[tables]] by hand."]
    return "\n".join(lines) + "\n"


def _draft_table(sources: list[TableInfo], sharing: Mapping[str, tuple[str, ...]]) -> list[str]:
    first = sources[0]
    key_names = sharing[first.name]
    renames: dict[str, dict[str, str]] = {}
    drops: dict[str, list[str]] = {}
    feeds: dict[str, list[tuple[TableInfo, str]]] = {}  # new column → (source, old column)
    for table in sources:
        rename = {old: new for old, new in zip(sharing[table.name], key_names, strict=True) if old != new}
        renames[table.name] = rename
        targets = set(rename.values())
        drops[table.name] = []
        for column in table.columns.values():
            if column.surrogate or column.generated or (column.name in targets and column.name not in rename):
                drops[table.name].append(column.name)
                continue
            feeds.setdefault(rename.get(column.name, column.name), []).append((table, column.name))
    lines = [
        "[[tables]]",
        f"name = {_toml(_new_name(first.name))}  # TODO: the new table's name",
        f"key = {_toml(list(key_names))}",
        *_precedence_lines(sources, feeds),
        "columns = [",
    ]
    for new, fed in feeds.items():
        infos = [t.columns[old] for t, old in fed]
        column_type, lossless = widest_type(i.type for i in infos)
        parts = [f"name = {_toml(new)}", f"type = {_toml(column_type)}"]
        if new in key_names or (len(fed) == len(sources) and all(i.not_null for i in infos)):
            parts.append("nullable = false")
        defaults = {i.default for i in infos}
        if len(defaults) == 1 and (default := defaults.pop()) and not FORBIDDEN_IN_SNIPPET.search(default):
            parts.append(f"default = {_toml(default)}")
        note = "" if lossless else f"  # TODO: the sources disagree ({', '.join(sorted({i.type for i in infos}))})"
        lines.append(f"  {{ {', '.join(parts)} }},{note}")
    lines.append("]")
    common_checks = [
        c for c in first.checks if all(c in t.checks for t in sources) and not FORBIDDEN_IN_SNIPPET.search(c)
    ]
    if common_checks:
        lines += ["checks = [", *(f"  {_toml(c)}," for c in common_checks), "]"]
    indexes = _common_indexes(sources, renames, list(feeds))
    if indexes:
        lines += ["indexes = [", *(f"  {_toml(list(i))}," for i in indexes), "]"]
    for position, table in enumerate(sources):
        lines += ["", "  [[tables.sources]]", f"  table = {_toml(table.name)}"]
        if position == 0 and len(sources) > 1:
            lines[-1] += "  # TODO: precedence: the first source listed wins a key both hold" + (
                " (column by column, under coalesce)" if _lacking(sources, feeds) else ""
            )
        if table.schema != "public":
            lines.append(f"  schema = {_toml(table.schema)}")
        lines.append(f"  key = {_toml(list(sharing[table.name]))}")
        if renames[table.name]:
            pairs = ", ".join(f"{old} = {_toml(new)}" for old, new in renames[table.name].items())
            lines.append(f"  rename = {{ {pairs} }}")
        if drops[table.name]:
            lines.append(f"  drop = {_toml(drops[table.name])}  # serial/identity counters and generated columns")
        lines += _access_notes(table)
    return lines


def _lacking(sources: list[TableInfo], feeds: Mapping[str, list[tuple[TableInfo, str]]]) -> dict[str, list[str]] | None:
    """Per source, the columns it feeds that another source lacks; None unless every source has some."""
    lacking = {
        table.name: [new for new, fed in feeds.items() if any(t is table for t, _ in fed) and len(fed) < len(sources)]
        for table in sources
    }
    return lacking if len(sources) > 1 and all(lacking.values()) else None


def _precedence_lines(sources: list[TableInfo], feeds: Mapping[str, list[tuple[TableInfo, str]]]) -> list[str]:
    """`precedence = "coalesce"` for sources that each hold columns another lacks: under "first" a key both
    hold would take the first source's row and lose the other's columns (left NULL)."""
    lacking = _lacking(sources, feeds)
    if lacking is None:
        return []
    held = "; ".join(
        f"{name}: {', '.join(columns[:3])}{', …' if len(columns) > 3 else ''}" for name, columns in lacking.items()
    )
    return [
        f"# Each source holds columns another lacks ({held}).",
        "# So a key several hold takes, column by column, the first non-NULL value in source order:",
        'precedence = "coalesce"',
    ]


def _common_indexes(
    sources: list[TableInfo], renames: Mapping[str, Mapping[str, str]], new_columns: list[str]
) -> list[tuple[str, ...]]:
    """The plain indexes every source has (in new-column names)."""
    common: set[tuple[str, ...]] | None = None
    for table in sources:
        rename = renames[table.name]
        mine = {tuple(rename.get(c, c) for c in index) for index in table.indexes}
        common = mine if common is None else common & mine
    return sorted(i for i in common or () if all(c in new_columns for c in i))


def _access_notes(table: TableInfo) -> list[str]:
    """What the draft does not carry, for a decision: `create` copies grants and row security from the
    old tables; triggers stay on them."""
    notes = []
    if table.row_security or table.policies:
        state = "on" if table.row_security else "off"
        notes.append(f"  # row security {state}; policies: {', '.join(table.policies) or 'none'}")
    if table.triggers:
        notes.append(f"  # TODO: triggers on {table.name} ({', '.join(table.triggers)}) are not carried over")
    return notes


def _new_name(first: str) -> str:
    return (first[:60] + "_v2") if len(first) > 60 else f"{first}_v2"


def catalog_clusters(
    tables: Mapping[str, TableInfo], threshold: float = 0.5
) -> list[tuple[tuple[str, ...], list[str]]]:
    """Without the code: tables linked when they share a natural key and at least `threshold` of their
    columns (Jaccard, counters left out); a cluster is a connected group of links."""
    import networkx as nx

    links = nx.Graph()
    reasons: dict[frozenset[str], str] = {}
    names = sorted(tables)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ta, tb = tables[a], tables[b]
            shared_key = next(
                (k for k in _natural_keys(ta) if _Key(k, tuple(ta.column_type(c) for c in k)).matches(tb)), None
            )
            if shared_key is None:
                continue
            ca = {c for c, info in ta.columns.items() if not info.surrogate}
            cb = {c for c, info in tb.columns.items() if not info.surrogate}
            overlap = len(ca & cb) / len(ca | cb)
            if overlap >= threshold:
                links.add_edge(a, b)
                reasons[frozenset((a, b))] = (
                    f"{a} ~ {b}: key ({', '.join(shared_key)}), {len(ca & cb)} of {len(ca | cb)} columns in common"
                )
    clusters = []
    for component in nx.connected_components(links):
        members = tuple(sorted(component))
        why = [r for pair, r in reasons.items() if pair <= component]
        clusters.append((members, why))
    return sorted(clusters, key=lambda c: (-len(c[0]), c[0]))


def code_clusters(calls: Iterable[CallSite]) -> list[tuple[tuple[str, ...], list[str]]]:
    return [(c.tables, [f"score {c.score:.2f}", *c.reasons]) for c in overlap_clusters(calls)]
