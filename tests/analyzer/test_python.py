"""supabase-py code through the same analyzer pipeline: the pyworker fixture and focused patterns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from dualshift.analyzer.scan import scan_tree
from dualshift.cli import app

from .conftest import REPO, XBOT, only_call

PYWORKER = REPO / "fixtures" / "pyworker"


def test_pyworker_map_matches_the_hand_checked_one(tmp_path: Path) -> None:
    out = tmp_path / "map.json"
    assert CliRunner().invoke(app, ["scan", str(PYWORKER), "--out", str(out), "--no-cache", "-q"]).exit_code == 0
    expected = json.loads((PYWORKER / "expected" / "DATABASE_INTERACTION_MAP.json").read_text())
    actual = json.loads(out.read_text())
    for data in (expected, actual):
        data.pop("version")
        data.pop("tool")
    assert actual == expected


def test_pyworker_facts_read_from_its_source() -> None:
    calls = scan_tree(PYWORKER, use_cache=False, jobs=1).calls
    found = {(c.file, c.line, c.table, c.operation, c.table_kind) for c in calls}
    assert ("worker/jobs/enrich_content.py", 10, "content_metadata", "select", "imported") in found
    assert (
        "worker/jobs/metrics_backfill.py",
        10,
        "tweet_metrics",
        "select",
        "object_member",
    ) in found  # METRICS["legacy"]["name"]
    assert ("worker/jobs/metrics_backfill.py", 16, "outcomes", "insert", "object_member") in found  # await …from_()
    assert {(t, k) for f, _, t, _, k in found if f == "worker/db/repository.py"} == {
        ("bot_config", "callers"),
        ("learning_posts", "callers"),
        (None, "dynamic"),
    }
    query = next(c for c in calls if c.builder_variable == "query")
    assert query.chain == ("from", "select", "order", "limit", "execute")
    assert all(c.language == "python" for c in calls)


def test_mixed_tree_reports_each_language(tmp_path: Path) -> None:
    shutil.copytree(XBOT / "src", tmp_path / "web" / "src")
    shutil.copytree(PYWORKER / "worker", tmp_path / "worker")
    calls = scan_tree(tmp_path, use_cache=False, jobs=2).calls
    languages = {c.language for c in calls}
    assert languages == {"typescript", "tsx", "python"}
    assert sum(1 for c in calls if c.file.startswith("worker/")) == 14


def test_python_patterns(scan) -> None:
    result = scan(
        {
            "svc.py": """
            TABLE = "posted_decisions"

            async def run(client, key):
                response = await (
                    client.schema("public")
                    .table(TABLE)
                    .upsert([{"decision_id": key, "tweet_id": "t"}], on_conflict="decision_id")
                    .execute()
                )
                q = client.table("outcomes").select("likes", "views")
                q = q.not_.is_("likes", "null")
                rows = q.execute()
                client.storage.from_("media").download("x.png")
                client.rpc("refresh", {}).execute()
                return response, rows, Array.from_(x), "client.table('x')"
            """
        }
    )
    upsert, select = result.calls
    assert (upsert.table, upsert.table_kind, upsert.schema, upsert.operation) == (
        "posted_decisions",
        "constant",
        "public",
        "upsert",
    )
    assert upsert.on_conflict == ("decision_id",) and upsert.write_columns == ("decision_id", "tweet_id")
    assert select.chain == ("from", "select", "not", "is", "execute") and select.select_columns == ("likes", "views")
    assert [(c.kind, c.name) for c in result.side_calls] == [("storage", "media"), ("rpc", "refresh")]


def test_a_python_file_that_does_not_parse_is_reported(scan) -> None:
    result = scan({"bad.py": "def broken(:\n    pass\n", "good.py": "client.table('posts').delete().execute()\n"})
    assert only_call(result).table == "posts"
    assert result.failures[0].file == "bad.py" and result.failures[0].reason.startswith("syntax error")


def test_python_json_path_filters_name_their_column(scan) -> None:
    result = scan({"w.py": 'client.table("posts").select("id").eq("metadata->>kind", "x").execute()\n'})
    (call,) = result.calls
    assert [f.column for f in call.filters] == ["metadata"]


def test_sqlalchemy_table_constructs_are_not_supabase_calls(scan) -> None:
    result = scan(
        {
            "models.py": """
            import sqlalchemy as sa
            users = sa.table("users", sa.column("id"), sa.column("name"))
            query = sa.select(users).where(users.c.id == 1)
            orders = sa.table("orders", schema="shop")
            supabase.table("posts").insert({"id": 1}).execute()
            """
        }
    )
    assert [(c.table, c.operation) for c in result.calls] == [("posts", "insert")]
