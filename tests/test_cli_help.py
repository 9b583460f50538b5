"""Every command's help: a one-line summary, an example, no placeholder markers, -h as --help."""

from __future__ import annotations

import re

import typer
import typer.core
from typer.testing import CliRunner

from dualshift.cli import app


def _commands(group: typer.core.TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, typer.core.TyperGroup):
            found.extend(_commands(command, path))
        else:
            found.append(path)
    return found


def test_every_command_has_a_summary_an_example_and_no_markers() -> None:
    commands = _commands(typer.main.get_command(app))
    assert len(commands) >= 20
    for path in commands:
        result = CliRunner().invoke(app, [*path, "-h"], terminal_width=100)
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        assert text.startswith(f"Usage: dualshift {' '.join(path)} "), path
        summary = text.split("\n\n")[1].strip()
        assert summary and summary[0].isupper(), (path, summary)
        assert re.search(r"Examples:\n +dualshift ", text), f"{' '.join(path)}: no example in its help"
        assert not re.search(r"<(bool|int|path|text|list\[str\]|float)>|\{[a-z_]+\}", text), (path, text)
