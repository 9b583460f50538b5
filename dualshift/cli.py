"""The `dualshift` command line: one root app; each area registers its own commands.

The data flows one way (source files → call-site records → flow graph → reports / codemods /
executor), and so do the commands: `scan`, `report`, `plan`, `generate`, `codemod`, `migrate`, `demo`.
"""

from __future__ import annotations

import typer

from dualshift import __version__
from dualshift.analyzer import cli as analyzer_cli
from dualshift.codemods import cli as codemods_cli
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
) -> None:
    """Map every database call, plan the consolidation, dual-write, backfill, verify, switch and archive."""


for area in (analyzer_cli, reports_cli, codemods_cli, guard_cli, executor_cli):
    area.register(app)


def main() -> None:
    app()
