"""report.html at real size (150 tables, 300 files), driven in headless Chromium, and the static
pictures drawn one per cluster and per flow."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest
from typer.testing import CliRunner

from dualshift.analyzer import flow
from dualshift.analyzer.scan import scan_tree
from dualshift.cli import app
from dualshift.plan import NewTable, Plan, Source
from dualshift.reports.model import build_model
from dualshift.reports.writer import write_reports
from tests.reports.big_tree import generate
from tests.reports.chromium import Browser, chromium_path
from tests.reports.test_flow import _call


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("at-scale")
    tree = generate(base / "big-service-src", files=300, tables=150)
    out = base / "reports" / "out"
    result = CliRunner().invoke(app, ["report", str(tree), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    return tree, out


@pytest.fixture(scope="module")
def model(big):
    return build_model(scan_tree(big[0]).calls)


def test_the_tree_is_real_size(model) -> None:
    assert (model.summary["tables"], model.summary["files"]) == (150, 300)
    assert len(model.clusters) > 10 and len(model.flows) > 10


def test_at_scale_one_static_picture_per_cluster_and_per_flow_each_with_its_legend(big, model) -> None:
    _, out = big
    assert not (out / "data-flow.svg").exists()  # no giant whole-system picture
    svgs = sorted((out / "diagrams").glob("*.svg"))
    assert len([p for p in svgs if p.name.startswith("cluster-")]) == len(model.clusters)
    assert len([p for p in svgs if p.name.startswith("flow-")]) == len(model.flows)
    assert len(list((out / "diagrams").glob("*.png"))) == len(svgs)
    for svg in svgs:
        text = svg.read_text()
        assert "legend:" in text and "critical table" in text and ">insert<" in text.replace(" insert", "insert")
    first_flow = model.flows[0]
    flow_svg = (out / "diagrams" / f"flow-{first_flow.name}.svg").read_text()
    assert all(f">{step.table}<" in flow_svg for step in first_flow.steps)
    markdown = (out / "DATA_FLOW_DIAGRAM.md").read_text()
    assert "## The whole system" not in markdown
    assert markdown.count("```mermaid") == len(model.flows) + len(model.clusters)


needs_chromium = pytest.mark.skipif(
    chromium_path() is None, reason="chromium is not installed (bash .ci/setup installs it)"
)


@pytest.fixture(scope="module")
def browser(big):
    """One headless Chromium with the report open (loading 11 MB of HTML takes seconds)."""
    opened = Browser()
    try:
        opened.open((big[1] / "report.html").as_uri())
        yield opened
    finally:
        opened.close()


@needs_chromium
def test_searching_a_table_shows_its_writers_and_its_diagram(big, model, browser) -> None:
    out = big[1]
    graph = model.graph
    # The table with the most writers: the page a person would look for first.
    table = max(flow.tables(graph), key=lambda t: (len(flow.producers(graph, t)), t))
    writers, readers = flow.producers(graph, table), flow.consumers(graph, table)
    assert browser.evaluate("document.querySelector('header h1').firstChild.textContent") == "big-service"
    assert browser.evaluate("document.querySelectorAll('#diagram svg g.node').length") == 450  # files are nodes
    assert browser.evaluate("document.querySelector('#cluster-count b').textContent") == str(len(model.clusters))
    assert browser.evaluate("document.querySelectorAll('#clusters .cluster svg').length") == len(model.clusters)
    assert browser.evaluate("document.querySelectorAll('#matrix-table tbody tr').length") == 150
    browser.screenshot(out / "screenshot-summary.png")

    # Type the table's name into the search box: its page opens.
    browser.evaluate(
        f"""(() => {{ const s = document.getElementById('search'); s.value = {table!r};
             s.dispatchEvent(new Event('change')); }})()"""
    )
    browser.evaluate("new Promise(r => setTimeout(r, 200))")
    assert browser.evaluate("location.hash") == f"#table:{table}"
    shown_writers = browser.evaluate(
        "[...document.querySelectorAll('#detail .writers tbody td:first-child')].map(td => td.textContent)"
    )
    assert shown_writers and sorted(shown_writers) == writers
    shown_readers = browser.evaluate(
        "[...document.querySelectorAll('#detail .readers tbody td:first-child')].map(td => td.textContent)"
    )
    assert sorted(shown_readers) == readers
    # Its own diagram: the table, every writer and every reader, drawn and visible.
    nodes = browser.evaluate(
        "[...document.querySelectorAll('#detail .diagram svg g.node title')].map(t => t.textContent)"
    )
    assert len(nodes) == 1 + len(set(writers) | set(readers)) and f"table_{table}" in nodes
    assert browser.evaluate("document.querySelector('#detail .diagram svg').getBoundingClientRect().width") > 300
    browser.screenshot(out / "screenshot-table.png")

    # A writer's name on the page goes to that file's page, listing the table among its writes.
    browser.evaluate("document.querySelector('#detail .writers tbody a').click()")
    browser.evaluate("new Promise(r => setTimeout(r, 200))")
    assert browser.evaluate("location.hash").startswith("#file:")
    written = browser.evaluate(
        "[...document.querySelectorAll('#detail .writes tbody td:first-child')].map(td => td.textContent)"
    )
    assert table in written

    # The overview filter keeps the table and its neighbours and zooms to them.
    browser.evaluate("location.hash = 'overview'")
    browser.evaluate("new Promise(r => setTimeout(r, 200))")
    full_width = browser.evaluate("document.querySelector('#diagram svg').viewBox.baseVal.width")
    count = browser.evaluate(
        f"""(() => {{ const i = document.getElementById('ov-text'); i.value = {table!r};
             i.dispatchEvent(new Event('input')); return document.getElementById('ov-count').textContent; }})()"""
    )
    browser.evaluate("new Promise(r => setTimeout(r, 200))")
    undimmed = browser.evaluate("document.querySelectorAll('#diagram g.node:not(.dim)').length")
    assert count.startswith("1 match") and undimmed == 1 + len(set(writers) | set(readers))
    view_width = browser.evaluate("document.querySelector('#diagram svg').viewBox.baseVal.width")
    assert view_width < full_width  # zoomed in on the matches
    browser.screenshot(out / "screenshot-overview.png")
    browser.evaluate("document.getElementById('ov-reset').click()")


@needs_chromium
def test_call_site_filter_takes_several_words_and_links_open_local_files(big, model, browser) -> None:
    tree, out = big
    table = model.calls[0].table
    expected = sum(1 for c in model.calls if c.table == table and c.operation == "insert")
    browser.evaluate("location.hash = 'calls'")
    browser.evaluate("new Promise(r => setTimeout(r, 200))")
    # The code column is wide enough to read without filtering.
    assert browser.evaluate("document.querySelector('#calls-table pre.code').getBoundingClientRect().width") > 350
    browser.screenshot(out / "screenshot-calls.png")
    shown = browser.evaluate(
        f"""(() => {{ const input = document.querySelector('input[data-filter="calls-table"]');
             input.value = '{table}  INSERT'; input.dispatchEvent(new Event('input'));
             return [...document.querySelectorAll('#calls-table tbody tr')].filter(r => r.style.display !== 'none').length; }})()"""
    )
    # Rows about other tables can mention the name only in code; the generated code never does.
    assert shown == expected
    href = browser.evaluate("document.querySelector('#calls-table tbody td.where a').getAttribute('href')")
    first = model.calls[0]
    assert href.endswith(first.file) and (out / unquote(href)).resolve() == (tree / first.file).resolve()


def test_link_base_and_plurals(tmp_path: Path) -> None:
    calls = [_call("src/jobs/a.ts", "t1", "insert", 3), _call("src/api/b.ts", "t2", "select", 9)]
    plan = Plan(
        path="dualshift.toml",
        name="p",
        tables=(
            NewTable(name="t_new", key=("id",), columns=(), sources=(Source(table="t1"), Source(table="t2"))),
            NewTable(name="t_one", key=("id",), columns=(), sources=(Source(table="t1"),)),
        ),
    )
    write_reports(calls, tmp_path, plan, title="tiny", link_base="https://git.example/blob/main/")
    html = (tmp_path / "report.html").read_text()
    assert 'href="https://git.example/blob/main/src/jobs/a.ts#L3"' in html
    assert "ALL 2 queries" in html and "ALL 1 query<" in html and "1 queries" not in html
    assert "<span>call sites</span>" in html and "<span>overlap clusters</span>" in html
    assert "2 call sites, 2 tables, 2 files" in (tmp_path / "DATA_FLOW_DIAGRAM.md").read_text()
