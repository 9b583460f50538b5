"""The generated supabase-py wrapper, driven through the real supabase package's query builders with a
recording HTTP transport (no PostgREST server is needed): sync and async clients."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import httpx
import pytest
from postgrest.exceptions import APIError
from supabase import acreate_client, create_client
from supabase.lib.client_options import AsyncClientOptions, SyncClientOptions
from typer.testing import CliRunner

from dualshift.cli import app

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "fixtures" / "xbot" / "dualshift.toml"
KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.signature"


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory):
    out = tmp_path_factory.mktemp("pywrapper") / "dual_write.py"
    result = CliRunner().invoke(
        app, ["generate", "wrapper", "--plan", str(PLAN), "--lang", "py", "--out", str(out), "--timeout-ms", "300"]
    )
    assert result.exit_code == 0, result.output
    spec = importlib.util.spec_from_file_location("generated_dual_write", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def fresh_state(wrapper):
    wrapper.reset_flags()
    for key in wrapper.STATS:
        wrapper.STATS[key] = 0


class Recorder:
    """Answers like PostgREST and remembers every request."""

    def __init__(self, flags=(), fail_table=None, rows=None, delay_table=None):
        self.requests: list[dict] = []
        self.flags, self.fail_table, self.rows, self.delay_table = list(flags), fail_table, rows or {}, delay_table

    def answer(self, request: httpx.Request) -> httpx.Response:
        table = request.url.path.rsplit("/", 1)[-1]
        profile = request.headers.get("content-profile") or request.headers.get("accept-profile")
        body = json.loads(request.content) if request.content else None
        self.requests.append(
            {
                "method": request.method,
                "table": table,
                "profile": profile,
                "body": body,
                "query": dict(request.url.params),
            }
        )
        if table == "flags":
            return httpx.Response(200, json=self.flags)
        if table == self.fail_table:
            return httpx.Response(500, json={"message": "relation is locked", "code": "55P03"})
        if request.method == "GET":
            return httpx.Response(200, json=self.rows.get(table, []))
        return httpx.Response(201, json=body if isinstance(body, list) else [body] if body else [])

    def sync_client(self):
        return create_client(
            "http://db.local",
            KEY,
            options=SyncClientOptions(httpx_client=httpx.Client(transport=httpx.MockTransport(self.answer))),
        )

    async def async_client(self):
        async def answer(request):
            if request.url.path.endswith("/" + str(self.delay_table)):
                await asyncio.sleep(2)
            return self.answer(request)

        transport = httpx.MockTransport(answer)
        return await acreate_client(
            "http://db.local", KEY, options=AsyncClientOptions(httpx_client=httpx.AsyncClient(transport=transport))
        )

    def writes(self):
        return [r for r in self.requests if r["method"] != "GET"]


def test_old_table_first_then_the_mapped_new_table(wrapper) -> None:
    recorder = Recorder()
    client = wrapper.dual_write(recorder.sync_client())
    response = (
        client.table("tweets").insert({"tweet_id": "t1", "decision_id": "d1", "text": "hi", "url": "u"}).execute()
    )
    assert response.data == [{"tweet_id": "t1", "decision_id": "d1", "text": "hi", "url": "u"}]
    old, new = recorder.writes()
    assert (old["table"], new["table"]) == ("tweets", "posted_content")
    assert new["body"] == [
        {
            "tweet_id": "t1",
            "decision_id": "d1",
            "content": "hi",
            "tweet_url": "u",
            "source_table": "tweets",
            "decision_type": "single",
        }
    ]
    assert new["query"]["on_conflict"] == "decision_id"  # tweets never overwrites posted_decisions' rows
    assert wrapper.STATS["mirrored"] == 1


def test_filters_replayed_with_mapped_columns(wrapper) -> None:
    recorder = Recorder()
    client = wrapper.dual_write(recorder.sync_client())
    client.table("content_generation_metadata_comprehensive").update({"topic": "sleep"}).eq("decision_id", "d9").or_(
        "topic.eq.x,predicted_engagement.gt.0.1"
    ).execute()
    old, new = recorder.writes()
    assert old["table"] == "content_generation_metadata_comprehensive"
    assert new["table"] == "content_queue" and new["body"] == {"raw_topic": "sleep"}
    assert new["query"]["decision_id"] == "eq.d9"
    assert new["query"]["or"] == "(raw_topic.eq.x,predicted_er.gt.0.1)"


def test_a_failing_new_write_never_reaches_the_caller_and_is_recorded(wrapper) -> None:
    recorder = Recorder(fail_table="engagement_metrics")
    client = wrapper.dual_write(recorder.sync_client())
    response = (
        client.table("outcomes")
        .insert({"tweet_id": "t", "collected_at": "2026-11-01T00:00:00Z", "decision_id": "d", "likes": 3})
        .execute()
    )
    assert response.data[0]["likes"] == 3
    recorded = next(r for r in recorder.requests if r["table"] == "failed_writes")
    assert recorded["profile"] == "dualshift"
    assert recorded["body"]["old_table"] == "outcomes" and recorded["body"]["new_table"] == "engagement_metrics"
    assert "relation is locked" in recorded["body"]["error"]
    assert recorded["body"]["call_site"].endswith(".py:" + recorded["body"]["call_site"].rsplit(":", 1)[1])
    assert wrapper.STATS["failed"] == 1


def test_the_old_paths_errors_are_the_callers(wrapper) -> None:
    recorder = Recorder(fail_table="posts")
    client = wrapper.dual_write(recorder.sync_client())
    with pytest.raises(APIError):
        client.table("posts").insert({"decision_id": "d", "tweet_id": "t", "content": "c"}).execute()
    assert not any(r["table"] == "posted_content" for r in recorder.requests)


def test_flags_dual_write_off_and_reads_from_new(wrapper) -> None:
    recorder = Recorder(flags=[{"scope": "*", "name": "dual_write", "value": False}])
    wrapper.dual_write(recorder.sync_client()).table("posts").delete().eq("decision_id", "d").execute()
    assert [r["table"] for r in recorder.writes()] == ["posts"]
    wrapper.reset_flags()
    recorder = Recorder(
        flags=[{"scope": "content_queue", "name": "read_from_new_percent", "value": 100}],
        rows={"content_queue": [{"decision_id": "d", "raw_topic": "sleep"}]},
    )
    client = wrapper.dual_write(recorder.sync_client())
    response = (
        client.table("content_generation_metadata_comprehensive")
        .select("decision_id, topic")
        .eq("topic", "sleep")
        .execute()
    )
    assert response.data == [{"decision_id": "d", "topic": "sleep"}]
    read = next(r for r in recorder.requests if r["table"] == "content_queue")
    assert read["query"]["select"] == "decision_id,raw_topic" and read["query"]["raw_topic"] == "eq.sleep"
    client.table("content_metadata").select("decision_id").execute()
    assert sum(1 for r in recorder.requests if r["table"] == "flags") == 1  # cached


def test_unplanned_tables_pass_straight_through(wrapper) -> None:
    recorder = Recorder()
    wrapper.dual_write(recorder.sync_client()).table("bot_config").upsert({"key": "k", "value": {}}).execute()
    assert [r["table"] for r in recorder.requests] == ["bot_config"]


def test_async_client_mirrors_and_records_failures(wrapper) -> None:
    async def scenario():
        recorder = Recorder()
        client = wrapper.dual_write(await recorder.async_client())
        await client.table("posted_decisions").insert({"decision_id": "d", "tweet_id": "t", "content": "c"}).execute()
        assert [r["table"] for r in recorder.writes()] == ["posted_decisions", "posted_content"]
        wrapper.reset_flags()
        slow = Recorder(delay_table="engagement_metrics")
        client = wrapper.dual_write(await slow.async_client())
        response = (
            await client.table("tweet_metrics")
            .insert({"tweet_id": "t", "measured_at": "2026-11-01T00:00:00Z", "decision_id": "d", "like_count": 2})
            .execute()
        )
        assert response.data[0]["like_count"] == 2
        assert wrapper.STATS["timed_out"] == 1
        assert any(r["table"] == "failed_writes" for r in slow.requests)

    asyncio.run(scenario())


def test_a_shadow_read_mismatch_is_recorded_by_key_and_column_name_never_by_value(wrapper) -> None:
    recorder = Recorder(
        flags=[{"scope": "*", "name": "shadow_reads", "value": True}],
        rows={
            "content_metadata": [{"decision_id": "d1", "status": "queued"}, {"decision_id": "d2", "status": "posted"}],
            "content_queue": [{"decision_id": "d1", "status": "failed"}, {"decision_id": "d3", "status": "posted"}],
        },
    )
    response = (
        wrapper.dual_write(recorder.sync_client()).table("content_metadata").select("decision_id, status").execute()
    )
    assert response.data == [{"decision_id": "d1", "status": "queued"}, {"decision_id": "d2", "status": "posted"}]
    recorded = next(r for r in recorder.requests if r["table"] == "shadow_mismatches")
    assert recorded["profile"] == "dualshift"
    assert [(m["key"], m["columns"], m["missing_from"], m["served_from"]) for m in recorded["body"]] == [
        ({"decision_id": "d1"}, ["status"], None, "old"),
        ({"decision_id": "d2"}, [], "new", "old"),
        ({"decision_id": "d3"}, [], "old", "old"),
    ]
    assert all("test_wrapper_py.py" in m["call_site"] for m in recorded["body"])
    assert "queued" not in json.dumps(recorded["body"]) and "failed" not in json.dumps(recorded["body"])
    assert wrapper.STATS["shadow_mismatches"] == 1


def test_async_reads_served_from_the_new_table_are_compared_with_the_old_one(wrapper) -> None:
    recorder = Recorder(
        flags=[
            {"scope": "*", "name": "shadow_reads", "value": True},
            {"scope": "*", "name": "read_from_new_percent", "value": 100},
        ],
        rows={
            "content_generation_metadata_comprehensive": [{"decision_id": "d", "topic": "diet"}],
            "content_queue": [{"decision_id": "d", "raw_topic": "sleep"}],
        },
    )

    async def read():
        client = wrapper.dual_write(await recorder.async_client())
        table = client.table("content_generation_metadata_comprehensive")
        return await table.select("decision_id, topic").execute()

    response = asyncio.run(read())
    assert response.data == [{"decision_id": "d", "topic": "sleep"}]
    recorded = [r for r in recorder.requests if r["table"] == "shadow_mismatches"]
    assert [(m["key"], m["columns"], m["served_from"]) for m in recorded[0]["body"]] == [
        ({"decision_id": "d"}, ["topic"], "new")
    ]


@pytest.fixture(scope="module")
def coalesce_wrapper(tmp_path_factory):
    """The wrapper of the xbot plan with content_queue merging its twins (precedence = "coalesce")."""
    directory = tmp_path_factory.mktemp("pycoalesce")
    head = 'name = "content_queue"\nkey = ["decision_id"]\n'
    text = PLAN.read_text()
    assert head in text
    plan = directory / "dualshift.toml"
    plan.write_text(text.replace(head, head + 'precedence = "coalesce"\n', 1))
    out = directory / "dual_write_coalesce.py"
    result = CliRunner().invoke(app, ["generate", "wrapper", "--plan", str(plan), "--lang", "py", "--out", str(out)])
    assert result.exit_code == 0, result.output
    spec = importlib.util.spec_from_file_location("generated_dual_write_coalesce", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fresh_coalesce_wrapper(coalesce_wrapper):
    coalesce_wrapper.reset_flags()
    coalesce_wrapper.STATS.update(dict.fromkeys(coalesce_wrapper.STATS, 0))
    return coalesce_wrapper


def test_a_merging_table_is_left_to_the_sync_triggers(fresh_coalesce_wrapper) -> None:
    coalesce_wrapper = fresh_coalesce_wrapper
    recorder = Recorder()
    client = coalesce_wrapper.dual_write(recorder.sync_client())
    response = client.table("content_metadata").insert({"decision_id": "d1", "content": "x"}).execute()
    assert response.data == [{"decision_id": "d1", "content": "x"}]
    client.table("content_generation_metadata_comprehensive").update({"topic": "t"}).eq("decision_id", "d1").execute()
    client.table("tweets").insert({"tweet_id": "t1", "decision_id": "d1", "text": "hi", "url": "u"}).execute()
    tables = [w["table"] for w in recorder.writes()]
    assert tables == ["content_metadata", "content_generation_metadata_comprehensive", "tweets", "posted_content"]
    assert coalesce_wrapper.STATS["mirrored_by_triggers"] == 2
    assert coalesce_wrapper.STATS["mirrored"] == 1 and coalesce_wrapper.STATS["failed"] == 0


def test_a_merging_table_is_left_to_the_sync_triggers_async(fresh_coalesce_wrapper) -> None:
    coalesce_wrapper = fresh_coalesce_wrapper

    async def scenario(recorder: Recorder) -> None:
        client = coalesce_wrapper.dual_write(await recorder.async_client())
        await client.table("content_metadata").delete().eq("decision_id", "d1").execute()
        await client.table("posts").update({"content": "y"}).eq("decision_id", "d2").execute()

    recorder = Recorder()
    asyncio.run(scenario(recorder))
    assert [w["table"] for w in recorder.writes()] == ["content_metadata", "posts", "posted_content"]
    assert coalesce_wrapper.STATS["mirrored_by_triggers"] == 1 and coalesce_wrapper.STATS["mirrored"] == 1
