"""`backfill --sync triggers`: triggers on the old tables that mirror every write into the new tables
in the same transaction — the database-level safety net for call sites not yet rewritten to the
dual-write wrapper. Same precedence rule as the backfill. Removed by `rollback` and `cleanup`.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from dualshift.executor.backfill import conflict_action
from dualshift.executor.catalog import SourceMapping
from dualshift.executor.connection import Sink
from dualshift.plan import Plan

TRIGGER = "dualshift_sync"


def _function(mapping: SourceMapping) -> sql.Identifier:
    return sql.Identifier("dualshift", f"sync_{mapping.table.name}_{mapping.source.table}"[:63])


def install_statements(
    conn: psycopg.Connection, plan: Plan, mapping: SourceMapping, all_mappings: list[SourceMapping]
) -> list[sql.Composable]:
    table, source = mapping.table, mapping.source
    new = sql.Identifier(plan.new_schema, table.name)
    columns = sql.SQL(", ").join(map(sql.Identifier, mapping.new_columns))
    action = conflict_action(plan, mapping)
    exprs = dict(mapping.pairs)
    key_match = sql.SQL(" AND ").join(sql.SQL("n.{} = {}").format(sql.Identifier(k), exprs[k]) for k in table.key)
    others = [m for m in all_mappings if m is not mapping]
    held_elsewhere = sql.SQL("")
    for other in others:
        other_match = sql.SQL(" AND ").join(
            sql.SQL("CAST(h.{} AS {}) = n.{}").format(
                sql.Identifier(old), sql.SQL(table.column(k).type), sql.Identifier(k)
            )
            for old, k in zip(other.source.key, table.key, strict=True)
        )
        held_elsewhere = sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {} h WHERE {})").format(
            held_elsewhere, sql.Identifier(other.source.schema, other.source.table), other_match
        )
    body = sql.SQL(
        "BEGIN\n"
        "  IF TG_OP IN ('UPDATE', 'DELETE') THEN\n"
        "    DELETE FROM {new} n USING (SELECT OLD.*) o WHERE {key_match}{held_elsewhere}\n"
        "      AND (TG_OP = 'DELETE' OR NOT EXISTS (SELECT 1 FROM (SELECT NEW.*) o2 WHERE {same_key}));\n"
        "  END IF;\n"
        "  IF TG_OP IN ('INSERT', 'UPDATE') THEN\n"
        "    INSERT INTO {new} ({columns}) SELECT {select} FROM (SELECT NEW.*) o ON CONFLICT ({conflict}) {action};\n"
        "  END IF;\n"
        "  RETURN NULL;\n"
        "END"
    ).format(
        new=new,
        key_match=key_match,
        held_elsewhere=held_elsewhere,
        same_key=sql.SQL(" AND ").join(sql.SQL("o2.{0} = o.{0}").format(sql.Identifier(k)) for k in source.key),
        columns=columns,
        select=mapping.select_list(),
        conflict=sql.SQL(", ").join(map(sql.Identifier, table.key)),
        action=action,
    )
    old = sql.Identifier(source.schema, source.table)
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS dualshift"),
        sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
            _function(mapping), sql.Literal(body.as_string(conn))
        ),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), old),
        sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            sql.Identifier(TRIGGER), old, _function(mapping)
        ),
    ]


def install(
    conn: psycopg.Connection, plan: Plan, mappings: dict[tuple[str, str], SourceMapping], sink: Sink
) -> list[str]:
    installed = []
    with conn.transaction():
        for table in plan.tables:
            table_mappings = [mappings[(table.name, s.table)] for s in table.sources]
            for mapping in table_mappings:
                for statement in install_statements(conn, plan, mapping, table_mappings):
                    sink.run(statement)
                installed.append(f"{mapping.source.schema}.{mapping.source.table}")
    return installed


def remove(conn: psycopg.Connection, plan: Plan, sink: Sink, schema_of=None) -> None:
    """Drop the sync triggers and their functions (wherever the old tables are now)."""
    for table in plan.tables:
        for source in table.sources:
            schema = schema_of(source) if schema_of else source.schema
            if conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{source.table}"',)).fetchone()[0] is not None:
                sink.run(
                    sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                        sql.Identifier(TRIGGER), sql.Identifier(schema, source.table)
                    )
                )
            name = f"sync_{table.name}_{source.table}"[:63]
            sink.run(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier("dualshift", name)))
