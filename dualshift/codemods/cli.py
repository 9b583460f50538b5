"""Commands of the plan → wrapper → codemods stage: `plan`, `generate`, `codemod`."""

from __future__ import annotations

from pathlib import Path

import typer

from dualshift.console import error, fail, output_console
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


@plan_app.command("init")
def plan_init(
    map_file: Path = typer.Option(..., "--map", help="The interaction map written by `dualshift scan`."),
    out: Path = typer.Option(Path("dualshift.toml"), "--out", "-o", help="Where to write the draft plan."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a draft plan with one new table per cluster of overlapping tables found in the code."""
    from dualshift.codemods.wrapper import write_atomically
    from dualshift.plan_tools import draft_plan

    if out.exists() and not force:
        raise fail(f"{out}: already exists (use --force to overwrite)")
    write_atomically(out, draft_plan(read_calls(map_file)))
    output_console().print(
        f"wrote {out}: finish the TODOs, then run `dualshift plan check --plan {out} --map {map_file}`"
    )


@plan_app.command("check")
def plan_check(
    plan: Path = typer.Option(..., "--plan", help="The plan to lint (dualshift.toml)."),
    map_file: Path = typer.Option(..., "--map", help="The interaction map written by `dualshift scan`."),
) -> None:
    """Lint the plan against the code: unmapped columns the code writes or filters on, old tables no code
    touches, writes with dynamic table names, new table names already in use. Exit 1 on errors."""
    from dualshift.plan_tools import check_plan

    loaded = read_plan(plan)
    findings = check_plan(loaded, plan.read_text(encoding="utf-8"), read_calls(map_file))
    for finding in findings:
        typer.echo(finding.render(str(plan)), err=finding.level == "error")
    errors = sum(1 for f in findings if f.level == "error")
    warnings = len(findings) - errors
    typer.echo(f"{errors} error(s), {warnings} warning(s)")
    if errors:
        raise typer.Exit(1)


@generate_app.command("wrapper")
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
