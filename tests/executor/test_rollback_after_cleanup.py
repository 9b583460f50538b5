"""Rollback after cleanup is exact: until `finalize`, every write to the new tables reaches the archived
old table that owns the row, in the old types, so rolling cleanup back loses no insert, update or delete."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import ExecutorError, connect
from dualshift.executor.phases import Executor
from dualshift.plan import load_plan

from .conftest import PLAN
from .decisions import decided

ARCHIVE = "archive_xbot"


def cleaned(dsn: str, backups: Path, prepare: str | None = None) -> Executor:
    """The fixture migrated up to and including cleanup (with `prepare` run on the old tables first)."""
    if prepare:  # as the application would, in a session of its own (the executor's pins its search_path)
        with psycopg.connect(dsn, autocommit=True) as app:
            app.execute(prepare)
    ex = Executor(connect(dsn), decided(dsn, PLAN), dsn)  # a decision for each dependent `prepare` made
    ex.create()
    ex.backfill(BackfillOptions(), sync_triggers=True)
    assert ex.verify()["passed"]
    ex.switch_reads(100)
    ex.cleanup(backups)
    return ex


def one(db: psycopg.Connection, query: str, *params):
    return db.execute(query, params or None).fetchone()


def key(i: int | str) -> str:
    return one_uuid(f"d{i}")


def one_uuid(seed: str) -> str:
    return str(uuid.UUID(hashlib.md5(seed.encode()).hexdigest()))


# Writes made through plain SQL on the new tables after cleanup, and where each must land.
WRITES = [
    # content_queue: twins (content_metadata first, then its comprehensive copy).
    "INSERT INTO content_queue (decision_id, content, decision_type, raw_topic, predicted_er)"
    f" VALUES ('{one_uuid('new-1')}', 'written after cleanup', 'thread', 'naps', 0.1234)",
    f"UPDATE content_queue SET content = 'edited both', raw_topic = 'edited topic' WHERE decision_id = '{key(1000)}'",
    f"UPDATE content_queue SET content = 'edited comprehensive' WHERE decision_id = '{key(3500)}'",
    f"DELETE FROM content_queue WHERE decision_id = '{key(1001)}'",
    f"DELETE FROM content_queue WHERE decision_id = '{key(5)}'",
    # posted_content: partitions by source_table.
    "INSERT INTO posted_content (decision_id, tweet_id, content, tweet_url, source_table, posted_at)"
    f" VALUES ('{one_uuid('new-2')}', 'tnew2', 'new tweet', 'https://x.com/new2', 'tweets', '2026-12-01T10:00:00Z')",
    "INSERT INTO posted_content (decision_id, tweet_id, content, raw_topic, source_table)"
    f" VALUES ('{one_uuid('new-3')}', 'tnew3', 'new post', 'sleep', 'posts')",
    f"UPDATE posted_content SET content = 'edited tweet' WHERE decision_id = '{key(3)}'",
    f"UPDATE posted_content SET source_table = 'tweets', content = 'moved' WHERE decision_id = '{key(11)}'",
    f"DELETE FROM posted_content WHERE decision_id = '{key(2)}'",
    # engagement_metrics: partitions by data_source (outcomes owns the rest).
    "INSERT INTO engagement_metrics (decision_id, tweet_id, likes, views, collected_at, data_source)"
    f" VALUES ('{key(9)}', 't9', 77, 700, '2026-12-02T00:00:00Z', 'tweet_metrics')",
    "UPDATE engagement_metrics SET likes = 999, collected_at = '2026-12-03T00:00:00Z'"
    " WHERE tweet_id = 't10' AND data_source = 'tweet_metrics'",
    "DELETE FROM engagement_metrics WHERE tweet_id = 't4' AND collected_at = '2026-11-02T00:00:00Z'",
]


def assert_old_tables_hold_the_writes(db: psycopg.Connection, schema: str) -> None:
    """Each write above, read back from the old tables in `schema`, in their own column names and types."""
    q = lambda table: f'"{schema}"."{table}"'  # noqa: E731
    row = one(
        db,
        f"SELECT content, decision_type, raw_topic, predicted_er, id IS NOT NULL FROM {q('content_metadata')}"
        " WHERE decision_id = %s",
        one_uuid("new-1"),
    )
    assert row == (
        "written after cleanup",
        "thread",
        "naps",
        Decimal("0.1234"),
        True,
    )  # the first twin, id from its default
    assert (
        one(
            db,
            f"SELECT count(*) FROM {q('content_generation_metadata_comprehensive')} WHERE decision_id = %s",
            one_uuid("new-1"),
        )[0]
        == 0
    )
    # An update reaches every twin that holds the key, through its renames.
    assert one(db, f"SELECT content, raw_topic FROM {q('content_metadata')} WHERE decision_id = %s", key(1000)) == (
        "edited both",
        "edited topic",
    )
    assert one(
        db,
        f"SELECT content, topic FROM {q('content_generation_metadata_comprehensive')} WHERE decision_id = %s",
        key(1000),
    ) == ("edited both", "edited topic")
    assert one(
        db, f"SELECT content FROM {q('content_generation_metadata_comprehensive')} WHERE decision_id = %s", key(3500)
    ) == ("edited comprehensive",)
    for deleted in (1001, 5):
        for table in ("content_metadata", "content_generation_metadata_comprehensive"):
            assert one(db, f"SELECT count(*) FROM {q(table)} WHERE decision_id = %s", key(deleted))[0] == 0
    # Partitions: each row lands in the source its source_table names, cast back (text, url, timestamptz).
    assert one(
        db, f"SELECT tweet_id, text, url, posted_at::text FROM {q('tweets')} WHERE decision_id = %s", one_uuid("new-2")
    ) == (
        "tnew2",
        "new tweet",
        "https://x.com/new2",
        "2026-12-01 10:00:00+00",
    )
    assert one(db, f"SELECT tweet_id, content, topic FROM {q('posts')} WHERE decision_id = %s", one_uuid("new-3")) == (
        "tnew3",
        "new post",
        "sleep",
    )
    for other in ("posted_decisions", "tweets"):
        assert one(db, f"SELECT count(*) FROM {q(other)} WHERE decision_id = %s", one_uuid("new-3"))[0] == 0
    assert one(db, f"SELECT text FROM {q('tweets')} WHERE decision_id = %s", key(3)) == ("edited tweet",)
    # A row moved from one partition to another leaves the first and lands in the second.
    assert one(db, f"SELECT count(*) FROM {q('posts')} WHERE decision_id = %s", key(11))[0] == 0
    assert one(db, f"SELECT tweet_id, text FROM {q('tweets')} WHERE decision_id = %s", key(11)) == ("t11", "moved")
    assert one(db, f"SELECT count(*) FROM {q('posted_decisions')} WHERE decision_id = %s", key(2))[0] == 0
    assert one(
        db,
        f"SELECT like_count, view_count FROM {q('tweet_metrics')} WHERE tweet_id = 't9' AND measured_at = '2026-12-02'",
    ) == (77, 700)
    # A key change (collected_at → measured_at) updates the row in place: its id stays.
    assert one(db, f"SELECT like_count, measured_at::date::text FROM {q('tweet_metrics')} WHERE tweet_id = 't10'") == (
        999,
        "2026-12-03",
    )
    assert one(db, f"SELECT collected_at::text FROM {q('outcomes')} WHERE tweet_id = 't4'") == (
        "2026-11-02 01:00:00+00",
    )
    assert one(db, f"SELECT count(*) FROM {q('real_tweet_metrics')} WHERE tweet_id = 't4'")[0] == 2  # untouched


def test_writes_after_cleanup_land_in_the_right_old_table_and_survive_rollback(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    ex = cleaned(dsn, tmp_path / "backups")
    ids_before = dict(db.execute("SELECT decision_id::text, id FROM archive_xbot.tweets").fetchall())
    for statement in WRITES:
        assert db.execute(statement).rowcount == 1, statement
    assert_old_tables_hold_the_writes(db, ARCHIVE)  # kept in sync while cleaned
    assert one(db, "SELECT count(*) FROM dualshift.failed_writes")[0] == 0
    # The tweets row edited in place kept its old id (the column the new table does not have).
    assert one(db, "SELECT id FROM archive_xbot.tweets WHERE decision_id = %s", key(3))[0] == ids_before[key(3)]
    result = ex.rollback()
    assert result["to"] == "switched"
    assert_old_tables_hold_the_writes(db, "public")
    assert one(db, "SELECT relkind FROM pg_class WHERE oid = 'public.tweets'::regclass")[0] == "r"
    assert one(db, "SELECT to_regclass('archive_xbot.tweets')")[0] is None
    assert one(db, "SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_reverse_sync'")[0] == 0
    assert one(db, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'reverse_sync%'")[0] == 0
    # Back at 'switched' with old and new tables equal: verify passes and cleanup can run again.
    assert ex.verify()["passed"]
    ex.cleanup(tmp_path / "backups")
    assert_old_tables_hold_the_writes(db, ARCHIVE)


def test_old_columns_the_new_table_lacks_identity_and_generated_columns(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    prepare = (
        "ALTER TABLE tweets ADD COLUMN text_length integer GENERATED ALWAYS AS (length(text)) STORED;"
        "ALTER TABLE tweet_metrics ALTER COLUMN id DROP DEFAULT;"
        "ALTER TABLE tweet_metrics ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (START WITH 100000);"
        "ALTER TABLE posts ADD COLUMN legacy_flag text NOT NULL DEFAULT 'legacy';"
    )
    ex = cleaned(dsn, tmp_path / "backups", prepare)
    db.execute(
        "INSERT INTO posted_content (decision_id, tweet_id, content, source_table)"
        f" VALUES ('{one_uuid('g1')}', 'tg1', 'twelve chars', 'tweets'), ('{one_uuid('g2')}', 'tg2', 'p', 'posts')"
    )
    db.execute(f"UPDATE posted_content SET content = 'seven c' WHERE decision_id = '{one_uuid('g1')}'")
    db.execute(
        "INSERT INTO engagement_metrics (decision_id, tweet_id, likes, collected_at, data_source)"
        f" VALUES ('{key(1)}', 'tg3', 5, '2026-12-05', 'tweet_metrics')"
    )
    assert one(db, "SELECT count(*) FROM dualshift.failed_writes")[0] == 0
    ex.rollback()
    assert one(db, "SELECT text, text_length FROM tweets WHERE tweet_id = 'tg1'") == ("seven c", 7)
    assert one(db, "SELECT legacy_flag FROM posts WHERE tweet_id = 'tg2'") == ("legacy",)
    assert one(db, "SELECT id >= 100000, like_count FROM tweet_metrics WHERE tweet_id = 'tg3'") == (True, 5)


def test_a_failing_mirror_never_fails_the_write_and_rollback_refuses_until_repaired(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    ex = cleaned(dsn, tmp_path / "backups")
    db.execute("ALTER TABLE archive_xbot.tweets ADD CONSTRAINT no_spam CHECK (text <> 'spam')")
    db.execute(
        "INSERT INTO posted_content (decision_id, tweet_id, content, source_table)"
        f" VALUES ('{one_uuid('spam')}', 'tspam', 'spam', 'tweets')"
    )
    assert one(db, "SELECT count(*) FROM posted_content WHERE tweet_id = 'tspam'")[0] == 1  # the app's write stands
    failed = one(db, "SELECT old_table, new_table, operation, payload->>'content', error FROM dualshift.failed_writes")
    assert failed[:4] == ("public.tweets (archived in archive_xbot)", "posted_content", "insert", "spam")
    assert "no_spam" in failed[4]
    with pytest.raises(
        ExecutorError, match=r"1 write\(s\) to the new tables could not be mirrored.*Nothing was changed"
    ):
        ex.rollback()
    assert ex.status()["phase"] == "cleaned"
    assert one(db, "SELECT relkind FROM pg_class WHERE oid = 'public.tweets'::regclass")[0] == "v"
    # The operator repairs the archive and marks the record; the archive now misses nothing.
    db.execute("ALTER TABLE archive_xbot.tweets DROP CONSTRAINT no_spam")
    db.execute(
        "INSERT INTO archive_xbot.tweets (tweet_id, decision_id, text) SELECT tweet_id, decision_id, content"
        " FROM posted_content WHERE tweet_id = 'tspam'"
    )
    db.execute("UPDATE dualshift.failed_writes SET replayed_at = now()")
    assert ex.rollback()["to"] == "switched"
    assert one(db, "SELECT text FROM tweets WHERE tweet_id = 'tspam'") == ("spam",)


def test_rollback_refuses_when_the_archive_misses_rows(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    ex = cleaned(dsn, tmp_path / "backups")
    db.execute("ALTER TABLE content_queue DISABLE TRIGGER dualshift_reverse_sync")  # a write the mirror never saw
    db.execute(
        f"INSERT INTO content_queue (decision_id, content, decision_type) VALUES ('{one_uuid('x')}', 'unseen', 'single')"
    )
    db.execute("ALTER TABLE content_queue ENABLE TRIGGER dualshift_reverse_sync")
    with pytest.raises(ExecutorError, match=r"the archive in archive_xbot misses 1 row\(s\) of content_queue"):
        ex.rollback()
    assert ex.status()["phase"] == "cleaned"
    assert one(db, "SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_reverse_sync'")[0] == 3


def migrate(dsn: str, *args: str):
    return CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), *args])


def test_finalize_drops_the_archive_only_with_a_backup_and_ends_rollback(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    result = migrate(dsn, "finalize")
    assert result.exit_code == 2 and "cannot run finalize: the migration is at 'created'" in result.stderr
    ex.backfill(BackfillOptions(), sync_triggers=True)
    assert ex.verify()["passed"]
    ex.cleanup(tmp_path / "backups")
    (backup,) = (tmp_path / "backups").glob("*.sql")
    backup.rename(tmp_path / "moved.sql")
    result = migrate(dsn, "finalize")
    assert result.exit_code == 2
    assert "their backup is missing (the backup file" in result.stderr and "--no-backup-needed" in result.stderr
    assert one(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'archive_xbot'")[0] == 9
    (tmp_path / "moved.sql").rename(backup)
    result = migrate(dsn, "finalize")
    assert result.exit_code == 0, result.stderr
    assert one(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'archive_xbot'")[0] == 0
    assert one(db, "SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_reverse_sync'")[0] == 0
    db.execute(
        f"INSERT INTO content_queue (decision_id, content, decision_type) VALUES ('{one_uuid('f')}', 'after', 'single')"
    )
    assert ex.status()["phase"] == "finalized"
    result = migrate(dsn, "rollback")
    assert result.exit_code == 2 and "cannot roll back: the migration was finalized" in result.stderr
    assert "next step" not in result.stderr


def test_finalize_can_keep_the_archive(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    ex = cleaned(dsn, tmp_path / "backups")
    for path in (tmp_path / "backups").glob("*.sql"):
        path.unlink()
    result = ex.finalize(keep_archive=True)
    assert result["archive_kept"] and not result["archive_dropped"]
    assert one(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'archive_xbot'")[0] == 9
    assert one(db, "SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_reverse_sync'")[0] == 0


def test_each_step_tells_postgrest_to_reload(dsn: str, tmp_path) -> None:
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    ex.backfill(BackfillOptions(), sync_triggers=True)
    assert ex.verify()["passed"]
    ex.switch_reads(100)
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute("LISTEN pgrst")  # from here: cleanup and its rollback, one reload each
    ex.cleanup(tmp_path / "backups")
    ex.rollback()
    received = [n.payload for n in listener.notifies(timeout=2, stop_after=3)]
    assert received == ["reload schema", "reload schema"]
    listener.close()


def test_dependents_follow_the_rows_through_cleanup_and_back(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    pytest.importorskip("dualshift.executor.dependents")  # the views helper's module, merged with this work
    prepare = (
        "CREATE VIEW recent_tweets AS SELECT decision_id, text FROM tweets;"
        "CREATE TABLE tweet_notes (decision_id uuid REFERENCES posted_decisions (decision_id), note text);"
        f"INSERT INTO tweet_notes VALUES ('{key(0)}', 'kept')"
    )
    ex = cleaned(dsn, tmp_path / "backups", prepare)
    db.execute(
        "INSERT INTO posted_content (decision_id, tweet_id, content, source_table)"
        f" VALUES ('{one_uuid('dep')}', 'tdep', 'seen through the view', 'tweets')"
    )
    assert one(db, "SELECT text FROM recent_tweets WHERE decision_id = %s", one_uuid("dep")) == (
        "seen through the view",
    )
    referenced = (
        "SELECT confrelid::regclass::text FROM pg_constraint WHERE conrelid = 'tweet_notes'::regclass AND contype = 'f'"
    )
    assert one(db, referenced) == ("posted_content",)
    ex.rollback()
    assert one(db, referenced) == ("posted_decisions",)
    assert one(db, "SELECT text FROM recent_tweets WHERE decision_id = %s", one_uuid("dep")) == (
        "seen through the view",
    )
    assert one(db, "SELECT relkind FROM pg_class WHERE oid = 'public.tweets'::regclass") == ("r",)


@pytest.mark.parametrize(("command", "fault"), [("rollback", "rollback.committed"), ("finalize", "finalize.committed")])
def test_killed_right_after_its_commit_the_state_matches_the_catalog(
    dsn: str, db: psycopg.Connection, tmp_path, command: str, fault: str
) -> None:
    ex = cleaned(dsn, tmp_path / "backups")
    dualshift = Path(sys.executable).parent / "dualshift"
    killed = subprocess.run(
        [str(dualshift), "migrate", "--dsn", dsn, "--plan", str(PLAN), command],
        capture_output=True,
        env={**os.environ, "DUALSHIFT_FAULT": fault},
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL
    archived = one(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'archive_xbot'")[0]
    if command == "rollback":
        assert (ex.status()["phase"], archived) == ("switched", 0)
        assert one(db, "SELECT relkind FROM pg_class WHERE oid = 'public.tweets'::regclass") == ("r",)
    else:
        assert (ex.status()["phase"], archived) == ("finalized", 0)
        with pytest.raises(ExecutorError, match="finalized"):
            ex.rollback()


def test_an_application_role_without_rights_on_the_archive_is_mirrored(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    role = f"ds_app_{uuid.uuid4().hex[:8]}"
    ex = cleaned(dsn, tmp_path / "backups")
    db.execute(f'CREATE ROLE "{role}"')
    try:
        db.execute(
            f'GRANT USAGE ON SCHEMA public TO "{role}"; GRANT SELECT, INSERT, UPDATE ON content_queue TO "{role}"'
        )
        with db.transaction():
            db.execute(f'SET LOCAL ROLE "{role}"')
            db.execute(
                "INSERT INTO public.content_queue (decision_id, content, decision_type) VALUES (%s, 'by the app', 'single')",
                (one_uuid("app"),),
            )
            db.execute(
                "UPDATE public.content_queue SET content = 'edited by the app' WHERE decision_id = %s", (key(7),)
            )
        assert one(db, "SELECT count(*) FROM dualshift.failed_writes")[0] == 0
        assert one(db, "SELECT content FROM archive_xbot.content_metadata WHERE decision_id = %s", one_uuid("app")) == (
            "by the app",
        )
        ex.rollback()
        assert one(db, "SELECT content FROM content_metadata WHERE decision_id = %s", key(7)) == ("edited by the app",)
    finally:
        db.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
