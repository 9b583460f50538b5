"""Phase `snapshot`, read-only: the whole schema as `pg_dump --schema-only` writes it (the SQL, which
restores into an empty database), and the plan's tables as JSON (what dualshift reads)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import psycopg

from dualshift.executor import cleanup
from dualshift.executor.connection import ExecutorError


def take(conn: psycopg.Connection, schemas: list[str]) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    rows = conn.execute(
        "SELECT n.nspname, c.relname, c.relrowsecurity, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname = ANY(%s) ORDER BY 1, 2",
        (schemas,),
    ).fetchall()
    for schema, name, rls, oid in rows:
        key = f"{schema}.{name}"
        columns = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)"
            " FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (oid,),
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s ORDER BY conname", (oid,)
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s ORDER BY 1",
            (schema, name),
        ).fetchall()
        policies = conn.execute(
            "SELECT policyname, cmd, roles::text[], qual, with_check FROM pg_policies"
            " WHERE schemaname = %s AND tablename = %s ORDER BY 1",
            (schema, name),
        ).fetchall()
        grants = conn.execute(
            "SELECT grantee, privilege_type FROM information_schema.role_table_grants"
            " WHERE table_schema = %s AND table_name = %s ORDER BY 1, 2",
            (schema, name),
        ).fetchall()
        count = conn.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()[0]  # names from the catalog
        tables[key] = {
            "columns": [{"name": c, "type": t, "not_null": nn, "default": d} for c, t, nn, d in columns],
            "constraints": [{"name": n, "definition": d} for n, d in constraints],
            "indexes": [{"name": n, "definition": d} for n, d in indexes],
            "row_level_security": rls,
            "policies": [{"name": p, "command": c, "roles": r, "using": q, "check": w} for p, c, r, q, w in policies],
            "grants": [{"role": r, "privilege": p} for r, p in grants],
            "rows": count,
        }
    return {"tables": tables}


def dump_command(pg_dump: str) -> list[str]:
    """pg_dump of the whole database's schema (every object, owner and grant; no row): the connection
    comes from the environment (`cleanup.pg_environment`), never from the command line."""
    return [pg_dump, "--schema-only", "--no-password", f"--lock-wait-timeout={cleanup.PG_DUMP_LOCK_WAIT_MS}"]


def write(snapshot: dict[str, Any], out_dir: Path, dsn: str) -> list[Path]:
    """The SQL by pg_dump, the JSON dualshift reads; both 0600 in a directory only we can write (0700
    when we create it). Refused, writing nothing, without pg_dump."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise ExecutorError("snapshot needs pg_dump (PostgreSQL's client tools) on PATH; nothing was written")
    directory = cleanup.private_directory(out_dir)
    sql_path = directory / "PRODUCTION_SCHEMA_SNAPSHOT.sql"
    json_path = directory / "PRODUCTION_SCHEMA_SNAPSHOT.json"
    # A run killed outright leaves its `.partial`, which run_pg_dump (O_EXCL) would refuse to reuse.
    sql_path.with_name(sql_path.name + ".partial").unlink(missing_ok=True)
    cleanup.run_pg_dump(dump_command(pg_dump), cleanup.pg_environment(dsn), sql_path)
    _write_private(json_path, json.dumps(snapshot, indent=2, default=str) + "\n")
    return [sql_path, json_path]


def _write_private(path: Path, text: str) -> None:
    """`text` into `path`, 0600, replacing it whole (never half-written)."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
