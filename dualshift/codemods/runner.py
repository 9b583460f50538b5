"""Run a codemod over files: one file's text in, one FileOutcome out; writing is the runner's decision.

A file is rewritten only when every check passes: not modified in git (unless forced), unchanged since
its dry run, and the result parses without new syntax errors. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import difflib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dualshift.analyzer import typescript
from dualshift.analyzer.records import CallSite
from dualshift.analyzer.scan import scan_tree
from dualshift.codemods.ledger import Ledger, digest
from dualshift.codemods.result import FileOutcome, Rewrite

Transform = Callable[[str, str, list[CallSite]], Rewrite]
Decide = Callable[[FileOutcome], bool]  # the --interactive question; True: apply this file


@dataclass
class RunOptions:
    apply: bool = False
    force: bool = False
    patch_dir: Path | None = None
    files: tuple[str, ...] = ()  # relative paths; empty: every source file under root


def unified_diff(rel: str, before: str, after: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=f"a/{rel}", tofile=f"b/{rel}"
    )
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def git_dirty(root: Path, path: Path) -> bool:
    """Whether git knows of uncommitted changes to the file (False outside a repository)."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--", str(path)], cwd=root, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def write_atomically(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, newline="") as handle:
        try:
            handle.write(text)
        except OSError:  # a full disk: leave no temporary file in the user's tree
            handle.close()
            os.unlink(handle.name)
            raise
    try:
        os.chmod(handle.name, mode)
        os.replace(handle.name, path)
    except OSError:
        os.unlink(handle.name)
        raise


def _new_syntax_errors(rel: str, before: str, after: str) -> int:
    suffix = Path(rel).suffix
    if suffix == ".py":
        import libcst  # a third of a second to import: only Python files need it

        try:
            libcst.parse_module(after)
        except libcst.ParserSyntaxError:
            return 1
        return 0
    if suffix not in typescript.SUFFIXES:
        return 0
    old = typescript.error_count(typescript.parse(before.encode(), suffix))
    new = typescript.error_count(typescript.parse(after.encode(), suffix))
    return new - old


def _calls_by_file(root: Path) -> tuple[dict[str, list[CallSite]], dict[str, str], list[str]]:
    """Whole-tree analysis, so that table names imported from other files are resolved."""
    scanned = scan_tree(root)
    by_file: dict[str, list[CallSite]] = {}
    for call in scanned.calls:
        by_file.setdefault(call.file, []).append(call)
    failures = {f.file: f.reason for f in scanned.failures}
    files = sorted(set(by_file) | set(failures))
    return by_file, failures, files


# Whole-tree decisions before any file is rewritten: (every call, whether a file is in scope) → groups of
# files that must be written together (a helper and the callers whose arguments it needs changed).
Prepare = Callable[[list[CallSite], Callable[[str], bool]], list[frozenset[str]]]
Computed = dict[str, tuple[FileOutcome, str, str]]  # file → (outcome of its dry run, new text, old text)


def run_codemod(
    name: str,
    root: Path,
    transform: Transform,
    options: RunOptions,
    decide: Decide | None = None,
    skip: Callable[[str], bool] = lambda rel: False,
    prepare: Prepare | None = None,
) -> list[FileOutcome]:
    root = root.resolve()
    ledger = Ledger.load(root)
    calls_by_file, failures, files = _calls_by_file(root)
    chosen = {Path(rel).as_posix() for rel in options.files}
    groups: list[frozenset[str]] = []
    if prepare is not None:
        every_call = [call for calls in calls_by_file.values() for call in calls]
        groups = _joined(prepare(every_call, lambda rel: not chosen or rel in chosen))
        files = sorted(set(files).union(*groups))
    targets = [Path(rel).as_posix() for rel in options.files] or files
    computed = {
        rel: _one_file(root / rel, rel, transform, skip, calls_by_file.get(rel, []), failures.get(rel))
        for rel in targets
    }
    _fail_broken_groups(computed, groups)
    handled: dict[str, FileOutcome] = {}
    quit_requested = False
    try:
        for rel in targets:
            if rel in handled:
                continue
            if quit_requested:
                handled[rel] = FileOutcome(rel, "skipped", "quit before this file")
                continue
            together = next((sorted(g) for g in groups if rel in g and computed[rel][0].status == "changed"), [rel])
            quit_requested = _handle(name, root, together, computed, options, ledger, decide, handled)
    finally:  # an interrupted run keeps the record of the files it did write, for revert
        ledger.save()
    return [handled[rel] for rel in targets]


def _joined(groups: list[frozenset[str]]) -> list[frozenset[str]]:
    """Groups that share a file made one: that file's rewrite carries the edits of both."""
    joined: list[frozenset[str]] = []
    for group in groups:
        touching = [g for g in joined if not g.isdisjoint(group)]
        joined = [g for g in joined if g.isdisjoint(group)] + [group.union(*touching)]
    return joined


def _fail_broken_groups(computed: Computed, groups: list[frozenset[str]]) -> None:
    """A group is rewritten whole or not at all: one member that cannot be rewritten fails the others."""
    for group in groups:
        broken = sorted(rel for rel in group if rel in computed and computed[rel][0].status != "changed")
        for rel in group:
            if rel in computed and computed[rel][0].status == "changed" and broken:
                outcome = computed[rel][0]
                reason = f"rewritten together with {', '.join(broken)}, which cannot be: left untouched"
                computed[rel] = (FileOutcome(rel, "failed", reason, outcome.diff, outcome.skipped_sites), "", "")


def _handle(
    name: str,
    root: Path,
    together: list[str],
    computed: Computed,
    options: RunOptions,
    ledger: Ledger,
    decide: Decide | None,
    handled: dict[str, FileOutcome],
) -> bool:
    """Preview, ask about and write one file, or a group of files that goes together; True when the user
    quits. A group is written only when every member is accepted and passes the checks."""
    changed = [rel for rel in together if computed[rel][0].status == "changed"]
    for rel in together:
        if rel not in changed:
            handled[rel] = computed[rel][0]
    for rel in changed:
        outcome = computed[rel][0]
        if options.patch_dir is not None:
            patch = options.patch_dir / (rel.replace("/", "__") + ".patch")
            patch.parent.mkdir(parents=True, exist_ok=True)
            patch.write_text(outcome.diff, encoding="utf-8")
    if not options.apply:
        for rel in changed:
            ledger.preview(rel, name, computed[rel][2])
            handled[rel] = computed[rel][0]
        return False
    refused: str | None = None
    broken: dict[str, str] = {}
    for rel in changed:
        answer = True if decide is None else decide(computed[rel][0])
        if answer is None or not answer:
            refused = "quit" if answer is None else "declined"
            break
    if refused is None:
        problems = {rel: _refusal(root, rel, computed[rel][2], ledger, options.force) for rel in changed}
        broken = {rel: p for rel, p in problems.items() if p is not None}
    if refused is not None or broken:
        for rel in changed:
            outcome = computed[rel][0]
            if refused is not None:
                reason = refused if len(changed) == 1 else f"{refused} (rewritten together with {', '.join(changed)})"
                handled[rel] = FileOutcome(rel, "skipped", reason, outcome.diff, outcome.skipped_sites)
            else:
                reason = broken.get(rel) or f"rewritten together with {', '.join(sorted(broken))}, which cannot be"
                handled[rel] = FileOutcome(rel, "failed", reason, outcome.diff)
        return refused == "quit"
    _write_group(name, root, changed, computed, ledger, handled)
    return False


def _refusal(root: Path, rel: str, old_text: str, ledger: Ledger, force: bool) -> str | None:
    path = root / rel
    previewed = ledger.previews.get(rel)
    try:
        current = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):  # deleted or rewritten since the dry run
        return "changed on disk since the dry run; run the dry run again"
    if current != old_text or (previewed and previewed["sha"] != digest(current)):
        return "changed on disk since the dry run; run the dry run again"
    if not force and git_dirty(root, path):
        return "has uncommitted changes in git (commit them, or use --force)"
    return None


def _write_group(
    name: str, root: Path, changed: list[str], computed: Computed, ledger: Ledger, handled: dict[str, FileOutcome]
) -> None:
    """Write every file; should one write fail, put back those already written."""
    written: list[str] = []
    for rel in changed:
        outcome, new_text, old_text = computed[rel]
        try:
            write_atomically(root / rel, new_text)
        except OSError as exc:
            for other in changed:
                why = f"cannot write: {exc.strerror}" if other == rel else f"not written: {rel} could not be"
                handled[other] = FileOutcome(other, "failed", why, computed[other][0].diff)
            for done in written:
                try:
                    write_atomically(root / done, computed[done][2])
                except OSError as undo:  # still rewritten: in the ledger, so that revert can put it back
                    ledger.record(done, name, computed[done][2], computed[done][1])
                    why = f"rewritten, and could not be put back after {rel} failed ({undo.strerror}): revert it"
                    handled[done] = FileOutcome(done, "failed", why, computed[done][0].diff)
            return
        written.append(rel)
    for rel in changed:
        outcome, new_text, old_text = computed[rel]
        ledger.record(rel, name, old_text, new_text)
        handled[rel] = outcome


def _one_file(
    path: Path, rel: str, transform: Transform, skip, calls: list[CallSite], failure: str | None
) -> tuple[FileOutcome, str, str]:
    if skip(rel):
        return FileOutcome(rel, "skipped", "the wrapper module itself"), "", ""
    try:
        old_text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return FileOutcome(rel, "failed", f"cannot read: {getattr(exc, 'strerror', None) or exc}"), "", ""
    if not path.is_file():
        return FileOutcome(rel, "failed", "no such file"), "", ""
    if failure is not None and not calls:
        return FileOutcome(rel, "skipped", failure), "", old_text
    try:
        rewrite = transform(old_text, rel, calls)
    except ValueError as exc:
        return FileOutcome(rel, "failed", str(exc)), "", old_text
    if not rewrite.changed(old_text):
        status = "skipped" if rewrite.skipped_sites else "unchanged"
        reason = "; ".join(f"line {s.line}: {s.reason}" for s in rewrite.skipped_sites) or None
        return FileOutcome(rel, status, reason, skipped_sites=rewrite.skipped_sites), old_text, old_text
    if _new_syntax_errors(rel, old_text, rewrite.new_source) > 0:
        return FileOutcome(rel, "failed", "the rewritten file does not parse; left untouched"), "", old_text
    diff = unified_diff(rel, old_text, rewrite.new_source)
    return FileOutcome(rel, "changed", None, diff, rewrite.skipped_sites), rewrite.new_source, old_text


def revert(root: Path, files: Iterable[str], force: bool) -> list[FileOutcome]:
    """Put files back exactly as they were before their last codemod."""
    root = root.resolve()
    ledger = Ledger.load(root)
    targets = list(files) or sorted(f for f, entries in ledger.applied.items() if entries)
    outcomes = []
    for rel in targets:
        entry = ledger.last(rel)
        if entry is None:
            outcomes.append(FileOutcome(rel, "skipped", "no codemod applied to this file"))
            continue
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if digest(current) != entry.result_sha and not force:
            outcomes.append(FileOutcome(rel, "failed", "edited since the codemod; revert by hand or use --force"))
            continue
        write_atomically(path, entry.original) if path.exists() else path.write_text(entry.original, encoding="utf-8")
        ledger.pop(rel)
        outcomes.append(
            FileOutcome(
                rel, "changed", f"restored from before {entry.codemod}", unified_diff(rel, current, entry.original)
            )
        )
    ledger.save()
    return outcomes
