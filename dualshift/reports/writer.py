"""Write every report of a data-flow analysis into one directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import networkx as nx

from dualshift import __version__
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


def write_reports(
    calls: list[CallSite],
    out_dir: Path,
    plan: Plan | None = None,
    focus: str | None = None,
    title: str = "",
    link_base: str = "",
    render_images: bool = True,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(calls, plan)
    classes = {t.name: t.category for t in model.tables}
    graph = diagrams.view(model, focus)
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
            system_diagram=diagrams.mermaid_graph(graph, classes),
            tables=model.tables,
            clusters=model.clusters,
            consolidations=model.consolidations,
        ),
    )
    svg = ""
    if render_images:
        dot = diagrams.dot_source(graph, classes, title or "data flow")
        written.extend(diagrams.render(dot, out_dir))
        svg = re.sub(r"^<\?xml[^>]*>\s*(<!DOCTYPE[^>]*>\s*)?", "", (out_dir / "data-flow.svg").read_text())
    put(
        "report.html",
        _ENV.get_template("report.html.j2").render(
            title=title,
            version=__version__,
            summary=model.summary,
            flows=model.flows,
            table_names={t.name for t in model.tables},
            svg=svg,
            focus=focus,
            tables=model.tables,
            files=model.files,
            calls=model.calls,
            clusters=model.clusters,
            consolidations=model.consolidations,
            class_colours=diagrams.CLASS_COLOURS,
            operation_colours=diagrams.OPERATION_COLOURS,
            link_base=link_base,
        ),
    )
    return written
