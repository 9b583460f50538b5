"""`dualshift scan`: map every place the code touches the database."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dualshift.analyzer.cache import ScanCache, copy_atomically, default_cache_dir
from dualshift.analyzer.scan import DEFAULT_MAX_BYTES, ScanResult, paused_gc, scan_tree
from dualshift.console import error, examples, fail, output_console
from dualshift.reports.interaction_map import DEFAULT_NAME, summarize, write_map

PROGRESS_THRESHOLD = 200  # files; smaller trees finish before a bar is worth drawing


def register(app: typer.Typer) -> None:
    app.command(
        "scan",
        epilog=examples(
            "dualshift scan fixtures/xbot --out out/DATABASE_INTERACTION_MAP.json",
            "dualshift scan . --exclude '**/*.test.ts' --out - | jq .summary",
        ),
    )(scan)


def scan(
    root: Path = typer.Argument(..., help="Root of the source tree to analyze (TypeScript, JavaScript, Python)."),
    out: Path = typer.Option(
        Path(DEFAULT_NAME),
        "--out",
        "-o",
        help="Where to write the interaction map (JSON); - writes it to stdout (the summary goes to stderr).",
    ),
    include: list[str] = typer.Option(
        [], "--include", help="Only analyze files matching this gitignore-style glob (repeatable)."
    ),
    exclude: list[str] = typer.Option(
        [], "--exclude", help="Skip files matching this gitignore-style glob (repeatable)."
    ),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Worker processes; 0 means one per CPU core."),
    no_cache: bool = typer.Option(
        False,
        "--no-cache",
        help="Do not read or write the on-disk cache of per-file results ($XDG_CACHE_HOME/dualshift).",
    ),
    max_file_mb: float = typer.Option(
        DEFAULT_MAX_BYTES / 1_048_576, "--max-file-mb", help="Files larger than this are reported, not analyzed."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    as_json: bool = typer.Option(
        False, "--json", help='Print the summary as JSON ({"map", "summary", "failures"}) instead of the table.'
    ),
) -> None:
    """Find every Supabase query-builder call (table, operation, columns, filters) and write the map.

    Honours .gitignore, skips node_modules, build output and .d.ts files. Files that cannot be read or
    parsed are listed in the map's `failures` and on stderr; they never stop the scan.
    """
    to_stdout = str(out) == "-"
    if to_stdout and as_json:
        raise fail("--out - and --json both want stdout: write the map to a file, or drop --json")
    console = output_console(quiet=quiet or as_json, stderr=to_stdout)  # stdout carries only the map then
    if not root.is_dir():
        raise fail(f"{root}: not a directory")
    # One pause from the scan to the summary, and the records freed (by reference counting) before it
    # ends: the collector, let loose on them in between, would walk them all.
    with paused_gc():
        try:
            result = _scan_with_progress(root, include, exclude, jobs or None, not no_cache, max_file_mb, console)
        except KeyboardInterrupt:
            kept = "the files analyzed so far are kept in the cache" if not no_cache else "nothing was kept"
            raise fail(f"interrupted: no map was written; {kept}; run the same command to resume", 130) from None
        _write(result, root, out, not no_cache)
        for failure in result.failures:
            error(f"{failure.file}: {failure.reason}")
        _print_summary(console, result, out)
        if as_json:
            document = {
                "map": str(out),
                "summary": summarize(result),
                "failures": [f.to_dict() for f in result.failures],
            }
            typer.echo(json.dumps(document, indent=2))
        del result


def _write(result: ScanResult, root: Path, out: Path, use_cache: bool) -> None:
    if str(out) == "-":
        with tempfile.TemporaryDirectory(prefix="dualshift-") as folder:
            staged = Path(folder) / DEFAULT_NAME
            write_map(result, staged)
            with staged.open("rb") as rendered:
                shutil.copyfileobj(rendered, sys.stdout.buffer)
            sys.stdout.flush()
        return
    cache = ScanCache.open(default_cache_dir(), root.resolve()) if use_cache else None
    cached_map = cache.map_file(result.tree_key) if cache is not None else None
    try:
        if cached_map is not None:
            copy_atomically(cached_map, out)
        else:
            write_map(result, out)
            if cache is not None:
                cache.put_map_file(result.tree_key, out)
    except OSError as exc:
        raise fail(f"{out}: cannot write map: {exc.strerror}") from exc


def _scan_with_progress(
    root: Path,
    include: list[str],
    exclude: list[str],
    jobs: int | None,
    use_cache: bool,
    max_file_mb: float,
    console: Console,
) -> ScanResult:
    max_bytes = int(max_file_mb * 1_048_576)
    with Progress(
        TextColumn("[bold]scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=console.quiet,
    ) as bar:
        task = bar.add_task("scan", total=None, visible=False)

        def advance(done: int, total: int) -> None:
            # A few hundred steps draw the same bar as one per file, for much less work in the process
            # that collects the workers' results.
            if total >= PROGRESS_THRESHOLD and (done % max(1, total // 500) == 0 or done == total):
                bar.update(task, completed=done, total=total, visible=True)

        progress = None if console.quiet else advance
        return scan_tree(root, include, exclude, jobs=jobs, progress=progress, use_cache=use_cache, max_bytes=max_bytes)


def _print_summary(console: Console, result: ScanResult, out: Path) -> None:
    if console.quiet:
        return
    summary = summarize(result)
    table = Table(title=f"Database interactions — {summary['filesScanned']} files scanned", title_justify="left")
    table.add_column("table")
    for column in ("reads", "inserts", "updates", "upserts", "deletes", "total"):
        table.add_column(column, justify="right")
    counts: dict[str, dict[str, int]] = {}
    for call in result.calls:
        row = counts.setdefault(
            call.table or "(dynamic)",
            dict.fromkeys(("select", "insert", "update", "upsert", "delete", "unknown"), 0),
        )
        row[call.operation] += 1
        for embedded in call.embedded:
            counts.setdefault(embedded, dict.fromkeys(row, 0))["select"] += 1
    for name, row in sorted(counts.items(), key=lambda item: (-sum(item[1].values()), item[0])):
        table.add_row(
            name, *(str(row[k]) for k in ("select", "insert", "update", "upsert", "delete")), str(sum(row.values()))
        )
    console.print(table)
    console.print(
        f"{_count(summary['callSites'], 'call site')} ({_count(summary['totalInteractions'], 'table use')})"
        f" on {_count(summary['totalTables'], 'table')}"
        f" in {_count(summary['totalFiles'], 'file')}"
        f" · {summary['dynamic']} dynamic · {summary['storageCalls']} storage · {summary['rpcCalls']} rpc"
        f" · {summary['failedFiles']} failed files{_gaps(summary['grammarGaps'])} → {out}",
        highlight=False,
    )


def _gaps(count: int) -> str:
    return f" ({_count(count, 'more file')} read in part: gaps in tree-sitter's grammar)" if count else ""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
