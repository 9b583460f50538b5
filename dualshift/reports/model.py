"""What every report shows, computed once from the call-site records (and optionally the plan)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from dualshift.analyzer import flow
from dualshift.analyzer.records import CallSite
from dualshift.plan import Plan


@dataclass
class TableRow:
    name: str
    category: str
    reasons: tuple[str, ...]
    reads: int = 0
    writes: int = 0
    writers: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()
    operations: dict[str, int] = field(default_factory=dict)


@dataclass
class Consolidation:
    """Seed 004's before/after view: one new table and what moves into it."""

    new_table: str
    old_tables: list[tuple[str, int]]  # (old table, queries) in precedence order
    total_queries: int


@dataclass
class ReportModel:
    calls: list[CallSite]
    graph: nx.DiGraph
    flows: list[flow.Flow]
    tables: list[TableRow]
    clusters: list[flow.Cluster]
    files: list[dict[str, Any]]
    consolidations: list[Consolidation]
    summary: dict[str, int]

    def table(self, name: str) -> TableRow | None:
        return next((t for t in self.tables if t.name == name), None)


def build_model(calls: list[CallSite], plan: Plan | None = None) -> ReportModel:
    graph = flow.build_graph(calls)
    known = list(plan.old_tables) if plan else []
    classes = {c.table: c for c in flow.classify(graph, known)}
    per_table: dict[str, Counter[str]] = defaultdict(Counter)
    for call in calls:
        if call.table:
            per_table[call.table][call.operation] += 1
        for embedded in call.embedded:
            if embedded != call.table:
                per_table[embedded]["select"] += 1
    rows = []
    for name, cls in sorted(classes.items()):
        operations = dict(per_table.get(name, Counter()))
        rows.append(
            TableRow(
                name=name,
                category=cls.category,
                reasons=cls.reasons,
                reads=operations.get("select", 0),
                writes=sum(v for k, v in operations.items() if k in ("insert", "upsert", "update", "delete")),
                writers=cls.writers,
                readers=cls.readers,
                operations=operations,
            )
        )
    per_file: dict[str, Counter[str]] = defaultdict(Counter)
    for call in calls:
        per_file[call.file][call.operation] += 1
    files = [
        {
            "file": path,
            "folder": flow.folder_of(path),
            "calls": sum(ops.values()),
            "reads": ops.get("select", 0),
            "writes": sum(v for k, v in ops.items() if k in ("insert", "upsert", "update", "delete")),
            "tables": sorted({c.table for c in calls if c.file == path and c.table}),
        }
        for path, ops in sorted(per_file.items())
    ]
    summary = {
        "calls": len(calls),
        "tables": len(rows),
        "files": len(files),
        "flows": 0,
        "critical": sum(1 for r in rows if r.category == "critical"),
        "legacy": sum(1 for r in rows if r.category == "legacy"),
        "dynamic": sum(1 for c in calls if c.table is None),
    }
    flows = flow.derive_flows(graph)
    summary["flows"] = len(flows)
    consolidations = _consolidations(plan, per_table) if plan else []
    return ReportModel(calls, graph, flows, rows, flow.overlap_clusters(calls), files, consolidations, summary)


def _consolidations(plan: Plan, per_table: dict[str, Counter[str]]) -> list[Consolidation]:
    result = []
    for table in plan.tables:
        olds = [(s.table, sum(per_table.get(s.table, Counter()).values())) for s in table.sources]
        result.append(Consolidation(table.name, olds, sum(n for _, n in olds)))
    return result
