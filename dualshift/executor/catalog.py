"""What the live database holds, and the plan validated against it before any SQL runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dualshift.executor.connection import ExecutorError
from dualshift.findings import Finding, Severity, errors
from dualshift.plan import NewTable, Plan, Source, line_of, plan_lines


def columns_of(conn: psycopg.Connection, schema: str, table: str) -> dict[str, str]:
    """column → SQL type, in table order; empty when the table does not exist."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    return dict(rows)


def generated_keys(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    """Columns of a primary key or unique constraint the database fills itself: identity or serial (a
    sequence the column owns). Catalog rows only: nothing here waits for a lock on the table."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped"
        " AND (a.attidentity <> '' OR EXISTS (SELECT 1 FROM pg_depend o JOIN pg_class s ON s.oid = o.objid"
        " WHERE o.classid = 'pg_class'::regclass AND s.relkind = 'S' AND o.refclassid = 'pg_class'::regclass"
        " AND o.refobjid = c.oid AND o.refobjsubid = a.attnum))"
        " AND EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype IN ('p', 'u')"
        " AND a.attnum = ANY (k.conkey))",
        (schema, table),
    ).fetchall()
    return {name for (name,) in rows}


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


# ---------------------------------------------------------------------------------------------
# validation: the one check of the plan against the catalog, for `plan check --dsn` and every phase

PINNED_SEARCH_PATH = "pg_catalog, pg_temp"


class ValidationError(ExecutorError):
    """The plan does not fit the database; `findings` holds every error, each on its own line."""

    def __init__(
        self, plan_path: str, findings: list[Finding], what: str = "the plan does not fit the database"
    ) -> None:
        self.findings = findings
        lines = "\n".join(f"  {f.render(plan_path)}" for f in findings)
        super().__init__(f"{plan_path}: {what} ({len(findings)} error(s)):\n{lines}")


def validate(conn: psycopg.Connection, plan: Plan) -> dict[tuple[str, str], SourceMapping]:
    """The mapping of every source; raise one ValidationError listing every error `check` finds."""
    mappings, findings = check(conn, plan)
    found = errors(findings)
    if found:
        raise ValidationError(plan.path, found)
    return mappings


def check(conn: psycopg.Connection, plan: Plan) -> tuple[dict[tuple[str, str], SourceMapping], list[Finding]]:
    """Every problem of the plan against the live catalog (not the first only), and the mapping of each
    source that has no error. Read-only, with the search_path pinned as the executor's sessions pin it."""
    checker = _Checker(conn, plan)
    with pinned_search_path(conn):
        for table in plan.tables:
            checker.new_table(table)
            for position in range(len(table.sources)):
                checker.source(table, position)
    return checker.mappings, checker.findings


@contextmanager
def pinned_search_path(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction whose search_path is `pg_catalog, pg_temp`: nothing planted in public is resolved."""
    with conn.transaction():
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (PINNED_SEARCH_PATH,))
        yield


def probe(conn: psycopg.Connection, statement: sql.Composable | str, params: tuple = ()) -> str | None:
    """Run a statement in a savepoint; the database's error message when it fails, else None."""
    try:
        with conn.transaction():
            conn.execute(statement, params)
    except psycopg.Error as exc:
        return (exc.diag.message_primary or str(exc)).strip()
    return None


class _Checker:
    def __init__(self, conn: psycopg.Connection, plan: Plan) -> None:
        self.conn = conn
        self.plan = plan
        self.lines = plan_lines(plan)
        self.findings: list[Finding] = []
        self.mappings: dict[tuple[str, str], SourceMapping] = {}
        self.bad_types: set[tuple[str, str]] = set()  # (new table, column) whose type does not resolve

    def line(self, *needles: str) -> int | None:
        return line_of(self.lines, *needles)

    def add(self, severity: Severity, check: str, message: str, **where) -> Finding:
        finding = Finding(severity, check, message, **where)
        self.findings.append(finding)
        return finding

    # -- the new table -------------------------------------------------------------------------

    def new_table(self, table: NewTable) -> None:
        table_line = self.line(f'name = "{table.name}"')
        for column in table.columns:
            problem = self.type_problem(column.type)
            if problem:
                self.bad_types.add((table.name, column.name))
                self.add(
                    "error",
                    "unknown-type",
                    f"{table.name}.{column.name}: type {column.type} {problem}",
                    table=table.name,
                    column=column.name,
                    line=self.line(f'name = "{table.name}"', f'name = "{column.name}"') or table_line,
                )
        if any(t == table.name for t, _ in self.bad_types):
            return  # the expressions below are typed by the columns
        row = typed_null_row(table)
        for expression in table.checks:
            problem = probe(self.conn, sql.SQL("SELECT 1 FROM {} WHERE {}").format(row, sql.SQL(expression)))
            if problem:
                self.add(
                    "error",
                    "invalid-check",
                    f"{table.name}: check ({expression}) is not valid SQL over its columns: {problem}",
                    table=table.name,
                    line=self.line(f'name = "{table.name}"', expression[:30]) or table_line,
                )
        for column in table.columns:
            if column.default is None:
                continue
            cast = sql.SQL("SELECT CAST(({}) AS {})").format(sql.SQL(column.default), sql.SQL(column.type))
            problem = probe(self.conn, cast)
            if problem:
                self.add(
                    "error",
                    "invalid-default",
                    f"{table.name}.{column.name}: default {column.default} does not work: {problem}",
                    table=table.name,
                    column=column.name,
                    line=self.line(f'name = "{table.name}"', f'name = "{column.name}"') or table_line,
                )

    def type_problem(self, type_text: str) -> str | None:
        """Why a type cannot be used (with the spelling that would work, where one exists), else None."""
        try:
            with self.conn.transaction():
                found = self.conn.execute("SELECT pg_catalog.to_regtype(%s) IS NOT NULL", (type_text,)).fetchone()[0]
        except psycopg.Error as exc:
            return f"is not a type: {(exc.diag.message_primary or str(exc)).strip()}"
        if not found:
            return "does not exist" + self.spelling_hint(type_text)
        problem = probe(self.conn, sql.SQL("SELECT CAST(NULL AS {})").format(sql.SQL(type_text)))
        return f"is not usable: {problem}" if problem else None

    def spelling_hint(self, type_text: str) -> str:
        """Executor sessions resolve only pg_catalog: a type of another schema, or of mixed case, must be
        written schema-qualified and quoted as it is in the catalog."""
        name = re.sub(r"\[\d*\]", "", type_text).split(".")[-1].strip().strip('"')
        rows = self.conn.execute(
            "SELECT pg_catalog.format('%%I.%%I', n.nspname, t.typname) FROM pg_catalog.pg_type t"
            " JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace"
            " WHERE pg_catalog.lower(t.typname) = pg_catalog.lower(%s) AND t.typtype IN ('b', 'd', 'e', 'r', 'c', 'm')"
            " ORDER BY 1 LIMIT 3",
            (name,),
        ).fetchall()
        if not rows:
            return ""
        return " in pg_catalog (executor sessions resolve no other schema); write it as " + " or ".join(
            r[0] + ("[]" * type_text.count("[")) for r in rows
        )

    # -- one source ----------------------------------------------------------------------------

    def source(self, table: NewTable, position: int) -> None:
        source = table.sources[position]
        qualified = f"{source.schema}.{source.table}"
        where = {"table": table.name, "source": qualified}
        source_line = self.line(f'table = "{source.table}"')
        before = len(errors(self.findings))

        def column_line(column: str) -> int | None:
            return self.line(f'table = "{source.table}"', column) or source_line

        old_columns = columns_of(self.conn, source.schema, source.table)
        if not old_columns:
            self.add(
                "error",
                "missing-table",
                f"source {qualified} of {table.name}: no such table in the database",
                line=source_line,
                **where,
            )
            return
        missing_key = [k for k in source.key if k not in old_columns]
        if missing_key:
            self.add(
                "error",
                "missing-column",
                f"{qualified}: key column(s) {', '.join(missing_key)} do not exist",
                column=missing_key[0],
                line=self.line(f'table = "{source.table}"', "key") or source_line,
                **where,
            )
        for old in source.rename:
            if old not in old_columns:
                self.add(
                    "error",
                    "missing-column",
                    f"{qualified}: column {old} named in the plan does not exist (renamed to {source.rename[old]})",
                    column=old,
                    line=column_line(old),
                    **where,
                )
        for old in source.drop:
            if old not in old_columns:
                self.add(
                    "warning",
                    "dropped-column-absent",
                    f"{qualified}: the plan drops {old}, which the database does not have (nothing to drop)",
                    column=old,
                    line=column_line(old),
                    **where,
                )
        for old in sorted(generated_keys(self.conn, source.schema, source.table) & set(source.drop)):
            self.add(
                "warning",
                "dropped-generated-key",
                f"{qualified}.{old}: the database generates this key and the plan drops it, so after cleanup"
                f" `INSERT … RETURNING {old}` through the view {source.table} gives NULL; map it: add a column"
                f" {old} to {table.name} and take it out of drop",
                column=old,
                line=column_line(old),
                **where,
            )
        mapped = table.column_mapping(source.table)
        renamed_into = set(source.rename.values())
        for old in old_columns:
            if old in mapped or old in source.drop:
                continue
            if old in renamed_into and old not in source.rename:
                self.add(
                    "error",
                    "shadowed-column",
                    f"{qualified}.{old}: {table.name}.{old} is fed by the rename of another column, so this one "
                    f"would migrate nowhere; rename it too or list it in drop",
                    column=old,
                    line=column_line(old),
                    **where,
                )
            else:
                self.add(
                    "warning",
                    "unmapped-column",
                    f"{qualified}.{old} maps to no column of {table.name} and is not in drop: its values stay "
                    f"only in the archive",
                    column=old,
                    line=source_line,
                    **where,
                )
        for column, value in source.constants.items():
            if (table.name, column) in self.bad_types:
                continue
            cast = sql.SQL("SELECT CAST({} AS {})").format(sql.Literal(value), sql.SQL(table.column(column).type))
            problem = probe(self.conn, cast)
            if problem:
                self.add(
                    "error",
                    "invalid-constant",
                    f"{qualified}: constant {column} = {value!r} does not fit {table.column(column).type}: {problem}",
                    column=column,
                    line=column_line(column),
                    **where,
                )
        for old, new in mapped.items():
            if old not in old_columns or (table.name, new) in self.bad_types:
                continue
            new_type = table.column(new).type
            cast = sql.SQL("SELECT CAST(CAST(NULL AS {}) AS {})").format(sql.SQL(old_columns[old]), sql.SQL(new_type))
            problem = probe(self.conn, cast)
            if problem:
                self.add(
                    "error",
                    "no-cast",
                    f"{qualified}.{old} ({old_columns[old]}) cannot become {table.name}.{new} ({new_type}): {problem}",
                    column=old,
                    line=self.line(f'name = "{table.name}"', f'name = "{new}"') or source_line,
                    **where,
                )
        mapping = mapping_for(self.plan, table, position, old_columns)
        fed = set(mapping.new_columns)
        for column in table.columns:
            if not column.nullable and column.default is None and column.name not in fed:
                self.add(
                    "error",
                    "not-null-unfed",
                    f"{qualified}: nothing feeds {table.name}.{column.name}, which is NOT NULL without a default",
                    column=column.name,
                    line=source_line,
                    **where,
                )
        unfed_key = [k for k in table.key if k not in fed]
        if unfed_key:
            self.add(
                "error",
                "key-unfed",
                f"{qualified}: the key column(s) {', '.join(unfed_key)} are not fed by this source",
                line=source_line,
                **where,
            )
        typed = not any(t == table.name for t, _ in self.bad_types)  # its SQL casts into the new types
        if typed and len(errors(self.findings)) == before:
            self.mappings[(table.name, source.table)] = mapping


def typed_null_row(table: NewTable) -> sql.Composable:
    """`(SELECT CAST(NULL AS t) AS c, …) AS r`: a row of the new table's shape, to compile expressions over."""
    return sql.SQL("(SELECT {}) AS r").format(
        sql.SQL(", ").join(
            sql.SQL("CAST(NULL AS {}) AS {}").format(sql.SQL(c.type), sql.Identifier(c.name)) for c in table.columns
        )
    )
