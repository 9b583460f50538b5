"""Cleanup has no window: the backup runs first with the sync triggers on, the move is one transaction.

Application writers insert, update and delete on the old tables the whole time (their own connection,
every committed write in a Python ledger); cleanup is killed with SIGKILL at each of its fault points,
then re-run or rolled back, and every ledger row is checked with plain SQL where it must be.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from dualshift.executor import cleanup
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import ExecutorError, Timeouts, connect
from dualshift.executor.phases import Executor
from dualshift.plan import load_plan

from .conftest import PLAN

DUALSHIFT = Path(sys.executable).parent / "dualshift"
OLD_TABLES = [s.table for t in load_plan(PLAN).tables for s in t.sources]


class Writers(threading.Thread):
    """An application writing to `content_metadata` by its name (a table, then a view, then a table
    again) through its own connection; `ledger` holds every committed write: key → content or None."""

    def __init__(self, dsn: str, ledger: dict[str, str | None]) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.ledger = ledger
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.writes = 0
        self.random = random.Random(len(ledger))

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.write_once()
            except psycopg.Error as exc:
                self.failures.append(str(exc).splitlines()[0])
            time.sleep(0.002)
        self.conn.close()

    def write_once(self) -> None:
        live = [k for k, v in self.ledger.items() if v is not None]
        choice = self.random.random()
        content = f"w{self.writes}"
        if choice < 0.4 or not live:
            key = str(uuid.uuid4())
            self.conn.execute(
                "INSERT INTO public.content_metadata (decision_id, content, decision_type) VALUES (%s, %s, 'single')",
                (key, content),
            )
            self.ledger[key] = content
        elif choice < 0.8:
            key = self.random.choice(live)
            cur = self.conn.execute(
                "UPDATE public.content_metadata SET content = %s WHERE decision_id = %s", (content, key)
            )
            assert cur.rowcount == 1, key
            self.ledger[key] = content
        else:
            key = self.random.choice(live)
            cur = self.conn.execute("DELETE FROM public.content_metadata WHERE decision_id = %s", (key,))
            assert cur.rowcount == 1, key
            self.ledger[key] = None
        self.writes += 1

    def wait_for(self, writes: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.writes < writes and not self.failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.writes >= writes or self.failures, f"only {self.writes} writes in {seconds} s"

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=30)
        assert self.failures == []  # no application write failed because of dualshift


def sample_ledger(db: psycopg.Connection) -> dict[str, str | None]:
    """Keys only content_metadata holds (its comprehensive twin starts at d900), with their content."""
    rows = db.execute(
        "SELECT decision_id::text, content FROM content_metadata WHERE decision_id IN"
        " (SELECT md5('d' || i)::uuid FROM generate_series(0, 899) i)"
    ).fetchall()
    return dict(rows)


def wrong_rows(db: psycopg.Connection, relation: str, ledger: dict[str, str | None]) -> int:
    """Ledger rows that `relation` does not hold as the ledger says (present with that content, or absent)."""
    keys, contents = list(ledger), list(ledger.values())
    return db.execute(
        f"SELECT count(*) FROM unnest(%s::uuid[], %s::text[]) AS l(k, content)"
        f" LEFT JOIN {relation} r ON r.decision_id = l.k"
        " WHERE r.content IS DISTINCT FROM l.content",
        (keys, contents),
    ).fetchone()[0]


def phase(db: psycopg.Connection) -> str:
    dsn = db.info.dsn
    return Executor(db, load_plan(PLAN), dsn).status()["phase"]


def sync_triggers(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_sync'").fetchone()[0]


def migrate_cli(dsn: str, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DUALSHIFT_FAULT"}
    if fault:
        env["DUALSHIFT_FAULT"] = fault
    return subprocess.run(
        [str(DUALSHIFT), "migrate", "--dsn", dsn, "--plan", str(PLAN), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def switched(dsn: str) -> Executor:
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    ex.backfill(BackfillOptions(), sync_triggers=True)
    assert ex.verify()["passed"]
    ex.switch_reads(50)
    return ex


def run_with_writers(dsn: str, ledger: dict, action=None, writes_each_side: int = 15):
    """`action` with the writers running: at least `writes_each_side` committed writes before and after."""
    writers = Writers(dsn, ledger)
    writers.start()
    writers.wait_for(writes_each_side)
    result = action() if action else None
    writers.wait_for(writers.writes + writes_each_side)
    writers.finish()
    return result


@pytest.mark.parametrize("fault", ["cleanup.backup_written", "cleanup.committed"])
def test_cleanup_killed_at_each_point_loses_no_write(dsn: str, db: psycopg.Connection, tmp_path, fault: str) -> None:
    switched(dsn)
    backups = tmp_path / "backups"
    ledger = sample_ledger(db)
    killed = run_with_writers(
        dsn, ledger, lambda: migrate_cli(dsn, "cleanup", "--backup-dir", str(backups), fault=fault)
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (backup,) = backups.glob("*.sql")  # written before the kill, whole (renamed from .partial when complete)
    assert "COPY public.content_metadata" in backup.read_text()
    if fault == "cleanup.backup_written":
        # Nothing moved: the old tables in place, every sync trigger on, the new table in sync.
        assert phase(db) == "switched"
        assert sync_triggers(db) == 9
        assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'archive_xbot'").fetchone()[0] == 0
        assert wrong_rows(db, "public.content_metadata", ledger) == 0
        assert wrong_rows(db, "public.content_queue", ledger) == 0
        again = run_with_writers(dsn, ledger, lambda: migrate_cli(dsn, "cleanup", "--backup-dir", str(backups)))
        assert again.returncode == 0, again.stderr
    else:
        again = migrate_cli(dsn, "cleanup", "--backup-dir", str(backups))
        assert again.returncode == 0 and "already cleaned up" in again.stdout
        run_with_writers(dsn, ledger)  # writes through the view under the old name
    assert phase(db) == "cleaned"
    assert sync_triggers(db) == 0
    assert (
        db.execute("SELECT relkind FROM pg_class WHERE oid = 'public.content_metadata'::regclass").fetchone()[0] == "v"
    )
    # Every write, before, during and after the move: in the new table and (reverse sync) in the archive.
    assert wrong_rows(db, "public.content_queue", ledger) == 0
    assert wrong_rows(db, "archive_xbot.content_metadata", ledger) == 0
    rolled = run_with_writers(dsn, ledger, lambda: migrate_cli(dsn, "rollback"))
    assert rolled.returncode == 0, rolled.stderr
    assert phase(db) == "switched"
    assert (
        db.execute("SELECT relkind FROM pg_class WHERE oid = 'public.content_metadata'::regclass").fetchone()[0] == "r"
    )
    assert wrong_rows(db, "public.content_metadata", ledger) == 0
    assert sum(v is None for v in ledger.values()) > 0 and len(ledger) > 900  # deletes and inserts were made


def test_a_lock_timeout_changes_nothing_and_names_the_blocker(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    ex = switched(dsn)
    reader = psycopg.connect(dsn)
    reader.execute("SELECT count(*) FROM public.tweets")  # a long-running reader: ACCESS SHARE on the last old table
    reader_pid = reader.info.backend_pid
    probe = psycopg.connect(dsn, autocommit=True)
    worst = 0.0

    def probe_loop(stop: threading.Event) -> None:  # the application reading a table nobody else holds
        nonlocal worst
        while not stop.is_set():
            started = time.monotonic()
            probe.execute("SELECT count(*) FROM public.content_metadata WHERE decision_id = md5('d1')::uuid")
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.005)

    stop = threading.Event()
    prober = threading.Thread(target=probe_loop, args=(stop,))
    prober.start()
    quick = Timeouts(lock_ms=200, lock_attempts=3, backoff_ms=50, backoff_max_ms=100)
    try:
        with pytest.raises(ExecutorError) as failure:
            ex.cleanup(tmp_path / "backups", quick)
    finally:
        stop.set()
        prober.join()
        reader.close()
        probe.close()
    message = str(failure.value)
    assert "cleanup failed and changed nothing in the database" in message
    assert f"pid {reader_pid}" in message and "SELECT count(*) FROM public.tweets" in message
    (backup,) = (tmp_path / "backups").glob("*.sql")
    assert f"kept: the backup file {backup}" in message
    assert worst < 0.6  # we held the other locks at most one lock timeout (200 ms) per try
    assert phase(db) == "switched"
    assert sync_triggers(db) == 9
    for table in OLD_TABLES:
        assert (
            db.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (f"public.{table}",)).fetchone()[0]
            == "r"
        )
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'archive_xbot'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'dualshift_reverse_sync'").fetchone()[0] == 0
    ex.cleanup(tmp_path / "backups", quick)  # the reader is gone: it goes through
    assert phase(db) == "cleaned"


def test_backup_is_private_and_pg_dump_never_sees_the_password(dsn: str, tmp_path) -> None:
    env = cleanup.pg_environment(make_conninfo(dsn, password="s3cret", sslmode="disable"))
    assert env["PGPASSWORD"] == "s3cret" and env["PGSSLMODE"] == "disable" and env["PGDATABASE"] in dsn
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ExecutorError, match=r"backup directory .*shared is writable by other users \(mode 777\)"):
        cleanup.private_directory(shared)
    made = cleanup.private_directory(tmp_path / "new" / "backups")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    ex = switched(dsn)
    result = ex.cleanup(made)
    backup = Path(result["backup"])
    assert backup.parent == made and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert not any("s3cret" in s or "postgresql://" in s for s in result["statements"])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_pg_dump_dies_with_a_killed_cleanup(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    switched(dsn)
    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE public.posts IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
    secret_dsn = make_conninfo(dsn, password="s3cret")
    process = subprocess.Popen(
        [str(DUALSHIFT), "migrate", "--dsn", secret_dsn, "--plan", str(PLAN), "cleanup", "--backup-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        dumps: list[int] = []
        while time.monotonic() < deadline and not dumps:
            time.sleep(0.1)
            dumps = [p for p in _children(process.pid) if Path(f"/proc/{p}/comm").read_text().strip() == "pg_dump"]
        assert dumps, "pg_dump never started"
        (dump,) = dumps
        command_line = Path(f"/proc/{dump}/cmdline").read_bytes().decode()
        assert "s3cret" not in command_line and "127.0.0.1" not in command_line
        assert b"PGPASSWORD=s3cret" in Path(f"/proc/{dump}/environ").read_bytes()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{dump}").exists():
            if Path(f"/proc/{dump}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break  # dead, waiting for init to reap it
            time.sleep(0.05)
        else:
            assert not Path(f"/proc/{dump}").exists(), "pg_dump outlived the killed cleanup"
    finally:
        blocker.close()
    assert phase(db) == "switched" and sync_triggers(db) == 9


def test_ctrl_c_kills_the_dump_and_removes_the_partial_file(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    target = tmp_path / "backup.sql"
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        cleanup.run_pg_dump(["sh", "-c", f"echo $$ > {pid_file}; echo partial; sleep 30"], dict(os.environ), target)
    child = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
    assert not target.exists() and not list(tmp_path.glob("*.partial"))


def test_without_sync_triggers_the_last_delta_is_caught_up_with_precedence(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    ex.backfill(BackfillOptions())  # no sync triggers: writes after verify reach only the old tables
    assert ex.verify()["passed"]
    both, twin_only = str(uuid.uuid4()), str(uuid.uuid4())
    db.execute(
        "INSERT INTO content_generation_metadata_comprehensive (decision_id, content) VALUES (%s, 'twin'), (%s, 'twin')",
        (both, twin_only),
    )
    db.execute("INSERT INTO content_metadata (decision_id, content) VALUES (%s, 'first')", (both,))
    result = ex.cleanup(tmp_path / "backups")
    assert result["rows_caught_up_before_lock"]["content_queue"] == 2
    assert result["rows_caught_up_under_lock"] == {"content_queue": 0, "posted_content": 0, "engagement_metrics": 0}
    contents = dict(
        db.execute(
            "SELECT decision_id::text, content FROM content_queue WHERE decision_id = ANY(%s::uuid[])",
            ([both, twin_only],),
        ).fetchall()
    )
    assert contents == {both: "first", twin_only: "twin"}  # the first source wins, as in the backfill


def test_with_sync_triggers_on_no_scan_runs_under_the_locks(dsn: str, tmp_path) -> None:
    result = switched(dsn).cleanup(tmp_path / "backups")
    assert result["rows_caught_up_before_lock"] == {"content_queue": 0, "posted_content": 0, "engagement_metrics": 0}
    assert result["rows_caught_up_under_lock"].startswith("none possible")
    locked = next(i for i, s in enumerate(result["statements"]) if s.startswith("LOCK TABLE"))
    assert not any(s.startswith('INSERT INTO "public".') for s in result["statements"][locked:])
    assert any(s.startswith('INSERT INTO "public".') for s in result["statements"][:locked])  # the pass before


def test_a_lock_cycle_with_an_application_transaction_ends_on_our_side(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    ex = switched(dsn)  # its session's lock timeout is 3 s, above the server's deadlock_timeout (1 s)
    app = psycopg.connect(dsn)
    app.execute("SELECT count(*) FROM public.tweets")  # holds the last old table in our lock order
    app_errors: list[str] = []

    def then_reads_another_old_table() -> None:  # after cleanup holds the first eight: a lock cycle
        time.sleep(0.3)
        try:
            app.execute("SELECT count(*) FROM public.content_metadata")
            app.commit()
        except psycopg.Error as exc:
            app_errors.append(str(exc))

    thread = threading.Thread(target=then_reads_another_old_table)
    thread.start()
    result = ex.cleanup(tmp_path / "backups")  # waits at most deadlock_timeout / 2 per try, then retries
    thread.join()
    app.close()
    assert app_errors == []  # the deadlock detector never picked the application
    assert result["views"] and phase(db) == "cleaned"


def test_dry_run_prints_the_whole_cleanup_and_changes_nothing(dsn: str, db: psycopg.Connection, tmp_path) -> None:
    switched(dsn)
    backups = tmp_path / "backups"
    result = migrate_cli(dsn, "--dry-run", "cleanup", "--backup-dir", str(backups))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("-- backup:") and "pg_dump" in lines[0]
    # in the order the application's writes take them: each table's sources in precedence order, then it
    assert any(
        line.startswith(
            'LOCK TABLE "public"."content_metadata", "public"."content_generation_metadata_comprehensive",'
            ' "public"."content_queue", "public"."posted_decisions"'
        )
        for line in lines
    )
    assert any('SET SCHEMA "archive_xbot"' in line for line in lines)
    assert lines[-1] == "NOTIFY pgrst, 'reload schema';"
    assert not backups.exists()
    assert phase(db) == "switched" and sync_triggers(db) == 9
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'archive_xbot'").fetchone()[0] == 0


def test_a_delta_the_new_table_rejects_stops_cleanup_before_anything_moves(
    dsn: str, db: psycopg.Connection, tmp_path
) -> None:
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    ex.backfill(BackfillOptions())
    assert ex.verify()["passed"]
    db.execute(
        "INSERT INTO content_metadata (decision_id, content, decision_type) VALUES (gen_random_uuid(), 'x', 'poll')"
    )
    with pytest.raises(ExecutorError) as failure:
        ex.cleanup(tmp_path / "backups")
    (backup,) = (tmp_path / "backups").glob("*.sql")
    assert f"changed nothing in the database; kept: the backup file {backup}" in str(failure.value)
    assert "content_queue_decision_type_check" in str(failure.value) or "check constraint" in str(failure.value)
    assert phase(db) == "verified"
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'archive_xbot'").fetchone()[0] == 0
