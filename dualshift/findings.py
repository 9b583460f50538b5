"""Findings: what `plan check` and the executor's validation and preflight report, one shape for all.

A finding is an error (the migration must not start) or a warning (it may, but look), about a new
table, a source (old table) and a column where it applies, located on the plan's TOML line where
known. Data findings carry a row count and up to ten sample keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]
MAX_SAMPLES = 10


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str  # a stable name: "missing-table", "null-key", "lossy-cast", … (see the README)
    message: str
    table: str | None = None  # the new table
    source: str | None = None  # the old table, schema-qualified
    column: str | None = None
    line: int | None = None  # in the plan file
    count: int | None = None  # rows, for data checks
    samples: tuple[Any, ...] = field(default=())  # keys of sample rows, each a list of key values

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def render(self, plan_path: str) -> str:
        """One line: `plan.toml:12: error: message [sample keys]`."""
        where = f"{plan_path}:{self.line}" if self.line else plan_path
        text = f"{where}: {self.severity}: {self.message}"
        if self.samples:
            text += f" (e.g. {', '.join(json.dumps(s, default=str) for s in self.samples)})"
        return text

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples"] = [list(s) if isinstance(s, tuple) else s for s in self.samples]
        return data


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.is_error]


def summary(findings: Iterable[Finding]) -> str:
    findings = list(findings)
    count = len(errors(findings))
    return f"{count} error(s), {len(findings) - count} warning(s)"
