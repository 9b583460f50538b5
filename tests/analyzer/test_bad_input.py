"""Bad input is reported in the map and on stderr, and never stops the scan."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualshift.analyzer.scan import scan_tree
from dualshift.cli import app

from .conftest import XBOT

GOOD = "export async function ok(db: any) { await db.from('posts').insert({ content: 'x' }); }\n"


@pytest.fixture
def messy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "messy"
    (root / "src").mkdir(parents=True)
    (root / "src" / "good.ts").write_text(GOOD)
    (root / "src" / "broken.ts").write_text(
        "const half = ;\nexport async function fine(db: any) { await db.from('outcomes').select('likes'); }\n"
    )
    (root / "src" / "latin1.ts").write_bytes(
        "const s = 'caf\xe9';\nawait db.from('posts').select();\n".encode("latin-1")
    )
    (root / "src" / "binary.js").write_bytes(b"\x00\x01\x02from('x')\x00")
    chunk = "export const rows = [" + ",".join(f"{{ id: {i}, name: 'row{i}' }}" for i in range(2000)) + "];\n"
    (root / "src" / "generated_big.ts").write_text(chunk * (5 * 1024 * 1024 // len(chunk) + 1))
    os.symlink("loop_b.ts", root / "src" / "loop_a.ts")
    os.symlink("loop_a.ts", root / "src" / "loop_b.ts")
    os.symlink("..", root / "src" / "parent_link")  # a directory loop
    os.mkfifo(root / "src" / "pipe.ts")  # exists, but cannot be read as a file (tests run as root)
    return root


def test_bad_files_are_reported_and_the_rest_is_scanned(messy_tree: Path) -> None:
    result = scan_tree(messy_tree, use_cache=False, jobs=1)
    reasons = {f.file: f.reason for f in result.failures}
    assert reasons["src/broken.ts"].startswith("syntax error at line 1;")
    assert reasons["src/latin1.ts"].startswith("not UTF-8 text (byte 0xe9")
    assert reasons["src/binary.js"] == "binary file (NUL bytes)"
    assert reasons["src/generated_big.ts"].startswith("too large to analyze (5.")
    assert "symbolic link" in reasons["src/loop_a.ts"] and "symbolic link" in reasons["src/loop_b.ts"]
    assert reasons["src/pipe.ts"] == "not a regular file"
    tables = sorted((c.file, c.table) for c in result.calls)
    # The good file, and the valid function after the syntax error, are still analyzed.
    assert tables == [("src/broken.ts", "outcomes"), ("src/good.ts", "posts")]


def test_cli_reports_failures_on_stderr_and_in_the_map(messy_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "map.json"
    runner = CliRunner()
    result = runner.invoke(app, ["scan", str(messy_tree), "--out", str(out), "--no-cache", "--quiet"])
    assert result.exit_code == 0
    assert "dualshift: src/latin1.ts: not UTF-8 text" in result.stderr
    data = json.loads(out.read_text())
    assert {f["file"] for f in data["failures"]} >= {"src/broken.ts", "src/binary.js", "src/pipe.ts"}
    assert data["summary"]["failedFiles"] == len(data["failures"])


def test_missing_root_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "map.json"
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "nope"), "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("nope: not a directory")
    assert not out.exists()


def test_gitignore_node_modules_build_output_and_declarations_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "xbot"
    shutil.copytree(XBOT, root, symlinks=True)
    (root / "src" / "generated").mkdir()
    (root / "src" / "generated" / "client.ts").write_text("db.from('ignored_by_gitignore').select();")
    (root / "src" / "api.generated.ts").write_text("db.from('ignored_by_pattern').select();")
    (root / "dist").mkdir()
    (root / "dist" / "bundle.js").write_text("db.from('build_output').select();")
    (root / "src" / "nested").mkdir()
    (root / "src" / "nested" / ".gitignore").write_text("local_only.ts\n")
    (root / "src" / "nested" / "local_only.ts").write_text("db.from('nested_ignore').select();")
    (root / "src" / "nested" / "kept.ts").write_text("db.from('kept_table').select();")
    tables = {c.table for c in scan_tree(root, use_cache=False, jobs=1).calls}
    assert "kept_table" in tables
    assert not tables & {"ignored_by_gitignore", "ignored_by_pattern", "build_output", "nested_ignore"}
    assert "should_not_appear" not in tables  # node_modules
    assert not any(c.file.endswith(".d.ts") for c in scan_tree(root, use_cache=False).calls)


def test_include_and_exclude_globs(tmp_path: Path) -> None:
    only_jobs = scan_tree(XBOT, include=["src/jobs/**"], use_cache=False, jobs=1)
    assert only_jobs.calls and all(c.file.startswith("src/jobs/") for c in only_jobs.calls)
    no_scripts = scan_tree(XBOT, exclude=["scripts/"], use_cache=False, jobs=1)
    assert not any(c.file.startswith("scripts/") for c in no_scripts.calls)


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["scan", str(XBOT), "--out", str(blocker / "map.json"), "--no-cache", "-q"])
    assert result.exit_code == 2
    assert "cannot write map" in result.stderr


def test_off_a_terminal_tables_keep_whole_names_and_short_options_work(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dualshift import __version__
    from dualshift.cli import app

    long_name = "content_generation_metadata_comprehensive_archive_of_the_previous_quarter"
    (tmp_path / "a.ts").write_text(f"export const f = (db: any) => db.from('{long_name}').insert({{ a: 1 }});\n")
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "-o", str(tmp_path / "map.json"), "--no-cache"])
    assert result.exit_code == 0, result.output
    assert long_name in result.output and "…" not in result.output
    assert CliRunner().invoke(app, ["-V"]).output.strip() == f"dualshift {__version__}"
    assert CliRunner().invoke(app, ["scan", "-h"]).output.startswith("Usage: dualshift scan")


def test_out_dash_writes_the_map_to_stdout_and_the_wrapper_is_not_scanned(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from dualshift.cli import app

    (tmp_path / "job.ts").write_text(
        "export const a = (db: any) => db.from('posts').insert({ id: 1 });\n"
        "export function save(db: any, table: string) { return db.from(table).insert({}); }\n"
        "export const b = (db: any) => { save(db, 'tweets'); save(db, 'posts'); };\n"
    )
    (tmp_path / "dualWrite.ts").write_text(
        "/* eslint-disable */\n// Generated by dualshift 0.1.0 from plan.toml. Do not edit.\n"
        "export const f = (c: any) => c.schema('dualshift').from('failed_writes').insert({});\n"
    )
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "--out", "-", "--no-cache", "-q"])
    assert result.exit_code == 0
    summary = json.loads(result.stdout)["summary"]
    assert (summary["callSites"], summary["totalInteractions"]) == (2, 3)
    assert not (Path.cwd() / "-").exists() and not (tmp_path / "-").exists()


def test_ctrl_c_during_a_scan_says_what_was_kept_and_exits_130(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    line = "export const f = (db: any) => db.from('posts').insert({ a: 1 }).eq('x', 1);\n" * 20
    for number in range(6000):
        folder = tmp_path / "tree" / f"d{number % 60}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{number}.ts").write_text(line)
    command = [sys.executable, "-m", "dualshift", "scan", str(tmp_path / "tree"), "--out", str(tmp_path / "m.json")]
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    scan = subprocess.Popen([*command, "-j", "1"], env=env, stderr=subprocess.PIPE, text=True)
    status = Path(f"/proc/{scan.pid}/status")
    while scan.poll() is None and not int(_status_field(status, "SigCgt"), 16) & (1 << (signal.SIGINT - 1)):
        time.sleep(0.05)  # until Python has its SIGINT handler: before that, SIGINT just kills it
    time.sleep(1.5)
    scan.send_signal(signal.SIGINT)
    _, stderr = scan.communicate(timeout=60)
    assert scan.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("dualshift: interrupted: no map was written")
    assert not (tmp_path / "m.json").exists()
    assert any((tmp_path / "cache").rglob("files.pickle"))  # what was analyzed is kept for the next run


def _status_field(status: Path, name: str) -> str:
    return next(line.split()[1] for line in status.read_text().splitlines() if line.startswith(f"{name}:"))


def test_json_summary_and_its_conflict_with_out_dash(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from dualshift.cli import app

    (tmp_path / "a.ts").write_text("export const f = (db: any) => db.from('posts').insert({ a: 1 });\n")
    out = tmp_path / "map.json"
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "-o", str(out), "--no-cache", "--json"])
    document = json.loads(result.stdout)
    assert document["map"] == str(out) and document["summary"]["callSites"] == 1 and document["failures"] == []
    both = CliRunner().invoke(app, ["scan", str(tmp_path), "-o", "-", "--json"])
    assert both.exit_code == 2 and "both want stdout" in both.output
