"""A backfill killed mid-run, and who may read what once the new tables and views exist."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import connect
from dualshift.executor.phases import Executor
from dualshift.plan import load_plan

from .conftest import PLAN

DUALSHIFT = Path(sys.executable).parent / "dualshift"


def test_backfill_killed_with_sigkill_resumes_and_parity_holds(dsn: str, db: psycopg.Connection) -> None:
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    command = [
        str(DUALSHIFT),
        "migrate",
        "--dsn",
        dsn,
        "--plan",
        str(PLAN),
        "backfill",
        "--batch-size",
        "100",
        "--max-rows-per-s",
        "1500",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    copied = 0
    while time.monotonic() < deadline and copied < 600:  # let a few batches commit
        time.sleep(0.2)
        copied = db.execute("SELECT coalesce(sum(rows_copied), 0) FROM dualshift_private.checkpoints").fetchone()[0]
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert copied > 0
    unfinished = db.execute("SELECT count(*) FROM dualshift_private.checkpoints WHERE NOT done").fetchone()[0]
    assert unfinished >= 1  # it really died mid-way
    resumed = subprocess.run([*command[:-4], "--batch-size", "1000"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert ex.verify()["passed"]


@pytest.fixture
def roles(admin_dsn: str):
    """Two roles of our own (roles are cluster-wide): one may read the content tables only."""
    names = {kind: f"ds_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("reader", "outsider")}
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    yield names
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _can_read(db: psycopg.Connection, role: str, relation: str) -> bool:
    return db.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (role, relation)).fetchone()[0]


def _reads(db: psycopg.Connection, role: str, relation: str) -> bool:
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        try:
            with db.transaction():
                db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(relation))).fetchone()
            return True
        except psycopg.errors.InsufficientPrivilege:
            return False


def test_no_role_gains_access_through_new_tables_or_views(roles, dsn: str, db: psycopg.Connection, tmp_path) -> None:
    reader, outsider = roles["reader"], roles["outsider"]
    db.execute(
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(sql.Identifier(reader), sql.Identifier(outsider))
    )
    db.execute(
        sql.SQL("GRANT SELECT ON content_metadata, content_generation_metadata_comprehensive, tweets TO {}").format(
            sql.Identifier(reader)
        )
    )
    db.execute("ALTER TABLE posted_decisions ENABLE ROW LEVEL SECURITY")
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    assert _can_read(db, reader, "content_queue")  # it could read both content sources
    assert not _can_read(db, reader, "posted_content")  # it could read tweets, not posted_decisions or posts
    assert not _can_read(db, outsider, "content_queue")
    assert db.execute("SELECT relrowsecurity FROM pg_class WHERE relname = 'posted_content'").fetchone()[0]
    ex.backfill(BackfillOptions())
    assert ex.verify()["passed"]
    ex.cleanup(tmp_path)
    assert _reads(db, reader, "content_metadata")  # the compatibility view, over content_queue
    assert not _reads(db, outsider, "content_metadata")
    assert not _reads(db, reader, "posted_content")
    # Through the old names, each role keeps exactly what it had: the reader still reads tweets (not every
    # source of posted_content grants it, so the new table does not), the outsider still reads nothing.
    assert _reads(db, reader, "tweets")
    assert not _reads(db, reader, "posted_decisions")
    assert not _reads(db, outsider, "tweets")


def test_lock_retries_wait_out_a_short_blocker_and_name_a_long_one(dsn: str) -> None:
    import threading

    from dualshift.executor.connection import ExecutorError, Timeouts, with_lock_retries

    quick = Timeouts(lock_ms=50, lock_attempts=6, backoff_ms=20, backoff_max_ms=200)
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE public.tweets IN ACCESS SHARE MODE")  # a long-running reader
    conn = connect(dsn)
    take = lambda: conn.execute("LOCK TABLE public.tweets IN ACCESS EXCLUSIVE MODE") and "locked"  # noqa: E731
    with pytest.raises(ExecutorError, match=r"could not take its locks in 6 tries of 50 ms.*pid \d+"):
        with_lock_retries(conn, take, "cleanup", ["public.tweets"], quick)
    threading.Timer(0.15, holder.rollback).start()  # the reader ends while dualshift backs off
    assert with_lock_retries(conn, take, "cleanup", ["public.tweets"], quick) == "locked"
    holder.close()
