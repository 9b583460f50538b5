"""Who the sync triggers run as, what they call, and that a mirror never fails the application's write."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from dualshift.executor.backfill import MAX_LOCKED_KEYS, BackfillOptions
from dualshift.executor.connection import ExecutorError, connect
from dualshift.executor.names import PRIVATE_SCHEMA
from dualshift.executor.phases import Executor
from dualshift.executor.sync import role_name
from dualshift.plan import load_plan

from .conftest import PLAN
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
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
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
