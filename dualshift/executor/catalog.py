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


# Spellings of one type, so that "timestamptz" in a plan and "timestamp with time zone" in the catalog match.
_TYPE_ALIASES = {
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "timetz": "time with time zone",
    "time": "time without time zone",
    "int": "integer",
    "int4": "integer",
    "int8": "bigint",
    "int2": "smallint",
    "bool": "boolean",
    "float8": "double precision",
    "float4": "real",
    "varchar": "character varying",
    "char": "character",
    "decimal": "numeric",
}
TIMESTAMP = "timestamp without time zone"
TIMESTAMPTZ = "timestamp with time zone"


def normalized_type(sql_type: str) -> str:
    """One spelling per type: lower case, single spaces, aliases resolved (typmods kept)."""
    text = " ".join(sql_type.lower().split()).replace(" (", "(")
    base, paren, rest = text.partition("(")
    return _TYPE_ALIASES.get(base.strip(), base.strip()) + paren + rest


@dataclass(frozen=True)
class SourceMapping:
    """How one old table's rows become new-table rows: (new column, SQL expression over the old row).

    `key_matches` holds, for each new key column, whether the old key column already has the new
    column's type: then a lookup by key compares the old column itself and can use its index."""

    table: NewTable
    source: Source
    precedence: int
    pairs: tuple[tuple[str, sql.Composable], ...]
    key_matches: tuple[bool, ...] = ()

    @property
    def new_columns(self) -> list[str]:
        return [c for c, _ in self.pairs]

    def select_list(self, alias: str = "o") -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{} AS {}").format(expr, sql.Identifier(col)) for col, expr in self.pairs)

    def key_columns(self, alias: str = "o") -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(alias, k) for k in self.source.key)

    def key_exprs(self) -> list[sql.Composable]:
        """The new table's key, as expressions over the old row (alias `o`), in the key's order."""
        exprs = dict(self.pairs)
        return [exprs[k] for k in self.table.key]

    def key_match(self, values: list[sql.Composable]) -> sql.Composable:
        """The old row `o` holds the new key `values` (typed as the new key columns)."""
        exact = self.key_matches or (False,) * len(self.table.key)
        clauses = []
        for old, expr, value, same_type in zip(self.source.key, self.key_exprs(), values, exact, strict=True):
            column = sql.Identifier("o", old) if same_type else expr
            clauses.append(sql.SQL("{} = {}").format(column, value))
        return sql.SQL(" AND ").join(clauses)


def cast_to_new(
    value: sql.Composable, table: NewTable, new_column: str, old_type: str | None, timezone: str
) -> sql.Composable:
    """An old value in a new column's type. A `timestamp` (without time zone) becomes a `timestamptz`
    read in the plan's time zone, and the reverse, whatever the writing session's TimeZone is."""
    new_type = table.column(new_column).type
    old, new = normalized_type(old_type or ""), normalized_type(new_type)
    if {old, new} == {TIMESTAMP, TIMESTAMPTZ}:
        return sql.SQL("pg_catalog.timezone({}, {})").format(sql.Literal(timezone), value)
    return sql.SQL("CAST({} AS {})").format(value, sql.SQL(new_type))


def mapping_for(plan: Plan, table: NewTable, position: int, old_columns: dict[str, str]) -> SourceMapping:
    source = table.sources[position]
    pairs: list[tuple[str, sql.Composable]] = []
    for old, new in table.column_mapping(source.table).items():
        if old not in old_columns:
            continue
        pairs.append((new, cast_to_new(sql.Identifier("o", old), table, new, old_columns[old], plan.timezone)))
    for new, value in source.constants.items():
        column_type = table.column(new).type
        pairs.append((new, sql.SQL("CAST({} AS {})").format(sql.Literal(value), sql.SQL(column_type))))
    key_matches = tuple(
        old in old_columns and normalized_type(old_columns[old]) == normalized_type(table.column(new).type)
        for old, new in zip(source.key, table.key, strict=True)
    )
    return SourceMapping(table, source, position, tuple(pairs), key_matches)


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
