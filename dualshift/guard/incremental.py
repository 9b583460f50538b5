"""`dualshift check`'s own cache: one SQLite file per root, so a pull request touches only what it changed.

A row per file holds its size, mtime and content hash (git's blob id) and what ties it to other files (the
helper names it defines or calls, the files its last resolution read); its analysis (`ModuleFacts`) and its
findings after the ignore comments sit in tables of their own, read only when needed. A check walks and
stats the tree, hashes only files whose size or mtime differ (after a fresh git checkout, git's index
vouches for the files it wrote), analyzes those whose bytes changed, re-resolves them and the files whose
resolution read them or may now read them, and takes every other file's findings from the cache. The
result is the cold run's, finding for finding (tests/guard/test_incremental.py). Findings depend on the
plan and the stage: another plan or stage resolves everything again, once.

A cache that cannot be read is rebuilt; one that is locked or cannot be written only costs speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from dualshift import __version__
from dualshift.analyzer import scan
from dualshift.analyzer.cache import content_hash, default_cache_dir
from dualshift.analyzer.resolve import resolve
from dualshift.analyzer.typescript import SUFFIXES as TS_SUFFIXES
from dualshift.analyzer.typescript import ModuleFacts, call_arguments
from dualshift.guard.rules import Finding, Stage, apply_ignores, findings
from dualshift.plan import Plan

FORMAT = "check-2"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (  -- small rows: a check scans this table whole
  rel TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime INTEGER NOT NULL, sha TEXT NOT NULL,
  analyzed INTEGER NOT NULL,        -- 0 when the file could not be analyzed (no facts)
  pending INTEGER NOT NULL,         -- 1 when its calls name tables only other files can resolve
  helpers TEXT NOT NULL,            -- JSON: helper names whose table parameter it resolves from callers
  callees TEXT NOT NULL,            -- JSON: names it calls with string arguments
  consulted TEXT NOT NULL           -- JSON: the files its last resolution read
);
CREATE TABLE IF NOT EXISTS facts (rel TEXT PRIMARY KEY, blob BLOB NOT NULL);     -- pickled ModuleFacts
CREATE TABLE IF NOT EXISTS findings (rel TEXT PRIMARY KEY, blob BLOB NOT NULL);  -- pickled, after ignores
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), stats BLOB NOT NULL);
"""


def cache_path(cache_dir: Path | None, root: Path) -> Path:
    base = (cache_dir or default_cache_dir()).parent / "check"
    return base / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.sqlite"


def settings_key(plan_file: Path, stage: Stage) -> str:
    """What findings depend on besides the code: the plan's bytes, the stage, this version."""
    try:
        text = plan_file.read_bytes()
    except OSError:
        text = b""
    return hashlib.sha256(b"%s\0%s\0%s\0" % (FORMAT.encode(), __version__.encode(), stage.encode()) + text).hexdigest()


@dataclass
class Row:
    facts: ModuleFacts | None
    helpers: list[str]
    callees: list[str]


def _row_of(facts: ModuleFacts | None) -> Row:
    if facts is None:
        return Row(None, [], [])
    helpers = sorted({r.name for r in facts.pending.values() if r.kind == "param"})
    return Row(facts, helpers, sorted({a.callee for a in facts.call_arguments}))


class StoredModules(Mapping[str, ModuleFacts]):
    """Every analyzed file's facts: fresh ones in memory, the rest unpickled from the cache on first use."""

    def __init__(self, db: sqlite3.Connection, paths: list[str], fresh: dict[str, ModuleFacts]) -> None:
        self.db, self.paths, self.known, self.loaded = db, paths, set(paths), dict(fresh)

    def __contains__(self, rel: object) -> bool:
        return rel in self.known

    def __getitem__(self, rel: str) -> ModuleFacts:
        if rel not in self.loaded:
            row = self.db.execute("SELECT blob FROM facts WHERE rel = ?", (rel,)).fetchone()
            if row is None:
                raise KeyError(rel)
            self.loaded[rel] = pickle.loads(row[0])
        return self.loaded[rel]

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Changes:
    analyzed: dict[str, tuple[int, int, str, ModuleFacts | None]] = field(default_factory=dict)
    restamped: list[tuple[int, int, str]] = field(default_factory=list)  # same bytes, new (size, mtime, rel)
    removed: set[str] = field(default_factory=set)
    before: dict[str, Row] = field(default_factory=dict)  # changed files' stored rows, for what they touched
    stats: dict[str, tuple[int, int]] = field(default_factory=dict)  # every file's (size, mtime) now
    hashed: int = 0  # files read only to compare their content hash


@dataclass
class Work:
    """What a check had to do: files read to compare their hash, analyzed again, resolved again."""

    hashed: int = 0
    analyzed: int = 0
    resolved: int = 0


def check_findings(
    root: Path,
    plan: Plan,
    plan_file: Path,
    stage: Stage,
    cache_dir: Path | None = None,
    jobs: int | None = None,
    work: Work | None = None,
) -> list[Finding]:
    """The findings of the whole tree after ignores, as `findings(scan_tree(root).calls, …)` gives them."""
    root = Path(root).resolve()
    path = cache_path(cache_dir, root)
    key = settings_key(plan_file, stage)

    def run(where: Path) -> list[Finding]:
        with closing(_open(where)) as db:
            return _check(db, root, plan, key, stage, jobs, work or Work())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return run(path)
    except (OSError, sqlite3.OperationalError):  # locked by another check, or a disk that refuses: no cache
        return run(Path(":memory:"))
    except (sqlite3.DatabaseError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        for suffix in ("", "-wal", "-shm"):  # unreadable: start again
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        try:
            return run(path)
        except (OSError, sqlite3.Error):
            return run(Path(":memory:"))


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, timeout=10)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    if _meta(db, "format") != f"{FORMAT} {__version__}":  # another layout, or a new cache: start empty
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            db.execute(f'DROP TABLE "{table}"')
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES ('format', ?)", (f"{FORMAT} {__version__}",))
    return db


def _meta(db: sqlite3.Connection, name: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else row[0]


def _check(
    db: sqlite3.Connection, root: Path, plan: Plan, key: str, stage: Stage, jobs: int | None, work: Work
) -> list[Finding]:
    listing = scan.discover(root).files
    changes = _changes(db, root, listing, jobs)
    work.hashed, work.analyzed = changes.hashed, len(changes.analyzed)
    db.execute("BEGIN IMMEDIATE")
    _store_changes(db, changes)
    modules, helpers_changed = _modules(db, root, listing, changes)
    everything = _meta(db, "settings") != key  # another plan or stage: every file's findings again
    affected = set(listing) if everything else _affected(db, changes, set(listing), helpers_changed)
    affected = {r for r in affected if r in modules}
    work.resolved = len(affected)
    fresh = _resolve_and_store(db, root, plan, stage, modules, affected)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (key,))
    kept = db.execute("SELECT rel, blob FROM findings").fetchall()
    db.execute("COMMIT")
    result = list(fresh)
    for rel, blob in kept:
        if rel not in affected:
            result.extend(pickle.loads(blob))
    return sorted(result, key=_order)


def _modules(db: sqlite3.Connection, root: Path, listing: list[str], changes: Changes) -> tuple[StoredModules, bool]:
    """Every analyzed file's facts (read on demand), with call arguments wherever the tree's helper names
    are called, and whether the set of helper names changed."""
    unanalyzable = _unanalyzable(db, changes)
    modules = StoredModules(db, [r for r in listing if r not in unanalyzable], _fresh(changes))
    rows = db.execute("SELECT helpers FROM files WHERE pending = 1")
    helpers = sorted({name for (text,) in rows for name in json.loads(text)})
    helpers_changed = _meta(db, "helpers") != json.dumps(helpers)
    if helpers_changed:  # a new helper name: every file calling it now needs its call arguments
        _collect_call_arguments(db, root, modules, listing, helpers)
    elif helpers:
        _collect_call_arguments(db, root, modules, [r for r in changes.analyzed if r in modules.loaded], helpers)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('helpers', ?)", (json.dumps(helpers),))
    return modules, helpers_changed


def _resolve_and_store(
    db: sqlite3.Connection, root: Path, plan: Plan, stage: Stage, modules: StoredModules, affected: set[str]
) -> list[Finding]:
    """The affected files' findings, resolved against the whole tree; stored with what each resolution read."""
    pending = [r for (r,) in db.execute("SELECT rel FROM files WHERE pending = 1")]
    callers = [r for (r,) in db.execute("SELECT rel FROM files WHERE callees <> '[]'")]
    consulted: dict[str, set[str]] = {}
    calls = resolve(modules, only=affected, helper_files=pending, caller_files=callers, consulted=consulted)
    fresh = apply_ignores(findings(calls, plan, stage), root)
    by_file: dict[str, list[Finding]] = {}
    for finding in fresh:
        by_file.setdefault(finding.file, []).append(finding)
    db.executemany(
        "UPDATE files SET consulted = ? WHERE rel = ?", [(json.dumps(sorted(consulted[r])), r) for r in affected]
    )
    db.executemany("DELETE FROM findings WHERE rel = ?", [(r,) for r in affected if r not in by_file])
    db.executemany(
        "INSERT OR REPLACE INTO findings VALUES (?, ?)", [(r, pickle.dumps(found)) for r, found in by_file.items()]
    )
    return fresh


def _order(finding: Finding) -> tuple:
    # findings() sorts by file, line, column and rule before ignores turn some into DS900: keep that order.
    rule = finding.rule
    if rule == "DS900":
        rule = finding.message.split(" ", 1)[0]
    return (finding.file, finding.line, finding.column, rule)


def _unanalyzable(db: sqlite3.Connection, changes: Changes) -> set[str]:
    stored = {r for (r,) in db.execute("SELECT rel FROM files WHERE analyzed = 0")}
    return stored | {r for r, (*_, facts) in changes.analyzed.items() if facts is None}


def _fresh(changes: Changes) -> dict[str, ModuleFacts]:
    return {r: facts for r, (*_, facts) in changes.analyzed.items() if facts is not None}


def _stat_all(root: Path, listing: list[str]) -> dict[str, tuple[int, int]]:
    base = str(root) + os.sep
    stats: dict[str, tuple[int, int]] = {}
    for rel in listing:
        try:
            info = os.stat(base + rel)
            stats[rel] = (info.st_size, info.st_mtime_ns)
        except OSError:
            stats[rel] = (-1, -1)  # analyzed, it becomes a row without facts, like a file that does not read
    return stats


def _snapshot(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Every file's size and mtime as the last check left them: one blob, not a row per file."""
    row = db.execute("SELECT stats FROM snapshot WHERE id = 1").fetchone()
    if row is not None:
        return pickle.loads(row[0])
    return {rel: (size, mtime) for rel, size, mtime in db.execute("SELECT rel, size, mtime FROM files")}


def _same_bytes(db: sqlite3.Connection, root: Path, candidates: list[str], changes: Changes) -> set[str]:
    """The files among candidates whose bytes hash as stored: a checkout rewrote them unchanged. After a
    checkout, git's index already holds the ids of the files it wrote: those are not read."""
    if len(candidates) <= 64:
        changes.hashed = len(candidates)
        stored = {rel: db.execute("SELECT sha FROM files WHERE rel = ?", (rel,)).fetchone()[0] for rel in candidates}
        return {rel for rel in candidates if _hashes_as(root, rel, stored[rel])}
    stored = dict(db.execute("SELECT rel, sha FROM files"))
    clean = _git_clean_ids(root)
    same = {rel for rel in candidates if clean.get(rel) == stored[rel]}
    rest = [rel for rel in candidates if rel not in same]
    changes.hashed = len(rest)
    with ThreadPoolExecutor(max_workers=4) as pool:  # reading and hashing release the GIL
        hashed = pool.map(lambda rel: _hashes_as(root, rel, stored[rel]), rest)
        return same | {rel for rel, ok in zip(rest, hashed, strict=True) if ok}


def _hashes_as(root: Path, rel: str, sha: str) -> bool:
    data = scan._read(os.path.join(root, rel), rel, scan.DEFAULT_MAX_BYTES)
    return not isinstance(data, scan.ParseFailure) and content_hash(data) == sha


def _git(root: Path, *args: str) -> bytes | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _git_clean_ids(root: Path) -> dict[str, str]:
    """Blob ids of the files under root that git tracks and finds unchanged in the working tree, by path
    relative to root. Empty when root is not in a git work tree, or when the bytes on disk may differ from
    the blob's (core.autocrlf, attributes that filter or convert line ends, files git is told not to check)."""
    autocrlf = _git(root, "config", "--get", "core.autocrlf")
    if autocrlf is not None and autocrlf.strip().lower() in (b"true", b"input"):
        return {}
    if _git(root, "config", "--get", "core.attributesFile") is not None:
        return {}
    info = _git(root, "rev-parse", "--git-path", "info/attributes")
    listed = _git(root, "ls-files", "--stage", "-v", "-z")
    modified = _git(root, "diff", "--name-only", "--no-renames", "--relative", "-z")
    if info is None or listed is None or modified is None or (root / info.decode().strip()).exists():
        return {}
    changed = set(modified.decode("utf-8", "surrogateescape").split("\0"))
    ids: dict[str, str] = {}
    for entry in listed.decode("utf-8", "surrogateescape").split("\0"):
        meta, _, rel = entry.partition("\t")
        if rel.endswith(".gitattributes"):
            return {}
        fields = meta.split(" ")  # tag (H: cached, nothing assumed or skipped), mode, id, stage
        regular = len(fields) == 4 and fields[0] == "H" and fields[1] in ("100644", "100755") and fields[3] == "0"
        if regular and rel not in changed:
            ids[rel] = fields[2]
    return ids


def _changes(db: sqlite3.Connection, root: Path, listing: list[str], jobs: int | None) -> Changes:
    stats = _stat_all(root, listing)
    stored = _snapshot(db)
    changes = Changes(removed=stored.keys() - stats.keys(), stats=stats)
    differing = [rel for rel, stat_ in stats.items() if stored.get(rel) != stat_]
    same = _same_bytes(db, root, [rel for rel in differing if rel in stored], changes)
    changes.restamped = [(*stats[rel], rel) for rel in differing if rel in same]
    work: list[scan.Job] = [
        (os.path.join(root, rel), rel, scan.DEFAULT_MAX_BYTES, True) for rel in differing if rel not in same
    ]
    for rel, sha, facts, _failure in scan._run(work, jobs if jobs is not None else (os.cpu_count() or 1)):
        changes.analyzed[rel] = (*stats[rel], sha or "", facts)
    for rel in changes.analyzed.keys() | changes.removed:
        row = db.execute("SELECT x.blob FROM files f LEFT JOIN facts x USING (rel) WHERE f.rel = ?", (rel,)).fetchone()
        if row is not None:
            changes.before[rel] = _row_of(pickle.loads(row[0]) if row[0] is not None else None)
    return changes


def _store_changes(db: sqlite3.Connection, changes: Changes) -> None:
    if changes.analyzed or changes.restamped or changes.removed:
        db.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?)", (pickle.dumps(changes.stats),))
    db.executemany("UPDATE files SET size = ?, mtime = ? WHERE rel = ?", changes.restamped)
    for table in ("files", "facts", "findings"):
        db.executemany(f"DELETE FROM {table} WHERE rel = ?", [(r,) for r in changes.removed])
    for rel, (size, mtime, sha, facts) in changes.analyzed.items():
        row = _row_of(facts)
        db.execute(
            "INSERT OR REPLACE INTO files (rel, size, mtime, sha, analyzed, pending, helpers, callees, consulted)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, '[]')",
            (
                rel,
                size,
                mtime,
                sha,
                int(facts is not None),
                int(bool(facts and facts.pending)),
                json.dumps(row.helpers),
                json.dumps(row.callees),
            ),
        )
        if facts is None:  # no facts, so no findings: its old ones must not be kept as an unaffected file's
            db.execute("DELETE FROM facts WHERE rel = ?", (rel,))
            db.execute("DELETE FROM findings WHERE rel = ?", (rel,))
        else:
            db.execute("INSERT OR REPLACE INTO facts VALUES (?, ?)", (rel, pickle.dumps(facts)))


def _collect_call_arguments(
    db: sqlite3.Connection, root: Path, modules: StoredModules, rels: list[str], helpers: list[str]
) -> None:
    """What the scan's helper pass does: a TypeScript file that names a helper (`helper(` in its bytes) has
    its call arguments collected; one that does not has none."""
    needles = [f"{name}(".encode() for name in helpers]
    for rel in rels:
        suffix = os.path.splitext(rel)[1]
        if suffix not in TS_SUFFIXES or rel not in modules:
            continue
        try:
            data = (root / rel).read_bytes() if needles else b""
        except OSError:
            continue
        if any(needle in data for needle in needles):
            arguments = call_arguments(rel, data, suffix)
        elif (
            rel in modules.loaded or db.execute("SELECT callees <> '[]' FROM files WHERE rel = ?", (rel,)).fetchone()[0]
        ):
            arguments = []
        else:
            continue  # had none, has none: leave its row unread
        facts = modules[rel]
        if arguments == facts.call_arguments:
            continue
        facts.call_arguments = arguments
        db.execute("UPDATE facts SET blob = ? WHERE rel = ?", (pickle.dumps(facts), rel))
        db.execute("UPDATE files SET callees = ? WHERE rel = ?", (json.dumps(_row_of(facts).callees), rel))


def _affected(db: sqlite3.Connection, changes: Changes, listing: set[str], helpers_changed: bool) -> set[str]:
    """The changed files, and the files whose resolution read one of them or may now read one."""
    changed = set(changes.analyzed) | changes.removed
    affected = set(changes.analyzed)
    if not changed and not helpers_changed:
        return affected
    names: set[str] = set()
    for rel in changed:
        for row in (changes.before.get(rel), _row_of(changes.analyzed[rel][3]) if rel in changes.analyzed else None):
            if row is not None:
                names.update(row.helpers, row.callees)
    files_added_or_removed = bool(changes.removed) or any(r not in changes.before for r in changes.analyzed)
    for rel, consulted, helpers in db.execute("SELECT rel, consulted, helpers FROM files WHERE pending = 1"):
        if (
            helpers_changed
            or files_added_or_removed  # an import may now find a file it did not, or lose one
            or not changed.isdisjoint(json.loads(consulted))
            or not names.isdisjoint(json.loads(helpers))
        ):
            affected.add(rel)
    return affected & listing
