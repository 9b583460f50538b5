"""What a codemod does to one file, as a value: the runner decides what to print and how to exit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["changed", "unchanged", "skipped", "failed"]


@dataclass(frozen=True)
class SkippedSite:
    """A call site a codemod left alone, and why (dynamic table name, builder crossing functions, ...)."""

    line: int
    table: str | None
    reason: str


@dataclass(frozen=True)
class Rewrite:
    """The result of rewriting one file's text in memory; nothing is written to disk here."""

    new_source: str
    rewritten_sites: int = 0
    skipped_sites: tuple[SkippedSite, ...] = ()

    def changed(self, old_source: str) -> bool:
        return self.new_source != old_source


@dataclass(frozen=True)
class FileOutcome:
    """The outcome for one file once the runner has handled it."""

    path: str  # POSIX, relative to the root the codemod ran on
    status: Status
    reason: str | None = None  # for skipped and failed
    diff: str = ""  # unified diff for changed files
    skipped_sites: tuple[SkippedSite, ...] = field(default_factory=tuple)
