"""`finalize` under contention: behind a long reader it gives up naming the reader and changes nothing,
and the application writing meanwhile waits on dualshift's locks for less than one lock timeout.

The application's lock waits are measured by the server (pg_stat_activity), so that CPU contention on
a shared machine does not count as a lock; the client-side stall is reported beside them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from dualshift.executor.connection import ExecutorError, Timeouts

from .test_rollback_after_cleanup import ARCHIVE, cleaned

LAST_VIEW = "public.tweet_metrics"  # the last compatibility view finalize locks: it holds all the others first


class Probe:
    """The application: a writer through the first compatibility view finalize locks, every 5 ms, with
    its longest lock wait (server-side) and its longest statement (client-side)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.writer = psycopg.connect(dsn, autocommit=True)
        self.stop = threading.Event()
        self.worst_lock_wait = 0.0
        self.worst_stall = 0.0
        self.writes = 0
        self.failures: list[str] = []

    def write(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.writer.execute(
                    "INSERT INTO public.content_metadata (decision_id, content, decision_type) VALUES (%s, %s, 'single')",
                    (str(uuid.uuid4()), f"probe {self.writes}"),
                )
                self.writes += 1
            except psycopg.Error as exc:
                self.failures.append(str(exc).splitlines()[0])
            self.worst_stall = max(self.worst_stall, time.monotonic() - started)
            time.sleep(0.005)

    def watch(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as monitor:
            while not self.stop.is_set():
                row = monitor.execute(
                    "SELECT extract(epoch FROM clock_timestamp() - query_start) FROM pg_stat_activity"
                    " WHERE pid = %s AND wait_event_type = 'Lock'",
                    (self.writer.info.backend_pid,),
                ).fetchone()
                if row:
                    self.worst_lock_wait = max(self.worst_lock_wait, float(row[0]))
                time.sleep(0.005)

    @contextmanager
    def running(self) -> Iterator[Probe]:
        threads = [threading.Thread(target=self.write), threading.Thread(target=self.watch)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.1)
            yield self
            time.sleep(0.1)
        finally:
            self.stop.set()
            for thread in threads:
                thread.join()
            self.writer.close()


def catalog(db: psycopg.Connection) -> tuple:
    """What finalize changes: archived tables, reverse-sync triggers, the views' defaults, the phase."""
    return (
        db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (ARCHIVE,)).fetchone()[0],
        db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_reverse_sync'").fetchone()[0],
        db.execute(
            "SELECT count(*) FROM pg_attrdef d JOIN pg_class c ON c.oid = d.adrelid WHERE c.relkind = 'v'"
        ).fetchone()[0],
        db.execute("SELECT phase FROM dualshift_private.state").fetchone()[0],
    )


def test_finalize_behind_a_long_reader_gives_up_names_it_and_changes_nothing(
    dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    ex = cleaned(dsn, tmp_path / "backups")
    before = catalog(db)
    reader = psycopg.connect(dsn)
    reader.execute(f"SELECT count(*) FROM {LAST_VIEW}")  # a long-running reader of the last view
    reader_pid = reader.info.backend_pid
    quick = Timeouts(lock_ms=200, lock_attempts=3, backoff_ms=50, backoff_max_ms=100)
    try:
        with Probe(dsn).running() as probe, pytest.raises(ExecutorError) as failure:
            ex.finalize(timeouts=quick)
    finally:
        reader.close()
    message = str(failure.value)
    assert message.startswith("finalize failed and changed nothing in the database; kept: everything as it was")
    assert "could not take its locks in 3 tries of 200 ms" in message, message
    assert f"waiting for {LAST_VIEW}, blocked by pid {reader_pid} (" in message, message
    assert f"s in transaction: 'SELECT count(*) FROM {LAST_VIEW}')" in message, message
    assert "\n" not in message
    assert catalog(db) == before
    assert probe.failures == [] and probe.writes > 0
    print(f"behind a reader that never ends: the writer's worst lock wait {probe.worst_lock_wait:.3f} s")
    # the writer waited behind the locks finalize held for less than one try's lock timeout
    assert probe.worst_lock_wait < quick.lock_ms / 1000, f"worst lock wait {probe.worst_lock_wait:.3f} s"
    ex.finalize(timeouts=quick)  # the reader is gone: it goes through
    assert catalog(db)[:2] == (0, 0)


def test_the_applications_worst_lock_wait_during_finalize_under_a_long_reader_and_a_writer(
    dsn: str, db: psycopg.Connection, tmp_path: Path
) -> None:
    """A reader holds the last view finalize locks for 1.5 s; finalize retries behind it (500 ms tries)
    and goes through once it ends; the writer never waits on a lock for as long as one try."""
    ex = cleaned(dsn, tmp_path / "backups")
    timeouts = Timeouts()
    reader = psycopg.connect(dsn)
    reader.execute(f"SELECT count(*) FROM {LAST_VIEW}")
    ender = threading.Timer(1.5, reader.commit)
    started = time.monotonic()
    with Probe(dsn).running() as probe:
        ender.start()
        result = ex.finalize(timeouts=timeouts)
        took = time.monotonic() - started
    ender.join()
    reader.close()
    print(
        f"finalize took {took:.2f} s behind a 1.5 s reader; the writer's worst lock wait"
        f" {probe.worst_lock_wait:.3f} s, worst statement {probe.worst_stall:.3f} s, {probe.writes} writes"
    )
    assert result["archive_dropped"] and catalog(db)[:2] == (0, 0)
    assert took > 1.4  # it did wait for the reader: retried, not queued behind it
    assert probe.failures == []
    assert probe.worst_lock_wait < timeouts.lock_ms / 1000, f"worst lock wait {probe.worst_lock_wait:.3f} s"
