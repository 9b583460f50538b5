"""How every command reports a problem: one plain line on stderr, never wrapped, and an exit code."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import typer
from rich.console import Console

UNBOUNDED_WIDTH = 10_000


@dataclass
class Verbosity:
    """The root options every command honours: -q (only errors), -v (also what runs), --debug (tracebacks)."""

    quiet: bool = False
    verbose: bool = False
    debug: bool = False


VERBOSITY = Verbosity()  # off a terminal nothing is cut: names and lists are printed whole


def on_terminal(stderr: bool = False) -> bool:
    return (sys.stderr if stderr else sys.stdout).isatty()


def output_console(quiet: bool = False, stderr: bool = False) -> Console:
    """A console for a command's output: the terminal's width on a terminal, unbounded elsewhere (pipes,
    CI logs, files), so that tables never shorten a table name to `content_generation_…`."""
    width = None if on_terminal(stderr) else UNBOUNDED_WIDTH
    return Console(stderr=stderr, quiet=quiet or VERBOSITY.quiet, width=width, soft_wrap=width is not None)


def error(message: str) -> None:
    typer.echo(f"dualshift: {message}", err=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print the error line and return the Exit to raise: `raise fail(f"{path}: not a directory")`."""
    error(message)
    return typer.Exit(code)


def examples(*commands: str) -> str:
    """A command's help epilog: example invocations, kept on their own lines."""
    return "\b\nExamples:\n" + "\n".join(f"  {command}" for command in commands)
