"""The data-flow graph: files → tables (writes) and tables → files (reads), and the flows it implies.

Nodes are `file:<path>` (attribute `folder`: the file's folder under src/, e.g. jobs) and
`table:<name>`. Edges carry the call count (`weight`), the operations and the call sites.
Flows are derived, not written by hand: from every file that starts data (it writes tables and
reads nothing that another file produces), follow write → read → write … as far as the data goes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import networkx as nx

from dualshift.analyzer.records import WRITE_OPERATIONS, CallSite

MAX_FLOW_DEPTH = 12  # tables in one flow


def file_node(path: str) -> str:
    return f"file:{path}"


def table_node(name: str) -> str:
    return f"table:{name}"


def folder_of(path: str) -> str:
    """The group a file belongs to: its folder under src/ (jobs, posting, ...), else its top folder."""
    parts = PurePosixPath(path).parts
    if len(parts) == 1:
        return "(root)"
    if parts[0] == "src" and len(parts) > 2:
        return parts[1]
    return parts[0]


def stem(path: str) -> str:
    return PurePosixPath(path).stem


def build_graph(calls: Iterable[CallSite]) -> nx.DiGraph:
    calls = list(calls)
    graph = nx.DiGraph()
    helpers = _helper_files(calls)
    for call in calls:
        if call.table is None:
            continue
        source = file_node(call.file)
        graph.add_node(source, kind="file", label=call.file, folder=folder_of(call.file), helper=call.file in helpers)
        touched = [(call.table, call.operation)] + [(t, "select") for t in call.embedded if t != call.table]
        for table, operation in touched:
            node = table_node(table)
            graph.add_node(node, kind="table", label=table)
            edge = (source, node) if operation in WRITE_OPERATIONS else (node, source)
            if operation == "unknown":
                continue  # a builder that never runs here reads and writes nothing by itself
            data = graph.get_edge_data(*edge)
            if data is None:
                graph.add_edge(*edge, weight=0, operations={}, sites=[])
                data = graph.get_edge_data(*edge)
            data["weight"] += 1
            data["operations"][operation] = data["operations"].get(operation, 0) + 1
            data["sites"].append({"file": call.file, "line": call.line, "operation": operation})
    return graph


def _helper_files(calls: list[CallSite]) -> set[str]:
    """Generic data-access helpers: every call in the file takes its table from a parameter."""
    kinds: dict[str, set[str]] = defaultdict(set)
    for call in calls:
        kinds[call.file].add(call.table_kind)
    return {path for path, found in kinds.items() if found <= {"callers", "dynamic"}}


def tables(graph: nx.DiGraph) -> list[str]:
    return sorted(graph.nodes[n]["label"] for n in graph if graph.nodes[n]["kind"] == "table")


def files(graph: nx.DiGraph) -> list[str]:
    return sorted(graph.nodes[n]["label"] for n in graph if graph.nodes[n]["kind"] == "file")


def producers(graph: nx.DiGraph, table: str) -> list[str]:
    node = table_node(table)
    return sorted(graph.nodes[f]["label"] for f in graph.predecessors(node)) if node in graph else []


def consumers(graph: nx.DiGraph, table: str) -> list[str]:
    node = table_node(table)
    return sorted(graph.nodes[f]["label"] for f in graph.successors(node)) if node in graph else []


def written_by(graph: nx.DiGraph, path: str) -> list[str]:
    return sorted(graph.nodes[t]["label"] for t in graph.successors(file_node(path)))


def read_by(graph: nx.DiGraph, path: str) -> list[str]:
    return sorted(graph.nodes[t]["label"] for t in graph.predecessors(file_node(path)))


# ---------------------------------------------------------------------------------------------
# Flows


@dataclass(frozen=True)
class FlowStep:
    file: str
    table: str
    operation: str  # the file's main operation on the table: insert, upsert, update, delete or select


@dataclass(frozen=True)
class Flow:
    name: str
    steps: tuple[FlowStep, ...]

    @property
    def path(self) -> list[str]:
        """planJob → content_metadata → postingQueue → …, the seeds' way of writing a flow."""
        names: list[str] = []
        for step in self.steps:
            if not names or names[-1] != stem(step.file):
                names.append(stem(step.file))
            if step.operation != "select":
                names.append(step.table)
        return names

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": " → ".join(self.path),
            "steps": [{"file": s.file, "table": s.table, "operation": s.operation} for s in self.steps],
        }


def _main_operation(operations: dict[str, int]) -> str:
    for operation in ("insert", "upsert", "update", "delete", "select"):
        if operation in operations:
            return operation
    return "select"


def _creates(graph: nx.DiGraph, writer: str, table: str) -> bool:
    return bool({"insert", "upsert"} & set(graph.edges[writer, table]["operations"]))


def _is_starting_file(graph: nx.DiGraph, path: str) -> bool:
    """Creates rows, and reads no table whose rows another file creates (jobs that start the data)."""
    node = file_node(path)
    created = {t for t in graph.successors(node) if _creates(graph, node, t)}
    if not created or _is_script(path):
        return False
    for table in graph.predecessors(node):
        if table in created:
            continue  # reading back its own rows (a backlog count) does not make it a consumer
        if any(_creates(graph, other, table) for other in graph.predecessors(table) if other != node):
            return False
    return True


def _next_hop(graph: nx.DiGraph, writer: str, seen_tables: set[str], seen_files: set[str]) -> tuple[str, str] | None:
    """The (table, reader) the data most plausibly goes on through: a reader that writes something new,
    scheduled jobs and learning code first, then the most-used table, then the heaviest edge."""
    candidates: list[tuple[tuple[bool, int, int], str, str]] = []
    for table in graph.successors(writer):
        if table in seen_tables:
            continue
        for reader in graph.successors(table):
            label = graph.nodes[reader]["label"]
            if reader in seen_files or _is_script(label) or graph.nodes[reader]["helper"]:
                continue
            if graph.has_edge(reader, table) and _creates(graph, reader, table):
                continue  # a producer reading back its own rows is not where the data goes next
            if not [t for t in graph.successors(reader) if t not in seen_tables and t != table]:
                continue  # a pure reader ends the data's journey; it is not a hop
            rank = (
                _is_job(label) or "learning" in PurePosixPath(label).parts,
                graph.in_degree(table) + graph.out_degree(table),
                graph.edges[table, reader]["weight"],
            )
            candidates.append((rank, table, reader))
    if not candidates:
        return None
    # Highest rank wins; among equals, the first table and file by name, so the result is stable.
    best = min(candidates, key=lambda c: (tuple(-int(x) for x in c[0]), c[1], c[2]))
    return best[1], best[2]


def _last_write(graph: nx.DiGraph, writer: str, seen_tables: set[str]) -> str | None:
    """Where a flow ends: the most-read table the last file writes that the flow has not seen."""
    tables_left = [t for t in graph.successors(writer) if t not in seen_tables]
    if not tables_left:
        return None
    return min(tables_left, key=lambda t: (-graph.out_degree(t), -graph.edges[writer, t]["weight"], t))


def derive_flows(graph: nx.DiGraph) -> list[Flow]:
    """Every flow that starts at a data-creating file, longest first."""
    flows: list[Flow] = []
    for path in files(graph):
        if not _is_starting_file(graph, path):
            continue
        writer = file_node(path)
        seen_tables: set[str] = set()
        seen_files = {writer}
        steps: list[FlowStep] = []
        while len(seen_tables) < MAX_FLOW_DEPTH:
            hop = _next_hop(graph, writer, seen_tables, seen_files)
            if hop is None:
                break
            table, reader = hop
            steps.append(_write_step(graph, writer, table))
            steps.append(FlowStep(graph.nodes[reader]["label"], graph.nodes[table]["label"], "select"))
            seen_tables.add(table)
            seen_files.add(reader)
            writer = reader
        last = _last_write(graph, writer, seen_tables)
        if last is not None:
            steps.append(_write_step(graph, writer, last))
        if len(steps) > 1:
            flows.append(Flow(name=stem(path), steps=tuple(steps)))
    return sorted(flows, key=lambda f: (-len(f.steps), f.name))


def _write_step(graph: nx.DiGraph, writer: str, table: str) -> FlowStep:
    operation = _main_operation(graph.edges[writer, table]["operations"])
    return FlowStep(graph.nodes[writer]["label"], graph.nodes[table]["label"], operation)


# ---------------------------------------------------------------------------------------------
# Classification


SCRIPT_FOLDERS = frozenset({"scripts", "script", "tests", "test", "__tests__", "migrations", "seeds", "tools"})


def _is_script(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(SCRIPT_FOLDERS & set(parts)) or ".test." in path or ".spec." in path


def _is_job(path: str) -> bool:
    return "jobs" in PurePosixPath(path).parts or stem(path).lower().endswith("job")


@dataclass(frozen=True)
class TableClass:
    table: str
    category: str  # critical | important | legacy | orphaned
    reasons: tuple[str, ...]
    writers: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "table": self.table,
            "class": self.category,
            "reasons": list(self.reasons),
            "writers": list(self.writers),
            "readers": list(self.readers),
        }


CRITICAL_FAN_IN = 3


def classify(graph: nx.DiGraph, known_tables: Iterable[str] = ()) -> list[TableClass]:
    """critical / important / legacy for every table in the code; orphaned for known tables it never touches."""
    result: list[TableClass] = []
    for table in tables(graph):
        writers = producers(graph, table)
        readers = consumers(graph, table)
        result.append(_classify_one(table, writers, readers))
    in_code = set(tables(graph))
    for table in sorted(set(known_tables) - in_code):
        result.append(TableClass(table, "orphaned", ("no code reads or writes it",)))
    return result


def _classify_one(table: str, writers: list[str], readers: list[str]) -> TableClass:
    everyone = set(writers) | set(readers)
    if everyone and all(_is_script(f) for f in everyone):
        return TableClass(table, "legacy", ("only scripts or tests touch it",), tuple(writers), tuple(readers))
    if writers and not readers:
        return TableClass(table, "legacy", ("written but never read",), tuple(writers), ())
    if readers and not writers:
        return TableClass(table, "legacy", ("read but never written",), (), tuple(readers))
    reasons: list[str] = []
    job_writers = [w for w in writers if _is_job(w)]
    other_readers = [r for r in readers if r not in writers]
    if job_writers and other_readers:
        reasons.append(f"written by scheduled job(s) {', '.join(stem(w) for w in job_writers)} and read by others")
    if len(readers) >= CRITICAL_FAN_IN:
        reasons.append(f"high fan-in: read by {len(readers)} files")
    if reasons:
        return TableClass(table, "critical", tuple(reasons), tuple(writers), tuple(readers))
    return TableClass(
        table,
        "important",
        (f"written by {len(writers)} and read by {len(readers)} file(s)",),
        tuple(writers),
        tuple(readers),
    )


# ---------------------------------------------------------------------------------------------
# Overlap clusters


@dataclass(frozen=True)
class Cluster:
    tables: tuple[str, ...]
    score: float  # 0..1, the average similarity of its pairs
    shared_columns: tuple[str, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "tables": list(self.tables),
            "score": round(self.score, 3),
            "shared_columns": list(self.shared_columns),
            "reasons": list(self.reasons),
        }


OVERLAP_THRESHOLD = 0.28


@dataclass
class _Profile:
    columns: set[str] = field(default_factory=set)
    writers: set[str] = field(default_factory=set)
    calls: int = 0


def _profiles(calls: Iterable[CallSite]) -> dict[str, _Profile]:
    profiles: dict[str, _Profile] = defaultdict(_Profile)
    for call in calls:
        if call.table is None:
            continue
        profile = profiles[call.table]
        profile.calls += 1
        profile.columns.update(call.columns)
        if call.is_write:
            profile.writers.add(call.file)
    return profiles


def _name_tokens(name: str) -> set[str]:
    # "posted" and "posts" are the same word to a human: compare 4-letter stems.
    return {token[:4] for token in name.lower().split("_") if len(token) > 1}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _column_stems(columns: set[str]) -> set[str]:
    # like_count ~ likes, measured_at ~ collected_at: compare the words columns are made of.
    return {word[:4] for column in columns for word in column.split("_") if word not in ("id", "at") and len(word) > 1}


def _similarity(a: str, b: str, profiles: dict[str, _Profile]) -> tuple[float, list[str]]:
    pa, pb = profiles[a], profiles[b]
    name = _jaccard(_name_tokens(a), _name_tokens(b))
    keys = _jaccard({c for c in pa.columns if c.endswith("_id")}, {c for c in pb.columns if c.endswith("_id")})
    columns = _jaccard(_column_stems(pa.columns), _column_stems(pb.columns))
    writers = _jaccard(pa.writers, pb.writers)
    reasons = []
    if name:
        reasons.append(f"similar names ({a} / {b})")
    if keys:
        shared = sorted({c for c in pa.columns & pb.columns if c.endswith("_id")})
        reasons.append(f"shared key columns {', '.join(shared)}")
    if columns >= 0.25:
        reasons.append(f"{round(columns * 100)}% of their column vocabulary in common")
    if writers:
        reasons.append(f"written by the same file(s): {', '.join(sorted(pa.writers & pb.writers))}")
    return 0.2 * name + 0.1 * keys + 0.4 * columns + 0.3 * writers, reasons


def overlap_clusters(calls: Iterable[CallSite], threshold: float = OVERLAP_THRESHOLD) -> list[Cluster]:
    """Groups of tables that look like the same data, best first.

    Two tables are linked when their similarity (names, key columns, column vocabulary, shared
    writers) reaches the threshold; a cluster is a connected group of links.
    """
    profiles = _profiles(calls)
    names = sorted(profiles)
    pair: dict[tuple[str, str], tuple[float, list[str]]] = {}
    links = nx.Graph()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair[(a, b)] = _similarity(a, b, profiles)
            if pair[(a, b)][0] >= threshold:
                links.add_edge(a, b)
    groups = [tuple(sorted(component)) for component in nx.connected_components(links)]
    clusters = [_cluster(g, pair, profiles) for g in groups if len(g) > 1]
    return sorted(clusters, key=lambda c: (-c.score, c.tables))


def _cluster(group: tuple[str, ...], pair: dict, profiles: dict[str, _Profile]) -> Cluster:
    # Most-used table first: it is the natural target the others merge into.
    ordered = tuple(sorted(group, key=lambda t: (-profiles[t].calls, t)))
    keys = [tuple(sorted((a, b))) for i, a in enumerate(group) for b in group[i + 1 :]]
    average = sum(pair[k][0] for k in keys) / len(keys)
    reasons = list(dict.fromkeys(r for k in keys for r in pair[k][1] if not r.startswith("similar names")))
    shared = set.intersection(*(profiles[t].columns for t in group))
    return Cluster(ordered, average, tuple(sorted(shared)), tuple(reasons[:6]))


def summarize_operations(calls: Iterable[CallSite]) -> Counter[str]:
    return Counter(c.table for c in calls if c.table)
