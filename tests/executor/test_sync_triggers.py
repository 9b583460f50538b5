"""`backfill --sync triggers`: writes of call sites not yet rewritten reach the new tables too."""

from __future__ import annotations

import psycopg
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor.connection import connect
from dualshift.executor.phases import Executor
from dualshift.plan import load_plan

from .conftest import PLAN


def _triggers(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_sync'").fetchone()[0]


def test_triggers_mirror_old_table_writes_and_go_away(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), "backfill", "--sync", "triggers"])
    assert result.exit_code == 0, result.output
    assert _triggers(db) == 9
    # Application writes straight to the old tables, with no wrapper in between:
    db.execute(
        "INSERT INTO content_metadata (decision_id, content) VALUES (md5('fresh')::uuid, 'written after backfill')"
    )
    db.execute("UPDATE content_metadata SET status = 'posting' WHERE decision_id = md5('d5')::uuid")
    db.execute("UPDATE tweets SET text = 'edited in place' WHERE decision_id = md5('d3')::uuid")
    db.execute("DELETE FROM posts WHERE decision_id = md5('d1')::uuid")
    db.execute(
        "INSERT INTO tweet_metrics (decision_id, tweet_id, like_count, measured_at) VALUES (md5('d1')::uuid, 't1', 99, '2026-11-05')"
    )
    # A write to a lower-precedence source never overwrites a key the first source holds.
    db.execute(
        "UPDATE content_generation_metadata_comprehensive SET content = 'twin edit' WHERE decision_id = md5('d999')::uuid"
    )
    assert (
        db.execute("SELECT content FROM content_queue WHERE decision_id = md5('d999')::uuid")
        .fetchone()[0]
        .startswith("post ")
    )
    report = ex.verify()
    assert report["passed"], [
        (t["table"], t["missing_rows"], t["extra_rows"], t["mismatched_rows"], t["samples"][:2])
        for t in report["tables"]
    ]
    ex.switch_reads(0)
    ex.cleanup(tmp_path)
    assert _triggers(db) == 0
    assert ex.rollback()["to"] == "verified"
    assert _triggers(db) == 9  # back with the old tables: the migration is where it was before cleanup
    ex.rollback()
    ex.rollback()  # backfilled → created: the triggers go
    assert _triggers(db) == 0
