"""verify --incremental: only the keys written since the last passing verify, found by change capture."""

from __future__ import annotations

import uuid

import psycopg

from dualshift.executor import changes
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import connect
from dualshift.executor.phases import Executor
from dualshift.plan import load_plan, parse_plan

from . import test_verify_bisection
from .conftest import PLAN
from .test_phases import migrate
from .test_verify_bisection import ROWS

queue = test_verify_bisection.queue  # the fixture: one source of ROWS rows, backfilled


def _scans(ex: Executor, db: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """(rows read by sequential scans, idx_scan) of the old and the new table, once verify's session has
    flushed its counters. Rows, not scans: the executor's catalog check before every phase reads one row
    of the new table (`LIMIT 1`) to see whether it holds any."""
    ex.conn.execute("SELECT pg_stat_force_next_flush()")
    ex.conn.execute("SELECT 1")  # the flush happens as the session goes idle
    db.execute("SELECT pg_stat_clear_snapshot()")
    rows = db.execute(
        "SELECT relname, seq_tup_read, coalesce(idx_scan, 0) FROM pg_stat_user_tables"
        " WHERE relname IN ('queue', 'queue_old')"
    ).fetchall()
    return {name: (seq, idx) for name, seq, idx in rows}


def _write_like_the_application(db: psycopg.Connection, count: int) -> None:
    for i in range(count):
        key = f"app-{i}"
        db.execute("INSERT INTO queue_old (decision_id, content, topic) VALUES (md5(%s)::uuid, %s, 'app')", (key, key))
        db.execute("INSERT INTO queue (decision_id, content, raw_topic) VALUES (md5(%s)::uuid, %s, 'app')", (key, key))


def test_incremental_checks_only_the_changed_keys_and_finds_a_planted_difference(
    queue: Executor, db: psycopg.Connection
) -> None:
    assert queue.verify()["passed"]  # a full verify switches the capture on and sets the watermark
    _write_like_the_application(db, 5)
    db.execute("UPDATE queue SET raw_topic = 'planted' WHERE decision_id = md5('q777')::uuid")
    before = _scans(queue, db)
    report = queue.verify(incremental=True)
    after = _scans(queue, db)
    table = report["tables"][0]
    assert table["incremental"] == {"keys": 6}
    assert (table["missing_rows"], table["extra_rows"], table["mismatched_rows"]) == (0, 0, 1)
    assert table["samples"][0]["columns"] == {"raw_topic": {"expected": "topic 17", "new": "planted"}}
    for name in ("queue", "queue_old"):  # read through the key indexes only, never a whole table
        assert after[name][0] - before[name][0] <= 1, (name, before, after)
        assert after[name][1] > before[name][1]


def test_a_failed_incremental_keeps_its_keys_until_one_passes(queue: Executor, db: psycopg.Connection) -> None:
    assert queue.verify()["passed"]
    db.execute("DELETE FROM queue WHERE decision_id = md5('q5')::uuid")  # lost by the new table
    assert queue.verify(incremental=True)["tables"][0]["missing_rows"] == 1
    assert queue.verify(incremental=True)["tables"][0]["missing_rows"] == 1  # still pending: not verified yet
    db.execute(
        "INSERT INTO queue (decision_id, content, raw_topic, quality_score)"
        " SELECT decision_id, content, topic, quality_score FROM queue_old WHERE decision_id = md5('q5')::uuid"
    )
    passing = queue.verify(incremental=True)
    assert passing["passed"] and passing["tables"][0]["incremental"] == {"keys": 1}
    assert queue.verify(incremental=True)["tables"][0]["incremental"] == {"keys": 0}


def test_incremental_falls_back_to_a_full_verify_without_capture(queue: Executor, db: psycopg.Connection) -> None:
    first = queue.verify(incremental=True)  # no watermark yet
    assert first["passed"] and "fallback" in first["tables"][0]["incremental"]
    assert first["tables"][0]["expected_rows"] == ROWS
    for statement in changes.remove_statements(db, queue.plan):
        db.execute(statement)
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'dualshift_capture%'").fetchone()[0] == 0
    db.execute("UPDATE queue SET raw_topic = 'unseen' WHERE decision_id = md5('q9')::uuid")  # nobody captured it
    report = queue.verify(incremental=True)
    table = report["tables"][0]
    assert "fallback" in table["incremental"] and table["mismatched_rows"] == 1


def test_a_capture_failure_never_fails_the_application_and_forces_a_full_verify(
    dsn: str, db: psycopg.Connection
) -> None:
    db.execute("CREATE TABLE origin (id text PRIMARY KEY, note text)")
    db.execute("INSERT INTO origin SELECT md5('o' || i)::uuid::text, 'n' FROM generate_series(1, 300) i")
    plan = parse_plan(
        """
version = 1
name = "test-capture-failure"
[[tables]]
name = "target"
key = ["id"]
columns = [{ name = "id", type = "uuid", nullable = false }, { name = "note", type = "text" }]
  [[tables.sources]]
  table = "origin"
  key = ["id"]
""",
        "plan.toml",
    )
    ex = Executor(connect(dsn), plan, dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    assert ex.verify()["passed"]
    app = f"app_{uuid.uuid4().hex[:12]}"
    db.execute(f"CREATE ROLE {app}")
    try:
        db.execute(f"GRANT INSERT ON origin TO {app}")
        db.execute(f"SET ROLE {app}")  # no right on dualshift_private: the capture runs as its owner
        db.execute("INSERT INTO origin VALUES ('not-a-uuid', 'x')")  # the capture cannot map this key
        db.execute("RESET ROLE")
    finally:
        db.execute("RESET ROLE")
        db.execute(f"DROP OWNED BY {app}; DROP ROLE {app}")
    report = ex.verify(incremental=True)
    table = report["tables"][0]
    assert "fallback" in table["incremental"]
    assert not report["passed"] and table["missing_rows"] == 1


def test_migrate_verify_incremental_on_the_fixture_plan(dsn: str, db: psycopg.Connection) -> None:
    """Nine sources, precedence between twins, composite keys: the CLI option, end to end."""
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    assert migrate(dsn, "verify").exit_code == 0
    db.execute(
        "UPDATE engagement_metrics SET likes = likes + 1 WHERE tweet_id = 't42' AND collected_at = '2026-11-02 01:00+00'"
    )
    edited = db.execute("SELECT decision_id FROM content_metadata ORDER BY id LIMIT 1").fetchone()[0]
    db.execute("UPDATE content_metadata SET content = 'edited in the old table' WHERE decision_id = %s", (edited,))
    result = migrate(dsn, "verify", "--incremental")
    assert result.exit_code == 1, result.output
    assert '"tweet_id": "t42"' in result.output and '"likes": {"expected": 42, "new": 43}' in result.output
    assert "edited in the old table" in result.output
    tables = {t["table"]: t for t in ex.verify(incremental=True)["tables"]}
    assert tables["engagement_metrics"]["incremental"] == {"keys": 1}
    assert tables["content_queue"]["incremental"] == {"keys": 1}
    assert tables["posted_content"]["incremental"] == {"keys": 0}
    assert (tables["engagement_metrics"]["mismatched_rows"], tables["content_queue"]["mismatched_rows"]) == (1, 1)
