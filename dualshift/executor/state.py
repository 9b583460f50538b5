"""The executor's own tables in the target database, in two schemas.

`dualshift_private` (names.PRIVATE_SCHEMA): phase state, audit log, checkpoints, verify runs; never
granted to any application role. `dualshift` (names.API_SCHEMA): only what the application wrapper
needs through the Supabase API: `flags` (SELECT), `failed_writes` and `shadow_mismatches` (INSERT).

The state row of a migration is keyed by the plan's `name` and carries a hash of the plan's content;
a phase writes it (`set_phase`) in the same transaction as its last effect.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import replace
from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor.connection import ExecutorError, actor
from dualshift.executor.names import API_SCHEMA, PRIVATE_SCHEMA
from dualshift.plan import Plan

PHASES = ("none", "created", "backfilled", "verified", "switched", "cleaned", "finalized")
NEXT_COMMAND = {
    "none": "dualshift migrate create",
    "created": "dualshift migrate backfill",
    "backfilled": "dualshift migrate verify",
    "verified": "dualshift migrate switch-reads PERCENT",
    "switched": "dualshift migrate cleanup",
    "cleaned": "dualshift migrate finalize (once sure; until then dualshift migrate rollback goes back)",
    "finalized": "(done: the migration was finalized)",
}
APPLICATION_ROLES = ("anon", "authenticated", "service_role")

PRIVATE_DDL = """
CREATE SCHEMA IF NOT EXISTS dualshift_private;
CREATE TABLE IF NOT EXISTS dualshift_private.state (
  plan text PRIMARY KEY, phase text NOT NULL, plan_hash text, plan_path text,
  updated_at timestamptz NOT NULL DEFAULT pg_catalog.now());
CREATE TABLE IF NOT EXISTS dualshift_private.audit (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT pg_catalog.now(), actor text NOT NULL,
  plan text NOT NULL, phase text NOT NULL, action text NOT NULL, result text NOT NULL, detail jsonb, statements text);
CREATE TABLE IF NOT EXISTS dualshift_private.checkpoints (
  new_table text NOT NULL, source text NOT NULL, last_key jsonb, rows_copied bigint NOT NULL DEFAULT 0,
  pass_started_at timestamptz NOT NULL DEFAULT pg_catalog.now(), done boolean NOT NULL DEFAULT false,
  PRIMARY KEY (new_table, source));
CREATE TABLE IF NOT EXISTS dualshift_private.verify_runs (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT pg_catalog.now(), plan text NOT NULL,
  passed boolean NOT NULL, report jsonb NOT NULL);
"""
API_DDL = """
CREATE SCHEMA IF NOT EXISTS dualshift;
CREATE TABLE IF NOT EXISTS dualshift.flags (
  scope text NOT NULL DEFAULT '*', name text NOT NULL, value jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(), PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS dualshift.failed_writes (
  id bigserial PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(), old_table text NOT NULL,
  new_table text NOT NULL, operation text NOT NULL, payload jsonb, filters jsonb, call_site text, error text,
  replayed_at timestamptz);
CREATE TABLE IF NOT EXISTS dualshift.shadow_mismatches (
  id bigserial PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(), old_table text NOT NULL,
  new_table text NOT NULL, key jsonb, columns text[] NOT NULL DEFAULT '{}', missing_from text, served_from text,
  call_site text);
"""
OWN_TABLES = (
    (PRIVATE_SCHEMA, "state"),
    (PRIVATE_SCHEMA, "audit"),
    (PRIVATE_SCHEMA, "checkpoints"),
    (PRIVATE_SCHEMA, "verify_runs"),
    (API_SCHEMA, "flags"),
    (API_SCHEMA, "failed_writes"),
    (API_SCHEMA, "shadow_mismatches"),
)


def _exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return conn.execute("SELECT pg_catalog.to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()[0] is not None


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create both schemas and their tables (once), with the narrowest access; see `restrict_access`."""
    if all(_exists(conn, schema, table) for schema, table in OWN_TABLES):
        return
    with conn.transaction():
        conn.execute("CREATE SCHEMA IF NOT EXISTS dualshift_private")
        _move_out_of_the_api_schema(conn)
        conn.execute(PRIVATE_DDL)
        conn.execute(API_DDL)
        restrict_access(conn)


def _move_out_of_the_api_schema(conn: psycopg.Connection) -> None:
    """A database set up by an older dualshift kept state, audit, checkpoints and verify runs in the
    exposed `dualshift` schema: move them to the private one (their rows kept)."""
    for schema, table in OWN_TABLES:
        if schema == PRIVATE_SCHEMA and _exists(conn, API_SCHEMA, table) and not _exists(conn, schema, table):
            conn.execute(
                sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                    sql.Identifier(API_SCHEMA, table), sql.Identifier(schema)
                )
            )
    conn.execute("ALTER TABLE IF EXISTS dualshift_private.state ADD COLUMN IF NOT EXISTS plan_hash text")
    conn.execute("ALTER TABLE IF EXISTS dualshift_private.state ADD COLUMN IF NOT EXISTS plan_path text")


def restrict_access(conn: psycopg.Connection) -> None:
    for statement in access_statements(conn):
        conn.execute(statement)


def access_statements(conn: psycopg.Connection) -> list[sql.Composable]:
    """Nothing for PUBLIC on either schema; whatever default privileges (Supabase grants ALL on new
    tables to anon, authenticated and service_role) gave on dualshift's own tables and sequences is
    revoked; then, where the Supabase roles exist, USAGE on `dualshift`, SELECT on `dualshift.flags`
    and INSERT on `dualshift.failed_writes` and `dualshift.shadow_mismatches` (with their sequences). Nothing on
    `dualshift_private`."""
    statements = [
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema))
        for schema in (API_SCHEMA, PRIVATE_SCHEMA)
    ]
    granted = conn.execute(
        "SELECT DISTINCT n.nspname, c.relname, c.relkind, acl.grantee"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,"
        " LATERAL pg_catalog.aclexplode(c.relacl) acl"
        " WHERE n.nspname = ANY(%s) AND acl.grantee <> c.relowner",
        ([API_SCHEMA, PRIVATE_SCHEMA],),
    ).fetchall()
    for schema, name, kind, grantee in granted:
        role = sql.SQL("PUBLIC") if grantee == 0 else sql.Identifier(_role_name(conn, grantee))
        what = sql.SQL("SEQUENCE" if kind == "S" else "TABLE")
        statements.append(sql.SQL("REVOKE ALL ON {} {} FROM {}").format(what, sql.Identifier(schema, name), role))
    present = [
        r
        for (r,) in conn.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s) ORDER BY 1", (list(APPLICATION_ROLES),)
        )
    ]
    if not present:
        return statements
    roles = sql.SQL(", ").join(map(sql.Identifier, present))
    statements += [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(API_SCHEMA), roles),
        sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(sql.Identifier(API_SCHEMA, "flags"), roles),
    ]
    for table in ("failed_writes", "shadow_mismatches"):  # what the wrapper records: insert only
        sequence = conn.execute(
            "SELECT pg_catalog.pg_get_serial_sequence(%s, 'id')", (f"{API_SCHEMA}.{table}",)
        ).fetchone()[0]
        statements.append(sql.SQL("GRANT INSERT ON TABLE {} TO {}").format(sql.Identifier(API_SCHEMA, table), roles))
        statements.append(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.SQL(sequence), roles))
    return statements


def own_schema_statements(conn: psycopg.Connection) -> list[sql.Composable]:
    """What `ensure_schema` made, as idempotent statements (for `--emit-migrations`: a database built
    from the migration files needs `dualshift.flags`, `failed_writes` and the private schema too)."""
    ddl = [sql.SQL(part.strip()) for part in (PRIVATE_DDL + API_DDL).split(";") if part.strip()]
    return ddl + access_statements(conn)


def _role_name(conn: psycopg.Connection, oid: int) -> str:
    return conn.execute("SELECT rolname FROM pg_catalog.pg_roles WHERE oid = %s", (oid,)).fetchone()[0]


# ── state ─────────────────────────────────────────────────────────────────────────────────────


def plan_hash(plan: Plan) -> str:
    """A hash of what the plan says: its TOML parsed (comments and layout do not count), or, for a
    plan not read from a file, the parsed plan itself."""
    try:
        with open(plan.path, "rb") as handle:
            canonical = json.dumps(tomllib.load(handle), sort_keys=True, default=str)
    except (OSError, tomllib.TOMLDecodeError):
        canonical = repr(replace(plan, path=""))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def state_row(conn: psycopg.Connection, plan_key: str) -> tuple[str, str | None] | None:
    """(phase, plan hash) of this migration, or None when nothing was recorded."""
    if not _exists(conn, PRIVATE_SCHEMA, "state"):
        return None
    row = conn.execute("SELECT phase, plan_hash FROM dualshift_private.state WHERE plan = %s", (plan_key,)).fetchone()
    return None if row is None else (row[0], row[1])


def current_phase(conn: psycopg.Connection, plan_key: str) -> str:
    row = state_row(conn, plan_key)
    return "none" if row is None else row[0]


def set_phase(
    conn: psycopg.Connection, plan_key: str, phase: str, plan_hash: str | None = None, plan_path: str | None = None
) -> None:
    """Record the phase (and, when given, the plan's hash and path). Call it inside the transaction
    that makes the phase's last effect, so that the state row never disagrees with the catalog."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    conn.execute(
        "INSERT INTO dualshift_private.state (plan, phase, plan_hash, plan_path) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (plan) DO UPDATE SET phase = EXCLUDED.phase,"
        " plan_hash = coalesce(EXCLUDED.plan_hash, dualshift_private.state.plan_hash),"
        " plan_path = coalesce(EXCLUDED.plan_path, dualshift_private.state.plan_path),"
        " updated_at = pg_catalog.now()",
        (plan_key, phase, plan_hash, plan_path),
    )


def require_phase(current: str, allowed: tuple[str, ...], phase: str) -> None:
    if current not in allowed:
        raise ExecutorError(
            f"cannot run {phase}: the migration is at '{current}', and {phase} needs "
            f"{' or '.join(repr(a) for a in allowed)}; next step: {NEXT_COMMAND[current]}"
        )


def audit(
    conn: psycopg.Connection, plan_key: str, phase: str, action: str, result: str, detail: Any, statements: list[str]
) -> None:
    conn.execute(
        "INSERT INTO dualshift_private.audit (actor, plan, phase, action, result, detail, statements)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (actor(), plan_key, phase, action, result, json.dumps(detail, default=str), ";\n".join(statements)),
    )


# ── flags ─────────────────────────────────────────────────────────────────────────────────────

FLAG_NAMES = ("dual_write", "read_from_new_percent", "shadow_reads")


def set_flag(conn: psycopg.Connection, name: str, value: Any, scope: str = "*") -> None:
    conn.execute(
        "INSERT INTO dualshift.flags (scope, name, value) VALUES (%s, %s, %s)"
        " ON CONFLICT (scope, name) DO UPDATE SET value = EXCLUDED.value, updated_at = pg_catalog.now()",
        (scope, name, json.dumps(value)),
    )


def flags(conn: psycopg.Connection) -> dict[tuple[str, str], Any]:
    if not _exists(conn, API_SCHEMA, "flags"):
        return {}
    return {(s, n): v for s, n, v in conn.execute("SELECT scope, name, value FROM dualshift.flags ORDER BY 1, 2")}


def check_read_percent(plan: Plan, percent: Any, table: str | None) -> None:
    """What switch-reads (and `flags --set …read_from_new_percent=…`) accepts, before any SQL."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ExecutorError(f"read_from_new_percent must be a whole number from 0 to 100, not {json.dumps(percent)}")
    if table not in (None, "*") and plan.table(table) is None:
        raise ExecutorError(
            f"{table} is not a new table of plan {plan.name}; choose one of {', '.join(t.name for t in plan.tables)}"
        )


def last_verify(conn: psycopg.Connection, plan_key: str) -> dict | None:
    if not _exists(conn, PRIVATE_SCHEMA, "verify_runs"):
        return None
    row = conn.execute(
        "SELECT passed, report, at FROM dualshift_private.verify_runs WHERE plan = %s ORDER BY id DESC LIMIT 1",
        (plan_key,),
    ).fetchone()
    return None if row is None else {"passed": row[0], "report": row[1], "at": row[2]}


def ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)
