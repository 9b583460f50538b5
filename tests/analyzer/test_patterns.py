"""One focused test per pattern the analyzer must understand (and per thing it must not count)."""

from __future__ import annotations

from .conftest import only_call


def test_multi_line_chain_through_await_parens_non_null_and_as(scan) -> None:
    call = only_call(
        scan(
            {
                "a.ts": """
                async function f(supabase: any) {
                  const r = await (
                    supabase
                      .from('posts') as any
                  )!
                    .insert({ content: 'x' })
                    .select()
                    .single();
                }
                """
            }
        )
    )
    assert (call.table, call.operation, call.chain) == ("posts", "insert", ("from", "insert", "select", "single"))
    assert call.line == 5 and call.function == "f"


def test_optional_chaining_and_bracket_methods(scan) -> None:
    result = scan(
        {
            "a.ts": """
            const kind = 'upsert';
            export async function g(client?: any) {
              await client?.from('tweets')?.['insert']({ tweet_id: '1' });
              await client.from('posts')[kind]({ decision_id: 'd' }, { onConflict: 'decision_id' });
            }
            """
        }
    )
    first, second = result.calls
    assert (first.table, first.operation, first.write_columns) == ("tweets", "insert", ("tweet_id",))
    assert (second.operation, second.on_conflict) == ("upsert", ("decision_id",))


def test_generic_from_misparsed_after_await_is_recovered(scan) -> None:
    call = only_call(
        scan(
            {
                "a.ts": "export async function h(db: any) { return (await db.from<Row>('outcomes').select('likes')).data; }"
            }
        )
    )
    assert (call.table, call.operation, call.select_columns, call.client) == ("outcomes", "select", ("likes",), "db")


def test_builder_in_variable_extended_later_takes_the_final_operation(scan) -> None:
    result = scan(
        {
            "a.ts": """
            export async function q(db: any, x?: string) {
              let query = db.from('content_metadata').select('decision_id');
              if (x) query = query.eq('status', x);
              const { data } = await query.limit(5);
              const builder = db.from('tweets');
              await builder.insert({ tweet_id: 't' });
            }
            """
        }
    )
    read, write = result.calls
    assert read.chain == ("from", "select", "eq", "limit") and read.builder_variable == "query"
    assert read.filters[0].column == "status"
    assert (write.operation, write.chain, write.write_columns) == ("insert", ("from", "insert"), ("tweet_id",))
    assert not write.crosses_function


def test_builder_passed_across_functions_is_flagged(scan) -> None:
    result = scan(
        {
            "a.ts": """
            function make(db: any) { return db.from('posted_decisions'); }
            export async function use(db: any) {
              const b = db.from('posts');
              return finish(b);
            }
            """
        }
    )
    assert [c.crosses_function for c in result.calls] == [True, True]
    assert [c.operation for c in result.calls] == ["unknown", "unknown"]


def test_clients_under_any_name_and_schema(scan) -> None:
    result = scan(
        {
            "a.ts": """
            class Repo {
              async run() {
                await this.supabase.from('a').select();
                await this.db.getClient().from('b').delete().eq('id', 1);
                await getSupabaseClient().schema('analytics').from('c').update({ x: 1 }).eq('id', 2);
                await (await import('./db')).admin.from('d').select('*');
              }
            }
            """
        }
    )
    clients = [(c.table, c.client, c.schema, c.function) for c in result.calls]
    assert clients == [
        ("a", "this.supabase", None, "Repo.run"),
        ("b", "this.db.getClient()", None, "Repo.run"),
        ("c", "getSupabaseClient()", "analytics", "Repo.run"),
        ("d", "(await import('./db')).admin", None, "Repo.run"),
    ]


def test_receiver_byte_range_covers_exactly_the_client(scan, tmp_path) -> None:
    source = "async function f(){ await this.db.getClient().schema('s').from('t').insert({a: 1}); }\n"
    call = only_call(scan({"a.ts": source}))
    raw = source.encode()
    assert raw[call.receiver_start : call.receiver_end] == b"this.db.getClient()"
    assert raw[call.table_arg_start : call.table_arg_end] == b"'t'"
    assert (
        raw[call.start_byte : call.end_byte].startswith(b"this.db") and raw[call.end_byte - 1 : call.end_byte] == b")"
    )


def test_table_names_from_constants_templates_enums_and_objects(scan) -> None:
    result = scan(
        {
            "src/tables.ts": """
            export const POSTS = 'posts';
            export enum T { Metrics = 'tweet_metrics' }
            export const TABLES = { A: { name: 'nested_a' } } as const;
            """,
            "src/a.ts": """
            import { POSTS as P, T, TABLES } from './tables';
            const LOCAL = `local_table`;
            export async function f(db: any) {
              await db.from(`tmpl`).select();
              await db.from(LOCAL).select();
              await db.from(P).select();
              await db.from(T.Metrics).select();
              await db.from(TABLES.A.name).select();
            }
            """,
        }
    )
    kinds = [(c.table, c.table_kind) for c in result.calls]
    assert kinds == [
        ("tmpl", "template"),
        ("local_table", "constant"),
        ("posts", "imported"),
        ("tweet_metrics", "enum"),
        ("nested_a", "object_member"),
    ]
    assert "imported from src/tables.ts" in result.calls[2].resolution


def test_dynamic_names_and_resolution_through_callers(scan) -> None:
    result = scan(
        {
            "src/db.ts": """
            export async function insertRow(table: string, row: object) {
              return client.from(table).insert(row);
            }
            export async function purge(name: string) { return client.from(name).delete(); }
            export async function lookup(cfg: any) { return client.from(cfg.tables[cfg.i]).select(); }
            """,
            "src/jobs.ts": """
            import { insertRow, purge } from './db';
            const QUEUE = 'content_metadata';
            await insertRow('tweets', {});
            await insertRow(QUEUE, {});
            await purge(process.env.TABLE!);
            """,
        }
    )
    by_table = sorted((c.table or "-", c.table_kind, c.function) for c in result.calls)
    assert by_table == [
        ("-", "dynamic", "lookup"),
        ("-", "dynamic", "purge"),
        ("content_metadata", "callers", "insertRow"),
        ("tweets", "callers", "insertRow"),
    ]
    resolved = next(c for c in result.calls if c.table == "tweets")
    assert resolved.resolved_tables == ("content_metadata", "tweets")
    assert "src/jobs.ts" in resolved.resolution
    dynamic = next(c for c in result.calls if c.function == "purge")
    assert dynamic.table is None and dynamic.table_expression == "name"
    assert "run time" in dynamic.resolution


def test_columns_filters_and_embedded_resources(scan) -> None:
    call = only_call(
        scan(
            {
                "a.ts": """
                await db
                  .from('posted_decisions')
                  .select('decision_id, tweet:tweet_id, posted_at::text, author:users!inner(name), comments(*, likes(id))')
                  .eq('status', 'posted')
                  .in('generator_name', ['a', 'b'])
                  .match({ decision_type: 'reply' })
                  .or('likes.gt.5,and(views.gte.100,raw_topic.is.null)')
                  .not('tweet_id', 'is', null)
                  .filter('angle', 'eq', 'x');
                """
            }
        )
    )
    assert call.select_columns == ("decision_id", "tweet_id", "posted_at")
    assert call.embedded == ("users", "comments", "likes")
    assert [(f.method, f.column) for f in call.filters] == [
        ("eq", "status"),
        ("in", "generator_name"),
        ("match", "decision_type"),
        ("or", "likes"),
        ("or", "views"),
        ("or", "raw_topic"),
        ("not", "tweet_id"),
        ("filter", "angle"),
    ]


def test_write_columns_from_objects_and_arrays(scan) -> None:
    call = only_call(
        scan({"a.ts": "await db.from('t').upsert([{ a: 1, 'b': 2 }, { a: 3, c }], { onConflict: 'a, b' });"})
    )
    assert call.write_columns == ("a", "b", "c")
    assert call.on_conflict == ("a", "b")


def test_what_is_not_a_table_call(scan) -> None:
    result = scan(
        {
            "a.ts": """
            import { from } from 'rxjs';
            // supabase.from('in_a_comment').select()
            const s = "supabase.from('in_a_string')";
            const t = `db.from('in_a_template')`;
            const a = Array.from(new Set([1]));
            const b = Buffer.from('x');
            const c = Uint8Array.from([1, 2]);
            const o = from([1, 2, 3]);
            const when = moment(a).from(b);
            export async function f(supabase: any) {
              await supabase.storage.from('avatars').upload('a.png', b);
              await supabase.rpc('refresh_stats', { days: 7 });
            }
            """
        }
    )
    assert result.calls == []
    storage, rpc = sorted(result.side_calls, key=lambda c: c.kind, reverse=True)
    assert (storage.kind, storage.name, storage.operation) == ("storage", "avatars", "upload")
    assert (rpc.kind, rpc.name) == ("rpc", "refresh_stats")


def test_tsx_and_javascript_files(scan) -> None:
    result = scan(
        {
            "page.tsx": "export const P = () => { void db.from('a').select(); return <div className='x'>{1}</div>; };",
            "legacy.jsx": "export function L() { db.from('b').insert({x: 1}); return <p/>; }",
            "script.cjs": "module.exports = async (db) => db.from('c').delete().eq('id', 1);",
            "mod.mts": "export const m = (db: any) => db.from('d').update({ y: 2 }).eq('id', 1);",
        }
    )
    assert sorted((c.table, c.language) for c in result.calls) == [
        ("a", "tsx"),
        ("b", "javascript"),
        ("c", "javascript"),
        ("d", "typescript"),
    ]


def test_json_paths_in_filters_name_their_column(scan) -> None:
    call = only_call(
        scan(
            {
                "a.ts": """
                await db.from('content_metadata').select('id')
                  .filter('metadata->_verified', 'eq', true)
                  .eq('features->>kind', 'thread')
                  .not('"payload"#>>{a}', 'is', null)
                  .gt('score::numeric', 1);
                """
            }
        )
    )
    assert [f.column for f in call.filters] == ["metadata", "features", "payload", "score"]


def test_unwrap_renames_a_json_filters_column_and_keeps_its_path() -> None:
    from dualshift.analyzer.postgrest import map_filter_column

    rename = {"features": "thread_parts"}.get
    assert map_filter_column("features->>kind", lambda c: rename(c, c)) == "thread_parts->>kind"
    assert map_filter_column("features", lambda c: rename(c, c)) == "thread_parts"


def test_embeds_through_a_foreign_key_column_are_hints_not_tables(scan) -> None:
    result = scan(
        {
            "a.ts": """
            await db.from('members').select('id, team:team_id(*), user:invited_by(name), profile:profiles(avatar)');
            await db.from('members').insert({ team_id: 1, invited_by: 'u' });
            await db.from('profiles').select('avatar');
            """
        }
    )
    read = result.calls[0]
    assert read.embedded == ("profiles",)
    assert read.foreign_key_embeds == ("team_id", "invited_by")
    assert {c.table for c in result.calls} == {"members", "profiles"}


def test_a_bare_ampersand_in_jsx_text_is_not_a_syntax_error(scan) -> None:
    result = scan(
        {
            "Terms.tsx": """
            type Client = import("axios").AxiosInstance;
            export function Terms({ db, ok }: { db: any; ok: boolean }) {
              const save = async () => ok && db.from('consents').insert({ accepted: true });
              return <p onClick={save}>Terms & conditions &amp; privacy {ok && <b>R&D</b>}</p>;
            }
            """
        }
    )
    assert result.failures == []
    (call,) = result.calls
    assert (call.table, call.operation, call.line) == ("consents", "insert", 4)


def test_helpers_of_the_same_name_in_two_files_get_only_their_own_callers(scan) -> None:
    result = scan(
        {
            "src/metrics/store.ts": """
            export class MetricsStore {
              safeInsert(table: string, row: object) { return this.client.from(table).insert(row); }
            }
            """,
            "src/audit/store.ts": """
            export class AuditStore {
              safeInsert(table: string, row: object) { return this.client.from(table).insert(row); }
            }
            """,
            "src/jobs/collect.ts": """
            import { MetricsStore } from '../metrics/store';
            export const run = (s: MetricsStore) => s.safeInsert('outcomes', { likes: 1 });
            """,
            "src/jobs/audit.ts": """
            import { AuditStore } from '../audit/store';
            export const log = (s: AuditStore) => s.safeInsert('audit_log', { at: 1 });
            """,
        }
    )
    tables = {(c.file, c.table) for c in result.calls}
    assert tables == {("src/metrics/store.ts", "outcomes"), ("src/audit/store.ts", "audit_log")}
