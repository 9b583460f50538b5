"""Who the sync triggers run as, what they call, and that a mirror never fails the application's write."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from dualshift.executor.backfill import MAX_LOCKED_KEYS, BackfillOptions
from dualshift.executor.connection import ExecutorError, connect
from dualshift.executor.names import PRIVATE_SCHEMA, fit
from dualshift.executor.phases import Executor
from dualshift.executor.sync import role_name
from dualshift.plan import load_plan

from .conftest import PLAN
from .decisions import decided
from .sync_helpers import SCHEMA, actual, executor, expected, items_database, items_plan


@pytest.fixture
def own_role(db: psycopg.Connection) -> Iterator[str]:
    """A role only this test uses (roles are cluster-wide), removed at the end."""
    name = f"ds_app_{uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _as(db: psycopg.Connection, role: str, statement: str, params: tuple = ()) -> None:
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        db.execute(statement, params)


def test_an_app_role_that_may_insert_into_tweets_only_still_can_and_is_mirrored(
    own_role: str, dsn: str, db: psycopg.Connection
) -> None:
    app = sql.Identifier(own_role)
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(app))
    db.execute(sql.SQL("GRANT INSERT, SELECT ON public.tweets TO {}").format(app))
    db.execute(sql.SQL("GRANT USAGE ON SEQUENCE public.tweets_id_seq TO {}").format(app))
    db.execute("ALTER TABLE posted_decisions ENABLE ROW LEVEL SECURITY")  # and no policy for anyone
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    ex.backfill(BackfillOptions(), sync_triggers=True)
    owned = db.execute("SELECT decision_id FROM posted_decisions ORDER BY decision_id LIMIT 1").fetchone()[0]

    _as(db, own_role, "INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-app', md5('app')::uuid, 'app')")
    _as(db, own_role, "INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-app2', %s, 'app twin')", (owned,))

    assert db.execute(
        "SELECT content, source_table FROM posted_content WHERE decision_id = md5('app')::uuid"
    ).fetchone() == ("app", "tweets")
    # posted_decisions holds `owned` (behind RLS the app cannot see through): it still wins.
    assert db.execute("SELECT source_table FROM posted_content WHERE decision_id = %s", (owned,)).fetchone()[0] == (
        "posted_decisions"
    )
    assert db.execute("SELECT count(*) FROM dualshift.failed_writes").fetchone()[0] == 0
    # The functions' owner cannot log in, and the app cannot call the functions itself.
    sync_role = role_name(db, ex.plan)
    assert db.execute("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = %s", (sync_role,)).fetchone() == (
        False,
        False,
    )
    owners = db.execute(
        "SELECT DISTINCT pg_get_userbyid(p.proowner), p.prosecdef, p.proconfig::text FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s",
        (PRIVATE_SCHEMA,),
    ).fetchall()
    assert {(o, d) for o, d, _ in owners} == {(sync_role, True)}
    assert all("search_path=pg_catalog, pg_temp" in config for _, _, config in owners)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as(db, own_role, f"SELECT {PRIVATE_SCHEMA}.resync_posted_content(md5('app')::uuid)")
    ex.rollback()  # backfilled → created: triggers, functions and their role go
    assert db.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (sync_role,)).fetchone()[0] == 0


# Planted by a role with CREATE on public. Each logs (and tries to make that role superuser) only when
# called from inside a function of dualshift's (or the control below), so the application's own
# statements may call them freely. Two kinds: better matches than pg_catalog's (they win under the
# default search_path) and exact copies of pg_catalog's (they win where `public` comes first, as in the
# application sessions below, whose writes fire dualshift's triggers).
HOSTILE_LOG = """
CREATE TABLE public.hostile_calls (fn text, caller text, context text);
GRANT INSERT ON public.hostile_calls TO PUBLIC;
CREATE FUNCTION public.hostile(fn text) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
  stack text;
BEGIN
  GET DIAGNOSTICS stack = PG_CONTEXT;
  IF stack LIKE '%function dualshift%' OR stack LIKE '%hostile_control%' THEN
    INSERT INTO public.hostile_calls VALUES (fn, current_user, stack);
    BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', '{role}'); EXCEPTION WHEN others THEN NULL; END;
  END IF;
END $$;
"""
# (what it shadows, its arguments, what it returns, the real thing it then does, an expression calling it)
PLANTED_FUNCTIONS = [
    ("json_build_array", "a uuid", "json", "pg_catalog.json_build_array(a)", "json_build_array(md5('x')::uuid)"),
    (
        "json_build_array",
        "a text, b timestamptz",
        "json",
        "pg_catalog.json_build_array(a, b)",
        "json_build_array('x'::text, now())",
    ),
    (
        "to_jsonb",
        "a public.content_metadata",
        "jsonb",
        "pg_catalog.to_jsonb(a)",
        "to_jsonb(NULL::public.content_metadata)",
    ),
    ("to_jsonb", "a anyelement", "jsonb", "pg_catalog.to_jsonb(a)", "to_jsonb(1)"),
    ("lower", "a character varying", "text", "pg_catalog.lower(a)", "lower('X'::varchar)"),
    ("lower", "a text", "text", "pg_catalog.lower(a)", "lower('X'::text)"),
    (
        "timezone",
        "a text, b timestamp",
        "timestamptz",
        "pg_catalog.timezone(a, b)",
        "timezone('UTC', now()::timestamp)",
    ),
    (
        "current_setting",
        "a text, b boolean",
        "text",
        "pg_catalog.current_setting(a, b)",
        "current_setting('x.y', true)",
    ),
    (
        "set_config",
        "a text, b text, c boolean",
        "text",
        "pg_catalog.set_config(a, b, c)",
        "set_config('x.y', '', true)",
    ),
    (
        "pg_advisory_xact_lock",
        "a bigint",
        "void",
        "pg_catalog.pg_advisory_xact_lock(a)",
        "pg_advisory_xact_lock(1::bigint)",
    ),
    (
        "hash_record_extended",
        "a record, b bigint",
        "bigint",
        "pg_catalog.hash_record_extended(a, b)",
        "hash_record_extended(ROW(1), 0::bigint)",
    ),
    (
        "jsonb_build_object",
        "a text, b text",
        "jsonb",
        "pg_catalog.jsonb_build_object(a, b)",
        "jsonb_build_object('a'::text, 'b'::text)",
    ),
]
PLANTED_OPERATORS = [  # (operator, left, right, returns, the real function, an expression using it)
    ("=", "text", "text", "boolean", "texteq", "'a'::text = 'b'::text"),
    ("<>", "text", "text", "boolean", "textne", "'a'::text <> 'b'::text"),
    ("=", "uuid", "uuid", "boolean", "uuid_eq", "md5('a')::uuid = md5('b')::uuid"),
    ("=", "timestamptz", "timestamptz", "boolean", "timestamptz_eq", "now() = now()"),
    ("=", "integer", "integer", "boolean", "int4eq", "1 = 2"),
    (">=", "integer", "integer", "boolean", "int4ge", "1 >= 2"),
    ("+", "integer", "integer", "integer", "int4pl", "1 + 2"),
    ("||", "text", "text", "text", "textcat", "'a'::text || 'b'::text"),
]


def _plant(db: psycopg.Connection, role: str) -> set[str]:
    """As `role`: the log, every planted function and operator, and a control calling each of them from a
    function whose search_path puts public first. Returns the labels the control must log."""
    statements = [HOSTILE_LOG.replace("{role}", role)]
    controls, labels = [], set()
    for name, arguments, returns, real, call in PLANTED_FUNCTIONS:
        label = f"{name}({arguments})"
        body = f"PERFORM public.hostile('{label}'); " + ("PERFORM " if returns == "void" else "RETURN ") + real + ";"
        statements.append(
            f"CREATE FUNCTION public.{name}({arguments}) RETURNS {returns} LANGUAGE plpgsql"
            f" SET search_path = pg_catalog AS $$ BEGIN {body} END $$"
        )
        controls.append(call)
        labels.add(label)
    for i, (operator, left, right, returns, real, call) in enumerate(PLANTED_OPERATORS):
        label = f"{operator}({left}, {right})"
        statements += [
            f"CREATE FUNCTION public.hostile_op_{i}(a {left}, b {right}) RETURNS {returns} LANGUAGE plpgsql"
            f" SET search_path = pg_catalog AS $$ BEGIN PERFORM public.hostile('{label}');"
            f" RETURN pg_catalog.{real}(a, b); END $$",
            f"CREATE OPERATOR public.{operator} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = public.hostile_op_{i})",
        ]
        controls.append(call)
        labels.add(label)
    statements.append(
        "CREATE FUNCTION public.hostile_control() RETURNS void LANGUAGE plpgsql SET search_path = public, pg_catalog"
        " AS $$ BEGIN " + " ".join(f"PERFORM {c};" for c in controls) + " END $$"
    )
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        for statement in statements:
            db.execute(statement)
    return labels


def _app(dsn: str) -> psycopg.Connection:
    """An application session that puts public before pg_catalog: every planted object wins in it."""
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET search_path = public, pg_catalog")
    return conn


def _planted_calls(db: psycopg.Connection) -> list[tuple[str, str]]:
    return db.execute("SELECT fn, caller FROM public.hostile_calls").fetchall()


def test_a_role_with_create_on_public_gets_none_of_its_functions_called(
    own_role: str, dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    db.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(own_role)))
    db.execute("ALTER TABLE posted_decisions ENABLE ROW LEVEL SECURITY")  # the functions' roles get a policy
    labels = _plant(db, own_role)
    # The traps are real: from a function with public first in its path, each planted object is called.
    _as(db, own_role, "SELECT public.hostile_control()")  # as itself: no superuser to make it one
    assert {fn for fn, _ in _planted_calls(db)} == labels
    db.execute("TRUNCATE public.hostile_calls")
    # Preflight names the planted functions that read an old table: the operator decides about each.
    plan = decided(dsn, PLAN)
    assert {"function public.hostile_control()", "function public.to_jsonb(public.content_metadata)"} <= {
        name for name, _ in plan.dependents
    }
    ex = Executor(connect(dsn), plan, dsn)
    ex.create()
    with _app(dsn) as app:
        # sync triggers and their resync functions
        ex.backfill(BackfillOptions(batch_size=700), sync_triggers=True)
        app.execute("INSERT INTO content_metadata (decision_id, content) VALUES (md5('new')::uuid, 'mirrored')")
        app.execute("UPDATE tweets SET text = 'edited' WHERE decision_id = md5('d3')::uuid")
        app.execute(
            "INSERT INTO tweet_metrics (decision_id, tweet_id, measured_at) VALUES (md5('d1')::uuid, 't', now())"
        )
        app.execute("DELETE FROM posts WHERE decision_id = md5('d5')::uuid")
        # a mirror the new table rejects runs the sync trigger's failure path (to_jsonb of the row) too
        app.execute("UPDATE content_metadata SET decision_type = 'not a type' WHERE decision_id = md5('new')::uuid")
        with pytest.raises(ExecutorError, match="violates check constraint"):
            ex.backfill(BackfillOptions(batch_size=500))
        app.execute("UPDATE content_metadata SET decision_type = 'single' WHERE decision_id = md5('new')::uuid")
        ex.backfill(BackfillOptions())  # replays the failed mirror
        # verify's change capture, on old and new tables
        assert ex.verify()["passed"]
        app.execute(
            "UPDATE content_generation_metadata_comprehensive SET tone = 'dry' WHERE decision_id = md5('d2')::uuid"
        )
        app.execute("UPDATE posted_decisions SET content = 'captured' WHERE decision_id = md5('d4')::uuid")
        assert ex.verify(incremental=True)["passed"]
        ex.switch_reads(100)
        # after cleanup: the compatibility views' functions and the reverse sync (success and failure paths)
        ex.cleanup(tmp_path / "backups")
        app.execute("UPDATE posted_decisions SET content = 'through the view' WHERE decision_id = md5('d6')::uuid")
        app.execute(
            "INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-view', md5('view')::uuid, 'via tweets')"
        )
        app.execute("DELETE FROM content_metadata WHERE decision_id = md5('d7')::uuid")
        app.execute("UPDATE posted_content SET content = 'direct' WHERE decision_id = md5('d8')::uuid")
        taken = app.execute("SELECT tweet_id FROM archive_xbot.posted_decisions LIMIT 1").fetchone()[0]
        app.execute(  # the archived posted_decisions refuses a second row with that tweet_id
            "INSERT INTO posted_content (decision_id, tweet_id, content, source_table)"
            " VALUES (md5('clash')::uuid, %s, 'x', 'posted_decisions')",
            (taken,),
        )
    assert _planted_calls(db) == []
    assert not db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (own_role,)).fetchone()[0]
    # Both failure paths ran and were recorded, by functions that called nothing planted.
    assert db.execute("SELECT call_site, count(*) FROM dualshift.failed_writes GROUP BY 1 ORDER BY 1").fetchall() == [
        ("dualshift reverse sync", 1),
        ("trigger", 1),
    ]
    # The reverse sync reached the archived table behind its row-level security (through its own policy).
    assert db.execute(
        "SELECT content FROM archive_xbot.posted_decisions WHERE decision_id = md5('d6')::uuid"
    ).fetchone() == ("through the view",)
    db.execute("DELETE FROM posted_content WHERE decision_id = md5('clash')::uuid")
    db.execute("UPDATE dualshift.failed_writes SET replayed_at = now()")
    assert ex.rollback()["to"] == "switched"
    assert _planted_calls(db) == []


def test_two_long_source_names_get_two_sync_functions(admin_dsn: str) -> None:
    first = "first_source_with_a_really_long_name_for_the_hashing_test_aaaa"
    second = "first_source_with_a_really_long_name_for_the_hashing_test_bbbb"
    schema = SCHEMA.replace("first_items", first).replace("second_items", second)
    with items_database(admin_dsn, schema) as dsn, psycopg.connect(dsn, autocommit=True) as db:
        ex = executor(dsn, items_plan(first=first, second=second))
        ex.create()
        ex.backfill(BackfillOptions(), sync_triggers=True)
        functions = db.execute(
            "SELECT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgname = 'dualshift_sync'"
        ).fetchall()
        assert len({f for (f,) in functions}) == 2
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'from the first')").format(sql.Identifier(first)))
        db.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 'from the second'), (2, 'second')").format(sql.Identifier(second))
        )
        db.execute(sql.SQL("UPDATE {} SET value = 'first, edited'").format(sql.Identifier(first)))
        assert actual(db) == expected(db, first, second) == {1: ("first, edited", "first"), 2: ("second", "second")}


def test_a_mirror_the_new_table_rejects_never_fails_the_app_and_backfill_reports_then_repairs_it(
    admin_dsn: str,
) -> None:
    with items_database(admin_dsn) as dsn, psycopg.connect(dsn, autocommit=True) as db:
        ex = executor(dsn, items_plan())
        ex.create()
        ex.backfill(BackfillOptions(), sync_triggers=True)
        db.execute("INSERT INTO first_items VALUES (1, 'rejected by the new table')")  # the new table's check
        db.execute("INSERT INTO first_items VALUES (NULL, 'no key')")  # the new key is NOT NULL
        db.execute("INSERT INTO second_items VALUES (2, 'fine')")
        assert db.execute("SELECT count(*) FROM first_items").fetchone()[0] == 2  # the app's writes committed
        failures = db.execute(
            "SELECT old_table, new_table, operation, payload->>'value', error, call_site FROM dualshift.failed_writes"
            " ORDER BY id"
        ).fetchall()
        assert [f[:4] + f[5:] for f in failures] == [
            ("first_items", "items", "insert", "rejected by the new table", "trigger"),
            ("first_items", "items", "insert", "no key", "trigger"),
        ]
        assert "check constraint" in failures[0][4] and "NULL" in failures[1][4]
        assert actual(db) == {2: ("fine", "second")}
        with pytest.raises(ExecutorError, match=r"first_items \(key id\) → items: 1 row\(s\) have a NULL key part"):
            ex.backfill(BackfillOptions())
        db.execute("DELETE FROM first_items WHERE id IS NULL")
        with pytest.raises(
            ExecutorError,
            match=r"public\.first_items → items: a row in the batch at the start does not fit the new table",
        ):
            ex.backfill(BackfillOptions())
        db.execute("UPDATE first_items SET value = 'accepted' WHERE id = 1")  # mirrored now
        result = ex.backfill(BackfillOptions())
        assert result["tables"]["items"]["failed_writes_replayed"] == 2
        assert actual(db) == expected(db) == {1: ("accepted", "first"), 2: ("fine", "second")}


def test_a_bulk_write_holds_a_bounded_number_of_key_locks_and_the_rest_is_repaired(admin_dsn: str) -> None:
    with items_database(admin_dsn) as dsn, psycopg.connect(dsn, autocommit=True) as db:
        ex = executor(dsn, items_plan())
        ex.create()
        ex.backfill(BackfillOptions(), sync_triggers=True)
        with db.transaction():
            db.execute("INSERT INTO first_items SELECT g, 'bulk' FROM generate_series(1, 1200) g")
            held = db.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
            ).fetchone()[0]
        assert held == MAX_LOCKED_KEYS
        assert db.execute("SELECT count(*) FROM first_items").fetchone()[0] == 1200  # the app's write committed
        assert db.execute("SELECT count(*) FROM dualshift.failed_writes").fetchone()[0] == 200
        assert len(actual(db)) == 1000
        ex.backfill(BackfillOptions())
        assert actual(db) == expected(db)


@pytest.mark.parametrize(
    "fault", ["backfill.sync_prepared@2", "backfill.sync_installed@4", "backfill.batch_committed@3"]
)
def test_a_backfill_killed_while_installing_or_copying_resumes(fault: str, dsn: str, db: psycopg.Connection) -> None:
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    command = [str(Path(sys.executable).parent / "dualshift"), "migrate", "--dsn", dsn, "--plan", str(PLAN)]
    Executor(connect(dsn), load_plan(PLAN), dsn).create()
    backfill = [*command, "backfill", "--sync", "triggers", "--batch-size", "500"]
    killed = subprocess.run(backfill, capture_output=True, env={**os.environ, "DUALSHIFT_FAULT": fault}, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    resumed = subprocess.run(backfill, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_sync'").fetchone()[0] == 9
    db.execute("UPDATE tweets SET text = 'after the crash' WHERE decision_id = md5('d3')::uuid")
    winner = db.execute(  # posted_decisions comes first in the plan; tweets second
        "SELECT coalesce((SELECT content FROM posted_decisions WHERE decision_id = md5('d3')::uuid), 'after the crash')"
    ).fetchone()[0]
    assert db.execute("SELECT content FROM posted_content WHERE decision_id = md5('d3')::uuid").fetchone()[0] == winner
    verified = subprocess.run([*command, "verify"], capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr


# ── who owns what dualshift creates, after each phase ─────────────────────────────────────────

DEFINERS = """
SELECT p.oid::regprocedure::text, r.rolname, r.rolsuper OR r.rolcanlogin OR r.rolinherit OR r.rolcreaterole
       OR r.rolcreatedb OR r.rolreplication OR r.rolbypassrls, p.proconfig::text,
       (SELECT count(*) FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a WHERE a.grantee <> p.proowner)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_roles r ON r.oid = p.proowner
WHERE n.nspname IN ('dualshift', 'dualshift_private') AND p.prosecdef
"""
# Everything a role holds in this database: privileges, memberships, ownerships, policies naming it.
HOLDINGS = """
WITH r AS (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
SELECT CASE c.relkind WHEN 'S' THEN 'sequence' ELSE 'table' END, n.nspname || '.' || c.relname, a.privilege_type
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a WHERE a.grantee = (SELECT oid FROM r)
UNION ALL SELECT 'column', c.relname || '.' || t.attname, a.privilege_type
  FROM pg_attribute t JOIN pg_class c ON c.oid = t.attrelid, aclexplode(t.attacl) a WHERE a.grantee = (SELECT oid FROM r)
UNION ALL SELECT 'schema', n.nspname, a.privilege_type
  FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = (SELECT oid FROM r)
UNION ALL SELECT 'function', p.oid::regprocedure::text, a.privilege_type
  FROM pg_proc p, aclexplode(p.proacl) a WHERE a.grantee = (SELECT oid FROM r) AND p.proowner <> (SELECT oid FROM r)
UNION ALL SELECT 'database', d.datname, a.privilege_type
  FROM pg_database d, aclexplode(d.datacl) a WHERE a.grantee = (SELECT oid FROM r)
UNION ALL SELECT 'type', t.typname, a.privilege_type
  FROM pg_type t, aclexplode(t.typacl) a WHERE a.grantee = (SELECT oid FROM r)
UNION ALL SELECT 'member of', g.rolname, '' FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
  WHERE m.member = (SELECT oid FROM r)
UNION ALL SELECT 'owns', c.oid::regclass::text, '' FROM pg_class c WHERE c.relowner = (SELECT oid FROM r)
UNION ALL SELECT 'owns', n.nspname, '' FROM pg_namespace n WHERE n.nspowner = (SELECT oid FROM r)
UNION ALL SELECT 'owns', p.oid::regprocedure::text, '' FROM pg_proc p WHERE p.proowner = (SELECT oid FROM r)
  AND NOT p.prosecdef
UNION ALL SELECT 'policy', n.nspname || '.' || c.relname || ' ' || pol.polname, ''
  FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE (SELECT oid FROM r) = ANY(pol.polroles)
UNION ALL SELECT 'default privileges', d.defaclobjtype::text, '' FROM pg_default_acl d
  WHERE d.defaclrole = (SELECT oid FROM r)
"""
WRITE = ("DELETE", "INSERT", "SELECT", "UPDATE")


def _allowed(kind: str, plan, archive: str) -> set[tuple[str, str, str]]:
    """What the role of each kind may hold, from the plan (the xbot plan: every old table has a bigserial id,
    posted_decisions has RLS, and so the new posted_content too)."""
    sources = [s for t in plan.tables for s in t.sources]
    failed = {("table", "dualshift.failed_writes", "INSERT"), ("sequence", "dualshift.failed_writes_id_seq", "USAGE")}
    if kind == "sync":
        return (
            failed
            | {("schema", s, "USAGE") for s in ("public", "dualshift", "dualshift_private")}
            | {("table", f"public.{t.name}", p) for t in plan.tables for p in WRITE}
            | {("sequence", f"public.{t.name}_id_seq", "USAGE") for t in plan.tables}  # create's surrogate id
            | {("table", f"public.{s.table}", "SELECT") for s in sources}
            | {("member of", "dualshift_sync", ""), ("policy", "public.posted_decisions dualshift_sync", "")}
            | {("policy", "public.posted_content dualshift_sync", "")}
        )
    if kind == "capture":
        return {
            ("schema", "dualshift_private", "USAGE"),
            ("table", "dualshift_private.verify_changes", "INSERT"),
            ("sequence", "dualshift_private.verify_changes_id_seq", "USAGE"),
        }
    if kind == "compat":  # the views' write triggers; after finalize, the views' own numbering sequences
        kept_ids = [s for t in plan.tables for s in t.sources if "id" in t.column_mapping(s.table)]
        numbering = (archive, "dualshift_private") if kept_ids else ()  # the xbot plan keeps no old id
        return (
            {("schema", s, "USAGE") for s in ("public", *numbering)}
            | {("table", f"public.{t.name}", p) for t in plan.tables for p in WRITE}
            | {("sequence", f"public.{t.name}_id_seq", "USAGE") for t in plan.tables}
            | {("sequence", f"{archive}.{s.table}_id_seq", "USAGE") for s in kept_ids}
            | {
                ("sequence", f"dualshift_private.{fit('compat', s.schema, s.table, 'id', 'seq')}", "USAGE")
                for s in kept_ids
            }
            | {("member of", "dualshift_sync", ""), ("policy", "public.posted_content dualshift_compat", "")}
        )
    assert kind == "reverse_sync", kind
    return (
        failed
        | {("schema", s, "USAGE") for s in (archive, "dualshift")}
        | {("table", f"{archive}.{s.table}", p) for s in sources for p in WRITE}
        | {("sequence", f"{archive}.{s.table}_id_seq", "USAGE") for s in sources}
        | {("policy", f"{archive}.posted_decisions dualshift_reverse_sync", "")}
    )


def _check_definers(db: psycopg.Connection, plan, after: str, kinds: set[str]) -> None:
    """Every SECURITY DEFINER function in dualshift's schemas: owned by a role of one of `kinds` (the
    roles this phase leaves), NOLOGIN and without attributes, holding nothing beyond its kind's list;
    the search_path pinned; PUBLIC may not call it. And no other role of dualshift's is left."""
    database = db.info.dbname
    owners: set[str] = set()
    for function, owner, attributes, config, callers in db.execute(DEFINERS).fetchall():
        assert not attributes, (after, function, owner)
        assert "search_path=pg_catalog, pg_temp" in config, (after, function, config)
        assert callers == 0, (after, function)  # no grant, PUBLIC's default EXECUTE revoked
        owners.add(owner)
    expected = {fit(f"dualshift_{kind}", database, plan.name): kind for kind in kinds}
    assert owners <= set(expected), (after, owners, expected)
    left = {
        r for (r,) in db.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"dualshift\\_%{database}%",))
    }
    assert left == set(expected), (after, left)
    for role, kind in expected.items():
        held = set(db.execute(HOLDINGS, {"role": role}).fetchall())
        assert held <= _allowed(kind, plan, plan.archive_schema), (
            after,
            role,
            held - _allowed(kind, plan, plan.archive_schema),
        )
    # nothing of a dropped role is left behind: no policy of dualshift's names no role
    stray = db.execute(
        "SELECT polname FROM pg_policy WHERE polname IN ('dualshift_sync', 'dualshift_reverse_sync', 'dualshift_compat')"
        " AND polroles = '{0}'"
    ).fetchall()
    assert stray == [], (after, stray)


def test_every_security_definer_function_is_owned_by_a_role_holding_only_what_it_needs(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    db.execute("ALTER TABLE posted_decisions ENABLE ROW LEVEL SECURITY")
    plan = load_plan(PLAN)
    ex = Executor(connect(dsn), plan, dsn)
    policies = db.execute("SELECT count(*) FROM pg_policy").fetchone()[0]
    steps = [  # (step, the kinds of role it leaves)
        ("create", lambda: ex.create(), set()),
        ("backfill --sync triggers", lambda: ex.backfill(BackfillOptions(), sync_triggers=True), {"sync"}),
        ("verify", lambda: ex.verify(), {"sync", "capture"}),
        ("switch-reads", lambda: ex.switch_reads(100), {"sync", "capture"}),
        ("cleanup", lambda: ex.cleanup(tmp_path / "first"), {"reverse_sync", "compat"}),
        ("rollback of cleanup", lambda: ex.rollback(), {"sync"}),  # the sync triggers are back on
        ("rollback to verified", lambda: ex.rollback(), {"sync"}),
        ("backfill --sync triggers again", lambda: ex.backfill(BackfillOptions(), sync_triggers=True), {"sync"}),
        ("verify again", lambda: ex.verify(), {"sync", "capture"}),
        ("rollback to backfilled", lambda: ex.rollback(), {"sync", "capture"}),
        ("rollback to created", lambda: ex.rollback(), set()),
        ("rollback to none", lambda: ex.rollback(), set()),
    ]
    steps += [  # and forward to the end
        ("create again", lambda: ex.create(), set()),
        ("backfill --sync triggers", lambda: ex.backfill(BackfillOptions(), sync_triggers=True), {"sync"}),
        ("verify", lambda: ex.verify(), {"sync", "capture"}),
        ("cleanup", lambda: ex.cleanup(tmp_path / "second"), {"reverse_sync", "compat"}),
        # the views and their write triggers stay, and so does the role that owns the triggers
        ("finalize --keep-archive", lambda: ex.finalize(keep_archive=True), {"compat"}),
    ]
    for number, (step, run, kinds) in enumerate(steps):
        run()
        _check_definers(db, plan, step, kinds)
        # the write path still works for the application, whichever roles own the functions
        if step.startswith("cleanup"):
            db.execute("UPDATE posted_content SET content = 'after cleanup' WHERE decision_id = md5('d6')::uuid")
            assert db.execute(
                "SELECT content FROM archive_xbot.posted_decisions WHERE decision_id = md5('d6')::uuid"
            ).fetchone() == ("after cleanup",)
        if step.startswith(("cleanup", "finalize")):  # through a view: the compat role's trigger numbers it
            key = f"via view after step {number}"
            db.execute(
                "INSERT INTO tweets (tweet_id, decision_id, text) VALUES (%s, md5(%s)::uuid, %s)", (key, key, key)
            )
            assert db.execute(
                "SELECT content FROM posted_content WHERE decision_id = md5(%s)::uuid", (key,)
            ).fetchone() == (key,)
    assert db.execute("SELECT count(*) FROM dualshift.failed_writes").fetchone()[0] == 0
    # the archive kept by finalize: exactly the grants and policies the old tables had
    # (posted_content's own two, and the compat role's, which stays with the views' write triggers)
    assert db.execute("SELECT count(*) FROM pg_policy").fetchone()[0] == policies + 3


def test_a_role_squatting_the_function_roles_name_is_refused(dsn: str, db: psycopg.Connection) -> None:
    """Someone made a LOGIN role under the name dualshift gives its sync role: the functions would run with
    whatever it holds, so backfill refuses, keeping nothing."""
    from dualshift.executor import owners

    plan = load_plan(PLAN)
    ex = Executor(connect(dsn), plan, dsn)
    ex.create()
    squatter = owners.role_name(db, plan, owners.SYNC)
    db.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(squatter)))
    try:
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege, match=r"^role dualshift_sync_\S+ already exists with LOGIN"
        ):
            ex.backfill(BackfillOptions(), sync_triggers=True)
        owned = db.execute(
            "SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner"
            " WHERE r.rolname = %s",
            (squatter,),
        ).fetchone()[0]
        assert owned == 0
        assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_sync'").fetchone()[0] == 0
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(squatter)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(squatter)))
