"""`dualshift codemod wrap | unwrap | revert | status`."""

from __future__ import annotations

import typer

codemod_app = typer.Typer(
    help="Rewrite call sites to and from the dual-write wrapper, one file at a time.", no_args_is_help=True
)
