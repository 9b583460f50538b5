"""Phase `snapshot`: the current schema, read-only (seed 001, days 3-5), as SQL and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg


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


def as_sql(snapshot: dict[str, Any]) -> str:
    lines = ["-- PRODUCTION_SCHEMA_SNAPSHOT.sql written by dualshift migrate snapshot (read-only)", ""]
    for key, table in snapshot["tables"].items():
        schema, name = key.split(".", 1)
        columns = [
            f'  "{c["name"]}" {c["type"]}{" NOT NULL" if c["not_null"] else ""}{" DEFAULT " + c["default"] if c["default"] else ""}'
            for c in table["columns"]
        ]
        columns += [f'  CONSTRAINT "{c["name"]}" {c["definition"]}' for c in table["constraints"]]
        lines.append(f"-- {table['rows']} rows")
        lines.append(f'CREATE TABLE "{schema}"."{name}" (\n' + ",\n".join(columns) + "\n);")
        lines += [i["definition"] + ";" for i in table["indexes"] if "_pkey" not in i["name"]]
        if table["row_level_security"]:
            lines.append(f'ALTER TABLE "{schema}"."{name}" ENABLE ROW LEVEL SECURITY;')
        for p in table["policies"]:
            lines.append(f"-- policy {p['name']} FOR {p['command']} TO {', '.join(p['roles'])} USING ({p['using']})")
        for g in table["grants"]:
            lines.append(f'GRANT {g["privilege"]} ON "{schema}"."{name}" TO "{g["role"]}";')
        lines.append("")
    return "\n".join(lines)


def write(snapshot: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    sql_path = out_dir / "PRODUCTION_SCHEMA_SNAPSHOT.sql"
    json_path = out_dir / "PRODUCTION_SCHEMA_SNAPSHOT.json"
    sql_path.write_text(as_sql(snapshot), encoding="utf-8")
    json_path.write_text(json.dumps(snapshot, indent=2, default=str) + "\n", encoding="utf-8")
    return [sql_path, json_path]
