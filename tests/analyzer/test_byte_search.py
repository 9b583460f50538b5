"""The anchors and module constants are found from bytes of the source, each candidate checked in the
syntax tree. These tests hold that search to what a tree-sitter query over every node finds (the way
the analyzer used to find them), and check through whole scans that files it passes over quickly still
give the resolver what it needs."""

from __future__ import annotations

import tree_sitter as ts
from hypothesis import given, settings
from hypothesis import strategies as st

from dualshift.analyzer import typescript

from .conftest import REPO, only_call

# The queries the byte search replaces: the reference it must agree with.
ANCHOR_QUERY = """
(call_expression
  function: (member_expression property: (property_identifier) @method) @member
  arguments: (arguments) @args
  (#any-of? @method "from" "rpc")) @call
(call_expression
  function: (await_expression (member_expression property: (property_identifier) @method) @member)
  arguments: (arguments) @args
  (#any-of? @method "from" "rpc")) @call
"""
SYMBOL_QUERY = """
(lexical_declaration kind: "const" (variable_declarator name: (identifier) @name
  value: [(string) (template_string) (object) (as_expression) (satisfies_expression)] @value))
(enum_declaration name: (identifier) @enum body: (enum_body) @body)
"""

FRAGMENTS = [
    "import { from } from 'rxjs';",
    'import x from "./x";',
    "export { y } from './y';",
    "const a = db.from('a').select('*');",
    "await db.from<Row>('t').insert({ q: 1 });",
    "const b = x.from(y.from('c').select()).rpc('z');",
    "x?.from('t'); x!.from('t'); (x as any).from('t');",
    "x.from`tag`; x['from']('t'); new x.from('t'); x.from.call(y, 't');",
    "x.$from('t'); x.fromx('t'); a.b.rpc.from('q');",
    "cfg.Db.from('cap'); x.\n  Db.from('cap2'); x. Db.from('cap3');",
    "Array.from(s); Buffer.from('x'); (Array).from(s); Uint8Array.from([1]);",
    "const w = (a.from)('x'); const v = a.from(1).from(2)(3).from(4);",
    "db\n  .from('nl')\n  .select();",
    "db./* c */from('cm'); db . from ('sp');",
    "/* x.from('c') */ const s = \"y.from('q')\"; // z.from('w')",
    "const e = { from: 1, f() { const inner = 'v'; return q.from(inner) } }, g = 'gg';",
    "const enum E { A = 'a', B = \"b\" }",
    "enum F { A = 'x', B }",
    "export const i = 'ii' as const, j = { k: 'kk' } as const, l = { m: 'mm' } satisfies Foo;",
    "const n = /* why */ 'nn'; const o =\n  `oo`; const p: string = ('pp');",
    "const q = await 'qq' as string; const r = foo() as Bar; const t = `a${b}`;",
    "const u =\u00a0'nbsp'; const v2 = (await import('./db')).admin.from('d');",
    "for (const k of list) { const m2 = 'mm2'; } let p2 = 'p2'; var q3 = 'q3';",
    "class K { async run() { await this.supabase.from('k').insert({ a: 1 }); await db.storage.from('b').upload('x'); } }",
    "if (a == 'x' || b === \"y\" || c != `z`) { d = 'e'; }",
    "function f(table = 'dflt') { return supabase.rpc('fn', { a: 1 }); }",
    "`${Array.from(x)} and ${db.from('tpl')}`; const rx = /Array.from(/g;",
    "a ? Array.from(x) : db.from('ternary'); x => Foo.from(x); !Foo.from(x) && ~Bar.rpc(y);",
    "x = y\nArray.from(z); { Array.from(x) } [Array.from(x), Foo.rpc('a')];",
    "<Foo.from a={db.from('jsx')} />",
    "Foo\n.from('capital_newline'); Foo .from('capital_space'); Foo./*c*/from('capital_comment');",
    "const é = 'x'; éfrom.from('ü'); a.éfrom('x'); $.from('dollar'); _.from('underscore');",
    "const broken = db.from('x'",
    "}",
    "const x2 = { a: {",
    "`${",
]


def _reference(source: bytes, suffix: str) -> tuple[list[tuple[int, int, str]], dict[str, object]]:
    """(call start, call end, method) of every non-class-like anchor, and the module's symbols, as the
    queries found them."""
    tree = typescript.parse(source, suffix)
    language = typescript._language(typescript.grammar_for(suffix))
    anchors = []
    for _, captures in ts.QueryCursor(ts.Query(language, ANCHOR_QUERY)).matches(tree.root_node):
        receiver = captures["member"][0].child_by_field_name("object")
        if receiver is not None and not typescript._is_class_like(receiver):
            call = captures["call"][0]
            anchors.append((call.start_byte, call.end_byte, typescript._text(captures["method"][0])))
    declarations = []
    for _, captures in ts.QueryCursor(ts.Query(language, SYMBOL_QUERY)).matches(tree.root_node):
        if "name" in captures:
            declarations.append((captures["name"][0], captures["value"][0], False))
        else:
            declarations.append((captures["enum"][0], captures["body"][0], True))
    return anchors, typescript._collect_symbols(declarations)


def _byte_search(source: bytes, suffix: str) -> tuple[list[tuple[int, int, str]], dict[str, object]]:
    tree = typescript.parse(source, suffix)
    root = tree.root_node
    anchors = [(c.start_byte, c.end_byte, m) for c, _, m in typescript._anchors(root, source, typescript._Parents())]
    return anchors, typescript._collect_symbols(typescript._declarations(root, source, typescript.grammar_for(suffix)))


def _assert_same(source: bytes, suffix: str) -> None:
    expected_anchors, expected_symbols = _reference(source, suffix)
    anchors, symbols = _byte_search(source, suffix)
    assert anchors == expected_anchors
    assert list(symbols.items()) == list(expected_symbols.items())  # same values, same order


def test_the_byte_search_finds_what_the_queries_found_in_the_fixtures() -> None:
    files = [
        path
        for path in sorted((REPO / "fixtures").rglob("*"))
        if path.suffix in typescript.SUFFIXES and "node_modules" not in path.parts and path.is_file()
    ]
    assert len(files) > 20
    for path in files:
        _assert_same(path.read_bytes(), path.suffix)


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12),
    separators=st.lists(
        st.sampled_from(["\n", " ", " /* x */ ", "\t", ";", "", "(", ")", "{", "}"]), min_size=12, max_size=12
    ),
    suffix=st.sampled_from([".ts", ".tsx", ".js"]),
)
def test_the_byte_search_finds_what_the_queries_found_in_any_mix(parts, separators, suffix) -> None:
    source = "".join(part + separator for part, separator in zip(parts, separators, strict=False))
    _assert_same(source.encode(), suffix)


def test_constants_of_a_module_without_calls_reach_the_files_that_import_them(scan) -> None:
    result = scan(
        {
            "src/tables.ts": """
            // No query-builder call in this file: only names other files use.
            export const COMMENTED = /* the posts */ 'posts';
            export const SPREAD =
              'tweets';
            export const TYPED: string = 'metrics';
            export const CAST = (await 'outcomes') as string;
            export const NBSP =\u00a0'replies';
            export const TABLES = { LEARNING: { posts: { name: 'learning_posts' } } } as const;
            export const CHECKED = { jobs: 'job_queue' } satisfies Record<string, string>;
            export const enum Const { Drafts = 'drafts' }
            export enum Tables { Users = `users` }
            """,
            "src/jobs.ts": """
            import { COMMENTED, SPREAD, TYPED, CAST, NBSP, TABLES, CHECKED, Const, Tables } from './tables';
            export async function run(db: any) {
              await db.from(COMMENTED).select();
              await db.from(SPREAD).select();
              await db.from(TYPED).select();
              await db.from(CAST).select();
              await db.from(NBSP).select();
              await db.from(TABLES.LEARNING.posts.name).select();
              await db.from(CHECKED.jobs).select();
              await db.from(Const.Drafts).select();
              await db.from(Tables.Users).select();
            }
            """,
        }
    )
    assert [(c.table, c.table_kind) for c in result.calls] == [
        ("posts", "imported"),
        ("tweets", "imported"),
        ("metrics", "imported"),
        ("outcomes", "imported"),
        ("replies", "imported"),
        ("learning_posts", "object_member"),
        ("job_queue", "object_member"),
        ("drafts", "enum"),
        ("users", "enum"),
    ]


def test_a_file_without_calls_that_calls_a_helper_names_its_tables(scan) -> None:
    result = scan(
        {
            "src/names.ts": "export const QUEUE = 'content_queue';",
            "src/db.ts": "export async function insertRow(table: string, row: object) { return client.from(table).insert(row); }",
            "src/worker.ts": """
            import { insertRow } from './db';
            import { QUEUE } from './names';
            const local = 'audit_log';
            await insertRow(QUEUE, {});
            await insertRow(local, {});
            """,
        }
    )
    assert sorted(c.table for c in result.calls) == ["audit_log", "content_queue"]
    assert {c.table_kind for c in result.calls} == {"callers"}


def test_no_call_is_missed_however_its_from_is_written(scan) -> None:
    result = scan(
        {
            "a.ts": """
            export async function f(db: any, cfg: any, x: any) {
              await db
                .from('newline');
              await db . from ('spaces');
              await db./* why */from('comment');
              await db?.from('optional');
              await cfg.Db.from('capitalised_member');
              await x.
                Db.from('capitalised_after_a_line_break');
              await (await getDb()).from('parenthesised');
              await db.from<Row>('generic');
              const rows = Array.from(await db.from('inside_a_class_call').select());
            }
            """
        }
    )
    assert sorted(c.table for c in result.calls) == sorted(
        [
            "newline",
            "spaces",
            "comment",
            "optional",
            "capitalised_member",
            "capitalised_after_a_line_break",
            "parenthesised",
            "generic",
            "inside_a_class_call",
        ]
    )


def test_a_constant_declared_inside_a_function_still_names_a_method(scan) -> None:
    call = only_call(
        scan(
            {
                "a.ts": """
                export async function f(db: any) {
                  const op = /* chosen */ 'upsert';
                  await db.from('posts')[op]({ id: 1 });
                }
                """
            }
        )
    )
    assert (call.operation, call.write_columns) == ("upsert", ("id",))
