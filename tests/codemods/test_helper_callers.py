"""unwrap on a helper whose table is a parameter: the callers' arguments move to the new table, in every
caller's file, or nothing moves and the site is listed with the reason."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.codemods import runner

REPO = Path(__file__).resolve().parents[2]
PLAN = str(REPO / "fixtures" / "xbot" / "dualshift.toml")
TSC = REPO / "node_modules" / ".bin" / "tsc"
WRAPPER = "src/db/dualWrite.ts"

TSCONFIG = """{
  "compilerOptions": {
    "target": "ES2022", "module": "ESNext", "moduleResolution": "Bundler",
    "strict": true, "noEmit": true, "skipLibCheck": true, "types": []
  },
  "include": ["src/**/*"]
}
"""
CLIENT = """\
import { createClient } from '@supabase/supabase-js';

export const supabase = createClient('http://localhost:54321', 'service-key');
"""
HELPER = """\
import { supabase } from './client';

export interface LikeRow {
  tweet_id: string;
  likes: number;
}

export function saveLikes(table: string, row: LikeRow) {
  return supabase.from(table).insert(row);
}
"""
COLLECT = """\
import { saveLikes } from '../db/likes';

export async function collect(tweetId: string, likes: number) {
  const { error } = await saveLikes('outcomes', { tweet_id: tweetId, likes });
  if (error) throw error;
}
"""
REPLAY = """\
import { saveLikes } from "../db/likes";

export const replay = (tweetId: string) => saveLikes("outcomes", { tweet_id: tweetId, likes: 0 });
"""


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _service(root: Path, extra: dict[str, str] | None = None) -> Path:
    """A small service whose helper takes the table from its callers in two files, committed and wrapped."""
    files = {
        "tsconfig.json": TSCONFIG,
        "src/db/client.ts": CLIENT,
        "src/db/likes.ts": HELPER,
        "src/jobs/collect.ts": COLLECT,
        "src/jobs/replay.ts": REPLAY,
        **(extra or {}),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    (root / "node_modules").mkdir()
    (root / "node_modules" / "@supabase").symlink_to(REPO / "node_modules" / "@supabase")
    (root / ".gitignore").write_text("node_modules/\n.dualshift/\n")
    runner = CliRunner()
    generated = runner.invoke(app, ["generate", "wrapper", "--plan", PLAN, "--out", str(root / WRAPPER)])
    assert generated.exit_code == 0, generated.output
    wrapped = runner.invoke(app, ["codemod", "wrap", str(root), "--plan", PLAN, "--apply", "--force"])
    assert wrapped.exit_code == 0, wrapped.output
    assert "dualWrite(supabase).from(table).insert(row)" in (root / "src/db/likes.ts").read_text()
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "w"]):
        _git(root, *command)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "src").rglob("*.ts"))}


def _unwrap(root: Path, *options: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["codemod", "unwrap", str(root), "--plan", PLAN, "--json", *options])
    return result.exit_code, json.loads(result.stdout)


def _skipped(report: dict) -> list[str]:
    return [s["reason"] for f in report["files"] for s in f["skipped_sites"]]


def _tsc_errors(root: Path) -> list[str]:
    result = subprocess.run([str(TSC), "--noEmit", "-p", "tsconfig.json"], cwd=root, capture_output=True, text=True)
    return [line for line in result.stdout.splitlines() if "error TS" in line]


@pytest.mark.skipif(not TSC.exists(), reason="npm packages not installed (bash .ci/setup)")
def test_callers_in_two_files_move_to_the_new_table_and_the_helper_is_unwrapped(tmp_path: Path) -> None:
    root = _service(tmp_path)
    assert _tsc_errors(root) == []
    code, dry = _unwrap(root, "--patch-dir", str(tmp_path / "patches"))
    assert code == 0 and dry["counts"] == {"changed": 3}
    assert sorted(p.name for p in (tmp_path / "patches").iterdir()) == [
        "src__db__likes.ts.patch",
        "src__jobs__collect.ts.patch",
        "src__jobs__replay.ts.patch",
    ]
    code, applied = _unwrap(root, "--apply")
    assert code == 0 and applied["counts"] == {"changed": 3}, applied
    assert (root / "src/db/likes.ts").read_text() == HELPER  # the wrapper and its import gone
    assert (root / "src/jobs/collect.ts").read_text() == COLLECT.replace("'outcomes'", "'engagement_metrics'")
    assert (root / "src/jobs/replay.ts").read_text() == REPLAY.replace('"outcomes"', '"engagement_metrics"')
    assert _tsc_errors(root) == []


@pytest.mark.parametrize(
    ("caller", "reason"),
    [
        ("saveLikes('reply_likes', { tweet_id: 'x', likes: 1 })", "not in the plan: reply_likes (src/jobs/more.ts)"),
        ("saveLikes('tweets', { tweet_id: 'x', likes: 1 })", "more than one new table (engagement_metrics, posted"),
        ("saveLikes(OUTCOMES, { tweet_id: 'x', likes: 1 })", "src/jobs/more.ts pass the table as a constant"),
    ],
    ids=["an unplanned table", "two new tables", "a constant"],
)
def test_a_helper_is_left_whole_when_one_caller_cannot_be_retargeted(tmp_path: Path, caller: str, reason: str) -> None:
    more = f"import {{ saveLikes }} from '../db/likes';\nconst OUTCOMES = 'outcomes';\nexport const more = () => {caller};\n"
    root = _service(tmp_path, {"src/jobs/more.ts": more})
    before = _snapshot(root)
    code, report = _unwrap(root, "--apply")
    assert code == 0 and report["counts"].get("changed", 0) == 0
    assert any(reason in r for r in _skipped(report)), _skipped(report)
    assert _snapshot(root) == before


def test_the_helper_alone_is_not_unwrapped_without_its_callers(tmp_path: Path) -> None:
    root = _service(tmp_path)
    before = _snapshot(root)
    code, report = _unwrap(root, "--apply", "--file", "src/db/likes.ts")
    assert code == 0 and report["counts"] == {"skipped": 1}
    (reason,) = _skipped(report)
    assert "its callers in src/jobs/collect.ts, src/jobs/replay.ts are not among the files to rewrite" in reason
    assert _snapshot(root) == before


def test_one_caller_that_cannot_be_written_keeps_the_whole_group_untouched(tmp_path: Path) -> None:
    root = _service(tmp_path)
    (root / "src/jobs/replay.ts").write_text(REPLAY.replace("likes: 0", "likes: 1"))  # uncommitted
    before = _snapshot(root)
    code, report = _unwrap(root, "--apply")
    assert code == 1
    statuses = {f["path"]: (f["status"], f["reason"]) for f in report["files"]}
    assert statuses["src/jobs/replay.ts"][0] == "failed" and "uncommitted" in statuses["src/jobs/replay.ts"][1]
    assert statuses["src/db/likes.ts"] == ("failed", "rewritten together with src/jobs/replay.ts, which cannot be")
    assert _snapshot(root) == before


def test_wrap_and_unwrap_decide_from_every_table_the_callers_pass(tmp_path: Path) -> None:
    """Wrap wraps because one caller passes a planned table; unwrap names every table, not the first."""
    more = "import { saveLikes } from '../db/likes';\nexport const more = () => saveLikes('a_log', { tweet_id: 'x', likes: 1 });\n"
    root = _service(tmp_path, {"src/jobs/more.ts": more})
    _, report = _unwrap(root)
    (site,) = [s for f in report["files"] for s in f["skipped_sites"]]
    assert site["table"] == "a_log, outcomes"
    assert "a_log → not in the plan, outcomes → engagement_metrics" in site["reason"]


def test_an_argument_that_may_reach_two_helpers_of_one_name_moves_neither(tmp_path: Path) -> None:
    """The caller imports from both files that define `saveLikes`: which one it calls is not certain."""
    other = HELPER.replace("export interface LikeRow", "export const OTHER = 1;\nexport interface LikeRow")
    both = COLLECT.replace("import { saveLikes }", "import { OTHER } from '../db/other';\nimport { saveLikes }")
    root = _service(tmp_path, {"src/db/other.ts": other, "src/jobs/collect.ts": both})
    before = _snapshot(root)
    code, report = _unwrap(root, "--apply")
    assert code == 0 and report["counts"].get("changed", 0) == 0
    assert "a caller's argument also reaches another helper" in " ".join(_skipped(report))
    assert _snapshot(root) == before


@pytest.mark.skipif(not TSC.exists(), reason="npm packages not installed (bash .ci/setup)")
def test_a_caller_through_an_alias_is_one_of_the_helpers_callers(tmp_path: Path) -> None:
    """`import { saveLikes as keep }`: its argument moves with the others, or the helper would be unwrapped
    under a caller still passing the old table."""
    aliased = (
        "import { saveLikes as keep } from '../db/likes';\n\n"
        "export const again = (tweetId: string) => keep('outcomes', { tweet_id: tweetId, likes: 2 });\n"
    )
    root = _service(tmp_path, {"src/jobs/again.ts": aliased})
    code, applied = _unwrap(root, "--apply")
    assert code == 0 and applied["counts"] == {"changed": 4}, applied
    assert (root / "src/jobs/again.ts").read_text() == aliased.replace("'outcomes'", "'engagement_metrics'")
    assert (root / "src/db/likes.ts").read_text() == HELPER
    assert _tsc_errors(root) == []


def test_a_write_that_fails_mid_group_puts_back_the_files_already_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _service(tmp_path)
    before = _snapshot(root)
    real_write = runner.write_atomically

    def full_disk_on_replay(path: Path, text: str) -> None:
        if path.name == "replay.ts" and text != before["src/jobs/replay.ts"].decode():
            raise OSError(28, "No space left on device")
        real_write(path, text)

    monkeypatch.setattr(runner, "write_atomically", full_disk_on_replay)
    code, report = _unwrap(root, "--apply")
    assert code == 1
    statuses = {f["path"]: (f["status"], f["reason"]) for f in report["files"]}
    assert statuses["src/jobs/replay.ts"] == ("failed", "cannot write: No space left on device")
    assert statuses["src/db/likes.ts"] == ("failed", "not written: src/jobs/replay.ts could not be")
    assert _snapshot(root) == before


VIEWS = HELPER.replace("saveLikes", "saveViews").replace("LikeRow", "ViewRow")
COLLECT_BOTH = """\
import { saveLikes } from '../db/likes';
import { saveViews } from '../db/views';

export async function collect(tweetId: string, likes: number) {
  await saveViews('outcomes', { tweet_id: tweetId, likes });
  const { error } = await saveLikes('outcomes', { tweet_id: tweetId, likes });
  if (error) throw error;
}
"""


def test_groups_that_share_a_caller_file_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    """collect.ts passes the table to two helpers: its rewrite carries both arguments, so neither helper's
    group may be written without the other."""
    root = _service(tmp_path, {"src/db/views.ts": VIEWS, "src/jobs/collect.ts": COLLECT_BOTH})
    views = root / "src/db/views.ts"
    views.write_text(views.read_text() + "// uncommitted\n")
    before = _snapshot(root)
    code, report = _unwrap(root, "--apply")
    assert code == 1
    statuses = {f["path"]: f["status"] for f in report["files"]}
    assert statuses["src/db/views.ts"] == "failed" and statuses["src/jobs/collect.ts"] == "failed", statuses
    assert _snapshot(root) == before

    _git(root, "checkout", "--", "src/db/views.ts")
    code, applied = _unwrap(root, "--apply")
    assert code == 0 and applied["counts"] == {"changed": 4}, applied
    assert (root / "src/jobs/collect.ts").read_text() == COLLECT_BOTH.replace("'outcomes'", "'engagement_metrics'")
