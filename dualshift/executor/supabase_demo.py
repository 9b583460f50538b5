"""`dualshift demo --fixture supabase`: the consolidation on a Supabase-shaped database, judged by a ledger.

The story of tests/executor/test_supabase_e2e.py, told to a person: the dirty database refused (one
kind of dirt at a time), the dirt cleaned as the README says, then create → backfill --sync triggers
→ verify → switch-reads 100 → cleanup → writes through the views → rollback, with application writers
the whole time. The judge is the independent ledger (tests/executor/ledger.py, which does not import
dualshift): this demo runs from a dualshift checkout, where the fixture and the ledger are.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from dualshift.executor.pgserver import server

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "tests" / "executor" / "supabase_scenario.py"


@dataclass
class SupabaseDemoResult:
    refusals: dict[str, str | None] = field(default_factory=dict)  # kind of dirt → None when refused well
    steps: list[Any] = field(default_factory=list)  # each migrate step: command, exit code, seconds, output
    ledger: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, dict[str, dict]] = field(default_factory=dict)  # point → relation → lost/wrong/extra
    verdicts: dict[str, str | None] = field(default_factory=dict)  # check → None when it holds

    @property
    def passed(self) -> bool:
        return not any(self.refusals.values()) and not any(self.verdicts.values())


def scenario() -> ModuleType:
    """The shared scenario and its ledger, from the checkout this dualshift runs from."""
    if not SCENARIO.exists():
        raise RuntimeError(
            f"the supabase demo needs a dualshift checkout: {SCENARIO} (the independent ledger) is missing"
        )
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("tests.executor.supabase_scenario")


def run_supabase_demo(
    dsn: str | None, rows: int, writers: int, report: Callable[[str], None] = lambda line: None
) -> SupabaseDemoResult:
    """Run the story on the server of `dsn` (it creates its own databases there) or a fresh server."""
    story = scenario()
    result = SupabaseDemoResult()
    with ExitStack() as stack:
        admin = dsn or stack.enter_context(server())
        report("the dirty database: each kind of dirt alone, create → backfill → verify …")
        for kind, steps in story.refusals(admin, rows).items():
            result.refusals[kind] = story.refusal_problem(kind, steps)
        run = story.run_supabase_migration(admin, rows, max(writers, 1), report=report)
    result.steps = run.steps
    result.ledger = run.ledger.summary()
    result.findings = {
        point: {name: finding.as_dict() for name, finding in per.items()} for point, per in run.findings.items()
    }
    result.verdicts = story.verdicts(run)
    return result
