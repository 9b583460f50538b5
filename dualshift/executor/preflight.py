"""Preflight: the data checks that run before any DDL (by `plan check --dsn` and by `migrate create`).

Read-only: every count runs in one REPEATABLE READ READ ONLY transaction (one snapshot for every
figure) with the search_path pinned to `pg_catalog, pg_temp`. Per source, with the row count and up
to ten sample keys (in key order) of each finding:

- errors (`create` refuses): rows whose key has a NULL part (keyset pagination never sees them);
  keys held by more than one row of one source (one of them would be dropped); values that do not
  survive the cast into the new column's type (rounding, truncation) or cannot be cast at all (text
  that is not a uuid, an enum label or JSON; numbers out of range); rows that would violate the new
  table's NOT NULL or one of its checks (evaluated over the mapped row, defaults included);
- warnings: rows that precedence sets aside (the key is held by an earlier source, and a column
  both feed differs; under `precedence = "coalesce"`, holds another non-NULL value): they stay only
  in the archive.

PostgreSQL 15 has no pg_input_is_valid, so each (old type, new type) pair gets two small plpgsql
functions in pg_temp, created before the read-only transaction (which may not create anything) and
dropped after it: one classifies a value (0 kept, 1 changed by the round trip, 2 not castable), the
other casts it or gives NULL, so the check and precedence expressions never fail on a bad value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dualshift.executor import inventory
from dualshift.executor.catalog import (
    PINNED_SEARCH_PATH,
    SourceMapping,
    ValidationError,
    check,
    columns_of,
    probe,
)
from dualshift.executor.connection import ExecutorError
from dualshift.findings import MAX_SAMPLES, Finding, Severity, errors
from dualshift.plan import NewTable, Plan, line_of, plan_lines

KEPT, CHANGED, NOT_CASTABLE = 0, 1, 2


def check_all(conn: psycopg.Connection, plan: Plan) -> list[Finding]:
    """The plan against the catalog, then (for every source that validates) against the data."""
    return check_with_dependents(conn, plan)[0]


def check_with_dependents(conn: psycopg.Connection, plan: Plan) -> tuple[list[Finding], list[dict]]:
    """`check_all`, and the inventory of what depends on the old tables with the plan's decision for each."""
    mappings, findings = check(conn, plan)
    findings += run(conn, plan, mappings)
    dependents, undecided = inventory.findings(conn, plan)
    return findings + undecided, inventory.decided(dependents, plan)


def run(conn: psycopg.Connection, plan: Plan, mappings: dict[tuple[str, str], SourceMapping]) -> list[Finding]:
    """The data findings of every source that has a mapping (a source with a catalog error has none)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ExecutorError("preflight needs a connection outside any transaction")
    casts = _Casts(conn)
    with casts.installed(plan, mappings), _read_only_snapshot(conn):
        findings: list[Finding] = []
        lines = plan_lines(plan)
        for table in plan.tables:
            table_mappings = [
                mappings[(table.name, s.table)] for s in table.sources if (table.name, s.table) in mappings
            ]
            for mapping in table_mappings:
                findings += _SourceChecks(conn, plan, mapping, casts, lines).run(table_mappings)
    return findings


def before_create(conn: psycopg.Connection, plan: Plan, skip: bool) -> dict:
    """Run the preflight ahead of `create`'s first DDL; refuse on any error unless `skip` (which the
    caller audits, with the figures this returns)."""
    mappings, findings = check(conn, plan)
    if errors(findings):
        raise ValidationError(plan.path, errors(findings))  # what every phase refuses, skip or not
    if skip:
        return {"skipped": True, "note": "preflight skipped (--skip-preflight)"}
    dependents, undecided = inventory.findings(conn, plan)
    findings += run(conn, plan, mappings) + undecided
    found = errors(findings)
    if found:
        raise ValidationError(
            plan.path,
            found,
            "preflight found rows that would be lost or refused, or dependents without a decision; fix them in the"
            " data or the plan, then run create again (or pass --skip-preflight to accept them)",
        )
    decided = dict(plan.dependents)
    return {
        "skipped": False,
        "errors": 0,
        "warnings": len(findings),
        "warned": _warned(plan, findings),
        "dependents": {d.key: decided.get(d.key, d.does[0]) for d in dependents},  # an owned sequence: implied
    }


def _warned(plan: Plan, findings: list[Finding]) -> list[str]:
    """The warnings that change what the application sees after cleanup, one line each."""
    return [f.render(str(plan.path)) for f in findings if f.check == "dropped-generated-key"]


@contextmanager
def _read_only_snapshot(conn: psycopg.Connection) -> Iterator[None]:
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (PINNED_SEARCH_PATH,))
        yield


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cast:
    status: sql.Identifier  # pg_temp function: old value → KEPT / CHANGED / NOT_CASTABLE
    value: sql.Identifier  # pg_temp function: old value → new value, NULL when it cannot be cast
    old_type: str
    new_type: str
    round_trip: bool  # the value must come back unchanged (else it need only parse)

    def changed(self, value: sql.Composable) -> sql.Composable:
        """Plain SQL: true where the value changes on the way; raises where one cannot be cast at all."""
        old, new = sql.SQL(self.old_type), sql.SQL(self.new_type)
        if self.round_trip:
            return sql.SQL("CAST(CAST({v} AS {new}) AS {old}) IS DISTINCT FROM {v}").format(v=value, new=new, old=old)
        return sql.SQL("CAST({v} AS {new}) IS NULL AND {v} IS NOT NULL").format(v=value, new=new)


class _Casts:
    """The pg_temp functions of each (old type, new type) pair whose spellings differ."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.pairs: dict[tuple[str, str], _Cast] = {}
        self.spellings: dict[str, str] = {}
        # Source columns (schema, table, column) whose every value casts: plain CASTs serve for them.
        self.all_castable: set[tuple[str, str, str]] = set()

    def get(self, old_type: str, new_type: str) -> _Cast | None:
        return self.pairs.get((old_type, new_type))

    @contextmanager
    def installed(self, plan: Plan, mappings: dict[tuple[str, str], SourceMapping]) -> Iterator[None]:
        try:
            with self.conn.transaction():
                self.conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (PINNED_SEARCH_PATH,))
                for mapping in mappings.values():
                    old_columns = columns_of(self.conn, mapping.source.schema, mapping.source.table)
                    for old, new in mapping.table.column_mapping(mapping.source.table).items():
                        new_type = mapping.table.column(new).type
                        if old in old_columns and old_columns[old] != self.spelling(new_type):
                            self.install(old_columns[old], new_type)
            yield
        finally:
            self.drop()

    def spelling(self, type_text: str) -> str:
        """The catalog's spelling of a type (timestamptz → timestamp with time zone), typmod included."""
        if type_text not in self.spellings:
            # The typmod comes from a result's description, which reports a domain as its base type:
            # the type itself comes from to_regtype, and the typmod only when the two agree.
            result = self.conn.execute(sql.SQL("SELECT CAST(NULL AS {})").format(sql.SQL(type_text))).pgresult
            self.spellings[type_text] = self.conn.execute(
                "SELECT pg_catalog.format_type(t, CASE WHEN t = %s::oid THEN %s ELSE -1 END)"
                " FROM pg_catalog.to_regtype(%s) AS t",
                (result.ftype(0), result.fmod(0), type_text),
            ).fetchone()[0]
        return self.spellings[type_text]

    def install(self, old_type: str, new_type: str) -> None:
        if (old_type, new_type) in self.pairs:
            return
        digest = hashlib.sha256(f"{old_type}\0{new_type}".encode()).hexdigest()[:16]
        old, new = sql.SQL(old_type), sql.SQL(new_type)
        # Text becomes a uuid, a number or JSON by parsing, which normalises its spelling: only whether
        # it parses matters. Otherwise the value must come back unchanged (when its type can compare).
        round_trip = self._comparable(old_type) and not (self._is_text(old_type) and not self._is_text(new_type))
        cast = _Cast(
            sql.Identifier("pg_temp", f"dualshift_cast_status_{digest}"),
            sql.Identifier("pg_temp", f"dualshift_cast_{digest}"),
            old_type,
            new_type,
            round_trip,
        )
        changed = (
            sql.SQL("IF CAST(CAST(v AS {new}) AS {old}) IS DISTINCT FROM v THEN RETURN {changed}; END IF;")
            if round_trip
            else sql.SQL("PERFORM CAST(v AS {new});")
        ).format(old=old, new=new, changed=sql.Literal(CHANGED))
        body = sql.SQL("BEGIN {changed} RETURN {kept}; EXCEPTION WHEN OTHERS THEN RETURN {bad}; END").format(
            changed=changed, kept=sql.Literal(KEPT), bad=sql.Literal(NOT_CASTABLE)
        )
        self.conn.execute(
            sql.SQL(
                "CREATE FUNCTION {name}(v {old}) RETURNS integer LANGUAGE plpgsql STABLE"
                " SET search_path = pg_catalog, pg_temp AS {body}"
            ).format(name=cast.status, old=old, body=sql.Literal(body.as_string(self.conn)))
        )
        value_body = sql.SQL("BEGIN RETURN CAST(v AS {new}); EXCEPTION WHEN OTHERS THEN RETURN NULL; END").format(
            new=new
        )
        self.conn.execute(
            sql.SQL(
                "CREATE FUNCTION {name}(v {old}) RETURNS {new} LANGUAGE plpgsql STABLE"
                " SET search_path = pg_catalog, pg_temp AS {body}"
            ).format(name=cast.value, old=old, new=new, body=sql.Literal(value_body.as_string(self.conn)))
        )
        self.pairs[(old_type, new_type)] = cast

    def _is_text(self, type_text: str) -> bool:
        row = self.conn.execute(
            "SELECT t.typcategory = 'S' FROM pg_catalog.pg_type t WHERE t.oid = pg_catalog.to_regtype(%s)",
            (type_text,),
        ).fetchone()
        return bool(row and row[0])

    def _comparable(self, type_text: str) -> bool:
        """Whether the type has an equality (json has none)."""
        typed = sql.SQL("CAST(NULL AS {})").format(sql.SQL(type_text))
        return probe(self.conn, sql.SQL("SELECT {0} IS DISTINCT FROM {0}").format(typed)) is None

    def drop(self) -> None:
        for cast in self.pairs.values():
            for name in (cast.status, cast.value):
                self.conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}").format(name))
        self.pairs.clear()


class _SourceChecks:
    """The data checks of one source, each a count and up to ten sample keys in key order."""

    def __init__(
        self, conn: psycopg.Connection, plan: Plan, mapping: SourceMapping, casts: _Casts, lines: list[str]
    ) -> None:
        self.conn = conn
        self.plan = plan
        self.mapping = mapping
        self.table: NewTable = mapping.table
        self.source = mapping.source
        self.casts = casts
        self.lines = lines
        self.old_columns = columns_of(conn, self.source.schema, self.source.table)
        self.qualified = f"{self.source.schema}.{self.source.table}"
        self.relation = sql.Identifier(self.source.schema, self.source.table)
        self.keys = [sql.Identifier("o", k) for k in self.source.key]
        self.findings: list[Finding] = []
        self.column_cache: dict[tuple[str, str], dict[str, str]] = {
            (self.source.schema, self.source.table): self.old_columns
        }

    def run(self, table_mappings: list[SourceMapping]) -> list[Finding]:
        self.casts_of_values()  # first: it learns which columns cast plainly, which the others use
        cast_findings, self.findings = self.findings, []
        self.null_keys()
        self.duplicate_keys()
        self.findings += cast_findings
        self.not_null()
        self.checks()
        self.set_aside(table_mappings)
        return self.findings

    # -- helpers ---------------------------------------------------------------------------------

    def columns(self, mapping: SourceMapping) -> dict[str, str]:
        """A source's columns and their types (this one's, or an earlier source's)."""
        source = mapping.source
        if (source.schema, source.table) not in self.column_cache:
            self.column_cache[(source.schema, source.table)] = columns_of(self.conn, source.schema, source.table)
        return self.column_cache[(source.schema, source.table)]

    def fed(self) -> dict[str, str]:
        """new column → old column, for the columns this source feeds from its own columns."""
        return {
            new: old for old, new in self.table.column_mapping(self.source.table).items() if old in self.old_columns
        }

    def safe_value(self, new_column: str, alias: str = "o", mapping: SourceMapping | None = None) -> sql.Composable:
        """The new column's value from one old row, NULL where the value cannot be cast."""
        mapping = mapping or self.mapping
        source = mapping.source
        new_type = self.table.column(new_column).type
        if new_column in source.constants:
            return sql.SQL("CAST({} AS {})").format(sql.Literal(source.constants[new_column]), sql.SQL(new_type))
        old = source.old_column(new_column)
        old_type = self.columns(mapping)[old]
        cast = self.casts.get(old_type, new_type)
        if cast is None:
            return sql.Identifier(alias, old)
        if (source.schema, source.table, old) in self.casts.all_castable:
            return sql.SQL("CAST({} AS {})").format(sql.Identifier(alias, old), sql.SQL(new_type))
        return sql.SQL("{}({})").format(cast.value, sql.Identifier(alias, old))

    def line(self, *needles: str) -> int | None:
        return line_of(self.lines, f'table = "{self.source.table}"', *needles) or line_of(
            self.lines, f'table = "{self.source.table}"'
        )

    def sample_keys(
        self, condition: sql.Composable | list[sql.Composable], keys: list[sql.Composable] | None = None
    ) -> tuple[list, ...]:
        """Up to ten keys (the source's, or the given columns), in key order, of the rows meeting the
        condition (or any of disjoint ones, each its own query so that the planner can join, not loop)."""
        conditions = condition if isinstance(condition, list) else [condition]
        keys = keys or self.keys
        key = sql.SQL("pg_catalog.json_build_array({}) AS k, {}").format(
            sql.SQL(", ").join(keys),
            sql.SQL(", ").join(sql.SQL("{} AS {}").format(k, sql.Identifier(f"__k{i}")) for i, k in enumerate(keys)),
        )
        union = sql.SQL(" UNION ALL ").join(
            sql.SQL("(SELECT {} FROM {} o WHERE {})").format(key, self.relation, c) for c in conditions
        )
        order = sql.SQL(", ").join(sql.Identifier(f"__k{i}") for i in range(len(keys)))
        rows = self.conn.execute(
            sql.SQL("SELECT k FROM ({}) AS s ORDER BY {} LIMIT {}").format(union, order, sql.Literal(MAX_SAMPLES))
        ).fetchall()
        return tuple(r[0] for r in rows)

    def count_where(self, conditions: list[sql.Composable]) -> list[int]:
        """Row counts of several conditions in one scan of the source."""
        if not conditions:
            return []
        counts = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(c) for c in conditions)
        return list(self.conn.execute(sql.SQL("SELECT {} FROM {} o").format(counts, self.relation)).fetchone())

    def report(
        self,
        severity: Severity,
        check_name: str,
        message: str,
        condition: sql.Composable | list[sql.Composable],
        count: int,
        **where,
    ) -> None:
        self.findings.append(
            Finding(
                severity,
                check_name,
                message,
                table=self.table.name,
                source=self.qualified,
                count=count,
                samples=self.sample_keys(condition),
                **where,
            )
        )

    # -- the checks ------------------------------------------------------------------------------

    def null_keys(self) -> None:
        """Rows whose key has a NULL part. A key of NULLs identifies nothing, so where the table has a
        primary key of its own, the samples are primary keys (the message says so)."""
        condition = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(k) for k in self.keys)
        (count,) = self.count_where([condition])
        if not count:
            return
        primary = self.primary_key()
        samples_by = ""
        if primary and primary != list(self.source.key):
            samples = self.sample_keys(condition, [sql.Identifier("o", c) for c in primary])
            samples_by = f"; samples are its primary key ({', '.join(primary)})"
        else:
            samples = self.sample_keys(condition)
        self.findings.append(
            Finding(
                "error",
                "null-key",
                f"{self.qualified}: {count} row(s) have a NULL in the key ({', '.join(self.source.key)}): "
                f"no batch would ever copy them{samples_by}",
                table=self.table.name,
                source=self.qualified,
                count=count,
                samples=samples,
                line=self.line("key"),
            )
        )

    def primary_key(self) -> list[str]:
        row = self.conn.execute(
            "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_catalog.pg_index i"
            " CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indrelid = pg_catalog.to_regclass(%s) AND i.indisprimary AND k.ord <= i.indnkeyatts",
            (sql.Identifier(self.source.schema, self.source.table).as_string(self.conn),),
        ).fetchone()
        return list(row[0] or []) if row else []

    def duplicate_keys(self) -> None:
        """Keys held by several rows, compared as the new table will: in the new key's types, so that
        two spellings of one uuid (or timestamps that differ by less than the new precision) collide."""
        names = [sql.Identifier(f"__k{i}") for i in range(len(self.table.key))]
        keyed = sql.SQL("(SELECT {} FROM {} o) AS o").format(
            sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(self.safe_value(k), n) for k, n in zip(self.table.key, names, strict=True)
            ),
            self.relation,
        )
        keys = sql.SQL(", ").join(names)
        complete = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(n) for n in names)
        groups = sql.SQL(
            "SELECT {keys}, count(*) AS n FROM {keyed} WHERE {complete} GROUP BY {keys} HAVING count(*) > 1"
        ).format(keys=keys, keyed=keyed, complete=complete)
        count, rows = self.conn.execute(
            sql.SQL("SELECT count(*), coalesce(sum(n), 0) FROM ({}) AS d").format(groups)
        ).fetchone()
        if not count:
            return
        samples = self.conn.execute(
            sql.SQL("SELECT pg_catalog.json_build_array({keys}) FROM ({groups}) AS o ORDER BY {keys} LIMIT {n}").format(
                keys=keys, groups=groups, n=sql.Literal(MAX_SAMPLES)
            )
        ).fetchall()
        self.findings.append(
            Finding(
                "error",
                "duplicate-key",
                f"{self.qualified}: {count} key(s) ({', '.join(self.source.key)}) are held by more than one row "
                f"({rows} rows): only one row per key can reach {self.table.name}",
                table=self.table.name,
                source=self.qualified,
                count=count,
                samples=tuple(r[0] for r in samples),
                line=self.line("key"),
            )
        )

    def casts_of_values(self) -> None:
        """Values that change, or cannot be cast, on their way into the new types. One plain scan
        first: when every value casts (the usual case) it gives the counts at the database's speed;
        only when one does not are the values classified one by one by the pg_temp functions."""
        columns = []
        for new, old in self.fed().items():
            cast = self.casts.get(self.old_columns[old], self.table.column(new).type)
            if cast is not None:
                columns.append((new, old, cast))
        plain = [cast.changed(sql.Identifier("o", old)) for _, old, cast in columns]
        try:
            with self.conn.transaction():
                changed = self.count_where(plain)
        except (psycopg.DataError, psycopg.IntegrityError):  # bad input, out of range, a domain check
            changed = None
        conditions = []
        if changed is not None:
            for (_, old, _), condition in zip(columns, plain, strict=True):
                self.casts.all_castable.add((self.source.schema, self.source.table, old))
                conditions += [condition, sql.SQL("false")]
            counts = [n for count in changed for n in (count, 0)]
        else:
            for _, old, cast in columns:
                status = sql.SQL("{}({})").format(cast.status, sql.Identifier("o", old))
                conditions += [
                    sql.SQL("{} = {}").format(status, sql.Literal(CHANGED)),
                    sql.SQL("{} = {}").format(status, sql.Literal(NOT_CASTABLE)),
                ]
            counts = self.count_where(conditions)
        for index, (new, old, _) in enumerate(columns):
            new_type = self.table.column(new).type
            old_type = self.old_columns[old]
            changed, impossible = counts[2 * index], counts[2 * index + 1]
            where = {"column": old, "line": line_of(self.lines, f'name = "{self.table.name}"', f'name = "{new}"')}
            if changed:
                self.report(
                    "error",
                    "lossy-cast",
                    f"{self.qualified}.{old}: {changed} value(s) change when cast from {old_type} to "
                    f"{self.table.name}.{new} {new_type} (rounded or truncated)",
                    conditions[2 * index],
                    changed,
                    **where,
                )
            if impossible:
                self.report(
                    "error",
                    "invalid-cast",
                    f"{self.qualified}.{old}: {impossible} value(s) cannot be cast from {old_type} to "
                    f"{self.table.name}.{new} {new_type} (not valid input, or out of range)",
                    conditions[2 * index + 1],
                    impossible,
                    **where,
                )

    def not_null(self) -> None:
        targets = [
            (new, old)
            for new, old in self.fed().items()
            if not self.table.column(new).nullable and new not in self.table.key
        ]
        conditions = [sql.SQL("{} IS NULL").format(sql.Identifier("o", old)) for _, old in targets]
        for (new, old), condition, count in zip(targets, conditions, self.count_where(conditions), strict=True):
            if count:
                self.report(
                    "error",
                    "not-null",
                    f"{self.qualified}.{old}: {count} row(s) are NULL, and {self.table.name}.{new} is NOT NULL",
                    condition,
                    count,
                    column=old,
                    line=line_of(self.lines, f'name = "{self.table.name}"', f'name = "{new}"'),
                )

    def mapped_row(self) -> sql.Composable:
        """The new table's row as backfill would insert it: mapped values, else the column's default."""
        fed = set(self.mapping.new_columns)
        values = []
        for column in self.table.columns:
            if column.name in fed:
                value = self.safe_value(column.name)
            elif column.default is not None:
                value = sql.SQL("CAST(({}) AS {})").format(sql.SQL(column.default), sql.SQL(column.type))
            else:
                value = sql.SQL("CAST(NULL AS {})").format(sql.SQL(column.type))
            values.append(sql.SQL("{} AS {}").format(value, sql.Identifier(column.name)))
        return sql.SQL(", ").join(values)

    def checks(self) -> None:
        if not self.table.checks:
            return
        # The check sees the mapped row's columns; the keys ride along under names no column can have.
        key_names = [sql.Identifier(f"__dualshift_key_{i}") for i in range(len(self.keys))]
        mapped = sql.SQL("(SELECT {row}, {keys} FROM {rel} o) AS r").format(
            row=self.mapped_row(),
            keys=sql.SQL(", ").join(
                sql.SQL("{} AS {}").format(k, n) for k, n in zip(self.keys, key_names, strict=True)
            ),
            rel=self.relation,
        )
        failing = [sql.SQL("NOT coalesce(({}), true)").format(sql.SQL(expr)) for expr in self.table.checks]
        counts = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(c) for c in failing)
        totals = self.conn.execute(sql.SQL("SELECT {} FROM {}").format(counts, mapped)).fetchone()
        for expression, condition, count in zip(self.table.checks, failing, totals, strict=True):
            if not count:
                continue
            samples = self.conn.execute(
                sql.SQL(
                    "SELECT pg_catalog.json_build_array({keys}) FROM {mapped} WHERE {cond} ORDER BY {keys} LIMIT {n}"
                ).format(keys=sql.SQL(", ").join(key_names), mapped=mapped, cond=condition, n=sql.Literal(MAX_SAMPLES))
            ).fetchall()
            self.findings.append(
                Finding(
                    "error",
                    "check",
                    f"{self.qualified}: {count} row(s) would violate the check ({expression}) of {self.table.name}",
                    table=self.table.name,
                    source=self.qualified,
                    count=count,
                    samples=tuple(r[0] for r in samples),
                    line=line_of(self.lines, f'name = "{self.table.name}"', expression[:30]),
                )
            )

    def set_aside(self, table_mappings: list[SourceMapping]) -> None:
        """Rows of this source whose key the first earlier source holding it feeds with other values."""
        earlier = [m for m in table_mappings if m.precedence < self.mapping.precedence]
        if not earlier:
            return
        if self.table.merges_sources:
            self.set_aside_merged(earlier)
            return
        conditions = []
        for index, winner in enumerate(earlier):
            held = [self.holds(m) for m in earlier[:index]]
            differs = self.differs(winner)
            if differs is None:
                continue
            conditions.append(sql.SQL(" AND ").join([*(sql.SQL("NOT {}").format(h) for h in held), differs]))
        # The conditions are disjoint (one per winning source): counted one by one, each is a plain
        # semi-join and anti-join, where their OR would run a subquery per row.
        count = sum(
            self.conn.execute(sql.SQL("SELECT count(*) FROM {} o WHERE {}").format(self.relation, c)).fetchone()[0]
            for c in conditions
        )
        self.report_set_aside(
            earlier,
            count,
            conditions,
            "are set aside by precedence: their key is held by an earlier source ({names}) with other values, so"
            " they stay only in the archive"
            + (
                ' (where a later source fills columns an earlier one leaves NULL, precedence = "coalesce"'
                " keeps each column's first non-NULL value)"
                if self.table.sources_are == "twins"
                else ""
            ),
        )

    def set_aside_merged(self, earlier: list[SourceMapping]) -> None:
        """Under `precedence = "coalesce"`: rows of this source holding a value that an earlier source
        holding the key outranks in the same column: another non-NULL value in a "coalesce" column,
        another value in a "first" one. A NULL filled from another source loses nothing."""
        conditions = [c for c in (self.conflicts(m) for m in earlier) if c is not None]
        if not conditions:
            return
        condition = sql.SQL(" OR ").join(sql.SQL("({})").format(c) for c in conditions)
        count = self.conn.execute(sql.SQL("SELECT count(*) FROM {} o WHERE {}").format(self.relation, condition))
        self.report_set_aside(
            earlier,
            count.fetchone()[0],
            condition,
            "hold values that precedence sets aside: an earlier source ({names}) holds their key with conflicting"
            ' non-NULL values in the same column (or another value in a column under precedence "first"), so'
            " those values stay only in the archive",
        )

    def report_set_aside(
        self, earlier: list[SourceMapping], count: int, condition: sql.Composable | list[sql.Composable], why: str
    ) -> None:
        """The `set-aside` warning: `count` rows of this source, `why` naming the earlier sources as {names}."""
        if count:
            names = ", ".join(f"{m.source.schema}.{m.source.table}" for m in earlier)
            message = f"{self.qualified}: {count} row(s) " + why.format(names=names)
            self.report("warning", "set-aside", message, condition, count, line=self.line())

    def common_columns(self, other: SourceMapping) -> list[str]:
        """Non-key columns this source and the other both feed from their rows."""
        ours = self.fed()
        other_columns = self.columns(other)
        theirs = {new for old, new in self.table.column_mapping(other.source.table).items() if old in other_columns}
        return [c for c in self.table.column_names if c in ours and c in theirs and c not in self.table.key]

    def conflicts(self, other: SourceMapping) -> sql.Composable | None:
        """The other source holds the key with a value that outranks one of ours (see set_aside_merged)."""
        common = self.common_columns(other)
        if not common:
            return None
        clauses = []
        for column in common:
            theirs, ours = self.safe_value(column, "h", other), self.safe_value(column)
            if self.table.column_precedence(column) == "coalesce":
                clauses.append(sql.SQL("({0} IS NOT NULL AND {1} IS NOT NULL AND {0} <> {1})").format(theirs, ours))
            else:
                clauses.append(sql.SQL("{} IS DISTINCT FROM {}").format(theirs, ours))
        return sql.SQL("EXISTS (SELECT 1 FROM {} h WHERE {} AND ({}))").format(
            sql.Identifier(other.source.schema, other.source.table),
            self.key_match(other),
            sql.SQL(" OR ").join(clauses),
        )

    def key_match(self, other: SourceMapping) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(self.safe_value(new, "h", other), self.safe_value(new)) for new in self.table.key
        )

    def holds(self, other: SourceMapping) -> sql.Composable:
        return sql.SQL("EXISTS (SELECT 1 FROM {} h WHERE {})").format(
            sql.Identifier(other.source.schema, other.source.table), self.key_match(other)
        )

    def differs(self, other: SourceMapping) -> sql.Composable | None:
        """The other source holds the key with different values in a column both feed from their rows."""
        common = self.common_columns(other)
        if not common:
            return None
        row = sql.SQL("ROW({}) IS DISTINCT FROM ROW({})")
        return sql.SQL("EXISTS (SELECT 1 FROM {} h WHERE {} AND {})").format(
            sql.Identifier(other.source.schema, other.source.table),
            self.key_match(other),
            row.format(
                sql.SQL(", ").join(self.safe_value(c, "h", other) for c in common),
                sql.SQL(", ").join(self.safe_value(c) for c in common),
            ),
        )
