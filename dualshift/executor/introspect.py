"""The user tables of a live database as `plan init --dsn` needs them: columns with their real types,
nullability, defaults, identity and generated columns; unique NOT NULL keys; check constraints.

System schemas (PostgreSQL's, Supabase's, dualshift's own) are never read. Types are spelled as the
catalog spells them with the search_path pinned to `pg_catalog, pg_temp`, so a type of another
schema comes out schema-qualified and a mixed-case name quoted (`public."reportTypes"`): exactly
what a plan must say.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from dualshift.executor.catalog import pinned_search_path

SYSTEM_SCHEMAS = (
    "information_schema",
    "pg_catalog",
    "pg_toast",
    "auth",
    "storage",
    "extensions",
    "graphql",
    "graphql_public",
    "realtime",
    "_realtime",
    "_analytics",
    "supabase_functions",
    "supabase_migrations",
    "vault",
    "pgsodium",
    "pgsodium_masks",
    "net",
    "cron",
    "pgbouncer",
    "dualshift",
    "dualshift_private",
)


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    not_null: bool
    default: str | None
    identity: bool
    generated: bool

    @property
    def surrogate(self) -> bool:
        """A per-table counter (serial or identity): its values mean nothing in another table."""
        return self.identity or bool(self.default and self.default.startswith("nextval("))


@dataclass
class TableInfo:
    schema: str
    name: str
    columns: dict[str, ColumnInfo] = field(default_factory=dict)
    keys: list[tuple[str, ...]] = field(default_factory=list)  # unique, NOT NULL, plain columns; primary first
    checks: list[str] = field(default_factory=list)  # check expressions, as the catalog prints them
    indexes: list[tuple[str, ...]] = field(default_factory=list)  # other plain-column b-tree indexes
    row_security: bool = False
    policies: list[str] = field(default_factory=list)
    triggers: list[str] = field(default_factory=list)  # user triggers (not constraint triggers)

    def column_type(self, name: str) -> str:
        return self.columns[name].type


def read_tables(conn: psycopg.Connection, archive_schemas: tuple[str, ...] = ()) -> dict[str, TableInfo]:
    """Every ordinary or partitioned table outside the system schemas, by name (schema.name when a
    name is used in two schemas)."""
    skipped = [*SYSTEM_SCHEMAS, *archive_schemas]
    tables: dict[tuple[str, str], TableInfo] = {}
    with pinned_search_path(conn):
        for schema, table, column, type_, not_null, default, identity, generated in conn.execute(
            "SELECT n.nspname, c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            " pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity <> '', a.attgenerated <> ''"
            " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname <> ALL(%s)"
            " AND n.nspname NOT LIKE 'pg\\_%%'"
            " ORDER BY n.nspname, c.relname, a.attnum",
            (skipped,),
        ):
            info = tables.setdefault((schema, table), TableInfo(schema, table))
            info.columns[column] = ColumnInfo(column, type_, not_null, default, identity, generated)
        for schema, table, columns in conn.execute(
            "SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY k.ord)"
            " FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
            " WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL"
            " AND k.ord <= i.indnkeyatts AND n.nspname <> ALL(%s)"
            " GROUP BY i.indexrelid, n.nspname, c.relname, i.indisprimary"
            " HAVING bool_and(a.attnotnull) ORDER BY i.indisprimary DESC, count(*), i.indexrelid",
            (skipped,),
        ):
            if (schema, table) in tables:
                tables[(schema, table)].keys.append(tuple(columns))
        for schema, table, definition in conn.execute(
            "SELECT n.nspname, c.relname, pg_catalog.pg_get_constraintdef(k.oid)"
            " FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE k.contype = 'c' AND k.convalidated AND n.nspname <> ALL(%s) ORDER BY k.conname",
            (skipped,),
        ):
            if (schema, table) in tables and definition.startswith("CHECK (") and definition.endswith(")"):
                tables[(schema, table)].checks.append(definition[len("CHECK (") : -1])
        _read_extras(conn, tables, skipped)
    names = [name for _, name in tables]
    return {(name if names.count(name) == 1 else f"{schema}.{name}"): info for (schema, name), info in tables.items()}


def _read_extras(conn: psycopg.Connection, tables: dict[tuple[str, str], TableInfo], skipped: list[str]) -> None:
    """Indexes, row security, policies and triggers: what a draft carries over or names for a decision."""
    for schema, table, columns in conn.execute(
        "SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY k.ord)"
        " FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid JOIN pg_catalog.pg_am am ON am.oid = ic.relam"
        " CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)"
        " JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
        " WHERE NOT i.indisunique AND am.amname = 'btree' AND i.indpred IS NULL AND i.indexprs IS NULL"
        " AND k.ord <= i.indnkeyatts AND n.nspname <> ALL(%s)"
        " GROUP BY i.indexrelid, n.nspname, c.relname ORDER BY i.indexrelid",
        (skipped,),
    ):
        if (schema, table) in tables:
            tables[(schema, table)].indexes.append(tuple(columns))
    for schema, table, row_security in conn.execute(
        "SELECT n.nspname, c.relname, c.relrowsecurity FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relrowsecurity AND n.nspname <> ALL(%s)",
        (skipped,),
    ):
        if (schema, table) in tables:
            tables[(schema, table)].row_security = row_security
    for schema, table, policy in conn.execute(
        "SELECT schemaname, tablename, policyname FROM pg_catalog.pg_policies WHERE schemaname <> ALL(%s)"
        " ORDER BY policyname",
        (skipped,),
    ):
        if (schema, table) in tables:
            tables[(schema, table)].policies.append(policy)
    for schema, table, trigger in conn.execute(
        "SELECT n.nspname, c.relname, t.tgname FROM pg_catalog.pg_trigger t"
        " JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE NOT t.tgisinternal AND n.nspname <> ALL(%s) ORDER BY t.tgname",
        (skipped,),
    ):
        if (schema, table) in tables:
            tables[(schema, table)].triggers.append(trigger)
