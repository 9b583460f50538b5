"""supabase-py code through the same analyzer pipeline: the pyworker fixture and focused patterns."""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dualshift.analyzer import python
from dualshift.analyzer.scan import scan_tree
from dualshift.cli import app

from . import cst_reference as python_cst
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


# -- the ast reading gives the LibCST reading's facts ------------------------------------------

FACT_FIELDS = ("calls", "pending", "side_calls", "symbols", "imports", "call_arguments", "syntax_error")

TRICKY = {
    "multi_line_chain": """
        from .db import client as db, TABLES
        from ..shared.names import METRICS as M

        async def load(client, table, limit):
            rows = await (
                client  # the service client
                .schema("analytics")
                .table(table)
                .select("id, name, owner:owner_id(*)", "extra")
                .eq("status", ( # why
                    "queued"
                ))
                .in_("kind", ("a", "b"))
                .order("id")
                .limit(limit)
                .execute()
            )
            return rows
        """,
    "fstrings": """
        PREFIX = "app"
        client.table(f"posts").select(f"id, {PREFIX}").execute()
        client.table(f"{PREFIX}_posts").insert({f"k": 1, "v": 2}).execute()
        client.table(f"a{{b\\n").delete().eq(f"x", 1).execute()
        client.table("a" f"b").select().execute()
        client.table(rf'raw\\d').select().execute()
        client.table(b"bytes").select().execute()
        client.table("con" "cat").upsert([{"a": 1}, {"b": 2}], on_conflict=f"a, b").execute()
        log(f"{client.table('inner').select('x').execute()}")
        """,
    "non_ascii_before_calls": """
        NAMES = {"légende": "posts", "données": {"table": "metrics"}}
        x = "é—☃"; client.table(NAMES["légende"]).select("ü").eq("naïve", "ç").execute()
        y = "日本語"  ;  client.from_(NAMES["données"]["table"]).update({"é": 1}).eq("id", "✓").execute()
        def ünïcode(a, b):
            return client.table(b).select("*")  # «commentaire»
        ünïcode("x", "posts")
        """,
    "nested_calls": """
        def outer(client):
            return wrap(client.table(name_of(client.table("inner").select("n").execute())).select())
        print(client.table("printed").select().execute(), f(g(h("deep", K))))
        data = {a(): b("x"), c(y=1): d("z", *rest, **more)}
        sorted(x for x in client.table("gen").select().execute().data)
        result = [client.rpc(f"fn_{i}", {"i": i}).execute() for i in range(3)]
        """,
    "decorators_and_classes": """
        from worker.tables import CONTENT

        @router.get(path("items"))
        @cache(client.table("decorated").select("k").execute())
        async def handler(self, request=client.table("default").select().execute()):
            q = client.table(CONTENT).select("id")
            q = q.not_.is_("deleted_at", "null")
            if request:
                q = q.eq("owner", request.user)
            return await q.execute()

        class Repository(Base, metaclass=Meta):
            TABLE = "ignored_in_class"

            def __init__(self, client, table):
                self.client = client
                self.table = table

            def save(self, table, row, *, upsert=False):
                query = self.client.table(table)
                helper(query=1)
                return query.insert(row)

            @staticmethod
            def count(cls, name):
                return cls.client.from_(name).select("id", count="exact").execute()

            class Inner:
                def method(self):
                    return self.client.table("inner_cls").delete().eq("id", 1).execute()

        def factory():
            class Local:
                q = client.table("in_local_class").select()
            return Local

        Repository(client, "x").save("posts", {"a": 1})
        Repository.count(None, True)
        """,
    "builders_escaping": """
        def build(client, flag):
            builder = client.table("builder").select("a")
            builder = (builder).gte("n", -1)
            other(builder)
            return builder

        def update(client):
            u = client.table("upd").update({"x": 1})
            u.eq("id", 2).execute()
            helper(*[u], key=u)

        response = client.table("resp").select("id").execute()
        module_level = client.table("module").select("b")
        module_level = module_level.eq("c", 1)
        """,
    "storage_rpc_and_non_clients": """
        import sqlalchemy as sa
        t = sa.table("users", sa.column("id"))
        Model.table("x")
        Array.from_(items)
        (supabase).storage.from_("avatars").upload("a.png", data)
        print((supabase).rpc("refresh_stats", {"days": 7}).execute())
        supabase.storage.from_(BUCKET).remove(["a"])
        client.table(*names)
        client.table(name=x)
        client.table()
        client.schema(name="s").table("kw_schema").select().execute()
        """,
    "line_endings_tabs_continuations": (
        'A = "posts"\r\nif 1:\r\n\tclient.table(A)\\\r\n\t\t.select("id")\r\n'
        'B = "m"\rclient.table(B).select().execute()\r'
        'x = (client\n  .table("t")  \n  # comment\n  .select(  "a"  )\n)\n'
        'client . table ( "spaced" ) . eq ( "a" , ( ( 1 ) ) )\n'
    ),
    "match_walrus_lambda": """
        def f(client, kind):
            match kind:
                case "a":
                    return client.table("matched").select().execute()
            if (q := client.table("walrus").select()) is not None:
                q.eq("a", 1).execute()
            run = lambda: client.table("lambda").select().execute()
            return run
        """,
    "values_over_lines": '''
        class Jobs:
            def run(self, client):
                if client.table("t").select().eq("a", [
                        1,
                    2,
                ]).execute():
                    client.table("u").select().eq("b", """first
                    second""").eq("c", 1 + \\
                        2).eq("d", (

                            3  # three
                        )).execute()
                    (self
                        .client).rpc("fn", {}).execute()
                    (self.
        \tclient).storage.from_("b").list()
        ''',
    "syntax_error": "def broken(:\n    client.table('x')\n",
    "no_calls": """
        from . import sibling
        from .a.b import (c as d, e)
        X = 'x'; Y = {"k": {"n": X, "m": "lit"}, **other}
        A = B = "chained"
        C: str = "annotated"
        def g():
            from x import y
            Z = "local"
            call(X, Y["k"]["m"], Z, y, sibling.attr, None, True, ..., 3, -1)
        call(d, e, d.f, sibling)
        """,
    "helper_table_arguments": """
        from app.tables import LIKES
        from app.db.likes import save_likes as keep
        import app.db.likes, app.db.archive as archive

        keep(sb, "outcomes", r)
        from . import likes as local_likes
        from ..db import names

        def imports_inside_functions_are_not_module_facts():
            import app.db.other

        def save_likes(client, table, row):
            return client.table(table).insert(row).execute()

        save_likes(sb, "outcomes", r)
        save_likes(sb, ( 'outcomes' ), r)
        save_likes(sb, "out" 'comes', r)
        save_likes(sb, f"outcomes", r)
        save_likes(sb, r"outcomes", r)
        save_likes(sb, '''outcomes''', r)
        save_likes(sb, "out\\x63omes", r)
        save_likes(sb, "é—outcomes", r); save_likes(sb, LIKES, r)
        """,
}


def _facts(module, source: bytes) -> dict[str, object]:
    facts = module.analyze_module("pkg/mod.py", source)
    return {name: getattr(facts, name) for name in FACT_FIELDS}


def _assert_same_facts(source: bytes) -> None:
    assert _facts(python, source) == _facts(python_cst, source)


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_ast_reading_gives_the_libcst_facts_on_tricky_code(name: str) -> None:
    text = TRICKY[name]
    source = (textwrap.dedent(text) if "\r" not in text else text).encode()
    facts = _facts(python, source)
    if name == "syntax_error":
        assert facts["syntax_error"] is not None
    elif name == "no_calls":
        assert facts["symbols"] and facts["imports"] and facts["call_arguments"]
    else:
        assert facts["syntax_error"] is None and (facts["calls"] or facts["side_calls"])
    _assert_same_facts(source)


def test_a_byte_order_mark_keeps_libcst_offsets_and_reads_the_text_right() -> None:
    """LibCST counts offsets from after the mark (so does the rewriter's LibCST); its text fields were
    sliced from before it ("\ufeffcli"). The offsets stay; the text is now the code's."""
    source = "\ufeffx = 'é'; client.table('posts').select('id').execute()\n".encode()
    (new,), (old,) = python.analyze_module("m.py", source).calls, python_cst.analyze_module("m.py", source).calls
    text_fields = {"code": None, "client": None, "table_expression": None}
    assert replace(new, **text_fields) == replace(old, **text_fields)
    assert (new.code, new.client, new.table_expression) == (
        "client.table('posts').select('id').execute()",
        "client",
        "'posts'",
    )


def test_a_coding_declaration_does_not_move_the_offsets() -> None:
    """The scan reads UTF-8 only; a file declaring latin-1 still gets offsets into its own bytes."""
    source = '# -*- coding: latin-1 -*-\nx = "é"; client.table("posts").select().execute()\n'.encode()
    (call,) = python.analyze_module("m.py", source).calls
    assert source[call.start_byte : call.end_byte] == b'client.table("posts").select().execute()'
    assert (call.line, call.column, call.table) == (2, 17, "posts")


def test_tricky_code_finds_its_calls() -> None:
    """The equivalence above is not over empty results: the snippets hold the calls they are about."""
    facts = python.analyze_module("m.py", textwrap.dedent(TRICKY["non_ascii_before_calls"]).encode())
    first, second, helper = facts.calls
    assert (first.table, first.line, first.column) == ("posts", 3, 19)
    source = textwrap.dedent(TRICKY["non_ascii_before_calls"]).encode()
    assert source[first.table_arg_start : first.table_arg_end] == 'NAMES["légende"]'.encode()
    assert second.table == "metrics" and second.write_columns == ("é",)
    assert helper.function == "ünïcode" and helper.table_kind == "dynamic"


@pytest.mark.parametrize("path", sorted(PYWORKER.rglob("*.py")), ids=lambda p: str(p.relative_to(PYWORKER)))
def test_ast_reading_gives_the_libcst_facts_on_pyworker(path: Path) -> None:
    _assert_same_facts(path.read_bytes())


RECEIVERS = ["client", "self.client", "(db)", "get_client()", "app.state['db']"]
TABLES = ['"posts"', "TABLE", "NAMES['k']", "f'posts'", "table", "imported.NAME", "'é'"]
STEPS = [
    '.select("id, n")',
    ".not_",
    '.eq("a", 1)',
    '.insert({"a": 1, "ü": x})',
    ".update(dict(a=1))",
    '.upsert([{"k": 1}], on_conflict="k")',
    ".delete()",
    '.or_("a.eq.1,b.eq.2")',
    '.match({"m": 1})',
    ".order('id')",
    ".limit(3)",
    '.eq("d", (\n            3  # three\n        ))',
    '.eq("e", """x\n    y""")',
    ".execute()",
]
PREFIXES = ["", "x = 'ñ'; ", "# ☃\n", "pass  # ✓ ( \n"]
BREAKS = ["", "\n        ", " \\\n        ", "  # note\n        "]


@st.composite
def generated_modules(draw) -> str:
    lines = ["from pkg import imported", "TABLE = 'metrics'", "NAMES = {'k': 'outcomes'}", ""]
    for number in range(draw(st.integers(1, 3))):
        body = [f"def f{number}(client, table, *rest):"]
        for _ in range(draw(st.integers(1, 3))):
            steps = draw(st.lists(st.sampled_from(STEPS), max_size=4))
            pause = draw(st.sampled_from(BREAKS))
            opening, closing = ("(", ")") if "\n" in pause and "\\" not in pause else ("", "")
            receiver, anchor = draw(st.sampled_from(RECEIVERS)), draw(st.sampled_from(["table", "from_"]))
            chain = f"{opening}{receiver}.{anchor}({draw(st.sampled_from(TABLES))})"
            chain += "".join(pause + step if pause else step for step in steps) + closing
            wrapper = draw(st.sampled_from(["{}", "q = ({})", "return await ({})", "use({})", "r = [{}]", "q = {}"]))
            prefix = draw(st.sampled_from(PREFIXES)).replace("\n", "\n    ")
            body.append("    " + prefix + wrapper.format(chain))
            if wrapper.startswith("q"):
                body.append("    " + draw(st.sampled_from(["q = q.eq('b', 2)", "q.execute()", "send(q)", "return q"])))
        body[0] = draw(st.sampled_from(["", "async "])) + body[0]
        body[:0] = draw(st.sampled_from([[], ["@route('/x')"], ["@cache(client.table('d').select().execute())"]]))
        if draw(st.booleans()):
            body = [f"class Repo{number}(Base):", *("    " + line.replace("\n", "\n    ") for line in body)]
        lines.extend(body)
        lines.append(f"f{number}(c, {draw(st.sampled_from(TABLES))})")
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generated_modules())
def test_ast_reading_gives_the_libcst_facts_on_generated_modules(text: str) -> None:
    source = text.encode()
    assert _facts(python, source)["syntax_error"] is None, text
    _assert_same_facts(source)


MODULE_FACTS = """
from . import sibling
X = 'x'
if FLAG:
    Y = {"k": {"n": X}}
    from .a import b as c
else:
    Y = 'other'
try:
    import fast as json
    from .z import w
except ImportError:
    W = 'fallback'
finally:
    F = 'f'
for item in items:
    L = 'loop'
while cond:
    M = 'while'
with ctx():
    N = 'with'
match value:
    case 1:
        P = 'case'
class Config:
    T = 'class level'
    def method(self):
        Hidden = 'local'
def g():
    Hidden = 'local'
async def h():
    from q import r
X = 'last wins'
"""


@pytest.mark.parametrize("text", [MODULE_FACTS, TRICKY["no_calls"]], ids=["blocks", "no_calls"])
def test_module_facts_from_statements_alone_are_the_full_readings(text: str) -> None:
    """A file that names no table call is read through its statements only: the same constants and imports."""
    source = textwrap.dedent(text).encode()
    quick = python.analyze_module("pkg/mod.py", source, with_arguments=False)
    full = python.analyze_module("pkg/mod.py", source)
    assert not quick.arguments_read and quick.call_arguments == []
    assert (quick.symbols, quick.imports) == (full.symbols, full.imports)
    assert list(quick.symbols) == list(full.symbols)


def test_a_caller_without_table_calls_still_resolves_the_helper(tmp_path: Path) -> None:
    """The caller's bytes name no `table`: its call arguments are read when a helper takes the table."""
    (tmp_path / "db.py").write_text(
        "def save_row(client, name, row):\n    return client.table(name).insert(row).execute()\n"
    )
    (tmp_path / "job.py").write_text(
        "from db import save_row\n\n\ndef run(c):\n    save_row (c, 'outcomes', {'likes': 1})\n"
    )
    (call,) = scan_tree(tmp_path, use_cache=False, jobs=1).calls
    assert (call.table, call.table_kind) == ("outcomes", "callers")


def test_helper_arguments_carry_their_bytes_and_only_plain_literals_are_literal() -> None:
    """unwrap rewrites a caller's argument at these bytes, and only when it is one plain string token."""
    source = textwrap.dedent(TRICKY["helper_table_arguments"]).encode()
    arguments = [a for a in python.analyze_module("pkg/mod.py", source).call_arguments if a.index == 1]
    assert {a.callee for a in arguments} == {"save_likes"}  # `keep` is save_likes imported under another name
    written = [(source[a.start_byte : a.end_byte].decode(), a.literal) for a in arguments]
    assert written == [
        ('"outcomes"', True),
        ('"outcomes"', True),
        ("'outcomes'", True),
        ("\"out\" 'comes'", False),
        ('f"outcomes"', False),
        ('r"outcomes"', False),
        ("'''outcomes'''", False),
        ('"out\\x63omes"', False),
        ('"é—outcomes"', True),
        ("LIKES", False),
    ]
