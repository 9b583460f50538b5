"""A fixture plan with a `[dependents]` decision for every object of the database that depends on an old
table: the one cleanup takes by default, as `plan init --dsn` drafts it."""

from __future__ import annotations

from pathlib import Path

import psycopg

from dualshift.executor import inventory
from dualshift.plan import Plan, parse_plan

SECTION = "\n[dependents]"


def decided(dsn: str, path: Path) -> Plan:
    """The plan at `path` (its own `[dependents]` replaced), read as if from `path`."""
    text = path.read_text(encoding="utf-8")
    if SECTION in text:
        text = text[: text.index(SECTION)] + "\n"
    with psycopg.connect(dsn, autocommit=True) as conn:
        return parse_plan(text + inventory.draft_section(conn, text), path)
