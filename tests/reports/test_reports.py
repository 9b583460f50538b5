"""The written reports, and report.html rendered in real headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import networkx as nx
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.plan import load_plan
from dualshift.reports.interaction_map import load_map
from dualshift.reports.writer import write_reports
from tests.analyzer.conftest import XBOT
from tests.reports.chromium import Browser, chromium_path
from tests.reports.test_flow import _call

MAP = XBOT / "expected" / "DATABASE_INTERACTION_MAP.json"
PLAN = XBOT / "dualshift.toml"


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(
        app, ["report", str(MAP), "--plan", str(PLAN), "--out-dir", str(out), "--title", "xbot"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_every_report_is_written(report_dir: Path) -> None:
    names = {p.name for p in report_dir.iterdir()}
    assert names >= {
        "DATA_FLOW_ANALYSIS.json",
        "data-flow.graph.json",
        "data-flow.graphml",
        "DATA_FLOW_DIAGRAM.md",
        "data-flow.svg",
        "data-flow.png",
        "report.html",
    }
    assert (report_dir / "data-flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flow_analysis_in_the_seeds_shape(report_dir: Path) -> None:
    data = json.loads((report_dir / "DATA_FLOW_ANALYSIS.json").read_text())
    plan_job = next(f for f in data["flows"] if f["name"] == "planJob")
    assert plan_job["path"].startswith("planJob → content_metadata → postingQueue → posted_decisions")
    assert plan_job["steps"][1] == {
        "file": "src/jobs/postingQueue.ts",
        "table": "content_metadata",
        "operation": "select",
    }
    assert data["tables"]["outcomes"]["class"] == "critical"


def test_graph_exports_round_trip(report_dir: Path) -> None:
    graphml = nx.read_graphml(report_dir / "data-flow.graphml")
    linked = nx.node_link_graph(json.loads((report_dir / "data-flow.graph.json").read_text()), edges="links")
    assert set(graphml.nodes) == set(linked.nodes)
    assert graphml.has_edge("file:src/jobs/planJob.ts", "table:content_metadata")


def test_mermaid_is_well_formed_and_names_the_flows(report_dir: Path) -> None:
    text = (report_dir / "DATA_FLOW_DIAGRAM.md").read_text()
    blocks = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    assert len(blocks) == 5  # four flows and the whole system
    for block in blocks:
        assert block.startswith("flowchart LR")
        for line in block.splitlines()[1:]:
            # every id is a safe identifier; labels are quoted
            assert re.match(
                r'^\s+(subgraph \w+\["[^"]*"\]|end|\w+(\[\("[^"]*"\)\]|\["[^"]*"\])|\w+ -->\|"?[^|]*"?\| \w+|classDef \w+ .*|class \w+ \w+)$',
                line,
            ), line
    assert (
        "| `content_queue` | `content_metadata` (12), `content_generation_metadata_comprehensive` (3) | ALL 15 |"
        in text
    )


def test_large_inputs_draw_one_picture_per_flow_and_keep_files_in_the_overview(tmp_path: Path) -> None:
    calls = [
        _call(f"src/f{i % 10}/file{i}.ts", f"t{(i * 7 + j) % 130}", "insert" if j == 0 else "select", j + 1)
        for i in range(200)
        for j in range(3)
    ]
    # One flow: a job creates rows that a worker reads to write its own.
    calls += [
        _call("src/jobs/planJob.ts", "plans", "insert", 1),
        _call("src/f1/worker.ts", "plans", "select", 1),
        _call("src/f1/worker.ts", "posted", "insert", 2),
    ]
    written = write_reports(calls, tmp_path / "big", title="big")
    assert not (tmp_path / "big" / "data-flow.svg").exists()  # no 200-file hairball
    flows = [p for p in written if p.parent.name == "diagrams" and p.name.startswith("flow-")]
    assert flows and all("legend:" in p.read_text() for p in flows if p.suffix == ".svg")
    html = (tmp_path / "big" / "report.html").read_text()
    assert 'id="ov&#45;file:src/f3/file13.ts"' in html  # the overview keeps files as nodes (dot writes - as &#45;)
    only_folders = write_reports(calls[:600], tmp_path / "no-flow", title="no flow")
    assert tmp_path / "no-flow" / "data-flow.svg" in only_folders  # nothing to draw per flow: one folder picture
    assert "f3/ (20 files)" in (tmp_path / "no-flow" / "data-flow.svg").read_text()
    write_reports(calls, tmp_path / "focus", focus="t5", title="focus")
    focused = (tmp_path / "focus" / "data-flow.svg").read_text()
    assert ">t5<" in focused and ">t77<" not in focused and "legend:" in focused


def test_collapse_by_folder_still_adds_up(tmp_path: Path) -> None:
    from dualshift.reports.diagrams import collapse_by_folder
    from dualshift.reports.model import build_model

    calls = [_call(f"src/f{i % 2}/file{i}.ts", "t1", "insert", 1) for i in range(6)]
    calls.append(_call("src/f9/only.ts", "t1", "select", 1))
    collapsed = collapse_by_folder(build_model(calls).graph)
    assert collapsed.nodes["folder:f0"]["label"] == "f0/ (3 files)"
    assert collapsed.nodes["folder:f9"]["label"] == "f9/ (1 file)"
    assert collapsed.edges["folder:f1", "table:t1"]["weight"] == 3


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    not_a_map = tmp_path / "x.json"
    not_a_map.write_text("{}")
    result = runner.invoke(app, ["report", str(not_a_map), "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a dualshift interaction map" in result.stderr
    result = runner.invoke(app, ["report", str(MAP), "--focus", "nope", "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--focus nope" in result.stderr


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (bash .ci/setup installs it)")
def test_report_renders_in_headless_chromium(report_dir: Path) -> None:
    calls = load_map(MAP).calls
    plan = load_plan(PLAN)
    browser = Browser()
    try:
        browser.open((report_dir / "report.html").as_uri())
        assert browser.evaluate("document.querySelector('#diagram svg').getBBox().width") > 300
        assert browser.evaluate("document.querySelectorAll('#diagram svg g.node').length") == 14 + 28
        assert browser.evaluate("document.querySelectorAll('#calls-table tbody tr').length") == len(calls)
        assert browser.evaluate("document.querySelectorAll('#tables-table tbody tr').length") == 14
        assert browser.evaluate("document.querySelectorAll('#consolidation h3').length") == len(plan.tables)
        # The filter hides every call site that does not mention the text typed.
        shown = browser.evaluate(
            """(() => { const input = document.querySelector('input[data-filter="calls-table"]');
                 input.value = 'tweet_metrics'; input.dispatchEvent(new Event('input'));
                 return [...document.querySelectorAll('#calls-table tbody tr')].filter(r => r.style.display !== 'none').length; })()"""
        )
        assert shown == sum(1 for c in calls if "tweet_metrics" in (c.file + (c.table or "") + c.code))
        # Sorting by a numeric column puts the most-read table first.
        first = browser.evaluate(
            """(() => { const th = document.querySelectorAll('#tables-table th')[2]; th.click(); th.click();
                 return document.querySelector('#tables-table tbody tr td').textContent; })()"""
        )
        assert first == "outcomes"
        browser.screenshot(report_dir / "screenshot.png")
        assert (report_dir / "screenshot.png").stat().st_size > 50_000
    finally:
        browser.close()


def test_a_map_report_is_titled_by_its_project_and_links_to_the_scanned_tree(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    result = CliRunner().invoke(app, ["report", str(MAP), "--root", str(XBOT), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    assert "<title>xbot — database interaction report (dualshift)</title>" in html
    links = re.findall(r'<td class="where"><a href="([^"]+)"', html)
    assert links and all((out / link).resolve().is_file() for link in links)
