"""`dualshift migrate …`: run the blue-green consolidation on PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dualshift.console import fail

migrate_app = typer.Typer(
    help="Run the migration phases on a real PostgreSQL: snapshot, create, backfill, verify, switch-reads, "
    "cleanup; rollback from any of them; status and flags.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(migrate_app, name="migrate")
    app.command("demo")(demo_command)


def demo_command(
    dsn: str = typer.Option(
        None,
        "--dsn",
        help="An empty database to use (default: $DATABASE_URL's server or "
        "127.0.0.1:5432 with a fresh database, else a throwaway cluster from the local binaries).",
    ),
    rows: int = typer.Option(20000, "--rows", help="Content rows in the old tables (posts and metrics follow)."),
    writers: int = typer.Option(2, "--writers", help="Simulated application writers during the migration."),
) -> None:
    """Run the seeds' 9 → 3 consolidation end to end while writers keep writing; report each phase."""
    from dualshift.executor.demo import run_demo

    console = Console()
    try:
        result = run_demo(dsn, rows, writers, report=lambda line: console.print(line, style="dim"))
    except Exception as exc:  # the demo is a whole story: any failure ends it with its reason
        raise fail(f"demo failed: {exc}") from exc
    table = Table(title="dualshift demo: 9 tables → 3")
    for column in ("phase", "seconds", "result"):
        table.add_column(column)
    for row in result.phases:
        table.add_row(row.phase, f"{row.seconds:.2f}", row.detail)
    console.print(table)
    console.print(
        f"parity {'100 %' if result.parity_passed else 'FAILED'} · writers wrote {result.rows_written_by_writers} rows "
        f"during the migration · {result.rows_lost} lost · "
        + ", ".join(f"{t}: {n} rows" for t, n in result.tables.items()),
        highlight=False,
    )
    if not result.parity_passed or result.rows_lost:
        raise typer.Exit(1)


@migrate_app.callback()
def options(
    context: typer.Context,
    dsn: str = typer.Option(None, "--dsn", envvar="DATABASE_URL", help="PostgreSQL connection string ($DATABASE_URL)."),
    plan: Path = typer.Option(Path("dualshift.toml"), "--plan", help="The plan (dualshift.toml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact SQL; change nothing."),
    lock_timeout_ms: int = typer.Option(3000, "--lock-timeout-ms", help="Give up on a table lock after this long."),
) -> None:
    context.obj = {"dsn": dsn, "plan": plan, "dry_run": dry_run, "lock_timeout_ms": lock_timeout_ms}


def _executor(context: typer.Context, progress=None):
    from dualshift.executor.connection import ExecutorError, Timeouts, connect
    from dualshift.executor.phases import Executor
    from dualshift.plan import PlanError, load_plan

    settings = context.obj
    if not settings["dsn"]:
        raise fail("no database: pass --dsn or set DATABASE_URL")
    try:
        plan = load_plan(settings["plan"])
    except PlanError as exc:
        raise fail(str(exc)) from exc
    try:
        conn = connect(settings["dsn"], Timeouts(lock_ms=settings["lock_timeout_ms"]))
    except ExecutorError as exc:
        raise fail(str(exc)) from exc
    executor = Executor(conn, plan, settings["dsn"], settings["dry_run"])
    if progress is not None:
        executor.progress = progress
    return executor


def _perform(context: typer.Context, action, progress=None) -> dict[str, Any]:
    import psycopg

    from dualshift.executor.connection import ExecutorError

    executor = _executor(context, progress)
    try:
        return action(executor)
    except ExecutorError as exc:
        raise fail(str(exc)) from exc
    except psycopg.Error as exc:
        raise fail(f"database error: {str(exc).strip().splitlines()[0]} (nothing of this step was kept)") from exc
    finally:
        executor.conn.close()


def _print(result: dict[str, Any], dry_run: bool) -> None:
    statements = result.pop("statements", [])
    if dry_run:
        for statement in statements:
            typer.echo(statement.rstrip(";") + ";")
        return
    typer.echo(json.dumps(result, indent=2, default=str))


@migrate_app.command("snapshot")
def snapshot_command(
    context: typer.Context, out_dir: Path = typer.Option(Path("."), "--out-dir", help="Where to write the snapshot.")
) -> None:
    """Write PRODUCTION_SCHEMA_SNAPSHOT.sql and .json: tables, columns, constraints, indexes, RLS, policies,
    grants and row counts of the plan's schemas. Read-only."""
    _print(_perform(context, lambda e: e.snapshot(out_dir)), False)


@migrate_app.command("create")
def create_command(context: typer.Context) -> None:
    """Create the new tables beside the old ones (constraints, indexes, the old tables' grants and RLS)."""
    _print(_perform(context, lambda e: e.create()), context.obj["dry_run"])


@migrate_app.command("backfill")
def backfill_command(
    context: typer.Context,
    batch_size: int = typer.Option(5000, "--batch-size", help="Rows per batch (one transaction each)."),
    max_rows_per_s: float = typer.Option(0, "--max-rows-per-s", help="Throttle; 0 means as fast as the database goes."),
    max_batches: int = typer.Option(0, "--max-batches", help="Stop after this many batches per source (0: no limit)."),
    sync_mode: str = typer.Option(
        "none",
        "--sync",
        help="'triggers': also mirror every write on the old tables into the new ones in the same "
        "transaction, for call sites not yet rewritten (removed by rollback and cleanup).",
    ),
) -> None:
    """Copy old → new in keyset-paginated, checkpointed batches inside the database; resumable after a crash.
    A completed pass also repairs the writes the wrapper recorded as failed."""
    from dualshift.executor.backfill import BackfillOptions

    options = BackfillOptions(batch_size, max_rows_per_s or None, max_batches or None)
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=max(total, done))

        if sync_mode not in ("none", "triggers"):
            raise fail(f"--sync {sync_mode}: choose none or triggers")
        result = _perform(context, lambda e: e.backfill(options, sync_mode == "triggers"), progress)
    _print(result, context.obj["dry_run"])
    if not result.get("complete", True):
        raise typer.Exit(3)


@migrate_app.command("verify")
def verify_command(
    context: typer.Context,
    report: Path = typer.Option(None, "--report", help="Also write the report: .json or .md by the file's suffix."),
) -> None:
    """Parity per new table and per source, in the database; exit 0 only when the plan's thresholds hold."""
    from dualshift.executor.verify import markdown, ranges_text

    result = _perform(context, lambda e: e.verify())
    result.pop("statements", None)
    table = Table(title=f"parity: {'PASSED' if result['passed'] else 'FAILED'}")
    for column in ("new table", "expected", "new", "missing", "extra", "differing", "ranges compared / joined"):
        table.add_column(column, justify="right" if column != "new table" else "left")
    for t in result["tables"]:
        table.add_row(
            t["table"],
            *(str(t[k]) for k in ("expected_rows", "new_rows", "missing_rows", "extra_rows", "mismatched_rows")),
            ranges_text(t),
        )
    Console().print(table)
    for t in result["tables"]:
        for sample in t["samples"]:
            typer.echo(
                f"{t['table']} {json.dumps(sample['key'], default=str)}: {sample['problem']} {json.dumps(sample.get('columns', ''), default=str)}"
            )
    if report is not None:
        text = markdown(result) if report.suffix == ".md" else json.dumps(result, indent=2, default=str)
        report.write_text(text, encoding="utf-8")
    if not result["passed"]:
        raise typer.Exit(1)


@migrate_app.command("switch-reads")
def switch_reads_command(
    context: typer.Context,
    percent: int = typer.Argument(..., help="Share of reads served from the new tables, 0-100."),
    table: str = typer.Option(None, "--table", help="Only this new table (default: all)."),
) -> None:
    """Set the read-from-new percentage the wrapper reads (within seconds, no restart). Above 0 only after a
    passing verify; 0 is the instant rollback."""
    _print(_perform(context, lambda e: e.switch_reads(percent, table)), context.obj["dry_run"])


@migrate_app.command("flags")
def flags_command(
    context: typer.Context,
    set_: list[str] = typer.Option([], "--set", help="NAME=VALUE or SCOPE.NAME=VALUE (VALUE is JSON), repeatable."),
) -> None:
    """Show (or set) the wrapper's flags: dual_write, read_from_new_percent, shadow_reads."""
    from dualshift.executor.state import ensure_schema, flags, set_flag

    def action(executor) -> dict:
        ensure_schema(executor.conn)
        for item in set_:
            name, _, value = item.partition("=")
            scope, _, flag = name.rpartition(".")
            set_flag(executor.conn, flag, json.loads(value), scope or "*")
        return {f"{s}.{n}": v for (s, n), v in flags(executor.conn).items()}

    _print(_perform(context, action), False)


@migrate_app.command("cleanup")
def cleanup_command(
    context: typer.Context,
    backup_dir: Path = typer.Option(Path("dualshift-backups"), "--backup-dir", help="Where pg_dump writes the backup."),
) -> None:
    """Back up the old tables, then in one transaction move them to the archive schema, promote the new
    tables, leave compatibility views under the old names and keep the archive in sync until finalize."""
    _print(_perform(context, lambda e: e.cleanup(backup_dir)), context.obj["dry_run"])


@migrate_app.command("finalize")
def finalize_command(
    context: typer.Context,
    keep_archive: bool = typer.Option(False, "--keep-archive", help="Keep the archived old tables (no longer synced)."),
    no_backup_needed: bool = typer.Option(
        False, "--no-backup-needed", help="Drop the archived old tables even when cleanup's backup is missing."
    ),
) -> None:
    """After cleanup, for good: stop mirroring the new tables into the archived old ones and drop the
    archive (after checking that cleanup's backup is still there). No rollback after this."""
    _print(_perform(context, lambda e: e.finalize(keep_archive, no_backup_needed)), context.obj["dry_run"])


@migrate_app.command("rollback")
def rollback_command(context: typer.Context) -> None:
    """Go back one phase from wherever the migration stands, cleanup included, losing no row."""
    _print(_perform(context, lambda e: e.rollback()), context.obj["dry_run"])


@migrate_app.command("status")
def status_command(context: typer.Context) -> None:
    """Where the migration stands, per table, with the last parity figures."""
    _print(_perform(context, lambda e: e.status()), False)


__all__ = ["os", "register"]
