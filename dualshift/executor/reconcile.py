"""What the catalog says about a migration, independent of the state row.

`reconcile(conn, plan)` looks at where the plan's tables are (the new tables in plan.new_schema or
plan.target_schema, the old tables in their own schema or in plan.archive_schema, views under the old
names) and whether the new tables hold rows, and derives the phases consistent with that. The
executor compares it with the state row before every phase and refuses when they disagree, so that
no phase empties or drops a table on the word of the state row alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from dualshift.executor.catalog import columns_of
from dualshift.plan import NewTable, Plan

ALL_BEFORE_CLEANUP = ("created", "backfilled", "verified", "switched")


@dataclass(frozen=True)
class CatalogView:
    new_in_new: tuple[str, ...]  # new tables present in plan.new_schema
    new_in_target: tuple[str, ...]  # … and in plan.target_schema (the same when the schemas are)
    new_with_rows: tuple[str, ...]
    old_in_place: tuple[str, ...]  # "schema.table" of old tables still tables in their schema
    old_archived: tuple[str, ...]  # old tables in plan.archive_schema
    old_views: tuple[str, ...]  # views under old names
    old_nowhere: tuple[str, ...]  # "schema.table" of old tables that are none of the above
    sources_with_rows: int
    new_tables: int
    old_tables: int
    exact_columns: bool  # every new table present has exactly the plan's columns

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases this catalog is consistent with (empty: none dualshift can name)."""
        all_old_in_place = len(self.old_in_place) == self.old_tables and not self.old_archived
        if all_old_in_place and not self.new_in_new:
            return ("none",)
        if all_old_in_place and len(self.new_in_new) == self.new_tables:
            if self.new_with_rows or not self.sources_with_rows:
                return ALL_BEFORE_CLEANUP
            return ("created",)
        every_old_moved = not self.old_in_place and len(self.old_views) == self.old_tables
        if every_old_moved and len(self.new_in_target) == self.new_tables:
            if len(self.old_archived) == self.old_tables:
                return ("cleaned",)
            if not self.old_archived:
                return ("finalized",)
        return ()

    def describe(self) -> str:
        new = (
            f"{len(self.new_in_new)} of {self.new_tables} new tables in the new schema"
            + (f" ({len(self.new_with_rows)} holding rows)" if self.new_in_new else "")
            if self.new_in_new or not self.new_in_target
            else f"{len(self.new_in_target)} of {self.new_tables} new tables in the target schema"
        )
        old = f"{len(self.old_in_place)} of {self.old_tables} old tables in place, {len(self.old_archived)} archived"
        views = f", {len(self.old_views)} views under old names" if self.old_views else ""
        return f"{new}, {old}{views}"


def _kind(conn: psycopg.Connection, schema: str, name: str) -> str | None:
    row = conn.execute(
        "SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return None if row is None else row[0]


def _is_table(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return _kind(conn, schema, name) in ("r", "p")


def _has_rows(conn: psycopg.Connection, schema: str, name: str) -> bool:
    statement = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, name))
    return bool(conn.execute(statement).fetchone()[0])


def expected_columns(table: NewTable) -> set[str]:
    return set(table.column_names) | {"id"}


def reconcile(conn: psycopg.Connection, plan: Plan) -> CatalogView:
    sources = [s for t in plan.tables for s in t.sources]
    new_in_new = tuple(t.name for t in plan.tables if _is_table(conn, plan.new_schema, t.name))
    new_in_target = tuple(t.name for t in plan.tables if _is_table(conn, plan.target_schema, t.name))
    exact = all(
        set(columns_of(conn, plan.new_schema, t.name)) == expected_columns(t)
        for t in plan.tables
        if t.name in new_in_new
    )
    old_in_place = tuple(f"{s.schema}.{s.table}" for s in sources if _is_table(conn, s.schema, s.table))
    old_archived = tuple(s.table for s in sources if _is_table(conn, plan.archive_schema, s.table))
    old_views = tuple(s.table for s in sources if _kind(conn, s.schema, s.table) == "v")
    return CatalogView(
        new_in_new=new_in_new,
        new_in_target=new_in_target,
        new_with_rows=tuple(t for t in new_in_new if _has_rows(conn, plan.new_schema, t)),
        old_in_place=old_in_place,
        old_archived=old_archived,
        old_views=old_views,
        old_nowhere=tuple(
            f"{s.schema}.{s.table}"
            for s in sources
            if f"{s.schema}.{s.table}" not in old_in_place and s.table not in old_archived and s.table not in old_views
        ),
        sources_with_rows=sum(
            _has_rows(conn, s.schema, s.table) for s in sources if _is_table(conn, s.schema, s.table)
        ),
        new_tables=len(plan.tables),
        old_tables=len(sources),
        exact_columns=exact,
    )


def rows_only_in_new(conn: psycopg.Connection, plan: Plan, table: NewTable) -> int:
    """Rows of a new table (in plan.new_schema) whose key no source holds: rows written only there,
    which emptying or dropping the new table would lose."""
    clauses = []
    for source in table.sources:
        match = sql.SQL(" AND ").join(
            sql.SQL("CAST(o.{} AS {}) = n.{}").format(
                sql.Identifier(old), sql.SQL(table.column(new).type), sql.Identifier(new)
            )
            for old, new in zip(source.key, table.key, strict=True)
        )
        clauses.append(
            sql.SQL("NOT EXISTS (SELECT 1 FROM {} o WHERE {})").format(
                sql.Identifier(source.schema, source.table), match
            )
        )
    statement = sql.SQL("SELECT pg_catalog.count(*) FROM {} n WHERE {}").format(
        sql.Identifier(plan.new_schema, table.name), sql.SQL(" AND ").join(clauses)
    )
    return conn.execute(statement).fetchone()[0]
