"""The compatibility views `cleanup` leaves under every old table name.

`compat_view_statements` is the one entry point `cleanup` calls, inside its transaction, after the
old tables have moved to the archive and the new tables to the target schema.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from dualshift.executor.catalog import SourceMapping
from dualshift.plan import Plan


def view_statement(plan: Plan, mapping: SourceMapping) -> sql.Composable:
    """The old name over the new table, new columns shown under their old names."""
    source, table = mapping.source, mapping.table
    columns = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(sql.Identifier(new), sql.Identifier(old))
        for old, new in table.column_mapping(source.table).items()
    )
    return sql.SQL("CREATE VIEW {} WITH (security_invoker = true) AS SELECT {} FROM {}").format(
        sql.Identifier(source.schema, source.table), columns, sql.Identifier(plan.target_schema, table.name)
    )


def _same_grants(conn: psycopg.Connection, archived_schema: str, schema: str, name: str) -> list[sql.Composable]:
    """The view answers to the roles the old table answered to (the new table's rights apply beneath it)."""
    owner = conn.execute("SELECT current_user").fetchone()[0]
    rows = conn.execute(
        "SELECT grantee, privilege_type FROM information_schema.role_table_grants"
        " WHERE table_schema = ANY(%s) AND table_name = %s AND grantee <> %s ORDER BY 1, 2",
        ([archived_schema, schema], name, owner),
    ).fetchall()
    return [
        sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privilege), sql.Identifier(schema, name), sql.Identifier(role))
        for role, privilege in rows
        if privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
    ]


def compat_view_statements(conn: psycopg.Connection, plan: Plan, mapping: SourceMapping) -> list[sql.Composable]:
    """Everything that makes the old name answer as before: the view and the old table's grants."""
    source = mapping.source
    return [
        view_statement(plan, mapping),
        *_same_grants(conn, plan.archive_schema, source.schema, source.table),
    ]
