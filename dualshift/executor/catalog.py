"""What the live database holds, and the plan validated against it before any SQL runs."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from dualshift.executor.connection import ExecutorError
from dualshift.plan import NewTable, Plan, Source


def columns_of(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """column → SQL type, in table order; empty when the table does not exist."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    return dict(rows)


def table_exists(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()[0] is not None


@dataclass(frozen=True)
class SourceMapping:
    """How one old table's rows become new-table rows: (new column, SQL expression over the old row)."""

    table: NewTable
    source: Source
    precedence: int
    pairs: tuple[tuple[str, sql.Composable], ...]

    @property
    def new_columns(self) -> list[str]:
        return [c for c, _ in self.pairs]

    def select_list(self, alias: str = "o") -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{} AS {}").format(expr, sql.Identifier(col)) for col, expr in self.pairs)

    def key_columns(self, alias: str = "o") -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(alias, k) for k in self.source.key)


def mapping_for(plan: Plan, table: NewTable, position: int, old_columns: dict[str, str]) -> SourceMapping:
    source = table.sources[position]
    pairs: list[tuple[str, sql.Composable]] = []
    for old, new in table.column_mapping(source.table).items():
        if old not in old_columns:
            continue
        column_type = table.column(new).type
        pairs.append((new, sql.SQL("CAST({} AS {})").format(sql.Identifier("o", old), sql.SQL(column_type))))
    for new, value in source.constants.items():
        column_type = table.column(new).type
        pairs.append((new, sql.SQL("CAST({} AS {})").format(sql.Literal(value), sql.SQL(column_type))))
    return SourceMapping(table, source, position, tuple(pairs))


def validate(conn: psycopg.Connection, plan: Plan) -> dict[tuple[str, str], SourceMapping]:
    """Every source exists, has its key columns, and feeds the new table's key and required columns."""
    mappings: dict[tuple[str, str], SourceMapping] = {}
    for table in plan.tables:
        for position, source in enumerate(table.sources):
            old_columns = columns_of(conn, source.schema, source.table)
            where = f"{plan.path}: source {source.schema}.{source.table} of {table.name}"
            if not old_columns:
                raise ExecutorError(f"{where}: no such table in the database")
            missing_key = [k for k in source.key if k not in old_columns]
            if missing_key:
                raise ExecutorError(f"{where}: key column(s) {', '.join(missing_key)} do not exist")
            for name in [*source.rename, *source.drop]:
                if name not in old_columns:
                    raise ExecutorError(f"{where}: column {name} named in the plan does not exist")
            mapping = mapping_for(plan, table, position, old_columns)
            fed = set(mapping.new_columns)
            for column in table.columns:
                if not column.nullable and column.default is None and column.name not in fed:
                    raise ExecutorError(f"{where}: nothing feeds {table.name}.{column.name}, which is NOT NULL")
            if set(table.key) - fed:
                raise ExecutorError(f"{where}: the key {', '.join(table.key)} is not fed by this source")
            mappings[(table.name, source.table)] = mapping
    return mappings
