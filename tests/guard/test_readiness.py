"""The readiness gate's code side: which old tables have writes around the wrapper, and which are covered."""

from __future__ import annotations

import shutil
from pathlib import Path

from dualshift.analyzer.scan import scan_tree
from dualshift.guard.readiness import assess
from dualshift.plan import load_plan, parse_plan

REPO = Path(__file__).resolve().parents[2]
PLAN = load_plan(REPO / "fixtures" / "xbot" / "dualshift.toml")


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_one_unwrapped_write_blocks_its_table_with_the_exact_site(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "src/a.ts": "import { dualWrite } from './db/dualWrite';\n"
            "export const a = (db: any) => dualWrite(db).from('tweets').insert({ text: 'x' });\n",
            "src/b.ts": "export const b = (db: any) => db.from('outcomes').update({ likes: 1 }).eq('id', 1);\n",
        },
    )
    gate = assess(scan_tree(root, use_cache=False).calls, root, PLAN)
    assert not gate.ready
    assert gate.blockers["tweets"] == [] and [f.file for f in gate.blockers["outcomes"]] == ["src/b.ts"]
    (line,) = gate.lines()
    assert line.startswith("src/b.ts:1: outcomes: update on outcomes bypasses the dual-write wrapper")
    covered = assess(scan_tree(root, use_cache=False).calls, root, PLAN, covered_by_triggers={"outcomes"})
    assert covered.ready


def test_a_run_time_table_name_blocks_every_table_the_triggers_do_not_cover(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"src/purge.ts": "export const p = (db: any, t: string) => db.from(t).delete();\n"})
    calls = scan_tree(root, use_cache=False).calls
    gate = assess(calls, root, PLAN)
    assert all(len(found) == 1 for found in gate.blockers.values()) and len(gate.lines()) == 1
    assert assess(calls, root, PLAN, covered_by_triggers=PLAN.old_tables).ready


def test_the_fixture_service_is_ready_once_wrapped(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dualshift.cli import app

    root = tmp_path / "xbot"
    shutil.copytree(REPO / "fixtures" / "xbot", root, symlinks=True, ignore=shutil.ignore_patterns("expected"))
    plan = str(root / "dualshift.toml")
    assert not assess(scan_tree(root, use_cache=False).calls, root, PLAN).ready
    assert CliRunner().invoke(app, ["codemod", "wrap", str(root), "--plan", plan, "--apply", "--force"]).exit_code == 0
    gate = assess(scan_tree(root, use_cache=False).calls, root, PLAN)
    # Wrapped, but a delete through a run-time name is left: only the sync triggers can cover it.
    assert [line.split(":")[0] for line in gate.lines()] == ["src/db/db.ts"]
    assert assess(scan_tree(root, use_cache=False).calls, root, PLAN, PLAN.old_tables).ready


def test_a_merging_table_is_ready_only_under_the_sync_triggers(tmp_path: Path) -> None:
    """Under precedence = "coalesce" the wrapper leaves content_queue to the sync triggers: its twins are
    not ready on wrapped code alone, and are once the triggers cover them (the other tables as before)."""
    text = (REPO / "fixtures" / "xbot" / "dualshift.toml").read_text()
    head = 'name = "content_queue"\nkey = ["decision_id"]\n'
    plan = parse_plan(text.replace(head, head + 'precedence = "coalesce"\n', 1), "dualshift.toml")
    root = _tree(
        tmp_path,
        {
            "src/a.ts": "import { dualWrite } from './db/dualWrite';\n"
            "export const a = (db: any) => dualWrite(db).from('content_metadata').insert({ content: 'x' });\n"
            "export const b = (db: any) => dualWrite(db).from('tweets').insert({ text: 'x' });\n",
        },
    )
    calls = scan_tree(root, use_cache=False).calls
    gate = assess(calls, root, plan)
    twins = {"content_metadata", "content_generation_metadata_comprehensive"}
    assert not gate.ready and gate.needs_triggers == twins
    assert all(found == [] for found in gate.blockers.values()) and gate.lines() == []
    assert [line.split(":")[0] for line in gate.trigger_lines()] == sorted(twins)
    assert "--sync triggers" in gate.trigger_lines()[0]
    assert assess(calls, root, plan, covered_by_triggers=twins).ready
    assert assess(calls, root, PLAN).ready  # the same code under "first": the wrapper writes content_queue
