"""The migration, phase by phase: each validates, takes the lock, checks the order, runs, audits.

State (dualshift_private.state, keyed by the plan's name) moves none → created → backfilled → verified → switched → cleaned, and
`rollback` moves it one step back from wherever it is, losing no row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from dualshift.executor import (
    backfill,
    changes,
    cleanup,
    create,
    faults,
    owners,
    preflight,
    snapshot,
    sync,
    verify,
    watch,
)
from dualshift.executor.catalog import SourceMapping, validate
from dualshift.executor.connection import ExecutorError, Sink, Timeouts, advisory_lock, blockers, with_lock_retries
from dualshift.executor.migrations import Emitter
from dualshift.executor.reconcile import ALL_BEFORE_CLEANUP, CatalogView, reconcile, rows_only_in_new
from dualshift.executor.state import (
    PHASES,
    audit,
    check_read_percent,
    current_phase,
    ensure_schema,
    flags,
    last_verify,
    own_schema_statements,
    plan_hash,
    require_phase,
    set_flag,
    set_phase,
    state_row,
)
from dualshift.plan import Plan

T = TypeVar("T")
Body = Callable[[dict[tuple[str, str], SourceMapping], Sink, str], dict[str, Any]]  # (mappings, sink, current)
RELOAD_POSTGREST = sql.SQL("NOTIFY pgrst, 'reload schema'")


def _table_readiness(around_wrapper: list, needs_triggers: bool) -> str:
    blocks = [f"{len(around_wrapper)} write(s) around the wrapper"] if around_wrapper else []
    blocks += ["merges its sources: needs the sync triggers"] if needs_triggers else []
    return "; ".join(blocks) or "ready"


@dataclass
class Executor:
    """Runs the phases of one plan on one connection.

    How a phase commits (for every phase, cleanup and finalize included): its body runs under the
    advisory lock after `_run` has checked the order, the plan's hash and the catalog. The body puts
    its last effect and `self._record(new_phase)` in one transaction, `self._commit(point, effect,
    what, relations)`: `effect` runs inside `with_lock_retries` (short lock timeout, retried with
    backoff, nothing of a failed try kept), then `faults.point(point)` fires. Nothing in a body may
    write the state row outside that transaction.
    """

    conn: psycopg.Connection
    plan: Plan
    dsn: str
    dry_run: bool = False
    skip_preflight: bool = False  # `migrate create --skip-preflight`: audited in create's result
    progress: backfill.Progress = field(default=lambda label, done, total: None)
    timeouts: Timeouts = field(default_factory=Timeouts)
    accept_plan_change: bool = False
    code_roots: tuple[Path, ...] = ()  # `--code ROOT`: the readiness gate reads these trees
    force_unready: bool = False  # `--force`: pass the gate anyway (audited with what it found)
    emitter: Emitter | None = None  # `--emit-migrations DIR`: create, cleanup, finalize write their DDL there

    def __post_init__(self) -> None:
        self.plan_hash = plan_hash(self.plan)
        self.emitted: list[str] = []  # the migration files written

    @property
    def key(self) -> str:
        return self.plan.name

    # ── the frame every phase runs in ──────────────────────────────────────────────────────────

    def _run(
        self,
        phase: str,
        allowed: tuple[str, ...],
        body: Body,
        validation_plan: Plan | None = None,
        manages_roles: bool = True,
    ) -> dict[str, Any]:
        """Lock, check (order, plan hash, catalog against state row), validate, run `body(mappings, sink,
        current)`, audit. `validation_plan`: the plan to validate the live tables against when the old
        tables are not where `self.plan` says (after cleanup, in the archive). `manages_roles=False`: the
        phase creates, hands over or drops no function role, so an executor without CREATEROLE may run it."""
        sink = Sink(self.conn, self.dry_run)
        with advisory_lock(self.conn):
            try:
                current = self._current()
                require_phase(current, allowed, phase)
                self._check_catalog(phase, current)
                mappings = validate(self.conn, validation_plan or self.plan)  # before any SQL changes anything
                if manages_roles:
                    owners.require_role_management(self.conn)
                if not self.dry_run:
                    ensure_schema(self.conn)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
                raise self._timed_out(phase, exc) from None
            try:
                result = body(mappings, sink, current)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as exc:
                error = self._timed_out(phase, exc)
                self._audit_failure(phase, error, sink)
                raise error from None
            except Exception as exc:
                self._audit_failure(phase, exc, sink)
                raise
            if not self.dry_run:
                audit(self.conn, self.key, phase, phase, "ok", result, sink.statements)
        result["statements"] = sink.statements
        return result

    def _current(self) -> str:
        """The recorded phase, once the plan is known to be the one the migration runs: every phase's first
        check under the advisory lock (`_run`, cleanup, finalize and the rollback of cleanup)."""
        current = current_phase(self.conn, self.key)
        self._check_plan_hash(current)
        return current

    def _record(self, phase: str) -> None:
        """Write the state row; call it inside the transaction of the phase's last effect."""
        if not self.dry_run:
            set_phase(self.conn, self.key, phase, self.plan_hash, str(self.plan.path))

    def _commit(self, point: str, effect: Callable[[], T], what: str, relations: tuple[str, ...] = ()) -> T:
        """Run `effect` (ending with `self._record(...)`) as one transaction with lock retries, then the
        fault point `point` (a name in faults.POINTS)."""
        result = self._publishing(lambda: with_lock_retries(self.conn, effect, what, relations, self.timeouts))
        if not self.dry_run:
            faults.point(point)
        return result

    def _stage_migrations(self, phase: str, sink: Sink, mark: int) -> None:
        """Inside the phase's transaction, before its state: what the sink ran since `mark`, as migration
        files recorded in supabase_migrations.schema_migrations (`--emit-migrations`)."""
        if self.emitter is not None:
            self.emitter.stage(self.conn, phase, sink.ran[mark:])

    def _publishing(self, transaction: Callable[[], T]) -> T:
        """`transaction`, then the migration files it staged put in place (or removed if it failed)."""
        try:
            result = transaction()
        except BaseException:
            if self.emitter is not None:
                self.emitter.discard()
            raise
        if self.emitter is not None:
            self.emitted += self.emitter.publish()
        return result

    def _audit_failure(self, phase: str, exc: BaseException, sink: Sink) -> None:
        if not self.dry_run and not self.conn.closed:
            with suppress(psycopg.Error):  # the failure itself is what the operator needs to see
                audit(self.conn, self.key, phase, phase, "failed", {"error": str(exc)}, sink.statements)

    def _timed_out(self, phase: str, exc: psycopg.Error) -> ExecutorError:
        holding = blockers(self.conn, self._relations())
        return ExecutorError(
            f"{phase} gave up waiting ({str(exc).strip().splitlines()[0]}); nothing of the interrupted step was kept;"
            f" blocked by {', '.join(holding) or 'a session that has since ended'}"
        )

    def _relations(self) -> list[str]:
        old = [f"{s.schema}.{s.table}" for t in self.plan.tables for s in t.sources]
        return old + [f"{self.plan.new_schema}.{t.name}" for t in self.plan.tables]

    def _check_plan_hash(self, current: str) -> None:
        row = state_row(self.conn, self.key)
        if row is None or current == "none" or row[1] == self.plan_hash:
            return
        if row[1] is not None and not self.accept_plan_change:
            raise ExecutorError(
                f"{self.plan.path}: plan {self.key} changed since the migration reached '{current}'"
                f" (content hash {row[1]} → {self.plan_hash}); restore it, or pass --accept-plan-change"
                " if the change is meant (it is recorded in the audit log)"
            )
        if not self.dry_run:
            with self.conn.transaction():
                set_phase(self.conn, self.key, current, self.plan_hash, str(self.plan.path))
                audit(
                    self.conn,
                    self.key,
                    current,
                    "accept plan change",
                    "ok",
                    {"from": row[1], "to": self.plan_hash, "path": str(self.plan.path)},
                    [],
                )

    def _check_catalog(self, phase: str, current: str) -> CatalogView:
        seen = reconcile(self.conn, self.plan)
        if current in seen.phases or seen.old_nowhere:
            return seen  # an old table that is nowhere: the plan does not fit this database; validate names it
        if phase == "create" and current == "none" and seen.phases:
            tables = ", ".join(f"{self.plan.new_schema}.{t}" for t in seen.new_in_new)
            raise ExecutorError(
                f"create: {tables} already exist but no state was recorded for plan {self.key} (a create that"
                " crashed after its commit in an older dualshift?); `dualshift migrate reconcile` records 'created'"
                " when they are exactly the plan's tables and empty, otherwise drop them by hand"
            )
        consistent = " or ".join(repr(p) for p in seen.phases) or "no phase dualshift can name"
        raise ExecutorError(
            f"{phase} refused: the state row of plan {self.key} says '{current}' but the catalog shows"
            f" {seen.describe()} ({consistent}); nothing was changed; `dualshift migrate status` shows both,"
            " `dualshift migrate reconcile` records what the catalog shows"
        )

    # ------------------------------------------------------------------------------------------

    def snapshot(self, out_dir: Path) -> dict[str, Any]:
        schemas = sorted({s.schema for t in self.plan.tables for s in t.sources} | {self.plan.new_schema})
        taken = snapshot.take(self.conn, schemas)
        written = snapshot.write(taken, out_dir, self.dsn)
        return {"files": [str(p) for p in written], "tables": len(taken["tables"])}

    def create(self) -> dict[str, Any]:
        checked = None
        if self.emitter is not None:
            self.emitter.check()
        if current_phase(self.conn, self.key) == "none":  # before any DDL, dualshift's own schema included
            checked = preflight.before_create(self.conn, self.plan, self.skip_preflight)

        def body(mappings, sink: Sink, current: str) -> dict:
            if current != "none":
                return {"created": [], "note": f"already past create (at '{current}'): nothing to do"}

            def effect() -> dict:
                mark = len(sink.ran)
                if self.emitter is not None:  # the first file: what the migration's objects rely on
                    with sink.concern("dualshift_schemas"):
                        for statement in own_schema_statements(self.conn):
                            sink.run(statement)
                result = create.run(self.conn, self.plan, sink)
                result["preflight"] = checked
                if not self.dry_run:
                    set_flag(self.conn, "dual_write", True)
                    set_flag(self.conn, "read_from_new_percent", 0)
                    set_flag(self.conn, "shadow_reads", False)
                self._stage_migrations("create", sink, mark)
                self._record("created")
                sink.run(RELOAD_POSTGREST)
                return result

            result = self._commit("create.committed", effect, "create", tuple(self._relations()))
            return {**result, "migrations": self.emitted} if self.emitter is not None else result

        return self._run("create", PHASES, body)

    def backfill(self, options: backfill.BackfillOptions, sync_triggers: bool = False) -> dict[str, Any]:
        if options.batch_size < 1:
            raise ExecutorError(f"batch size {options.batch_size}: a batch needs at least 1 row")
        if options.max_batches is not None and options.max_batches < 1:
            raise ExecutorError(f"max batches {options.max_batches}: give at least 1, or none for no limit")

        def body(mappings: dict[tuple[str, str], SourceMapping], sink: Sink, current: str) -> dict:
            if not sync_triggers:
                self._require_sync_for_merging_tables()
            if current in ("backfilled", "verified"):
                backfill.reset_checkpoints(self.conn, self.plan)  # a new full pass: re-sync and replay
            triggers = sync.install(self.conn, self.plan, mappings, sink) if sync_triggers else []
            result = backfill.run(self.conn, self.plan, mappings, options, sink, self.progress)
            result["sync_triggers"] = triggers
            if result["complete"] and not self.dry_run and current == "created":
                with self.conn.transaction():
                    self._record("backfilled")
                faults.point("backfill.committed")
            return result

        return self._run("backfill", ("created", "backfilled", "verified"), body)

    def _require_sync_for_merging_tables(self) -> None:
        """A table that merges its sources is written by the sync triggers only (the wrapper skips it):
        a backfill without them would leave every later write out of it."""
        covered = sync.covered_tables(self.conn, self.plan)
        for table in self.plan.tables:
            if table.merges_sources and any(s.table not in covered for s in table.sources):
                raise ExecutorError(
                    f'backfill refused: {table.name} merges its sources (precedence = "coalesce") and only the'
                    " sync triggers write it, the dual-write wrapper does not; run `dualshift migrate backfill"
                    " --sync triggers`"
                )

    def verify(self, incremental: bool = False) -> dict[str, Any]:
        def body(mappings, sink: Sink, current: str) -> dict:
            report = verify.run(self.conn, self.plan, mappings, incremental=incremental, capture=not self.dry_run)
            if not self.dry_run:
                with self.conn.transaction():
                    self.conn.execute(
                        "INSERT INTO dualshift_private.verify_runs (plan, passed, report) VALUES (%s, %s, %s)",
                        (self.key, report["passed"], psycopg.types.json.Jsonb(report)),
                    )
                    if report["passed"] and current == "backfilled":
                        self._record("verified")
                faults.point("verify.committed")
            return report

        return self._run("verify", ("backfilled", "verified", "switched"), body)

    def switch_reads(self, percent: int, table: str | None = None) -> dict[str, Any]:
        check_read_percent(self.plan, percent, table)

        def body(mappings, sink: Sink, current: str) -> dict:
            last = last_verify(self.conn, self.key)
            if percent > 0 and not (last and last["passed"]):
                raise ExecutorError("the last verify did not pass; run `dualshift migrate verify` until it does")
            gate = self._gate("switch-reads") if percent > 0 else None
            scope = table or "*"
            sink.statements.append(f"-- flag {scope}.read_from_new_percent = {percent}")

            def effect() -> None:
                if not self.dry_run:
                    set_flag(self.conn, "read_from_new_percent", percent, scope)
                    self._record("switched" if _reading_new(self.conn) else "verified")

            self._commit("switch.committed", effect, "switch-reads")
            return {"read_from_new_percent": percent, "scope": scope, "readiness": gate}

        return self._run("switch-reads", ("verified", "switched"), body, manages_roles=False)

    def _gate(self, phase: str) -> dict[str, Any]:
        """The readiness gate: no write that can reach an old table may skip the wrapper, unless the sync
        triggers mirror that table. Refuses with every blocking site; `--force` passes, audited."""
        from dualshift.guard.readiness import assess_tree

        if not self.code_roots:
            return {"checked": False, "note": "no --code ROOT given: the code was not checked"}
        readiness = assess_tree(self.code_roots, self.plan, sync.covered_tables(self.conn, self.plan))
        sites = readiness.lines() + readiness.trigger_lines()
        if sites and not self.force_unready:
            raise ExecutorError(
                f"{phase} refused: {len(sites)} write(s) can reach an old table around the dual-write wrapper"
                f" ({'; '.join(sites)}); wrap them (`dualshift codemod wrap ROOT --plan PLAN`), or install the"
                " sync triggers (`dualshift migrate backfill --sync triggers`), or pass --force (audited)"
            )
        if sites and not self.dry_run:
            audit(self.conn, self.key, phase, "readiness gate forced", "ok", {"sites": sites}, [])
        return {"checked": True, "ready": not sites, "forced": bool(sites), "sites": sites}

    def readiness(self) -> dict[str, Any]:
        """Per old table: ready, or what blocks it (for `status`)."""
        from dualshift.guard.readiness import assess_tree

        if not self.code_roots:
            return {}
        readiness = assess_tree(self.code_roots, self.plan, sync.covered_tables(self.conn, self.plan))
        return {
            table: _table_readiness(found, table in readiness.needs_triggers)
            for table, found in sorted(readiness.blockers.items())
        }

    def set_flags(self, assignments: list[tuple[str, str, Any]]) -> dict[str, Any]:
        """`flags --set`: read_from_new_percent goes through switch-reads (same checks, same state);
        dual_write and shadow_reads take true or false, for the whole plan or one of its new tables."""
        for scope, name, value in assignments:
            if name == "read_from_new_percent":
                check_read_percent(self.plan, value, scope)
            elif name in ("dual_write", "shadow_reads"):
                if not isinstance(value, bool):
                    raise ExecutorError(f"{name} takes true or false, not {value!r}")
                if scope != "*" and self.plan.table(scope) is None:
                    check_read_percent(self.plan, 0, scope)  # the same message for an unknown table
            else:
                raise ExecutorError(
                    f"unknown flag {name!r}; the flags are dual_write, read_from_new_percent, shadow_reads"
                )
        for scope, name, value in assignments:
            if name == "read_from_new_percent":
                self.switch_reads(value, None if scope == "*" else scope)
        others = [(scope, name, value) for scope, name, value in assignments if name != "read_from_new_percent"]
        if others:

            def body(mappings, sink: Sink, current: str) -> dict:
                def effect() -> None:
                    for scope, name, value in others:
                        sink.statements.append(f"-- flag {scope}.{name} = {value}")
                        if not self.dry_run:
                            set_flag(self.conn, name, value, scope)

                self._commit("flags.committed", effect, "flags")
                return {"set": [f"{s}.{n}" for s, n, _ in others]}

            self._run("flags", PHASES, body, manages_roles=False)
        return {f"{s}.{n}": v for (s, n), v in flags(self.conn).items()}

    def cleanup(self, backup_dir: Path, timeouts: Timeouts | None = None) -> dict[str, Any]:
        """Backup first (sync triggers still on), then one transaction: lock, last delta, archive, promote,
        views, sync triggers off, reverse sync on, state. A failure keeps nothing but the backup."""
        sink = Sink(self.conn, self.dry_run)
        with advisory_lock(self.conn):
            owners.require_role_management(self.conn)
            if not self.dry_run:
                ensure_schema(self.conn)
            current = self._current()
            if current == "cleaned":
                return {"note": "already cleaned up: nothing to do", "statements": []}
            require_phase(current, ("verified", "switched"), "cleanup")
            if self.emitter is not None:
                self.emitter.check()
            mappings = validate(self.conn, self.plan)
            gate = self._gate("cleanup")
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
                mark = len(sink.ran)
                result = cleanup.move(self.conn, self.plan, mappings, sink)
                for statement in changes.remove_statements(self.conn, self.plan):  # verify's change capture: done
                    sink.run(statement)
                self._stage_migrations("cleanup", sink, mark)
                result["rows_caught_up_before_lock"] = before_lock
                result["backup"] = taken.location
                result["readiness"] = gate
                if not self.dry_run:
                    cleanup.record_run(
                        self.conn, self.plan, taken, result["dependents"], sink, result["sync_triggers_removed"]
                    )
                    set_flag(self.conn, "dual_write", False)
                    set_phase(self.conn, self.key, "cleaned")
                cleanup.notify_postgrest(sink)
                if not self.dry_run:
                    audit(self.conn, self.key, "cleanup", "cleanup", "ok", result, sink.statements)
                return result

            relations = cleanup.relation_names(self.conn, cleanup.cleanup_relations(self.plan))
            result = self._in_one_transaction("cleanup", move, relations, timeouts, f"kept: {taken.describe()}")
            faults.point("cleanup.committed")
        if self.emitter is not None:
            result["migrations"] = self.emitted
        result["statements"] = sink.statements
        return result

    def _in_one_transaction(self, phase: str, action, relations: list[str], timeouts: Timeouts | None, kept: str):
        """`action` in one transaction with lock retries; a failure is audited and says what was kept."""
        try:
            waits = cleanup.session_timeouts(self.conn, timeouts)
            return self._publishing(lambda: with_lock_retries(self.conn, action, phase, relations, waits))
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
            owners.require_role_management(self.conn)
            current = self._current()
            if current == "finalized":  # a finalize that committed, run again
                return {"note": "already finalized: nothing to do", "statements": []}
            require_phase(current, ("cleaned",), "finalize")
            if self.emitter is not None:
                self.emitter.check()
            cleanup.check_cleaned(self.conn, self.plan)
            taken = cleanup.last_backup(self.conn, self.plan)
            if not (keep_archive or no_backup_needed or cleanup.backup_present(self.conn, self.plan, taken)):
                where = taken.describe() if taken else "no backup recorded"
                raise ExecutorError(
                    f"finalize drops the archived old tables, and their backup is missing ({where}); restore it,"
                    " or pass --keep-archive, or --no-backup-needed to drop them anyway. Nothing was changed"
                )

            def drop() -> dict[str, Any]:
                mark = len(sink.ran)
                result = cleanup.finalize(self.conn, self.plan, sink, keep_archive)
                self._stage_migrations("finalize", sink, mark)
                if not self.dry_run:
                    set_phase(self.conn, self.key, "finalized")
                cleanup.notify_postgrest(sink)
                if not self.dry_run:
                    audit(self.conn, self.key, "finalize", "finalize", "ok", result, sink.statements)
                return result

            relations = cleanup.relation_names(self.conn, cleanup.cleaned_locking_order(self.plan))
            result = self._in_one_transaction("finalize", drop, relations, timeouts, "kept: everything as it was")
            faults.point("finalize.committed")
        if self.emitter is not None:
            result["migrations"] = self.emitted
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

            def to_verified() -> None:
                if not self.dry_run:
                    self.conn.execute(
                        "UPDATE dualshift.flags SET value = '0', updated_at = pg_catalog.now()"
                        " WHERE name = 'read_from_new_percent'"
                    )
                self._record("verified")

            self._commit("rollback.committed", to_verified, "rollback")
            return {"to": "verified"}
        if current == "verified":
            self._commit("rollback.committed", lambda: self._record("backfilled"), "rollback")
            return {"to": "backfilled"}
        emptying = current == "backfilled"  # backfilled → created: empty the new tables; created → none: drop them

        def undo() -> None:
            sync.remove(self.conn, self.plan, sink)
            for statement in changes.remove_statements(self.conn, self.plan):  # the next verify must be a full one
                sink.run(statement)
            new_tables = [sql.Identifier(self.plan.new_schema, t.name) for t in self.plan.tables]
            sink.run(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(new_tables)))
            self._refuse_losing_rows("empty" if emptying else "drop")
            for table in new_tables if emptying else reversed(new_tables):
                sink.run(sql.SQL("TRUNCATE {}" if emptying else "DROP TABLE {}").format(table))
            if not self.dry_run:
                self.conn.execute(
                    "DELETE FROM dualshift_private.checkpoints WHERE new_table = ANY(%s)",
                    ([t.name for t in self.plan.tables],),
                )
            self._record("created" if emptying else "none")
            sink.run(RELOAD_POSTGREST)

        self._commit("rollback.committed", undo, "rollback", tuple(self._relations()))
        if emptying:
            return {"to": "created", "note": "new tables emptied; every one of their rows is in an old table"}
        return {"to": "none", "note": "new tables dropped; every one of their rows is in an old table"}

    def _refuse_losing_rows(self, action: str) -> None:
        """Inside the rollback's transaction (the new tables locked): every new row's key must be in an
        old table, or the rollback would lose it."""
        only_new = {t.name: rows_only_in_new(self.conn, self.plan, t) for t in self.plan.tables}
        lost = {name: count for name, count in only_new.items() if count}
        if lost:
            raise ExecutorError(
                f"rollback refused: it would {action} the new tables, but "
                + ", ".join(f"{name} holds {count} rows no old table has" for name, count in lost.items())
                + "; copy them into the old tables first (nothing was changed)"
            )

    def _rollback_cleanup(self, timeouts: Timeouts | None = None) -> dict[str, Any]:
        """One transaction: the archive (kept in sync by the reverse triggers) back in place, the new tables
        back in new_schema, views and reverse triggers gone; refused if the archive misses a row."""
        sink = Sink(self.conn, self.dry_run)
        with advisory_lock(self.conn):
            owners.require_role_management(self.conn)
            current = self._current()
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

            relations = cleanup.relation_names(self.conn, cleanup.cleaned_locking_order(self.plan))
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
        seen = reconcile(self.conn, self.plan)
        recorded = state_row(self.conn, self.key)
        return {
            "plan": self.key,
            "phase": phase,
            "plan_changed": recorded is not None and recorded[1] not in (None, self.plan_hash),
            "catalog": seen.describe(),
            "catalog_agrees": phase in seen.phases,
            "tables": tables,
            "last_verify": last_verify(self.conn, self.key),
            "readiness": self.readiness(),
            **watch.cleanup_readiness(self.conn, self.plan),
        }

    def reconcile(self) -> dict[str, Any]:
        """Record the phase the catalog shows when the state row disagrees with it (a crash of an older
        dualshift between a commit and its state): the earliest phase consistent with the catalog, so
        that every later phase (backfill, verify) runs again."""
        with advisory_lock(self.conn):
            if not self.dry_run:
                ensure_schema(self.conn)
            current = current_phase(self.conn, self.key)
            seen = reconcile(self.conn, self.plan)
            if current in seen.phases:
                return {"phase": current, "catalog": seen.describe(), "note": "state and catalog agree: nothing to do"}
            if not seen.phases:
                raise ExecutorError(
                    f"reconcile: the catalog shows {seen.describe()}, which is no phase of plan {self.key};"
                    " put the tables back by hand (nothing was changed)"
                )
            if seen.phases[0] in ALL_BEFORE_CLEANUP and not seen.exact_columns:
                raise ExecutorError(
                    f"reconcile: the new tables in {self.plan.new_schema} do not have exactly the plan's columns;"
                    " drop them by hand or fix the plan (nothing was changed)"
                )
            target = seen.phases[0]
            with self.conn.transaction():
                self._record(target)
                if not self.dry_run:
                    audit(
                        self.conn,
                        self.key,
                        target,
                        "reconcile",
                        "ok",
                        {"from": current, "catalog": seen.describe()},
                        [],
                    )
            if not self.dry_run:
                faults.point("reconcile.committed")
            return {"from": current, "to": target, "catalog": seen.describe(), "statements": []}


def _count(conn: psycopg.Connection, schema: str, table: str) -> int | None:
    if conn.execute("SELECT pg_catalog.to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()[0] is None:
        return None
    return conn.execute(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[
        0
    ]


def _reading_new(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT coalesce(pg_catalog.max((value #>> '{}')::int), 0) FROM dualshift.flags"
        " WHERE name = 'read_from_new_percent'"
    ).fetchone()
    return bool(row[0])
