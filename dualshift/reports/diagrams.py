"""Mermaid and Graphviz diagrams of the data-flow graph.

Large inputs stay readable: past `COLLAPSE_FILES` files, file nodes are collapsed into one node per
folder; `focus` keeps one table's neighbourhood (its writers, its readers and their tables).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import graphviz
import networkx as nx

from dualshift.analyzer import flow
from dualshift.reports.model import ReportModel

COLLAPSE_FILES = 60
CLASS_COLOURS = {"critical": "#e4572e", "important": "#f3a712", "legacy": "#a8a8a8", "orphaned": "#d0d0d0"}
OPERATION_COLOURS = {
    "insert": "#2e86ab",
    "upsert": "#6a4c93",
    "update": "#f18f01",
    "delete": "#c73e1d",
    "select": "#3b8b5a",
}


class DiagramError(RuntimeError):
    pass


def focus_graph(graph: nx.DiGraph, table: str) -> nx.DiGraph:
    node = flow.table_node(table)
    if node not in graph:
        raise DiagramError(f"--focus {table}: no call in the map touches that table")
    around = {node, *graph.predecessors(node), *graph.successors(node)}
    return graph.subgraph(around).copy()


def collapse_by_folder(graph: nx.DiGraph) -> nx.DiGraph:
    """One node per folder instead of one per file; edge weights and operations add up."""
    collapsed = nx.DiGraph()
    for node, data in graph.nodes(data=True):
        if data["kind"] == "table":
            collapsed.add_node(node, **data)
        else:
            folder = f"folder:{data['folder']}"
            if folder not in collapsed:
                collapsed.add_node(
                    folder, kind="file", label=f"{data['folder']}/ ({0} files)", folder=data["folder"], count=0
                )
            collapsed.nodes[folder]["count"] += 1
            collapsed.nodes[folder]["label"] = f"{data['folder']}/ ({collapsed.nodes[folder]['count']} files)"
    for a, b, data in graph.edges(data=True):
        ends = [n if graph.nodes[n]["kind"] == "table" else f"folder:{graph.nodes[n]['folder']}" for n in (a, b)]
        if not collapsed.has_edge(*ends):
            collapsed.add_edge(*ends, weight=0, operations={}, sites=[])
        edge = collapsed.edges[ends[0], ends[1]]
        edge["weight"] += data["weight"]
        for operation, count in data["operations"].items():
            edge["operations"][operation] = edge["operations"].get(operation, 0) + count
    return collapsed


def view(model: ReportModel, focus: str | None = None, collapse: bool | None = None) -> nx.DiGraph:
    graph = focus_graph(model.graph, focus) if focus else model.graph
    file_count = sum(1 for _, d in graph.nodes(data=True) if d["kind"] == "file")
    if collapse or (collapse is None and file_count > COLLAPSE_FILES):
        graph = collapse_by_folder(graph)
    return graph


def _edge_label(operations: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(operations.items()))


def _main_operation(operations: dict[str, int]) -> str:
    return max(operations, key=lambda op: (operations[op], op))


# ---------------------------------------------------------------------------------------------
# Mermaid


def _mermaid_id(node: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", node)


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def mermaid_graph(graph: nx.DiGraph, classes: dict[str, str]) -> str:
    lines = ["flowchart LR"]
    folders: dict[str, list[str]] = {}
    for node, data in sorted(graph.nodes(data=True)):
        if data["kind"] == "file":
            folders.setdefault(data["folder"], []).append(node)
    for folder, nodes in sorted(folders.items()):
        lines.append(f'  subgraph {_mermaid_id("dir_" + folder)}["{_mermaid_label(folder)}"]')
        for node in nodes:
            label = Path(graph.nodes[node]["label"]).name if node.startswith("file:") else graph.nodes[node]["label"]
            lines.append(f'    {_mermaid_id(node)}["{_mermaid_label(label)}"]')
        lines.append("  end")
    for node, data in sorted(graph.nodes(data=True)):
        if data["kind"] == "table":
            lines.append(f'  {_mermaid_id(node)}[("{_mermaid_label(data["label"])}")]')
    for a, b, data in sorted(graph.edges(data=True)):
        lines.append(f'  {_mermaid_id(a)} -->|"{_edge_label(data["operations"])}"| {_mermaid_id(b)}')
    for category, colour in CLASS_COLOURS.items():
        lines.append(f"  classDef {category} fill:{colour},stroke:#333,color:#111")
    for node, data in sorted(graph.nodes(data=True)):
        if data["kind"] == "table" and data["label"] in classes:
            lines.append(f"  class {_mermaid_id(node)} {classes[data['label']]}")
    return "\n".join(lines)


def mermaid_flow(steps: list[flow.FlowStep]) -> str:
    lines = ["flowchart LR"]
    seen: set[str] = set()
    for step in steps:
        for node, label, table in (
            (flow.file_node(step.file), flow.stem(step.file), False),
            (flow.table_node(step.table), step.table, True),
        ):
            if node not in seen:
                seen.add(node)
                shape = f'[("{_mermaid_label(label)}")]' if table else f'["{_mermaid_label(label)}"]'
                lines.append(f"  {_mermaid_id(node)}{shape}")
    for step in steps:
        file_id, table_id = _mermaid_id(flow.file_node(step.file)), _mermaid_id(flow.table_node(step.table))
        if step.operation == "select":
            lines.append(f"  {table_id} -->|select| {file_id}")
        else:
            lines.append(f"  {file_id} -->|{step.operation}| {table_id}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Graphviz


def dot_source(graph: nx.DiGraph, classes: dict[str, str], title: str) -> graphviz.Digraph:
    dot = graphviz.Digraph(
        "dataflow",
        graph_attr={
            "rankdir": "LR",
            "label": title,
            "labelloc": "t",
            "fontname": "Helvetica",
            "fontsize": "18",
            "nodesep": "0.25",
            "ranksep": "1.2",
            "splines": "true",
            "concentrate": "false",
            "bgcolor": "white",
        },
    )
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9", arrowsize="0.6")
    folders: dict[str, list[tuple[str, dict]]] = {}
    for node, data in sorted(graph.nodes(data=True)):
        if data["kind"] == "file":
            folders.setdefault(data["folder"], []).append((node, data))
    for folder, nodes in sorted(folders.items()):
        with dot.subgraph(name=f"cluster_{_mermaid_id(folder)}") as sub:
            sub.attr(label=folder, style="rounded,filled", fillcolor="#f4f6fb", color="#b8c2d6", fontsize="12")
            for node, data in nodes:
                label = Path(data["label"]).name if node.startswith("file:") else data["label"]
                sub.node(_mermaid_id(node), label=label, shape="box", style="rounded,filled", fillcolor="white")
    for node, data in sorted(graph.nodes(data=True)):
        if data["kind"] == "table":
            colour = CLASS_COLOURS.get(classes.get(data["label"], "important"), "#f3a712")
            dot.node(_mermaid_id(node), label=data["label"], shape="cylinder", style="filled", fillcolor=colour)
    for a, b, data in sorted(graph.edges(data=True)):
        operation = _main_operation(data["operations"])
        dot.edge(
            _mermaid_id(a),
            _mermaid_id(b),
            label=_edge_label(data["operations"]),
            color=OPERATION_COLOURS.get(operation, "#555555"),
            penwidth=str(min(1 + data["weight"] * 0.4, 5)),
        )
    return dot


def render(dot: graphviz.Digraph, out_dir: Path, stem: str = "data-flow") -> list[Path]:
    """data-flow.svg and data-flow.png through Debian's `dot`."""
    if shutil.which("dot") is None:
        raise DiagramError("Graphviz `dot` is not installed (apt-get install graphviz)")
    written = []
    for fmt in ("svg", "png"):
        target = out_dir / f"{stem}.{fmt}"
        try:
            data = subprocess.run(
                ["dot", f"-T{fmt}"], input=dot.source.encode(), capture_output=True, check=True, timeout=300
            ).stdout
        except subprocess.CalledProcessError as exc:
            raise DiagramError(f"dot failed: {exc.stderr.decode(errors='replace').strip()}") from exc
        target.write_bytes(data)
        written.append(target)
    return written
