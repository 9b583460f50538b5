"""`dualshift check`: the CI and pre-commit guard while a migration is in flight and after cleanup."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from dualshift.console import examples, fail


def register(app: typer.Typer) -> None:
    app.command(
        "check",
        epilog=examples(
            "dualshift check . --plan dualshift.toml",
            "dualshift check . --plan dualshift.toml --format sarif --out dualshift.sarif",
            "dualshift check . --plan dualshift.toml --write-baseline .dualshift-baseline.json",
            "dualshift check . --plan dualshift.toml --stage cleaned --baseline .dualshift-baseline.json",
        ),
    )(check)


def check(
    root: Path = typer.Argument(..., help="Root of the source tree."),
    plan: Path = typer.Option(Path("dualshift.toml"), "--plan", help="The plan."),
    stage: str = typer.Option(
        "in-flight",
        "--stage",
        help="in-flight: writes to planned old tables must be dual-written; cleaned: old table names must go.",
    ),
    output_format: str = typer.Option("text", "--format", help="text, json, sarif, github or gitlab."),
    out: str = typer.Option("-", "--out", "-o", help="Where to write the report (- for stdout)."),
    baseline: Path | None = typer.Option(None, "--baseline", help="Report only findings not in this baseline."),
    write_baseline: Path | None = typer.Option(
        None, "--write-baseline", help="Record today's findings as the baseline and exit 0."
    ),
    files: list[str] = typer.Argument(None, help="Files a hook passes (pre-commit): report only these."),
) -> None:
    """Fail a change that writes to a planned old table around the dual-write wrapper (or, after cleanup,
    names an old table). Exit 1 when an error is found, 0 otherwise."""
    from dualshift.codemods.cli import read_plan
    from dualshift.guard import baseline as baselines
    from dualshift.guard.formats import FORMATS
    from dualshift.guard.incremental import check_findings

    if stage not in ("in-flight", "cleaned"):
        raise fail(f"--stage {stage!r}: choose in-flight or cleaned")
    if output_format not in FORMATS:
        raise fail(f"--format {output_format!r}: choose one of {', '.join(FORMATS)}")
    if not root.is_dir():
        raise fail(f"{root}: not a directory")
    loaded = read_plan(plan)
    found = check_findings(root, loaded, plan, stage)  # type: ignore[arg-type]
    if files:
        wanted = {_relative(root, name) for name in files}
        found = [f for f in found if f.file in wanted]
    if write_baseline is not None:
        baselines.write(write_baseline, found)
        typer.echo(f"wrote {write_baseline}: {sum(f.rule != 'DS900' for f in found)} finding(s) accepted")
        return
    if baseline is not None:
        try:
            found = baselines.new_only(found, baselines.read(baseline))
        except baselines.BaselineError as exc:
            raise fail(str(exc)) from exc
    report = FORMATS[output_format](found, root)
    if out == "-":
        sys.stdout.write(report)
    else:
        try:
            Path(out).write_text(report, encoding="utf-8")
        except OSError as exc:
            raise fail(f"{out}: cannot write report: {exc.strerror}") from exc
    if any(f.level == "error" for f in found):
        raise typer.Exit(1)


def _relative(root: Path, name: str) -> str:
    path = Path(name)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()
