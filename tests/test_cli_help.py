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


def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys, tmp_path) -> None:
    import pytest

    from dualshift import cli
    from dualshift.analyzer import cli as analyzer_cli

    def broken(*args, **kwargs):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(analyzer_cli, "_scan_with_progress", broken)
    monkeypatch.setattr("sys.argv", ["dualshift", "scan", str(tmp_path), "--no-cache"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 70
    assert capsys.readouterr().err == (
        "dualshift: internal error: ValueError: boom (run again with --debug for the traceback)\n"
    )
    monkeypatch.setattr("sys.argv", ["dualshift", "--debug", "scan", str(tmp_path), "--no-cache"])
    with pytest.raises(ValueError, match="boom"):
        cli.main()


def test_quiet_and_verbose_reach_every_command(tmp_path) -> None:
    (tmp_path / "a.ts").write_text("export const f = (db: any) => db.from('posts').insert({ a: 1 });\n")
    out = tmp_path / "m.json"
    quiet = CliRunner().invoke(app, ["-q", "scan", str(tmp_path), "-o", str(out), "--no-cache"])
    assert quiet.exit_code == 0 and quiet.output == "" and out.exists()
    loud = CliRunner().invoke(app, ["scan", str(tmp_path), "-o", str(out), "--no-cache"])
    assert "1 call site (1 table use) on 1 table in 1 file" in loud.output
