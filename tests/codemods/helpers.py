"""assert_codemod(before, after): the LibCST-style way to state what a codemod does to one file."""

from __future__ import annotations

import textwrap
from pathlib import Path

from dualshift.analyzer.scan import scan_tree
from dualshift.codemods.result import Rewrite
from dualshift.codemods.unwrap import unwrap_typescript
from dualshift.codemods.wrap import wrap_typescript
from dualshift.plan import load_plan

REPO = Path(__file__).resolve().parents[2]
PLAN = load_plan(REPO / "fixtures" / "xbot" / "dualshift.toml")
WRAPPER = "src/db/dualWrite.ts"


def run_on(tmp_path: Path, kind: str, source: str, rel: str = "src/jobs/example.ts", reads: bool = False) -> Rewrite:
    source = textwrap.dedent(source).lstrip("\n")
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    calls = [c for c in scan_tree(tmp_path, use_cache=False, jobs=1).calls if c.file == rel]
    if kind == "wrap":
        return wrap_typescript(source, rel, calls, PLAN, WRAPPER, reads)
    return unwrap_typescript(source, rel, calls, PLAN, WRAPPER)


def assert_codemod(tmp_path: Path, kind: str, before: str, after: str, **options) -> Rewrite:
    result = run_on(tmp_path, kind, before, **options)
    assert result.new_source == textwrap.dedent(after).lstrip("\n")
    return result
