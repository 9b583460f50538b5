"""Phase `cleanup` (seed 001, steps 8.1-8.3) and its rollback.

Backup (pg_dump of the old tables when it is installed, otherwise copies in the archive schema),
old tables moved to the archive schema, new tables promoted to the target schema, and a view under
each old name with the old column names, created WITH (security_invoker = true) so that the new
tables' row-level security still applies through it.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from dualshift.executor import views
from dualshift.executor.catalog import SourceMapping, table_exists
from dualshift.executor.connection import ExecutorError, Sink
from dualshift.plan import Plan


def backup(conn: psycopg.Connection, plan: Plan, dsn: str, backup_dir: Path, sink: Sink) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    pg_dump = shutil.which("pg_dump")
    if pg_dump and not sink.dry_run:
        backup_dir.mkdir(parents=True, exist_ok=True)
        target = backup_dir / f"dualshift_backup_{stamp}.sql"
        command = [pg_dump, "--dbname", dsn, "--file", str(target)]
        for table in plan.tables:
            for source in table.sources:
                command += ["--table", f'"{source.schema}"."{source.table}"']
        result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
        if result.returncode == 0:
            return str(target)
        sink.statements.append(f"-- pg_dump failed ({result.stderr.strip()[:200]}); copying tables instead")
    sink.run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plan.archive_schema)))
    for table in plan.tables:
        for source in table.sources:
            sink.run(
                sql.SQL("CREATE TABLE {} AS TABLE {}").format(
                    sql.Identifier(plan.archive_schema, f"{source.table}_backup_{stamp}"),
                    sql.Identifier(source.schema, source.table),
                )
            )
    return f"copies in schema {plan.archive_schema}"


def run(conn: psycopg.Connection, plan: Plan, mappings: dict, dsn: str, backup_dir: Path, sink: Sink) -> dict:
    where = backup(conn, plan, dsn, backup_dir, sink)
    made_views = []
    with conn.transaction():
        sink.run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plan.archive_schema)))
        for table in plan.tables:
            for source in table.sources:
                if table_exists(conn, plan.archive_schema, source.table):
                    raise ExecutorError(f"{plan.archive_schema}.{source.table} already exists; move it away first")
                sink.run(
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(source.schema, source.table), sql.Identifier(plan.archive_schema)
                    )
                )
            if plan.new_schema != plan.target_schema:
                sink.run(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plan.target_schema)))
                sink.run(
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(plan.new_schema, table.name), sql.Identifier(plan.target_schema)
                    )
                )
        for table in plan.tables:
            for source in table.sources:
                for statement in views.compat_view_statements(conn, plan, mappings[(table.name, source.table)]):
                    sink.run(statement)
                made_views.append(f"{source.schema}.{source.table}")
    return {"backup": where, "views": made_views}


def rollback(conn: psycopg.Connection, plan: Plan, mappings: dict, sink: Sink) -> dict:
    """Views dropped, rows written to the new tables since cleanup carried back, old tables restored."""
    carried = {}
    with conn.transaction():
        for table in plan.tables:
            for source in table.sources:
                sink.run(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(source.schema, source.table)))
        for table in plan.tables:
            for source in table.sources:
                sink.run(
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(plan.archive_schema, source.table), sql.Identifier(source.schema)
                    )
                )
            if plan.new_schema != plan.target_schema:
                sink.run(
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(plan.target_schema, table.name), sql.Identifier(plan.new_schema)
                    )
                )
            carried[table.name] = _carry_back(
                conn, plan, [mappings[(table.name, s.table)] for s in table.sources], sink
            )
    return {"rows_carried_back": carried}


def _carry_back(conn: psycopg.Connection, plan: Plan, all_mappings: list[SourceMapping], sink: Sink) -> int:
    """New-table rows no source holds (written after cleanup) go into the first source, mapped back."""
    mapping = all_mappings[0]
    source, table = mapping.source, mapping.table
    reverse = {new: old for old, new in table.column_mapping(source.table).items()}
    columns = [c for c in mapping.new_columns if c in reverse]
    absent = sql.SQL(" AND ").join(
        sql.SQL("NOT EXISTS (SELECT 1 FROM {} o WHERE {})").format(
            sql.Identifier(m.source.schema, m.source.table),
            sql.SQL(" AND ").join(sql.SQL("n.{} = {}").format(sql.Identifier(k), dict(m.pairs)[k]) for k in table.key),
        )
        for m in all_mappings
    )
    statement = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} n WHERE {}").format(
        sql.Identifier(source.schema, source.table),
        sql.SQL(", ").join(sql.Identifier(reverse[c]) for c in columns),
        sql.SQL(", ").join(sql.Identifier("n", c) for c in columns),
        sql.Identifier(plan.new_schema, table.name),
        absent,
    )
    sink.statements.append(sink.text(statement))
    if sink.dry_run:
        return 0
    return conn.execute(statement).rowcount
