"""Phases `cleanup` and `finalize`, and the rollback of cleanup.

cleanup, with no window:
1. the backup first, while the sync triggers still mirror every write: `pg_dump` of the old tables,
   credentials only in its environment, written 0600 in a 0700 directory, killed with us;
2. then ONE transaction (retried on lock timeouts): every old and new table locked in one statement
   in a fixed order, the last delta caught up with the backfill's precedence rule, the sync triggers
   dropped, the old tables moved to the archive schema, the new tables promoted, the compatibility
   views, the reverse-sync triggers (reverse_sync.py), the phase, `NOTIFY pgrst`. A failure keeps
   nothing of it; only the backup file stays.

Until `finalize`, the reverse-sync triggers keep the archived tables equal to what the new tables
hold, so the rollback of cleanup is one transaction that moves everything back, with no carry-back,
and turns back on the sync triggers cleanup removed (the run records which).
`finalize` drops the reverse-sync triggers and (unless kept) the archive.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import stat
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from dualshift.executor import dependents, names, reverse_sync, sync, views
from dualshift.executor.catalog import SourceMapping, table_exists, validate
from dualshift.executor.connection import ExecutorError, Sink, Timeouts, lock_in_turn
from dualshift.plan import NewTable, Plan, Source

# libpq's connection parameters and the environment variables that carry them, so that pg_dump
# gets the connection without a word of it on its command line (readable by anyone in /proc).
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "channel_binding": "PGCHANNELBINDING",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
RUNS = sql.Identifier(names.PRIVATE_SCHEMA, "cleanup_runs")  # each cleanup: its backup, its dependents
PG_DUMP_LOCK_WAIT_MS = 60_000
PR_SET_PDEATHSIG = 1
try:  # Linux: the child dies with us even when we are SIGKILLed (no orphaned pg_dump)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


@dataclass(frozen=True)
class Backup:
    kind: str  # "pg_dump" | "copies" | "dry run"
    location: str

    def describe(self) -> str:
        if self.kind == "pg_dump":
            return f"the backup file {self.location}"
        if self.kind == "copies":
            return f"the backup copies in schema {self.location}"
        return "nothing (dry run)"


# ─── backup ──────────────────────────────────────────────────────────────────────────────────────


def pg_environment(dsn: str) -> dict[str, str]:
    """The process environment with the DSN's parameters as PG* variables (password included)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ExecutorError(f"the connection string cannot be parsed: {str(exc).strip().splitlines()[0]}") from exc
    env = dict(os.environ)
    for key, value in params.items():
        if key in LIBPQ_ENV and value is not None:
            env[LIBPQ_ENV[key]] = str(value)
    env["PGAPPNAME"] = "dualshift backup"
    return env


def private_directory(path: Path) -> Path:
    """`path`, created 0700 if missing; refused when others may write into it (or it is not ours)."""
    path = Path(path)
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # mkdir's mode is masked by the umask
    info = path.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise ExecutorError(f"backup directory {path} is not a directory")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ExecutorError(
            f"backup directory {path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o});"
            " the backup holds every old row: use a directory only you can write (chmod 700)"
        )
    if info.st_uid != os.geteuid():
        raise ExecutorError(f"backup directory {path} belongs to another user (uid {info.st_uid})")
    return path


def _die_with_parent(parent: int) -> None:
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_pg_dump(command: list[str], env: dict[str, str], target: Path) -> None:
    """pg_dump into `target` (created 0600, never overwritten), in its own process group, killed with
    us: on an exception or Ctrl-C here, and by the kernel if we are killed outright."""
    partial = target.with_name(target.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    parent = os.getpid()
    try:
        with os.fdopen(fd, "wb") as out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
                preexec_fn=lambda: _die_with_parent(parent),  # only a prctl call: safe after fork
            )
            try:
                _, errors = process.communicate()
            except BaseException:
                _kill_group(process)
                raise
        if process.returncode != 0:
            message = errors.decode(errors="replace").strip().splitlines()
            raise ExecutorError(f"pg_dump failed: {message[-1] if message else f'exit {process.returncode}'}")
        partial.rename(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def schema_moves(plan: Plan, back: bool) -> list[sql.Composable]:
    """Cleanup's move (old tables to the archive, new ones to the target schema) or, `back`, its undoing."""
    moves: list[tuple[str, str, str]] = []  # (schema now, table, schema after)
    for table in plan.tables:
        moves += [(s.schema, s.table, plan.archive_schema) for s in table.sources]
        if plan.new_schema != plan.target_schema:
            moves.append((plan.new_schema, table.name, plan.target_schema))
    if back:
        moves = [(after, name, now) for now, name, after in moves]
    return [
        sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(sql.Identifier(now, name), sql.Identifier(after))
        for now, name, after in moves
    ]


def backup(conn: psycopg.Connection, plan: Plan, dsn: str, backup_dir: Path, sink: Sink) -> Backup:
    """The old tables saved before anything moves, while the sync triggers still run."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    pg_dump = shutil.which("pg_dump")
    tables = [f"{source.schema}.{source.table}" for t in plan.tables for source in t.sources]
    if pg_dump:
        command = [pg_dump, "--no-password", f"--lock-wait-timeout={PG_DUMP_LOCK_WAIT_MS}"]
        for table in plan.tables:
            for source in table.sources:
                command += ["--table", sql.Identifier(source.schema, source.table).as_string(conn)]
        if sink.dry_run:
            sink.statements.append(f"-- backup: {' '.join(command)} > {backup_dir}/{plan.name}_{stamp}.sql")
            return Backup("dry run", "")
        target = private_directory(backup_dir) / f"dualshift_{plan.name}_{stamp}.sql"
        sink.statements.append(f"-- backup: pg_dump of {', '.join(tables)} > {target}")
        run_pg_dump(command, pg_environment(dsn), target)
        return Backup("pg_dump", str(target))
    with conn.transaction():
        sink.run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plan.archive_schema)))
        for table in plan.tables:
            for source in table.sources:
                sink.run(
                    sql.SQL("CREATE TABLE {} AS TABLE {}").format(
                        sql.Identifier(plan.archive_schema, names.fit(source.table, "backup", stamp)),
                        sql.Identifier(source.schema, source.table),
                    )
                )
    return Backup("copies", plan.archive_schema)


def record_run(
    conn: psycopg.Connection,
    plan: Plan,
    taken: Backup,
    captured: dict | None,
    sink: Sink,
    sync_triggers: list[str] | None = None,
) -> None:
    """Inside cleanup's transaction: where its backup is (for finalize), what it re-pointed and which old
    tables had sync triggers (both for rollback)."""
    sink.run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.PRIVATE_SCHEMA)))
    sink.run(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, plan text NOT NULL,"
            " at timestamptz NOT NULL DEFAULT now(), backup_kind text NOT NULL, backup_location text NOT NULL,"
            " dependents jsonb)"
        ).format(RUNS)
    )
    sink.run(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS sync_triggers text[]").format(RUNS))
    sink.run(
        sql.SQL(
            "INSERT INTO {} (plan, backup_kind, backup_location, dependents, sync_triggers) VALUES ({}, {}, {}, {}, {})"
        ).format(
            RUNS,
            sql.Literal(plan.name),
            sql.Literal(taken.kind),
            sql.Literal(taken.location),
            sql.Literal(None if captured is None else Jsonb(captured)),
            sql.Literal(sorted(sync_triggers or [])),
        )
    )


def _last_run(conn: psycopg.Connection, plan: Plan) -> tuple | None:
    """(backup kind, backup location, dependents, old tables that had sync triggers) of the last cleanup."""
    if not table_exists(conn, names.PRIVATE_SCHEMA, "cleanup_runs"):
        return None
    had_sync = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass(%s)"
        " AND attname = 'sync_triggers' AND NOT attisdropped",
        (RUNS.as_string(conn),),
    ).fetchone()
    column = sql.SQL("sync_triggers") if had_sync else sql.SQL("CAST(NULL AS text[])")  # a run of an older dualshift
    return conn.execute(
        sql.SQL(
            "SELECT backup_kind, backup_location, dependents, {} FROM {} WHERE plan = %s ORDER BY id DESC LIMIT 1"
        ).format(column, RUNS),
        (plan.name,),
    ).fetchone()


def last_backup(conn: psycopg.Connection, plan: Plan) -> Backup | None:
    run = _last_run(conn, plan)
    return None if run is None else Backup(run[0], run[1])


def backup_present(conn: psycopg.Connection, plan: Plan, taken: Backup | None) -> bool:
    if taken is None:
        return False
    if taken.kind == "pg_dump":
        path = Path(taken.location)
        return path.is_file() and path.stat().st_size > 0
    if taken.kind == "copies":
        return all(
            conn.execute(
                "SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename LIKE %s",
                (taken.location, f"{source.table[:40]}%backup%"),
            ).fetchone()[0]
            for t in plan.tables
            for source in t.sources
        )
    return False


# ─── the move ───────────────────────────────────────────────────────────────────────────────────


def _setting_ms(conn: psycopg.Connection, name: str) -> int:
    return int(conn.execute("SELECT setting FROM pg_catalog.pg_settings WHERE name = %s", (name,)).fetchone()[0])


def session_timeouts(conn: psycopg.Connection, asked: Timeouts | None = None) -> Timeouts:
    """The lock timeout asked for (else the session's, from --lock-timeout-ms), at most half the
    server's deadlock_timeout. Application writes take their locks in orders no single order of ours
    can match (a write to one source locks it, then the new table, then the other sources), so a cycle
    can form; with the shorter wait ours always ends first, by a lock timeout that is retried, and the
    deadlock detector never aborts an application write."""
    if asked is None:
        session_ms = _setting_ms(conn, "lock_timeout")
        asked = Timeouts(lock_ms=session_ms) if session_ms > 0 else Timeouts()
    cap = max(1, _setting_ms(conn, "deadlock_timeout") // 2)
    return replace(asked, lock_ms=min(asked.lock_ms, cap)) if asked.lock_ms > cap else asked


def relation_names(conn: psycopg.Connection, relations: list[sql.Identifier]) -> list[str]:
    return [relation.as_string(conn) for relation in relations]


def present(conn: psycopg.Connection, relations: list[sql.Identifier]) -> list[sql.Identifier]:
    """The relations that exist (a view dropped by hand must not stop the rollback)."""
    return [
        r for r in relations if conn.execute("SELECT pg_catalog.to_regclass(%s)", (r.as_string(conn),)).fetchone()[0]
    ]


def _sorted(pairs: set[tuple[str, str]]) -> list[sql.Identifier]:
    return [sql.Identifier(schema, name) for schema, name in sorted(pairs)]


# Lock orders follow the application's own: a write to an old table locks it, then its sync trigger
# locks the new table; after cleanup a write through a view locks the view, the new table, then
# (reverse sync) the archived table. Taking ours in the same order leaves no deadlock cycle.


def cleanup_relations(plan: Plan) -> list[sql.Identifier]:
    """Before cleanup: the old tables, then the new ones, each group sorted by qualified name."""
    return _sorted({(s.schema, s.table) for t in plan.tables for s in t.sources}) + _sorted(
        {(plan.new_schema, t.name) for t in plan.tables}
    )


def cleanup_locking_order(plan: Plan) -> list[sql.Identifier]:
    """Before cleanup, what its move locks, in the order a write takes it, table by table in the plan's
    order: its old tables in precedence order (a write locks one, its sync trigger the new table), then
    the new table."""
    order: list[sql.Identifier] = []
    for table in plan.tables:
        order += [sql.Identifier(s.schema, s.table) for s in table.sources]
        order.append(sql.Identifier(plan.new_schema, table.name))
    return order


def cleaned_locking_order(plan: Plan) -> list[sql.Identifier]:
    """After cleanup, what finalize and the rollback of cleanup lock, in the order a write through a view
    takes it, table by table in the plan's order: its views in precedence order (an application writing
    both twins in one transaction writes the first one first), the new table, its archived tables."""
    order: list[tuple[str, str]] = []
    for table in plan.tables:
        order += [(s.schema, s.table) for s in table.sources]
        order.append((plan.target_schema, table.name))
        order += [(plan.archive_schema, s.table) for s in table.sources]
    return [sql.Identifier(schema, name) for schema, name in dict.fromkeys(order)]


def check_before_cleanup(conn: psycopg.Connection, plan: Plan) -> None:
    """The catalog must say what the state row says: old tables in place, new tables built, archive free."""
    for table in plan.tables:
        if not table_exists(conn, plan.new_schema, table.name):
            raise ExecutorError(f"{plan.new_schema}.{table.name} does not exist; the catalog disagrees with the state")
        for source in table.sources:
            if table_exists(conn, plan.archive_schema, source.table):
                raise ExecutorError(
                    f"{plan.archive_schema}.{source.table} already exists; move it away first (nothing was changed)"
                )
        if plan.new_schema != plan.target_schema and table_exists(conn, plan.target_schema, table.name):
            raise ExecutorError(f"{plan.target_schema}.{table.name} already exists; nothing was changed")
    dependents.capture(conn, plan)  # refuses a foreign key that cannot follow, before the backup


def _key_in_new(table: NewTable, source: Source, plan: Plan, alias: str = "o") -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("n.{} = CAST({} AS {})").format(
            sql.Identifier(new), sql.Identifier(alias, old), sql.SQL(table.column(new).type)
        )
        for old, new in zip(source.key, table.key, strict=True)
    )


def catch_up(conn: psycopg.Connection, plan: Plan, mapping: SourceMapping, sink: Sink) -> int:
    """Copy the source's rows whose key the new table lacks (none while the sync triggers ran). Sources
    run in precedence order and a later one never overwrites: the backfill's rule."""
    table, source = mapping.table, mapping.source
    new = sql.Identifier(plan.new_schema, table.name)
    statement = sql.SQL(
        "INSERT INTO {new} ({columns}) SELECT {select} FROM {old} o"
        " WHERE NOT EXISTS (SELECT 1 FROM {new} n WHERE {match}) ON CONFLICT ({key}) DO NOTHING"
    ).format(
        new=new,
        columns=sql.SQL(", ").join(map(sql.Identifier, mapping.new_columns)),
        select=mapping.select_list(),
        old=sql.Identifier(source.schema, source.table),
        match=_key_in_new(table, source, plan),
        key=sql.SQL(", ").join(map(sql.Identifier, table.key)),
    )
    sink.statements.append(sink.text(statement))
    return 0 if sink.dry_run else conn.execute(statement).rowcount


def catch_up_all(
    conn: psycopg.Connection, plan: Plan, mappings: dict[tuple[str, str], SourceMapping], sink: Sink
) -> dict[str, int]:
    return {
        table.name: sum(catch_up(conn, plan, mappings[(table.name, source.table)], sink) for source in table.sources)
        for table in plan.tables
    }


def delta_impossible(conn: psycopg.Connection, plan: Plan) -> bool:
    """Every old table still has its sync trigger enabled and no mirror failed since: every write
    committed since the last catch-up is in the new tables, so a scan under the locks would find none."""
    for table in plan.tables:
        for source in table.sources:
            enabled = conn.execute(
                "SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = pg_catalog.to_regclass(%s)"
                " AND tgname = %s AND tgenabled <> 'D'",
                (sql.Identifier(source.schema, source.table).as_string(conn), sync.TRIGGER),
            ).fetchone()[0]
            if not enabled:
                return False
    failed = conn.execute(
        "SELECT count(*) FROM dualshift.failed_writes WHERE new_table = ANY(%s) AND replayed_at IS NULL"
        " AND call_site IS DISTINCT FROM %s",
        ([t.name for t in plan.tables], reverse_sync.CALL_SITE),
    ).fetchone()[0]
    return failed == 0


def move(
    conn: psycopg.Connection, plan: Plan, mappings: dict[tuple[str, str], SourceMapping], sink: Sink
) -> dict[str, object]:
    """Everything of cleanup after the backup, inside the caller's transaction (which holds no lock yet).
    The caller ran `catch_up_all` just before, without these locks; under them the last delta is caught
    up again unless the sync triggers make one impossible (a scan here would stall the application)."""
    lock_in_turn(sink, cleanup_locking_order(plan))
    captured = dependents.capture(conn, plan)  # before anything moves
    caught_up: dict[str, int] | str = "none possible: every source kept its sync trigger and no mirror failed"
    if sink.dry_run or not delta_impossible(conn, plan):
        caught_up = catch_up_all(conn, plan, mappings, sink)
    had_sync = sorted(sync.covered_tables(conn, plan))  # a rollback of cleanup turns them back on
    sync.remove(conn, plan, sink)
    with sink.concern("archive"):  # the steps name cleanup's `--emit-migrations` files
        sink.run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plan.archive_schema)))
        if plan.new_schema != plan.target_schema:
            sink.run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plan.target_schema)))
        for statement in schema_moves(plan, back=False):
            sink.run(statement)
    if sink.dry_run:  # what follows is read from the moved tables, which a dry run does not move
        sink.statements.append(
            "-- then: the compatibility views under the old names, the dependents carried over, and a reverse-sync"
            f" trigger on each of {', '.join(f'{plan.target_schema}.{t.name}' for t in plan.tables)}"
        )
        made_views = [f"{s.schema}.{s.table}" for t in plan.tables for s in t.sources]
    else:
        made_views = after_move(conn, plan, mappings, captured, sink)
    return {
        "views": made_views,
        "rows_caught_up_under_lock": caught_up,
        "sync_triggers_removed": had_sync,
        "dependents": None if captured is None else captured.to_json(),
        "needs_decision": [] if captured is None else captured.needs_decision,
    }


def after_move(
    conn: psycopg.Connection,
    plan: Plan,
    mappings: dict[tuple[str, str], SourceMapping],
    captured: object | None,
    sink: Sink,
) -> list[str]:
    """With the old tables archived and the new ones promoted: views, dependents, reverse sync."""
    made_views = []
    sink.run_all(views.owner_statements(conn, plan), "views")  # the role that owns the views' write triggers
    for table in plan.tables:
        for source in table.sources:
            sink.run_all(views.compat_view_statements(conn, plan, mappings[(table.name, source.table)]), "views")
            made_views.append(f"{source.schema}.{source.table}")
    if captured is not None:
        sink.run_all(dependents.after_move_statements(conn, plan, captured), "dependents")
    for table in plan.tables:
        sink.run_all(reverse_sync.install_statements(conn, plan, table), "reverse_sync")
    return made_views


def notify_postgrest(sink: Sink) -> None:
    """PostgREST reloads its schema cache when the transaction commits."""
    sink.run(sql.SQL("NOTIFY pgrst, 'reload schema'"))


# ─── rollback of cleanup and finalize ─────────────────────────────────────────────────────────────


def check_cleaned(conn: psycopg.Connection, plan: Plan) -> None:
    """The catalog must show a cleaned-up migration: archived old tables, promoted new tables."""
    for table in plan.tables:
        if not table_exists(conn, plan.target_schema, table.name):
            raise ExecutorError(f"{plan.target_schema}.{table.name} does not exist; nothing was changed")
        for source in table.sources:
            if not table_exists(conn, plan.archive_schema, source.table):
                raise ExecutorError(
                    f"{plan.archive_schema}.{source.table} does not exist: the archive is gone; nothing was changed"
                )


def _held_by(table: NewTable, source: Source, plan: Plan) -> sql.Composable:
    """SQL true when the archived source holds the key of new-table row `n`."""
    return sql.SQL("EXISTS (SELECT 1 FROM {} o WHERE {})").format(
        sql.Identifier(plan.archive_schema, source.table), _key_in_new(table, source, plan)
    )


def rows_missing_from_archive(conn: psycopg.Connection, plan: Plan, table: NewTable) -> int:
    """New-table rows the archive does not hold: by their owner (partitions) or by any source (twins).
    One anti-join per source (an OR of EXISTS would probe every row)."""
    new = sql.Identifier(plan.target_schema, table.name)
    if table.sources_are != "partitions":
        absent = sql.SQL(" AND ").join(sql.SQL("NOT {}").format(_held_by(table, s, plan)) for s in table.sources)
        return conn.execute(sql.SQL("SELECT count(*) FROM {} AS n WHERE {}").format(new, absent)).fetchone()[0]
    missing = 0
    for source in table.sources:
        statement = sql.SQL("SELECT count(*) FROM {} AS n WHERE coalesce(({}), false) AND NOT {}").format(
            new, sql.SQL(table.partition_predicate(source.table)), _held_by(table, source, plan)
        )
        missing += conn.execute(statement).fetchone()[0]
    return missing


def refuse_unless_archive_complete(conn: psycopg.Connection, plan: Plan) -> None:
    failures = reverse_sync.unrepaired_failures(conn, plan)
    if failures:
        raise ExecutorError(
            f"{failures} write(s) to the new tables could not be mirrored into the archive (dualshift.failed_writes,"
            f" call_site '{reverse_sync.CALL_SITE}'); repair the archived rows, set their replayed_at, then run"
            " rollback again. Nothing was changed"
        )
    missing = {t.name: n for t in plan.tables if (n := rows_missing_from_archive(conn, plan, t))}
    if missing:
        detail = ", ".join(f"{n} row(s) of {t}" for t, n in missing.items())
        raise ExecutorError(
            f"the archive in {plan.archive_schema} misses {detail}; rolling back would lose them. Nothing was changed"
        )


def move_back(conn: psycopg.Connection, plan: Plan, sink: Sink) -> dict[str, object]:
    """The rollback of cleanup inside the caller's transaction: refused unless the archive holds every row."""
    lock_in_turn(sink, present(conn, cleaned_locking_order(plan)))
    refuse_unless_archive_complete(conn, plan)  # read-only: a dry run reports the refusal too
    run = _last_run(conn, plan)
    captured = dependents.Captured.from_json(run[2]) if run and run[2] else None
    undo = dependents.rollback_statements(conn, plan, captured)  # while the compatibility views exist
    for statement in undo.before_restore:
        sink.run(statement)
    for table in plan.tables:
        for position, source in enumerate(table.sources):  # each view and its INSTEAD OF trigger function
            for statement in views.drop_statements(plan, SourceMapping(table, source, position, ())):
                sink.run(statement)
    for statement in views.remove_owner_statements(conn, plan):
        sink.run(statement)
    for table in plan.tables:
        for statement in reverse_sync.remove_statements(plan, table, plan.target_schema):
            sink.run(statement)
    for statement in reverse_sync.remove_owner_statements(conn, plan):
        sink.run(statement)
    for statement in schema_moves(plan, back=True):
        sink.run(statement)
    for statement in undo.after_restore:
        sink.run(statement)
    return {
        "restored": [f"{s.schema}.{s.table}" for t in plan.tables for s in t.sources],
        "sync_triggers_restored": restore_sync_triggers(conn, plan, list(run[3] or []) if run else [], sink),
    }


def restore_sync_triggers(conn: psycopg.Connection, plan: Plan, tables: list[str], sink: Sink) -> list[str]:
    """Inside the rollback's transaction, with the old tables back in place: the sync triggers cleanup
    removed from `tables`, with their role, grants and functions, so that the migration is back at a
    phase where every write to an old table reaches the new one, with no moment in between."""
    if not tables:
        return []
    if sink.dry_run:  # the moves above did not run: there is nothing in place to read the mappings from
        sink.statements.append(f"-- then: the sync triggers back on {', '.join(tables)}")
        return tables
    mappings = validate(conn, plan)
    role = sync.role_name(conn, plan)
    restored = []
    for table in plan.tables:
        table_mappings = [mappings[(table.name, s.table)] for s in table.sources]
        covered = [m for m in table_mappings if m.source.table in tables]
        if not covered:
            continue
        for statement in sync.prepare_statements(conn, plan, role, table_mappings):
            sink.run(statement)
        for mapping in covered:
            for statement in sync.trigger_statements(conn, role, mapping):
                sink.run(statement)
            restored.append(f"{mapping.source.schema}.{mapping.source.table}")
    return restored


def finalize(conn: psycopg.Connection, plan: Plan, sink: Sink, keep_archive: bool) -> dict[str, object]:
    """Inside the caller's transaction: the reverse sync stops; the archive goes unless kept. The views
    are locked too: none of their defaults may draw from a sequence while it is being replaced."""
    lock_in_turn(sink, present(conn, cleaned_locking_order(plan)))
    for table in plan.tables:
        sink.run_all(reverse_sync.remove_statements(plan, table, plan.target_schema), "reverse_sync_off")
    sink.run_all(reverse_sync.remove_owner_statements(conn, plan), "reverse_sync_off")
    for table in plan.tables:  # the views' numbering leaves the archived sequences first
        for source in table.sources:
            sink.run_all(views.finalize_statements(conn, plan, table, source), "reverse_sync_off")
    dropped: list[str] = []
    kept: list[str] = []
    if not keep_archive:
        for table in plan.tables:
            for source in table.sources:
                archived = sql.Identifier(plan.archive_schema, source.table)
                for sequence in sequences_in_use(conn, archived):
                    kept.append(sequence.replacement(source.schema))
                    sink.run_all(sequence.replace_statements(conn, source.schema), "drop_archive")
                sink.run_all([sql.SQL("DROP TABLE {}").format(archived)], "drop_archive")
                dropped.append(f"{plan.archive_schema}.{source.table}")
    return {"archive_dropped": dropped, "archive_kept": keep_archive, "sequences_kept": kept}


@dataclass(frozen=True)
class SequenceInUse:
    """A sequence an archived table owns (serial or identity) that a default elsewhere draws from (a
    compatibility view's `id`, say): dropping the table would drop it, so finalize puts a copy, at the
    same value and with the same grants, back where the old table was and points those defaults to it."""

    oid: int
    name: str
    qualified: str  # regclass text of the archived sequence
    defaults: tuple[tuple[str, str, str], ...]  # (relation regclass text, column, default expression)

    def replacement(self, schema: str) -> str:
        return f"{schema}.{self.name}"

    def replace_statements(self, conn: psycopg.Connection, schema: str) -> list[sql.Composable]:
        new = sql.Identifier(schema, self.name)
        if conn.execute("SELECT pg_catalog.to_regclass(%s)", (new.as_string(conn),)).fetchone()[0] is not None:
            raise ExecutorError(
                f"{self.qualified} must outlive the archive (defaults draw from it) but {schema}.{self.name}"
                " already exists; rename it and run finalize again. Nothing was changed"
            )
        type_, increment, low, high, cache, cycle, owner = conn.execute(
            "SELECT pg_catalog.format_type(q.seqtypid, NULL), q.seqincrement, q.seqmin, q.seqmax, q.seqcache,"
            " q.seqcycle, pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_sequence q"
            " JOIN pg_catalog.pg_class c ON c.oid = q.seqrelid WHERE q.seqrelid = %s",
            (self.oid,),
        ).fetchone()
        last, called = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(self.qualified))
        ).fetchone()
        statements: list[sql.Composable] = [
            sql.SQL("CREATE SEQUENCE {} AS {} INCREMENT {} MINVALUE {} MAXVALUE {} CACHE {} {}").format(
                new,
                sql.SQL(type_),
                sql.Literal(increment),
                sql.Literal(low),
                sql.Literal(high),
                sql.Literal(cache),
                sql.SQL("CYCLE" if cycle else "NO CYCLE"),
            ),
            sql.SQL("SELECT pg_catalog.setval({}, {}, {})").format(
                sql.Literal(new.as_string(conn)), sql.Literal(last), sql.Literal(called)
            ),
            sql.SQL("ALTER SEQUENCE {} OWNER TO {}").format(new, sql.Identifier(owner)),
        ]
        grants = conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END, a.privilege_type"
            " FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a"
            " LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee WHERE c.oid = %s ORDER BY 1, 2",
            (self.oid,),
        ).fetchall()
        statements += [
            sql.SQL("GRANT {} ON SEQUENCE {} TO {}").format(sql.SQL(privilege), new, sql.SQL(grantee))
            for grantee, privilege in grants
        ]
        drawing = f"nextval('{self.qualified}'::regclass)"
        for relation, column, expression in self.defaults:
            if expression != drawing:
                raise ExecutorError(
                    f"the default of {relation}.{column} ({expression}) uses {self.qualified}, which finalize would"
                    f" drop with the archive; make it nextval('{self.qualified}'::regclass) or drop it. Nothing was"
                    " changed"
                )
            statements.append(
                sql.SQL(
                    "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT pg_catalog.nextval({}::pg_catalog.regclass)"
                ).format(sql.SQL(relation), sql.Identifier(column), sql.Literal(new.as_string(conn)))
            )
        return statements


def sequences_in_use(conn: psycopg.Connection, archived: sql.Identifier) -> list[SequenceInUse]:
    """The sequences the archived table owns that a default of another relation draws from."""
    rows = conn.execute(
        "SELECT s.oid, s.relname, s.oid::pg_catalog.regclass::pg_catalog.text,"
        " ad.adrelid::pg_catalog.regclass::pg_catalog.text, a.attname, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid)"
        " FROM pg_catalog.pg_depend owned"
        " JOIN pg_catalog.pg_class s ON s.oid = owned.objid AND s.relkind = 'S'"
        " JOIN pg_catalog.pg_depend used ON used.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass"
        "  AND used.refobjid = s.oid AND used.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass"
        " JOIN pg_catalog.pg_attrdef ad ON ad.oid = used.objid"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum"
        " WHERE owned.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
        " AND owned.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass"
        " AND owned.refobjid = pg_catalog.to_regclass(%s) AND owned.deptype IN ('a', 'i')"
        " AND ad.adrelid <> owned.refobjid ORDER BY 3, 4, 5",
        (archived.as_string(conn),),
    ).fetchall()
    found: dict[int, SequenceInUse] = {}
    for oid, name, qualified, relation, column, expression in rows:
        known = found.get(oid)
        defaults = (known.defaults if known else ()) + ((relation, column, expression),)
        found[oid] = SequenceInUse(oid, name, qualified, defaults)
    return list(found.values())
