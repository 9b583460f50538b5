"""Every phase and every rollback, on a real PostgreSQL with the fixture's old tables."""

from __future__ import annotations

import json
import re
import threading

import psycopg
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import LOCK_KEY, ExecutorError, connect
from dualshift.executor.phases import Executor
from dualshift.plan import load_plan

from .conftest import PLAN

OLD_TABLES = [s.table for t in load_plan(PLAN).tables for s in t.sources]


def executor(dsn: str, dry_run: bool = False, plan=None) -> Executor:
    return Executor(connect(dsn), plan or load_plan(PLAN), dsn, dry_run)


def counts(db: psycopg.Connection, tables: list[str]) -> dict[str, int]:
    return {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def migrate(dsn: str, *args: str):
    return CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), *args])


def test_the_whole_migration_and_every_rollback(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    before = counts(db, OLD_TABLES)
    ex = executor(dsn)
    ex.create()
    assert db.execute("SELECT count(*) FROM content_queue").fetchone()[0] == 0
    ex.backfill(BackfillOptions(batch_size=700))
    report = ex.verify()
    assert report["passed"], report
    queue = next(t for t in report["tables"] if t["table"] == "content_queue")
    assert queue["expected_rows"] == queue["new_rows"] == 3900  # 3000 + 900 keys only the comprehensive twin has
    # Precedence: where both content tables hold a key, content_metadata's values won.
    content = db.execute(
        "SELECT q.content FROM content_queue q JOIN content_generation_metadata_comprehensive c USING (decision_id) LIMIT 1"
    ).fetchone()[0]
    assert content.startswith("post ")
    ex.switch_reads(25)
    assert (
        db.execute("SELECT value FROM dualshift.flags WHERE scope = '*' AND name = 'read_from_new_percent'").fetchone()[
            0
        ]
        == 25
    )
    ex.cleanup(tmp_path / "backups")
    assert list((tmp_path / "backups").glob("*.sql"))
    # Compatibility views under the old names, with the old column names.
    assert (
        db.execute("SELECT count(*) FROM content_generation_metadata_comprehensive WHERE topic IS NOT NULL").fetchone()[
            0
        ]
        > 0
    )
    assert (
        db.execute(
            "SELECT relkind FROM pg_class WHERE relname = 'tweets' AND relnamespace = 'public'::regnamespace"
        ).fetchone()[0]
        == "v"
    )
    # A row written to the new table after cleanup survives the rollback of cleanup.
    db.execute(
        "INSERT INTO content_queue (decision_id, content, decision_type) VALUES (gen_random_uuid(), 'late row', 'single')"
    )
    ex.rollback()
    assert db.execute("SELECT count(*) FROM content_metadata WHERE content = 'late row'").fetchone()[0] == 1
    assert (
        db.execute(
            "SELECT relkind FROM pg_class WHERE relname = 'tweets' AND relnamespace = 'public'::regnamespace"
        ).fetchone()[0]
        == "r"
    )
    phases = []
    while (phase := ex.status()["phase"]) != "none":
        phases.append(phase)
        ex.rollback()
    assert phases == ["switched", "verified", "backfilled", "created"]
    assert db.execute("SELECT to_regclass('public.content_queue')").fetchone()[0] is None
    after = counts(db, OLD_TABLES)
    after["content_metadata"] -= 1  # the late row, carried back
    assert after == before


def test_phases_refuse_to_run_out_of_order(dsn: str) -> None:
    result = migrate(dsn, "backfill")
    assert result.exit_code == 2
    assert "cannot run backfill: the migration is at 'none'" in result.stderr
    assert "dualshift migrate create" in result.stderr
    ex = executor(dsn, plan=None)
    ex.create()
    assert ex.create()["note"].startswith("already past create")  # idempotent: a second run changes nothing
    ex.backfill(BackfillOptions())
    with pytest.raises(ExecutorError, match="next step: dualshift migrate verify"):
        ex.switch_reads(10)
    assert ex.verify()["passed"]
    ex.conn.execute("UPDATE public.posted_content SET content = 'drifted' WHERE decision_id = md5('d4')::uuid")
    assert not ex.verify()["passed"]
    with pytest.raises(ExecutorError, match="the last verify did not pass"):
        ex.switch_reads(10)
    with pytest.raises(ExecutorError, match="the last verify did not pass"):
        ex.cleanup(None)
    ex.switch_reads(0)  # going back to 0 % is always allowed: it is the instant rollback


def test_two_executors_cannot_interleave(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        result = migrate(dsn, "create")
        assert result.exit_code == 2
        assert "another dualshift executor is running on this database" in result.stderr
    with psycopg.connect(dsn) as check:
        assert check.execute("SELECT to_regclass('public.content_queue')").fetchone()[0] is None


def test_dry_run_prints_the_sql_and_changes_nothing(dsn: str, db: psycopg.Connection) -> None:
    result = migrate(dsn, "--dry-run", "create")
    assert result.exit_code == 0, result.output
    assert 'CREATE TABLE "public"."content_queue"' in result.output
    assert 'UNIQUE ("tweet_id", "collected_at")' in result.output
    assert db.execute(
        "SELECT to_regclass('public.content_queue'), to_regclass('dualshift_private.state')"
    ).fetchone() == (
        None,
        None,
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('table = "posts"', 'table = "posts_typo"', "source public.posts_typo of posted_content: no such table"),
        (
            'rename = { text = "content", url = "tweet_url" }',
            'rename = { texte = "content", url = "tweet_url" }',
            "column texte named in the plan does not exist",
        ),
        ('key = ["tweet_id", "measured_at"]', 'key = ["tweet_id", "measured"]', "key column(s) measured do not exist"),
    ],
)
def test_bad_plans_are_rejected_before_any_sql(dsn: str, db: psycopg.Connection, tmp_path, old, new, message) -> None:
    text = PLAN.read_text()
    assert old in text
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace(old, new, 1))
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(bad), "create"])
    assert result.exit_code == 2
    assert message in result.stderr
    assert db.execute("SELECT to_regclass('dualshift_private.state')").fetchone()[0] is None


def test_a_table_name_with_a_quote_or_semicolon_never_reaches_the_database(dsn: str, tmp_path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(PLAN.read_text().replace('table = "posts"', 'table = "posts; DROP TABLE tweets"', 1))
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(bad), "create"])
    assert result.exit_code == 2 and "not a plain SQL identifier" in result.stderr
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.tweets')").fetchone()[0] is not None


def test_verify_names_a_single_planted_difference(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    ex = executor(dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    db.execute(
        "UPDATE engagement_metrics SET likes = likes + 1 WHERE tweet_id = 't42' AND collected_at = '2026-11-02 01:00+00'"
    )
    report_file = tmp_path / "parity.md"
    result = migrate(dsn, "verify", "--report", str(report_file))
    assert result.exit_code == 1
    assert '"tweet_id": "t42"' in result.output and '"likes": {"expected": 42, "new": 43}' in result.output
    assert "FAILED" in report_file.read_text()
    assert re.search(r"^\| engagement_metrics \| .* \| \d+ / 1 \|$", report_file.read_text(), re.MULTILINE)
    db.execute("DELETE FROM posted_content WHERE decision_id = md5('d2')::uuid")
    db.execute(
        "INSERT INTO content_queue (decision_id, content, decision_type) VALUES (gen_random_uuid(), 'stray', 'single')"
    )
    tables = {t["table"]: t for t in ex.verify()["tables"]}
    assert tables["posted_content"]["missing_rows"] == 1
    assert tables["content_queue"]["extra_rows"] == 1
    assert tables["engagement_metrics"]["mismatched_rows"] == 1


def test_verify_tells_null_from_empty_and_sees_jsonb(dsn: str, db: psycopg.Connection) -> None:
    ex = executor(dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    db.execute("UPDATE content_queue SET angle = '' WHERE decision_id = md5('d7')::uuid")
    db.execute("UPDATE content_metadata SET thread_parts = '[\"a\", \"b\"]' WHERE decision_id = md5('d8')::uuid")
    db.execute("UPDATE content_queue SET thread_parts = '[\"a\", \"c\"]' WHERE decision_id = md5('d8')::uuid")
    db.execute("UPDATE content_metadata SET angle = NULL WHERE decision_id = md5('d7')::uuid")
    queue = next(t for t in ex.verify()["tables"] if t["table"] == "content_queue")
    assert queue["mismatched_rows"] == 2


def test_backfill_resumes_from_its_checkpoint(dsn: str, db: psycopg.Connection) -> None:
    ex = executor(dsn)
    ex.create()
    partial = migrate(dsn, "backfill", "--batch-size", "500", "--max-batches", "1")
    assert partial.exit_code == 3  # incomplete
    assert 500 < db.execute("SELECT count(*) FROM content_queue").fetchone()[0] <= 1000  # one batch of each source
    checkpoint = db.execute(
        "SELECT rows_copied, done FROM dualshift_private.checkpoints WHERE source = 'content_metadata'"
    ).fetchone()
    assert checkpoint == (500, False)
    assert migrate(dsn, "backfill", "--batch-size", "500").exit_code == 0
    assert ex.verify()["passed"]


def test_a_second_backfill_replays_failed_writes(dsn: str, db: psycopg.Connection) -> None:
    ex = executor(dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    # The application deleted a row and updated another; the mirrored writes failed and were recorded.
    db.execute("DELETE FROM posts WHERE decision_id = md5('d1')::uuid")
    db.execute("UPDATE tweets SET text = 'edited' WHERE decision_id = md5('d3')::uuid")
    db.execute(
        "INSERT INTO dualshift.failed_writes (old_table, new_table, operation, error) VALUES"
        " ('posts', 'posted_content', 'delete', 'timeout'), ('tweets', 'posted_content', 'update', 'timeout')"
    )
    assert not ex.verify()["passed"]
    result = ex.backfill(BackfillOptions())
    assert result["tables"]["posted_content"]["stale_rows_removed"] == 1
    assert result["tables"]["posted_content"]["failed_writes_replayed"] == 2
    assert ex.verify()["passed"]
    assert db.execute("SELECT count(*) FROM dualshift.failed_writes WHERE replayed_at IS NULL").fetchone()[0] == 0


def test_writers_during_backfill_keep_parity(dsn: str, db: psycopg.Connection) -> None:
    """Application writers on loopback, writing old then new like the wrapper, while the backfill runs."""
    ex = executor(dsn)
    ex.create()
    stop = threading.Event()
    written: list[int] = []

    def writer(offset: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            i = 0
            while not stop.is_set() and i < 400:
                key = f"w{offset}-{i}"
                # Old table first; the mirror writes the row the old table returned (defaults included).
                row = conn.execute(
                    "INSERT INTO content_metadata (decision_id, content) VALUES (md5(%s)::uuid, %s)"
                    " RETURNING decision_id, content, decision_type, status, created_at, updated_at",
                    (key, "live " + key),
                ).fetchone()
                conn.execute(
                    "INSERT INTO content_queue (decision_id, content, decision_type, status, created_at, updated_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (decision_id) DO UPDATE SET content = EXCLUDED.content",
                    row,
                )
                target = f"d{(i * 7 + offset) % 3000}"
                conn.execute(
                    "UPDATE content_metadata SET status = 'ready' WHERE decision_id = md5(%s)::uuid", (target,)
                )
                conn.execute("UPDATE content_queue SET status = 'ready' WHERE decision_id = md5(%s)::uuid", (target,))
                written.append(1)
                i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    ex.backfill(BackfillOptions(batch_size=200))
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert written
    report = ex.verify()
    assert report["passed"], json.dumps(report["tables"], default=str)[:2000]


def test_backfill_over_keys_the_new_table_already_holds(dsn: str, db: psycopg.Connection) -> None:
    """Batches start as plain INSERTs; a key a dual write put in the new table first (here with a value the
    old row no longer has) makes that batch redo its copy with ON CONFLICT, and the first source's row wins."""
    ex = executor(dsn)
    ex.create()
    stale = ["d10", "d1500", "d2999"]
    for key in stale:
        db.execute(
            "INSERT INTO content_queue (decision_id, content, decision_type) VALUES (md5(%s)::uuid, 'stale dual write', 'single')",
            (key,),
        )
    ex.backfill(BackfillOptions(batch_size=700))
    kept = db.execute(
        "SELECT count(*) FROM content_queue q JOIN content_metadata m USING (decision_id)"
        " WHERE q.decision_id = ANY(ARRAY[md5('d10'), md5('d1500'), md5('d2999')]::uuid[]) AND q.content = m.content"
    ).fetchone()[0]
    assert kept == len(stale)
    assert db.execute("SELECT count(*) FROM content_queue WHERE content = 'stale dual write'").fetchone()[0] == 0
    assert ex.verify()["passed"]


def test_backfill_dry_run_prints_both_forms_of_a_batch(dsn: str) -> None:
    ex = executor(dsn)
    ex.create()
    result = migrate(dsn, "--dry-run", "backfill")
    first = result.output.index('INSERT INTO "public"."content_queue"')
    fallback = result.output.index("ON CONFLICT", first)
    assert "already holds one of its keys" in result.output[first:fallback]
