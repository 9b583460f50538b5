"""The `dualshift` command line: one root app; each area registers its own commands.

The data flows one way (source files → call-site records → flow graph → reports / codemods /
executor), and so do the commands: `scan`, `report`, `plan`, `generate`, `codemod`, `migrate`, `demo`.
"""

from __future__ import annotations

import sys

import typer

from dualshift import __version__
from dualshift.analyzer import cli as analyzer_cli
from dualshift.codemods import cli as codemods_cli
from dualshift.console import VERBOSITY, error
from dualshift.executor import cli as executor_cli
from dualshift.guard import cli as guard_cli
from dualshift.reports import cli as reports_cli

app = typer.Typer(
    rich_markup_mode=None,
    name="dualshift",
    help="Consolidate the tables of a live Supabase/PostgreSQL database with zero downtime.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dualshift {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, help="Print the version."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors (every command)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print what runs (the SQL of migrate phases)."),
    debug: bool = typer.Option(False, "--debug", help="On an unexpected error, print its traceback."),
) -> None:
    """Map every database call, plan the consolidation, dual-write, backfill, verify, switch and archive."""
    VERBOSITY.quiet, VERBOSITY.verbose, VERBOSITY.debug = quiet, verbose, debug


for area in (analyzer_cli, reports_cli, codemods_cli, guard_cli, executor_cli):
    area.register(app)


def main() -> None:
    try:
        app()
    except Exception as exc:  # a bug, not bad input (which every command reports itself): one line, or --debug
        if VERBOSITY.debug:
            raise
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        error(f"internal error: {type(exc).__name__}: {detail} (run again with --debug for the traceback)")
        sys.exit(70)
