"""Before → after, one pattern at a time."""

from __future__ import annotations

import textwrap

from .helpers import assert_codemod, run_on


def test_wrap_a_multi_line_write_and_add_the_import_once(tmp_path) -> None:
    assert_codemod(
        tmp_path,
        "wrap",
        """
        import { getSupabaseClient } from '../db/index';

        export async function post(id: string) {
          const supabase = getSupabaseClient();
          await supabase
            .from('posted_decisions')
            .insert({ decision_id: id, tweet_id: 't', content: 'c' });
          await supabase.from('tweets').insert({ tweet_id: 't', decision_id: id, text: 'c' });
          return supabase.from('bot_config').select('value'); // not planned: untouched
        }
        """,
        """
        import { getSupabaseClient } from '../db/index';
        import { dualWrite } from '../db/dualWrite';

        export async function post(id: string) {
          const supabase = getSupabaseClient();
          await dualWrite(supabase)
            .from('posted_decisions')
            .insert({ decision_id: id, tweet_id: 't', content: 'c' });
          await dualWrite(supabase).from('tweets').insert({ tweet_id: 't', decision_id: id, text: 'c' });
          return supabase.from('bot_config').select('value'); // not planned: untouched
        }
        """,
    )


def test_wrap_keeps_the_files_quote_and_semicolon_style(tmp_path) -> None:
    assert_codemod(
        tmp_path,
        "wrap",
        """
        import { db } from "../db/db"

        export const save = () => db.getClient().from("outcomes").upsert({ tweet_id: "t" })
        """,
        """
        import { db } from "../db/db"
        import { dualWrite } from "../db/dualWrite"

        export const save = () => dualWrite(db.getClient()).from("outcomes").upsert({ tweet_id: "t" })
        """,
    )


def test_wrap_commonjs_files_with_require(tmp_path) -> None:
    assert_codemod(
        tmp_path,
        "wrap",
        """
        const { client } = require('./db');
        module.exports = async () => client.from('posts').delete().eq('decision_id', 'd');
        """,
        """
        const { client } = require('./db');
        const { dualWrite } = require('../src/db/dualWrite');
        module.exports = async () => dualWrite(client).from('posts').delete().eq('decision_id', 'd');
        """,
        rel="scripts/prune.cjs",
    )


def test_reads_are_wrapped_only_when_asked(tmp_path) -> None:
    source = "export const q = (db: any) => db.from('outcomes').select('likes');\n"
    assert run_on(tmp_path, "wrap", source).new_source == source
    assert "dualWrite(db).from('outcomes')" in run_on(tmp_path, "wrap", source, reads=True).new_source


def test_wrap_is_idempotent(tmp_path) -> None:
    once = run_on(tmp_path, "wrap", "export const f = (db: any) => db.from('posts').insert({ content: 'x' });\n")
    twice = run_on(tmp_path / "again", "wrap", once.new_source)
    assert twice.new_source == once.new_source
    assert twice.new_source.count("import { dualWrite }") == 1


def test_unsafe_sites_are_listed_never_half_rewritten(tmp_path) -> None:
    result = run_on(
        tmp_path,
        "wrap",
        """
        export function builder(db: any) { return db.from('posted_decisions'); }
        export async function purge(db: any, name: string) { await db.from(name).delete(); }
        """,
    )
    assert "dualWrite" not in result.new_source
    reasons = sorted(s.reason.split(";")[0] for s in result.skipped_sites)
    assert reasons == ["the table name is known only at run time"]  # the bare builder has no operation here
    crossing = run_on(
        tmp_path / "b",
        "wrap",
        """
        export async function f(db: any) {
          const b = db.from('posted_decisions');
          await save(b);
          await b.insert({ content: 'x' });
        }
        """,
    )
    assert "dualWrite" not in crossing.new_source
    assert "passed to or returned from another function" in crossing.skipped_sites[0].reason


def test_unwrap_maps_table_columns_filters_and_constants(tmp_path) -> None:
    result = assert_codemod(
        tmp_path,
        "unwrap",
        """
        import { admin } from '../db/index';
        import { dualWrite } from '../db/dualWrite';

        export async function save(id: string, text: string) {
          await dualWrite(admin).from('tweets').insert({ tweet_id: 't', decision_id: id, text, url: 'u' });
          await dualWrite(admin)
            .from('content_generation_metadata_comprehensive')
            .update({ topic: 'sleep' })
            .eq('predicted_engagement', 0.1)
            .or('topic.eq.x,and(tone.eq.y,predicted_engagement.gt.0)');
          await dualWrite(admin).from('tweet_metrics').upsert({ tweet_id: 't', like_count: 1, measured_at: 'now' }, { onConflict: 'tweet_id,measured_at' });
          return dualWrite(admin).from('posts').select('decision_id, topic').eq('topic', 'x');
        }
        """,
        """
        import { admin } from '../db/index';

        export async function save(id: string, text: string) {
          await admin.from('posted_content').insert({ tweet_id: 't', decision_id: id, content: text, tweet_url: 'u', source_table: 'tweets', decision_type: 'single' });
          await admin
            .from('content_queue')
            .update({ raw_topic: 'sleep' })
            .eq('predicted_er', 0.1)
            .or('raw_topic.eq.x,and(tone.eq.y,predicted_er.gt.0)');
          await admin.from('engagement_metrics').upsert({ tweet_id: 't', likes: 1, collected_at: 'now', data_source: 'tweet_metrics' }, { onConflict: 'tweet_id,collected_at' });
          return admin.from('posted_content').select('decision_id, topic:raw_topic').eq('raw_topic', 'x');
        }
        """,
    )
    assert result.rewritten_sites == 4


def test_unwrap_leaves_a_site_it_cannot_map_whole(tmp_path) -> None:
    source = """
    import { dualWrite } from '../db/dualWrite';
    export const f = (db: any, row: any) => dualWrite(db).from('posts').insert({ content: 'c', features: row });
    """
    result = run_on(tmp_path, "unwrap", source)
    assert "dualWrite(db).from('posts')" in result.new_source
    assert "features" in result.skipped_sites[0].reason


def test_unwrap_never_retargets_a_helper_whose_callers_pass_the_table(tmp_path) -> None:
    source = """
        import { dualWrite } from '../db/dualWrite';
        export function saveLikes(table: string, row: object) {
          return dualWrite(supabase).from(table).insert(row);
        }
        export const fromOutcomes = () => saveLikes('outcomes', { likes: 1 });
        export const fromReplies = () => saveLikes('reply_likes', { likes: 2 });
        """
    result = run_on(tmp_path, "unwrap", source)
    assert result.rewritten_sites == 0 and result.new_source == textwrap.dedent(source).lstrip("\n")
    (reason,) = {s.reason for s in result.skipped_sites}
    assert "outcomes → engagement_metrics" in reason and "reply_likes → not in the plan" in reason


def test_wrap_and_status_speak_json(tmp_path) -> None:
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from dualshift.cli import app

    from .helpers import PLAN

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.ts").write_text("export const a = (db: any) => db.from('tweets').insert({ text: 'x' });\n")
    plan = str(Path(PLAN.path))
    wrapped = json.loads(CliRunner().invoke(app, ["codemod", "wrap", str(tmp_path), "--plan", plan, "--json"]).stdout)
    assert wrapped["applied"] is False and wrapped["counts"] == {"changed": 1}
    assert wrapped["files"][0]["path"] == "src/a.ts" and "+import { dualWrite }" in wrapped["files"][0]["diff"]
    status = json.loads(CliRunner().invoke(app, ["codemod", "status", str(tmp_path), "--plan", plan, "--json"]).stdout)
    tweets = next(t for t in status["tables"] if t["old_table"] == "tweets")
    assert tweets == {
        "old_table": "tweets",
        "new_table": "posted_content",
        "files_done": [],
        "files_pending": ["src/a.ts"],
        "ready": False,
        "needs_sync_triggers": False,
    }


def test_status_says_a_merging_table_is_ready_only_with_the_sync_triggers(tmp_path) -> None:
    """Under precedence = "coalesce" the wrapper leaves content_queue to the sync triggers: wrapped code
    does not make its twins ready, while the other tables are ready once wrapped."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from dualshift.cli import app

    from .helpers import PLAN

    head = 'name = "content_queue"\nkey = ["decision_id"]\n'
    plan = tmp_path / "dualshift.toml"
    plan.write_text(Path(PLAN.path).read_text().replace(head, head + 'precedence = "coalesce"\n', 1))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.ts").write_text(
        "import { dualWrite } from './db/dualWrite';\n"
        "export const a = (db: any) => dualWrite(db).from('content_metadata').insert({ content: 'x' });\n"
        "export const b = (db: any) => dualWrite(db).from('tweets').insert({ text: 'x' });\n"
    )
    run = CliRunner().invoke(app, ["codemod", "status", str(tmp_path / "src"), "--plan", str(plan), "--json"])
    tables = {t["old_table"]: t for t in json.loads(run.stdout)["tables"]}
    assert tables["content_metadata"]["files_done"] == ["a.ts"]
    assert (tables["content_metadata"]["ready"], tables["content_metadata"]["needs_sync_triggers"]) == (False, True)
    assert tables["content_generation_metadata_comprehensive"]["needs_sync_triggers"] is True
    assert (tables["tweets"]["ready"], tables["tweets"]["needs_sync_triggers"]) == (True, False)
