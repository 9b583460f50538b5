"""unwrap on a supabase-py helper whose table is a parameter: the same decisions as for TypeScript
(`test_helper_callers.py`), the callers' string literals retargeted in every calling module, or nothing
written and the site listed with the reason."""

from __future__ import annotations

import ast
import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualshift.cli import app

REPO = Path(__file__).resolve().parents[2]
PLAN = str(REPO / "fixtures" / "xbot" / "dualshift.toml")
PY_WRAPPER = "app/db/dual_write.py"
OPTIONS = ("--plan", PLAN, "--python-wrapper", PY_WRAPPER)

CLIENT = """\
from supabase import create_client

sb = create_client("http://localhost:54321", "service-key")
"""
HELPER = """\
def save_likes(client, table, row):
    return client.table(table).insert(row).execute()
"""
COLLECT = """\
from app.db.client import sb
from app.db.likes import save_likes


def collect(tweet_id: str, likes: int) -> None:
    save_likes(sb, "outcomes", {"tweet_id": tweet_id, "likes": likes})
"""
REPLAY = """\
import app.db.likes
from app.db.client import sb


def replay(tweet_id: str):
    return app.db.likes.save_likes(sb, 'outcomes', {"tweet_id": tweet_id, "likes": 0})
"""
SOURCES = {
    "app/__init__.py": "",
    "app/db/__init__.py": "",
    "app/jobs/__init__.py": "",
    "app/db/client.py": CLIENT,
    "app/db/likes.py": HELPER,
    "app/jobs/collect.py": COLLECT,
    "app/jobs/replay.py": REPLAY,
}


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _service(root: Path, extra: dict[str, str] | None = None) -> Path:
    """A small supabase-py service whose helper takes the table from callers in two modules, wrapped and
    committed."""
    for rel, text in {**SOURCES, **(extra or {})}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    (root / ".gitignore").write_text(".dualshift/\n__pycache__/\n")
    generated = _cli("generate", "wrapper", "--plan", PLAN, "--lang", "py", "--out", str(root / PY_WRAPPER))
    assert generated.exit_code == 0, generated.output
    wrapped = _cli("codemod", "wrap", str(root), *OPTIONS, "--apply", "--force")
    assert wrapped.exit_code == 0, wrapped.output
    assert "dual_write(client).table(table).insert(row).execute()" in (root / "app/db/likes.py").read_text()
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "w"]):
        _git(root, *command)
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "app").rglob("*.py"))}


def _unwrap(root: Path, *options: str) -> tuple[int, dict]:
    result = _cli("codemod", "unwrap", str(root), *OPTIONS, "--json", *options)
    return result.exit_code, json.loads(result.stdout)


def _skipped(report: dict) -> list[str]:
    return [s["reason"] for f in report["files"] for s in f["skipped_sites"]]


def test_callers_in_two_modules_move_to_the_new_table_and_the_helper_is_unwrapped(tmp_path: Path) -> None:
    root = _service(tmp_path / "svc")
    code, dry = _unwrap(root, "--patch-dir", str(tmp_path / "patches"))
    assert code == 0 and dry["counts"] == {"changed": 3}, dry
    assert sorted(p.name for p in (tmp_path / "patches").iterdir()) == [
        "app__db__likes.py.patch",
        "app__jobs__collect.py.patch",
        "app__jobs__replay.py.patch",
    ]
    code, applied = _unwrap(root, "--apply")
    assert code == 0 and applied["counts"] == {"changed": 3}, applied
    assert (root / "app/db/likes.py").read_text() == HELPER  # the wrapper and its import gone
    assert (root / "app/jobs/collect.py").read_text() == COLLECT.replace('"outcomes"', '"engagement_metrics"')
    assert (root / "app/jobs/replay.py").read_text() == REPLAY.replace("'outcomes'", "'engagement_metrics'")
    for path in (root / "app").rglob("*.py"):
        ast.parse(path.read_bytes(), str(path))  # every rewritten module still parses
    _, again = _unwrap(root)
    assert again["counts"].get("changed", 0) == 0 and _skipped(again) == []


@pytest.mark.parametrize(
    ("caller", "reason"),
    [
        (
            'save_likes(sb, "reply_likes", {"tweet_id": "x", "likes": 1})',
            "not in the plan: reply_likes (app/jobs/more.py)",
        ),
        (
            'save_likes(sb, "tweets", {"tweet_id": "x", "likes": 1})',
            "more than one new table (engagement_metrics, posted",
        ),
        ('save_likes(sb, OUTCOMES, {"tweet_id": "x", "likes": 1})', "app/jobs/more.py pass the table as a constant"),
        (
            'save_likes(sb, "out" "comes", {"tweet_id": "x", "likes": 1})',
            "app/jobs/more.py pass the table as a constant",
        ),
    ],
    ids=["an unplanned table", "two new tables", "a constant", "a concatenation"],
)
def test_a_helper_is_left_whole_when_one_caller_cannot_be_retargeted(tmp_path: Path, caller: str, reason: str) -> None:
    more = f'from app.db.client import sb\nfrom app.db.likes import save_likes\n\nOUTCOMES = "outcomes"\n{caller}\n'
    root = _service(tmp_path, {"app/jobs/more.py": more})
    before = _snapshot(root)
    code, report = _unwrap(root, "--apply")
    assert code == 0 and report["counts"].get("changed", 0) == 0, report
    assert any(reason in r for r in _skipped(report)), _skipped(report)
    assert _snapshot(root) == before


def test_the_helper_alone_is_not_unwrapped_without_its_callers(tmp_path: Path) -> None:
    root = _service(tmp_path)
    before = _snapshot(root)
    code, report = _unwrap(root, "--apply", "--file", "app/db/likes.py")
    assert code == 0 and report["counts"] == {"skipped": 1}
    (reason,) = _skipped(report)
    assert "its callers in app/jobs/collect.py, app/jobs/replay.py are not among the files to rewrite" in reason
    assert _snapshot(root) == before


def test_a_git_dirty_caller_keeps_the_whole_group_untouched(tmp_path: Path) -> None:
    root = _service(tmp_path)
    (root / "app/jobs/replay.py").write_text(REPLAY.replace('"likes": 0', '"likes": 1'))  # uncommitted
    before = _snapshot(root)
    code, report = _unwrap(root, "--apply")
    assert code == 1
    statuses = {f["path"]: (f["status"], f["reason"]) for f in report["files"]}
    assert statuses["app/jobs/replay.py"][0] == "failed" and "uncommitted" in statuses["app/jobs/replay.py"][1]
    assert statuses["app/db/likes.py"] == ("failed", "rewritten together with app/jobs/replay.py, which cannot be")
    assert statuses["app/jobs/collect.py"][0] == "failed"
    assert _snapshot(root) == before


@pytest.mark.parametrize(
    "replay_import",
    ["import app.db.likes", "import app.db.likes as likes_module", "from app.db import likes"],
)
def test_same_named_helpers_get_the_callers_that_import_their_module(tmp_path: Path, replay_import: str) -> None:
    """A second `save_likes` in another module, called only with an unplanned table, must not take the
    callers of the first; a caller through `import x` / `from pkg import x` is the first one's."""
    spelled = {
        "import app.db.likes": "app.db.likes.save_likes",
        "import app.db.likes as likes_module": "likes_module.save_likes",
        "from app.db import likes": "likes.save_likes",
    }[replay_import]
    replay = REPLAY.replace("import app.db.likes", replay_import).replace("app.db.likes.save_likes", spelled)
    archive = (
        "from app.db.client import sb\nfrom app.db.archive import save_likes\n\nsave_likes(sb, 'reply_likes', {})\n"
    )
    root = _service(
        tmp_path,
        {"app/db/archive.py": HELPER, "app/jobs/replay.py": replay, "app/jobs/archive_likes.py": archive},
    )
    assert "dual_write" not in (root / "app/db/archive.py").read_text()  # only unplanned tables reach it
    code, applied = _unwrap(root, "--apply")
    assert code == 0 and applied["counts"].get("changed") == 3, applied
    assert (root / "app/jobs/replay.py").read_text() == replay.replace("'outcomes'", "'engagement_metrics'")
    assert (root / "app/jobs/collect.py").read_text() == COLLECT.replace('"outcomes"', '"engagement_metrics"')
    assert (root / "app/db/likes.py").read_text() == HELPER


def test_modules_that_start_with_a_byte_order_mark_are_rewritten_at_the_right_bytes(tmp_path: Path) -> None:
    """The analyzer counts offsets from after the mark: wrap and unwrap edit there and keep the mark."""
    bom = "\ufeff"
    root = _service(tmp_path, {"app/db/likes.py": bom + HELPER, "app/jobs/collect.py": bom + COLLECT})
    assert (root / "app/db/likes.py").read_text().startswith(bom + "from app.db.dual_write import dual_write")
    code, applied = _unwrap(root, "--apply")
    assert code == 0 and applied["counts"] == {"changed": 3}, applied
    assert (root / "app/db/likes.py").read_text() == bom + HELPER
    assert (root / "app/jobs/collect.py").read_text() == bom + COLLECT.replace('"outcomes"', '"engagement_metrics"')


def test_a_caller_through_an_alias_is_one_of_the_helpers_callers(tmp_path: Path) -> None:
    """`from m import save_likes as keep`: its argument moves with the others, or the helper would be
    unwrapped under a caller still passing the old table."""
    aliased = "from app.db.client import sb\nfrom app.db.likes import save_likes as keep\n\nkeep(sb, 'outcomes', {})\n"
    root = _service(tmp_path, {"app/jobs/aliased.py": aliased})
    code, applied = _unwrap(root, "--apply")
    assert code == 0 and applied["counts"] == {"changed": 4}, applied
    assert (root / "app/jobs/aliased.py").read_text() == aliased.replace("'outcomes'", "'engagement_metrics'")
