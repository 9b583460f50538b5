"""The migration, phase by phase: each validates, takes the lock, checks the order, runs, audits.

State (dualshift.state) moves none → created → backfilled → verified → switched → cleaned, and
`rollback` moves it one step back from wherever it is, losing no row.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor import backfill, cleanup, create, faults, snapshot, sync, verify
from dualshift.executor.catalog import SourceMapping, validate
from dualshift.executor.connection import ExecutorError, Sink, Timeouts, advisory_lock, with_lock_retries
from dualshift.executor.state import (
    PHASES,
    audit,
    current_phase,
    ensure_schema,
    last_verify,
    require_phase,
    set_flag,
    set_phase,
)
from dualshift.plan import Plan


@dataclass
class Executor:
    conn: psycopg.Connection
    plan: Plan
    dsn: str
    dry_run: bool = False
    progress: backfill.Progress = field(default=lambda label, done, total: None)

    @property
    def key(self) -> str:
        return Path(self.plan.path).name

    def _run(self, phase: str, allowed: tuple[str, ...], body) -> dict[str, Any]:
        mappings = validate(self.conn, self.plan)  # before any SQL changes anything
        sink = Sink(self.conn, self.dry_run)
        with advisory_lock(self.conn):
            if not self.dry_run:
                ensure_schema(self.conn)
            current = current_phase(self.conn, self.key)
            require_phase(current, allowed, phase)
            try:
                result = body(mappings, sink, current)
            except Exception as exc:
                if not self.dry_run:
                    audit(self.conn, self.key, phase, phase, "failed", {"error": str(exc)}, sink.statements)
                raise
            if not self.dry_run:
                audit(self.conn, self.key, phase, phase, "ok", result, sink.statements)
        result["statements"] = sink.statements
        return result

    # ------------------------------------------------------------------------------------------

    def snapshot(self, out_dir: Path) -> dict[str, Any]:
        schemas = sorted({s.schema for t in self.plan.tables for s in t.sources} | {self.plan.new_schema})
        taken = snapshot.take(self.conn, schemas)
        written = snapshot.write(taken, out_dir)
        return {"files": [str(p) for p in written], "tables": len(taken["tables"])}

    def create(self) -> dict[str, Any]:
        def body(mappings, sink: Sink, current: str) -> dict:
            if current != "none":
                return {"created": [], "note": f"already past create (at '{current}'): nothing to do"}
            result = create.run(self.conn, self.plan, sink)
            if not self.dry_run:
                set_phase(self.conn, self.key, "created")
                set_flag(self.conn, "dual_write", True)
                set_flag(self.conn, "read_from_new_percent", 0)
                set_flag(self.conn, "shadow_reads", False)
            return result

        return self._run("create", PHASES, body)

    def backfill(self, options: backfill.BackfillOptions, sync_triggers: bool = False) -> dict[str, Any]:
        def body(mappings: dict[tuple[str, str], SourceMapping], sink: Sink, current: str) -> dict:
            if current in ("backfilled", "verified"):
                backfill.reset_checkpoints(self.conn, self.plan)  # a new full pass: re-sync and replay
            triggers = sync.install(self.conn, self.plan, mappings, sink) if sync_triggers else []
            result = backfill.run(self.conn, self.plan, mappings, options, sink, self.progress)
            result["sync_triggers"] = triggers
            if result["complete"] and not self.dry_run:
                set_phase(self.conn, self.key, "backfilled")
            return result

        return self._run("backfill", ("created", "backfilled", "verified"), body)

    def verify(self) -> dict[str, Any]:
        def body(mappings, sink: Sink, current: str) -> dict:
            report = verify.run(self.conn, self.plan, mappings)
            if not self.dry_run:
                self.conn.execute(
                    "INSERT INTO dualshift.verify_runs (plan, passed, report) VALUES (%s, %s, %s)",
                    (self.key, report["passed"], psycopg.types.json.Jsonb(report)),
                )
                if report["passed"] and current == "backfilled":
                    set_phase(self.conn, self.key, "verified")
            return report

        return self._run("verify", ("backfilled", "verified", "switched"), body)

    def switch_reads(self, percent: int, table: str | None = None) -> dict[str, Any]:
        if not 0 <= percent <= 100:
            raise ExecutorError(f"read percentage {percent} is not between 0 and 100")

        def body(mappings, sink: Sink, current: str) -> dict:
            last = last_verify(self.conn, self.key)
            if percent > 0 and not (last and last["passed"]):
                raise ExecutorError("the last verify did not pass; run `dualshift migrate verify` until it does")
            scope = table or "*"
            sink.statements.append(f"-- flag {scope}.read_from_new_percent = {percent}")
            if not self.dry_run:
                set_flag(self.conn, "read_from_new_percent", percent, scope)
                set_phase(self.conn, self.key, "switched" if percent > 0 else "verified")
            return {"read_from_new_percent": percent, "scope": scope}

        return self._run("switch-reads", ("verified", "switched"), body)

    def cleanup(self, backup_dir: Path, timeouts: Timeouts | None = None) -> dict[str, Any]:
        """Backup first (sync triggers still on), then one transaction: lock, last delta, archive, promote,
        views, sync triggers off, reverse sync on, state. A failure keeps nothing but the backup."""
        sink = Sink(self.conn, self.dry_run)
        with advisory_lock(self.conn):
            if not self.dry_run:
                ensure_schema(self.conn)
            current = current_phase(self.conn, self.key)
            if current == "cleaned":
                return {"note": "already cleaned up: nothing to do", "statements": []}
            require_phase(current, ("verified", "switched"), "cleanup")
            mappings = validate(self.conn, self.plan)
            last = last_verify(self.conn, self.key)
            if not (last and last["passed"]):
                raise ExecutorError("the last verify did not pass; run `dualshift migrate verify` first")
            cleanup.check_before_cleanup(self.conn, self.plan)
            taken = cleanup.backup(self.conn, self.plan, self.dsn, backup_dir, sink)
            faults.point("cleanup.backup_written")
            try:
                with self.conn.transaction():  # the delta's bulk, without the exclusive locks
                    before_lock = cleanup.catch_up_all(self.conn, self.plan, mappings, sink)
            except psycopg.Error as exc:
                raise ExecutorError(
                    f"cleanup failed and changed nothing in the database; kept: {taken.describe()}. Reason: copying"
                    f" the rows written since backfill: {str(exc).strip().splitlines()[0]}"
                ) from exc

            def move() -> dict[str, Any]:
                result = cleanup.move(self.conn, self.plan, mappings, sink)
                result["rows_caught_up_before_lock"] = before_lock
                result["backup"] = taken.location
                if not self.dry_run:
                    cleanup.record_run(self.conn, self.plan, taken, result["dependents"], sink)
                    set_flag(self.conn, "dual_write", False)
                    set_phase(self.conn, self.key, "cleaned")
                cleanup.notify_postgrest(sink)
                if not self.dry_run:
                    audit(self.conn, self.key, "cleanup", "cleanup", "ok", result, sink.statements)
                return result

            relations = cleanup.relation_names(self.conn, cleanup.cleanup_relations(self.plan))
            result = self._in_one_transaction("cleanup", move, relations, timeouts, f"kept: {taken.describe()}")
            faults.point("cleanup.committed")
        result["statements"] = sink.statements
        return result

    def _in_one_transaction(self, phase: str, action, relations: list[str], timeouts: Timeouts | None, kept: str):
        """`action` in one transaction with lock retries; a failure is audited and says what was kept."""
        try:
            return with_lock_retries(self.conn, action, phase, relations, cleanup.session_timeouts(self.conn, timeouts))
        except (ExecutorError, psycopg.Error) as exc:
            reason = str(exc).strip().splitlines()[0]
            message = f"{phase} failed and changed nothing in the database; {kept}. Reason: {reason}"
            if not self.dry_run:
                with contextlib.suppress(psycopg.Error):  # a lost connection must not hide the message
                    audit(self.conn, self.key, phase, phase, "failed", {"error": message}, [])
            raise ExecutorError(message) from exc

    def finalize(
        self, keep_archive: bool = False, no_backup_needed: bool = False, timeouts: Timeouts | None = None
    ) -> dict[str, Any]:
        """After cleanup, for good: the reverse sync stops and the archive is dropped (or kept, unsynced)."""
        sink = Sink(self.conn, self.dry_run)
        with advisory_lock(self.conn):
            require_phase(current_phase(self.conn, self.key), ("cleaned",), "finalize")
            cleanup.check_cleaned(self.conn, self.plan)
            taken = cleanup.last_backup(self.conn, self.plan)
            if not (keep_archive or no_backup_needed or cleanup.backup_present(self.conn, self.plan, taken)):
                where = taken.describe() if taken else "no backup recorded"
                raise ExecutorError(
                    f"finalize drops the archived old tables, and their backup is missing ({where}); restore it,"
                    " or pass --keep-archive, or --no-backup-needed to drop them anyway. Nothing was changed"
                )

            def drop() -> dict[str, Any]:
                result = cleanup.finalize(self.conn, self.plan, sink, keep_archive)
                if not self.dry_run:
                    set_phase(self.conn, self.key, "finalized")
                cleanup.notify_postgrest(sink)
                if not self.dry_run:
                    audit(self.conn, self.key, "finalize", "finalize", "ok", result, sink.statements)
                return result

            relations = cleanup.relation_names(self.conn, cleanup.cleaned_relations(self.plan))
            result = self._in_one_transaction("finalize", drop, relations, timeouts, "kept: everything as it was")
            faults.point("finalize.committed")
        result["statements"] = sink.statements
        return result

    def rollback(self) -> dict[str, Any]:
        current = current_phase(self.conn, self.key)
        if current in ("cleaned", "finalized"):
            return self._rollback_cleanup()
        return self._run("rollback", ("created", "backfilled", "verified", "switched"), self._rollback_body)

    def _rollback_body(self, mappings, sink: Sink, current: str) -> dict:
        if current == "switched":
            sink.statements.append("-- every read_from_new_percent flag = 0")
            if not self.dry_run:
                self.conn.execute(
                    "UPDATE dualshift.flags SET value = '0', updated_at = now() WHERE name = 'read_from_new_percent'"
                )
                set_phase(self.conn, self.key, "verified")
            return {"to": "verified"}
        if current == "verified":
            if not self.dry_run:
                set_phase(self.conn, self.key, "backfilled")
            return {"to": "backfilled"}
        if current == "backfilled":
            sync.remove(self.conn, self.plan, sink)
            for table in self.plan.tables:
                sink.run(sql.SQL("TRUNCATE {}").format(sql.Identifier(self.plan.new_schema, table.name)))
            if not self.dry_run:
                self.conn.execute(
                    "DELETE FROM dualshift.checkpoints WHERE new_table = ANY(%s)", ([t.name for t in self.plan.tables],)
                )
                set_phase(self.conn, self.key, "created")
            return {"to": "created", "note": "new tables emptied; the old tables hold every row"}
        # created → none: the new tables go; the old tables were never touched.
        sync.remove(self.conn, self.plan, sink)
        with self.conn.transaction():
            for table in reversed(self.plan.tables):
                sink.run(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.plan.new_schema, table.name)))
            if not self.dry_run:
                self.conn.execute(
                    "DELETE FROM dualshift.checkpoints WHERE new_table = ANY(%s)", ([t.name for t in self.plan.tables],)
                )
                set_phase(self.conn, self.key, "none")
        return {"to": "none"}

    def _rollback_cleanup(self, timeouts: Timeouts | None = None) -> dict[str, Any]:
        """One transaction: the archive (kept in sync by the reverse triggers) back in place, the new tables
        back in new_schema, views and reverse triggers gone; refused if the archive misses a row."""
        sink = Sink(self.conn, self.dry_run)
        with advisory_lock(self.conn):
            current = current_phase(self.conn, self.key)
            if current == "finalized":
                raise ExecutorError(
                    "cannot roll back: the migration was finalized (the archived old tables were dropped or are no"
                    " longer kept in sync); restore the old tables from the backup if you must"
                )
            require_phase(current, ("cleaned",), "rollback of cleanup")
            cleanup.check_cleaned(self.conn, self.plan)

            def restore() -> dict[str, Any]:
                result = cleanup.move_back(self.conn, self.plan, sink)
                result["to"] = "switched" if _reading_new(self.conn) else "verified"
                if not self.dry_run:
                    set_flag(self.conn, "dual_write", True)
                    set_phase(self.conn, self.key, result["to"])
                cleanup.notify_postgrest(sink)
                if not self.dry_run:
                    audit(self.conn, self.key, "rollback", "rollback cleanup", "ok", result, sink.statements)
                return result

            relations = cleanup.relation_names(self.conn, cleanup.cleaned_relations(self.plan, with_views=True))
            result = self._in_one_transaction("rollback", restore, relations, timeouts, "kept: everything as it was")
            faults.point("rollback.committed")
        result["statements"] = sink.statements
        return result

    def status(self) -> dict[str, Any]:
        phase = current_phase(self.conn, self.key)
        tables = {}
        for table in self.plan.tables:
            counts = {}
            for source in table.sources:
                counts[source.table] = _count(self.conn, source.schema, source.table) or _count(
                    self.conn, self.plan.archive_schema, source.table
                )
            tables[table.name] = {
                "rows": _count(self.conn, self.plan.new_schema, table.name)
                or _count(self.conn, self.plan.target_schema, table.name),
                "sources": counts,
            }
        return {"phase": phase, "tables": tables, "last_verify": last_verify(self.conn, self.key)}


def _count(conn: psycopg.Connection, schema: str, table: str) -> int | None:
    if conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()[0] is None:
        return None
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[0]


def _reading_new(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT coalesce(max((value #>> '{}')::int), 0) FROM dualshift.flags WHERE name = 'read_from_new_percent'"
    ).fetchone()
    return bool(row[0])
