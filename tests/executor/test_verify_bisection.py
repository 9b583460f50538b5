"""verify compares hashed key ranges in the database and bisects the ones that differ down to the rows."""

from __future__ import annotations

import threading

import psycopg
import pytest

from dualshift.executor import verify
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import connect
from dualshift.executor.phases import Executor
from dualshift.plan import load_plan, parse_plan

from .conftest import PLAN

ONE_SOURCE = """
version = 1
name = "test-verify-bisection"
[[tables]]
name = "queue"
key = ["decision_id"]
columns = [
  { name = "decision_id", type = "uuid", nullable = false },
  { name = "content", type = "text", nullable = false },
  { name = "raw_topic", type = "text" },
  { name = "quality_score", type = "numeric(5,4)" },
]
  [[tables.sources]]
  table = "queue_old"
  key = ["decision_id"]
  rename = { topic = "raw_topic" }
  drop = ["id"]
[dependents]
"sequence public.queue_old_id_seq" = "archive"
"""

ROWS = 20_000


@pytest.fixture
def queue(dsn: str, db: psycopg.Connection) -> Executor:
    db.execute(
        "CREATE TABLE queue_old (id bigserial PRIMARY KEY, decision_id uuid UNIQUE NOT NULL, content text NOT NULL,"
        " topic text, quality_score numeric(5,4))"
    )
    db.execute(
        "INSERT INTO queue_old (decision_id, content, topic, quality_score) SELECT md5('q' || i)::uuid,"
        " 'post ' || i, 'topic ' || i %% 40, round(((i %% 97) / 100.0)::numeric, 4) FROM generate_series(1, %s) i",
        (ROWS,),
    )
    ex = Executor(connect(dsn), parse_plan(ONE_SOURCE, "one.toml"), dsn)
    ex.create()
    ex.backfill(BackfillOptions(batch_size=5000))
    return ex


def test_identical_tables_pass_on_their_whole_table_digests(queue: Executor) -> None:
    table = queue.verify()["tables"][0]
    assert (table["expected_rows"], table["new_rows"], table["mismatched_rows"]) == (ROWS, ROWS, 0)
    assert table["bisection"] == {"levels": 0, "ranges_compared": 0, "ranges_joined": 0}


def test_one_changed_value_is_bisected_down_to_its_row(
    queue: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "LEAF_ROWS", 50)  # 20k rows: 64 ranges of ~312, then ranges of ~5 rows
    db.execute("UPDATE queue SET raw_topic = 'planted' WHERE decision_id = md5('q12345')::uuid")
    table = queue.verify()["tables"][0]
    assert table["mismatched_rows"] == 1 and table["missing_rows"] == table["extra_rows"] == 0
    assert table["bisection"]["levels"] == 2 and table["bisection"]["ranges_joined"] == 1
    [sample] = table["samples"]
    assert sample["columns"] == {"raw_topic": {"expected": "topic 25", "new": "planted"}}


def test_two_rows_that_swapped_their_values_are_both_found(
    queue: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "LEAF_ROWS", 50)
    first, second = db.execute(
        "SELECT decision_id FROM queue ORDER BY decision_id OFFSET 5000 LIMIT 2"  # neighbours: one range
    ).fetchall()
    db.execute(
        "UPDATE queue q SET content = o.content, raw_topic = o.raw_topic, quality_score = o.quality_score"
        " FROM queue o WHERE (q.decision_id, o.decision_id) IN ((%s, %s), (%s, %s))",
        (first[0], second[0], second[0], first[0]),
    )
    table = queue.verify()["tables"][0]
    assert table["mismatched_rows"] == 2 and table["bisection"]["ranges_joined"] == 1


def test_a_missing_and_an_extra_row_are_found_in_their_ranges(
    queue: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "LEAF_ROWS", 50)
    db.execute("DELETE FROM queue WHERE decision_id = md5('q7')::uuid")
    db.execute("INSERT INTO queue (decision_id, content) VALUES (md5('stray')::uuid, 'not in any source')")
    # A numeric that prints differently but is equal in the new type is no difference.
    db.execute("UPDATE queue_old SET quality_score = 0.5 WHERE decision_id = md5('q8')::uuid")
    db.execute("UPDATE queue SET quality_score = 0.5000 WHERE decision_id = md5('q8')::uuid")
    table = queue.verify()["tables"][0]
    assert (table["missing_rows"], table["extra_rows"], table["mismatched_rows"]) == (1, 1, 0)
    assert table["bisection"]["ranges_joined"] <= 2
    problems = sorted(s["problem"] for s in table["samples"])
    assert problems == ["extra: in the new table, in no source", "missing from the new table"]


def test_when_most_ranges_differ_they_are_joined_at_once(queue: Executor, db: psycopg.Connection) -> None:
    db.execute("DELETE FROM queue WHERE (get_byte(uuid_send(decision_id), 15) % 4) = 0")  # a quarter, everywhere
    deleted = ROWS - db.execute("SELECT count(*) FROM queue").fetchone()[0]
    table = queue.verify()["tables"][0]
    assert table["missing_rows"] == deleted > ROWS // 5
    assert table["bisection"]["levels"] == 1  # no second level: cutting further would narrow nothing
    assert len(table["samples"]) == verify.SAMPLE


def test_composite_keys_are_bisected_with_row_comparisons(
    dsn: str, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "LEAF_ROWS", 20)
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    db.execute(
        "UPDATE engagement_metrics SET views = views + 5 WHERE tweet_id = 't42' AND collected_at = '2026-11-02 01:00+00'"
    )
    tables = {t["table"]: t for t in ex.verify()["tables"]}
    metrics = tables["engagement_metrics"]
    assert metrics["mismatched_rows"] == 1
    assert metrics["bisection"]["levels"] >= 2 and metrics["bisection"]["ranges_joined"] == 1
    assert metrics["samples"][0]["key"]["tweet_id"] == "t42"
    assert all(t["mismatched_rows"] == 0 for name, t in tables.items() if name != "engagement_metrics")


def test_verify_under_concurrent_writers_sees_one_snapshot(queue: Executor, dsn: str) -> None:
    """Writers commit old and new rows together while verify runs: every report must be of one
    consistent moment (the counts of both sides agree and it passes), however the writes interleave."""
    stop = threading.Event()
    written: list[int] = []

    def writer(offset: int) -> None:
        with psycopg.connect(dsn) as conn:
            for i in range(3000):
                if stop.is_set():
                    return
                with conn.transaction():
                    key = f"live-{offset}-{i}"
                    conn.execute(
                        "INSERT INTO queue_old (decision_id, content, topic) VALUES (md5(%s)::uuid, %s, 'live')",
                        (key, key),
                    )
                    conn.execute(
                        "INSERT INTO queue (decision_id, content, raw_topic) VALUES (md5(%s)::uuid, %s, 'live')",
                        (key, key),
                    )
                written.append(1)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        reports = [queue.verify()["tables"][0] for _ in range(3)]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert written
    for table in reports:
        assert table["expected_rows"] == table["new_rows"] >= ROWS
        assert (table["missing_rows"], table["extra_rows"], table["mismatched_rows"]) == (0, 0, 0)


def test_sampled_bounds_still_find_the_one_changed_value(
    queue: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "SAMPLED_ROWS", 1000)  # 20k rows: the first cut from a 5% TABLESAMPLE
    monkeypatch.setattr(verify, "LEAF_ROWS", 50)
    db.execute("UPDATE queue SET quality_score = quality_score + 0.0001 WHERE decision_id = md5('q4242')::uuid")
    table = queue.verify()["tables"][0]
    assert (table["missing_rows"], table["extra_rows"], table["mismatched_rows"]) == (0, 0, 1)
    assert table["bisection"]["levels"] >= 2 and table["bisection"]["ranges_joined"] == 1
    assert table["samples"][0]["key"] == {"decision_id": db.execute("SELECT md5('q4242')::uuid::text").fetchone()[0]}
