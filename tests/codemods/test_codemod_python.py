"""The codemods on supabase-py files: wrap, idempotency, unwrap, revert."""

from __future__ import annotations

import shutil
from pathlib import Path

from typer.testing import CliRunner

from dualshift.cli import app

from .helpers import REPO

PLAN = str(REPO / "fixtures" / "xbot" / "dualshift.toml")
OPTIONS = ["--plan", PLAN, "--python-wrapper", "worker/db/dual_write.py"]


def _cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "pyworker"
    shutil.copytree(REPO / "fixtures" / "pyworker", root, ignore=shutil.ignore_patterns("expected"))
    return root


def test_wrap_unwrap_and_revert_python_files(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    audit = root / "worker/jobs/posting_audit.py"
    original = audit.read_bytes()
    result = _cli("codemod", "wrap", str(root), *OPTIONS, "--apply")
    assert result.exit_code == 0, result.output
    assert "3 changed" in result.output
    text = audit.read_text()
    assert 'dual_write(client).table("tweets").delete().or_("text.is.null,url.is.null")' in text
    assert text.count("from worker.db.dual_write import dual_write") == 1
    assert 'client.table("posted_decisions").select' in text  # reads stay as they are
    again = _cli("codemod", "wrap", str(root), *OPTIONS, "--apply")
    assert again.exit_code == 0 and "0 changed" in again.output
    unwrapped = _cli("codemod", "unwrap", str(root), *OPTIONS, "--apply")
    assert unwrapped.exit_code == 0, unwrapped.output
    text = audit.read_text()
    assert 'client.table("posted_content").update({"raw_topic": "needs-review"}).eq("decision_id", decision_id)' in text
    assert 'client.table("posted_content").delete().or_("content.is.null,tweet_url.is.null")' in text
    assert "dual_write" not in text
    backfill = (root / "worker/jobs/metrics_backfill.py").read_text()
    assert 'client.from_("engagement_metrics").insert(' in backfill and '"data_source": "legacy_backfill"' in backfill
    enrich = (root / "worker/jobs/enrich_content.py").read_text()
    assert "dual_write(client).table(COMPREHENSIVE)" in enrich  # `features` maps nowhere: left whole, listed
    assert "features" in unwrapped.output
    assert _cli("codemod", "revert", str(root)).exit_code == 0  # unwrap undone
    assert _cli("codemod", "revert", str(root)).exit_code == 0  # wrap undone
    assert audit.read_bytes() == original


def test_python_before_after(tmp_path: Path) -> None:
    from dualshift.analyzer.scan import scan_tree
    from dualshift.codemods.python_rewrite import unwrap_python_source, wrap_python_source
    from dualshift.plan import load_plan

    plan = load_plan(PLAN)
    before = (
        "import os\n\n"
        "def save(client, text):\n"
        "    # keep this comment\n"
        "    return (\n"
        '        client.table("tweets")\n'
        '        .insert({"tweet_id": "t", "decision_id": "d", "text": text})\n'
        "        .execute()\n"
        "    )\n"
    )
    wrapped = (
        "import os\n"
        "from app.dual_write import dual_write\n\n"
        "def save(client, text):\n"
        "    # keep this comment\n"
        "    return (\n"
        '        dual_write(client).table("tweets")\n'
        '        .insert({"tweet_id": "t", "decision_id": "d", "text": text})\n'
        "        .execute()\n"
        "    )\n"
    )
    unwrapped = before.replace('"tweets"', '"posted_content"').replace(
        '"text": text}', '"content": text, "source_table": "tweets", "decision_type": "single"}'
    )

    def calls_of(source: str):
        (tmp_path / "svc.py").write_text(source)
        return scan_tree(tmp_path, use_cache=False, jobs=1).calls

    first = wrap_python_source(before, "svc.py", plan, wrapper_module="app/dual_write.py", calls=calls_of(before))
    assert first.new_source == wrapped
    back = unwrap_python_source(wrapped, "svc.py", plan, wrapper_module="app/dual_write.py", calls=calls_of(wrapped))
    assert back.new_source == unwrapped
