"""The whole migration on a Supabase-shaped database while the application writes (issue 11's proof).

(a) On the dirty database every kind of dirt is refused with a clear message before anything is
    verified. (b) After the rows are cleaned as the README says, the run goes create → backfill
    `--sync triggers` → verify → switch-reads 100 → cleanup → writes through the views → rollback,
    with writers (plain SQL, as service_role, authenticated users and the owner) the whole time.
    The independent ledger judges it: rows lost, wrongly changed or extra, application writes that
    failed, privileges gained, and what each role sees through each old name compared with a twin
    database that received the same writes and was never migrated.

Each assertion is its own case, so that the lead can flip the ones other helpers' fixes make pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dualshift.executor.supabase_data import DIRT_KINDS

from . import ledger as lg
from .supabase_scenario import (
    API_ALLOWANCES,
    NEW_TABLES,
    OLD_NAMES,
    SEED_ROWS,
    Step,
    copy_of,
    loaded_database,
    migrate,
    migrate_here,
    template_database,
)

WRITES_THROUGH_VIEWS_S = 2.0


@dataclass
class Run:
    """What one migration run did and what the ledger found at each point."""

    steps: list[Step] = field(default_factory=list)
    findings: dict[str, dict[str, lg.Finding]] = field(default_factory=dict)
    privileges_gained: dict[str, list[str]] = field(default_factory=dict)
    count_differences: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger: lg.Ledger = field(default_factory=lg.Ledger)
    writer_crashes: list[str] = field(default_factory=list)

    def step(self, dsn: str, *args: str) -> bool:
        """Run a phase; a failed one is re-run once, as an operator would (the failure stays on record)."""
        self.ledger.during = " ".join(args[:2])
        for _ in range(2):
            self.steps.append(migrate(dsn, *args))
            if self.steps[-1].ok:
                break
        self.ledger.during = f"after {self.ledger.during}"
        return self.steps[-1].ok

    @property
    def every_step_ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def reached(self, command: str) -> bool:
        return any(s.command.startswith(command) and s.ok for s in self.steps)

    def figures(self) -> dict[str, Any]:
        return {
            "steps": [s.line() for s in self.steps],
            "ledger": self.ledger.summary(),
            "failures": [f"{f.during}: {f.table} {f.op}: {f.error}" for f in self.ledger.failures[:10]],
            "findings": {point: {t: f.as_dict() for t, f in per.items()} for point, per in self.findings.items()},
            "privileges_gained": self.privileges_gained,
            "count_differences": self.count_differences,
            "writer_crashes": self.writer_crashes,
        }


def run_supabase_migration(
    admin_dsn: str, rows: int = SEED_ROWS, per_kind: int = 1, backup_dir: Path | None = None
) -> Run:
    """The dirty fixture, cleaned, migrated and rolled back under writers; the ledger's findings."""
    run = Run()
    with (
        template_database(admin_dsn, rows, DIRT_KINDS, clean=True) as template,
        copy_of(admin_dsn, template) as dsn,
        copy_of(admin_dsn, template, "supafix_ref") as ref_dsn,
    ):
        _migrate_under_writers(run, dsn, ref_dsn, rows, per_kind, backup_dir)
    return run


def _migrate_under_writers(run: Run, dsn: str, ref_dsn: str, rows: int, per_kind: int, backup_dir: Path | None) -> None:
    checker = lg.Checker(run.ledger)
    who = lg.viewers()
    conn = psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC")
    reference = lg.Replayer(ref_dsn, run.ledger)
    team = lg.Team(dsn, run.ledger, rows, per_kind)
    try:
        checker.snapshot(conn)
        existed = lg.relations(conn)
        before = lg.privileges(conn)
        run.counts["before"] = lg.visible_counts(conn, OLD_NAMES, who)
        team.start()
        time.sleep(0.5)

        def measure(point: str, *, old: str | None = "tables", new: bool = True, counts: bool = False) -> None:
            with team.held():
                if old is not None:
                    run.findings.setdefault(point, {}).update(
                        {f"old:{k}": v for k, v in checker.old_names(conn, through_views=old == "views").items()}
                    )
                if new:
                    run.findings.setdefault(point, {}).update(
                        {f"new:{k}": v for k, v in checker.new_tables(conn).items()}
                    )
                after = lg.privileges(conn)
                gained = lg.gained(
                    before, existed, after, {f"public.{k}": [f"public.{s}" for s in v] for k, v in NEW_TABLES.items()}
                )
                run.privileges_gained[point] = [g for g in gained if not _allowed(g)]
                if counts:
                    reference.catch_up()
                    expected = lg.visible_counts(reference.conn, OLD_NAMES, who)
                    actual = lg.visible_counts(conn, OLD_NAMES, who)
                    run.counts[point] = {"expected": expected, "actual": actual}
                    run.count_differences[point] = lg.count_differences(expected, actual)

        if not run.step(dsn, "create"):
            return
        if not run.step(dsn, "backfill", "--sync", "triggers", "--batch-size", "250"):
            return
        measure("after backfill")
        if not run.step(dsn, "verify"):
            with team.held():  # a verdict taken while writers write may race them; ask once more at rest
                if not run.step(dsn, "verify"):
                    return
        if not run.step(dsn, "switch-reads", "100"):
            return
        backup = ["--backup-dir", str(backup_dir)] if backup_dir else []
        if not run.step(dsn, "cleanup", *backup):
            return
        measure("after cleanup", old="views", counts=True)
        time.sleep(WRITES_THROUGH_VIEWS_S)  # the application keeps writing through the old names
        measure("writes through the views", old="views", counts=True)
        if not run.step(dsn, "rollback"):
            return
        time.sleep(0.5)
        measure("after rollback", new=False, counts=True)
    finally:
        run.writer_crashes = team.finish()
        reference.close()
        conn.close()


def _allowed(gain: str) -> bool:
    """`role gained X on dualshift.flags`: the wrapper's own needs are not a widening."""
    role_part, _, relation = gain.rpartition(" on ")
    privileges = set(role_part.split(" gained ", 1)[1].split(", "))
    return relation in API_ALLOWANCES and privileges <= API_ALLOWANCES[relation]


@pytest.fixture(scope="module")
def supabase_run(admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_supabase_migration(admin_dsn, backup_dir=tmp_path_factory.mktemp("backups"))


def _xfail(reason: str) -> Any:
    return pytest.mark.xfail(strict=True, reason=reason)


# ─── (a) dirty data is refused ───────────────────────────────────────────────────────────────

DIRT_CASES = {
    "null_key": ("tweet_metrics", ("null",)),
    "duplicate_key": ("tweets", ("duplicate", "not unique")),
    "lossy_cast": ("content_generation_metadata_comprehensive", ("round", "lossy", "cast", "precision", "survive")),
}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("null_key", marks=_xfail("issue 11 'Rows lost or silently wrong' / 10.5: NULL key parts refused")),
        pytest.param(
            "duplicate_key",
            marks=_xfail("issue 11 'Rows lost or silently wrong' / 10.5: duplicate source keys refused"),
        ),
        pytest.param(
            "lossy_cast", marks=_xfail("issue 11 'Rows lost or silently wrong': verify/preflight see lossy casts")
        ),
    ],
)
def test_dirty_rows_are_refused_with_a_clear_message(admin_dsn: str, kind: str) -> None:
    table, words = DIRT_CASES[kind]
    with loaded_database(admin_dsn, dirt=(kind,)) as dsn:
        steps = []
        for args in (("create",), ("backfill", "--sync", "triggers"), ("verify",)):
            steps.append(migrate_here(dsn, *args))
            if not steps[-1].ok:
                break
    refused = [s for s in steps if not s.ok]
    transcript = "\n".join(s.line() for s in steps)
    assert refused, f"the {kind} rows were migrated and verified:\n{transcript}"
    message = refused[0].output
    assert "Traceback" not in message, message
    assert table in message and any(w in message.lower() for w in words), (
        f"the refusal does not name {table} and the problem:\n{message}"
    )


# ─── (b) the clean run, judged by the ledger ─────────────────────────────────────────────────


def _fmt(run: Run) -> str:
    import json

    return json.dumps(run.figures(), indent=1, default=str)[:6000]


def _finding_total(run: Run, point: str, prefix: str, kinds: tuple[str, ...]) -> int | None:
    per = run.findings.get(point)
    if per is None:
        return None
    chosen = {k: v for k, v in per.items() if k.startswith(prefix)}
    return sum(lg.total(chosen, kind) for kind in kinds)


CHECKS: dict[str, tuple[str, Any]] = {}


def check(name: str, reason: str | None = None):
    def register(function):
        CHECKS[name] = (reason, function)
        return function

    return register


@check("every phase succeeds", "issue 11: the executor fails somewhere on a Supabase schema (see the steps)")
def _phases(run: Run) -> None:
    assert run.reached("rollback") and run.every_step_ok, "\n".join(s.line() for s in run.steps)


@check("old tables untouched while syncing")
def _old_during_sync(run: Run) -> None:
    assert _finding_total(run, "after backfill", "old:", ("lost", "wrong", "extra")) == 0


@check("new tables hold every row after backfill")
def _new_rows(run: Run) -> None:
    assert _finding_total(run, "after backfill", "new:", ("lost", "extra")) == 0


@check("new tables hold the right values after backfill")
def _new_values(run: Run) -> None:
    assert _finding_total(run, "after backfill", "new:", ("wrong",)) == 0


@check("no row lost through the views after cleanup", "issue 11 'The old path must never break' / cleanup window")
def _views_rows(run: Run) -> None:
    for point in ("after cleanup", "writes through the views"):
        assert _finding_total(run, point, "old:", ("lost", "extra")) == 0, point


@check("views show the old values in the old types", "issue 11: views under old names look like the old tables")
def _views_values(run: Run) -> None:
    for point in ("after cleanup", "writes through the views"):
        assert _finding_total(run, point, "old:", ("wrong",)) == 0, point


@check("new tables exact after cleanup", "issue 11: cleanup (dependent objects, window) and view writes")
def _new_after_cleanup(run: Run) -> None:
    for point in ("after cleanup", "writes through the views"):
        assert _finding_total(run, point, "new:", ("lost", "wrong", "extra")) == 0, point


@check("rollback after cleanup is exact", "issue 11 'Rollback after cleanup loses nothing' / 10.3")
def _rollback_exact(run: Run) -> None:
    assert _finding_total(run, "after rollback", "old:", ("lost", "wrong", "extra")) == 0


@check("no application write failed", "issue 11: sync triggers and view writes fail application writes")
def _no_failed_writes(run: Run) -> None:
    assert not run.writer_crashes
    assert run.ledger.writes, "the writers committed nothing"
    assert not run.ledger.failures, [f"{f.table} {f.op}: {f.error}" for f in run.ledger.failures[:5]]


@check("no role gains a privilege", "issue 11 'Access never widens': default privileges, dualshift schema")
def _no_privilege_gained(run: Run) -> None:
    assert run.privileges_gained, "no point was measured"
    assert not any(run.privileges_gained.values()), run.privileges_gained


@check("each role sees through each old name what it saw", "issue 11 'Each old name shows its own rows' / RLS copied")
def _counts(run: Run) -> None:
    measured = [
        p for p in ("after cleanup", "writes through the views", "after rollback") if p in run.count_differences
    ]
    assert len(measured) == 3, f"measured only at {measured}"
    assert not any(run.count_differences[p] for p in measured), {p: run.count_differences[p][:5] for p in measured}


# Each check's expected outcome on main as it is today; the lead flips them after merging.
FAILS_TODAY = {
    "every phase succeeds",
    "no row lost through the views after cleanup",
    "views show the old values in the old types",
    "new tables exact after cleanup",
    "rollback after cleanup is exact",
    "no application write failed",
    "no role gains a privilege",
    "each role sees through each old name what it saw",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=_xfail(CHECKS[name][0] or "fails on main")) if name in FAILS_TODAY else name
        for name in CHECKS
    ],
)
def test_supabase_migration_under_writers(supabase_run: Run, name: str) -> None:
    _, function = CHECKS[name]
    try:
        function(supabase_run)
    except AssertionError as exc:
        raise AssertionError(f"{name}: {exc}\n{_fmt(supabase_run)}") from None


# ─── finalize, at the end of a second run ────────────────────────────────────────────────────


@pytest.fixture
def clean_database(admin_dsn: str) -> Iterator[str]:
    with loaded_database(admin_dsn, dirt=DIRT_KINDS, clean=True) as dsn:
        yield dsn


@_xfail("issue 11 'Rollback after cleanup loses nothing': the explicit `finalize` phase (helper cleanup)")
def test_finalize_after_cleanup_keeps_every_row(clean_database: str, tmp_path: Path) -> None:
    dsn = clean_database
    book = lg.Ledger()
    checker = lg.Checker(book)
    with psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC") as conn:
        checker.snapshot(conn)
        team = lg.Team(dsn, book, SEED_ROWS)
        team.start()
        steps = []
        try:
            for args in (
                ("create",),
                ("backfill", "--sync", "triggers"),
                ("verify",),
                ("switch-reads", "100"),
                ("cleanup", "--backup-dir", str(tmp_path)),
                ("finalize",),
            ):
                steps.append(migrate(dsn, *args))
                assert steps[-1].ok, "\n".join(s.line() for s in steps)
            time.sleep(0.5)
        finally:
            crashes = team.finish()
        assert not crashes and not book.failures, (crashes, book.failures[:5])
        views = checker.old_names(conn, through_views=True)
        new = checker.new_tables(conn)
        archive_left = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'archive_supabase' AND c.relkind = 'r'"
        ).fetchone()[0]
    assert lg.total(views, "lost") + lg.total(views, "extra") + lg.total(views, "wrong") == 0, views
    assert sum(lg.total(new, k) for k in ("lost", "wrong", "extra")) == 0, new
    assert archive_left == 0
