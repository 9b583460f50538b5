"""The whole fixture service against its hand-checked map."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
from typer.testing import CliRunner

from dualshift.analyzer.scan import scan_tree
from dualshift.cli import app
from dualshift.reports.interaction_map import SCHEMA_PATH, build_map, load_map, render_map

from .conftest import XBOT

EXPECTED = XBOT / "expected" / "DATABASE_INTERACTION_MAP.json"
VOLATILE = ("version", "tool")


def _without_version(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in VOLATILE}


def test_fixture_map_matches_the_hand_checked_one(tmp_path: Path) -> None:
    out = tmp_path / "map.json"
    result = CliRunner().invoke(app, ["scan", str(XBOT), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0, result.output
    assert _without_version(json.loads(out.read_text())) == _without_version(json.loads(EXPECTED.read_text()))


def test_map_follows_its_json_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(EXPECTED.read_text()), schema)


def test_the_seeds_flow_is_in_the_map() -> None:
    """Spot checks written from reading the fixture's source, independent of the expected file."""
    calls = scan_tree(XBOT, use_cache=False, jobs=1).calls
    found = {(c.file, c.line, c.table, c.operation) for c in calls}
    assert ("src/jobs/planJob.ts", 22, "content_metadata", "insert") in found  # multi-line, .select().single()
    assert ("src/jobs/planJob.ts", 45, "content_generation_metadata_comprehensive", "insert") in found  # import
    assert ("src/jobs/planJob.ts", 57, "content_metadata", "select") in found  # await x.from<Row>() misparse
    assert ("src/jobs/postingQueue.ts", 11, "content_metadata", "select") in found  # builder in a variable
    assert ("src/jobs/postingQueue.ts", 30, "posted_decisions", "insert") in found  # TABLES.POSTED.name
    assert ("src/jobs/postingQueue.ts", 42, "content_metadata", "update") in found
    assert ("src/jobs/metricsScraperJob.ts", 30, "outcomes", "insert") in found  # enum member
    assert ("src/jobs/metricsScraperJob.ts", 54, "tweet_metrics", "upsert") in found
    assert ("src/learning/learningSystem.ts", 20, "learning_posts", "insert") in found  # nested as-const
    assert ("src/posting/fixedThreadPoster.ts", 6, "posted_decisions", "insert") in found  # table[op](...)
    assert ("src/posting/resilientReplyPoster.ts", 4, "content_metadata", "update") in found  # await import
    tables = {c.table for c in calls}
    assert "should_not_appear" not in tables  # node_modules
    assert not any(c.file.endswith(".d.ts") for c in calls)
    # Array.from, Buffer.from, Uint8Array.from, rxjs from, comments and strings: nothing from those files.
    assert not any(c.file.endswith(("bulletproofTwitterScraper.ts", "playwrightPoster.ts")) for c in calls)
    assert not any(c.file.endswith("bulletproofTwitterComposer.ts") for c in calls)


def test_scan_is_deterministic_across_runs_and_worker_counts(tmp_path: Path) -> None:
    one = render_map(build_map(scan_tree(XBOT, use_cache=False, jobs=1)))
    two = render_map(build_map(scan_tree(XBOT, use_cache=False, jobs=2)))
    cached_dir = tmp_path / "cache"
    cold = render_map(build_map(scan_tree(XBOT, cache_dir=cached_dir, jobs=1)))
    warm = render_map(build_map(scan_tree(XBOT, cache_dir=cached_dir, jobs=1)))
    assert one == two == cold == warm
    assert any(cached_dir.rglob("*")), "the cache was not written"


def test_load_map_reads_back_the_records() -> None:
    loaded = load_map(EXPECTED)
    direct = scan_tree(XBOT, use_cache=False, jobs=1)
    assert loaded.calls == direct.calls
    assert sorted(loaded.side_calls, key=lambda c: (c.file, c.line)) == direct.side_calls


def test_seed_summary_counts_upserts_as_updates() -> None:
    data = json.loads(EXPECTED.read_text())
    operations = [c["operation"] for c in data["calls"]]
    summary = data["summary"]
    assert summary["totalInteractions"] == len(data["calls"])
    assert summary["updates"] == operations.count("update") + operations.count("upsert")
    assert summary["writes"] == operations.count("insert")
    embedded_reads = sum(len([t for t in c["embedded"] if t != c["table"]]) for c in data["calls"])
    assert summary["reads"] == operations.count("select") + embedded_reads
    assert data["topTables"][0] == {"table": "content_metadata", "queries": 12}


def test_the_cache_sees_every_change(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "xbot"
    shutil.copytree(XBOT, root, symlinks=True)
    cache = tmp_path / "cache"
    first = scan_tree(root, cache_dir=cache, jobs=1)
    assert scan_tree(root, cache_dir=cache, jobs=1).calls == first.calls  # the whole-tree entry
    job = root / "src" / "jobs" / "replyJob.ts"
    job.write_text(job.read_text().replace("'reply_opportunities'", "'reply_targets'", 1))
    os.utime(job, ns=(1, 1))  # even with an old mtime, the size changed
    changed = scan_tree(root, cache_dir=cache, jobs=1)
    assert "reply_targets" in {c.table for c in changed.calls}
    (root / "src" / "jobs" / "newJob.ts").write_text("export const f = (db: any) => db.from('posts').delete();\n")
    added = scan_tree(root, cache_dir=cache, jobs=1)
    assert any(c.file == "src/jobs/newJob.ts" for c in added.calls)
    (root / "src" / "jobs" / "newJob.ts").unlink()
    assert scan_tree(root, cache_dir=cache, jobs=1).calls == changed.calls


def test_streamed_map_has_the_same_bytes_as_the_rendered_one(tmp_path: Path) -> None:
    from dualshift.reports.interaction_map import write_map

    result = scan_tree(XBOT, use_cache=False, jobs=1)
    write_map(result, tmp_path / "map.json")
    assert (tmp_path / "map.json").read_text() == render_map(build_map(result))


def test_a_checkout_with_new_times_and_the_same_bytes_scans_warm(tmp_path: Path, monkeypatch) -> None:
    import shutil

    from dualshift.analyzer import scan as scan_module

    root = tmp_path / "xbot"
    shutil.copytree(XBOT, root, symlinks=True)
    cache = tmp_path / "cache"
    first = scan_tree(root, cache_dir=cache, jobs=1)
    sources = [p for p in root.rglob("*.ts") if "node_modules" not in p.parts and not p.name.endswith(".d.ts")]
    for number, path in enumerate(sources):  # what `git checkout` or a fresh clone does
        path.write_bytes(path.read_bytes())
        os.utime(path, ns=(10**18 + number, 10**18 + number))
    changed = sources[0]
    changed.write_text(changed.read_text() + "\nexport const late = (db: any) => db.from('posts').delete();\n")
    analyzed: list[str] = []
    real = scan_module.analyze_source
    monkeypatch.setattr(scan_module, "analyze_source", lambda rel, *rest: analyzed.append(rel) or real(rel, *rest))
    again = scan_tree(root, cache_dir=cache, jobs=1)
    assert analyzed == [changed.relative_to(root).as_posix()]  # only the file whose bytes changed
    assert len(again.calls) == len(first.calls) + 1
    analyzed.clear()
    scan_tree(root, cache_dir=cache, jobs=1)
    assert analyzed == []
