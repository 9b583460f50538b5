"""Commands of the plan → wrapper → codemods stage: `plan`, `generate`, `codemod`."""

from __future__ import annotations

from pathlib import Path

import typer

from dualshift.console import error, examples, fail, output_console
from dualshift.plan import Plan, PlanError, load_plan
from dualshift.reports.interaction_map import MapError, load_map

plan_app = typer.Typer(
    rich_markup_mode=None,
    help="Draft a migration plan from the code, and lint a plan against it.",
    no_args_is_help=True,
)
generate_app = typer.Typer(rich_markup_mode=None, help="Generate code from the plan.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(plan_app, name="plan")
    app.add_typer(generate_app, name="generate")
    from dualshift.codemods.commands import codemod_app

    app.add_typer(codemod_app, name="codemod")


def read_plan(path: Path) -> Plan:
    try:
        return load_plan(path)
    except PlanError as exc:
        raise fail(str(exc)) from exc


def read_calls(path: Path):
    try:
        return load_map(path).calls
    except MapError as exc:
        raise fail(str(exc)) from exc


@plan_app.command(
    "init",
    epilog=examples(
        "dualshift plan init --map out/DATABASE_INTERACTION_MAP.json --out dualshift.toml",
        "dualshift plan init --dsn $DATABASE_URL --map out/DATABASE_INTERACTION_MAP.json --out dualshift.toml",
    ),
)
def plan_init(
    map_file: Path = typer.Option(None, "--map", help="The interaction map written by `dualshift scan`."),
    dsn: str = typer.Option(None, "--dsn", help="Draft from the live database: real types, keys, checks."),
    out: Path = typer.Option(Path("dualshift.toml"), "--out", "-o", help="Where to write the draft plan."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a draft plan with one new table per cluster of overlapping tables.

    With --dsn the draft takes its types, keys, nullability, defaults and checks from the catalog and
    loads and passes `plan check --dsn` as written; the clusters come from the code (--map) or, without
    it, from the catalog (tables sharing a key and most of their columns). Without --dsn it is the
    code-only draft of before, every type text."""
    from dualshift.codemods.wrapper import write_atomically
    from dualshift.plan_tools import catalog_clusters, code_clusters, draft_plan, draft_plan_from_database

    if map_file is None and dsn is None:
        raise fail("plan init: give --map (clusters from the code), --dsn (types and keys from the database), or both")
    if out.exists() and not force:
        raise fail(f"{out}: already exists (use --force to overwrite)")
    if dsn is None:
        write_atomically(out, draft_plan(read_calls(map_file)))
        output_console().print(
            f"wrote {out}: finish the TODOs, then run `dualshift plan check --plan {out} --map {map_file}`"
        )
        return
    tables = _read_catalog(dsn)
    clusters = code_clusters(read_calls(map_file)) if map_file is not None else catalog_clusters(tables)
    draft = draft_plan_from_database(tables, clusters)
    write_atomically(out, draft + _read_catalog(dsn, lambda conn: _dependents_section(conn, draft)))
    output_console().print(f"wrote {out}: read the TODOs, then run `dualshift plan check --plan {out} --dsn …`")


def _dependents_section(conn, draft: str) -> str:
    from dualshift.executor.inventory import draft_section

    return draft_section(conn, draft)


def _read_catalog(dsn: str, read=None):
    """`read(conn)` (default: the user tables) on a session to `dsn`; a failure is one line."""
    import psycopg

    from dualshift.executor.connection import ExecutorError, connect
    from dualshift.executor.introspect import read_tables

    try:
        conn = connect(dsn)
    except ExecutorError as exc:
        raise fail(f"--dsn: {exc}") from exc
    try:
        return (read or read_tables)(conn)
    except psycopg.Error as exc:
        raise fail(f"--dsn: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        conn.close()


@plan_app.command(
    "check",
    epilog=examples(
        "dualshift plan check --plan dualshift.toml --map out/DATABASE_INTERACTION_MAP.json",
        "dualshift plan check --plan dualshift.toml --dsn $DATABASE_URL --json",
    ),
)
def plan_check(
    plan: Path = typer.Option(..., "--plan", help="The plan to check (dualshift.toml)."),
    map_file: Path = typer.Option(None, "--map", help="The interaction map written by `dualshift scan`."),
    dsn: str = typer.Option(None, "--dsn", help="A PostgreSQL connection string: check against the live database."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON (see the README for the shape)."),
) -> None:
    """Check the plan against the code (--map) and the live database (--dsn), reporting every problem at once.

    With --map: unmapped columns the code writes or filters on, old tables no code touches, writes with
    dynamic table names, new table names already in use. With --dsn: the executor's own validation of
    the plan against the catalog, then the preflight's read-only data checks (NULL key parts, duplicate
    keys, lossy casts, NOT NULL and check violations, rows set aside by precedence). Exit 1 on errors."""
    from dualshift.findings import summary
    from dualshift.plan_tools import check_plan, precedence_text, report_json, report_table, todo_findings

    if map_file is None and dsn is None:
        raise fail("plan check: give --map (check against the code), --dsn (against the database), or both")
    loaded = read_plan(plan)
    database_findings, database_columns, dependents = _check_against_database(loaded, dsn) if dsn else ([], None, [])
    findings = todo_findings(plan.read_text(encoding="utf-8"))
    if map_file is not None:
        findings += check_plan(loaded, plan.read_text(encoding="utf-8"), read_calls(map_file), database_columns)
    findings += database_findings
    if as_json:
        typer.echo(report_json(str(plan), findings, loaded, dependents))
    else:
        report_table(str(plan), findings, output_console())
        if precedence_text(loaded):
            typer.echo(precedence_text(loaded))
        typer.echo(summary(findings))
    if any(f.is_error for f in findings):
        raise typer.Exit(1)


def _check_against_database(plan: Plan, dsn: str):
    """The executor's validation and preflight findings, each old table's columns in the database, and what
    depends on the old tables (with the plan's decisions)."""
    import psycopg

    from dualshift.executor import preflight
    from dualshift.executor.catalog import columns_of, pinned_search_path
    from dualshift.executor.connection import ExecutorError, connect

    try:
        conn = connect(dsn)
    except ExecutorError as exc:
        raise fail(f"--dsn: {exc}") from exc
    try:
        findings, dependents = preflight.check_with_dependents(conn, plan)
        with pinned_search_path(conn):
            columns = {s.table: list(columns_of(conn, s.schema, s.table)) for t in plan.tables for s in t.sources}
    except (ExecutorError, psycopg.Error) as exc:
        raise fail(f"--dsn: {str(exc).strip().splitlines()[0]}") from exc
    finally:
        conn.close()
    return findings, columns, dependents


@generate_app.command(
    "wrapper",
    epilog=examples(
        "dualshift generate wrapper --plan dualshift.toml --lang ts --out src/db/dualWrite.ts",
        "dualshift generate wrapper --plan dualshift.toml --lang py --out worker/db/dual_write.py",
    ),
)
def generate_wrapper(
    plan: Path = typer.Option(..., "--plan", help="The plan (dualshift.toml)."),
    lang: str = typer.Option("ts", "--lang", help="ts (supabase-js v2) or py (supabase-py)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the module, e.g. src/db/dualWrite.ts."),
    flags_schema: str = typer.Option(
        "dualshift", "--flags-schema", help="Schema of the flags and failed_writes tables."
    ),
    timeout_ms: int = typer.Option(2000, "--timeout-ms", help="Longest a caller waits for the new-table write."),
) -> None:
    """Render the dual-write wrapper module from the plan."""
    from dualshift.codemods.wrapper import render_wrapper, write_atomically

    loaded = read_plan(plan)
    try:
        text = render_wrapper(loaded, lang, flags_schema=flags_schema, timeout_ms=timeout_ms)
    except (ValueError, ImportError) as exc:
        raise fail(f"--lang {lang}: {exc}") from exc
    try:
        write_atomically(out, text)
    except OSError as exc:
        raise fail(f"{out}: cannot write: {exc.strerror}") from exc
    output_console().print(f"wrote {out}")


__all__ = ["error", "register"]
