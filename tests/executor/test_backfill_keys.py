"""Keys the backfill cannot copy one-to-one (shared by two rows of a source, or with a NULL part) are
refused before anything is copied, or, when asked, resolved the same way every time and counted.
And `timestamp` values are read in the plan's time zone, whoever writes them."""

from __future__ import annotations

import psycopg
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import ExecutorError

from .sync_helpers import actual, executor, expected, install_triggers, items_database, items_plan


@pytest.fixture
def items(admin_dsn: str):
    with items_database(admin_dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        yield dsn, conn


def _checkpoints(db: psycopg.Connection) -> int:
    return db.execute("SELECT coalesce(sum(rows_copied), 0) FROM dualshift_private.checkpoints").fetchone()[0]


def test_five_keys_shared_by_220_rows_are_refused_with_batch_size_one(items) -> None:
    dsn, db = items
    db.execute("INSERT INTO first_items SELECT g % 5, 'team ' || g FROM generate_series(1, 220) g")
    ex = executor(dsn, items_plan())
    ex.create()
    with pytest.raises(ExecutorError) as refused:
        ex.backfill(BackfillOptions(batch_size=1))
    message = str(refused.value)
    assert "\n" not in message
    assert "public.first_items (key id) → items: 5 key(s) are held by 220 rows, e.g. [0], [1], [2], [3], [4]" in message
    assert "nothing was copied" in message
    assert actual(db) == {} and _checkpoints(db) == 0


def test_a_duplicate_on_a_batch_boundary_is_refused_through_the_cli(items, tmp_path) -> None:
    dsn, db = items
    db.execute("INSERT INTO first_items SELECT g, 'row ' || g FROM generate_series(1, 10) g")
    db.execute("INSERT INTO first_items VALUES (5, 'row 5, again')")  # rows 5 and 5 straddle batches of 5
    db.execute("INSERT INTO second_items VALUES (NULL, 'no key')")
    plan_path = tmp_path / "items.toml"
    plan = items_plan(str(plan_path))
    from .sync_helpers import PLAN

    plan_path.write_text(PLAN.format(name=plan.name, timezone="UTC", first="first_items", second="second_items"))
    executor(dsn, plan).create()
    result = CliRunner().invoke(
        app, ["migrate", "--dsn", dsn, "--plan", str(plan_path), "backfill", "--batch-size", "5"]
    )
    assert result.exit_code != 0
    assert "first_items (key id) → items: 1 key(s) are held by 2 rows, e.g. [5]" in result.output
    assert "second_items (key id) → items: 1 row(s) have a NULL key part, e.g. [null]" in result.output
    assert "Traceback" not in result.output and "cannot affect row a second time" not in result.output
    assert actual(db) == {}


def test_null_key_parts_are_refused_even_when_duplicates_are_allowed(items) -> None:
    dsn, db = items
    db.execute(
        "INSERT INTO first_items SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE g END, 'v' FROM generate_series(1, 1000) g"
    )
    ex = executor(dsn, items_plan())
    ex.create()
    with pytest.raises(ExecutorError, match=r"first_items \(key id\) → items: 100 row\(s\) have a NULL key part"):
        ex.backfill(BackfillOptions(batch_size=100, on_duplicate_key="first"))
    assert actual(db) == {}


def test_on_duplicate_key_first_keeps_each_keys_first_row_and_counts_the_rest(items) -> None:
    dsn, db = items
    db.execute("INSERT INTO first_items SELECT g % 5, 'team ' || g FROM generate_series(1, 220) g")
    db.execute("INSERT INTO second_items SELECT g, 'second ' || g FROM generate_series(3, 8) g")
    db.execute("INSERT INTO second_items VALUES (7, 'second 7, again')")
    ex = executor(dsn, items_plan())
    ex.create()
    install_triggers(ex)
    db.execute("UPDATE second_items SET value = 'second 8' WHERE id = 8")  # a mirrored key: batches upsert
    for batch_size in (1, 7, 1000):
        result = ex.backfill(BackfillOptions(batch_size=batch_size, on_duplicate_key="first"))
        assert result["tables"]["items"]["duplicate_key_rows_left_out"] == 215 + 1
        first_rows = dict(db.execute("SELECT DISTINCT ON (id) id, value FROM first_items ORDER BY id, ctid").fetchall())
        assert {k: v for k, (v, origin) in actual(db).items() if origin == "first"} == first_rows
        assert actual(db)[7] == ("second 7", "second")
        assert set(actual(db)) == set(expected(db))


def test_timestamps_are_read_in_the_plans_time_zone_by_backfill_and_trigger_alike(admin_dsn: str) -> None:
    with items_database(admin_dsn) as dsn, psycopg.connect(dsn, autocommit=True) as db:
        db.execute("INSERT INTO first_items VALUES (1, 'copied by the backfill', '2026-01-15 12:00:00')")
        ex = executor(dsn, items_plan(timezone="America/New_York"))
        ex.create()
        ex.backfill(BackfillOptions(), sync_triggers=True)
        with psycopg.connect(dsn, autocommit=True) as writer:
            writer.execute("SET TimeZone = 'Asia/Tokyo'")
            writer.execute("INSERT INTO first_items VALUES (2, 'mirrored by the trigger', '2026-01-15 12:00:00')")
            writer.execute("UPDATE first_items SET value = 'edited in Tokyo' WHERE id = 1")
        db.execute("SET TimeZone = 'UTC'")
        stored = dict(db.execute("SELECT id, updated_at::text FROM items ORDER BY id").fetchall())
        assert stored == {1: "2026-01-15 17:00:00+00", 2: "2026-01-15 17:00:00+00"}
