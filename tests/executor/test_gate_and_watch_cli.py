"""The readiness gate before switch-reads, and `migrate watch --once`, through the command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor import sync
from dualshift.plan import load_plan

from .conftest import PLAN, REPO


def _migrate(dsn: str, *args: str):
    return CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), *args])


def _code(tmp_path: Path) -> Path:
    root = tmp_path / "xbot"
    shutil.copytree(REPO / "fixtures" / "xbot", root, symlinks=True, ignore=shutil.ignore_patterns("expected"))
    return root


def test_switch_reads_is_refused_while_code_writes_around_the_wrapper(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    code = _code(tmp_path)
    assert _migrate(dsn, "create").exit_code == 0
    assert _migrate(dsn, "backfill").exit_code == 0
    assert _migrate(dsn, "verify").exit_code == 0
    refused = _migrate(dsn, "--code", str(code), "switch-reads", "50")
    assert refused.exit_code == 2
    assert refused.output.startswith("dualshift: switch-reads refused: ") and len(refused.output.splitlines()) == 1
    assert (
        "src/posting/fixedThreadPoster.ts:8: tweets: insert on tweets bypasses the dual-write wrapper" in refused.output
    )
    assert db.execute("SELECT value::text FROM dualshift.flags WHERE name = 'read_from_new_percent'").fetchone() == (
        "0",
    )
    forced = _migrate(dsn, "--code", str(code), "switch-reads", "50", "--force")
    assert forced.exit_code == 0, forced.output
    audited = db.execute("SELECT detail FROM dualshift_private.audit WHERE action = 'readiness gate forced'").fetchone()
    assert any("fixedThreadPoster.ts:8" in site for site in audited[0]["sites"])


def test_the_sync_triggers_cover_what_the_code_does_not(dsn: str, tmp_path) -> None:
    code = _code(tmp_path)
    assert _migrate(dsn, "create").exit_code == 0
    assert _migrate(dsn, "backfill", "--sync", "triggers").exit_code == 0
    assert _migrate(dsn, "verify").exit_code == 0
    switched = _migrate(dsn, "--code", str(code), "switch-reads", "50")
    assert switched.exit_code == 0, switched.output


def test_watch_once_rolls_reads_back_when_mirror_writes_fail(dsn: str, db: psycopg.Connection) -> None:
    assert _migrate(dsn, "create").exit_code == 0
    assert _migrate(dsn, "backfill", "--sync", "triggers").exit_code == 0
    assert _migrate(dsn, "verify").exit_code == 0
    assert _migrate(dsn, "switch-reads", "50").exit_code == 0
    healthy = _migrate(dsn, "watch", "--once")
    assert healthy.exit_code == 0 and healthy.output.startswith("healthy: ")
    role = sync.role_name(db, load_plan(PLAN))
    db.execute(f'REVOKE INSERT ON public.posted_content FROM "{role}"')  # the new table refuses the mirror
    db.execute("INSERT INTO public.tweets (tweet_id, decision_id, text) VALUES ('t-w', gen_random_uuid(), 'x')")
    breached = _migrate(dsn, "watch", "--once")
    assert breached.exit_code == 1
    assert "BREACH: 1 mirror write(s) failed" in breached.output
    assert "reads switched back to the old tables" in breached.output
    assert db.execute("SELECT value::text FROM dualshift.flags WHERE name = 'read_from_new_percent'").fetchone() == (
        "0",
    )
    assert db.execute("SELECT count(*) FROM public.tweets WHERE tweet_id = 't-w'").fetchone()[0] == 1  # app write kept


def test_verbose_prints_the_sql_that_ran_and_quiet_prints_nothing(dsn: str) -> None:
    loud = CliRunner().invoke(app, ["-v", "migrate", "--dsn", dsn, "--plan", str(PLAN), "create"])
    assert loud.exit_code == 0 and 'CREATE TABLE "public"."content_queue"' in loud.output
    quiet = CliRunner().invoke(app, ["-q", "migrate", "--dsn", dsn, "--plan", str(PLAN), "backfill"])
    assert quiet.exit_code == 0 and quiet.output == ""


def test_status_on_a_database_never_migrated_changes_nothing(dsn: str, db: psycopg.Connection) -> None:
    result = _migrate(dsn, "status")
    assert result.exit_code == 0 and '"phase": "none"' in result.output
    assert db.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'dualshift%'").fetchone()[0] == 0


def test_cleanup_is_gated_like_switch_reads(dsn: str, tmp_path) -> None:
    code = _code(tmp_path)
    for args in (("create",), ("backfill",), ("verify",)):
        assert _migrate(dsn, *args).exit_code == 0
    backups = str(tmp_path / "backups")
    refused = _migrate(dsn, "--code", str(code), "cleanup", "--backup-dir", backups)
    assert refused.exit_code == 2 and refused.output.startswith("dualshift: cleanup refused: ")
    forced = _migrate(dsn, "--code", str(code), "cleanup", "--backup-dir", backups, "--force")
    assert forced.exit_code == 0, forced.output
