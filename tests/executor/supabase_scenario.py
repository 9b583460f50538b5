"""The Supabase fixture's databases and the migration driven through the command line, shared by the
end-to-end and fault-injection tests (and their longer variants under benchmarks/).

The executor is driven only through `dualshift migrate … --plan … --dsn …` (the contract users have):
in a subprocess where a crash or an environment variable matters, in-process (typer's CliRunner)
where only the outcome does. The judging is the ledger's (tests/executor/ledger.py), never dualshift's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor.supabase_data import DIRT_KINDS, PLAN, clean_dirt, load_supabase_data

from . import ledger as lg

DUALSHIFT = Path(sys.executable).parent / "dualshift"
SEED_ROWS = 600
OLD_NAMES = [
    "content_metadata",
    "content_generation_metadata_comprehensive",
    "posted_decisions",
    "tweets",
    "outcomes",
    "tweet_metrics",
]
NEW_TABLES = {
    "content_queue": ["content_metadata", "content_generation_metadata_comprehensive"],
    "posted_content": ["posted_decisions", "tweets"],
    "engagement_metrics": ["outcomes", "tweet_metrics"],
}
# What the wrapper needs through the API (the `dualshift` schema): nothing else may open up.
API_ALLOWANCES = {
    "dualshift.flags": frozenset({"SELECT"}),
    "dualshift.failed_writes": frozenset({"INSERT"}),
    "dualshift.shadow_mismatches": frozenset({"INSERT"}),
}


@dataclass
class Step:
    command: str
    exit_code: int
    output: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def line(self) -> str:
        tail = self.output.strip().splitlines()[-1:] if self.output.strip() else []
        return f"`{self.command}` exited {self.exit_code}" + (f": {tail[0][:300]}" if tail else "")


def migrate(dsn: str, *args: str, env: dict[str, str] | None = None, plan: Path = PLAN, timeout: float = 300) -> Step:
    """`dualshift migrate --dsn … --plan … ARGS` in its own process."""
    command = [str(DUALSHIFT), "migrate", "--dsn", dsn, "--plan", str(plan), *args]
    environment = dict(os.environ)
    environment.pop("DUALSHIFT_FAULT", None)  # armed only where a test asks for it
    environment.update(env or {})
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    return Step(" ".join(args), done.returncode, done.stdout + done.stderr, time.monotonic() - started)


def migrate_here(dsn: str, *args: str, plan: Path = PLAN) -> Step:
    """The same command in this process (faster; no fault can fire: DUALSHIFT_FAULT is never set here)."""
    from typer.testing import CliRunner

    from dualshift.cli import app

    started = time.monotonic()
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(plan), *args])
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += f"\n{type(result.exception).__name__}: {result.exception}"
    return Step(" ".join(args), result.exit_code, output, time.monotonic() - started)


def through_cleanup(backup_dir: Path) -> list[tuple[str, ...]]:
    """The phases from nothing to cleaned, as the README runs them."""
    return [
        ("create",),
        ("backfill", "--sync", "triggers"),
        ("verify",),
        ("switch-reads", "100"),
        ("cleanup", "--backup-dir", str(backup_dir)),
    ]


def run_in_turn(dsn: str, phases: list[tuple[str, ...]], steps: list[Step]) -> None:
    """Each phase in this process, appended to `steps`; the first that fails stops the test with them all."""
    for args in phases:
        steps.append(migrate_here(dsn, *args))
        assert steps[-1].ok, "\n".join(s.line() for s in steps)


def _create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        conn.execute(statement)
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)


def _drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def _database(admin_dsn: str, name: str, template: str | None = None) -> Iterator[str]:
    """A new database of that name (a copy of `template` if given), dropped on the way out."""
    dsn = _create_database(admin_dsn, name, template)
    try:
        yield dsn
    finally:
        _drop_database(admin_dsn, name)


@contextmanager
def _loaded(admin_dsn: str, name: str, rows: int, dirt: tuple[str, ...], clean: bool) -> Iterator[str]:
    """A new database of that name holding the fixture (with the named dirt, then cleaned if asked)."""
    with _database(admin_dsn, name) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_supabase_data(conn, rows, dirt)
            if clean:
                clean_dirt(conn)
        yield dsn


@contextmanager
def template_database(
    admin_dsn: str, rows: int = SEED_ROWS, dirt: tuple[str, ...] = (), clean: bool = False
) -> Iterator[str]:
    """A loaded fixture database used only as a template (copies are fast); yields its name."""
    name = f"supafix_tmpl_{uuid.uuid4().hex[:10]}"
    with _loaded(admin_dsn, name, rows, dirt, clean):
        yield name


@contextmanager
def copy_of(admin_dsn: str, template: str, prefix: str = "supafix") -> Iterator[str]:
    with _database(admin_dsn, f"{prefix}_{uuid.uuid4().hex[:10]}", template) as dsn:
        yield dsn


@contextmanager
def loaded_database(
    admin_dsn: str, rows: int = SEED_ROWS, dirt: tuple[str, ...] = (), clean: bool = False
) -> Iterator[str]:
    """A fresh database holding the fixture (with the named dirt, then cleaned if asked)."""
    with _loaded(admin_dsn, f"supafix_{uuid.uuid4().hex[:10]}", rows, dirt, clean) as dsn:
        yield dsn


# ─── Hosted Supabase: the executor is `postgres` that is not superuser ─────────────────────────


@dataclass(frozen=True)
class Hosted:
    """Hosted Supabase's roles, per test: `executor` plays its `postgres` (NOSUPERUSER, CREATEROLE, and
    BYPASSRLS as hosted Supabase has it, or NOBYPASSRLS, the stricter case), owner of the database, of
    `public` and of everything in it; `auth_admin` plays supabase_auth_admin, owner of schema `auth`, on
    which the executor has USAGE WITH GRANT OPTION (and, stricter than hosted, no membership in it)."""

    executor: str
    auth_admin: str
    bypassrls: bool

    def dsn(self, dsn: str) -> str:
        return psycopg.conninfo.make_conninfo(dsn, user=self.executor)


@contextmanager
def hosted_roles(admin_dsn: str, bypassrls: bool = False) -> Iterator[Hosted]:
    suffix = uuid.uuid4().hex[:8]
    roles = Hosted(f"ds_hosted_pg_{suffix}", f"ds_hosted_auth_{suffix}", bypassrls)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER CREATEROLE {}").format(
                sql.Identifier(roles.executor), sql.SQL("BYPASSRLS" if bypassrls else "NOBYPASSRLS")
            )
        )
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER").format(sql.Identifier(roles.auth_admin)))
    try:
        yield roles
    finally:  # the databases are gone by now, and what the roles held in them
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            for role in (roles.executor, roles.auth_admin):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# What hosted Supabase's `postgres` owns in a project: every object of `public` the migrations made.
HAND_OVER = """
DO $hand$
DECLARE
  item record;
BEGIN
  FOR item IN
    SELECT c.oid::regclass AS name, c.relkind FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
  LOOP
    EXECUTE format(
      CASE item.relkind WHEN 'v' THEN 'ALTER VIEW %s OWNER TO %I' WHEN 'm' THEN 'ALTER MATERIALIZED VIEW %s OWNER TO %I'
      ELSE 'ALTER TABLE %s OWNER TO %I' END, item.name, {executor});
  END LOOP;
  FOR item IN
    SELECT c.oid::regclass AS name FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
  LOOP
    EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', item.name, {executor});
  END LOOP;
  FOR item IN SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'public'::regnamespace
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', item.name, {executor});
  END LOOP;
  FOR item IN
    SELECT t.oid::regtype AS name FROM pg_catalog.pg_type t
    WHERE t.typnamespace = 'public'::regnamespace AND t.typtype = 'e'
  LOOP
    EXECUTE format('ALTER TYPE %s OWNER TO %I', item.name, {executor});
  END LOOP;
  FOR item IN SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'auth'::regnamespace
  LOOP
    EXECUTE format('ALTER ROUTINE %s OWNER TO %I', item.name, {auth_admin});
  END LOOP;
END
$hand$;
ALTER SCHEMA public OWNER TO {executor_id};
ALTER SCHEMA auth OWNER TO {auth_admin_id};
GRANT USAGE ON SCHEMA auth TO {executor_id} WITH GRANT OPTION;
ALTER PUBLICATION supabase_realtime OWNER TO {executor_id};
ALTER DEFAULT PRIVILEGES FOR ROLE {executor_id} IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {executor_id} IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE {executor_id} IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""


def hand_to_hosted_roles(conn: psycopg.Connection, roles: Hosted) -> None:
    """Make a fixture database (loaded by the superuser) look as hosted Supabase's: `postgres` owns `public`
    and what is in it and sets its default privileges, supabase_auth_admin owns `auth`."""
    database = conn.execute("SELECT current_database()").fetchone()[0]
    conn.execute(
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), sql.Identifier(roles.executor))
    )
    conn.execute(
        sql.SQL(HAND_OVER).format(
            executor=sql.Literal(roles.executor),
            auth_admin=sql.Literal(roles.auth_admin),
            executor_id=sql.Identifier(roles.executor),
            auth_admin_id=sql.Identifier(roles.auth_admin),
        )
    )


# ─── The story: a cleaned Supabase database migrated and rolled back under writers ─────────────

WRITES_THROUGH_VIEWS_S = 2.0


@dataclass
class Run:
    """What one migration run did and what the ledger found at each point."""

    steps: list[Step] = field(default_factory=list)
    findings: dict[str, dict[str, lg.Finding]] = field(default_factory=dict)
    privileges_gained: dict[str, list[str]] = field(default_factory=dict)
    count_differences: dict[str, list[str]] = field(default_factory=dict)
    dependents: dict[str, list[str]] = field(default_factory=dict)  # point → what of the rest of the schema broke
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger: lg.Ledger = field(default_factory=lg.Ledger)
    writer_crashes: list[str] = field(default_factory=list)
    executor: dict[str, Any] = field(default_factory=dict)  # who ran `migrate`, as the database saw it
    report: Callable[[str], None] = field(default=lambda line: None, repr=False)

    def step(self, dsn: str, *args: str) -> bool:
        """Run a phase; a failed one is re-run (twice at most), as an operator would; failures stay on record."""
        self.ledger.during = args[0]
        self.report(f"{' '.join(args)} …")
        for _ in range(3):
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
            "dependents": self.dependents,
            "writer_crashes": self.writer_crashes,
        }


def run_supabase_migration(
    admin_dsn: str,
    rows: int = SEED_ROWS,
    per_kind: int = 1,
    backup_dir: Path | None = None,
    report: Callable[[str], None] = lambda line: None,
    hosted: Hosted | None = None,
) -> Run:
    """The dirty fixture, cleaned, migrated and rolled back under writers; the ledger's findings.

    With `hosted`, the database is built as hosted Supabase's and the executor connects as its `postgres`
    that is not superuser (the writers and the judge stay the local superuser and the API roles)."""
    run = Run(report=report)
    with (
        template_database(admin_dsn, rows, DIRT_KINDS, clean=True) as template,
        copy_of(admin_dsn, template) as dsn,
        copy_of(admin_dsn, template, "supafix_ref") as ref_dsn,
    ):
        if hosted:
            with psycopg.connect(dsn, autocommit=True) as conn:
                hand_to_hosted_roles(conn, hosted)
            with psycopg.connect(ref_dsn, autocommit=True) as conn:
                hand_to_hosted_roles(conn, hosted)
        executor_dsn = hosted.dsn(dsn) if hosted else dsn
        run.executor = executor_as_seen(executor_dsn)
        _migrate_under_writers(run, dsn, ref_dsn, rows, per_kind, backup_dir, executor_dsn)
    return run


EXECUTOR_AS_SEEN = """
SELECT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole,
  pg_catalog.pg_get_userbyid(a.nspowner) AS auth_owner,
  pg_catalog.has_schema_privilege(r.rolname, 'auth', 'USAGE WITH GRANT OPTION') AS auth_usage_grantable,
  (SELECT pg_catalog.array_agg(DISTINCT pg_catalog.pg_get_userbyid(c.relowner)) FROM pg_catalog.pg_class c
   WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v')) AS public_owners
FROM pg_catalog.pg_roles r, pg_catalog.pg_namespace a
WHERE r.rolname = current_user AND a.nspname = 'auth'
"""


def executor_as_seen(dsn: str) -> dict[str, Any]:
    """The role `migrate` connects as, its attributes, and who owns what it migrates."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(EXECUTOR_AS_SEEN)
        row = cursor.fetchone()
        return dict(zip([c.name for c in cursor.description], row, strict=True))


def _migrate_under_writers(
    run: Run,
    dsn: str,
    ref_dsn: str,
    rows: int,
    per_kind: int,
    backup_dir: Path | None,
    executor_dsn: str | None = None,
) -> None:
    """`dsn` is the writers' and the judge's; `executor_dsn` (default `dsn`) is the `migrate` commands'."""
    executor = executor_dsn or dsn
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
                run.dependents[point] = dependent_problems(conn, checker)
                if counts:
                    reference.catch_up()
                    expected = lg.visible_counts(reference.conn, OLD_NAMES, who)
                    actual = lg.visible_counts(conn, OLD_NAMES, who)
                    run.counts[point] = {"expected": expected, "actual": actual}
                    run.count_differences[point] = lg.count_differences(expected, actual)

        if not run.step(executor, "create"):
            return
        if not run.step(executor, "backfill", "--sync", "triggers", "--batch-size", "250"):
            return
        measure("after backfill")
        if not run.step(executor, "verify"):
            with team.held():  # a verdict taken while writers write may race them; ask once more at rest
                if not run.step(executor, "verify"):
                    return
        if not run.step(executor, "switch-reads", "100"):
            return
        backup = ["--backup-dir", str(backup_dir)] if backup_dir else []
        if not run.step(executor, "cleanup", *backup):
            return
        measure("after cleanup", old="views", counts=True)
        time.sleep(WRITES_THROUGH_VIEWS_S)  # the application keeps writing through the old names
        measure("writes through the views", old="views", counts=True)
        if not run.step(executor, "rollback"):
            return
        time.sleep(0.5)
        measure("after rollback", new=False, counts=True)
    finally:
        run.writer_crashes = team.finish()
        reference.close()
        conn.close()


# The rest of the schema that depends on the old tables (fixtures/supabase/schema.sql).
DEPENDENT_VIEWS = {"owner_content": "content_metadata", "post_engagement": "posted_decisions"}
REALTIME = ("content_metadata", "posted_decisions", "tweets")  # the old tables in supabase_realtime


def _relkind(conn: psycopg.Connection, name: str) -> str | None:
    row = conn.execute(
        "SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relname = %s",
        (name,),
    ).fetchone()
    return None if row is None else row[0]


def dependent_problems(conn: psycopg.Connection, checker: lg.Checker) -> list[str]:
    """What of the schema around the old tables no longer works: views over them reading stale rows,
    the foreign key from replies pointing elsewhere than the live rows, orphaned replies, and the
    realtime publication missing the table that now serves an old name."""
    problems = []
    for view, old in DEPENDENT_VIEWS.items():
        shown = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", view))).fetchone()[0]
        expected = len(checker.expected(checker.spec(old)))
        if shown != expected:
            problems.append(f"view {view} shows {shown} rows, {old} holds {expected}")
    target = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_constraint k"
        " JOIN pg_catalog.pg_class c ON c.oid = k.confrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE k.conrelid = 'public.replies'::regclass AND k.contype = 'f'"
    ).fetchone()
    live = "public.posted_decisions" if _relkind(conn, "posted_decisions") == "r" else "public.posted_content"
    if target is None or target[0] != live:
        problems.append(f"replies' foreign key references {target[0] if target else 'nothing'}, not {live}")
    orphans = conn.execute(
        "SELECT count(*) FROM public.replies r WHERE NOT EXISTS"
        " (SELECT 1 FROM public.posted_decisions p WHERE p.decision_id = r.decision_id)"
    ).fetchone()[0]
    if orphans:
        problems.append(f"{orphans} replies whose decision posted_decisions no longer shows")
    published = {
        row[0]
        for row in conn.execute(
            "SELECT tablename FROM pg_catalog.pg_publication_tables"
            " WHERE pubname = 'supabase_realtime' AND schemaname = 'public'"
        )
    }
    for old in REALTIME:
        serving = old if _relkind(conn, old) == "r" else next(t for t, s in NEW_TABLES.items() if old in s)
        if serving not in published:
            problems.append(f"supabase_realtime does not publish {serving}, which serves {old}")
    return problems


def _allowed(gain: str) -> bool:
    """`role gained X on dualshift.flags`: the wrapper's own needs are not a widening."""
    role_part, _, relation = gain.rpartition(" on ")
    privileges = set(role_part.split(" gained ", 1)[1].split(", "))
    return relation in API_ALLOWANCES and privileges <= API_ALLOWANCES[relation]


AFTER_CLEANUP = ("after cleanup", "writes through the views")
DIRT_CASES = {
    "null_key": ("tweet_metrics", ("null",)),
    "duplicate_key": ("tweets", ("duplicate", "not unique", "twice", "more than one")),
    "lossy_cast": ("content_metadata", ("round", "lossy", "cast", "precision", "survive")),
}


def _none_found(run: Run, points: tuple[str, ...], prefix: str, kinds: tuple[str, ...]) -> None:
    """Assert that, at each point, the relations named `prefix…` had none of these kinds of rows."""
    for point in points:
        per = run.findings.get(point)
        assert per is not None, f"never measured {point}: " + "; ".join(s.line() for s in run.steps[-1:])
        chosen = {k: v for k, v in per.items() if k.startswith(prefix)}
        assert chosen, f"{point}: no relation named {prefix}… was measured"
        counts = {kind: lg.total(chosen, kind) for kind in kinds}
        if any(counts.values()):
            sample = next((s for f in chosen.values() for s in f.samples if s.split(":")[0] in kinds), "")
            unreadable = next((f"{k}: {f.unreadable}" for k, f in chosen.items() if f.unreadable), "")
            figures = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
            raise AssertionError(f"{point}: {figures} ({unreadable or sample})")


# name → (the issue item it proves, the check: raises AssertionError naming what is wrong)
CHECKS: dict[str, tuple[str | None, Callable[[Run], None]]] = {}


def check(name: str, reason: str | None = None) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    def register(function: Callable[[Run], None]) -> Callable[[Run], None]:
        CHECKS[name] = (reason, function)
        return function

    return register


def verdicts(run: Run) -> dict[str, str | None]:
    """Each check's verdict on a run: None when it holds, else what is wrong (first line)."""
    found: dict[str, str | None] = {}
    for name, (_, function) in CHECKS.items():
        try:
            function(run)
            found[name] = None
        except AssertionError as exc:
            found[name] = (str(exc).strip().splitlines() or ["failed"])[0][:300]
    return found


def refusals(admin_dsn: str, rows: int = SEED_ROWS) -> dict[str, list[Step]]:
    """Each kind of dirt alone in a fresh database, taken through create, backfill and verify until
    a phase refuses; the steps run, per kind."""
    return {kind: dirt_steps(admin_dsn, kind, rows) for kind in DIRT_KINDS}


def dirt_steps(admin_dsn: str, kind: str, rows: int = SEED_ROWS) -> list[Step]:
    """That kind of dirt alone in a fresh database, taken through create, backfill and verify until a
    phase refuses; the steps run."""
    steps: list[Step] = []
    with loaded_database(admin_dsn, rows, dirt=(kind,)) as dsn:
        for args in (("create",), ("backfill", "--sync", "triggers"), ("verify",)):
            steps.append(migrate_here(dsn, *args))
            if not steps[-1].ok:
                break
    return steps


def refusal_problem(kind: str, steps: list[Step]) -> str | None:
    """None when the dirt was refused with one clear message naming the table and the problem."""
    table, words = DIRT_CASES[kind]
    refused = [s for s in steps if not s.ok]
    if not refused:
        return f"the {kind} rows were migrated and verified: " + "; ".join(s.line() for s in steps)
    message = refused[0].output
    if "Traceback" in message:
        return f"the refusal is a traceback: {message.strip().splitlines()[-1]}"
    if table not in message or not any(w in message.lower() for w in words):
        return f"the refusal does not name {table} and the problem: {message.strip()[:300]}"
    return None


@check("every phase succeeds", "issue 11: the executor fails somewhere on a Supabase schema (see the steps)")
def _phases(run: Run) -> None:
    failed = [s.line() for s in run.steps if not s.ok]
    assert run.reached("rollback") and not failed, "; ".join(failed) or "the run stopped before rollback"


@check("old tables untouched while syncing")
def _old_during_sync(run: Run) -> None:
    _none_found(run, ("after backfill",), "old:", ("lost", "wrong", "extra"))


@check("new tables hold every row after backfill")
def _new_rows(run: Run) -> None:
    _none_found(run, ("after backfill",), "new:", ("lost", "extra"))


@check("new tables hold the right values after backfill")
def _new_values(run: Run) -> None:
    _none_found(run, ("after backfill",), "new:", ("wrong",))


@check("no row lost through the views after cleanup", "issue 11 'The old path must never break' / cleanup window")
def _views_rows(run: Run) -> None:
    _none_found(run, AFTER_CLEANUP, "old:", ("lost", "extra"))


@check("views show the old values in the old types", "issue 11: views under old names look like the old tables")
def _views_values(run: Run) -> None:
    _none_found(run, AFTER_CLEANUP, "old:", ("wrong",))


@check("new tables exact after cleanup", "issue 11: cleanup (dependent objects, window) and view writes")
def _new_after_cleanup(run: Run) -> None:
    _none_found(run, AFTER_CLEANUP, "new:", ("lost", "wrong", "extra"))


@check("rollback after cleanup is exact", "issue 11 'Rollback after cleanup loses nothing' / 10.3")
def _rollback_exact(run: Run) -> None:
    _none_found(run, ("after rollback",), "old:", ("lost", "wrong", "extra"))


@check("no application write failed", "issue 11: sync triggers and view writes fail application writes")
def _no_failed_writes(run: Run) -> None:
    assert not run.writer_crashes, run.writer_crashes
    assert run.ledger.writes, "the writers committed nothing"
    first = run.ledger.failures[0] if run.ledger.failures else None
    assert first is None, (
        f"{len(run.ledger.failures)} application writes failed, by step {run.ledger.summary()['failed_during']};"
        f" first, during {first.during}: {first.table} {first.op}: {first.error}"
    )


@check("no role gains a privilege", "issue 11 'Access never widens': default privileges, dualshift schema")
def _no_privilege_gained(run: Run) -> None:
    assert run.privileges_gained, "no point was measured"
    found = [f"{point}: {g}" for point, gains in run.privileges_gained.items() for g in gains]
    assert not found, f"{len(found)} gains, e.g. {found[0] if found else ''}"


@check(
    "the rest of the schema keeps working", "issue 11 'The rest of the schema keeps working' (helpers views, cleanup)"
)
def _dependents(run: Run) -> None:
    measured = [p for p in ("after cleanup", "writes through the views", "after rollback") if p in run.dependents]
    assert len(measured) == 3, f"measured only at {measured}: " + "; ".join(s.line() for s in run.steps[-1:])
    found = [f"{p}: {d}" for p in measured for d in run.dependents[p]]
    assert not found, f"{len(found)} problems, e.g. {found[0] if found else ''}"


@check("each role sees through each old name what it saw", "issue 11 'Each old name shows its own rows' / RLS copied")
def _counts(run: Run) -> None:
    measured = [
        p for p in ("after cleanup", "writes through the views", "after rollback") if p in run.count_differences
    ]
    assert len(measured) == 3, f"measured only at {measured}: " + "; ".join(s.line() for s in run.steps[-1:])
    found = [f"{p}: {d}" for p in measured for d in run.count_differences[p]]
    assert not found, f"{len(found)} (viewer, old name) counts differ, e.g. {found[0] if found else ''}"
