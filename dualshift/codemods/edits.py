"""Byte-range edits on a source text, applied together so earlier offsets stay valid."""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Edit:
    start: int  # byte offsets into the UTF-8 source
    end: int
    text: str


class OverlappingEdits(ValueError):
    pass


def apply_edits(source: bytes, edits: list[Edit]) -> bytes:
    ordered = sorted(set(edits), key=lambda e: (e.start, e.end))
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            raise OverlappingEdits(f"edits at bytes {before.start} and {after.start} overlap")
    out = bytearray(source)
    for edit in reversed(ordered):
        out[edit.start : edit.end] = edit.text.encode("utf-8")
    return bytes(out)
