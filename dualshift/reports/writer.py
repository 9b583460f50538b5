"""Write every report of a data-flow analysis into one directory."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import graphviz
import jinja2
import networkx as nx

from dualshift import __version__
from dualshift.analyzer import flow
from dualshift.analyzer.records import CallSite
from dualshift.plan import Plan
from dualshift.reports import diagrams
from dualshift.reports.model import ReportModel, build_model

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dualshift.reports", "templates"),
    autoescape=lambda name: bool(name and name.endswith(".html.j2")),
    keep_trailing_newline=True,
    trim_blocks=False,
)
EXCERPT_LINES = 12


def _excerpt(code: str) -> str:
    lines = code.splitlines()
    if len(lines) <= EXCERPT_LINES:
        return code
    return "\n".join([*lines[:EXCERPT_LINES], f"… ({len(lines) - EXCERPT_LINES} more lines)"])


_ENV.filters["excerpt"] = _excerpt


def flow_analysis(model: ReportModel) -> dict:
    """DATA_FLOW_ANALYSIS.json in the seeds' shape: named flows with ordered steps, plus what they rest on."""
    return {
        "version": __version__,
        "flows": [f.to_dict() for f in model.flows],
        "tables": {
            t.name: {
                "class": t.category,
                "reasons": list(t.reasons),
                "producers": list(t.writers),
                "consumers": list(t.readers),
            }
            for t in model.tables
        },
        "overlapClusters": [c.to_dict() for c in model.clusters],
    }


def _graph_for_export(graph: nx.DiGraph) -> nx.DiGraph:
    """GraphML takes scalars only: operations and sites become JSON strings."""
    export = nx.DiGraph()
    for node, data in graph.nodes(data=True):
        export.add_node(node, **{k: v for k, v in data.items() if isinstance(v, str | int | float | bool)})
    for a, b, data in graph.edges(data=True):
        export.add_edge(
            a,
            b,
            weight=data["weight"],
            operations=json.dumps(data["operations"], sort_keys=True),
            sites=json.dumps(data["sites"]),
        )
    return export


def plural(count: int, noun: str, many: str = "") -> str:
    """1 query, 2 queries, 1 call site, 3 call sites."""
    if count == 1:
        return f"{count} {noun}"
    if many:
        return f"{count} {many}"
    return f"{count} {noun[:-1]}ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else f"{count} {noun}s"


_ENV.filters["plural"] = plural


def file_linker(out_dir: Path, root: Path | None, link_base: str):
    """`file:line` links: under `link_base` (a repository URL, GitHub's #L anchors), else relative from
    the report's directory to the scanned root, so they open the local file."""
    if link_base:
        return lambda path, line=None: f"{link_base}{path}" + (f"#L{line}" if line else "")
    base = Path(os.path.relpath((root or Path.cwd()).resolve(), out_dir.resolve())).as_posix()
    prefix = "" if base == "." else f"{base}/"
    return lambda path, line=None: quote(f"{prefix}{path}")


def write_reports(
    calls: list[CallSite],
    out_dir: Path,
    plan: Plan | None = None,
    focus: str | None = None,
    title: str = "",
    link_base: str = "",
    render_images: bool = True,
    root: Path | None = None,
) -> list[Path]:
    """`root`: the scanned tree, for local file links (default: the current directory)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(calls, plan)
    classes = {t.name: t.category for t in model.tables}
    at_scale = focus is None and model.summary["files"] > diagrams.COLLAPSE_FILES
    graph = diagrams.view(model, focus, collapse=False)
    written: list[Path] = []

    def put(name: str, text: str) -> None:
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)

    put("DATA_FLOW_ANALYSIS.json", json.dumps(flow_analysis(model), indent=2) + "\n")
    put(
        "data-flow.graph.json", json.dumps(nx.node_link_data(model.graph, edges="links"), indent=2, default=list) + "\n"
    )
    nx.write_graphml(_graph_for_export(model.graph), out_dir / "data-flow.graphml")
    written.append(out_dir / "data-flow.graphml")
    put(
        "DATA_FLOW_DIAGRAM.md",
        _ENV.get_template("DATA_FLOW_DIAGRAM.md.j2").render(
            title=title,
            summary=model.summary,
            flows=model.flows,
            flow_diagrams=[diagrams.mermaid_flow(list(f.steps)) for f in model.flows],
            system_diagram="" if at_scale else diagrams.mermaid_graph(graph, classes),
            cluster_diagrams=[
                diagrams.mermaid_graph(diagrams.cluster_graph(model.graph, list(c.tables)), classes)
                for c in model.clusters
            ]
            if at_scale
            else [],
            tables=model.tables,
            clusters=model.clusters,
            consolidations=model.consolidations,
        ),
    )
    pictures: dict[str, str] = {}
    if render_images:
        with ThreadPoolExecutor(max_workers=1) as pool:  # the static pictures while the inline ones are drawn
            if at_scale:
                static = pool.submit(_write_pictures, model, classes, out_dir)
            else:
                static = pool.submit(
                    diagrams.render, diagrams.dot_source(graph, classes, title or "data flow"), out_dir
                )
            pictures = _report_pictures(model, classes, title, spread=at_scale)
            written.extend(static.result())
    fills = {}
    if at_scale:  # the spread overview colours files by folder (dot_source numbers folders in sorted order)
        folders = sorted({d["folder"] for _, d in model.graph.nodes(data=True) if d["kind"] == "file"})
        fills = {folder: diagrams.folder_colour(index) for index, folder in enumerate(folders)}
    put("report.html", _render_html(model, pictures, focus, title, file_linker(out_dir, root, link_base), fills))
    return written


def _write_pictures(model: ReportModel, classes: dict[str, str], out_dir: Path) -> list[Path]:
    """At scale: diagrams/cluster-NN.svg|png per overlap cluster and diagrams/flow-NAME.svg|png per flow."""
    folder = out_dir / "diagrams"
    folder.mkdir(exist_ok=True)
    jobs: list[tuple[graphviz.Digraph, str]] = []
    for index, cluster in enumerate(model.clusters, 1):
        picture = diagrams.cluster_graph(model.graph, list(cluster.tables))
        name = f"overlap cluster {index}: {', '.join(cluster.tables[:3])}{' …' if len(cluster.tables) > 3 else ''}"
        jobs.append((diagrams.dot_source(picture, classes, name), f"cluster-{index:02d}"))
    for item in model.flows:
        picture = diagrams.flow_graph(model.graph, list(item.steps))
        jobs.append((diagrams.dot_source(picture, classes, f"flow {item.name}"), f"flow-{_slug(item.name)}"))
    if not jobs:  # no cluster and no flow: the folder-level picture is all there is to draw
        return diagrams.render(
            diagrams.dot_source(diagrams.collapse_by_folder(model.graph), classes, "data flow"), out_dir
        )
    return diagrams.render_many(jobs, folder)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "flow"


def _report_pictures(model: ReportModel, classes: dict[str, str], title: str, spread: bool) -> dict[str, str]:
    """Every inline SVG report.html shows: the overview (every file and table, with ids for the page's
    script), each table's and each file's focus, each cluster. The small ones are laid out by one
    `dot` run; the overview, `spread` (past COLLAPSE_FILES files), by sfdp at the same time: dot's
    ranks put hundreds of files in one column, a force-directed layout keeps the picture square."""
    overview = diagrams.dot_source(
        model.graph,
        classes,
        title or "data flow",
        edge_labels=False,
        links=True,
        ids="ov-",
        legend=False,
        group_folders=not spread,
    )
    if spread:
        overview.attr(overlap="false", splines="false", outputorder="edgesfirst")
    keyed: list[tuple[str, graphviz.Digraph]] = []
    for table in model.tables:
        if flow.table_node(table.name) in model.graph:
            picture = diagrams.focus_graph(model.graph, table.name)
            keyed.append((f"table:{table.name}", diagrams.dot_source(picture, classes, table.name, links=True)))
    for entry in model.files:
        if flow.file_node(entry["file"]) in model.graph:
            picture = diagrams.file_focus_graph(model.graph, entry["file"])
            keyed.append((f"file:{entry['file']}", diagrams.dot_source(picture, classes, entry["file"], links=True)))
    for index, cluster in enumerate(model.clusters):
        picture = diagrams.cluster_graph(model.graph, list(cluster.tables))
        keyed.append(
            (f"cluster:{index}", diagrams.dot_source(picture, classes, "", edge_labels=False, links=True, legend=False))
        )
    with ThreadPoolExecutor(max_workers=2) as pool:
        drawn_overview = pool.submit(diagrams.svg_texts, [overview], "sfdp" if spread else "dot")
        svgs = diagrams.svg_texts([dot for _, dot in keyed])
        pictures = {key: svg for (key, _), svg in zip(keyed, svgs, strict=True)}
        pictures["overview"] = drawn_overview.result()[0]
    return pictures


def overview_data(model: ReportModel) -> dict:
    """What the overview's filters test, per SVG id: kind, name, folder, class, clusters, operations."""
    clusters = model.cluster_of()
    classes = {t.name: t.category for t in model.tables}
    nodes = []
    for node, data in model.graph.nodes(data=True):
        operations = sorted(
            {
                op
                for edge in [*model.graph.in_edges(node, data=True), *model.graph.out_edges(node, data=True)]
                for op in edge[2]["operations"]
            }
        )
        entry = {"id": f"ov-{node}", "kind": data["kind"], "name": data["label"], "ops": operations}
        if data["kind"] == "table":
            entry["class"] = classes.get(data["label"], "important")
            entry["cluster"] = clusters.get(data["label"], -1)
        else:
            entry["folder"] = data["folder"]
        nodes.append(entry)
    edges = [
        {"id": f"ov-edge:{index}", "from": f"ov-{a}", "to": f"ov-{b}", "ops": sorted(data["operations"])}
        for index, (a, b, data) in enumerate(sorted(model.graph.edges(data=True)))
    ]
    return {"nodes": nodes, "edges": edges}


def matrix(model: ReportModel) -> tuple[list[str], list[tuple[str, list[dict[str, int]]]]]:
    """Tables by folders: per cell the operations (and counts) the folder's files run on the table."""
    folders = sorted({entry["folder"] for entry in model.files})
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for call in model.calls:
        for table, operation in [(call.table, call.operation), *((t, "select") for t in call.embedded)]:
            if table is None or operation == "unknown":
                continue
            cell = cells.setdefault((table, flow.folder_of(call.file)), {})
            cell[operation] = cell.get(operation, 0) + 1
    rows = [(t.name, [cells.get((t.name, folder), {}) for folder in folders]) for t in model.tables]
    return folders, rows


def _cell_style(operations: dict[str, int]) -> str:
    """Writes take the colour of the main write; a cell that also reads gets a green corner."""
    colours = diagrams.OPERATION_COLOURS
    writes = {op: n for op, n in operations.items() if op != "select"}
    if not writes:
        return f"background:{colours['select']}"
    main = colours.get(max(writes, key=lambda op: (writes[op], op)), "#555")
    if "select" in operations:
        return f"background:linear-gradient(135deg,{main} 62%,{colours['select']} 62%)"
    return f"background:{main}"


_ENV.filters["cell_style"] = _cell_style


def _render_html(
    model: ReportModel, pictures: dict[str, str], focus: str | None, title: str, link, folder_fills: dict[str, str]
) -> str:
    folders, rows = matrix(model)
    return _ENV.get_template("report.html.j2").render(
        title=title,
        version=__version__,
        summary=model.summary,
        flows=model.flows,
        table_names={t.name for t in model.tables},
        overview=pictures.get("overview", ""),
        pictures=pictures,
        overview_data=overview_data(model),
        focus=focus,
        tables=model.tables,
        table_pages=model.table_pages(),
        file_pages=model.file_pages(),
        files=model.files,
        calls=model.calls,
        clusters=model.clusters,
        consolidations=model.consolidations,
        class_colours=diagrams.CLASS_COLOURS,
        operation_colours=diagrams.OPERATION_COLOURS,
        matrix_folders=folders,
        matrix_rows=rows,
        folder_fills=folder_fills,
        link=link,
    )
