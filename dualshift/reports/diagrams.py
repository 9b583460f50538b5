"""Mermaid and Graphviz diagrams of the data-flow graph.

Large inputs stay readable: past `COLLAPSE_FILES` files the static pictures are drawn one per
overlap cluster and one per flow instead of one for the whole system (`collapse_by_folder` stays
for callers that want one picture anyway); `focus` keeps one table's neighbourhood (its writers,
its readers and their tables). Every Graphviz picture carries its legend in the graph label.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
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


def file_focus_graph(graph: nx.DiGraph, path: str) -> nx.DiGraph:
    node = flow.file_node(path)
    return graph.subgraph({node, *graph.predecessors(node), *graph.successors(node)}).copy()


def tables_graph(graph: nx.DiGraph, tables: list[str]) -> nx.DiGraph:
    """Some tables with every file that writes or reads them (an overlap cluster's picture)."""
    around: set[str] = set()
    for table in tables:
        node = flow.table_node(table)
        if node in graph:
            around |= {node, *graph.predecessors(node), *graph.successors(node)}
    return graph.subgraph(around).copy()


def cluster_graph(graph: nx.DiGraph, tables: list[str]) -> nx.DiGraph:
    """An overlap cluster's picture, small: its tables, each file that touches two or more of them
    (the overlap made visible), and the other files folded into one node per folder."""
    full = tables_graph(graph, tables)
    shared = {
        node
        for node, data in full.nodes(data=True)
        if data["kind"] == "file" and len(set(full.predecessors(node)) | set(full.successors(node))) > 1
    }
    folded = collapse_by_folder(full.subgraph(set(full) - shared))
    for node in shared:
        folded.add_node(node, **full.nodes[node])
        for a, b, data in [*full.in_edges(node, data=True), *full.out_edges(node, data=True)]:
            folded.add_edge(a, b, **data)
    return folded


def flow_graph(graph: nx.DiGraph, steps: list[flow.FlowStep]) -> nx.DiGraph:
    """Only the hops of one flow, in its order; edge data comes from the full graph."""
    picture = nx.DiGraph()
    for step in steps:
        file, table = flow.file_node(step.file), flow.table_node(step.table)
        for node in (file, table):
            picture.add_node(node, **graph.nodes[node])
        edge = (table, file) if step.operation == "select" else (file, table)
        picture.add_edge(*edge, **graph.edges[edge])
    return picture


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
            count = collapsed.nodes[folder]["count"]
            collapsed.nodes[folder]["label"] = f"{data['folder']}/ ({count} file{'' if count == 1 else 's'})"
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


def _legend_label(title: str) -> str:
    """An HTML-like graph label: the title, then what the colours and shapes mean."""
    classes = "".join(
        f'<TD BGCOLOR="{colour}" BORDER="1" COLOR="#555555"> {name} table </TD>'
        for name, colour in CLASS_COLOURS.items()
    )
    operations = "".join(
        f'<TD><FONT COLOR="{colour}"><B>━━</B></FONT> {name}</TD>' for name, colour in OPERATION_COLOURS.items()
    )
    heading = f'<TR><TD COLSPAN="6" ALIGN="LEFT"><FONT POINT-SIZE="18">{html.escape(title)}</FONT></TD></TR>'
    return (
        '<<TABLE BORDER="0" CELLSPACING="3" CELLPADDING="2">'
        f"{heading if title else ''}"
        f'<TR><TD ALIGN="LEFT">legend: □ file, ⛁ table</TD>{classes}<TD></TD></TR>'
        f'<TR><TD ALIGN="LEFT">arrows: writes → table → reads</TD>{operations}</TR>'
        "</TABLE>>"
    )


def dot_source(
    graph: nx.DiGraph,
    classes: dict[str, str],
    title: str,
    *,
    edge_labels: bool = True,
    links: bool = False,
    ids: str = "",
    legend: bool = True,
    group_folders: bool = True,
) -> graphviz.Digraph:
    """`legend`: the title and the legend as the graph's label (the report's inline overview and
    cluster cards have theirs in the page); `links`: nodes link to the report's pages (#table:NAME, #file:PATH); `ids`: a prefix that gives
    every node and edge an SVG id (the report's overview finds them by it); `group_folders`: a box per
    folder (dot), else a fill colour per folder (for the force-directed overview, which ignores boxes)."""
    dot = graphviz.Digraph(
        "dataflow",
        graph_attr={
            "rankdir": "LR",
            "label": _legend_label(title) if legend else "",
            "labelloc": "t",
            "labeljust": "l",
            "fontname": "Helvetica",
            "fontsize": "11",
            "nodesep": "0.25",
            "ranksep": "1.2",
            "splines": "true",
            "concentrate": "false",
            "bgcolor": "white",
        },
    )
    dot.attr("node", fontname="Helvetica", fontsize="11")
    dot.attr("edge", fontname="Helvetica", fontsize="9", arrowsize="0.6")

    def extra(node: str, data: dict) -> dict[str, str]:
        attrs = {}
        if links and data.get("label") and not node.startswith("folder:"):
            attrs["href"] = f"#{data['kind']}:{data['label']}"
            attrs["tooltip"] = data["label"]
        if ids:
            attrs["id"] = f"{ids}{node}"
        return attrs

    folders: dict[str, list[tuple[str, dict]]] = {}
    for node, data in sorted(graph.nodes(data=True)):
        if data["kind"] == "file":
            folders.setdefault(data["folder"], []).append((node, data))
    for index, (folder, nodes) in enumerate(sorted(folders.items())):
        with dot.subgraph(name=f"{'cluster' if group_folders else 'folder'}_{_mermaid_id(folder)}") as sub:
            sub.attr(label=folder, style="rounded,filled", fillcolor="#f4f6fb", color="#b8c2d6", fontsize="12")
            fill = "white" if group_folders else folder_colour(index)
            for node, data in nodes:
                label = Path(data["label"]).name if node.startswith("file:") else data["label"]
                sub.node(
                    _mermaid_id(node),
                    label=label,
                    shape="box",
                    style="rounded,filled",
                    fillcolor=fill,
                    **extra(node, data),
                )
    for node, data in sorted(graph.nodes(data=True)):
        if data["kind"] == "table":
            colour = CLASS_COLOURS.get(classes.get(data["label"], "important"), "#f3a712")
            dot.node(
                _mermaid_id(node),
                label=data["label"],
                shape="cylinder",
                style="filled",
                fillcolor=colour,
                **extra(node, data),
            )
    for index, (a, b, data) in enumerate(sorted(graph.edges(data=True))):
        operation = _main_operation(data["operations"])
        attrs = {"id": f"{ids}edge:{index}"} if ids else {}
        if edge_labels:
            attrs["label"] = _edge_label(data["operations"])
        else:
            attrs["tooltip"] = _edge_label(data["operations"])
        dot.edge(
            _mermaid_id(a),
            _mermaid_id(b),
            color=OPERATION_COLOURS.get(operation, "#555555"),
            penwidth=str(min(1 + data["weight"] * 0.4, 5)),
            **attrs,
        )
    return dot


FOLDER_COLOURS = ("#dbe9f6", "#e3f1dc", "#f6e3d9", "#ece0f3", "#f7f0cf", "#d8f0ee", "#f3dbe6", "#e6e6e6")


def folder_colour(index: int) -> str:
    return FOLDER_COLOURS[index % len(FOLDER_COLOURS)]


def svg_texts(dots: list[graphviz.Digraph], engine: str = "dot") -> list[str]:
    """Lay out many graphs with one `dot` process (one per graph costs ~50 ms each at start-up);
    returns each graph's <svg> element, without the XML prologue, ready to inline in HTML."""
    if not dots:
        return []
    _require_dot()
    source = "\n".join(d.source for d in dots)
    try:
        output = subprocess.run(
            ["dot", f"-K{engine}", "-Tsvg"], input=source.encode(), capture_output=True, check=True, timeout=600
        ).stdout.decode()
    except subprocess.CalledProcessError as exc:
        raise DiagramError(f"dot failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    # Graphviz's per-node and per-edge comments repeat the titles: a tenth of a big report's bytes.
    svgs = [re.sub(r"<!--.*?-->\n?", "", svg, flags=re.S) for svg in re.findall(r"<svg\b.*?</svg>", output, re.S)]
    if len(svgs) != len(dots):
        raise DiagramError(f"dot drew {len(svgs)} pictures for {len(dots)} graphs")
    return svgs


def render_many(pictures: list[tuple[graphviz.Digraph, str]], out_dir: Path) -> list[Path]:
    """<stem>.svg and <stem>.png for many graphs with one `dot` process (its start-up, fonts
    included, costs more than drawing a small graph)."""
    if not pictures:
        return []
    _require_dot()
    with tempfile.TemporaryDirectory(dir=out_dir) as scratch:
        source = Path(scratch) / "g.gv"
        source.write_text("\n".join(dot.source for dot, _ in pictures), encoding="utf-8")
        try:
            subprocess.run(["dot", "-Tsvg", "-Tpng", "-O", str(source)], capture_output=True, check=True, timeout=600)
        except subprocess.CalledProcessError as exc:
            raise DiagramError(f"dot failed: {exc.stderr.decode(errors='replace').strip()}") from exc
        written = []
        for index, (_, stem) in enumerate(pictures, 1):
            number = "" if index == 1 else f".{index}"  # dot -O names the n-th graph's file g.gv.n.svg
            for fmt in ("svg", "png"):
                target = out_dir / f"{stem}.{fmt}"
                (Path(scratch) / f"g.gv{number}.{fmt}").replace(target)
                written.append(target)
    return written


def _require_dot() -> None:
    if shutil.which("dot") is None:
        raise DiagramError("Graphviz `dot` is not installed (apt-get install graphviz)")


def render(dot: graphviz.Digraph, out_dir: Path, stem: str = "data-flow") -> list[Path]:
    """data-flow.svg and data-flow.png through Debian's `dot`."""
    _require_dot()
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
