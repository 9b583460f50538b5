"""Reverse sync: from `cleanup` until `finalize`, every write to a new table is mirrored into the
archived old table that owns the row, so that `rollback` after cleanup is exact.

One AFTER INSERT OR UPDATE OR DELETE trigger per new table. Its function (in dualshift_private,
SECURITY DEFINER, search_path pinned) writes each change into the old table(s) that own the row,
cast back to the old column types, matched on the source's key:

- partitions: the source whose `partition_predicate` selects the row owns it; a row that moves from
  one partition to another is deleted from the first and written to the second;
- twins (one entity, one shared row per key): an update or delete reaches every twin that holds the key,
  an update with only the columns whose value it changed in the shared row (a twin's own values stay
  where the write did not change them); an insert goes to the twin a compatibility view wrote through
  (names.VIA_SETTING), or to the first when written to the new table itself.

Old columns the new table does not feed keep their value on update and get their default on insert;
identity columns are written with OVERRIDING SYSTEM VALUE; generated columns are never written. A
mirror that fails never fails the application's write: the error is caught and recorded in
dualshift.failed_writes (call_site 'dualshift reverse sync'), and `rollback` refuses while such a
record is not repaired.

The functions are owned by the migration's reverse-sync role (owners.py), which holds USAGE on the
archive and `dualshift` schemas, SELECT, INSERT, UPDATE, DELETE on the archived old tables (USAGE on
the sequences their defaults draw from, a `dualshift_reverse_sync` policy where RLS is on), INSERT on
dualshift.failed_writes, and nothing else; `rollback` and `finalize` drop it.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from dualshift.executor import names, owners
from dualshift.plan import NewTable, Plan, Source

TRIGGER = "dualshift_reverse_sync"
POLICY = "dualshift_reverse_sync"
FAILED_WRITES = sql.Identifier(names.API_SCHEMA, "failed_writes")
CALL_SITE = "dualshift reverse sync"


@dataclass(frozen=True)
class OldColumn:
    name: str
    type: str
    identity: str  # '' | 'a' (ALWAYS) | 'd' (BY DEFAULT)
    generated: bool


def function_name(table: NewTable) -> sql.Identifier:
    return sql.Identifier(names.PRIVATE_SCHEMA, names.fit("reverse_sync", table.name))


def old_columns(conn: psycopg.Connection, schema: str, table: str) -> dict[str, OldColumn]:
    rows = conn.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attidentity::text,"
        " a.attgenerated <> '' FROM pg_catalog.pg_attribute a"
        " WHERE a.attrelid = pg_catalog.to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchall()
    return {name: OldColumn(name, type_, identity, generated) for name, type_, identity, generated in rows}


@dataclass(frozen=True)
class _SourceSide:
    """How one archived old table receives the new table's rows."""

    source: Source
    relation: sql.Identifier
    archive_schema: str
    written: tuple[tuple[str, str], ...]  # (old column, new column) written back, cast to the old type
    types: dict[str, str]  # old column → old type
    overriding: bool  # an identity ALWAYS column is among the written ones
    settable: tuple[tuple[str, str], ...]  # the written pairs an UPDATE may set (no identity ALWAYS)


def _side(conn: psycopg.Connection, plan: Plan, table: NewTable, source: Source) -> _SourceSide:
    columns = old_columns(conn, plan.archive_schema, source.table)
    written = tuple(
        (old, new)
        for old, new in table.column_mapping(source.table).items()
        if old in columns and not columns[old].generated
    )
    return _SourceSide(
        source=source,
        relation=sql.Identifier(plan.archive_schema, source.table),
        archive_schema=plan.archive_schema,
        written=written,
        types={name: c.type for name, c in columns.items()},
        overriding=any(columns[old].identity == "a" for old, _ in written),
        settable=tuple((old, new) for old, new in written if columns[old].identity != "a"),
    )


def _value(side: _SourceSide, row: str, old: str, new: str) -> sql.Composable:
    return sql.SQL("CAST({}.{} AS {})").format(sql.Identifier(row), sql.Identifier(new), sql.SQL(side.types[old]))


def _key_match(side: _SourceSide, table: NewTable, row: str) -> sql.Composable:
    pairs = zip(side.source.key, table.key, strict=True)
    return sql.SQL(" AND ").join(
        sql.SQL("o.{} = {}").format(sql.Identifier(old), _value(side, row, old, new)) for old, new in pairs
    )


def _via() -> sql.Composable:
    return sql.SQL("coalesce(pg_catalog.current_setting({}, true), '')").format(sql.Literal(names.VIA_SETTING))


def _owns(table: NewTable, source: Source, row: str) -> sql.Composable:
    """Whether the source's archived row follows an update or delete of the new row: for partitions the
    source whose predicate selects it; for twins every twin (the UPDATE or DELETE matches where held)."""
    predicate = table.partition_predicate(source.table)
    if predicate is None:
        return sql.SQL("true")
    return sql.SQL("coalesce((SELECT ({}) FROM (SELECT {}.*) AS r), false)").format(
        sql.SQL(predicate), sql.Identifier(row)
    )


def _changed_only(side: _SourceSide, old: str, new: str) -> sql.Composable:
    """A twin's column takes the new value only where the write changed it in the shared row."""
    return sql.SQL("CASE WHEN old.{n} IS DISTINCT FROM new.{n} THEN {v} ELSE o.{o} END").format(
        n=sql.Identifier(new), v=_value(side, "new", old, new), o=sql.Identifier(old)
    )


def _update(side: _SourceSide, table: NewTable) -> sql.Composable:
    twins = table.sources_are != "partitions"
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(
            sql.Identifier(old), _changed_only(side, old, new) if twins else _value(side, "new", old, new)
        )
        for old, new in side.settable
    )
    return sql.SQL("UPDATE {} AS o SET {} WHERE {}").format(side.relation, assignments, _key_match(side, table, "old"))


def _upsert(side: _SourceSide, table: NewTable) -> sql.Composable:
    """Write NEW into this source: update the row with NEW's key, else insert it."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(old), _value(side, "new", old, new)) for old, new in side.settable
    )
    return sql.SQL(
        "UPDATE {rel} AS o SET {assignments} WHERE {match};\n"
        "      IF NOT FOUND THEN\n"
        "        INSERT INTO {rel} ({columns}){overriding} VALUES ({values});\n"
        "      END IF;"
    ).format(
        rel=side.relation,
        assignments=assignments,
        match=_key_match(side, table, "new"),
        columns=sql.SQL(", ").join(sql.Identifier(old) for old, _ in side.written),
        overriding=sql.SQL(" OVERRIDING SYSTEM VALUE") if side.overriding else sql.SQL(""),
        values=sql.SQL(", ").join(_value(side, "new", old, new) for old, new in side.written),
    )


def _label(side: _SourceSide) -> sql.Composable:
    return sql.SQL("_ds_old_table := {};").format(
        sql.Literal(f"{side.source.schema}.{side.source.table} (archived in {side.archive_schema})")
    )


def _insert_owner(table: NewTable, side: _SourceSide, position: int, twins: bool) -> sql.Composable:
    """Where an inserted row goes: its partition's source; for twins, the twin written through, else the first."""
    if not twins:
        return _owns(table, side.source, "new")
    name = sql.Literal(f"{side.source.schema}.{side.source.table}")
    if position == 0:
        return sql.SQL("({} IN ('', {}))").format(_via(), name)
    return sql.SQL("({} = {})").format(_via(), name)


def _merged_insert(sides: list[_SourceSide], table: NewTable) -> sql.Composable:
    """Twins: an insert through a twin's view of a key the shared row already holds reaches the new table
    as an UPDATE (the view merges it, names.VIA_INSERT_SETTING says so); the twin written through gets
    the row, as its un-migrated table would have."""
    branches = [
        sql.SQL("      {}IF {} = {} THEN {}\n        {}\n        _ds_written := true;\n").format(
            sql.SQL("") if i == 0 else sql.SQL("ELS"),
            _via(),
            sql.Literal(f"{s.source.schema}.{s.source.table}"),
            _label(s),
            _upsert(s, table),
        )
        for i, s in enumerate(sides)
    ]
    return sql.SQL(
        "    IF pg_catalog.current_setting({}, true) = 'insert' THEN\n{}      END IF;\n    END IF;\n"
    ).format(sql.Literal(names.VIA_INSERT_SETTING), sql.SQL("").join(branches))


def function_body(conn: psycopg.Connection, plan: Plan, table: NewTable) -> str:
    sides = [_side(conn, plan, table, source) for source in table.sources]
    twins = table.sources_are != "partitions"
    # A delete through any twin's view removes the one entity: from every twin that holds the key.
    on_delete = [
        sql.SQL("    IF {} THEN {} DELETE FROM {} AS o WHERE {}; END IF;").format(
            sql.SQL("true") if twins else _owns(table, s.source, "old"),
            _label(s),
            s.relation,
            _key_match(s, table, "old"),
        )
        for s in sides
    ]
    # An update: every source that owned OLD and still owns NEW updates its row in place (its other
    # columns kept); a source that owned OLD but not NEW loses it; the owner of NEW that held no row
    # gets it inserted (twins: the first source, when no source held the key).
    on_update = []
    for s in sides:
        on_update.append(
            sql.SQL(
                "    IF {owns_old} AND {owns_new} THEN {label}\n"
                "      {update};\n"
                "      IF FOUND THEN _ds_written := true; END IF;\n"
                "    ELSIF {owns_old} THEN {label}\n"
                "      DELETE FROM {rel} AS o WHERE {match_old};\n"
                "    END IF;"
            ).format(
                owns_old=_owns(table, s.source, "old"),
                owns_new=_owns(table, s.source, "new"),
                label=_label(s),
                update=_update(s, table),
                rel=s.relation,
                match_old=_key_match(s, table, "old"),
            )
        )
    inserts = [
        sql.SQL("    {}IF {} THEN {}\n      {}\n").format(
            sql.SQL("") if i == 0 else sql.SQL("ELS"), _insert_owner(table, s, i, twins), _label(s), _upsert(s, table)
        )
        for i, s in enumerate(sides)
    ]
    insert_new = sql.SQL("{}    END IF;").format(sql.SQL("").join(inserts))
    merged_insert = _merged_insert(sides, table) if twins else sql.SQL("")
    body = sql.SQL(
        "#variable_conflict use_column\n"
        "DECLARE\n"
        "  _ds_old_table text := '';\n"
        "  _ds_written boolean := false;\n"
        "BEGIN\n"
        "  BEGIN\n"
        "    IF TG_OP = 'DELETE' THEN\n{on_delete}\n"
        "    ELSIF TG_OP = 'UPDATE' THEN\n{on_update}\n{merged_insert}"
        "      IF NOT _ds_written AND {may_insert} THEN\n{insert_new}\n      END IF;\n"
        "    ELSE\n{insert_new}\n"
        "    END IF;\n"
        "  EXCEPTION WHEN OTHERS THEN\n"
        "    INSERT INTO {failed} (old_table, new_table, operation, payload, call_site, error)\n"
        "    VALUES (_ds_old_table, {new_table}, pg_catalog.lower(TG_OP),\n"
        "      CASE WHEN TG_OP = 'DELETE' THEN pg_catalog.to_jsonb(OLD) ELSE pg_catalog.to_jsonb(NEW) END,\n"
        "      {call_site}, SQLSTATE || ': ' || SQLERRM);\n"
        "  END;\n"
        "  RETURN NULL;\n"
        "END"
    ).format(
        on_delete=sql.SQL("\n").join(on_delete),
        on_update=sql.SQL("\n").join(on_update),
        merged_insert=merged_insert,
        # An update through a twin's old name of a key that twin never held changed nothing there before
        # cleanup: it creates nothing there now either. A direct write to the new table still does.
        # An insert through a twin's view merged into the row another twin inserted is an insert there.
        may_insert=sql.SQL("({} = '' OR pg_catalog.current_setting({}, true) = 'insert')").format(
            _via(), sql.Literal(names.VIA_INSERT_SETTING)
        )
        if twins
        else sql.SQL("true"),
        insert_new=insert_new,
        failed=sql.Identifier(names.API_SCHEMA, "failed_writes"),
        new_table=sql.Literal(table.name),  # as the wrapper and the sync triggers name it
        call_site=sql.Literal(CALL_SITE),
    )
    return body.as_string(conn)


def role_name(conn: psycopg.Connection, plan: Plan) -> str:
    return owners.role_name(conn, plan, owners.REVERSE_SYNC)


def _owner_statements(conn: psycopg.Connection, plan: Plan, table: NewTable, role: str) -> list[sql.Composable]:
    """The role (once per migration) and what one new table's function needs: its archived sources."""
    archived = [sql.Identifier(plan.archive_schema, s.table) for s in table.sources]
    grants = [
        *owners.schema_usage({plan.archive_schema, names.API_SCHEMA}),
        *owners.relation_grants(conn, ("SELECT", "INSERT", "UPDATE", "DELETE"), archived),
        *owners.relation_grants(conn, ("INSERT",), [FAILED_WRITES]),
        *owners.sequence_grants(conn, [*archived, FAILED_WRITES]),
    ]
    statements = [
        *owners.role_statements(conn, role),
        *owners.granted(role, grants, f"the reverse sync trigger of {plan.target_schema}.{table.name}"),
    ]
    for source in table.sources:
        statements += owners.policy_statements(conn, POLICY, role, plan.archive_schema, source.table)
    return statements


def remove_owner_statements(conn: psycopg.Connection, plan: Plan) -> list[sql.Composable]:
    """After every table's `remove_statements`: the role, its grants and its policies."""
    return owners.drop_statements(conn, role_name(conn, plan))


def install_statements(conn: psycopg.Connection, plan: Plan, table: NewTable) -> list[sql.Composable]:
    """The function (owned by the reverse-sync role) and trigger that mirror one new table (in the target
    schema) into its archived sources."""
    function = function_name(table)
    new = sql.Identifier(plan.target_schema, table.name)
    role = role_name(conn, plan)
    create = sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER {} AS {}"
    ).format(function, owners.settings_clause(plan), sql.Literal(function_body(conn, plan, table)))
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.PRIVATE_SCHEMA)),
        *_owner_statements(conn, plan, table, role),
        *owners.owned_functions(role, [(create, function, sql.SQL(""))]),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), new),
        sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            sql.Identifier(TRIGGER), new, function
        ),
    ]


def remove_statements(plan: Plan, table: NewTable, schema: str) -> list[sql.Composable]:
    """Drop the trigger (the new table being in `schema`) and its function."""
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), sql.Identifier(schema, table.name)),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function_name(table)),
    ]


def unrepaired_failures(conn: psycopg.Connection, plan: Plan) -> int:
    """Mirrors that failed since cleanup and were not marked repaired (replayed_at)."""
    if conn.execute("SELECT pg_catalog.to_regclass('dualshift.failed_writes')").fetchone()[0] is None:
        return 0
    return conn.execute(
        "SELECT count(*) FROM dualshift.failed_writes WHERE call_site = %s AND replayed_at IS NULL"
        " AND new_table = ANY(%s)",
        (CALL_SITE, [t.name for t in plan.tables]),
    ).fetchone()[0]
