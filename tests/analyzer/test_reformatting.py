"""Property: line breaks inside chains move positions and change nothing else."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dualshift.analyzer.records import CallSite
from dualshift.analyzer.scan import scan_tree

from .conftest import XBOT

# `.method(` at a chain step (not inside strings in these files: checked by the equality itself).
STEP = re.compile(rb"(?<=[\w)\]])\.(?=(from|select|insert|update|upsert|delete|eq|in|order|limit|single)\()")
POSITIONS = (
    "line",
    "column",
    "start_byte",
    "end_byte",
    "receiver_start",
    "receiver_end",
    "table_arg_start",
    "table_arg_end",
)


def _positionless(call: CallSite) -> CallSite:
    return replace(
        call,
        **dict.fromkeys(POSITIONS, 0),
        code=" ".join(call.code.split()).replace("\n", ""),
        client="".join(call.client.split()),
    )


def _normalize_code(call: CallSite) -> CallSite:
    squeezed = re.sub(r"\s*\.\s*", ".", call.code)
    return replace(_positionless(call), code=" ".join(squeezed.split()))


def _in_code(source: bytes, position: int) -> bool:
    """Not inside a comment or a string on that line (the fixture keeps strings on one line)."""
    prefix = source[source.rfind(b"\n", 0, position) + 1 : position]
    if b"//" in prefix or prefix.lstrip().startswith((b"*", b"/*")):
        return False
    return all(prefix.count(quote) % 2 == 0 for quote in (b"'", b'"', b"`"))


def _reformat(source: bytes, breaks: list[bool]) -> bytes:
    matches = [m for m in STEP.finditer(source) if _in_code(source, m.start())]
    out = bytearray()
    last = 0
    for match, add_break in zip(matches, breaks, strict=False):
        out += source[last : match.start()]
        out += b"\n      ." if add_break else b"."
        last = match.end()
    out += source[last:]
    return bytes(out)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(breaks=st.lists(st.booleans(), min_size=40, max_size=40), seed_file=st.integers(min_value=0, max_value=10_000))
def test_line_breaks_inside_chains_change_no_record_but_positions(tmp_path_factory, breaks, seed_file) -> None:
    original = scan_tree(XBOT, use_cache=False, jobs=1).calls
    copy = tmp_path_factory.mktemp("reformatted") / "xbot"
    shutil.copytree(XBOT, copy, symlinks=True)
    sources = sorted(p for p in (copy / "src").rglob("*.ts*") if not p.name.endswith(".d.ts"))
    # Reformat a handful of files, chosen by the seed, with the drawn pattern of breaks.
    for offset in range(5):
        target = sources[(seed_file + offset * 7) % len(sources)]
        target.write_bytes(_reformat(target.read_bytes(), breaks))
    reformatted = scan_tree(copy, use_cache=False, jobs=1).calls
    assert [_normalize_code(c) for c in reformatted] == [_normalize_code(c) for c in original]


def test_reformatting_helper_really_moves_things(tmp_path: Path) -> None:
    source = b"await supabase.from('t').insert({a: 1}).select();"
    assert _reformat(source, [True, True, True]).count(b"\n") == 3
