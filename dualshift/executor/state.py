"""The executor's own schema in the target database: phase state, audit log, checkpoints, flags, failures."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor.connection import ExecutorError, actor

SCHEMA = "dualshift"
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

DDL = """
CREATE SCHEMA IF NOT EXISTS dualshift;
CREATE TABLE IF NOT EXISTS dualshift.state (
  plan text PRIMARY KEY, phase text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS dualshift.audit (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), actor text NOT NULL, plan text NOT NULL,
  phase text NOT NULL, action text NOT NULL, result text NOT NULL, detail jsonb, statements text);
CREATE TABLE IF NOT EXISTS dualshift.checkpoints (
  new_table text NOT NULL, source text NOT NULL, last_key jsonb, rows_copied bigint NOT NULL DEFAULT 0,
  pass_started_at timestamptz NOT NULL DEFAULT now(), done boolean NOT NULL DEFAULT false,
  PRIMARY KEY (new_table, source));
CREATE TABLE IF NOT EXISTS dualshift.verify_runs (
  id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), plan text NOT NULL, passed boolean NOT NULL,
  report jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS dualshift.flags (
  scope text NOT NULL DEFAULT '*', name text NOT NULL, value jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (scope, name));
CREATE TABLE IF NOT EXISTS dualshift.failed_writes (
  id bigserial PRIMARY KEY, recorded_at timestamptz NOT NULL DEFAULT now(), old_table text NOT NULL,
  new_table text NOT NULL, operation text NOT NULL, payload jsonb, filters jsonb, call_site text, error text,
  replayed_at timestamptz);
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    conn.execute(DDL)


def current_phase(conn: psycopg.Connection, plan_key: str) -> str:
    exists = conn.execute("SELECT to_regclass('dualshift.state')").fetchone()[0]
    if exists is None:
        return "none"
    row = conn.execute("SELECT phase FROM dualshift.state WHERE plan = %s", (plan_key,)).fetchone()
    return row[0] if row else "none"


def set_phase(conn: psycopg.Connection, plan_key: str, phase: str) -> None:
    conn.execute(
        "INSERT INTO dualshift.state (plan, phase) VALUES (%s, %s)"
        " ON CONFLICT (plan) DO UPDATE SET phase = EXCLUDED.phase, updated_at = now()",
        (plan_key, phase),
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
        "INSERT INTO dualshift.audit (actor, plan, phase, action, result, detail, statements)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (actor(), plan_key, phase, action, result, json.dumps(detail, default=str), ";\n".join(statements)),
    )


def set_flag(conn: psycopg.Connection, name: str, value: Any, scope: str = "*") -> None:
    conn.execute(
        "INSERT INTO dualshift.flags (scope, name, value) VALUES (%s, %s, %s)"
        " ON CONFLICT (scope, name) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        (scope, name, json.dumps(value)),
    )


def flags(conn: psycopg.Connection) -> dict[tuple[str, str], Any]:
    if conn.execute("SELECT to_regclass('dualshift.flags')").fetchone()[0] is None:
        return {}
    return {(s, n): v for s, n, v in conn.execute("SELECT scope, name, value FROM dualshift.flags ORDER BY 1, 2")}


def last_verify(conn: psycopg.Connection, plan_key: str) -> dict | None:
    if conn.execute("SELECT to_regclass('dualshift.verify_runs')").fetchone()[0] is None:
        return None
    row = conn.execute(
        "SELECT passed, report, at FROM dualshift.verify_runs WHERE plan = %s ORDER BY id DESC LIMIT 1", (plan_key,)
    ).fetchone()
    return None if row is None else {"passed": row[0], "report": row[1], "at": row[2]}


def ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)
