"""Valid TypeScript that tree-sitter's grammar cannot read: recovered where the way the grammar is used
can do it, otherwise a `grammar` failure (the TypeScript compiler's word) that keeps the file's calls and
is not counted as failed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dualshift.analyzer.scan import scan_tree
from dualshift.cli import app
from dualshift.reports.interaction_map import summarize

REPO = Path(__file__).resolve().parents[2]
needs_typescript = pytest.mark.skipif(
    shutil.which("node") is None or not (REPO / "node_modules" / "typescript").exists(),
    reason="node and the typescript npm package are needed (bash .ci/setup)",
)

# Both parse with no error in the TypeScript compiler; tree-sitter's grammars reject them.
JSX_TEXT = """\
export const before = (db: any) => db.from('menus').select('id, title');
export const Menu = () => <p>fish && chips</p>;
export const after = (db: any) => db.from('orders').insert({ dish: 'fish' });
"""
IMPORT_TYPE = """\
export const before = (db: any) => db.from('requests').select('id');
let last: import("axios").AxiosResponse<string> | undefined;
export const after = (db: any) => db.from('responses').insert({ body: String(last) });
"""
BROKEN = """\
export const before = (db: any) => db.from('menus').select('id');
export function G() { return <div>{a b}</div>; }
"""


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_the_grammar_per_extension_and_the_recovery_read_these_whole(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "src/terms.tsx": "export const T = (db: any) => <p>Terms & conditions {db.from('terms').select()}</p>;\n",
            "src/client.ts": "type C = import('axios').AxiosInstance;\nexport const f = (db: any) => db.from('a').delete();\n",
            "src/generic.ts": "export const cast = <T,>(db: any) => <T>db.from('b').select();\n",
        },
    )
    result = scan_tree(root, use_cache=False, jobs=1)
    assert result.failures == []
    assert sorted(c.table for c in result.calls) == ["a", "b", "terms"]


@needs_typescript
@pytest.mark.parametrize(("rel", "source"), [("src/menu.tsx", JSX_TEXT), ("src/http.ts", IMPORT_TYPE)])
def test_a_grammar_gap_keeps_the_calls_and_is_not_counted_as_failed(tmp_path: Path, rel: str, source: str) -> None:
    root = _tree(tmp_path, {rel: source})
    result = scan_tree(root, use_cache=False, jobs=1)
    (failure,) = result.failures
    assert failure.kind == "grammar" and failure.note is None
    assert failure.reason.startswith("tree-sitter cannot parse line 2, which the TypeScript compiler parses")
    assert len(result.calls) == 2  # before and after the part tree-sitter cannot read
    summary = summarize(result)
    assert summary["failedFiles"] == 0 and summary["grammarGaps"] == 1


@needs_typescript
def test_map_and_summary_line_tell_grammar_gaps_from_syntax_errors(tmp_path: Path) -> None:
    root = _tree(tmp_path / "svc", {"src/menu.tsx": JSX_TEXT, "src/broken.tsx": BROKEN})
    out = tmp_path / "map.json"
    scanned = CliRunner().invoke(app, ["scan", str(root), "--out", str(out), "--no-cache"])
    assert scanned.exit_code == 0, scanned.output
    assert "1 failed files (1 more file read in part: gaps in tree-sitter's grammar)" in scanned.stdout
    data = json.loads(out.read_text())
    kinds = {f["file"]: f["kind"] for f in data["failures"]}
    assert kinds == {"src/broken.tsx": "syntax", "src/menu.tsx": "grammar"}
    assert data["summary"]["failedFiles"] == 1 and data["summary"]["grammarGaps"] == 1
    assert {c["table"] for c in data["calls"]} == {"menus", "orders"}


def test_without_node_a_failure_stays_a_syntax_error_and_says_why(tmp_path: Path, monkeypatch) -> None:
    root = _tree(tmp_path / "svc", {"src/menu.tsx": JSX_TEXT})
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    (failure,) = scan_tree(root, use_cache=False, jobs=1).failures
    assert failure.kind == "syntax" and failure.counts_as_failed
    assert failure.note == (
        "the TypeScript compiler could not be asked (node is not installed): this may be a gap in tree-sitter's grammar"
    )


@needs_typescript
def test_the_compilers_answer_is_cached_with_the_file(tmp_path: Path, monkeypatch) -> None:
    root = _tree(tmp_path / "svc", {"src/menu.tsx": JSX_TEXT})
    cache = tmp_path / "cache"
    assert scan_tree(root, cache_dir=cache, jobs=1).failures[0].kind == "grammar"
    (root / "src/menu.tsx").write_text(JSX_TEXT)  # same bytes, a new time: the whole-tree entry is gone
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # node is not asked again
    assert scan_tree(root, cache_dir=cache, jobs=1).failures[0].kind == "grammar"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is needed")
def test_without_the_typescript_package_the_note_says_so(tmp_path: Path, monkeypatch) -> None:
    from dualshift.analyzer import scan

    root = _tree(tmp_path / "svc", {"src/menu.tsx": JSX_TEXT})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scan, "HOME", tmp_path)  # nowhere a node_modules/typescript can be found
    (failure,) = scan_tree(root, use_cache=False, jobs=1).failures
    assert failure.kind == "syntax" and "(the typescript npm package is not installed)" in (failure.note or "")


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("echo 'FATAL ERROR: heap out of memory' >&2; exit 134", "node failed: FATAL ERROR: heap out of memory"),
        ("exec sleep 5", "node did not answer: Command"),
    ],
    ids=["a crash", "a timeout"],
)
def test_a_node_that_crashes_or_hangs_leaves_a_syntax_error_that_says_why(
    tmp_path: Path, monkeypatch, script: str, why: str
) -> None:
    from dualshift.analyzer import tscheck

    root = _tree(tmp_path / "svc", {"src/menu.tsx": JSX_TEXT})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "node").write_text(f"#!/bin/sh\n{script}\n")
    (bin_dir / "node").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(tscheck, "TIMEOUT_SECONDS", 0.5)
    (failure,) = scan_tree(root, use_cache=False, jobs=1).failures
    assert failure.kind == "syntax" and failure.counts_as_failed
    assert f"the TypeScript compiler could not be asked ({why}" in (failure.note or ""), failure.note
