"""`dualshift demo`: the seeds' 9 → 3 consolidation, run whole on a real PostgreSQL while writers write.

Application writers keep inserting and updating through the dual-write path (old table first, its
returned row mirrored into the new table, as the generated wrapper does) from the moment the new
tables exist until the reads have switched; at the end every row they wrote is looked up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import connect
from dualshift.executor.pgserver import fresh_database, server
from dualshift.executor.phases import Executor
from dualshift.executor.sample_data import load_sample_data
from dualshift.plan import load_plan

DEMO_PLAN = Path(__file__).resolve().parents[2] / "fixtures" / "xbot" / "dualshift.toml"


@dataclass
class PhaseRow:
    phase: str
    seconds: float
    detail: str


@dataclass
class DemoResult:
    phases: list[PhaseRow] = field(default_factory=list)
    rows_written_by_writers: int = 0
    rows_lost: int = 0
    parity_passed: bool = False
    tables: dict[str, int] = field(default_factory=dict)


class DualWriter(threading.Thread):
    """One application process: new content and status updates, written old-first and mirrored."""

    def __init__(self, dsn: str, number: int, stop: threading.Event, pause_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.dsn, self.number, self.stop, self.pause_s = dsn, number, stop, pause_s
        self.keys: list[str] = []
        self.error: Exception | None = None
        self.hold = threading.Event()  # set: finish the write in flight, then wait
        self.holding = threading.Event()  # set by the writer while it waits

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                i = 0
                while not self.stop.is_set() and i < 100_000:
                    while self.hold.is_set() and not self.stop.is_set():
                        self.holding.set()
                        time.sleep(0.01)
                    self.holding.clear()
                    self._write(conn, i)
                    i += 1
                    time.sleep(self.pause_s)
        except Exception as exc:  # reported by the demo, never silently lost
            self.error = exc

    def _write(self, conn: psycopg.Connection, i: int) -> None:
        key = f"writer{self.number}-{i}"
        row = conn.execute(
            "INSERT INTO content_metadata (decision_id, content, generator_name) VALUES (md5(%s)::uuid, %s, 'live')"
            " RETURNING decision_id, content, decision_type, status, generator_name, created_at, updated_at",
            (key, f"live post {key}"),
        ).fetchone()
        conn.execute(
            "INSERT INTO content_queue (decision_id, content, decision_type, status, generator_name, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (decision_id) DO UPDATE SET content = EXCLUDED.content,"
            " decision_type = EXCLUDED.decision_type, status = EXCLUDED.status, generator_name = EXCLUDED.generator_name,"
            " created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at",
            row,
        )
        self.keys.append(key)
        if i % 3 == 0:  # and an update of an older row, old table first
            target = f"d{(i * 37 + self.number) % 1000}"
            conn.execute("UPDATE content_metadata SET status = 'ready' WHERE decision_id = md5(%s)::uuid", (target,))
            conn.execute("UPDATE content_queue SET status = 'ready' WHERE decision_id = md5(%s)::uuid", (target,))


def run_demo(dsn: str | None, rows: int, writers: int, report: Callable[[str], None] = lambda line: None) -> DemoResult:
    result = DemoResult()
    with ExitStack() as stack:
        if dsn is None:
            admin = stack.enter_context(server())
            dsn = stack.enter_context(fresh_database(admin, "dualshift_demo"))
        with psycopg.connect(dsn, autocommit=True) as conn:
            _require_empty(conn)
            started = time.monotonic()
            load_sample_data(conn, rows)
            result.phases.append(PhaseRow("old tables", time.monotonic() - started, f"9 tables, {rows} content rows"))
        ex = Executor(connect(dsn), load_plan(DEMO_PLAN), dsn)
        stop = threading.Event()
        team = [DualWriter(dsn, n, stop) for n in range(writers)]

        def phase(name: str, action: Callable[[], dict], detail: Callable[[dict], str]) -> dict:
            report(f"{name} …")
            began = time.monotonic()
            outcome = action()
            result.phases.append(PhaseRow(name, time.monotonic() - began, detail(outcome)))
            return outcome

        phase("create", ex.create, lambda r: ", ".join(r["created"]))
        for writer in team:
            writer.start()
        phase(
            "backfill",
            lambda: ex.backfill(BackfillOptions(batch_size=2000)),
            lambda r: ", ".join(f"{t}: {v['rows_copied']} rows" for t, v in r["tables"].items()),
        )
        with _caught_up(team):  # a dual write half done (old written, new not yet) is no difference
            phase("verify", ex.verify, _parity)
        for percent in (10, 50, 100):
            phase(
                f"switch-reads {percent}%",
                lambda p=percent: ex.switch_reads(p),
                lambda r: f"reads from new: {r['read_from_new_percent']}%",
            )
        stop.set()
        for writer in team:
            writer.join(timeout=60)
        errors = [w.error for w in team if w.error]
        if errors:
            raise RuntimeError(f"a writer failed: {errors[0]}")
        final = phase("verify (writers stopped)", ex.verify, _parity)
        result.parity_passed = final["passed"]
        phase(
            "cleanup",
            lambda: ex.cleanup(Path(stack.enter_context(_temporary_dir()))),
            lambda r: (
                f"{len(r['views'])} compatibility views; backup taken ({Path(str(r['backup'])).name},"
                " in a temporary folder removed when the demo ends)"
            ),
        )
        keys = [k for w in team for k in w.keys]
        result.rows_written_by_writers = len(keys)
        found = ex.conn.execute(
            "SELECT count(*) FROM public.content_queue WHERE decision_id = ANY(SELECT md5(k)::uuid FROM unnest(%s::text[]) AS k)",
            (keys,),
        ).fetchone()[0]
        result.rows_lost = len(keys) - found
        for table in ("content_queue", "posted_content", "engagement_metrics"):
            result.tables[table] = ex.conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0]
        ex.conn.close()
    return result


@contextmanager
def _caught_up(team: list[DualWriter]):
    """Let every writer finish the write it is in, hold them while the block runs, then resume."""
    for writer in team:
        writer.hold.set()
    for writer in team:
        while writer.is_alive() and not writer.holding.wait(0.05):
            pass
    try:
        yield
    finally:
        for writer in team:
            writer.hold.clear()


def _parity(report: dict) -> str:
    parts = [
        f"{t['table']}: {t['new_rows']}/{t['expected_rows']}, {t['mismatched_rows']} differ" for t in report["tables"]
    ]
    return ("PASSED " if report["passed"] else "FAILED ") + "; ".join(parts)


def _require_empty(conn: psycopg.Connection) -> None:
    """The demo creates the seeds' nine tables itself: a database that holds any of them is not for it."""
    taken = conn.execute(
        "SELECT string_agg(t, ', ') FROM unnest(%s::text[]) t WHERE to_regclass('public.' || t) IS NOT NULL",
        (["content_metadata", "posted_decisions", "tweets", "outcomes", "content_queue"],),
    ).fetchone()[0]
    if taken:
        raise RuntimeError(
            f"the database already holds {taken}: the demo needs an empty database (omit --dsn and it makes one)"
        )


def _temporary_dir():
    import tempfile

    return tempfile.TemporaryDirectory(prefix="dualshift-demo-backup-")
