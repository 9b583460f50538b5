"""The state row against the catalog, plan identity, the private/API schema split, pinned sessions
and timeouts: each on a real PostgreSQL, through the executor or its CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import PINNED_SETTINGS, ExecutorError, Timeouts, connect
from dualshift.executor.phases import Executor
from dualshift.plan import load_plan

from .conftest import PLAN

DUALSHIFT = Path(sys.executable).parent / "dualshift"
NEW_TABLES = ("content_queue", "posted_content", "engagement_metrics")


def executor(dsn: str, plan_path: Path = PLAN, timeouts: Timeouts = Timeouts(), **options) -> Executor:
    return Executor(connect(dsn, timeouts), load_plan(plan_path), dsn, timeouts=timeouts, **options)


def migrate(dsn: str, *args: str, plan: Path = PLAN):
    return CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(plan), *args])


def state(db: psycopg.Connection, name: str = "xbot-9-to-3") -> str | None:
    row = db.execute("SELECT phase FROM dualshift_private.state WHERE plan = %s", (name,)).fetchone()
    return None if row is None else row[0]


def new_rows(db: psycopg.Connection) -> dict[str, int]:
    return {t: db.execute(f"SELECT count(*) FROM public.{t}").fetchone()[0] for t in NEW_TABLES}


# ── the state row is written with the phase's effect ─────────────────────────────────────────

STEPS_BEFORE = {
    "create.committed": [],
    "backfill.committed": [["create"]],
    "verify.committed": [["create"], ["backfill"]],
    "switch.committed": [["create"], ["backfill"], ["verify"]],
    "rollback.committed": [["create"], ["backfill"]],
}
KILLED_COMMAND = {
    "create.committed": (["create"], "created"),
    "backfill.committed": (["backfill"], "backfilled"),
    "verify.committed": (["verify"], "verified"),
    "switch.committed": (["switch-reads", "30"], "switched"),
    "rollback.committed": (["rollback"], "created"),
}


def _cli(dsn: str, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DUALSHIFT_FAULT": fault} if fault else dict(os.environ)
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [str(DUALSHIFT), "migrate", "--dsn", dsn, "--plan", str(PLAN), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("point", list(KILLED_COMMAND))
def test_a_kill_right_after_a_phase_commits_leaves_state_and_catalog_agreeing(
    point: str, dsn: str, db: psycopg.Connection
) -> None:
    for step in STEPS_BEFORE[point]:
        assert _cli(dsn, *step).returncode == 0
    command, expected = KILLED_COMMAND[point]
    killed = _cli(dsn, *command, fault=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert state(db) == expected  # committed with the effect, not after it
    status = _cli(dsn, "status")
    assert status.returncode == 0 and '"catalog_agrees": true' in status.stdout, status.stdout
    # and the next command carries on from there
    follow = {"created": ["backfill"], "backfilled": ["verify"], "verified": ["switch-reads", "30"]}
    if expected in follow:
        assert _cli(dsn, *follow[expected]).returncode == 0


def test_rollback_refuses_when_the_state_row_disagrees_with_the_catalog(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    ex = executor(dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    assert ex.verify()["passed"]
    ex.switch_reads(50)
    ex.cleanup(tmp_path / "backup")
    db.execute(
        "INSERT INTO public.content_queue (decision_id, content, decision_type) VALUES (gen_random_uuid(), 'only in new', 'single')"
    )
    before = new_rows(db)
    # The state row of an older dualshift that crashed between cleanup's commit and its state update.
    db.execute("UPDATE dualshift_private.state SET phase = 'switched'")
    for _ in range(3):  # the three rollbacks, which emptied the consolidated tables
        with pytest.raises(ExecutorError) as refused:
            ex.rollback()
        message = str(refused.value)
        assert "\n" not in message
        assert "says 'switched'" in message and "9 views under old names" in message and "'cleaned'" in message
    assert new_rows(db) == before
    assert state(db) == "switched"
    # reconcile records what the catalog shows; then rollback of cleanup is what runs
    assert ex.reconcile()["to"] == "cleaned"
    ex.rollback()
    assert db.execute("SELECT count(*) FROM public.content_metadata WHERE content = 'only in new'").fetchone()[0] == 1


def test_rollback_from_backfilled_never_empties_rows_written_only_to_the_new_tables(
    dsn: str, db: psycopg.Connection
) -> None:
    ex = executor(dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    db.execute(
        "INSERT INTO public.content_queue (decision_id, content, decision_type) SELECT gen_random_uuid(), 'new only', 'single'"
        " FROM generate_series(1, 7)"
    )
    before = new_rows(db)
    with pytest.raises(ExecutorError, match=r"rollback refused: .*content_queue holds 7 rows no old table has"):
        ex.rollback()
    assert new_rows(db) == before and state(db) == "backfilled"
    # the sync triggers were not dropped either: the refused step kept nothing
    db.execute("DELETE FROM public.content_queue WHERE content = 'new only'")
    assert ex.rollback()["to"] == "created"
    assert sum(new_rows(db).values()) == 0
    # created → none drops the tables only when no row lives only there; an empty table holds none
    assert ex.rollback()["to"] == "none"
    assert db.execute("SELECT to_regclass('public.content_queue')").fetchone()[0] is None


def test_a_rollback_from_created_never_drops_rows_that_live_only_there(dsn: str, db: psycopg.Connection) -> None:
    ex = executor(dsn)
    ex.create()
    db.execute(
        "INSERT INTO public.content_queue (decision_id, content, decision_type) VALUES (gen_random_uuid(), 'x', 'single')"
    )
    with pytest.raises(ExecutorError, match="it would drop the new tables, but content_queue holds 1 rows"):
        ex.rollback()
    assert new_rows(db)["content_queue"] == 1


def test_create_after_a_crash_of_the_old_code_names_the_way_forward(dsn: str, db: psycopg.Connection) -> None:
    ex = executor(dsn)
    ex.create()
    db.execute("DELETE FROM dualshift_private.state")  # old code: DDL committed, state never written
    result = migrate(dsn, "create")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert "public.content_queue, public.posted_content, public.engagement_metrics already exist" in line
    assert "dualshift migrate reconcile" in line
    result = migrate(dsn, "reconcile")
    assert result.exit_code == 0, result.stderr
    assert state(db) == "created"
    assert migrate(dsn, "backfill").exit_code == 0
    assert state(db) == "backfilled"
    audit = db.execute("SELECT detail->>'from' FROM dualshift_private.audit WHERE action = 'reconcile'").fetchone()
    assert audit == ("none",)


def test_reconcile_refuses_tables_that_are_not_the_plans(dsn: str, db: psycopg.Connection) -> None:
    ex = executor(dsn)
    ex.create()
    db.execute("DELETE FROM dualshift_private.state")
    db.execute("ALTER TABLE public.content_queue ADD COLUMN stray int")
    with pytest.raises(ExecutorError, match="do not have exactly the plan's columns"):
        ex.reconcile()
    assert state(db) is None


# ── plan identity ───────────────────────────────────────────────────────────────────────────


def _other_plan(tmp_path: Path) -> Path:
    """An unrelated migration whose file is also called dualshift.toml."""
    text = PLAN.read_text().replace('name = "xbot-9-to-3"', 'name = "other-migration"')
    for table in NEW_TABLES:
        text = text.replace(f'name = "{table}"', f'name = "{table}_b"').replace(f'"{table}(', f'"{table}_b(')
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "dualshift.toml").write_text(text)
    return folder / "dualshift.toml"


def test_state_is_keyed_by_the_plan_name_not_the_file_name(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    other = _other_plan(tmp_path)
    ours = executor(dsn)
    ours.create()
    theirs = executor(dsn, other)
    assert theirs.status()["phase"] == "none"  # not "already past create"
    assert theirs.create()["created"] == [f"{t}_b" for t in NEW_TABLES]
    assert theirs.rollback()["to"] == "none"
    assert state(db) == "created"  # their rollback did not move ours
    assert db.execute("SELECT to_regclass('public.content_queue')").fetchone()[0] is not None


def test_a_plan_changed_under_a_running_migration_is_refused_unless_accepted(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    plan = tmp_path / "dualshift.toml"
    plan.write_text(PLAN.read_text())
    assert migrate(dsn, "create", plan=plan).exit_code == 0
    plan.write_text(PLAN.read_text() + "\n# a comment changes nothing the plan says\n")
    assert migrate(dsn, "backfill", "--max-batches", "1", "--batch-size", "100", plan=plan).exit_code == 3
    plan.write_text(PLAN.read_text().replace("max_missing_rows = 0", "max_missing_rows = 5"))
    assert '"plan_changed": true' in migrate(dsn, "status", plan=plan).stdout
    refused = migrate(dsn, "verify", plan=plan)
    assert refused.exit_code == 2
    assert "plan xbot-9-to-3 changed since the migration reached 'created'" in refused.stderr
    assert "--accept-plan-change" in refused.stderr and "\n" not in refused.stderr.strip()
    accepted = CliRunner().invoke(
        app, ["migrate", "--dsn", dsn, "--plan", str(plan), "--accept-plan-change", "backfill"]
    )
    assert accepted.exit_code == 0, accepted.stderr
    assert (
        db.execute("SELECT count(*) FROM dualshift_private.audit WHERE action = 'accept plan change'").fetchone()[0]
        == 1
    )
    assert migrate(dsn, "verify", plan=plan).exit_code == 0  # the new content is the migration's now


# cleanup, finalize and the rollback of cleanup run outside `_run`: each checks the plan's hash as it does.
AFTER_CLEANUP_COMMANDS = {  # command → (steps before it, the phase it finds, the phase it leaves)
    "cleanup": ((), "verified", "cleaned"),
    "finalize": (("cleanup",), "cleaned", "finalized"),
    "rollback": (("cleanup",), "cleaned", "verified"),
}


@pytest.mark.parametrize("command", list(AFTER_CLEANUP_COMMANDS))
def test_a_plan_changed_under_cleanup_finalize_or_their_rollback_is_refused_unless_accepted(
    command: str, dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    before, found, left = AFTER_CLEANUP_COMMANDS[command]
    plan = tmp_path / "dualshift.toml"
    plan.write_text(PLAN.read_text())
    ex = executor(dsn, plan)
    ex.create()
    ex.backfill(BackfillOptions())
    assert ex.verify()["passed"]
    arguments = {"cleanup": ["cleanup", "--backup-dir", str(tmp_path / "backups")], "finalize": ["finalize"]}
    for step in before:
        assert migrate(dsn, *arguments[step], plan=plan).exit_code == 0
    plan.write_text(PLAN.read_text().replace("max_missing_rows = 0", "max_missing_rows = 5"))
    refused = migrate(dsn, *arguments.get(command, [command]), plan=plan)
    assert refused.exit_code == 2
    line = refused.stderr.strip()
    assert f"plan xbot-9-to-3 changed since the migration reached '{found}'" in line and "\n" not in line, line
    assert "--accept-plan-change" in line
    assert state(db) == found
    accepted = CliRunner().invoke(
        app, ["migrate", "--dsn", dsn, "--plan", str(plan), "--accept-plan-change", *arguments.get(command, [command])]
    )
    assert accepted.exit_code == 0, accepted.stderr
    assert state(db) == left
    assert (
        db.execute("SELECT count(*) FROM dualshift_private.audit WHERE action = 'accept plan change'").fetchone()[0]
        == 1
    )


# ── the private and API schemas ─────────────────────────────────────────────────────────────

SUPABASE_ROLES = """
DO $$ BEGIN
  CREATE ROLE anon NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE ROLE authenticated NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
  CREATE ROLE service_role NOLOGIN;
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
"""


def _refused(db: psycopg.Connection, role: str, statement: str) -> bool:
    try:
        with db.transaction():
            db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            db.execute(statement)
        return False
    except psycopg.errors.InsufficientPrivilege:
        return True


def test_application_roles_read_flags_and_record_failures_and_nothing_else(dsn: str, db: psycopg.Connection) -> None:
    db.execute(SUPABASE_ROLES)
    # Supabase's default privileges: every new table and sequence of postgres goes to the API roles.
    db.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON TABLES TO anon, authenticated, service_role")
    db.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON SEQUENCES TO anon, authenticated, service_role")
    db.execute("ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role")
    executor(dsn).create()
    for role in ("anon", "authenticated", "service_role"):
        for table in ("state", "audit", "checkpoints", "verify_runs"):
            assert _refused(db, role, f"SELECT * FROM dualshift_private.{table}"), (role, table)
        assert _refused(db, role, "INSERT INTO dualshift.flags (name, value) VALUES ('dual_write', 'false')")
        assert _refused(db, role, "UPDATE dualshift.flags SET value = '100'")
        assert _refused(db, role, "DELETE FROM dualshift.flags")
        assert _refused(db, role, "SELECT * FROM dualshift.failed_writes")  # it holds other users' rows
        assert not _refused(db, role, "SELECT * FROM dualshift.flags")
        assert not _refused(
            db,
            role,
            "INSERT INTO dualshift.failed_writes (old_table, new_table, operation, error)"
            " VALUES ('tweets', 'posted_content', 'insert', 'network')",
        )
        assert _refused(db, role, "SELECT * FROM dualshift.shadow_mismatches")
        assert _refused(db, role, "DELETE FROM dualshift.shadow_mismatches")
        assert not _refused(
            db,
            role,
            "INSERT INTO dualshift.shadow_mismatches (old_table, new_table, key, columns, call_site)"
            " VALUES ('tweets', 'posted_content', '{\"tweet_id\": \"t\"}', '{text}', 'poster.ts:3')",
        )
    assert db.execute("SELECT count(*) FROM dualshift.failed_writes").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM dualshift.shadow_mismatches").fetchone()[0] == 3
    # PUBLIC has nothing on either schema
    assert db.execute(
        "SELECT has_schema_privilege('public', 'dualshift', 'USAGE'),"
        " has_schema_privilege('public', 'dualshift_private', 'USAGE')"
    ).fetchone() == (False, False)
    assert db.execute(
        "SELECT has_sequence_privilege('anon', 'dualshift_private.audit_id_seq', 'USAGE'),"
        " has_sequence_privilege('anon', 'dualshift.failed_writes_id_seq', 'USAGE')"
    ).fetchone() == (False, True)
    # nothing of dualshift's own state is in the exposed schema
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'dualshift'").fetchone()[0] == 3


def test_an_older_layout_is_moved_out_of_the_exposed_schema(dsn: str, db: psycopg.Connection) -> None:
    db.execute("CREATE SCHEMA dualshift")
    db.execute(
        "CREATE TABLE dualshift.state (plan text PRIMARY KEY, phase text NOT NULL, updated_at timestamptz DEFAULT now())"
    )
    db.execute("INSERT INTO dualshift.state VALUES ('dualshift.toml', 'created')")
    db.execute(
        "CREATE TABLE dualshift.audit (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), actor text,"
        " plan text, phase text, action text, result text, detail jsonb, statements text)"
    )
    executor(dsn).status()  # reads only
    result = migrate(dsn, "create")  # the first phase sets the schemas up
    assert result.exit_code == 0, result.stderr
    assert db.execute("SELECT plan, phase FROM dualshift_private.state ORDER BY 1").fetchall() == [
        ("dualshift.toml", "created"),
        ("xbot-9-to-3", "created"),
    ]
    assert db.execute("SELECT to_regclass('dualshift.state'), to_regclass('dualshift.audit')").fetchone() == (
        None,
        None,
    )


# ── sessions ────────────────────────────────────────────────────────────────────────────────


def test_environment_and_database_settings_never_reach_an_executor_session(
    dsn: str, db: psycopg.Connection, monkeypatch
) -> None:
    database = db.info.dbname
    db.execute(f'ALTER DATABASE "{database}" SET search_path = public')
    db.execute(f'ALTER DATABASE "{database}" SET "TimeZone" = \'America/Los_Angeles\'')
    db.execute(f'ALTER ROLE postgres IN DATABASE "{database}" SET "DateStyle" = \'SQL, DMY\'')
    db.execute(f'ALTER ROLE postgres IN DATABASE "{database}" SET "IntervalStyle" = \'iso_8601\'')
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")
    monkeypatch.setenv("PGOPTIONS", "-c extra_float_digits=0 -c search_path=public")
    monkeypatch.setenv("PGDATESTYLE", "German")
    conn = connect(dsn)
    shown = {name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0] for name in PINNED_SETTINGS}
    assert shown == PINNED_SETTINGS
    assert conn.execute("SELECT '2024-03-01 12:00'::timestamp::timestamptz::text").fetchone()[0] == (
        "2024-03-01 12:00:00+00"
    )
    assert conn.execute("SELECT (0.1::float8 + 0.2)::text").fetchone()[0] == "0.30000000000000004"
    conn.close()
    # and a whole run under that environment passes verify, with a planted last-bit difference seen
    ex = executor(dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    assert ex.verify()["passed"]


def test_a_server_that_never_answers_times_out_in_one_line() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    try:
        started = time.monotonic()
        result = CliRunner().invoke(
            app,
            [
                "migrate",
                "--dsn",
                f"postgresql://postgres@127.0.0.1:{port}/x",
                "--plan",
                str(PLAN),
                "--connect-timeout",
                "2",
                "status",
            ],
        )
        elapsed = time.monotonic() - started
        assert result.exit_code == 2
        line = result.stderr.strip()
        assert "\n" not in line and "no answer from the server within 2 s" in line, line
        assert elapsed < 5
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_stopped_backend_holding_a_lock_makes_the_executor_give_up_and_name_it(dsn: str) -> None:
    ex = executor(dsn, timeouts=Timeouts(lock_ms=100, row_lock_ms=1000, lock_attempts=2, backoff_ms=10))
    ex.create()
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE public.content_metadata IN ACCESS EXCLUSIVE MODE")
    pid = holder.info.backend_pid
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ExecutorError) as gave_up:
            ex.backfill(BackfillOptions())
        assert time.monotonic() - started < 10
        message = str(gave_up.value)
        assert "backfill gave up waiting" in message and f"pid {pid}" in message, message
        assert "\n" not in message
    finally:
        os.kill(pid, signal.SIGCONT)
        holder.close()
    assert ex.status()["phase"] == "created"


def test_a_second_executor_names_the_holder_of_the_advisory_lock(dsn: str) -> None:
    from dualshift.executor.connection import LOCK_KEY

    holder = connect(dsn)
    holder.execute("SELECT pg_catalog.pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        result = migrate(dsn, "create")
        assert result.exit_code == 2
        assert f"held by pid {holder.info.backend_pid}, dualshift" in result.stderr
    finally:
        holder.close()


# ── a role that plants functions in public ──────────────────────────────────────────────────

PLANTED = {
    "json_build_array(uuid)": "json",
    "jsonb_build_array(uuid)": "jsonb",
    "to_jsonb(uuid)": "jsonb",
    "to_json(uuid)": "json",
    "md5(uuid)": "text",
    "width_bucket(uuid, uuid[])": "integer",
    "now()": "timestamptz",
    "to_regclass(text)": "regclass",
    "count(uuid)": "bigint",
    "lower(uuid)": "text",
    "coalesce(uuid, uuid)": "uuid",
}


@pytest.fixture
def hostile(db: psycopg.Connection):
    role = f"hostile_{uuid.uuid4().hex[:10]}"
    db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        db.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        db.execute("CREATE TABLE public.hostile_log (called text, by_user text)")
        db.execute("GRANT INSERT ON public.hostile_log TO PUBLIC")
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        for signature, returns in PLANTED.items():
            name = signature.split("(")[0]
            if name in ("count", "coalesce"):
                continue  # an aggregate and a keyword: not functions one can shadow this way
            db.execute(
                f"CREATE FUNCTION public.{signature} RETURNS {returns} LANGUAGE plpgsql AS $$"
                f" BEGIN INSERT INTO public.hostile_log VALUES ('{name}', current_user);"
                f" RAISE EXCEPTION 'planted {name} ran'; END $$"
            )
        db.execute("RESET ROLE")
        yield role
    finally:
        db.execute("RESET ROLE")
        db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_functions_planted_in_public_never_run_in_an_executor_session(
    hostile: str, dsn: str, db: psycopg.Connection
) -> None:
    ex = executor(dsn)
    ex.create()
    ex.backfill(BackfillOptions(batch_size=700))
    assert ex.verify()["passed"]
    ex.switch_reads(20)
    assert ex.status()["phase"] == "switched"
    assert db.execute("SELECT count(*) FROM public.hostile_log").fetchone()[0] == 0


# ── PostgREST and locks ─────────────────────────────────────────────────────────────────────


def test_postgrest_is_told_to_reload_after_create_and_each_ddl_rollback(dsn: str) -> None:
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute("LISTEN pgrst")
    ex = executor(dsn)

    def reloads() -> list[str]:
        return [n.payload for n in listener.notifies(timeout=0.5, stop_after=5)]

    ex.create()
    assert reloads() == ["reload schema"]
    ex.backfill(BackfillOptions())
    assert reloads() == []
    ex.rollback()  # backfilled → created: sync triggers removed, tables emptied
    assert reloads() == ["reload schema"]
    ex.rollback()  # created → none: tables dropped
    assert reloads() == ["reload schema"]
    listener.close()


def test_a_rollback_behind_a_long_reader_retries_gives_up_and_never_stalls_writers(
    dsn: str, db: psycopg.Connection
) -> None:
    timeouts = Timeouts(lock_ms=150, lock_attempts=3, backoff_ms=50, backoff_max_ms=100)
    ex = executor(dsn, timeouts=timeouts)
    ex.create()
    ex.backfill(BackfillOptions(), sync_triggers=True)
    reader = psycopg.connect(dsn)
    reader.execute("SELECT count(*) FROM public.content_queue")  # a long-running transaction
    stalls: list[float] = []
    stop = threading.Event()

    def application_writer() -> None:
        with psycopg.connect(dsn, autocommit=True) as app_conn:
            number = 0
            while not stop.is_set():
                number += 1
                started = time.monotonic()
                app_conn.execute(
                    "INSERT INTO public.content_metadata (decision_id, content, decision_type)"
                    " VALUES (gen_random_uuid(), %s, 'single')",
                    (f"probe {number}",),
                )
                stalls.append(time.monotonic() - started)
                time.sleep(0.01)

    probe = threading.Thread(target=application_writer)
    probe.start()
    try:
        time.sleep(0.2)
        with pytest.raises(
            ExecutorError, match=rf"could not take its locks in 3 tries of 150 ms.*pid {reader.info.backend_pid}"
        ):
            ex.rollback()
        time.sleep(0.2)
    finally:
        stop.set()
        probe.join()
        reader.close()
    assert state(db) == "backfilled"
    # nothing of the refused step was kept: the sync triggers still mirror the writers' rows
    assert db.execute("SELECT count(*) FROM public.content_queue WHERE content LIKE 'probe %'").fetchone()[0] == len(
        stalls
    )
    # a writer waits at most one try's lock timeout plus the rest of that try's transaction
    assert max(stalls) < 0.15 + 0.35, f"worst application stall {max(stalls):.3f} s"


def test_the_applications_worst_lock_wait_per_phase_under_a_long_reader_and_a_writer(dsn: str) -> None:
    """The application's writer waits on dualshift's locks for less than one lock try (500 ms) in every
    phase, with a reader holding an old table open the whole time. Lock waits are measured by the
    server (pg_stat_activity), so that CPU contention on a shared machine does not count as a lock."""
    timeouts = Timeouts()  # 500 ms per lock try
    ex = executor(dsn, timeouts=timeouts)
    reader = psycopg.connect(dsn)
    reader.execute("SELECT count(*) FROM public.content_metadata")  # open for the whole migration
    waits: dict[str, float] = {}
    phase = ["idle"]
    stop = threading.Event()
    writer = psycopg.connect(dsn, autocommit=True)

    def application_writer() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            writer.execute(
                "INSERT INTO public.content_metadata (decision_id, content, decision_type)"
                " VALUES (gen_random_uuid(), %s, 'single')",
                (f"probe {number}",),
            )
            time.sleep(0.005)

    def lock_monitor() -> None:
        with psycopg.connect(dsn, autocommit=True) as monitor:
            while not stop.is_set():
                row = monitor.execute(
                    "SELECT extract(epoch FROM clock_timestamp() - query_start) FROM pg_stat_activity"
                    " WHERE pid = %s AND wait_event_type = 'Lock'",
                    (writer.info.backend_pid,),
                ).fetchone()
                if row:
                    waits[phase[0]] = max(waits.get(phase[0], 0.0), float(row[0]))
                time.sleep(0.01)

    threads = [threading.Thread(target=application_writer), threading.Thread(target=lock_monitor)]
    for thread in threads:
        thread.start()
    try:
        for name, run in (
            ("create", ex.create),
            ("backfill", lambda: ex.backfill(BackfillOptions(batch_size=1000), sync_triggers=True)),
            ("verify", ex.verify),
            ("switch-reads", lambda: ex.switch_reads(10)),
            ("rollback", ex.rollback),
        ):
            phase[0] = name
            run()
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        reader.close()
        writer.close()
    print("worst lock wait per phase (s):", {name: round(seconds, 3) for name, seconds in waits.items()})
    assert all(seconds < timeouts.lock_ms / 1000 for seconds in waits.values()), waits
