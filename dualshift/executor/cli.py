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

from dualshift.console import VERBOSITY, examples, fail, output_console

migrate_app = typer.Typer(
    help="Run the migration phases on a real PostgreSQL: snapshot, create, backfill, verify, switch-reads, "
    "cleanup; rollback from any of them; status and flags.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(migrate_app, name="migrate")
    app.command("demo", epilog=examples("dualshift demo", "dualshift demo --rows 5000 --writers 4"))(demo_command)


def demo_command(
    dsn: str = typer.Option(
        None,
        "--dsn",
        help="An empty database to use (default: $DATABASE_URL's server or "
        "127.0.0.1:5432 with a fresh database, else a throwaway cluster from the local binaries).",
    ),
    rows: int = typer.Option(
        None, "--rows", help="Content rows in the old tables (posts and metrics follow); xbot 20000, supabase 1200."
    ),
    writers: int = typer.Option(2, "--writers", help="Simulated application writers during the migration."),
    fixture: str = typer.Option(
        "xbot",
        "--fixture",
        help="xbot: the seeds' 9 → 3 with the dual-write wrapper. supabase: 6 → 3 on a Supabase-shaped database "
        "(roles, default privileges, RLS, views, dirty rows), judged by an independent ledger; with --dsn it "
        "creates its databases on that server.",
    ),
) -> None:
    """Run a consolidation end to end while writers keep writing; report each phase."""
    from dualshift.executor.demo import run_demo

    console = output_console()
    if fixture == "supabase":
        _supabase_demo(console, dsn, rows or 1200, writers)
        return
    if fixture != "xbot":
        raise fail(f"--fixture {fixture}: choose xbot or supabase")
    rows = rows or 20000
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


def _supabase_demo(console: Console, dsn: str | None, rows: int, writers: int) -> None:
    from dualshift.executor.supabase_demo import run_supabase_demo

    try:
        result = run_supabase_demo(dsn, rows, writers, report=lambda line: console.print(line, style="dim"))
    except Exception as exc:  # the demo is a whole story: any failure ends it with its reason
        raise fail(f"demo failed: {exc}") from exc
    for kind, problem in result.refusals.items():
        console.print(f"dirty rows ({kind}): " + ("refused with a clear message" if problem is None else problem))
    steps = Table(title="dualshift demo --fixture supabase: 6 tables → 3, writers running")
    for column in ("step", "exit", "seconds", "last line"):
        steps.add_column(column)
    for step in result.steps:
        last = step.output.strip().splitlines()[-1:] or [""]
        steps.add_row(step.command, str(step.exit_code), f"{step.seconds:.1f}", last[0][:100])
    console.print(steps)
    figures = Table(title="the ledger: rows where they must be")
    for column in ("point", "relation", "lost", "wrong", "extra", "unreadable"):
        figures.add_column(column)
    for point, per in result.findings.items():
        for relation, f in per.items():
            figures.add_row(point, relation, str(f["lost"]), str(f["wrong"]), str(f["extra"]), f["unreadable"] or "")
    console.print(figures)
    ledger = result.ledger
    console.print(
        f"application writes committed: {ledger['committed']} {ledger['by_operation']}; failed: {ledger['failed']}"
        + (f" {ledger['failed_during']}" if ledger["failed"] else ""),
        highlight=False,
    )
    for name, problem in result.verdicts.items():
        console.print(("ok    " if problem is None else "FAIL  ") + name + ("" if problem is None else f": {problem}"))
    if not result.passed:
        raise typer.Exit(1)


@migrate_app.callback()
def options(
    context: typer.Context,
    dsn: str = typer.Option(None, "--dsn", envvar="DATABASE_URL", help="PostgreSQL connection string ($DATABASE_URL)."),
    plan: Path = typer.Option(Path("dualshift.toml"), "--plan", help="The plan (dualshift.toml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the exact SQL; change nothing."),
    lock_timeout_ms: int = typer.Option(
        500,
        "--lock-timeout-ms",
        help="Wait at most this long for a table lock in each try of a DDL step (retried with backoff).",
    ),
    connect_timeout_s: int = typer.Option(10, "--connect-timeout", help="Give up connecting after this many seconds."),
    accept_plan_change: bool = typer.Option(
        False,
        "--accept-plan-change",
        help="Continue a migration whose plan changed since it started (recorded in the audit log).",
    ),
    code: list[Path] = typer.Option(
        [],
        "--code",
        help="A source tree the readiness gate checks before switch-reads above 0 and cleanup (repeatable).",
    ),
) -> None:
    if not 1 <= lock_timeout_ms <= 600_000:
        raise fail(f"--lock-timeout-ms {lock_timeout_ms}: give a number of milliseconds from 1 to 600000")
    if not 1 <= connect_timeout_s <= 3600:
        raise fail(f"--connect-timeout {connect_timeout_s}: give a number of seconds from 1 to 3600")
    context.obj = {
        "dsn": dsn,
        "plan": plan,
        "dry_run": dry_run,
        "lock_timeout_ms": lock_timeout_ms,
        "connect_timeout_s": connect_timeout_s,
        "accept_plan_change": accept_plan_change,
        "code": tuple(code),
    }
    for root in code:
        if not root.is_dir():
            raise fail(f"--code {root}: not a directory")


def _executor(context: typer.Context, progress=None, skip_preflight: bool = False):
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
        timeouts = Timeouts(lock_ms=settings["lock_timeout_ms"], connect_s=settings["connect_timeout_s"])
        conn = connect(settings["dsn"], timeouts)
    except ExecutorError as exc:
        raise fail(str(exc)) from None
    executor = Executor(
        conn,
        plan,
        settings["dsn"],
        settings["dry_run"],
        timeouts=timeouts,
        accept_plan_change=settings["accept_plan_change"],
        skip_preflight=skip_preflight,
        code_roots=settings.get("code", ()),
    )
    if progress is not None:
        executor.progress = progress
    return executor


def _perform(context: typer.Context, action, progress=None, skip_preflight: bool = False) -> dict[str, Any]:
    import psycopg

    from dualshift.executor.connection import ExecutorError

    executor = _executor(context, progress, skip_preflight)
    try:
        return action(executor)
    except KeyboardInterrupt:
        raise _interruption(executor, context) from None
    except (ExecutorError, psycopg.Error) as exc:
        if _raised_by_ctrl_c(exc):  # e.g. the rollback of the cancelled query: "another command is in progress"
            raise _interruption(executor, context) from None
        if isinstance(exc, ExecutorError):
            raise fail(str(exc)) from None
        raise fail(f"database error: {str(exc).strip().splitlines()[0]} (nothing of this step was kept)") from None
    finally:
        executor.conn.close()


def _raised_by_ctrl_c(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the exceptions this one was raised while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _interruption(executor, context: typer.Context) -> BaseException:
    _record_interruption(executor, context.info_name or "migrate")
    return fail(
        "interrupted (Ctrl-C): every step that committed is kept (backfill resumes from its last batch);"
        " the interrupted transaction was rolled back; `dualshift migrate status` shows where it stands,"
        " and running the same command again resumes",
        130,
    )


def _record_interruption(executor, command: str) -> None:
    """The audit log says a phase was interrupted (on a new connection: the old one may be mid-query)."""
    import psycopg

    from dualshift.executor.connection import ExecutorError, connect
    from dualshift.executor.state import audit

    try:
        with connect(executor.dsn) as conn:
            if conn.execute("SELECT pg_catalog.to_regclass('dualshift_private.audit')").fetchone()[0] is not None:
                audit(conn, executor.key, command, "interrupted", "interrupted", {"by": "Ctrl-C"}, [])
    except (ExecutorError, psycopg.Error):
        pass  # the message to the operator matters more than the audit row


def _print(result: dict[str, Any], dry_run: bool) -> None:
    statements = result.pop("statements", [])
    if dry_run:
        for statement in statements:
            typer.echo(statement.rstrip(";") + ";")
        return
    if VERBOSITY.verbose:  # what ran, on stderr: stdout stays the JSON result
        for statement in statements:
            typer.echo(statement.rstrip(";") + ";", err=True)
    if not VERBOSITY.quiet:
        typer.echo(json.dumps(result, indent=2, default=str))


EMIT_MIGRATIONS = typer.Option(
    None,
    "--emit-migrations",
    help="Also write the DDL this phase runs as Supabase migration files in DIR (e.g. supabase/migrations),"
    " recorded as applied in supabase_migrations.schema_migrations.",
    metavar="DIR",
)


@migrate_app.command(
    "snapshot", epilog=examples("dualshift migrate --plan fixtures/xbot/dualshift.toml snapshot --out-dir out")
)
def snapshot_command(
    context: typer.Context, out_dir: Path = typer.Option(Path("."), "--out-dir", help="Where to write the snapshot.")
) -> None:
    """Write PRODUCTION_SCHEMA_SNAPSHOT.sql (`pg_dump --schema-only` of the whole database: it restores
    into an empty one) and .json (the plan's tables: columns, constraints, indexes, RLS, policies, grants,
    row counts), both 0600 in a 0700 directory. Read-only."""
    _print(_perform(context, lambda e: e.snapshot(out_dir)), False)


@migrate_app.command(
    "create",
    epilog=examples(
        "dualshift migrate --plan fixtures/xbot/dualshift.toml --dry-run create",
        "dualshift migrate --plan fixtures/xbot/dualshift.toml create",
    ),
)
def create_command(
    context: typer.Context,
    skip_preflight: bool = typer.Option(
        False, "--skip-preflight", help="Create even when the preflight's data checks find errors (audited)."
    ),
    emit_migrations: Path = EMIT_MIGRATIONS,
) -> None:
    """Run the preflight's data checks, then create the new tables beside the old ones (constraints,
    indexes, the old tables' grants and RLS). Refuses, creating nothing, while a preflight error stands."""
    created = _perform(context, lambda e: _emitting(e, emit_migrations).create(), skip_preflight=skip_preflight)
    _print(created, context.obj["dry_run"])


def _emitting(executor, directory: Path | None):
    """The executor with `--emit-migrations DIR` set (create, cleanup, finalize; not in a dry run)."""
    from dualshift.executor.migrations import Emitter

    if directory is not None and not executor.dry_run:
        executor.emitter = Emitter(directory, executor.plan.name)
    return executor


@migrate_app.command(
    "backfill",
    epilog=examples(
        "dualshift migrate --plan fixtures/xbot/dualshift.toml backfill --sync triggers --batch-size 5000 --max-rows-per-s 20000"
    ),
)
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
    on_duplicate_key: str = typer.Option(
        "refuse",
        "--on-duplicate-key",
        help="'first': where one old table holds a key in several rows, copy the first in its key order "
        "(and report how many were left out) instead of refusing.",
    ),
) -> None:
    """Copy old → new in keyset-paginated, checkpointed batches inside the database; resumable after a crash.
    A completed pass also repairs the writes the wrapper recorded as failed."""
    from dualshift.executor.backfill import BackfillOptions

    if batch_size < 1:
        raise fail(f"--batch-size {batch_size}: a batch needs at least 1 row")
    if max_batches < 0:
        raise fail(f"--max-batches {max_batches}: give 0 (no limit) or more")
    if max_rows_per_s < 0:
        raise fail(f"--max-rows-per-s {max_rows_per_s}: give 0 (no throttle) or more")
    if sync_mode not in ("none", "triggers"):
        raise fail(f"--sync {sync_mode}: choose none or triggers")
    options = BackfillOptions(batch_size, max_rows_per_s or None, max_batches or None, on_duplicate_key)
    console = output_console(stderr=True)
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

        result = _perform(context, lambda e: e.backfill(options, sync_mode == "triggers"), progress)
    _print(result, context.obj["dry_run"])
    if not result.get("complete", True):
        raise typer.Exit(3)


@migrate_app.command(
    "verify",
    epilog=examples(
        "dualshift migrate --plan fixtures/xbot/dualshift.toml verify --report out/parity.md",
        "dualshift migrate --plan fixtures/xbot/dualshift.toml verify --incremental",
    ),
)
def verify_command(
    context: typer.Context,
    report: Path = typer.Option(None, "--report", help="Also write the report: .json or .md by the file's suffix."),
    incremental: bool = typer.Option(
        False, "--incremental", help="Check only the keys written since the last passing verify (full when unknown)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON instead of a table."),
) -> None:
    """Parity per new table and per source, in the database; exit 0 only when the plan's thresholds hold."""
    from dualshift.executor.verify import markdown, ranges_text

    result = _perform(context, lambda e: e.verify(incremental=incremental))
    result.pop("statements", None)
    if report is not None:
        text = markdown(result) if report.suffix == ".md" else json.dumps(result, indent=2, default=str)
        report.write_text(text, encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        raise typer.Exit(0 if result["passed"] else 1)
    table = Table(title=f"parity: {'PASSED' if result['passed'] else 'FAILED'}")
    for column in ("new table", "expected", "new", "missing", "extra", "differing", "ranges compared / joined"):
        table.add_column(column, justify="right" if column != "new table" else "left")
    for t in result["tables"]:
        table.add_row(
            t["table"],
            *(str(t[k]) for k in ("expected_rows", "new_rows", "missing_rows", "extra_rows", "mismatched_rows")),
            ranges_text(t),
        )
    output_console().print(table)
    for t in result["tables"]:
        for sample in t["samples"]:
            typer.echo(
                f"{t['table']} {json.dumps(sample['key'], default=str)}: {sample['problem']} {json.dumps(sample.get('columns', ''), default=str)}"
            )
    if not result["passed"]:
        raise typer.Exit(1)


@migrate_app.command(
    "switch-reads",
    epilog=examples(
        "dualshift migrate --plan fixtures/xbot/dualshift.toml --code . switch-reads 10",
        "dualshift migrate --plan fixtures/xbot/dualshift.toml switch-reads 0",
    ),
)
def switch_reads_command(
    context: typer.Context,
    percent: int = typer.Argument(..., help="Share of reads served from the new tables, 0-100."),
    table: str = typer.Option(None, "--table", help="Only this new table (default: all)."),
    force: bool = typer.Option(False, "--force", help="Pass the readiness gate anyway (audited with its findings)."),
) -> None:
    """Set the read-from-new percentage the wrapper reads (within seconds, no restart). Above 0 only after a
    passing verify, and, with --code, only when every write that can reach an old table is dual-written
    or mirrored by the sync triggers; 0 is the instant rollback."""
    _print(_perform(context, lambda e: _forced(e, force).switch_reads(percent, table)), context.obj["dry_run"])


@migrate_app.command(
    "flags",
    epilog=examples(
        "dualshift migrate --plan fixtures/xbot/dualshift.toml flags",
        "dualshift migrate --plan fixtures/xbot/dualshift.toml flags --set content_queue.shadow_reads=true",
    ),
)
def flags_command(
    context: typer.Context,
    set_: list[str] = typer.Option([], "--set", help="NAME=VALUE or SCOPE.NAME=VALUE (VALUE is JSON), repeatable."),
) -> None:
    """Show (or set) the wrapper's flags: dual_write, read_from_new_percent, shadow_reads. Setting
    read_from_new_percent is switch-reads (same checks: 0-100, a new table of the plan, a passing verify)."""
    assignments = [_flag_assignment(item) for item in set_]

    def action(executor) -> dict:
        from dualshift.executor.state import flags

        if assignments:
            return executor.set_flags(assignments)
        return {f"{s}.{n}": v for (s, n), v in flags(executor.conn).items()}

    _print(_perform(context, action), False)


def _flag_assignment(item: str) -> tuple[str, str, Any]:
    """`[SCOPE.]NAME=JSON` → (scope, name, value); a malformed one ends the command with one line."""
    name, equals, value = item.partition("=")
    if not equals or not name:
        raise fail(f"--set {item!r}: write NAME=VALUE or TABLE.NAME=VALUE")
    scope, _, flag = name.rpartition(".")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise fail(
            f"--set {item!r}: the value {value!r} is not JSON (true, false, a number, or a quoted string)"
        ) from None
    return scope or "*", flag, parsed


@migrate_app.command(
    "cleanup",
    epilog=examples("dualshift migrate --plan fixtures/xbot/dualshift.toml --code . cleanup --backup-dir backups"),
)
def cleanup_command(
    context: typer.Context,
    backup_dir: Path = typer.Option(Path("dualshift-backups"), "--backup-dir", help="Where pg_dump writes the backup."),
    force: bool = typer.Option(False, "--force", help="Pass the readiness gate anyway (audited with its findings)."),
    emit_migrations: Path = EMIT_MIGRATIONS,
) -> None:
    """Back up the old tables, then in one transaction move them to the archive schema, promote the new
    tables, leave compatibility views under the old names and keep the archive in sync until finalize."""
    cleaned = _perform(context, lambda e: _emitting(_forced(e, force), emit_migrations).cleanup(backup_dir))
    _print(cleaned, context.obj["dry_run"])


def _forced(executor, force: bool):
    """The executor with the readiness gate's --force set (switch-reads and cleanup)."""
    executor.force_unready = force
    return executor


@migrate_app.command(
    "finalize",
    epilog=examples(
        "dualshift migrate --plan fixtures/xbot/dualshift.toml finalize",
        "dualshift migrate --plan fixtures/xbot/dualshift.toml finalize --keep-archive",
    ),
)
def finalize_command(
    context: typer.Context,
    keep_archive: bool = typer.Option(False, "--keep-archive", help="Keep the archived old tables (no longer synced)."),
    no_backup_needed: bool = typer.Option(
        False, "--no-backup-needed", help="Drop the archived old tables even when cleanup's backup is missing."
    ),
    emit_migrations: Path = EMIT_MIGRATIONS,
) -> None:
    """After cleanup, for good: stop mirroring the new tables into the archived old ones and drop the
    archive (after checking that cleanup's backup is still there). No rollback after this."""
    finalized = _perform(context, lambda e: _emitting(e, emit_migrations).finalize(keep_archive, no_backup_needed))
    _print(finalized, context.obj["dry_run"])


@migrate_app.command("rollback", epilog=examples("dualshift migrate --plan fixtures/xbot/dualshift.toml rollback"))
def rollback_command(context: typer.Context) -> None:
    """Go back one phase from wherever the migration stands, cleanup included, losing no row."""
    _print(_perform(context, lambda e: e.rollback()), context.obj["dry_run"])


@migrate_app.command(
    "reconcile",
    epilog=examples(
        "dualshift migrate --plan fixtures/xbot/dualshift.toml status",
        "dualshift migrate --plan fixtures/xbot/dualshift.toml reconcile",
    ),
)
def reconcile_command(context: typer.Context) -> None:
    """When the state row disagrees with the catalog (a crash of an older dualshift between a commit and
    its state), record the earliest phase the catalog is consistent with. Changes no table."""
    _print(_perform(context, lambda e: e.reconcile()), False)


@migrate_app.command(
    "watch",
    epilog=examples(
        "dualshift migrate --plan fixtures/xbot/dualshift.toml watch --interval 60 --metrics-port 9464",
        "dualshift migrate --plan fixtures/xbot/dualshift.toml watch --once",
    ),
)
def watch_command(
    context: typer.Context,
    interval: float = typer.Option(60.0, "--interval", help="Seconds between checks."),
    once: bool = typer.Option(False, "--once", help="Check once (for cron): exit 1 on a breach."),
    metrics_port: int = typer.Option(0, "--metrics-port", help="Serve Prometheus metrics on 127.0.0.1:PORT."),
) -> None:
    """Watch the migration in flight: probes, sync drift, failed mirror writes, shadow-read mismatches, lock
    waits; on a breach of the plan's [watch] thresholds, apply its action (reads back to the old tables by
    default), audited."""
    from dualshift.executor import watch
    from dualshift.executor.catalog import validate
    from dualshift.executor.connection import ExecutorError

    if interval <= 0:
        raise fail(f"--interval {interval}: give a number of seconds above 0")
    if not 0 <= metrics_port <= 65535:
        raise fail(f"--metrics-port {metrics_port}: give a port from 1 to 65535 (0: no metrics)")
    executor = _executor(context)
    metrics = watch.Metrics() if metrics_port else None
    if metrics is not None:
        try:
            metrics.serve(metrics_port)
        except OSError as exc:
            raise fail(f"--metrics-port {metrics_port}: {exc.strerror}") from None

    def check_once() -> watch.Health:
        health = watch.check(executor.conn, executor.plan, validate(executor.conn, executor.plan), interval)
        watch.record(executor.conn, executor.plan, health)
        return health

    try:
        health = watch.run(check_once, lambda h: watch.act(executor, h), interval, once, typer.echo, metrics)
    except ExecutorError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("watch stopped (Ctrl-C); every check so far is recorded", 130) from None
    if not health.healthy:
        raise typer.Exit(1)


@migrate_app.command("status", epilog=examples("dualshift migrate --plan fixtures/xbot/dualshift.toml status"))
def status_command(context: typer.Context) -> None:
    """Where the migration stands, per table, with the last parity figures."""
    _print(_perform(context, lambda e: e.status()), False)


__all__ = ["os", "register"]
