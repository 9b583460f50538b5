"""A crash at every commit boundary of every phase, then resume or rollback: no row lost, none wrong.

For each name in `dualshift.executor.faults.POINTS` the phase that owns it runs in its own process
with DUALSHIFT_FAULT=<name>, which SIGKILLs it right after that commit, while an application writer
keeps writing (plain SQL, tests/executor/ledger.py). Then the operator's recovery runs: the same
phase again (resume), or `rollback` until there is nothing left to roll back. The ledger then checks
every old name (the tables, or after cleanup the views under their names) and the new tables.

A point the phase never reaches is a failure, not a pass: the kill must really happen.
The whole matrix (every point, both recoveries, more rows, more writers) is
benchmarks/bench_fault_matrix.py.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dualshift.executor import faults

from . import ledger as lg
from .supabase_scenario import Step, copy_of, migrate, migrate_here, template_database

FAULT_ROWS = 300


def phase_args(phase: str, backup_dir: Path) -> tuple[str, ...]:
    return {
        "create": ("create",),
        "backfill": ("backfill", "--sync", "triggers", "--batch-size", "100"),
        "verify": ("verify",),
        "switch": ("switch-reads", "100"),
        "flags": ("flags", "--set", "shadow_reads=true"),
        "cleanup": ("cleanup", "--backup-dir", str(backup_dir)),
        "rollback": ("rollback",),
        "finalize": ("finalize",),
    }[phase]


# The phases that run before a point's own phase (rollback and finalize are tried after cleanup).
ORDER = ("create", "backfill", "verify", "switch", "cleanup")
BEFORE = {
    **{phase: ORDER[: ORDER.index(phase)] for phase in ORDER},
    "rollback": ORDER,
    "finalize": ORDER,
    "flags": ("create",),
}
# Points reached more than once fire on a later pass, so that the crash lands mid-phase.
REPEATED = {"backfill.batch_committed": 3, "backfill.sync_installed": 2}


@dataclass
class Outcome:
    point: str
    recovery: str
    steps: list[Step] = field(default_factory=list)
    killed: bool = False
    findings: dict[str, lg.Finding] = field(default_factory=dict)
    failures: int = 0
    writes: int = 0

    def transcript(self) -> str:
        return "\n".join(s.line() for s in self.steps)

    def problems(self) -> dict[str, dict]:
        return {k: v.as_dict() for k, v in self.findings.items() if not v.clean}


@dataclass
class Stages:
    """Template databases of the fixture after each phase (no writer ran while they were built), the
    old tables as they were before any phase, and how each stage was reached."""

    admin_dsn: str
    templates: dict[str, str]  # the last phase run ("" for none) → template database name
    initial: dict[str, dict]
    steps: list[Step]
    rows: int = FAULT_ROWS


@contextmanager
def stages(admin_dsn: str, backup_dir: Path, rows: int = FAULT_ROWS) -> Iterator[Stages]:
    """Build the fixture once and copy it after each phase of ORDER, so a case starts from its phase."""
    steps: list[Step] = []
    with ExitStack() as stack:
        base = stack.enter_context(template_database(admin_dsn, rows))
        with psycopg.connect(make_conninfo(admin_dsn, dbname=base), options="-c TimeZone=UTC") as conn:
            checker = lg.Checker(lg.Ledger())
            checker.snapshot(conn)
        templates = {"": base}
        previous = base
        for phase in ORDER:
            working = stack.enter_context(copy_of(admin_dsn, previous, "supafix_stage"))
            steps.append(migrate_here(working, *phase_args(phase, backup_dir)))
            if not steps[-1].ok:
                break
            name = conninfo_to_dict(working)["dbname"]
            templates[phase] = name
            previous = name
        yield Stages(admin_dsn, templates, checker.initial, steps, rows)


def crash_and_recover(stage: Stages, point: str, recovery: str, backup_dir: Path, writers: int = 1) -> Outcome:
    """Start from the point's phase, kill it there under a writer, recover, and judge by the ledger."""
    outcome = Outcome(point, recovery, steps=list(stage.steps))
    phase = point.split(".", 1)[0]
    before = BEFORE[phase]
    template = stage.templates.get(before[-1] if before else "")
    if template is None:
        return outcome  # an earlier phase failed while the stages were built: the transcript says which
    with copy_of(stage.admin_dsn, template, "supafix_fault") as dsn:
        book = lg.Ledger()
        checker = lg.Checker(book)
        checker.initial = {table: dict(rows) for table, rows in stage.initial.items()}
        conn = psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC")
        team = lg.Team(dsn, book, stage.rows, writers)
        team.start()
        try:
            armed = f"{point}@{REPEATED[point]}" if point in REPEATED else point
            crashed = migrate(dsn, *phase_args(phase, backup_dir), env={faults.ENV: armed})
            outcome.steps.append(crashed)
            outcome.killed = crashed.exit_code == -signal.SIGKILL
            if not outcome.killed:
                return outcome
            time.sleep(0.3)  # the writer goes on writing against whatever the crash left
            where = _recover(outcome, dsn, phase, recovery, backup_dir)
            time.sleep(0.3)
            with team.held():
                outcome.findings = {
                    f"old:{k}": v for k, v in checker.old_names(conn, through_views=where == "views").items()
                }
                # Before backfill the new tables hold nothing yet: only the old tables can be judged.
                if where == "views" or (recovery == "resume" and phase not in ("create", "rollback", "flags")):
                    outcome.findings.update({f"new:{k}": v for k, v in checker.new_tables(conn).items()})
        finally:
            team.finish()
            conn.close()
            outcome.failures, outcome.writes = len(book.failures), len(book.writes)
    return outcome


def _recover(outcome: Outcome, dsn: str, phase: str, recovery: str, backup_dir: Path) -> str:
    """The operator's next move; returns where the old names now are: 'tables' or 'views'."""
    if recovery == "resume":
        if phase != "rollback":  # a rollback that committed is done; running it again would go further back
            outcome.steps.append(migrate_here(dsn, *phase_args(phase, backup_dir)))
        return "views" if phase in ("cleanup", "finalize") else "tables"
    for _ in range(len(ORDER) + 1):  # back to where nothing was ever created
        outcome.steps.append(migrate_here(dsn, "rollback"))
        if not outcome.steps[-1].ok:
            outcome.steps.pop()  # "nothing left to roll back" ends the walk
            break
    return "tables"


@pytest.fixture(scope="module")
def fault_stages(admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stages]:
    with stages(admin_dsn, tmp_path_factory.mktemp("stage-backups")) as built:
        yield built


# Every point resumed, and the rollback of the crash that once truncated the live tables (issue 10.1).
# `reconcile` commits only where the state row disagrees with the catalog (a crash of an older dualshift),
# and then writes nothing but the state row and its audit in one transaction: it has no window to test
# here (tests/executor/test_state_and_sessions.py covers reconcile itself).
UNREACHABLE_HERE = {"reconcile.committed"}
CASES = [(point, "resume") for point in faults.POINTS if point not in UNREACHABLE_HERE] + [
    ("cleanup.committed", "rollback")
]


# The rollback of cleanup is walked all the way back: the twins' updates and deletes made through the
# views after cleanup follow the rule of README section 6 ("twins after cleanup"), which the ledger models.
@pytest.mark.parametrize(
    ("point", "recovery"),
    CASES,
    ids=[f"{p}-{r}" for p, r in CASES],
)
def test_crash_at_commit_boundary_loses_nothing(
    fault_stages: Stages, tmp_path: Path, point: str, recovery: str
) -> None:
    outcome = crash_and_recover(fault_stages, point, recovery, tmp_path)
    assert outcome.killed, f"{point} was never reached: the phase was not killed there\n{outcome.transcript()}"
    recovered = outcome.steps[-1] if recovery == "resume" and not point.startswith("rollback.") else None
    assert recovered is None or recovered.ok, f"the {recovery} after the crash failed\n{outcome.transcript()}"
    assert outcome.writes > 0, "the writer committed nothing"
    assert outcome.findings, f"nothing was checked\n{outcome.transcript()}"
    assert not outcome.problems(), f"{outcome.problems()}\n{outcome.transcript()}"
    assert outcome.failures == 0, f"{outcome.failures} application write(s) failed\n{outcome.transcript()}"


def test_every_fault_point_has_a_case() -> None:
    """A new commit boundary added to POINTS gets its crash test without anyone writing one."""
    assert {p for p, _ in CASES} | UNREACHABLE_HERE == set(faults.POINTS)
    assert set(REPEATED) <= set(faults.POINTS)
    assert all(p.split(".", 1)[0] in BEFORE for p in set(faults.POINTS) - UNREACHABLE_HERE)
