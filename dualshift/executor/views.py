"""The compatibility views `cleanup` leaves under every old table name.

A view under an old name looks like the old table: the old columns, in the old order, with the old
names, types and defaults (columns the plan dropped read NULL), over only the rows of its source
where the sources are partitions of the new table, and answers to each role as the old table did.
The new table grants each role only what every source granted it, so the view does not run as the
caller: it has the old table's grants, reads with its owner's rights (security_barrier), and shows
the querying role the rows the old table's own policies showed it. SECURITY DEFINER INSTEAD OF
triggers check those policies for the acting role, then carry writes to the new table: values cast
from the old types to the new, the source's constants added, updates and deletes kept inside the
source's partition, a twin's insert merged into the row another twin inserted, and the written row
handed back in the old shape so `RETURNING` works. Where the plan says `view_writes = "refuse"`,
the trigger refuses every write, naming the view and the setting. The trigger functions are owned by
the migration's compat role (owners.py; `owner_statements`), which holds only what they need; it stays
as long as the views do (finalize keeps them) and goes with them in the rollback of cleanup.

`cleanup` calls `owner_statements` once, then `compat_view_statements` for each old table, inside its
transaction, after the old tables have moved to the archive and the new tables to the target schema.
They only read the catalog; the statements they return are for the caller to run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import pq, sql

from dualshift.executor import names, owners
from dualshift.executor.catalog import SourceMapping
from dualshift.executor.connection import ExecutorError
from dualshift.executor.create import source_row_filter
from dualshift.plan import NewTable, Plan, Source

PINNED_SEARCH_PATH = "pg_catalog, pg_temp"
# The role a write through a view acts as, read inside its SECURITY DEFINER trigger (where CURRENT_USER
# is the trigger's owner): the role SET ROLE chose (PostgREST sets one per request), else the login role.
ACTING_ROLE = (
    "CAST(CASE WHEN pg_catalog.current_setting('role') = 'none' THEN SESSION_USER"
    " ELSE pg_catalog.current_setting('role') END AS pg_catalog.name)"
)
TIMESTAMP_TYPE = re.compile(r"^timestamp(?:\(\d+\))? (with|without) time zone$")


@contextmanager
def qualified_names(conn: psycopg.Connection) -> Iterator[None]:
    """Catalog text (format_type, pg_get_expr, pg_get_viewdef) read under `pg_catalog, pg_temp`, so every
    name in it comes out schema-qualified and stays right whatever search_path later runs it."""
    previous = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()[0]
    conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (PINNED_SEARCH_PATH,))
    try:
        yield
    finally:
        # In a failed transaction the setting is undone with it; a query now would hide the first error.
        if conn.info.transaction_status != pq.TransactionStatus.INERROR:
            conn.execute("SELECT pg_catalog.set_config('search_path', %s, false)", (previous,))


def _zoned(column_type: str) -> bool | None:
    """True for timestamptz, False for timestamp, None for any other type (typmods included)."""
    found = TIMESTAMP_TYPE.match(column_type)
    return None if found is None else found.group(1) == "with"


@dataclass(frozen=True)
class CatalogColumn:
    name: str
    type: str  # format_type, qualified where the type is not in pg_catalog
    type_oid: int
    not_null: bool
    default: str | None  # pg_get_expr of the column default (never an identity or generation expression)
    identity: str  # '' | 'a' (ALWAYS) | 'd' (BY DEFAULT)
    generation: str | None  # the expression of a generated column
    sequence: str | None  # the sequence the column owns (identity or serial), qualified

    @property
    def generated(self) -> bool:
        return self.generation is not None


def catalog_columns(conn: psycopg.Connection, schema: str, table: str) -> list[CatalogColumn]:
    """A relation's columns in their order, read under the pinned search_path."""
    with qualified_names(conn):
        rows = conn.execute(
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.atttypid::int, a.attnotnull,"
            " CASE WHEN a.attgenerated = '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,"
            " a.attidentity::text,"
            " CASE WHEN a.attgenerated <> '' THEN pg_catalog.pg_get_expr(d.adbin, d.adrelid) END,"
            " pg_catalog.pg_get_serial_sequence(pg_catalog.format('%%I.%%I', %s::text, %s::text), a.attname)"
            " FROM pg_catalog.pg_attribute a"
            " LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))"
            " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (schema, table, schema, table),
        ).fetchall()
    return [CatalogColumn(*row) for row in rows]


def _has_cast(conn: psycopg.Connection, source_oid: int, target_oid: int) -> bool:
    return bool(
        conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_cast WHERE castsource = %s AND casttarget = %s)",
            (source_oid, target_oid),
        ).fetchone()[0]
    )


class Converter:
    """SQL that turns a value of one column's type into another's: the same type untouched, `timestamp` ↔
    `timestamptz` through the plan's time zone, a cast where PostgreSQL has one, else through text."""

    def __init__(self, conn: psycopg.Connection, timezone: str) -> None:
        self.conn = conn
        self.timezone = timezone

    def convert(self, value: sql.Composable, source: CatalogColumn, target: CatalogColumn) -> sql.Composable:
        if source.type == target.type:
            return value
        zone = sql.Literal(self.timezone)
        # timestamp → timestamptz reads the naive value in the plan's zone; timestamptz → timestamp shows it there.
        if {_zoned(source.type), _zoned(target.type)} == {False, True}:
            value = sql.SQL("({} AT TIME ZONE {})").format(value, zone)
        elif source.type_oid != target.type_oid and not _has_cast(self.conn, source.type_oid, target.type_oid):
            value = sql.SQL("CAST({} AS pg_catalog.text)").format(value)
        return sql.SQL("CAST({} AS {})").format(value, sql.SQL(target.type))


@dataclass(frozen=True)
class ViewColumn:
    """One column of a compatibility view: the old column and the new column that feeds it (None: NULL)."""

    old: CatalogColumn
    new: CatalogColumn | None


@dataclass(frozen=True)
class RowRules:
    """What the old table let a role do with a row, as SQL over the new table's columns (create.py's
    `source_row_filter`: the source's partition and its row level security for that role)."""

    select: str = "true"  # for the querying role (CURRENT_USER, in the view)
    update_using: str = "true"  # the rest for the role the write acts as (ACTING_ROLE, in the trigger)
    update_check: str = "true"
    insert_check: str = "true"
    delete_using: str = "true"


def read_row_rules(conn: psycopg.Connection, plan: Plan, mapping: SourceMapping) -> RowRules:
    def rule(command: str, clause: str, who: str = ACTING_ROLE) -> str:
        return source_row_filter(
            conn, plan, mapping.table, mapping.source.table, command, plan.archive_schema, clause, who
        )

    return RowRules(
        select=rule("SELECT", "using", "CURRENT_USER"),
        update_using=rule("UPDATE", "using"),
        update_check=rule("UPDATE", "check"),
        insert_check=rule("INSERT", "check"),
        delete_using=rule("DELETE", "using"),
    )


@dataclass(frozen=True)
class CompatView:
    plan: Plan
    table: NewTable
    source: Source
    columns: tuple[ViewColumn, ...]
    new_columns: tuple[CatalogColumn, ...]
    predicate: str | None
    rules: RowRules = RowRules()

    @property
    def view(self) -> sql.Identifier:
        return sql.Identifier(self.source.schema, self.source.table)

    @property
    def new_table(self) -> sql.Identifier:
        return sql.Identifier(self.plan.target_schema, self.table.name)

    @property
    def function(self) -> sql.Identifier:
        return sql.Identifier(names.PRIVATE_SCHEMA, names.fit("compat", self.source.schema, self.source.table))

    @property
    def trigger(self) -> sql.Identifier:
        return sql.Identifier(names.fit("dualshift_compat_write", self.source.table))

    @property
    def view_name(self) -> str:
        return f"{self.source.schema}.{self.source.table}"


def describe(conn: psycopg.Connection, plan: Plan, mapping: SourceMapping) -> CompatView:
    """The view's shape: every column of the archived old table and the new column it reads, if any."""
    table, source = mapping.table, mapping.source
    old_columns = catalog_columns(conn, plan.archive_schema, source.table)
    if not old_columns:
        raise ExecutorError(f"{plan.archive_schema}.{source.table} does not exist: move the old table there first")
    new_columns = catalog_columns(conn, plan.target_schema, table.name)
    if not new_columns:
        raise ExecutorError(f"{plan.target_schema}.{table.name} does not exist: promote the new table there first")
    by_name = {c.name: c for c in new_columns}
    fed = table.column_mapping(source.table)
    columns = tuple(ViewColumn(c, by_name.get(fed[c.name]) if c.name in fed else None) for c in old_columns)
    rules = read_row_rules(conn, plan, mapping)
    return CompatView(plan, table, source, columns, tuple(new_columns), table.partition_predicate(source.table), rules)


def _read_list(view: CompatView, convert: Converter, alias: str | None) -> sql.Composable:
    """The old row built from a new-table row: each old column cast back to its old type, or a typed NULL."""
    parts = []
    for column in view.columns:
        if column.new is None:
            value = sql.SQL("CAST(NULL AS {})").format(sql.SQL(column.old.type))
        else:
            ref = sql.Identifier(alias, column.new.name) if alias else sql.Identifier(column.new.name)
            value = convert.convert(ref, column.new, column.old)
        parts.append(sql.SQL("{} AS {}").format(value, sql.Identifier(column.old.name)))
    return sql.SQL(", ").join(parts)


def view_statement(view: CompatView, convert: Converter) -> sql.Composable:
    """The view reads with its owner's rights and shows the rows the old table showed the querying role
    (its partition, its policies for CURRENT_USER); security_barrier keeps the caller's own conditions
    from seeing a row before that filter has. The rules' subqueries name the new table: the alias is its name."""
    alias = view.table.name
    return sql.SQL("CREATE VIEW {} WITH (security_barrier = true) AS SELECT {} FROM {} AS {} WHERE ({})").format(
        view.view, _read_list(view, convert, alias), view.new_table, sql.Identifier(alias), sql.SQL(view.rules.select)
    )


def default_statements(view: CompatView) -> list[sql.Composable]:
    """The old table's defaults on the view, so an INSERT that leaves a column out gets what it got before.
    Only columns the new table still reads: a dropped column's default (an archived sequence) has no use.
    An identity has no default: the write trigger numbers it (`_fill_numbers`), as the old table did,
    without the caller needing rights on its sequence."""
    statements = []
    for column in view.columns:
        if column.new is None or column.old.default is None:
            continue
        default: sql.Composable = sql.SQL(column.old.default)
        statements.append(
            sql.SQL("ALTER VIEW {} ALTER COLUMN {} SET DEFAULT {}").format(
                view.view, sql.Identifier(column.old.name), default
            )
        )
    return statements


def compat_sequence(source: Source, column: str) -> sql.Identifier:
    """The sequence that numbers a view's kept identity or serial column once `finalize` drops the archive."""
    return sql.Identifier(names.PRIVATE_SCHEMA, names.fit("compat", source.schema, source.table, column, "seq"))


def _numbered(view: CompatView) -> list[ViewColumn]:
    """Kept columns the old table numbered from a sequence of its own (identity or serial)."""
    return [c for c in view.columns if c.new is not None and c.old.sequence is not None]


def _fill_numbers(view: CompatView, conn: psycopg.Connection) -> sql.Composable:
    """A numbered column an insert leaves NULL takes the next number: from the archived old sequence while
    the archive is there (so rollback continues from it), then from the view's own, which `finalize`
    (`finalize_statements`) starts where the archived one stopped. Names resolved when the insert runs:
    the view keeps no dependency on the archive."""
    return sql.SQL("").join(
        sql.SQL(
            "IF NEW.{col} IS NULL THEN NEW.{col} := pg_catalog.nextval(COALESCE("
            "pg_catalog.to_regclass({archived}), pg_catalog.to_regclass({own}))); END IF;\n    "
        ).format(
            col=sql.Identifier(c.old.name),
            archived=sql.Literal(c.old.sequence),
            own=sql.Literal(compat_sequence(view.source, c.old.name).as_string(conn)),
        )
        for c in _numbered(view)
    )


def _writable(view: CompatView) -> list[ViewColumn]:
    """Columns a write carries to the new table: fed, and not computed by the new table itself."""
    return [c for c in view.columns if c.new is not None and not c.new.generated]


def _computed(view: CompatView) -> sql.Composable:
    """Old generated columns the new table stores plainly: computed from NEW with the old expression
    (its bare column names read the old row), as the old table computed them."""
    return sql.SQL("").join(
        sql.SQL("NEW.{} := (SELECT ({}) FROM (SELECT NEW.*) AS old_row);\n    ").format(
            sql.Identifier(c.old.name), sql.SQL(c.old.generation)
        )
        for c in _writable(view)
        if c.old.generated
    )


def _incoming(view: CompatView, convert: Converter, column: ViewColumn) -> sql.Composable:
    """NEW's value in the new type; a NOT NULL new column with a default takes the default for a NULL."""
    value = convert.convert(sql.SQL("NEW.{}").format(sql.Identifier(column.old.name)), column.old, column.new)
    if column.new.not_null and column.new.default is not None:
        value = sql.SQL("COALESCE({}, {})").format(value, sql.SQL(column.new.default))
    return value


def _constant_values(view: CompatView) -> dict[str, sql.Composable]:
    """new column → the source's constant for it, cast to the column's type."""
    by_name = {c.name: c for c in view.new_columns}
    return {
        name: sql.SQL("CAST({} AS {})").format(sql.Literal(value), sql.SQL(by_name[name].type))
        for name, value in view.source.constants.items()
        if name in by_name
    }


def _constants(view: CompatView) -> list[tuple[sql.Composable, sql.Composable]]:
    return [(sql.Identifier(name), value) for name, value in _constant_values(view).items()]


def _returning(view: CompatView, convert: Converter) -> sql.Composable:
    """RETURNING the written row in the old shape into NEW, and whether it is inside this view's rows."""
    inside = sql.SQL("COALESCE(({}), false)").format(sql.SQL(view.predicate or "true"))
    targets = sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(c.old.name)) for c in view.columns)
    return sql.SQL("RETURNING {}, {} INTO inside, {}").format(inside, _read_list(view, convert, None), targets)


def _key_match(view: CompatView, convert: Converter) -> sql.Composable:
    """The new-table row behind OLD: the table's key, matched in the new types (so its index serves)."""
    feeding = {c.new.name: c for c in view.columns if c.new is not None}
    parts = []
    for key in view.table.key:
        column = feeding.get(key)
        if column is None:  # the key is a constant of this source
            value = _constant_value(view, key)
        else:
            value = convert.convert(sql.SQL("OLD.{}").format(sql.Identifier(column.old.name)), column.old, column.new)
        parts.append(sql.SQL("n.{} = {}").format(sql.Identifier(key), value))
    if view.predicate:
        parts.append(sql.SQL("({})").format(sql.SQL(view.predicate)))
    return sql.SQL(" AND ").join(parts)


def _constant_value(view: CompatView, column: str) -> sql.Composable:
    for name, value in _constants(view):
        if name == sql.Identifier(column):
            return value
    raise ValueError(f"{view.table.name}.{column}: neither fed nor a constant of {view.source.table}")


def _insert(view: CompatView, convert: Converter) -> sql.Composable:
    """INSERT of NEW into the new table; an identity column left NULL is left to the new table."""
    carried = _writable(view)
    identity = next((c for c in carried if c.new.identity), None)

    def statement(columns: list[ViewColumn]) -> sql.Composable:
        names_ = [sql.Identifier(c.new.name) for c in columns] + [n for n, _ in _constants(view)]
        values = [_incoming(view, convert, c) for c in columns] + [v for _, v in _constants(view)]
        overriding = sql.SQL(" OVERRIDING SYSTEM VALUE") if any(c.new.identity == "a" for c in columns) else sql.SQL("")
        return sql.SQL("INSERT INTO {} AS n ({}){} VALUES ({}){} {};").format(
            view.new_table,
            sql.SQL(", ").join(names_),
            overriding,
            sql.SQL(", ").join(values),
            _takeover(view, [c.new.name for c in columns] + list(_constant_values(view))),
            _returning(view, convert),
        )

    if identity is None:
        insert = statement(carried)
    else:
        insert = sql.SQL("IF NEW.{} IS NULL THEN\n      {}\n    ELSE\n      {}\n    END IF;").format(
            sql.Identifier(identity.old.name), statement([c for c in carried if c is not identity]), statement(carried)
        )
    if not _later_partitions(view):
        return insert
    message = (
        f"dualshift: duplicate key ({', '.join(view.table.key)}) written through view {view.view_name}:"
        f" {view.plan.target_schema}.{view.table.name} holds it for {view.source.table} or a source listed before it"
    )
    return sql.SQL(
        "{}\n    IF NOT FOUND THEN RAISE EXCEPTION USING ERRCODE = 'unique_violation', MESSAGE = {}; END IF;"
    ).format(insert, sql.Literal(message))


def _later_partitions(view: CompatView) -> list[str]:
    """Predicates of the sources after this one, where the sources are partitions of the new table."""
    if view.table.sources_are != "partitions":
        return []
    position = [s.table for s in view.table.sources].index(view.source.table)
    return [view.table.partition_predicate(s.table) for s in view.table.sources[position + 1 :]]


def _fed_before(view: CompatView) -> set[str]:
    """New columns some source listed before this one feeds."""
    position = [s.table for s in view.table.sources].index(view.source.table)
    return {c for s in view.table.sources[:position] for c in view.table.column_mapping(s.table).values()}


def _twin_merge(view: CompatView, columns: list[str]) -> sql.Composable:
    """An insert through a twin's view of a key the one row already holds (another twin inserted it; this
    twin, before cleanup, did not hold it and took the insert): the row takes this twin's values, except
    where an earlier twin feeds the column and the row holds a value (the earlier twin wins, as in backfill)."""
    key = set(view.table.key)
    earlier = _fed_before(view)
    assignments = [
        sql.SQL("{0} = COALESCE(n.{0}, EXCLUDED.{0})" if c in earlier else "{0} = EXCLUDED.{0}").format(
            sql.Identifier(c)
        )
        for c in columns
        if c not in key
    ] or [sql.SQL("{0} = n.{0}").format(sql.Identifier(view.table.key[0]))]
    return sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.SQL(", ").join(map(sql.Identifier, view.table.key)), sql.SQL(", ").join(assignments)
    )


def _takeover(view: CompatView, columns: list[str]) -> sql.Composable:
    """A key a later source holds passes to this one, as backfill's precedence has it (the first source
    wins); a key this source or an earlier one holds stays a duplicate, as it was in the old table.
    Twins share one row: see `_twin_merge`."""
    if view.table.sources_are == "twins" and len(view.table.sources) > 1:
        return _twin_merge(view, columns)
    later = _later_partitions(view)
    if not later:
        return sql.SQL("")
    # The predicates name bare columns, ambiguous beside EXCLUDED: read them over the existing row alone.
    return sql.SQL(
        " ON CONFLICT ({}) DO UPDATE SET {} WHERE EXISTS (SELECT FROM (SELECT n.*) AS held WHERE {})"
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, view.table.key)),
        sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns),
        sql.SQL(" OR ").join(sql.SQL("COALESCE(({}), false)").format(sql.SQL(p)) for p in later),
    )


def _update(view: CompatView, convert: Converter) -> sql.Composable:
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c.new.name), _incoming(view, convert, c)) for c in _writable(view)
    )
    return sql.SQL("UPDATE {} AS n SET {} WHERE {} {};").format(
        view.new_table, assignments, _key_match(view, convert), _returning(view, convert)
    )


def _delete(view: CompatView, convert: Converter) -> sql.Composable:
    return sql.SQL("DELETE FROM {} AS n WHERE {};").format(view.new_table, _key_match(view, convert))


def _outside_error(view: CompatView) -> sql.Composable:
    message = (
        f"dualshift: the row written through view {view.view_name} falls outside the rows of source"
        f" {view.source.table} in {view.plan.target_schema}.{view.table.name} ({view.predicate})"
    )
    return sql.SQL("RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = {};").format(sql.Literal(message))


def _row_relation(view: CompatView, convert: Converter, record: str) -> sql.Composable:
    """The row NEW or OLD stands for as a one-row relation shaped (and named) like the new table: the
    source's columns in the new types, its constants, NULL for the columns it does not feed."""
    values: dict[str, sql.Composable] = {}
    for column in view.columns:
        if column.new is not None:
            ref = sql.SQL("{}.{}").format(sql.SQL(record), sql.Identifier(column.old.name))
            values[column.new.name] = convert.convert(ref, column.old, column.new)
    values.update(_constant_values(view))
    select = sql.SQL(", ").join(
        sql.SQL("{} AS {}").format(
            values.get(c.name, sql.SQL("CAST(NULL AS {})").format(sql.SQL(c.type))), sql.Identifier(c.name)
        )
        for c in view.new_columns
    )
    return sql.SQL("(SELECT {}) AS {}").format(select, sql.Identifier(view.table.name))


def _passes(view: CompatView, convert: Converter, record: str, rule: str) -> sql.Composable:
    return sql.SQL("COALESCE((SELECT ({}) FROM {}), false)").format(sql.SQL(rule), _row_relation(view, convert, record))


def _refuse_row(view: CompatView, convert: Converter, record: str, rule: str) -> sql.Composable:
    """Raise as the old table's WITH CHECK did when the written row is not one the role may write."""
    if rule == "true":
        return sql.SQL("")
    message = f'new row violates row-level security policy for table "{view.source.table}"'
    return sql.SQL(
        "IF NOT {} THEN RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = {}; END IF;\n    "
    ).format(_passes(view, convert, record, rule), sql.Literal(message))


def _skip_row(view: CompatView, convert: Converter, rule: str) -> sql.Composable:
    """Leave OLD untouched, as the old table's USING did for a row the role may see but not change."""
    if rule == "true":
        return sql.SQL("")
    return sql.SQL("IF NOT {} THEN RETURN NULL; END IF;\n    ").format(_passes(view, convert, "OLD", rule))


def _guards(view: CompatView, convert: Converter) -> sql.Composable:
    """The old table's row rules for the acting role, checked before anything is written (the view's
    grants, the old table's, were already checked by PostgreSQL for the caller)."""
    rules = view.rules
    inside = sql.SQL("")
    if view.predicate:  # first, for its clearer message: the row is not this source's at all
        inside = sql.SQL("IF NOT {} THEN {} END IF;\n    ").format(
            _passes(view, convert, "NEW", view.predicate), _outside_error(view)
        )
    return sql.SQL(
        "IF TG_OP = 'INSERT' THEN\n    {numbers}{computed}{inside}{insert}\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n    {skip_update}{computed}{inside}{update}\n"
        "  ELSE\n    {skip_delete}\n"
        "  END IF;"
    ).format(
        numbers=_fill_numbers(view, convert.conn),
        computed=_computed(view),
        inside=inside,
        insert=_refuse_row(view, convert, "NEW", rules.insert_check),
        skip_update=_skip_row(view, convert, rules.update_using),
        update=_refuse_row(view, convert, "NEW", rules.update_check),
        skip_delete=_skip_row(view, convert, rules.delete_using),
    )


def write_body(view: CompatView, convert: Converter) -> sql.Composable:
    """plpgsql of the INSTEAD OF trigger: the old table's row rules, then one branch per operation, each
    returning the row in the old shape."""
    check = sql.SQL("IF NOT inside THEN {} END IF;").format(_outside_error(view))
    return sql.SQL(
        "#variable_conflict use_column\n"
        "DECLARE\n  inside boolean;\n  written boolean;\n"
        "BEGIN\n"
        "  {guards}\n"
        "  {via}\n"
        "  IF TG_OP = 'INSERT' THEN\n    {mark_insert}\n    {insert}\n    {unmark_insert}\n    {unset}\n"
        "    {check}\n    RETURN NEW;\n"
        "  ELSIF TG_OP = 'UPDATE' THEN\n    {update}\n    written := FOUND;\n    {unset}\n"
        "    IF NOT written THEN RETURN NULL; END IF;\n    {check}\n    RETURN NEW;\n"
        "  ELSE\n    {delete}\n    written := FOUND;\n    {unset}\n    IF NOT written THEN RETURN NULL; END IF;\n"
        "    RETURN OLD;\n"
        "  END IF;\n"
        "END"
    ).format(
        # Which old name the write came through, for the reverse sync of twins (reverse_sync.py): the
        # write lands back in that twin only, as it did before cleanup. Cleared once written.
        via=sql.SQL("PERFORM pg_catalog.set_config({}, {}, true);").format(
            sql.Literal(names.VIA_SETTING), sql.Literal(f"{view.source.schema}.{view.source.table}")
        ),
        unset=sql.SQL("PERFORM pg_catalog.set_config({}, '', true);").format(sql.Literal(names.VIA_SETTING)),
        # `written`: FOUND of the UPDATE or DELETE, read before `unset`, whose PERFORM sets FOUND true.
        # An insert that merges into a twin's row reaches the new table as an UPDATE: say it was an insert.
        mark_insert=sql.SQL("PERFORM pg_catalog.set_config({}, 'insert', true);").format(
            sql.Literal(names.VIA_INSERT_SETTING)
        ),
        unmark_insert=sql.SQL("PERFORM pg_catalog.set_config({}, '', true);").format(
            sql.Literal(names.VIA_INSERT_SETTING)
        ),
        guards=_guards(view, convert),
        insert=_insert(view, convert),
        update=_update(view, convert),
        delete=_delete(view, convert),
        check=check,
    )


def refuse_body(view: CompatView) -> sql.Composable:
    message = (
        f"dualshift: writes through the compatibility view {view.view_name} are refused:"
        f' the plan sets view_writes = "refuse" for source {view.source.table} of {view.table.name}'
    )
    hint = f'write to {view.plan.target_schema}.{view.table.name} instead, or set view_writes = "allow" in {view.plan.path}'
    return sql.SQL(
        "BEGIN\n  RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = {} || ' (' || TG_OP || ')', HINT = {};\nEND"
    ).format(sql.Literal(message), sql.Literal(hint))


def trigger_statements(conn: psycopg.Connection, view: CompatView, convert: Converter) -> list[sql.Composable]:
    """The INSTEAD OF trigger and its function: SECURITY DEFINER, as the view reads with its owner's rights
    (the new table's grants are the intersection of the sources', narrower than the old table's), after
    checking the old table's row rules for the acting role; its settings pinned as every dualshift
    function's are (search_path first), every name qualified. Owned by the compat role (`owner_statements`
    ran first). Only a trigger can call it; EXECUTE is taken from PUBLIC all the same."""
    body = refuse_body(view) if view.source.view_writes == "refuse" else write_body(view, convert)
    create = sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER {} AS {}"
    ).format(view.function, owners.settings_clause(view.plan), sql.Literal(body.as_string(conn)))
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.PRIVATE_SCHEMA)),
        *owners.owned_functions(role_name(conn, view.plan), [(create, view.function, sql.SQL(""))]),
        sql.SQL(
            "CREATE TRIGGER {} INSTEAD OF INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
        ).format(view.trigger, view.view, view.function),
    ]


# ─── the role that owns the write triggers ───────────────────────────────────────────────────────

POLICY = "dualshift_compat"


def role_name(conn: psycopg.Connection, plan: Plan) -> str:
    return owners.role_name(conn, plan, owners.COMPAT)


# What the write triggers evaluate besides the new tables, outside pg_catalog: the archived old tables'
# policies (tested for the acting role), the new tables' defaults (a NULL into a NOT NULL column) and the
# old generation expressions (recomputed from NEW). Relations the policies read, functions they all call.
REFERENCED = """WITH sources AS (
  SELECT pg_catalog.to_regclass(name) AS oid FROM pg_catalog.unnest(%(archived)s::pg_catalog.text[]) AS name
), targets AS (
  SELECT pg_catalog.to_regclass(name) AS oid FROM pg_catalog.unnest(%(new)s::pg_catalog.text[]) AS name
), evaluated AS (
  SELECT 'pg_catalog.pg_policy'::pg_catalog.regclass AS classid, p.oid AS objid FROM pg_catalog.pg_policy p
  WHERE p.polrelid IN (SELECT oid FROM sources)
  UNION ALL
  SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass, d.oid FROM pg_catalog.pg_attrdef d
  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
  WHERE d.adrelid IN (SELECT oid FROM targets) OR (d.adrelid IN (SELECT oid FROM sources) AND a.attgenerated <> '')
)
SELECT DISTINCT 'function', p.oid::pg_catalog.regprocedure::pg_catalog.text, n.nspname, '', false,
       p.proacl IS NULL OR 0 = ANY (SELECT a.grantee FROM pg_catalog.aclexplode(p.proacl) a
                                    WHERE a.privilege_type = 'EXECUTE')
FROM pg_catalog.pg_depend d JOIN evaluated e ON e.classid = d.classid AND e.objid = d.objid
JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND n.nspname <> 'pg_catalog'
UNION
SELECT DISTINCT 'relation', c.oid::pg_catalog.regclass::pg_catalog.text, n.nspname, c.relname, c.relrowsecurity,
       false
FROM pg_catalog.pg_depend d JOIN evaluated e ON e.classid = d.classid AND e.objid = d.objid
JOIN pg_catalog.pg_class c ON c.oid = d.refobjid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND c.oid NOT IN (SELECT oid FROM sources UNION ALL SELECT oid FROM targets) AND n.nspname <> 'pg_catalog'
ORDER BY 1, 2"""

# Schemas of the types the triggers cast to (the new and the old columns' types), outside pg_catalog.
TYPE_SCHEMAS = """SELECT DISTINCT n.nspname FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE a.attrelid IN (SELECT pg_catalog.to_regclass(name) FROM pg_catalog.unnest(%s::pg_catalog.text[]) AS name)
  AND a.attnum > 0 AND NOT a.attisdropped AND n.nspname <> 'pg_catalog'"""


def _numbering_sequences(conn: psycopg.Connection, plan: Plan) -> list[str]:
    """The archived sequences the triggers number kept identity and serial columns from (`_fill_numbers`)."""
    found = []
    for table in plan.tables:
        for source in table.sources:
            kept = table.column_mapping(source.table)
            rows = conn.execute(OWNED_SEQUENCES, (plan.archive_schema, source.table)).fetchall()
            found += [sequence for column, sequence in rows if column in kept]
    return found


def owner_statements(conn: psycopg.Connection, plan: Plan) -> list[sql.Composable]:
    """The compat role and exactly what the write triggers need, for `cleanup` to run before the views:
    membership of the sync group (dualshift's restrictive policies on the new tables let it through, as
    they let the sync triggers: the trigger has checked the old table's rules itself), USAGE on the
    schemas it names, writes on the new tables and their sequences, the archived numbering sequences,
    what the old tables' policies read and call, and a policy where row-level security is on."""
    role = role_name(conn, plan)
    new = [sql.Identifier(plan.target_schema, t.name) for t in plan.tables]
    archived = [sql.Identifier(plan.archive_schema, s.table) for t in plan.tables for s in t.sources]
    relations = [r.as_string(conn) for r in new + archived]
    referenced = conn.execute(
        REFERENCED, {"archived": [r.as_string(conn) for r in archived], "new": [r.as_string(conn) for r in new]}
    ).fetchall()
    numbering = _numbering_sequences(conn, plan)
    schemas = {plan.target_schema, *(schema for _, _, schema, _, _, _ in referenced)}
    schemas |= {schema for (schema,) in conn.execute(TYPE_SCHEMAS, (relations,)).fetchall()}
    if numbering:
        schemas.add(plan.archive_schema)
    evaluated = "the old tables' policies, defaults or generated columns name it"
    grants = [
        *(owners.Grant("USAGE", "schema", s, evaluated if s != plan.target_schema else "") for s in sorted(schemas)),
        *owners.relation_grants(conn, ("SELECT", "INSERT", "UPDATE", "DELETE"), new),
        *owners.sequence_grants(conn, new),
        *(owners.Grant("USAGE", "sequence", s, "it numbers kept identity and serial columns") for s in numbering),
    ]
    policies: list[sql.Composable] = []
    for kind, name, schema, relation, row_security, public_executes in referenced:
        if kind == "function" and not public_executes:
            grants.append(owners.Grant("EXECUTE", "function", name, evaluated))
        elif kind == "relation":
            # The owner it replaces read these past their row-level security too (superuser or BYPASSRLS).
            grants.append(owners.Grant("SELECT", "table", name, evaluated))
            if row_security:
                policies += owners.policy_statements(conn, POLICY, role, schema, relation)
    statements: list[sql.Composable] = [
        sql.SQL(names.ensure_sync_group()),
        *owners.role_statements(conn, role, (names.SYNC_GROUP,)),
        *owners.granted(role, grants, "the compatibility views' write triggers"),
        *policies,
    ]
    for table in plan.tables:
        statements += owners.policy_statements(conn, POLICY, role, plan.target_schema, table.name)
    return statements


def remove_owner_statements(conn: psycopg.Connection, plan: Plan) -> list[sql.Composable]:
    """After the views and their functions are gone: the role, its grants and its policies."""
    return owners.drop_statements(conn, role_name(conn, plan))


REVOKE_EVERY_GRANT = """DECLARE
  holder text;
BEGIN
  FOR holder IN
    SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END
    FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
    LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
    WHERE c.oid = pg_catalog.to_regclass({relation}) AND a.grantee <> c.relowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %s', {relation}, holder);
  END LOOP;
END"""


def revoke_every_grant(conn: psycopg.Connection, schema: str, name: str) -> sql.Composable:
    """A DO block taking back every grant a relation has when it runs: what default privileges (Supabase's
    `GRANT ALL … TO anon, authenticated, service_role`) gave a view the moment it was created."""
    relation = sql.Literal(sql.Identifier(schema, name).as_string(conn))
    return sql.SQL("DO {}").format(sql.Literal(sql.SQL(REVOKE_EVERY_GRANT).format(relation=relation).as_string(conn)))


def _column_grants(conn: psycopg.Connection, archived_schema: str, schema: str, name: str) -> list[sql.Composable]:
    """Column privileges of the old table (GRANT UPDATE (col) …) on the same columns of the view."""
    rows = conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END,"
        " a.privilege_type, a.is_grantable, t.attname"
        " FROM pg_catalog.pg_attribute t JOIN pg_catalog.pg_class c ON c.oid = t.attrelid"
        " CROSS JOIN LATERAL pg_catalog.aclexplode(t.attacl) a LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee"
        " WHERE t.attrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))"
        " AND t.attnum > 0 AND NOT t.attisdropped AND a.grantee <> c.relowner ORDER BY t.attnum, 1, 2",
        (archived_schema, name),
    ).fetchall()
    return [
        sql.SQL("GRANT {} ({}) ON {} TO {}{}").format(
            sql.SQL(privilege),
            sql.Identifier(column),
            sql.Identifier(schema, name),
            sql.SQL(role),
            sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
        )
        for role, privilege, grantable, column in rows
        if privilege in ("SELECT", "INSERT", "UPDATE")
    ]


def _same_grants(conn: psycopg.Connection, archived_schema: str, schema: str, name: str) -> list[sql.Composable]:
    """The view answers to the roles the old table answered to, with the same rights and never more (the
    new table's rights and row-level security apply beneath it)."""
    rows = conn.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END,"
        " a.privilege_type, a.is_grantable"
        " FROM pg_catalog.pg_class c CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a"
        " LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee"
        " WHERE c.oid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))"
        " AND a.grantee <> c.relowner ORDER BY 1, 2",
        (archived_schema, name),
    ).fetchall()
    return [
        sql.SQL("GRANT {} ON {} TO {}{}").format(
            sql.SQL(privilege),
            sql.Identifier(schema, name),
            sql.SQL(role),
            sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
        )
        for role, privilege, grantable in rows
        if privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
    ]


def compat_view_statements(conn: psycopg.Connection, plan: Plan, mapping: SourceMapping) -> list[sql.Composable]:
    """Everything that makes the old name answer as before: the view, the old defaults, the write
    triggers and the old table's grants (every grant default privileges gave the new view taken back
    first). Reads the archived old table and the promoted new table."""
    view = describe(conn, plan, mapping)
    convert = Converter(conn, plan.timezone)
    return [
        view_statement(view, convert),
        *default_statements(view),
        *trigger_statements(conn, view, convert),
        revoke_every_grant(conn, mapping.source.schema, mapping.source.table),
        *_same_grants(conn, plan.archive_schema, mapping.source.schema, mapping.source.table),
        *_column_grants(conn, plan.archive_schema, mapping.source.schema, mapping.source.table),
    ]


# The archived old table's columns numbered from a sequence they own (identity or serial), with it.
OWNED_SEQUENCES = """SELECT a.attname, pg_catalog.format('%%I.%%I', sn.nspname, s.relname)
FROM pg_catalog.pg_depend o
JOIN pg_catalog.pg_class s ON s.oid = o.objid AND s.relkind = 'S'
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = o.refobjid AND a.attnum = o.refobjsubid
WHERE o.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
  AND o.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  AND o.refobjid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))
ORDER BY a.attnum"""


def finalize_statements(conn: psycopg.Connection, plan: Plan, table: NewTable, source: Source) -> list[sql.Composable]:
    """Before `finalize` drops the archive, with the sequences its numbered columns own: each column the
    plan keeps gets the view's own sequence, started where the archived one stopped (the write trigger
    takes it), and the view loses any default that named the archived one."""
    kept = table.column_mapping(source.table)
    rows = conn.execute(OWNED_SEQUENCES, (plan.archive_schema, source.table)).fetchall()
    function = CompatView(plan, table, source, (), (), None).function
    # The role that owns the write trigger now: named after the database at cleanup, which a database
    # copied or renamed since (a branch, a restore) no longer matches.
    role = owners.function_owner(conn, function.as_string(conn)) or role_name(conn, plan)
    owned = role.startswith(f"dualshift_{owners.COMPAT}_") and owners.role_exists(conn, role)  # else an older
    # dualshift's cleanup, whose triggers kept the executor as owner
    statements: list[sql.Composable] = []
    for column, archived in rows:
        if column not in kept:
            continue
        own = compat_sequence(source, column)
        statements.append(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} AS bigint").format(own))
        if owned:
            grants = [
                *owners.schema_usage({names.PRIVATE_SCHEMA}),
                owners.Grant("USAGE", "sequence", own.as_string(conn)),
            ]
            statements += owners.granted(role, grants, f"the write trigger of the compatibility view {source.table}")
        statements += [
            sql.SQL("SELECT pg_catalog.setval({}, s.last_value, s.is_called) FROM {} AS s").format(
                sql.Literal(own.as_string(conn)), sql.SQL(archived)
            ),
            sql.SQL("ALTER VIEW {} ALTER COLUMN {} DROP DEFAULT").format(
                sql.Identifier(source.schema, source.table), sql.Identifier(column)
            ),
        ]
    return statements


def drop_statements(plan: Plan, mapping: SourceMapping) -> list[sql.Composable]:
    """What rollback after cleanup drops before the old table comes back: the view (its trigger goes with
    it) and the trigger function. Then, once for all views, `remove_owner_statements`."""
    view = CompatView(plan, mapping.table, mapping.source, (), (), None)
    return [
        sql.SQL("DROP VIEW IF EXISTS {}").format(view.view),
        sql.SQL("DROP FUNCTION IF EXISTS {}()").format(view.function),
    ]
