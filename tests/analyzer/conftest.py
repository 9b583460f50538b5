from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dualshift.analyzer.records import CallSite
from dualshift.analyzer.scan import ScanResult, scan_tree

REPO = Path(__file__).resolve().parents[2]
XBOT = REPO / "fixtures" / "xbot"


def scan_snippets(tmp_path: Path, files: dict[str, str]) -> ScanResult:
    """Write the given files (dedented) under tmp_path and scan them without the cache."""
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return scan_tree(tmp_path, use_cache=False, jobs=1)


def only_call(result: ScanResult) -> CallSite:
    assert len(result.calls) == 1, [c.code for c in result.calls]
    return result.calls[0]


@pytest.fixture
def scan(tmp_path: Path):
    return lambda files: scan_snippets(tmp_path, files)
