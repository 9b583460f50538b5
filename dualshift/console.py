"""How every command reports a problem: one plain line on stderr, never wrapped, and an exit code."""

from __future__ import annotations

import typer


def error(message: str) -> None:
    typer.echo(f"dualshift: {message}", err=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print the error line and return the Exit to raise: `raise fail(f"{path}: not a directory")`."""
    error(message)
    return typer.Exit(code)
