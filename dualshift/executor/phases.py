"""The migration, phase by phase: each validates, takes the lock, checks the order, runs, audits.

State (dualshift.state) moves none → created → backfilled → verified → switched → cleaned, and
`rollback` moves it one step back from wherever it is, losing no row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor import backfill, cleanup, create, snapshot, sync, verify
from dualshift.executor.catalog import SourceMapping, validate
from dualshift.executor.connection import ExecutorError, Sink, advisory_lock
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

    def verify(self, incremental: bool = False) -> dict[str, Any]:
        def body(mappings, sink: Sink, current: str) -> dict:
            report = verify.run(self.conn, self.plan, mappings, incremental=incremental, capture=not self.dry_run)
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

    def cleanup(self, backup_dir: Path) -> dict[str, Any]:
        if current_phase(self.conn, self.key) == "cleaned":
            return {"note": "already cleaned up: nothing to do", "statements": []}

        def body(mappings, sink: Sink, current: str) -> dict:
            last = last_verify(self.conn, self.key)
            if not (last and last["passed"]):
                raise ExecutorError("the last verify did not pass; run `dualshift migrate verify` first")
            sync.remove(self.conn, self.plan, sink)
            result = cleanup.run(self.conn, self.plan, mappings, self.dsn, backup_dir, sink)
            if not self.dry_run:
                set_flag(self.conn, "dual_write", False)
                set_phase(self.conn, self.key, "cleaned")
            return result

        return self._run("cleanup", ("verified", "switched"), body)

    def rollback(self) -> dict[str, Any]:
        current = current_phase(self.conn, self.key)
        if current == "cleaned":
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

    def _rollback_cleanup(self) -> dict[str, Any]:
        sink = Sink(self.conn, self.dry_run)
        with advisory_lock(self.conn):
            # The old tables are in the archive now: validate against them there.
            archived = _with_schema(self.plan, self.plan.archive_schema)
            mappings = validate(self.conn, archived)
            restored = {(t, s): m for (t, s), m in _restore_schema(mappings, self.plan).items()}
            result = cleanup.rollback(self.conn, self.plan, restored, sink)
            if not self.dry_run:
                set_flag(self.conn, "dual_write", True)
                set_phase(self.conn, self.key, "switched" if _reading_new(self.conn) else "verified")
                audit(self.conn, self.key, "rollback", "rollback cleanup", "ok", result, sink.statements)
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


def _with_schema(plan: Plan, schema: str) -> Plan:
    from dataclasses import replace

    tables = tuple(replace(t, sources=tuple(replace(s, schema=schema) for s in t.sources)) for t in plan.tables)
    new_schema = plan.target_schema
    return replace(plan, tables=tables, new_schema=new_schema)


def _restore_schema(mappings: dict[tuple[str, str], SourceMapping], plan: Plan) -> dict[tuple[str, str], SourceMapping]:
    from dataclasses import replace

    restored = {}
    for (table_name, source_name), mapping in mappings.items():
        original_table = plan.table(table_name)
        original_source = original_table.source(source_name)
        restored[(table_name, source_name)] = replace(mapping, table=original_table, source=original_source)
    return restored
