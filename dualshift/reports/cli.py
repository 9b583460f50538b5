"""`dualshift report`: the data-flow graph, its flows and diagrams, and the HTML report."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import typer

from dualshift.console import examples, fail, output_console
from dualshift.plan import PlanError, load_plan
from dualshift.reports.interaction_map import MapError, load_map


def register(app: typer.Typer) -> None:
    app.command(
        "report",
        epilog=examples(
            "dualshift report out/DATABASE_INTERACTION_MAP.json --plan fixtures/xbot/dualshift.toml -o out/report",
            "dualshift report fixtures/xbot --focus content_metadata",
        ),
    )(report)


def project_name(root: Path) -> str:
    """The scanned project's name: package.json's or pyproject.toml's `name`, else its folder's."""
    manifests = [
        (root / "package.json", lambda text: json.loads(text).get("name")),
        (root / "pyproject.toml", lambda text: tomllib.loads(text).get("project", {}).get("name")),
    ]
    for path, read_name in manifests:
        try:
            found = read_name(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, str) and found.strip():
            return found.strip()
    return root.resolve().name


def report(
    source: Path = typer.Argument(
        ..., help="An interaction map (DATABASE_INTERACTION_MAP.json from `dualshift scan`) or a source tree to scan."
    ),
    out_dir: Path = typer.Option(Path("dualshift-report"), "--out-dir", "-o", help="Directory for the reports."),
    plan: Path | None = typer.Option(None, "--plan", help="A plan (dualshift.toml): adds the before/after view."),
    focus: str | None = typer.Option(None, "--focus", help="Draw only this table's neighbourhood."),
    title: str = typer.Option("", "--title", help="Title shown on the reports (default: the scanned project's name)."),
    link_base: str = typer.Option(
        "", "--link-base", help="Prefix for file links in report.html, e.g. a repository URL ending in /blob/main/."
    ),
    root: Path | None = typer.Option(
        None,
        "--root",
        help="The scanned tree, for report.html's local file links when SOURCE is a map "
        "(default: the source tree, else the current directory).",
    ),
) -> None:
    """Write DATA_FLOW_ANALYSIS.json, the graph (node-link JSON, GraphML), DATA_FLOW_DIAGRAM.md (Mermaid),
    data-flow.svg/.png (Graphviz) and a self-contained report.html."""
    from dualshift.analyzer.scan import scan_tree
    from dualshift.reports.diagrams import DiagramError  # networkx and graphviz: only `report` needs them
    from dualshift.reports.writer import write_reports

    console = output_console()
    if source.is_dir():
        calls = scan_tree(source).calls
        root = root or source
        name = project_name(source)
    elif source.is_file():
        try:
            loaded = load_map(source)
        except MapError as exc:
            raise fail(str(exc)) from exc
        calls = loaded.calls
        name = project_name(root) if root else loaded.root or source.stem
    else:
        raise fail(f"{source}: no such map file or source directory")
    loaded_plan = None
    if plan is not None:
        try:
            loaded_plan = load_plan(plan)
        except PlanError as exc:
            raise fail(str(exc)) from exc
    try:
        written = write_reports(calls, out_dir, loaded_plan, focus, title or name, link_base=link_base, root=root)
    except DiagramError as exc:
        raise fail(str(exc)) from exc
    except OSError as exc:
        raise fail(f"{out_dir}: cannot write reports: {exc.strerror}") from exc
    for path in written:
        console.print(f"wrote {path}", highlight=False)
