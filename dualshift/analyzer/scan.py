"""Scan a source tree: find the files, analyze each (in a process pool, through a content cache), resolve.

Bad input never stops a scan: a file that cannot be read, is binary, is not UTF-8, is too large or does
not parse is reported as a ParseFailure and the scan goes on.
"""

from __future__ import annotations

import gc
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pathspec

from dualshift.analyzer import typescript
from dualshift.analyzer.cache import ScanCache, content_hash, default_cache_dir, tree_key
from dualshift.analyzer.records import CallSite, FileResult, ParseFailure, SideCall
from dualshift.analyzer.resolve import resolve

PYTHON_SUFFIXES = frozenset({".py"})
SOURCE_SUFFIXES = frozenset(typescript.SUFFIXES) | PYTHON_SUFFIXES
SKIPPED_DIRECTORIES = frozenset(
    {
        "node_modules",
        ".git",
        "dist",
        "build",
        "out",
        ".next",
        ".nuxt",
        ".svelte-kit",
        "coverage",
        ".turbo",
        ".cache",
        ".venv",
        "venv",
        "__pycache__",
        ".dualshift",
    }
)
DEFAULT_MAX_BYTES = 2 * 1024 * 1024

Progress = Callable[[int, int], None]


@dataclass
class ScanResult:
    root: Path
    files_scanned: int = 0
    calls: list[CallSite] = field(default_factory=list)
    side_calls: list[SideCall] = field(default_factory=list)
    failures: list[ParseFailure] = field(default_factory=list)
    tree_key: str = ""  # identifies the tree's listing (scans with the cache); the CLI caches the map under it


# ---------------------------------------------------------------------------------------------
# Finding the files


@dataclass(frozen=True)
class Discovered:
    files: list[str]  # POSIX paths relative to the root, sorted
    failures: list[ParseFailure]


def _gitignore(directory: Path) -> pathspec.PathSpec | None:
    path = directory / ".gitignore"
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(rel: str, is_dir: bool, specs: list[tuple[str, pathspec.PathSpec]]) -> bool:
    candidate = rel + "/" if is_dir else rel
    ignored = False
    for base, spec in specs:
        if base and not candidate.startswith(base + "/"):
            continue
        inner = candidate[len(base) + 1 :] if base else candidate
        result = spec.check_file(inner)
        if result.include is not None:
            ignored = result.include
    return ignored


def _wanted(name: str) -> bool:
    if name.endswith(".d.ts") or name.endswith(".d.mts") or name.endswith(".d.cts"):
        return False
    return os.path.splitext(name)[1] in SOURCE_SUFFIXES


def discover(root: Path, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> Discovered:
    """Source files under root, honouring .gitignore files, skipping dependencies and build output."""
    include_spec = pathspec.GitIgnoreSpec.from_lines(list(include)) if include else None
    exclude_spec = pathspec.GitIgnoreSpec.from_lines(list(exclude)) if exclude else None
    files: list[str] = []
    failures: list[ParseFailure] = []
    specs: list[tuple[str, pathspec.PathSpec]] = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
        here = Path(directory)
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        spec = _gitignore(here)
        if spec is not None:
            specs.append((rel_dir, spec))
        kept = []
        for name in sorted(dirnames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in SKIPPED_DIRECTORIES or _ignored(rel, True, specs):
                continue
            if (here / name).is_symlink():
                continue  # never follow directory links: no loops, no scanning outside the root
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not _wanted(name) or _ignored(rel, False, specs):
                continue
            if include_spec is not None and not include_spec.match_file(rel):
                continue
            if exclude_spec is not None and exclude_spec.match_file(rel):
                continue
            files.append(rel)
    files.sort()
    return Discovered(files, failures)


# ---------------------------------------------------------------------------------------------
# One file


def _read(path: str | Path, rel: str, max_bytes: int) -> bytes | ParseFailure:
    try:
        info = os.stat(path)
    except OSError as exc:
        if os.path.islink(path):
            return ParseFailure(rel, f"broken or looping symbolic link ({exc.strerror})")
        return ParseFailure(rel, f"cannot stat file: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return ParseFailure(rel, "not a regular file")
    if info.st_size > max_bytes:
        return ParseFailure(
            rel, f"too large to analyze ({info.st_size / 1_048_576:.1f} MB > {max_bytes / 1_048_576:.1f} MB limit)"
        )
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return ParseFailure(rel, f"cannot read file: {exc.strerror}")
    if b"\x00" in data[:8192]:
        return ParseFailure(rel, "binary file (NUL bytes)")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseFailure(rel, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})")
    return data


def analyze_source(rel: str, source: bytes, suffix: str) -> tuple[typescript.ModuleFacts, ParseFailure | None]:
    """Analyze one file's bytes. Python files are complete on their own; TS files may hold references."""
    if suffix in PYTHON_SUFFIXES:
        from dualshift.analyzer import python as python_analyzer  # libcst: imported only for Python files

        facts = python_analyzer.analyze_module(rel, source)
        failure = ParseFailure(rel, facts.syntax_error) if facts.syntax_error else None
        return facts, failure
    facts = typescript.analyze(rel, source, suffix, with_arguments=False)
    failure = None
    if facts.syntax_error_line is not None:
        failure = ParseFailure(rel, f"syntax error at line {facts.syntax_error_line}; calls outside it were kept")
    return facts, failure


Job = tuple[str, str, int, bool]  # (path, rel, max bytes, whether to hash the content for the cache)


def _analyze_one(job: Job) -> tuple[str, str | None, typescript.ModuleFacts | None, ParseFailure | None]:
    """Read, hash and analyze one file: (rel, content hash or None, facts, failure)."""
    path, rel, max_bytes, hashed = job
    data = _read(path, rel, max_bytes)
    if isinstance(data, ParseFailure):
        return rel, None, None, data
    sha = content_hash(data) if hashed else None
    try:
        facts, failure = analyze_source(rel, data, os.path.splitext(rel)[1])
    except RecursionError:
        return rel, sha, None, ParseFailure(rel, "nesting too deep to analyze")
    return rel, sha, facts, failure


def _cached(cache: ScanCache, path: str, rel: str, stat_: tuple[int, int] | None, max_bytes: int) -> Any | None:
    """The cached analysis of a file whose size and time are unchanged, or whose bytes are: a checkout
    or a fresh clone rewrites every file with new times, and must not make the next scan cold."""
    if stat_ is None:
        return None
    hit = cache.unchanged(rel, *stat_)
    if hit is not None or rel not in cache.files:
        return hit
    data = _read(path, rel, max_bytes)
    if isinstance(data, ParseFailure):
        return None
    sha = content_hash(data)
    hit = cache.same_content(rel, sha)
    if hit is not None:
        cache.put(rel, *stat_, sha, hit)  # the next scan answers from size and time again
    return hit


def _run(jobs: list[Job], workers: int) -> Iterator[tuple]:
    if workers <= 1 or len(jobs) < 64:
        yield from map(_analyze_one, jobs)
        return
    # Chunks of a few hundred files: few hand-overs, and no worker left alone with a long last chunk.
    chunksize = max(8, min(256, len(jobs) // (workers * 16)))
    with ProcessPoolExecutor(max_workers=workers, initializer=gc.enable) as pool:  # see paused_gc
        yield from pool.map(_analyze_one, jobs, chunksize=chunksize)


def analyze_file(root: Path, path: Path) -> FileResult:
    """One file on its own (what codemods re-read); names imported from other files stay unresolved."""
    rel = path.relative_to(root).as_posix()
    data = _read(path, rel, DEFAULT_MAX_BYTES)
    if isinstance(data, ParseFailure):
        return FileResult(file=rel, failure=data)
    facts, failure = analyze_source(rel, data, path.suffix)
    calls = resolve({rel: facts})
    return FileResult(file=rel, calls=calls, side_calls=list(facts.side_calls), failure=failure)


def _stat(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return -1, -1
    return info.st_size, info.st_mtime_ns


@contextmanager
def paused_gc() -> Iterator[None]:
    """Hold the cyclic garbage collector while results pile up: each of its full passes walks every live
    object, and a scan keeps a few dozen per call until the map is written. Records make no cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@paused_gc()
def scan_tree(
    root: Path,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    jobs: int | None = None,
    progress: Progress | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ScanResult:
    root = Path(root).resolve()
    include, exclude = list(include), list(exclude)
    found = discover(root, include, exclude)
    base = str(root)
    cache = ScanCache.open(cache_dir or default_cache_dir(), root) if use_cache else None
    key = ""
    stats: dict[str, tuple[int, int]] = {}
    if cache is not None:  # sizes and times only tell the cache what changed
        listing = [(rel, *_stat(os.path.join(base, rel))) for rel in found.files]
        key = tree_key(repr((include, exclude, max_bytes)), listing)
        cached = cache.tree(key)
        if isinstance(cached, ScanResult):
            cached.tree_key = key
            return cached
        stats = {rel: (size, mtime) for rel, size, mtime in listing}
    result = ScanResult(root=root, files_scanned=len(found.files), failures=list(found.failures), tree_key=key)
    modules: dict[str, typescript.ModuleFacts] = {}
    work: list[Job] = []
    for rel in found.files:
        hit = _cached(cache, os.path.join(base, rel), rel, stats.get(rel), max_bytes) if cache is not None else None
        if hit is not None:
            _collect(result, modules, rel, *hit)
        else:
            work.append((os.path.join(base, rel), rel, max_bytes, cache is not None))
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    for done, (rel, sha, facts, failure) in enumerate(_run(work, workers), start=1):
        _collect(result, modules, rel, facts, failure)
        if cache is not None and sha is not None:
            cache.put(rel, *stats[rel], sha, (facts, failure))
        if progress is not None:
            progress(done, len(work))
    _add_helper_callers(root, modules)
    calls = separate_foreign_key_embeds(resolve(modules))
    result.calls = sorted(calls, key=lambda c: (c.file, c.start_byte, c.line, c.column, c.table or ""))
    result.side_calls.sort(key=lambda c: (c.file, c.line, c.column))
    result.failures.sort(key=lambda f: f.file)
    if cache is not None:
        cache.keep_only(set(stats))
        cache.save()
        cache.put_tree(key, result)
    return result


def separate_foreign_key_embeds(calls: list[CallSite]) -> list[CallSite]:
    """An embed whose name no call uses as a table, and that ends in `_id` or is a column some call of
    the tree selects from or writes to the call's table, names a foreign-key column (`team:team_id(*)`),
    not a table."""
    tables = {c.table for c in calls if c.table}
    columns: dict[str | None, set[str]] = {}
    for call in calls:
        columns.setdefault(call.table, set()).update(call.select_columns, call.write_columns)
    separated = []
    for call in calls:
        hints = tuple(
            name
            for name in call.embedded
            if name not in tables and (name.endswith("_id") or name in columns.get(call.table, ()))
        )
        if hints:
            call = replace(call, embedded=tuple(t for t in call.embedded if t not in hints), foreign_key_embeds=hints)
        separated.append(call)
    return separated


def _add_helper_callers(root: Path, modules: dict[str, typescript.ModuleFacts]) -> None:
    """The arguments of plain calls matter only in files that call a helper taking a table name:
    read those (found by the helper's name in their bytes) and collect them there."""
    helpers = {r.name for facts in modules.values() for r in facts.pending.values() if r.kind == "param"}
    if not helpers:
        return
    needles = [f"{name}(".encode() for name in helpers]
    for rel, facts in modules.items():
        suffix = os.path.splitext(rel)[1]
        if suffix not in typescript.SUFFIXES:
            continue  # Python files keep their call arguments from the first pass
        try:
            data = (root / rel).read_bytes()
        except OSError:
            continue
        if any(needle in data for needle in needles):
            facts.call_arguments = typescript.call_arguments(rel, data, suffix)


def _collect(
    result: ScanResult,
    modules: dict[str, typescript.ModuleFacts],
    rel: str,
    facts: typescript.ModuleFacts | None,
    failure: ParseFailure | None,
) -> None:
    if facts is not None:
        modules[rel] = facts
        result.side_calls.extend(facts.side_calls)
    if failure is not None:
        result.failures.append(failure)
