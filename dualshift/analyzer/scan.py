"""Scan a source tree: find the files, analyze each (in a process pool, through a content cache), resolve.

Bad input never stops a scan: a file that cannot be read, is binary, is not UTF-8, is too large or does
not parse is reported as a ParseFailure and the scan goes on.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from dualshift import __version__
from dualshift.analyzer import python as python_analyzer
from dualshift.analyzer import typescript
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
_CACHE_FORMAT = 1

Progress = Callable[[int, int], None]


@dataclass
class ScanResult:
    root: Path
    files_scanned: int = 0
    calls: list[CallSite] = field(default_factory=list)
    side_calls: list[SideCall] = field(default_factory=list)
    failures: list[ParseFailure] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Finding the files


@dataclass(frozen=True)
class Discovered:
    files: list[Path]
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
    files: list[Path] = []
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
            files.append(here / name)
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    return Discovered(files, failures)


# ---------------------------------------------------------------------------------------------
# One file


def _read(path: Path, rel: str, max_bytes: int) -> bytes | ParseFailure:
    try:
        info = path.stat()
    except OSError as exc:
        if path.is_symlink():
            return ParseFailure(rel, f"broken or looping symbolic link ({exc.strerror})")
        return ParseFailure(rel, f"cannot stat file: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return ParseFailure(rel, "not a regular file")
    if info.st_size > max_bytes:
        return ParseFailure(
            rel, f"too large to analyze ({info.st_size / 1_048_576:.1f} MB > {max_bytes / 1_048_576:.1f} MB limit)"
        )
    try:
        data = path.read_bytes()
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
        result = python_analyzer.analyze_python(rel, source)
        facts = typescript.ModuleFacts(calls=list(result.calls), side_calls=list(result.side_calls))
        return facts, result.failure
    facts = typescript.analyze(rel, source, suffix)
    failure = None
    if facts.syntax_error_line is not None:
        failure = ParseFailure(rel, f"syntax error at line {facts.syntax_error_line}; calls outside it were kept")
    return facts, failure


def _cache_key(rel: str, source: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(f"{_CACHE_FORMAT}\0{__version__}\0{rel}\0".encode())
    digest.update(source)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dualshift" / "scan"


def _cached(cache_dir: Path | None, key: str) -> tuple[typescript.ModuleFacts, ParseFailure | None] | None:
    if cache_dir is None:
        return None
    try:
        with open(cache_dir / key[:2] / key, "rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None


def _store(cache_dir: Path | None, key: str, value: tuple[typescript.ModuleFacts, ParseFailure | None]) -> None:
    if cache_dir is None:
        return
    folder = cache_dir / key[:2]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, delete=False) as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, folder / key)
    except OSError:
        pass  # a cache that cannot be written only costs speed


def _analyze_one(
    job: tuple[str, str, str | None, int],
) -> tuple[str, typescript.ModuleFacts | None, ParseFailure | None]:
    path, rel, cache_dir_text, max_bytes = job
    cache_dir = Path(cache_dir_text) if cache_dir_text else None
    data = _read(Path(path), rel, max_bytes)
    if isinstance(data, ParseFailure):
        return rel, None, data
    key = _cache_key(rel, data)
    hit = _cached(cache_dir, key)
    if hit is not None:
        return rel, hit[0], hit[1]
    try:
        value = analyze_source(rel, data, os.path.splitext(rel)[1])
    except RecursionError:
        return rel, None, ParseFailure(rel, "nesting too deep to analyze")
    _store(cache_dir, key, value)
    return rel, value[0], value[1]


def _run(jobs: list[tuple[str, str, str | None, int]], workers: int) -> Iterator[tuple]:
    if workers <= 1 or len(jobs) < 64:
        yield from map(_analyze_one, jobs)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_analyze_one, jobs, chunksize=max(8, len(jobs) // (workers * 16)))


def analyze_file(root: Path, path: Path) -> FileResult:
    """One file on its own (what codemods re-read); names imported from other files stay unresolved."""
    rel = path.relative_to(root).as_posix()
    data = _read(path, rel, DEFAULT_MAX_BYTES)
    if isinstance(data, ParseFailure):
        return FileResult(file=rel, failure=data)
    facts, failure = analyze_source(rel, data, path.suffix)
    calls = resolve({rel: facts})
    return FileResult(file=rel, calls=calls, side_calls=list(facts.side_calls), failure=failure)


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
    found = discover(root, include, exclude)
    if use_cache and cache_dir is None:
        cache_dir = default_cache_dir()
    cache_text = str(cache_dir) if use_cache and cache_dir is not None else None
    work = [(str(p), p.relative_to(root).as_posix(), cache_text, max_bytes) for p in found.files]
    workers = jobs if jobs is not None else (os.cpu_count() or 1)
    result = ScanResult(root=root, files_scanned=len(work), failures=list(found.failures))
    modules: dict[str, typescript.ModuleFacts] = {}
    for done, (rel, facts, failure) in enumerate(_run(work, workers), start=1):
        if facts is not None:
            modules[rel] = facts
            result.side_calls.extend(facts.side_calls)
        if failure is not None:
            result.failures.append(failure)
        if progress is not None:
            progress(done, len(work))
    result.calls = sorted(resolve(modules), key=lambda c: (c.file, c.start_byte, c.line, c.column, c.table or ""))
    result.side_calls.sort(key=lambda c: (c.file, c.line, c.column))
    result.failures.sort(key=lambda f: f.file)
    return result
