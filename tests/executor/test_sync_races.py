"""Sync triggers and backfill under concurrent writers (READ COMMITTED, each writer its own connection).

Each test forces one interleaving: a transaction is held open at the point that matters, the other
writer is started and seen waiting on a lock, then the first commits. Afterwards `items` must hold,
for every key, the row of the first source that holds it.
"""

from __future__ import annotations

import random
import threading

import psycopg
import pytest

from dualshift.executor.backfill import BackfillOptions

from .sync_helpers import (
    Writer,
    actual,
    commit_once_blocked,
    executor,
    expected,
    install_triggers,
    items_database,
    items_plan,
    wait_until_blocked,
)


@pytest.fixture
def items(admin_dsn: str):
    with items_database(admin_dsn) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        yield dsn, conn


def _with_triggers(dsn: str):
    ex = executor(dsn, items_plan())
    ex.create()
    ex.backfill(BackfillOptions(), sync_triggers=True)
    return ex


def test_deleting_the_winning_row_hands_the_key_to_the_next_source_while_it_changes(items) -> None:
    dsn, db = items
    db.execute("INSERT INTO first_items VALUES (1, 'first'), (2, 'first only')")
    db.execute("INSERT INTO second_items VALUES (1, 'second'), (3, 'second only')")
    _with_triggers(dsn)
    assert actual(db) == expected(db)
    holder = psycopg.connect(dsn)
    holder.execute("UPDATE second_items SET value = 'second, edited' WHERE id = 1")  # its trigger holds key 1
    deleter = Writer(dsn, lambda c: c.execute("DELETE FROM first_items WHERE id = 1"))
    commit_once_blocked(db, holder, deleter)
    assert actual(db)[1] == ("second, edited", "second")
    db.execute("DELETE FROM second_items WHERE id = 3")
    assert actual(db) == expected(db)


def test_rekeying_the_winning_row_moves_it_and_hands_the_old_key_on(items) -> None:
    dsn, db = items
    db.execute("INSERT INTO first_items VALUES (1, 'first')")
    db.execute("INSERT INTO second_items VALUES (1, 'second'), (2, 'second at 2')")
    _with_triggers(dsn)
    holder = psycopg.connect(dsn)
    holder.execute("UPDATE first_items SET id = 2 WHERE id = 1")  # holds keys 1 and 2
    later = Writer(dsn, lambda c: c.execute("UPDATE second_items SET value = 'second at 2, edited' WHERE id = 2"))
    commit_once_blocked(db, holder, later)
    assert actual(db) == expected(db) == {1: ("second", "second"), 2: ("first", "first")}


def test_a_later_source_insert_that_waited_on_a_first_source_insert_does_not_overwrite_it(items) -> None:
    dsn, db = items
    _with_triggers(dsn)
    first = psycopg.connect(dsn)
    first.execute("INSERT INTO first_items VALUES (7, 'first')")  # mirrored, not yet committed
    second = Writer(dsn, lambda c: c.execute("INSERT INTO second_items VALUES (7, 'second')"))
    commit_once_blocked(db, first, second)
    assert actual(db) == expected(db) == {7: ("first", "first")}


def test_a_backfill_batch_that_waited_on_a_first_source_insert_does_not_overwrite_it(items) -> None:
    dsn, db = items
    db.execute("INSERT INTO second_items SELECT g, 'second' FROM generate_series(1, 50) g")
    ex = executor(dsn, items_plan())
    ex.create()
    install_triggers(ex)  # triggers on, nothing copied yet
    db.execute("UPDATE second_items SET value = 'second' WHERE id = 5")  # mirrored: batches must upsert
    assert actual(db) == {5: ("second", "second")}
    first = psycopg.connect(dsn)
    first.execute("INSERT INTO first_items VALUES (25, 'first')")  # mirrored, not yet committed
    plan = ex.plan
    backfill = Writer(dsn, lambda c: executor(dsn, plan).backfill(BackfillOptions(batch_size=10)))
    commit_once_blocked(db, first, backfill, application="dualshift")
    assert actual(db)[25] == ("first", "first")
    assert actual(db) == expected(db)


def test_a_first_source_insert_that_waited_on_a_backfill_batch_wins(items) -> None:
    dsn, db = items
    db.execute("INSERT INTO second_items SELECT g, 'second' FROM generate_series(1, 50) g")
    ex = executor(dsn, items_plan())
    ex.create()
    install_triggers(ex)
    # A dual write to key 26 holds the batch (1..50) after it took its keys' locks.
    wrapper = psycopg.connect(dsn)
    wrapper.execute("INSERT INTO items (id, value, origin) VALUES (26, 'dual write', 'second')")
    plan = ex.plan
    backfill = Writer(dsn, lambda c: executor(dsn, plan).backfill(BackfillOptions(batch_size=50)))
    backfill.start()
    assert wait_until_blocked(db, application="dualshift")
    inserter = Writer(dsn, lambda c: c.execute("INSERT INTO first_items VALUES (3, 'first')"))
    inserter.start()
    assert wait_until_blocked(db, inserter.pid)  # on the batch's lock of key 3
    wrapper.commit()
    backfill.finish()
    inserter.finish()
    wrapper.close()
    assert actual(db)[3] == ("first", "first")
    assert actual(db) == expected(db)


def test_racing_writers_and_a_backfill_end_with_the_first_source_winning_every_key(items) -> None:
    """Inserts, updates, deletes and re-keys on 40 hot keys in both sources, from four writers, while
    a backfill runs: afterwards every key holds what the rule says, and no write failed."""
    dsn, db = items
    db.execute("INSERT INTO first_items SELECT g, 'first' FROM generate_series(1, 40, 3) g")
    db.execute("INSERT INTO second_items SELECT g, 'second' FROM generate_series(1, 40, 2) g")
    ex = executor(dsn, items_plan())
    ex.create()
    install_triggers(ex)
    plan = ex.plan
    stop = threading.Event()

    def write(conn: psycopg.Connection, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            table = rng.choice(["first_items", "second_items"])
            key, other = rng.randint(1, 40), rng.randint(1, 40)
            statement = rng.choice(
                [
                    f"INSERT INTO {table} SELECT {key}, 'w{seed}' WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE id = {key})",
                    f"UPDATE {table} SET value = 'u{seed}' WHERE id = {key}",
                    f"DELETE FROM {table} WHERE id = {key}",
                    f"UPDATE {table} SET id = {other} WHERE id = {key}"
                    f" AND NOT EXISTS (SELECT 1 FROM {table} WHERE id = {other})",
                ]
            )
            with conn.transaction():
                conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")  # keeps each source's keys unique
                conn.execute(statement)
                if rng.random() < 0.3:
                    conn.execute("SELECT pg_sleep(0.005)")

    writers = [Writer(dsn, lambda c, seed=seed: write(c, seed)) for seed in range(4)]
    for writer in writers:
        writer.start()
    for _ in range(3):
        executor(dsn, plan).backfill(BackfillOptions(batch_size=5))
    stop.set()
    for writer in writers:
        writer.finish()
    assert db.execute("SELECT count(*) FROM dualshift.failed_writes").fetchone()[0] == 0
    assert actual(db) == expected(db)


WRITES = {
    "content_metadata": "INSERT INTO content_metadata (content) VALUES ('app')",
    "tweets": "INSERT INTO tweets (tweet_id, decision_id, text) VALUES (gen_random_uuid()::text, gen_random_uuid(), 'app')",
    "posts": "INSERT INTO posts (decision_id, tweet_id, content) VALUES (gen_random_uuid(), 't', 'app')",
    "tweet_metrics": "INSERT INTO tweet_metrics (decision_id, tweet_id) VALUES (gen_random_uuid(), gen_random_uuid()::text)",
}


def test_installing_triggers_while_the_app_writes_to_several_old_tables_fails_no_write(dsn: str) -> None:
    from dualshift.executor.connection import connect
    from dualshift.executor.phases import Executor
    from dualshift.plan import load_plan

    from .conftest import PLAN

    stop = threading.Event()
    failures: list[str] = []
    committed = [0]

    def write(conn: psycopg.Connection, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            tables = rng.sample(sorted(WRITES), 3)  # several tables per transaction, in any order
            try:
                with conn.transaction():
                    for table in tables:
                        conn.execute(WRITES[table])
                        conn.execute("SELECT pg_sleep(0.02)")
                committed[0] += 1
            except psycopg.Error as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    writers = [Writer(dsn, lambda c, seed=seed: write(c, seed)) for seed in range(4)]
    for writer in writers:
        writer.start()
    try:
        for _ in range(3):  # each run drops and creates every trigger again
            result = ex.backfill(BackfillOptions(batch_size=1, max_batches=1), sync_triggers=True)
            assert len(result["sync_triggers"]) == 9
    finally:
        stop.set()
        for writer in writers:
            writer.finish()
    assert failures == []
    assert committed[0] > 0
    with psycopg.connect(dsn, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM dualshift.failed_writes").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_sync'").fetchone()[0] == 9
