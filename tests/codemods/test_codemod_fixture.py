"""The codemods on the whole fixture service: apply, type-check, revert, unwrap, and every refusal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.codemods.result import Rewrite
from dualshift.codemods.runner import RunOptions, run_codemod

from .helpers import REPO

XBOT = REPO / "fixtures" / "xbot"
PLAN = str(XBOT / "dualshift.toml")
TSC = REPO / "node_modules" / ".bin" / "tsc"
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@x",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@x",
}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env=GIT_ENV, capture_output=True, text=True, check=True).stdout


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "src").rglob("*")) if p.is_file()}


@pytest.fixture
def service(tmp_path: Path) -> Path:
    """A copy of the fixture in its own git repository, with what tsc needs to check it."""
    root = tmp_path / "xbot"
    shutil.copytree(XBOT, root, symlinks=True, ignore=shutil.ignore_patterns("expected"))
    shutil.copy(REPO / "tests" / "codemods" / "stubs" / "fixture-stubs.d.ts", root / "src" / "types" / "stubs.d.ts")
    for package in ("@supabase", "@types"):
        (root / "node_modules" / package).symlink_to(REPO / "node_modules" / package)
    (root / ".gitignore").write_text("node_modules/\n.dualshift/\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "base")
    return root


def _cli(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def _tsc_errors(root: Path) -> list[str]:
    result = subprocess.run(
        [str(TSC), "--noEmit", "-p", "tsconfig.json", "--types", "node"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return sorted(line for line in result.stdout.splitlines() if "error TS" in line)


@pytest.mark.skipif(not TSC.exists(), reason="npm packages not installed (bash .ci/setup)")
def test_wrap_the_whole_fixture_type_check_then_revert_to_identical_bytes(service: Path) -> None:
    before = _snapshot(service)
    baseline = _tsc_errors(service)  # the fixture's own v1-style `from<Row>()` call is its only error
    assert len(baseline) == 1 and "planJob.ts" in baseline[0]
    wrapped = _cli("codemod", "wrap", str(service), "--plan", PLAN, "--apply")
    assert wrapped.exit_code == 0, wrapped.output
    assert "14 changed" in wrapped.output
    assert _cli("generate", "wrapper", "--plan", PLAN, "--out", str(service / "src/db/dualWrite.ts")).exit_code == 0
    assert "dualWrite(supabase)" in (service / "src/jobs/postingQueue.ts").read_text()
    # The same error, one line lower: planJob.ts got its import line.
    shifted = [re.sub(r"\((\d+),", lambda m: f"({int(m.group(1)) + 1},", line) for line in baseline]
    assert _tsc_errors(service) == shifted
    (service / "src/db/dualWrite.ts").unlink()
    reverted = _cli("codemod", "revert", str(service))
    assert reverted.exit_code == 0, reverted.output
    assert _snapshot(service) == before


def test_wrap_is_idempotent_and_status_follows(service: Path) -> None:
    assert (
        _cli("codemod", "wrap", str(service), "--plan", PLAN, "--apply", "--file", "src/jobs/planJob.ts").exit_code == 0
    )
    status = _cli("codemod", "status", str(service), "--plan", PLAN)
    line = next(row for row in status.output.splitlines() if "content_generation_metadata_compre" in row)
    assert " 1 " in line and " 0 " in line  # planJob.ts done, nothing pending for the comprehensive twin
    # …but not ready: a delete through a run-time table name could reach it, and is listed with its reason.
    assert "no: 1 run-time write(s)" in line
    assert "src/db/db.ts:29: delete on a run-time table name (tableFromRequest)" in status.output
    _git(service, "commit", "-qam", "wrapped planJob")
    again = _cli("codemod", "wrap", str(service), "--plan", PLAN, "--apply", "--file", "src/jobs/planJob.ts")
    assert again.exit_code == 0 and "0 changed, 1 unchanged" in again.output


def test_wrap_then_unwrap_moves_the_code_to_the_new_tables(service: Path) -> None:
    assert _cli("codemod", "wrap", str(service), "--plan", PLAN, "--apply").exit_code == 0
    _git(service, "commit", "-qam", "wrapped")
    result = _cli("codemod", "unwrap", str(service), "--plan", PLAN, "--apply")
    assert result.exit_code == 0, result.output
    queue = (service / "src/jobs/postingQueue.ts").read_text()
    assert (
        "supabase.from('posted_content').insert({ tweet_id: tweetId, decision_id: post.decision_id, content: post.content, source_table: 'tweets', decision_type: 'single' })"
        in queue
    )
    assert "dualWrite" not in queue
    # A site whose columns the plan drops stays wrapped, listed with its reason.
    assert (
        "features" in result.output
        and "dualWrite(supabase).from(COMPREHENSIVE_TABLE)" in (service / "src/jobs/planJob.ts").read_text()
    )


def test_patches_apply_with_git(service: Path, tmp_path: Path) -> None:
    patches = tmp_path / "patches"
    result = _cli("codemod", "wrap", str(service), "--plan", PLAN, "--patch-dir", str(patches))
    assert result.exit_code == 0
    files = sorted(patches.glob("*.patch"))
    assert len(files) == 14
    assert _git(service, "status", "--porcelain") == ""  # a dry run writes no source file
    for patch in files:
        subprocess.run(["git", "apply", "--check", str(patch)], cwd=service, check=True)
    subprocess.run(["git", "apply", *map(str, files)], cwd=service, check=True)
    assert "dualWrite(this.supabase)" in (service / "src/scrapers/realMetricsScraper.ts").read_text()


def test_interactive_yes_no_quit(service: Path) -> None:
    result = _cli("codemod", "wrap", str(service), "--plan", PLAN, "--apply", "--interactive", input="y\nn\nq\n")
    assert result.exit_code == 0, result.output
    changed = _git(service, "status", "--porcelain").splitlines()
    assert changed == [" M scripts/backfillLegacy.mjs"]  # yes to the first file, no to the second, then quit
    assert "1 declined" in result.output and "quit before this file" in result.output


def test_a_file_with_uncommitted_changes_is_refused_unless_forced(service: Path) -> None:
    target = service / "src/jobs/replyJob.ts"
    target.write_text(target.read_text() + "\n// local edit\n")
    refused = _cli("codemod", "wrap", str(service), "--plan", PLAN, "--apply", "--file", "src/jobs/replyJob.ts")
    assert refused.exit_code == 1
    assert "src/jobs/replyJob.ts: has uncommitted changes in git" in refused.stderr
    assert "dualWrite" not in target.read_text()
    forced = _cli(
        "codemod", "wrap", str(service), "--plan", PLAN, "--apply", "--file", "src/jobs/replyJob.ts", "--force"
    )
    assert forced.exit_code == 0 and "dualWrite(supabase)" in target.read_text()


def test_a_file_changed_between_dry_run_and_apply_is_refused(service: Path) -> None:
    assert _cli("codemod", "wrap", str(service), "--plan", PLAN, "--file", "src/jobs/replyJob.ts").exit_code == 0
    target = service / "src/jobs/replyJob.ts"
    target.write_text(target.read_text().replace("limit = 5", "limit = 6"))
    _git(service, "commit", "-qam", "someone else's change")
    result = _cli("codemod", "wrap", str(service), "--plan", PLAN, "--apply", "--file", "src/jobs/replyJob.ts")
    assert result.exit_code == 1
    assert "changed on disk since the dry run" in result.stderr
    assert "dualWrite" not in target.read_text()


def test_a_rewrite_that_would_not_parse_leaves_the_file_untouched(service: Path) -> None:
    target = service / "src/jobs/replyJob.ts"
    original = target.read_bytes()

    def breaks_the_file(source: str, rel: str, calls) -> Rewrite:
        return Rewrite(source.replace("export async function", "export async function (", 1), 1)

    outcomes = run_codemod("wrap", service, breaks_the_file, RunOptions(apply=True, files=("src/jobs/replyJob.ts",)))
    assert [(o.status, o.reason) for o in outcomes] == [("failed", "the rewritten file does not parse; left untouched")]
    assert target.read_bytes() == original


def test_revert_refuses_a_file_edited_after_the_codemod(service: Path) -> None:
    assert (
        _cli("codemod", "wrap", str(service), "--plan", PLAN, "--apply", "--file", "src/jobs/replyJob.ts").exit_code
        == 0
    )
    target = service / "src/jobs/replyJob.ts"
    target.write_text(target.read_text() + "// edited\n")
    refused = _cli("codemod", "revert", str(service), "--file", "src/jobs/replyJob.ts")
    assert refused.exit_code == 1 and "edited since the codemod" in refused.stderr
