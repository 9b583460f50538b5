"""`--emit-migrations DIR`: the DDL a phase ran, as Supabase migration files, recorded as applied.

A Supabase team keeps its schema in `supabase/migrations/<version>_<name>.sql` and `supabase db push`
applies every file whose version `supabase_migrations.schema_migrations` lacks. So `create`, `cleanup`
and `finalize` can write what they ran there: the statements the phase's Sink executed (captured as
they ran, never generated twice), grouped by the step that ran them (`Sink.concern`), one file per
step, in the order the steps first ran. Statements that ran outside a named step (locks, NOTIFY, rows
copied, dualshift's own bookkeeping, the removal of backfill's sync triggers and verify's change
capture, which no migration file ever created) are not emitted.

Inside the phase's transaction, `stage` records each file in `supabase_migrations.schema_migrations`
(the schema and table created in the Supabase CLI's own shape when missing) and writes it as
`<file>.partial`; after the commit `publish` renames the files into place, and a failed transaction
`discard`s them. A statement that cannot run inside the CLI's per-file transaction (CONCURRENTLY)
refuses the phase before it commits.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from dualshift.executor.connection import ExecutorError

HISTORY = sql.Identifier("supabase_migrations", "schema_migrations")
# The Supabase CLI's own statements (pkg/migration/history.go), so `db push` finds the table it expects.
HISTORY_DDL = (
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY)",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[]",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text",
)
VERSION_FORMAT = "%Y%m%d%H%M%S"
VERSIONED_FILE = re.compile(r"^(\d{14})_.*\.sql$")
OUTSIDE_A_TRANSACTION = re.compile(
    r"\bCONCURRENTLY\b|^\s*(VACUUM|CREATE\s+DATABASE|DROP\s+DATABASE|ALTER\s+SYSTEM|CREATE\s+TABLESPACE)\b",
    re.IGNORECASE,
)
UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class MigrationFile:
    version: str
    name: str
    statements: tuple[str, ...]

    @property
    def filename(self) -> str:
        return f"{self.version}_{self.name}.sql"

    def text(self) -> str:
        head = f"-- {self.filename}: written by dualshift (--emit-migrations); already applied where it ran\n\n"
        return head + "".join(f"{statement};\n\n" for statement in self.statements)


def group_by_concern(ran: list[tuple[str | None, str]]) -> list[tuple[str, list[str]]]:
    """The statements of each named step, steps in the order they first ran; unnamed ones left out."""
    groups: dict[str, list[str]] = {}
    for concern, statement in ran:
        if concern is not None:
            groups.setdefault(concern, []).append(statement.strip().rstrip(";").rstrip())
    return list(groups.items())


def refuse_outside_transaction(statements: list[str]) -> None:
    for statement in statements:
        if OUTSIDE_A_TRANSACTION.search(statement):
            raise ExecutorError(
                "--emit-migrations: a statement cannot run inside a migration file's transaction"
                f" ({statement.splitlines()[0][:120]}); nothing was changed"
            )


def _latest_version(conn: psycopg.Connection, directory: Path) -> datetime | None:
    files = directory.iterdir() if directory.is_dir() else ()
    versions = [m.group(1) for p in files if (m := VERSIONED_FILE.match(p.name))]
    if conn.execute("SELECT pg_catalog.to_regclass('supabase_migrations.schema_migrations')").fetchone()[0]:
        row = conn.execute(
            sql.SQL("SELECT pg_catalog.max(version) FROM {} WHERE version ~ '^[0-9]{{14}}$'").format(HISTORY)
        ).fetchone()
        versions += [row[0]] if row[0] else []
    if not versions:
        return None
    return datetime.strptime(max(versions), VERSION_FORMAT).replace(tzinfo=UTC)


@dataclass
class Emitter:
    directory: Path
    plan_name: str
    staged: list[Path] = field(default_factory=list)  # `.partial` files of the transaction in progress

    def check(self) -> None:
        """Before the phase changes anything: the directory, or the folder it will be made in, is ours to write."""
        existing = next(p for p in (self.directory, *self.directory.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise ExecutorError(
                f"--emit-migrations {self.directory}: {existing} is not a directory; nothing was changed"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ExecutorError(f"--emit-migrations {self.directory}: {existing} is not writable; nothing was changed")

    def files(self, conn: psycopg.Connection, phase: str, ran: list[tuple[str | None, str]]) -> list[MigrationFile]:
        """One file per step, versioned from now (UTC), after every version the folder or the history has."""
        start = datetime.now(UTC).replace(microsecond=0)
        latest = _latest_version(conn, self.directory)
        if latest is not None and latest >= start:
            start = latest + timedelta(seconds=1)
        plan = UNSAFE_NAME.sub("_", self.plan_name)
        return [
            MigrationFile(
                (start + timedelta(seconds=n)).strftime(VERSION_FORMAT),
                f"dualshift_{plan}_{phase}_{concern}",
                tuple(statements),
            )
            for n, (concern, statements) in enumerate(group_by_concern(ran))
        ]

    def stage(self, conn: psycopg.Connection, phase: str, ran: list[tuple[str | None, str]]) -> list[MigrationFile]:
        """Inside the phase's transaction: each file recorded as applied and written as `.partial`."""
        self.discard()  # a retried transaction stages again
        self.recover(conn)
        refuse_outside_transaction([statement for _, statement in ran])
        files = self.files(conn, phase, ran)
        if not files:
            return files
        self.directory.mkdir(parents=True, exist_ok=True)
        for statement in HISTORY_DDL:
            conn.execute(statement)
        for migration in files:
            conn.execute(
                sql.SQL("INSERT INTO {} (version, name, statements) VALUES (%s, %s, %s)").format(HISTORY),
                (migration.version, migration.name, list(migration.statements)),
            )
            partial = self.directory / (migration.filename + ".partial")
            partial.write_text(migration.text(), encoding="utf-8")
            self.staged.append(partial)
        return files

    def publish(self) -> list[str]:
        """After the commit: the files in place. A rename that fails leaves a file recorded as applied but
        still `.partial`: said with the way out (the next staging into this folder also renames it)."""
        published = []
        staged, self.staged = self.staged, []
        for partial in staged:
            target = partial.with_name(partial.name.removesuffix(".partial"))
            try:
                partial.replace(target)
            except OSError as exc:
                left = ", ".join(str(p) for p in staged if p.exists())
                raise ExecutorError(
                    f"--emit-migrations: migrations are recorded as applied (committed), but {partial}"
                    f" could not be renamed ({exc.strerror}); rename {left} without `.partial`"
                ) from exc
            published.append(str(target))
        return published

    def recover(self, conn: psycopg.Connection) -> list[str]:
        """`.partial` files a committed phase left (a crash or failed rename after its commit), put in place:
        only those whose version the history records; any other is a transaction's that did not commit."""
        if not self.directory.is_dir():
            return []
        if not conn.execute("SELECT pg_catalog.to_regclass('supabase_migrations.schema_migrations')").fetchone()[0]:
            return []
        left = {m.group(1): p for p in self.directory.glob("*.sql.partial") if (m := VERSIONED_FILE.match(p.stem))}
        if not left:
            return []
        recorded = conn.execute(
            sql.SQL("SELECT version FROM {} WHERE version = ANY(%s)").format(HISTORY), (list(left),)
        ).fetchall()
        self.staged = [left[version] for (version,) in recorded]
        return self.publish()

    def discard(self) -> None:
        for partial in self.staged:
            partial.unlink(missing_ok=True)
        self.staged = []
