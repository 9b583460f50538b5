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
class Neighbour:
    """A file on a table's page (or a table on a file's page): how often and how it touches it."""

    name: str
    calls: int
    operations: dict[str, int]


@dataclass
class TablePage:
    row: TableRow
    writers: list[Neighbour]
    readers: list[Neighbour]
    columns_read: list[tuple[str, int]]
    columns_written: list[tuple[str, int]]
    columns_filtered: list[tuple[str, int]]
    calls: list[CallSite]
    cluster: int | None  # index into ReportModel.clusters


@dataclass
class FilePage:
    path: str
    folder: str
    writes: list[Neighbour]
    reads: list[Neighbour]
    calls: list[CallSite]


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

    def cluster_of(self) -> dict[str, int]:
        return {table: index for index, cluster in enumerate(self.clusters) for table in cluster.tables}

    def table_pages(self) -> list[TablePage]:
        """One page per table the code touches: who writes and reads it, which columns, every call site."""
        clusters = self.cluster_of()
        by_table: dict[str, list[CallSite]] = defaultdict(list)
        for call in self.calls:
            for name in {call.table, *call.embedded} - {None}:
                by_table[name].append(call)
        pages = []
        for row in self.tables:
            node = flow.table_node(row.name)
            if node not in self.graph:
                continue
            own = [c for c in by_table[row.name] if c.table == row.name]
            pages.append(
                TablePage(
                    row=row,
                    writers=_neighbours(self.graph, self.graph.in_edges(node, data=True), 0),
                    readers=_neighbours(self.graph, self.graph.out_edges(node, data=True), 1),
                    columns_read=_counted(c for call in own for c in call.select_columns),
                    columns_written=_counted(c for call in own for c in call.write_columns),
                    columns_filtered=_counted(f.column for call in own for f in call.filters if f.column),
                    calls=by_table[row.name],
                    cluster=clusters.get(row.name),
                )
            )
        return pages

    def file_pages(self) -> list[FilePage]:
        by_file: dict[str, list[CallSite]] = defaultdict(list)
        for call in self.calls:
            by_file[call.file].append(call)
        pages = []
        for entry in self.files:
            node = flow.file_node(entry["file"])
            writes = _neighbours(self.graph, self.graph.out_edges(node, data=True), 1) if node in self.graph else []
            reads = _neighbours(self.graph, self.graph.in_edges(node, data=True), 0) if node in self.graph else []
            pages.append(FilePage(entry["file"], entry["folder"], writes, reads, by_file[entry["file"]]))
        return pages


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
        "calls": len({(c.file, c.start_byte) for c in calls}),  # call sites: a helper's two tables count once
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
    clusters = flow.overlap_clusters(calls)
    summary["clusters"] = len(clusters)
    return ReportModel(calls, graph, flows, rows, clusters, files, consolidations, summary)


def _neighbours(graph: nx.DiGraph, edges: Any, end: int) -> list[Neighbour]:
    """The far ends of `edges` (0: the source, 1: the target), most calls first."""
    found = [
        Neighbour(graph.nodes[edge[end]]["label"], data["weight"], dict(sorted(data["operations"].items())))
        for edge in edges
        for data in [edge[2]]
    ]
    return sorted(found, key=lambda n: (-n.calls, n.name))


def _counted(names: Any) -> list[tuple[str, int]]:
    return sorted(Counter(names).items(), key=lambda item: (-item[1], item[0]))


def _consolidations(plan: Plan, per_table: dict[str, Counter[str]]) -> list[Consolidation]:
    result = []
    for table in plan.tables:
        olds = [(s.table, sum(per_table.get(s.table, Counter()).values())) for s in table.sources]
        result.append(Consolidation(table.name, olds, sum(n for _, n in olds)))
    return result
