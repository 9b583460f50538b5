"""`dualshift codemod wrap | unwrap | revert | status`."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from dualshift.codemods.import_target import ImportTarget
from dualshift.codemods.result import FileOutcome
from dualshift.codemods.runner import RunOptions, revert, run_codemod
from dualshift.codemods.unwrap import CallerRetargets, plan_caller_retargets, unwrap_typescript
from dualshift.codemods.wrap import WRAPPER_NAME, is_wrapped, wrap_typescript
from dualshift.console import examples, fail, on_terminal, output_console

codemod_app = typer.Typer(
    rich_markup_mode=None,
    help="Rewrite call sites to and from the dual-write wrapper, one file at a time.",
    no_args_is_help=True,
)
DEFAULT_WRAPPER = "src/db/dualWrite.ts"

ROOT = typer.Argument(..., help="Root of the source tree (the directory `dualshift scan` mapped).")
PLAN = typer.Option(..., "--plan", help="The plan (dualshift.toml).")
FILES = typer.Option([], "--file", "-f", help="Only this file, relative to ROOT (repeatable).")
APPLY = typer.Option(False, "--apply", help="Write the files (atomically); without it, print the diffs only.")
PATCH_DIR = typer.Option(None, "--patch-dir", help="Also write one .patch per file that `git apply` accepts.")
INTERACTIVE = typer.Option(False, "--interactive", "-i", help="With --apply: show each diff and ask yes/no/all/quit.")
FORCE = typer.Option(False, "--force", help="Rewrite files with uncommitted git changes too.")
WRAPPER = typer.Option(DEFAULT_WRAPPER, "--wrapper", help="Path of the generated TypeScript wrapper, relative to ROOT.")
IMPORT = typer.Option(
    "",
    "--import",
    help="The module rewritten files import the wrapper from (e.g. @acme/db/dualWrite), for monorepos;"
    " by default the wrapper's path relative to each file, inside one package only.",
)
PER_PACKAGE = typer.Option(
    False,
    "--wrapper-per-package",
    help="Each file imports the --wrapper path inside its own package (nearest package.json).",
)
AS_JSON = typer.Option(False, "--json", help="Print the outcome per file as JSON (diffs included) instead of text.")
PY_WRAPPER = typer.Option(
    "dual_write.py",
    "--python-wrapper",
    help="Path of the generated Python wrapper, relative to ROOT (its module path).",
)


def _transform(
    kind: str, plan, target: ImportTarget, reads: bool, python_wrapper: str = "dual_write.py", retargets=None
):
    def typescript_or_python(source: str, rel: str, calls):
        if rel.endswith(".py"):
            from dualshift.codemods import python_rewrite

            module = python_wrapper
            if kind == "wrap":
                return python_rewrite.wrap_python_source(
                    source, rel, plan, wrapper_module=module, reads=reads, calls=calls
                )
            return python_rewrite.unwrap_python_source(
                source, rel, plan, calls=calls, wrapper_module=module, retargets=retargets
            )
        wrapper = target.wrapper_for(rel)
        if kind == "wrap":  # refuses a cross-package import
            return wrap_typescript(source, rel, calls, plan, wrapper, reads, target.specifier_for(rel))
        specifier = target.specifier_for(rel) if WRAPPER_NAME in source else None  # a caller may import nothing
        return unwrap_typescript(source, rel, calls, plan, wrapper, specifier, retargets)

    return typescript_or_python


def _ask(console: Console, state: dict, outcome: FileOutcome) -> bool | None:
    if state.get("all"):
        return True
    typer.echo(outcome.diff, nl=False)
    answer = typer.prompt(f"apply to {outcome.path}? [y]es / [n]o / [a]ll / [q]uit", default="n").strip().lower()
    if answer.startswith("a"):
        state["all"] = True
        return True
    if answer.startswith("q"):
        return None
    return answer.startswith("y")


def _json_report(outcomes: list[FileOutcome], apply: bool) -> None:
    """`--json`: {"applied", "counts", "files": [{path, status, reason, diff, skipped_sites}]}."""
    files = [
        {
            "path": o.path,
            "status": o.status,
            "reason": o.reason,
            "diff": o.diff or None,
            "skipped_sites": [{"line": x.line, "table": x.table, "reason": x.reason} for x in o.skipped_sites],
        }
        for o in outcomes
    ]
    typer.echo(
        json.dumps({"applied": apply, "counts": dict(Counter(o.status for o in outcomes)), "files": files}, indent=2)
    )


def _report(console: Console, outcomes: list[FileOutcome], apply: bool) -> None:
    for outcome in outcomes:
        if outcome.status == "changed" and not apply:
            typer.echo(outcome.diff, nl=False)
        elif outcome.status == "failed":
            typer.echo(f"dualshift: {outcome.path}: {outcome.reason}", err=True)
        for site in outcome.skipped_sites:
            console.print(
                f"skipped {outcome.path}:{site.line} ({site.table or 'dynamic'}): {site.reason}", highlight=False
            )
    counts = Counter(o.status for o in outcomes)
    reasons = Counter(o.reason for o in outcomes if o.status == "skipped" and o.reason and not o.skipped_sites)
    detail = "".join(f"; {n} {r}" for r, n in reasons.items())
    verb = "changed" if apply else "would change"
    typer.echo(
        f"{counts['changed']} {verb}, {counts['unchanged']} unchanged, {counts['skipped']} skipped{detail}, "
        f"{counts['failed']} failed"
    )


def _run(
    kind: str,
    *,
    root: Path,
    plan: Path,
    files: list[str],
    apply: bool,
    patch_dir: Path | None,
    interactive: bool,
    force: bool,
    wrapper: str,
    python_wrapper: str,
    import_specifier: str,
    per_package: bool,
    as_json: bool = False,
    reads: bool = False,
):
    from dualshift.codemods.cli import read_plan

    if not root.is_dir():
        raise fail(f"{root}: not a directory")
    loaded = read_plan(plan)
    console = output_console()
    state: dict = {}
    decide = partial(_ask, console, state) if interactive and apply else None
    wrapper_rel = Path(wrapper).as_posix()
    target = ImportTarget(root.resolve(), wrapper_rel, import_specifier or None, per_package)
    retargets = CallerRetargets()

    def prepare(calls, in_scope) -> list[frozenset[str]]:
        return plan_caller_retargets(calls, loaded, root.resolve(), in_scope, retargets).groups

    try:
        outcomes = run_codemod(
            kind,
            root,
            _transform(kind, loaded, target, reads, python_wrapper, retargets),
            RunOptions(apply=apply, force=force, patch_dir=patch_dir, files=tuple(files)),
            decide,
            skip=lambda rel: rel in (target.wrapper_for(rel), python_wrapper),
            prepare=prepare if kind == "unwrap" else None,
        )
    except ValueError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        _json_report(outcomes, apply)
    else:
        _report(console, outcomes, apply)
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


@codemod_app.command(
    "wrap",
    epilog=examples(
        "dualshift codemod wrap fixtures/xbot --plan fixtures/xbot/dualshift.toml --file src/jobs/postingQueue.ts --apply"
    ),
)
def wrap(
    root: Path = ROOT,
    plan: Path = PLAN,
    files: list[str] = FILES,
    reads: bool = typer.Option(False, "--reads", help="Route reads (selects) through the wrapper too."),
    apply: bool = APPLY,
    patch_dir: Path | None = PATCH_DIR,
    interactive: bool = INTERACTIVE,
    force: bool = FORCE,
    wrapper: str = WRAPPER,
    python_wrapper: str = PY_WRAPPER,
    import_specifier: str = IMPORT,
    per_package: bool = PER_PACKAGE,
    as_json: bool = AS_JSON,
) -> None:
    """Route write call sites on the plan's old tables through dualWrite(client) (dual_write(client) in
    Python); add the import once per file."""
    _run("wrap", **locals())  # every option, by name


@codemod_app.command(
    "unwrap",
    epilog=examples(
        "dualshift codemod unwrap fixtures/xbot --plan fixtures/xbot/dualshift.toml --patch-dir out/patches"
    ),
)
def unwrap(
    root: Path = ROOT,
    plan: Path = PLAN,
    files: list[str] = FILES,
    apply: bool = APPLY,
    patch_dir: Path | None = PATCH_DIR,
    interactive: bool = INTERACTIVE,
    force: bool = FORCE,
    wrapper: str = WRAPPER,
    python_wrapper: str = PY_WRAPPER,
    import_specifier: str = IMPORT,
    per_package: bool = PER_PACKAGE,
    as_json: bool = AS_JSON,
) -> None:
    """Cleanup: back to plain client calls on the new tables, columns mapped, the wrapper import removed."""
    _run("unwrap", **locals())


@codemod_app.command(
    "revert", epilog=examples("dualshift codemod revert fixtures/xbot --file src/jobs/postingQueue.ts")
)
def revert_command(
    root: Path = ROOT,
    files: list[str] = FILES,
    force: bool = typer.Option(False, "--force", help="Restore even files edited since the codemod."),
) -> None:
    """Restore files exactly as they were before their last codemod (from the ledger in ROOT/.dualshift)."""
    try:
        outcomes = revert(root, files, force)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    console = output_console()
    for outcome in outcomes:
        if outcome.status == "failed":
            typer.echo(f"dualshift: {outcome.path}: {outcome.reason}", err=True)
        elif outcome.status == "changed":
            console.print(f"reverted {outcome.path}", highlight=False)
    _report(output_console(quiet=True), outcomes, True)
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


@codemod_app.command(
    "status", epilog=examples("dualshift codemod status fixtures/xbot --plan fixtures/xbot/dualshift.toml")
)
def status(root: Path = ROOT, plan: Path = PLAN, as_json: bool = AS_JSON) -> None:
    """Per old table of the plan: files whose write call sites are all wrapped, files still pending, and
    whether the table is ready (no pending file, and no unwrapped write whose table is a run-time name).
    A table whose new table merges its sources (precedence = "coalesce") is ready only with the sync
    triggers, which write that new table (the wrapper does not): wrapping does not make it ready."""
    from dualshift.analyzer.scan import scan_tree
    from dualshift.codemods.cli import read_plan
    from dualshift.guard.readiness import merging_old_tables

    loaded = read_plan(plan)
    by_triggers = merging_old_tables(loaded)
    writes = [c for c in scan_tree(root).calls if c.is_write]
    calls = [c for c in writes if c.table in loaded.table_mapping]
    runtime = [c for c in writes if c.table is None and not is_wrapped(c)]  # could be any planned table
    done: dict[str, set[str]] = defaultdict(set)
    pending: dict[str, set[str]] = defaultdict(set)
    for call in calls:
        (done if is_wrapped(call) else pending)[call.table].add(call.file)
    for table in done:
        done[table] -= pending[table]
    if as_json:
        rows = [
            {
                "old_table": old,
                "new_table": loaded.table_mapping[old],
                "files_done": sorted(done[old]),
                "files_pending": sorted(pending[old]),
                "ready": not pending[old] and not runtime and old not in by_triggers,
                "needs_sync_triggers": old in by_triggers,
            }
            for old in loaded.old_tables
        ]
        runtime_sites = [
            {"file": c.file, "line": c.line, "operation": c.operation, "table_expression": c.table_expression}
            for c in runtime
        ]
        typer.echo(json.dumps({"tables": rows, "runtime_writes": runtime_sites}, indent=2))
        return
    table = Table(title="Write call sites on planned tables")
    for column in ("old table", "new table", "files done", "files pending", "ready", "pending"):
        table.add_column(column)
    for old in loaded.old_tables:
        blockers = [f"{len(pending[old])} file(s)"] if pending[old] else []
        blockers += [f"{len(runtime)} run-time write(s)"] if runtime else []
        blockers = ["only with the sync triggers (merges its sources)"] if old in by_triggers else blockers
        table.add_row(
            old,
            loaded.table_mapping[old],
            str(len(done[old])),
            str(len(pending[old])),
            "yes" if not blockers else "no: " + ", ".join(blockers),
            _file_list(sorted(pending[old])),
        )
    console = output_console()
    console.print(table)
    for call in runtime:
        console.print(
            f"{call.file}:{call.line}: {call.operation} on a run-time table name ({call.table_expression}) that"
            f" could be a planned table, not wrapped: {call.resolution or 'the name is known only at run time'}",
            highlight=False,
        )


def _file_list(files: list[str]) -> str:
    """Every pending file off a terminal; on one, the first four and how many more."""
    if not on_terminal() or len(files) <= 4:
        return ", ".join(files)
    return ", ".join(files[:4]) + f" … and {len(files) - 4} more"
