"""`dualshift check` with a warm cache gives what a cold check gives, after edits that cross files."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dualshift.analyzer.scan import scan_tree
from dualshift.guard.incremental import Work, check_findings
from dualshift.guard.rules import Finding, apply_ignores, findings
from dualshift.plan import load_plan

REPO = Path(__file__).resolve().parents[2]
XBOT = REPO / "fixtures" / "xbot"


@pytest.fixture
def service(tmp_path: Path) -> Path:
    root = tmp_path / "xbot"
    shutil.copytree(XBOT, root, symlinks=True, ignore=shutil.ignore_patterns("expected", "node_modules"))
    return root


def _cold(root: Path, stage: str = "in-flight") -> list[Finding]:
    """The reference: a scan without any cache, then the rules."""
    plan = load_plan(root / "dualshift.toml")
    return apply_ignores(findings(scan_tree(root, use_cache=False, jobs=1).calls, plan, stage), root)  # type: ignore[arg-type]


def _warm(root: Path, cache: Path, stage: str = "in-flight") -> tuple[list[Finding], Work]:
    work = Work()
    plan_file = root / "dualshift.toml"
    found = check_findings(root, load_plan(plan_file), plan_file, stage, cache_dir=cache, jobs=1, work=work)  # type: ignore[arg-type]
    return found, work


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} not found"
    path.write_text(text.replace(old, new))


def test_a_warm_incremental_check_equals_a_cold_one_after_edits(service: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "scan"
    (service / "src" / "more").mkdir()
    for n in range(80):  # enough files for the checkout below to take the threaded hashing path
        (service / "src" / "more" / f"job{n:02d}.ts").write_text(
            f"export const n{n} = (db: any) => db.from('posts').select('id');\n"
        )
    first, work = _warm(service, cache)
    assert first == _cold(service) and work.analyzed > 100

    # A constant changes in one file: the helper in an unchanged file (db.ts) now inserts into tweets.
    _edit(service / "src/config/tables.ts", "CONTENT_TABLE = 'content_metadata'", "CONTENT_TABLE = 'tweets'")
    found, work = _warm(service, cache)
    assert found == _cold(service)
    assert any(f.file == "src/db/db.ts" and f.table == "tweets" for f in found)
    assert work.analyzed == 1 and work.resolved < 10

    # An added write, a removed import, a renamed helper (with its callers).
    (service / "src/jobs/newPoster.ts").write_text(
        "export const post = (db: any, text: string) => db.from('tweets').insert({ text });\n"
    )
    _edit(
        service / "src/learning/multiDimensionalLearning.ts",
        "import { COMPREHENSIVE_TABLE as FULL_METADATA } from '../config/tables';\n",
        "const FULL_METADATA = 'posts';\n",
    )
    for rel in ("src/db/db.ts", "src/jobs/planJobUnified.ts", "src/utils/cleanup.ts"):
        _edit(service / rel, "insertRow", "insertOne")
    found, work = _warm(service, cache)
    assert found == _cold(service)
    assert any(f.file == "src/jobs/newPoster.ts" and f.rule == "DS001" for f in found)
    assert work.analyzed == 5

    # A caller of the renamed helper is deleted: the helper's tables shrink in its own, unchanged file.
    (service / "src/utils/cleanup.ts").unlink()
    found, work = _warm(service, cache)
    assert found == _cold(service) and work.analyzed == 0

    # A checkout rewrites every file with the same bytes and new times: nothing is analyzed again.
    for directory, _, names in os.walk(service):
        for name in names:
            path = Path(directory, name)
            path.write_bytes(path.read_bytes())
            os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    found, work = _warm(service, cache)
    assert found == _cold(service) and work.analyzed == 0


def test_another_stage_or_plan_recomputes_every_finding(service: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "scan"
    _warm(service, cache)
    cleaned, work = _warm(service, cache, stage="cleaned")
    assert cleaned == _cold(service, stage="cleaned") and work.resolved > 20
    plan = service / "dualshift.toml"
    plan.write_text(plan.read_text() + "\n# reviewed\n")
    again, work = _warm(service, cache)
    assert again == _cold(service) and work.analyzed == 0 and work.resolved > 20


def test_an_unreadable_cache_is_rebuilt(service: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "scan"
    _warm(service, cache)
    (database,) = (cache.parent / "check").glob("*.sqlite")
    database.write_bytes(b"not a database" * 100)
    found, _ = _warm(service, cache)
    assert found == _cold(service)
    assert database.read_bytes().startswith(b"SQLite format 3")  # rebuilt in place
    found, work = _warm(service, cache)
    assert found == _cold(service) and work.analyzed == 0


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _fresh_checkout(root: Path) -> None:
    """What CI does: every tracked file written again by git, with new times; the index knows their ids."""
    for rel in subprocess.run(["git", "ls-files"], cwd=root, check=True, capture_output=True, text=True).stdout.split():
        (root / rel).unlink()
    time.sleep(0.01)
    _git(root, "checkout", "--", ".")


def test_after_a_fresh_git_checkout_the_index_vouches_for_unchanged_files(service: Path, tmp_path: Path) -> None:
    (service / "src" / "more").mkdir()
    for n in range(80):
        (service / "src" / "more" / f"job{n:02d}.ts").write_text(
            f"export const n{n} = (db: any) => db.from('tweets').select('id');\n"
        )
    _git(service, "init", "-q")
    _git(service, "add", "-A")
    _git(service, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    cache = tmp_path / "cache" / "scan"
    _warm(service, cache)
    _fresh_checkout(service)
    (service / "src" / "more" / "job07.ts").write_text("export const w = (db: any) => db.from('tweets').delete();\n")
    found, work = _warm(service, cache)
    assert found == _cold(service)
    assert (work.hashed, work.analyzed) == (1, 1)  # only the edited file is read, and analyzed

    (service / ".gitattributes").write_text("*.ts text eol=crlf\n")  # bytes on disk may now differ from blobs
    _git(service, "add", ".gitattributes")
    _git(service, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "eol")
    _fresh_checkout(service)
    found, work = _warm(service, cache)
    assert found == _cold(service) and work.hashed > 80


def test_a_file_that_can_no_longer_be_analyzed_keeps_no_stale_findings(service: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "scan"
    first, _ = _warm(service, cache)
    rel = first[0].file
    path = service / rel
    path.write_text(path.read_text() + "\n//" + "x" * (3 * 1024 * 1024) + "\n")  # past the size limit: no facts
    found, work = _warm(service, cache)
    assert work.analyzed == 1
    assert not [f for f in found if f.file == rel]
    assert found == _cold(service)
