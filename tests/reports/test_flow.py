"""The data-flow graph, its derived flows, the table classes and the overlap clusters, on the fixture."""

from __future__ import annotations

import pytest

from dualshift.analyzer import flow
from dualshift.analyzer.records import CallSite
from dualshift.analyzer.scan import scan_tree
from tests.analyzer.conftest import XBOT


@pytest.fixture(scope="module")
def calls() -> list[CallSite]:
    return scan_tree(XBOT, use_cache=False, jobs=1).calls


@pytest.fixture(scope="module")
def graph(calls):
    return flow.build_graph(calls)


def test_edges_point_from_writers_to_tables_to_readers(graph) -> None:
    assert graph.has_edge("file:src/jobs/planJob.ts", "table:content_metadata")
    assert graph.has_edge("table:content_metadata", "file:src/jobs/postingQueue.ts")
    edge = graph.edges["file:src/jobs/postingQueue.ts", "table:content_metadata"]
    assert edge["operations"] == {"update": 1}
    assert edge["sites"] == [{"file": "src/jobs/postingQueue.ts", "line": 42, "operation": "update"}]
    # Embedded resources are reads of the embedded table.
    assert graph.has_edge("table:content_metadata", "file:src/learning/multiDimensionalLearning.ts")
    assert graph.nodes["file:src/jobs/planJob.ts"]["folder"] == "jobs"


def test_producers_and_consumers(graph) -> None:
    assert flow.producers(graph, "outcomes") == ["src/jobs/analyticsCollectorJob.ts", "src/jobs/metricsScraperJob.ts"]
    assert "src/learning/learningSystem.ts" in flow.consumers(graph, "outcomes")


def test_the_seeds_flow_comes_out_of_the_fixture_by_itself(graph) -> None:
    flows = {f.name: f for f in flow.derive_flows(graph)}
    seeds = [
        "planJob",
        "content_metadata",
        "postingQueue",
        "posted_decisions",
        "metricsScraperJob",
        "outcomes",
        "learningSystem",
    ]
    assert flows["planJob"].path[: len(seeds)] == seeds
    assert flows["planJob"].path[len(seeds) :] == ["learning_posts"]  # what learningSystem writes in turn
    first = flows["planJob"].steps[0]
    assert (first.file, first.table, first.operation) == ("src/jobs/planJob.ts", "content_metadata", "insert")
    # The seeds' reply system: replyJob reads reply_opportunities and joins the same flow.
    assert flows["replyOpportunityHarvester"].path[:4] == [
        "replyOpportunityHarvester",
        "reply_opportunities",
        "replyJob",
        "content_metadata",
    ]


def test_flows_never_pass_through_scripts_or_generic_helpers(graph) -> None:
    for derived in flow.derive_flows(graph):
        assert not any(s.file.startswith("scripts/") or s.file == "src/db/db.ts" for s in derived.steps)


def test_classification_with_reasons(graph) -> None:
    classes = {c.table: c for c in flow.classify(graph, known_tables=["content_metadata", "never_used"])}
    assert classes["content_metadata"].category == "critical"
    assert any("scheduled job" in r for r in classes["content_metadata"].reasons)
    assert classes["unified_posts"].category == "legacy"
    assert classes["unified_posts"].reasons == ("only scripts or tests touch it",)
    assert classes["real_tweet_metrics"].category == "important"
    assert classes["never_used"].category == "orphaned"


def test_overlap_clusters_find_the_seeds_three_groups(calls) -> None:
    clusters = [set(c.tables) for c in flow.overlap_clusters(calls)]
    assert {"content_metadata", "content_generation_metadata_comprehensive"} in clusters
    assert {"posted_decisions", "tweets", "posts"} in clusters
    assert {"outcomes", "real_tweet_metrics", "tweet_analytics", "tweet_metrics"} in clusters
    assert not any("bot_config" in c or "learning_posts" in c for c in clusters)


def test_flows_are_bounded_on_a_large_synthetic_graph() -> None:
    calls = []
    for i in range(200):
        for j in range(3):
            table = f"t{(i * 7 + j * 13) % 130}"
            calls.append(_call(f"src/f{i % 10}/file{i}.ts", table, "insert" if j == 0 else "select", i * 10 + j))
    graph = flow.build_graph(calls)
    derived = flow.derive_flows(graph)
    assert all(len({s.table for s in f.steps}) <= flow.MAX_FLOW_DEPTH for f in derived)


def _call(path: str, table: str, operation: str, line: int) -> CallSite:
    return CallSite(
        file=path,
        line=line,
        column=1,
        start_byte=0,
        end_byte=1,
        receiver_start=0,
        receiver_end=1,
        table_arg_start=0,
        table_arg_end=1,
        table=table,
        table_kind="literal",
        table_expression=f"'{table}'",
        operation=operation,
        chain=("from", operation),
        client="db",
        language="typescript",
        code="",
    )
