"""Phase `verify`: parity of every new table with its sources, computed inside the database.

The expected content of a new table is, for every key, the row of the highest-precedence source that
holds it, mapped; under `precedence = "coalesce"` each column's first non-NULL value among the sources
holding the key (computed here with window functions, independently of merge.py's statements). Both sides are reduced in the database to (key, 64-bit hash of the compared values):
`hash_record_extended` hashes each value with its type's own hash function, so the verdict follows the
new column types' equality and never a session's text rendering (time zone, float digits, date style).
First one scan over both sides compares their row counts and hash sums; when they agree the table
passes. Otherwise key ranges are compared by their row count and the sum of their hashes, and a range
that differs is cut into smaller ranges (bounds sampled from the new table's key index) and compared
again, down to ranges of a few thousand rows. Only those are joined row by row, to count missing, extra
and differing keys and to name the columns of a sample of differing rows.

Findings that no hash comparison could see are looked for directly: rows whose key has a NULL part (they
can never match a key: counted as missing), keys that occur twice in one source (counted as mismatched,
never hidden by the precedence rule), and values that do not survive the cast to the new type (each
old value is compared with its round trip through the new type; a value that cannot be cast at all
counts too, rather than stopping verify).

Every generated alias starts with `_ds_` (a new table's column may not) and every column reference is
qualified, so a column named like an alias cannot change a query's meaning. Every function is called
as `pg_catalog.…`: an overload planted in `public` never runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor import changes
from dualshift.executor.catalog import SourceMapping
from dualshift.executor.connection import ExecutorError
from dualshift.plan import NewTable, Plan

SAMPLE = 10
FANOUT = 64  # ranges a differing range is cut into
LEAF_ROWS = 2000  # a range this small is joined row by row rather than cut again
SAMPLED_ROWS = 20_000  # a range with more rows than this takes its bounds from a sample of about this many
MAX_JOINED_RANGES = 64  # past this many leaf ranges, one join over the whole table is cheaper than a long OR
PREFIX = "_ds_"  # generated aliases; a new table's column may not start with it

Bound = tuple[str, ...]  # a key, each column in its text form (read back in the same session settings)
Range = tuple[Bound | None, Bound | None]  # [low, high): None is unbounded
Key = tuple[str | None, ...]  # a key of the new table, each column in its text form


def session_settings(plan: Plan) -> dict[str, str]:
    """Settings pinned for the verify transaction: the plan's time zone decides how `timestamp` values
    are read as `timestamptz` (as backfill and the triggers read them); the rest fix the text of sampled
    values and bounds; the search path keeps objects planted in `public` out of reach."""
    return {
        "TimeZone": plan.timezone,
        "extra_float_digits": "3",
        "DateStyle": "ISO, YMD",
        "IntervalStyle": "postgres",
        "bytea_output": "hex",
        "search_path": "pg_catalog, pg_temp",
    }


def pin_session(conn: psycopg.Connection, plan: Plan) -> None:
    for name, value in session_settings(plan).items():
        conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))


# ---------------------------------------------------------------------------------------------
# Column types and casts


@dataclass(frozen=True)
class ColumnType:
    name: str  # format_type with its modifier, e.g. numeric(5,4)
    base: str  # without the modifier, e.g. numeric
    category: str  # pg_type.typcategory: S for strings


def column_types(conn: psycopg.Connection, schema: str, table: str) -> dict[str, ColumnType]:
    rows = conn.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), pg_catalog.format_type(a.atttypid, NULL),"
        " t.typcategory FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
        " JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
        " WHERE s.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (schema, table),
    ).fetchall()
    return {name: ColumnType(full, base, category) for name, full, base, category in rows}


@dataclass(frozen=True)
class Cast:
    """A column whose value changes type on its way from the source to the new table."""

    new_column: str
    old_column: str
    old: ColumnType
    new: ColumnType
    checked: bool  # a round trip back to the old type exists
    helper: str  # suffix of the pg_temp functions that cast and check it without raising

    def round_trip(self, value: sql.Composable, through: str) -> sql.Composable:
        return sql.SQL("CAST(CAST({} AS {}) AS {})").format(value, sql.SQL(through), sql.SQL(self.old.name))

    def lost(self, value: sql.Composable) -> sql.Composable | None:
        """True when the value does not survive the cast (NULL-safe). A string parsed into another kind of
        type may be reformatted (a uuid's case, a timestamp's spelling): there only a loss to the new
        type's modifier counts (text 0.123456 into numeric(5,4)); everywhere else the round trip must
        give back the old value exactly."""
        if not self.checked:
            return None
        if self.old.category == "S" and self.new.category != "S":
            if self.new.name == self.new.base:
                return None
            return sql.SQL("{} IS DISTINCT FROM {}").format(
                self.round_trip(value, self.new.name), self.round_trip(value, self.new.base)
            )
        return sql.SQL("{} IS DISTINCT FROM {}").format(self.round_trip(value, self.new.name), value)


def _casts(
    conn: psycopg.Connection, table: NewTable, mapping: SourceMapping, new_types: dict[str, ColumnType]
) -> dict[str, Cast]:
    old_types = column_types(conn, mapping.source.schema, mapping.source.table)
    found = {}
    for old, new in table.column_mapping(mapping.source.table).items():
        if old not in old_types or new not in new_types or old_types[old].name == new_types[new].name:
            continue
        helper = f"{mapping.precedence}_{len(found)}"
        back = sql.SQL("SELECT CAST(CAST(CAST(NULL AS {}) AS {}) AS {})").format(
            sql.SQL(old_types[old].name), sql.SQL(new_types[new].name), sql.SQL(old_types[old].name)
        )
        found[new] = Cast(new, old, old_types[old], new_types[new], _runs(conn, back), helper)
    return found


def _runs(conn: psycopg.Connection, query: sql.Composable) -> bool:
    try:
        with conn.transaction():
            conn.execute(query)
        return True
    except psycopg.Error:
        return False


def _create_safe_helpers(conn: psycopg.Connection, casts: Sequence[Cast]) -> None:
    """pg_temp functions that cast a value, or tell whether it is lost, without raising: a value that
    cannot be cast becomes NULL in the expected row and counts as lost."""
    for cast in casts:
        value = sql.Identifier("v")
        lost = cast.lost(value) or sql.SQL("FALSE")
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION pg_temp.{cast_fn}(v {old}) RETURNS {new} LANGUAGE plpgsql"
                " SET search_path = pg_catalog, pg_temp AS {cast_body};"
                " CREATE OR REPLACE FUNCTION pg_temp.{lost_fn}(v {old}) RETURNS boolean LANGUAGE plpgsql"
                " SET search_path = pg_catalog, pg_temp AS {lost_body}"
            ).format(
                cast_fn=sql.Identifier(f"{PREFIX}cast_{cast.helper}"),
                lost_fn=sql.Identifier(f"{PREFIX}lost_{cast.helper}"),
                old=sql.SQL(cast.old.name),
                new=sql.SQL(cast.new.name),
                cast_body=sql.Literal(
                    sql.SQL("BEGIN RETURN CAST(v AS {}); EXCEPTION WHEN OTHERS THEN RETURN NULL; END")
                    .format(sql.SQL(cast.new.name))
                    .as_string(conn)
                ),
                lost_body=sql.Literal(
                    sql.SQL("BEGIN PERFORM CAST(v AS {}); RETURN {}; EXCEPTION WHEN OTHERS THEN RETURN TRUE; END")
                    .format(sql.SQL(cast.new.name), lost)
                    .as_string(conn)
                ),
            )
        )


def _hashable(conn: psycopg.Connection, types: set[str]) -> set[str]:
    """The types with an extended hash function; the others are hashed through their text form."""
    return {
        t
        for t in types
        if _runs(conn, sql.SQL("SELECT pg_catalog.hash_record_extended(ROW(CAST(NULL AS {})), 0)").format(sql.SQL(t)))
    }


# ---------------------------------------------------------------------------------------------
# The two sides


def _ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def _list(items: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL(", ").join(items)


def _generated(index: int) -> str:
    return f"{PREFIX}k{index}"


@dataclass
class Sides:
    """The expected rows (sources mapped, precedence applied) and the new table, and how to hash them."""

    plan: Plan
    table: NewTable
    mappings: list[SourceMapping]
    new: sql.Identifier
    columns: list[str]  # every column some source feeds, key first
    compared: list[str]  # those outside the key
    fed_by: dict[str, list[int]]
    new_types: dict[str, ColumnType]
    casts: dict[int, dict[str, Cast]]  # precedence → new column → cast
    hashable: set[str]
    safe: bool = False  # cast through the pg_temp helpers (some value cannot be cast)
    partial: bool = field(init=False)

    def __post_init__(self) -> None:
        self.partial = any(len(feeding) < len(self.mappings) for feeding in self.fed_by.values())
        self.merged = self.table.merges_sources and len(self.mappings) > 1

    def who(self, alias: str) -> sql.Composable:
        """What decides which columns of a row count: the winning source's precedence, or, where the
        sources are merged, every source holding the key (`_ds_holders`, an array)."""
        return _ident(alias, "_ds_holders" if self.merged else "_ds_precedence")

    def _fed(self, column: str, who: sql.Composable) -> sql.Composable:
        if self.merged:
            return sql.SQL("{} && CAST({} AS integer[])").format(who, sql.Literal(self.fed_by[column]))
        return sql.SQL("{} = ANY({})").format(who, sql.Literal(self.fed_by[column]))

    def feeds(self, column: str, row: dict[str, Any]) -> bool:
        """The row's winner (or one of its holders) feeds the column: the same test as `_fed`, in Python."""
        if self.merged:
            return bool(set(row.get("_ds_holders") or ()) & set(self.fed_by[column]))
        return row.get("_ds_precedence") in self.fed_by[column]

    @property
    def key(self) -> list[str]:
        return list(self.table.key)

    def key_types(self) -> list[str]:
        return [self.new_types[k].name for k in self.key]

    # -- expected rows

    def _branch(self, mapping: SourceMapping, where: sql.Composable | None) -> sql.Composable:
        casts = self.casts[mapping.precedence]
        values = [sql.SQL("{} AS {}").format(self.value(mapping, c), _ident(c)) for c in self.columns]
        return sql.SQL("SELECT {} AS _ds_precedence, {} AS _ds_lost, {} FROM {} o{}").format(
            sql.Literal(mapping.precedence),
            self._lost(casts),
            _list(values),
            _ident(mapping.source.schema, mapping.source.table),
            sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL(""),
        )

    def value(self, mapping: SourceMapping, column: str) -> sql.Composable:
        """The new column's value from a source row (alias o); through the non-raising cast in safe mode."""
        cast = self.casts[mapping.precedence].get(column)
        if self.safe and cast is not None:
            fn = _ident("pg_temp", f"{PREFIX}cast_{cast.helper}")
            return sql.SQL("{}({})").format(fn, _ident("o", cast.old_column))
        # A column this source does not feed: NULL of the column's type, so that the UNION of the
        # sources' branches can match it with a later source's typed value.
        return dict(mapping.pairs).get(
            column, sql.SQL("CAST(NULL AS {})").format(sql.SQL(self.table.column(column).type))
        )

    def _lost(self, casts: dict[str, Cast]) -> sql.Composable:
        """NULL, or {new column: old value as text} for the values that do not survive their cast."""
        checks = []
        for cast in casts.values():
            old = _ident("o", cast.old_column)
            if self.safe:
                check = sql.SQL("{}({})").format(_ident("pg_temp", f"{PREFIX}lost_{cast.helper}"), old)
            else:
                check = cast.lost(old)
            if check is not None:
                checks.append((cast, check))
        if not checks:
            return sql.SQL("CAST(NULL AS jsonb)")
        pairs = [
            sql.SQL("{}, CASE WHEN {} THEN CAST({} AS text) END").format(
                sql.Literal(cast.new_column), check, _ident("o", cast.old_column)
            )
            for cast, check in checks
        ]
        return sql.SQL("CASE WHEN {} THEN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object({})) END").format(
            sql.SQL(" OR ").join(sql.SQL("({})").format(check) for _, check in checks), _list(pairs)
        )

    def expected(self, where: dict[int, sql.Composable] | None = None) -> sql.Composable:
        """SELECT _ds_precedence, _ds_lost, columns… of the rows the new table should hold."""
        where = where or {}
        branches = [self._branch(m, where.get(m.precedence)) for m in self.mappings]
        if len(branches) == 1:
            return branches[0]  # one source: its rows are the expected rows, no precedence to sort out
        keys = _list([_ident("_ds_u", k) for k in self.key])
        if self.merged:
            return self._merged(keys, sql.SQL(" UNION ALL ").join(branches))
        return sql.SQL(
            "SELECT DISTINCT ON ({keys}) * FROM ({union}) _ds_u ORDER BY {keys}, _ds_u._ds_precedence"
        ).format(keys=keys, union=sql.SQL(" UNION ALL ").join(branches))

    def _merged(self, keys: sql.Composable, union: sql.Composable) -> sql.Composable:
        """Per key, each column's value by its precedence rule over the sources holding the key: "first"
        takes the first of them that feeds the column, "coalesce" the first non-NULL value."""

        def first_by(order: sql.Composable, value: sql.Composable) -> sql.Composable:
            return sql.SQL(
                "pg_catalog.first_value({}) OVER (PARTITION BY {} ORDER BY {}, _ds_u._ds_precedence)"
            ).format(value, keys, order)

        values = []
        for column in self.compared:
            value = _ident("_ds_u", column)
            if self.table.column_precedence(column) == "coalesce":
                order = sql.SQL("{} IS NULL").format(value)
            else:
                order = sql.SQL("_ds_u._ds_precedence <> ALL({})").format(sql.Literal(self.fed_by[column]))
            values.append(sql.SQL("{} AS {}").format(first_by(order, value), _ident(column)))
        return sql.SQL(
            "SELECT DISTINCT ON ({keys}) _ds_u._ds_precedence,"
            " pg_catalog.array_agg(_ds_u._ds_precedence) OVER (PARTITION BY {keys}) AS _ds_holders,"
            " {lost} AS _ds_lost, {key_columns}{values} FROM ({union}) _ds_u ORDER BY {keys}, _ds_u._ds_precedence"
        ).format(
            keys=keys,
            lost=first_by(sql.SQL("_ds_u._ds_lost IS NULL"), _ident("_ds_u", "_ds_lost")),
            key_columns=keys,
            values=sql.SQL("").join(sql.SQL(", {}").format(v) for v in values),
            union=union,
        )

    def winners(self) -> sql.Composable:
        """SELECT _ds_precedence, key… : which source wins each key."""
        branches = []
        for mapping in self.mappings:
            exprs = dict(mapping.pairs)
            keys = _list([sql.SQL("{} AS {}").format(exprs[k], _ident(k)) for k in self.key])
            branches.append(
                sql.SQL("SELECT {} AS _ds_precedence, {} FROM {} o").format(
                    sql.Literal(mapping.precedence), keys, _ident(mapping.source.schema, mapping.source.table)
                )
            )
        keys = _list([_ident("_ds_u", k) for k in self.key])
        if self.merged:
            return sql.SQL(
                "SELECT pg_catalog.array_agg(_ds_u._ds_precedence) AS _ds_holders, {keys}"
                " FROM ({union}) _ds_u GROUP BY {keys}"
            ).format(keys=keys, union=sql.SQL(" UNION ALL ").join(branches))
        return sql.SQL(
            "SELECT DISTINCT ON ({keys}) * FROM ({union}) _ds_u ORDER BY {keys}, _ds_u._ds_precedence"
        ).format(keys=keys, union=sql.SQL(" UNION ALL ").join(branches))

    # -- hashes

    def _value(self, alias: str, column: str) -> sql.Composable:
        value = _ident(alias, column)
        if self.new_types[column].name not in self.hashable:
            return sql.SQL("CAST({} AS text)").format(value)
        return value

    def masked(self, alias: str, winner: sql.Composable | None) -> list[sql.Composable]:
        """The compared values of a row. A column the winning source does not feed is not held against it:
        on both sides it is replaced by NULL for the rows that source wins."""
        values = []
        for column in self.compared:
            value = self._value(alias, column)
            if winner is not None and len(self.fed_by[column]) < len(self.mappings):
                value = sql.SQL("CASE WHEN {} THEN {} END").format(self._fed(column, winner), value)
            values.append(value)
        return values

    def row_hash(self, alias: str, winner: sql.Composable | None, lost: sql.Composable | None) -> sql.Composable:
        # The key is hashed too: two rows of one range that swapped their values must change its digest.
        # An expected row with a lost value gets another seed, so it never equals the new row.
        values = [self._value(alias, k) for k in self.key] + self.masked(alias, winner)
        seed = sql.SQL("0") if lost is None else sql.SQL("CASE WHEN {} IS NULL THEN 0 ELSE 1 END").format(lost)
        return sql.SQL("pg_catalog.hash_record_extended(ROW({}), {})").format(_list(values), seed)

    def _generated_keys(self, alias: str) -> sql.Composable:
        return _list(
            [sql.SQL("{} AS {}").format(_ident(alias, k), _ident(_generated(i))) for i, k in enumerate(self.key)]
        )

    def hashed_expected(self) -> sql.Composable:
        """SELECT _ds_k0…, _ds_h of the expected rows."""
        return sql.SQL("SELECT {}, {} AS _ds_h FROM ({}) _ds_e").format(
            self._generated_keys("_ds_e"),
            self.row_hash("_ds_e", self.who("_ds_e"), _ident("_ds_e", "_ds_lost")),
            self.expected(),
        )

    def hashed_new(self) -> sql.Composable:
        """SELECT _ds_k0…, _ds_h of the new table's rows."""
        if not self.partial:
            return sql.SQL("SELECT {}, {} AS _ds_h FROM {} _ds_n").format(
                self._generated_keys("_ds_n"), self.row_hash("_ds_n", None, None), self.new
            )
        # Which source wins each key decides which columns count: a key-only pass over the sources.
        match = sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(_ident("_ds_w", k), _ident("_ds_n", k)) for k in self.key
        )
        return sql.SQL("SELECT {}, {} AS _ds_h FROM {} _ds_n LEFT JOIN ({}) _ds_w ON {}").format(
            self._generated_keys("_ds_n"),
            self.row_hash("_ds_n", self.who("_ds_w"), None),
            self.new,
            self.winners(),
            match,
        )


def _null_key(columns: Sequence[str], alias: str) -> sql.Composable:
    return sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(_ident(alias, c)) for c in columns)


# ---------------------------------------------------------------------------------------------
# Key ranges


def _key(columns: Sequence[str], alias: str) -> sql.Composable:
    refs = [_ident(alias, c) for c in columns]
    if len(refs) == 1:
        return refs[0]
    return sql.SQL("ROW({})").format(_list(refs))


def _literal(bound: Sequence[str | None], types: list[str]) -> sql.Composable:
    values = [sql.SQL("CAST({} AS {})").format(sql.Literal(v), sql.SQL(t)) for v, t in zip(bound, types, strict=True)]
    if len(values) == 1:
        return values[0]
    return sql.SQL("ROW({})").format(_list(values))


def _in_ranges(sides: Sides, alias: str, columns: Sequence[str], ranges: list[Range]) -> sql.Composable:
    """A WHERE clause for rows whose (non-NULL) key lies in one of the ranges (btree-indexable)."""
    not_null = sql.SQL("NOT ({})").format(_null_key(columns, alias))
    spans = _merged(ranges)
    if any(low is None and high is None for low, high in spans):
        return not_null
    key, types = _key(columns, alias), sides.key_types()
    clauses = []
    for low, high in spans:
        parts = []
        if low is not None:
            parts.append(sql.SQL("{} >= {}").format(key, _literal(low, types)))
        if high is not None:
            parts.append(sql.SQL("{} < {}").format(key, _literal(high, types)))
        clauses.append(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)))
    return sql.SQL("{} AND ({})").format(not_null, sql.SQL(" OR ").join(clauses))


def _merged(ranges: list[Range]) -> list[Range]:
    """Neighbouring ranges joined into one: a row is then tested against a few spans, not against 64."""
    spans: list[Range] = []
    for low, high in ranges:
        if spans and spans[-1][1] is not None and spans[-1][1] == low:
            spans[-1] = (spans[-1][0], high)
        else:
            spans.append((low, high))
    return spans


def _sample_bounds(conn: psycopg.Connection, sides: Sides, span: Range, rows: int) -> list[Bound]:
    """Up to FANOUT - 1 keys of the new table inside the range, about evenly spaced, in key order. A large
    range is sampled (TABLESAMPLE reads a few pages): bounds need not be exact quantiles, only keys."""
    if rows > SAMPLED_ROWS:
        percent = min(100.0, 100.0 * SAMPLED_ROWS / rows)
        sampled = _bounds_query(
            conn, sides, span, sql.SQL("TABLESAMPLE SYSTEM ({}) REPEATABLE (1)").format(sql.Literal(percent)), None
        )
        if len(sampled) >= FANOUT // 2:
            return sampled
    return _bounds_query(conn, sides, span, sql.SQL(""), max(2, -(-rows // FANOUT)))


def _bounds_query(
    conn: psycopg.Connection, sides: Sides, span: Range, sample: sql.Composable, step: int | None
) -> list[Bound]:
    every = sql.Literal(step) if step else sql.SQL("GREATEST(1, _ds_s._ds_c / {})").format(sql.Literal(FANOUT))
    keys = _list([_ident("_ds_n", k) for k in sides.key])
    texts = _list([sql.SQL("CAST({} AS text)").format(_ident("_ds_s", _generated(i))) for i in range(len(sides.key))])
    generated = _list(
        [sql.SQL("{} AS {}").format(_ident("_ds_n", k), _ident(_generated(i))) for i, k in enumerate(sides.key)]
    )
    found = conn.execute(
        sql.SQL(
            "SELECT pg_catalog.json_build_array({texts}) FROM (SELECT {generated},"
            " pg_catalog.row_number() OVER (ORDER BY {keys}) AS _ds_r, pg_catalog.count(*) OVER () AS _ds_c"
            " FROM {new} _ds_n {sample} WHERE {where}) _ds_s"
            " WHERE _ds_s._ds_r % {every} = 0 ORDER BY _ds_s._ds_r LIMIT {limit}"
        ).format(
            texts=texts,
            generated=generated,
            keys=keys,
            new=sides.new,
            sample=sample,
            where=_in_ranges(sides, "_ds_n", sides.key, [span]),
            every=every,
            limit=sql.Literal(FANOUT - 1),
        )
    ).fetchall()
    return [tuple(row[0]) for row in found]


def _split(span: Range, bounds: list[Bound]) -> list[Range]:
    edges: list[Bound | None] = [span[0], *bounds, span[1]]
    return list(pairwise(edges))


def _range_digests(conn: psycopg.Connection, sides: Sides, ranges: list[Range]) -> tuple[dict, dict]:
    """{range index: (rows, sum of hashes)} for each side, in one query over sorted, disjoint ranges: a
    row's range is the number of range lows at or below its key (width_bucket)."""
    open_below = ranges[0][0] is None
    lows = [low for low, _ in (ranges[1:] if open_below else ranges)]
    if any(low is None for low in lows):
        raise ValueError("only the first range may be open below")
    generated = [_generated(i) for i in range(len(sides.key))]
    bucket: sql.Composable = sql.SQL("0")
    if lows:
        types = sides.key_types()
        bucket = sql.SQL("pg_catalog.width_bucket({}, ARRAY[{}]) - {}").format(
            _key(generated, "_ds_s"), _list([_literal(low, types) for low in lows]), sql.Literal(0 if open_below else 1)
        )
    rows = conn.execute(
        sql.SQL(
            "SELECT _ds_s._ds_side, {bucket}, pg_catalog.count(*), pg_catalog.sum(_ds_s._ds_h)"
            " FROM (SELECT 0 AS _ds_side, _ds_a.* FROM ({expected}) _ds_a"
            " UNION ALL SELECT 1 AS _ds_side, _ds_b.* FROM ({new}) _ds_b) _ds_s WHERE {where} GROUP BY 1, 2"
        ).format(
            bucket=bucket,
            expected=sides.hashed_expected(),
            new=sides.hashed_new(),
            where=_in_ranges(sides, "_ds_s", generated, ranges),
        )
    ).fetchall()
    sides_found: tuple[dict, dict] = ({}, {})
    for side, b, count, total in rows:
        sides_found[side][b] = (count, total)
    return sides_found


@dataclass
class Digest:
    rows: int  # every row, NULL keys included
    null_keys: int
    keyed_rows: int
    keyed_sum: Any


def digests(conn: psycopg.Connection, sides: Sides) -> tuple[Digest, Digest]:
    """Both sides in one query: row counts, rows with a NULL key part, and the hash sum of the others."""
    generated = [_generated(i) for i in range(len(sides.key))]
    null = _null_key(generated, "_ds_s")
    rows = conn.execute(
        sql.SQL(
            "SELECT _ds_s._ds_side, pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE {null}),"
            " pg_catalog.count(*) FILTER (WHERE NOT ({null})), pg_catalog.sum(_ds_s._ds_h) FILTER (WHERE NOT ({null}))"
            " FROM (SELECT 0 AS _ds_side, _ds_a.* FROM ({expected}) _ds_a"
            " UNION ALL SELECT 1 AS _ds_side, _ds_b.* FROM ({new}) _ds_b) _ds_s GROUP BY 1"
        ).format(null=null, expected=sides.hashed_expected(), new=sides.hashed_new())
    ).fetchall()
    found = {side: Digest(*figures) for side, *figures in rows}
    empty = Digest(0, 0, 0, None)
    return found.get(0, empty), found.get(1, empty)


@dataclass
class Bisection:
    """Which key ranges still differ after comparing range digests level by level."""

    leaves: list[Range] = field(default_factory=list)
    levels: int = 0
    ranges_compared: int = 0


def bisect(conn: psycopg.Connection, sides: Sides, new_rows: int) -> Bisection:
    result = Bisection()
    pending: list[tuple[Range, int]] = [((None, None), new_rows)]  # ranges to cut, with their new-table rows
    while pending:
        ranges: list[Range] = []
        for span, rows in pending:
            bounds = _sample_bounds(conn, sides, span, rows) if rows > LEAF_ROWS else []
            if bounds:
                ranges.extend(_split(span, bounds))
            else:
                result.leaves.append(span)  # too few rows in the new table to cut: join it row by row
        if not ranges:
            break
        result.levels += 1
        result.ranges_compared += len(ranges)
        left, right = _range_digests(conn, sides, ranges)
        differing = [i for i in range(len(ranges)) if left.get(i) != right.get(i)]
        if len(differing) * 2 > len(ranges):
            result.leaves.extend(ranges[i] for i in differing)  # most differ: cutting further narrows nothing
            break
        pending = [(ranges[i], right.get(i, (0, 0))[0]) for i in differing]
    return result


# ---------------------------------------------------------------------------------------------
# Row by row


def _keys_in(alias: str, columns: Sequence[str], types: list[str], keys: Sequence[Key]) -> sql.Composable:
    """(alias.k…) IN (VALUES …): rows whose key is one of these (indexable)."""
    values = _list([sql.SQL("({})").format(_list(_literal_parts(key, types))) for key in keys])
    refs = _list([_ident(alias, c) for c in columns])
    return sql.SQL("({}) IN (VALUES {})").format(refs, values)


def _literal_parts(key: Key, types: list[str]) -> list[sql.Composable]:
    return [sql.SQL("CAST({} AS {})").format(sql.Literal(v), sql.SQL(t)) for v, t in zip(key, types, strict=True)]


def _joined(
    sides: Sides, expected_where: sql.Composable, new_where: sql.Composable, expected: sql.Composable
) -> sql.Composable:
    """The expected rows (_ds_e) fully joined with the new table (_ds_n) by key, with each side's row hash;
    the winner of a key masks the columns its source does not feed on both sides."""
    winner = sides.who("_ds_e")
    match = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(_ident("_ds_e", k), _ident("_ds_n", k)) for k in sides.key)
    return sql.SQL(
        "SELECT pg_catalog.to_jsonb(_ds_e) AS _ds_e_row, pg_catalog.to_jsonb(_ds_n) AS _ds_n_row,"
        " _ds_e._ds_in IS NULL AS _ds_extra, _ds_n._ds_in IS NULL AS _ds_missing,"
        " ({eh} IS DISTINCT FROM {nh} OR _ds_e._ds_lost IS NOT NULL) AS _ds_differs"
        " FROM (SELECT _ds_x.*, TRUE AS _ds_in FROM ({expected}) _ds_x WHERE {e_in}) _ds_e"
        " FULL JOIN (SELECT _ds_y.*, TRUE AS _ds_in FROM {new} _ds_y WHERE {n_in}) _ds_n ON {match}"
    ).format(
        eh=sides.row_hash("_ds_e", winner, None),
        nh=sides.row_hash("_ds_n", winner, None),
        expected=expected,
        e_in=expected_where,
        new=sides.new,
        n_in=new_where,
        match=match,
    )


@dataclass
class Found:
    missing: int = 0
    extra: int = 0
    differing: int = 0
    expected_rows: int = 0
    new_rows: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)


def join_rows(conn: psycopg.Connection, sides: Sides, joined: sql.Composable) -> Found:
    found = Found()
    found.missing, found.extra, found.differing, found.expected_rows, found.new_rows = conn.execute(
        sql.SQL(
            "SELECT pg_catalog.count(*) FILTER (WHERE _ds_j._ds_missing), pg_catalog.count(*) FILTER (WHERE _ds_j._ds_extra),"
            " pg_catalog.count(*) FILTER (WHERE _ds_j._ds_differs AND NOT _ds_j._ds_missing AND NOT _ds_j._ds_extra),"
            " pg_catalog.count(*) FILTER (WHERE NOT _ds_j._ds_extra), pg_catalog.count(*) FILTER (WHERE NOT _ds_j._ds_missing)"
            " FROM ({}) _ds_j"
        ).format(joined)
    ).fetchone()
    if found.missing or found.extra or found.differing:
        found.samples = _samples(conn, sides, joined)
    return found


def _samples(conn: psycopg.Connection, sides: Sides, joined: sql.Composable) -> list[dict[str, Any]]:
    order = _list(
        [sql.SQL("COALESCE(_ds_j._ds_e_row->>{0}, _ds_j._ds_n_row->>{0})").format(sql.Literal(k)) for k in sides.key]
    )
    rows = conn.execute(
        sql.SQL(
            "SELECT _ds_j._ds_e_row, _ds_j._ds_n_row FROM ({}) _ds_j"
            " WHERE _ds_j._ds_missing OR _ds_j._ds_extra OR _ds_j._ds_differs ORDER BY {} LIMIT {}"
        ).format(joined, order, sql.Literal(SAMPLE))
    ).fetchall()
    samples = []
    for old_row, new_row in rows:
        key = {k: (old_row or new_row).get(k) for k in sides.key}
        if old_row is None:
            samples.append({"key": key, "problem": "extra: in the new table, in no source"})
        elif new_row is None:
            samples.append({"key": key, "problem": "missing from the new table"})
        else:
            samples.append(_differing_sample(sides, key, old_row, new_row))
    return samples


def _differing_sample(sides: Sides, key: dict, old_row: dict, new_row: dict) -> dict[str, Any]:
    lost = old_row.get("_ds_lost") or {}
    columns: dict[str, Any] = {
        c: {"expected": old_row.get(c), "new": new_row.get(c)}
        for c in sides.compared
        if sides.feeds(c, old_row) and old_row.get(c) != new_row.get(c)
    }
    for column, old_value in lost.items():
        columns[column] = {"old": old_value, "expected": old_row.get(column), "new": new_row.get(column)}
    if lost:
        return {
            "key": key,
            "problem": f"value does not survive the cast to the new type ({', '.join(sorted(lost))})",
            "columns": columns,
        }
    return {"key": key, "problem": "values differ", "columns": columns}


def _null_key_samples(conn: psycopg.Connection, sides: Sides, relation: sql.Composable, problem: str) -> list[dict]:
    rows = conn.execute(
        sql.SQL("SELECT pg_catalog.to_jsonb(_ds_r) FROM ({}) _ds_r WHERE {} LIMIT {}").format(
            relation, _null_key(sides.key, "_ds_r"), sql.Literal(SAMPLE)
        )
    ).fetchall()
    return [{"key": {k: row[0].get(k) for k in sides.key}, "problem": problem} for row in rows]


# ---------------------------------------------------------------------------------------------
# Keys twice in one source


def _unique_in_source(conn: psycopg.Connection, sides: Sides, mapping: SourceMapping) -> bool:
    """The source's columns feeding the key are covered by a unique index, unchanged by the mapping."""
    mapped = {new: old for old, new in sides.table.column_mapping(mapping.source.table).items()}
    casts = sides.casts[mapping.precedence]
    feeding = [mapped[k] for k in sides.key if k in mapped and k not in casts]
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid"
        " JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = %s AND c.relname = %s"
        " AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL"
        " AND (SELECT pg_catalog.array_agg(a.attname::text) FROM pg_catalog.pg_attribute a"
        "      WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)) <@ %s::text[])",
        (mapping.source.schema, mapping.source.table, feeding),
    ).fetchone()[0]


def duplicates(
    conn: psycopg.Connection, sides: Sides, where: dict[int, sql.Composable] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Keys that more than one row of the same source maps to: the precedence rule would keep one of
    them and hide the other, so each is a finding."""
    total, samples = 0, []
    for mapping in sides.mappings:
        if _unique_in_source(conn, sides, mapping):
            continue
        branch = sides._branch(mapping, (where or {}).get(mapping.precedence))
        generated = [_generated(i) for i in range(len(sides.key))]
        keys = _list(
            [
                sql.SQL("{} AS {}").format(_ident("_ds_b", k), _ident(g))
                for k, g in zip(sides.key, generated, strict=True)
            ]
        )
        grouped = _list([_ident("_ds_d", g) for g in generated])
        rows = conn.execute(
            sql.SQL(
                "SELECT pg_catalog.json_build_array({grouped}), pg_catalog.count(*), pg_catalog.count(*) OVER ()"
                " FROM (SELECT {keys} FROM ({branch}) _ds_b) _ds_d WHERE NOT ({null}) GROUP BY {grouped}"
                " HAVING pg_catalog.count(*) > 1"
                " ORDER BY CAST(pg_catalog.json_build_array({grouped}) AS text) LIMIT {limit}"
            ).format(
                grouped=grouped, keys=keys, branch=branch, null=_null_key(generated, "_ds_d"), limit=sql.Literal(SAMPLE)
            )
        ).fetchall()
        if rows:
            total += rows[0][2]
        for key, count, _ in rows[: max(0, SAMPLE - len(samples))]:
            samples.append(
                {
                    "key": dict(zip(sides.key, key, strict=True)),
                    "problem": f"key held by {count} rows of {mapping.source.table}: one would hide the others",
                }
            )
    return total, samples


# ---------------------------------------------------------------------------------------------
# A table


def _reserved_names(table: NewTable) -> None:
    clashing = [c for c in table.column_names if c.startswith(PREFIX)]
    if clashing:
        raise ExecutorError(f"{table.name}: column(s) {', '.join(clashing)} start with {PREFIX}, which verify reserves")


def sides_for(conn: psycopg.Connection, plan: Plan, table: NewTable, mappings: list[SourceMapping]) -> Sides:
    _reserved_names(table)
    # Columns some source feeds; a column only some sources feed is compared where the winner feeds it.
    columns = [c for c in table.column_names if any(c in m.new_columns for m in mappings)]
    columns = [*table.key, *(c for c in columns if c not in table.key)]
    compared = [c for c in columns if c not in table.key]
    fed_by = {c: [m.precedence for m in mappings if c in m.new_columns] for c in compared}
    new_types = column_types(conn, plan.new_schema, table.name)
    casts = {m.precedence: _casts(conn, table, m, new_types) for m in mappings}
    hashable = _hashable(conn, {new_types[c].name for c in columns})
    new = _ident(plan.new_schema, table.name)
    return Sides(plan, table, mappings, new, columns, compared, fed_by, new_types, casts, hashable)


def _with_safe_casts(conn: psycopg.Connection, sides: Sides, compare):
    """Run a comparison; when some source value cannot be cast to its new type at all, run it again
    with casts that turn such values into findings instead of errors."""
    try:
        with conn.transaction():
            return compare(sides)
    except psycopg.DataError:
        _create_safe_helpers(conn, [c for casts in sides.casts.values() for c in casts.values()])
        sides.safe = True
        return compare(sides)


def compare_table(
    conn: psycopg.Connection, plan: Plan, table: NewTable, mappings: list[SourceMapping], freshness_hours: int
) -> dict[str, Any]:
    sides = sides_for(conn, plan, table, mappings)
    report = _with_safe_casts(conn, sides, lambda s: _compare_full(conn, s))
    report["sources"] = [_source_figures(conn, sides, m, freshness_hours, report["missing_rows"] > 0) for m in mappings]
    return report


def _compare_full(conn: psycopg.Connection, sides: Sides) -> dict[str, Any]:
    expected, new = digests(conn, sides)
    found, bisection = Found(), Bisection()
    if (expected.keyed_rows, expected.keyed_sum) != (new.keyed_rows, new.keyed_sum):
        bisection = bisect(conn, sides, new.keyed_rows)
        if bisection.leaves:
            leaves = bisection.leaves if len(bisection.leaves) <= MAX_JOINED_RANGES else [(None, None)]
            joined = _joined(
                sides,
                _in_ranges(sides, "_ds_x", sides.key, leaves),
                _in_ranges(sides, "_ds_y", sides.key, leaves),
                sides.expected(),
            )
            found = join_rows(conn, sides, joined)
    samples = found.samples
    if expected.null_keys:
        samples = samples + _null_key_samples(conn, sides, sides.expected(), "key has a NULL part: it can match no row")
    if new.null_keys:
        new_rows = sql.SQL("SELECT * FROM {}").format(sides.new)
        samples = samples + _null_key_samples(conn, sides, new_rows, "extra: key has a NULL part")
    duplicate_keys, duplicate_samples = duplicates(conn, sides)
    return {
        "table": sides.table.name,
        "expected_rows": expected.rows,
        "new_rows": new.rows,
        "missing_rows": found.missing + expected.null_keys,
        "extra_rows": found.extra + new.null_keys,
        "mismatched_rows": found.differing + duplicate_keys,
        "duplicate_keys": duplicate_keys,
        "null_key_rows": expected.null_keys,
        "samples": (samples + duplicate_samples)[: SAMPLE * 2],
        "compared_columns": sides.compared,
        "unchecked_casts": sorted(
            {c.new_column for casts in sides.casts.values() for c in casts.values() if not c.checked}
        ),
        "bisection": {
            "levels": bisection.levels,
            "ranges_compared": bisection.ranges_compared,
            "ranges_joined": len(bisection.leaves),
        },
    }


def compare_keys(conn: psycopg.Connection, sides: Sides, keys: Sequence[Key]) -> dict[str, Any]:
    """Compare only these keys (those written since the last passing verify): O(len(keys)) index reads."""
    complete = [k for k in keys if all(part is not None for part in k)]
    incomplete = [k for k in keys if k not in complete]
    found, duplicate_keys, duplicate_samples = Found(), 0, []
    if complete:
        types = sides.key_types()
        where = {m.precedence: _source_keys_in(sides, m, complete) for m in sides.mappings}
        joined = _joined(
            sides,
            _keys_in("_ds_x", sides.key, types, complete),
            _keys_in("_ds_y", sides.key, types, complete),
            sides.expected(where),
        )
        found = join_rows(conn, sides, joined)
        duplicate_keys, duplicate_samples = duplicates(conn, sides, where)
    samples = found.samples + [
        {"key": dict(zip(sides.key, k, strict=True)), "problem": "key has a NULL part: it can match no row"}
        for k in incomplete[:SAMPLE]
    ]
    return {
        "table": sides.table.name,
        "expected_rows": found.expected_rows + len(incomplete),
        "new_rows": found.new_rows,
        "missing_rows": found.missing + len(incomplete),
        "extra_rows": found.extra,
        "mismatched_rows": found.differing + duplicate_keys,
        "duplicate_keys": duplicate_keys,
        "null_key_rows": len(incomplete),
        "samples": (samples + duplicate_samples)[: SAMPLE * 2],
        "compared_columns": sides.compared,
        "sources": [],
        "incremental": {"keys": len(keys)},
        "bisection": {"levels": 0, "ranges_compared": 0, "ranges_joined": 0},
    }


def _source_keys_in(sides: Sides, mapping: SourceMapping, keys: Sequence[Key]) -> sql.Composable:
    """A source's rows that map to one of these keys, found through the source's own key columns (its
    index) and then confirmed on the mapped key."""
    exprs = dict(mapping.pairs)
    mapped = {new: old for old, new in sides.table.column_mapping(mapping.source.table).items()}
    types = sides.key_types()
    confirmed = sql.SQL("({}) IN (VALUES {})").format(
        _list([exprs[k] for k in sides.key]),
        _list([sql.SQL("({})").format(_list(_literal_parts(key, types))) for key in keys]),
    )
    positions = [i for i, k in enumerate(sides.key) if k in mapped]
    if not positions:
        return confirmed
    old_types = _old_key_types(sides, mapping)
    back = []
    for key in keys:
        parts = []
        for i in positions:
            old = old_types[mapped[sides.key[i]]]
            parts.append(
                sql.SQL("CAST(CAST({} AS {}) AS {})").format(sql.Literal(key[i]), sql.SQL(types[i]), sql.SQL(old))
            )
        back.append(sql.SQL("({})").format(_list(parts)))
    by_index = sql.SQL("({}) IN (VALUES {})").format(
        _list([_ident("o", mapped[sides.key[i]]) for i in positions]), _list(back)
    )
    return sql.SQL("{} AND {}").format(by_index, confirmed)


def _old_key_types(sides: Sides, mapping: SourceMapping) -> dict[str, str]:
    """Old column → its type, for the key columns: the cast's old type where the mapping casts, else the
    new type (the mapping keeps it)."""
    casts = sides.casts[mapping.precedence]
    mapped = {new: old for old, new in sides.table.column_mapping(mapping.source.table).items()}
    return {mapped[k]: (casts[k].old.name if k in casts else sides.new_types[k].name) for k in sides.key if k in mapped}


def _source_figures(
    conn: psycopg.Connection, sides: Sides, mapping: SourceMapping, hours: int, look_for_missing: bool
) -> dict[str, Any]:
    old, new = _ident(mapping.source.schema, mapping.source.table), sides.new
    match = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(_ident("_ds_n", k), sides.value(mapping, k)) for k in sides.key
    )
    fresh = sql.SQL("TRUE")
    if mapping.source.timestamp:
        fresh = sql.SQL("o.{} >= pg_catalog.now() - pg_catalog.make_interval(hours => {})").format(
            _ident(mapping.source.timestamp), sql.Literal(hours)
        )
    # One pass over the source answers all four questions; the anti-join only when the table misses keys.
    absent = sql.SQL("FALSE")
    if look_for_missing:
        absent = sql.SQL("NOT EXISTS (SELECT 1 FROM {} _ds_n WHERE {})").format(new, match)
    rows, missing, recent, recent_missing = conn.execute(
        sql.SQL(
            "SELECT pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE _ds_s._ds_absent),"
            " pg_catalog.count(*) FILTER (WHERE _ds_s._ds_fresh),"
            " pg_catalog.count(*) FILTER (WHERE _ds_s._ds_fresh AND _ds_s._ds_absent) FROM ("
            "SELECT {fresh} AS _ds_fresh, {absent} AS _ds_absent FROM {old} o) _ds_s"
        ).format(fresh=fresh, old=old, absent=absent)
    ).fetchone()
    return {
        "source": mapping.source.table,
        "rows": rows,
        "missing_rows": missing,
        "recent_rows": recent,
        "recent_missing": recent_missing,
    }


# ---------------------------------------------------------------------------------------------
# The phase


def _passes(plan: Plan, table: dict[str, Any]) -> bool:
    thresholds = plan.thresholds
    return (
        table["missing_rows"] <= thresholds.max_missing_rows
        and table["extra_rows"] <= thresholds.max_extra_rows
        and table["mismatched_rows"] <= thresholds.max_mismatched_rows
    )


def run(
    conn: psycopg.Connection,
    plan: Plan,
    mappings: dict[tuple[str, str], SourceMapping],
    incremental: bool = False,
    capture: bool = True,
) -> dict[str, Any]:
    """Verify every new table. With `capture`, the change capture (changes.py) is switched on first so a
    later `incremental` run can check only the keys written since this one passed; `incremental` falls
    back to a full comparison for a table whose capture was not on all along."""
    capture_note: dict[str, Any] = {}
    if capture:
        try:
            capture_note["installed"] = changes.install(conn, plan, mappings)
        except (psycopg.Error, ExecutorError) as exc:  # an optimisation only: verify goes on without it
            capture_note["error"] = str(exc).strip().splitlines()[0]
            capture = False
    tables = []
    for table in plan.tables:
        table_mappings = [mappings[(table.name, s.table)] for s in table.sources]
        tables.append(_verify_table(conn, plan, table, table_mappings, incremental and capture, capture))
    return {
        "passed": all(_passes(plan, t) for t in tables),
        "tables": tables,
        "thresholds": vars(plan.thresholds) if hasattr(plan.thresholds, "__dict__") else {},
        "change_capture": capture_note,
    }


def _verify_table(
    conn: psycopg.Connection,
    plan: Plan,
    table: NewTable,
    mappings: list[SourceMapping],
    incremental: bool,
    capture: bool,
) -> dict[str, Any]:
    # One snapshot for all of a table's queries: a write landing between two levels of the bisection
    # (or between the two sides of one level) must not make differing rows look equal, or the reverse.
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        pin_session(conn, plan)
        keys = changes.pending_keys(conn, plan, table) if incremental else None
        report = None
        if keys is not None:
            sides = sides_for(conn, plan, table, mappings)
            try:
                with conn.transaction():
                    report = compare_keys(conn, sides, keys)
            except psycopg.DataError:
                report = None  # a changed value that cannot be cast: the full comparison reports it
        if report is None:
            report = compare_table(conn, plan, table, mappings, plan.thresholds.freshness_hours)
            if incremental:
                report["incremental"] = {"fallback": "change capture was not on since the last passing verify"}
        if capture and _passes(plan, report):
            changes.mark_verified(conn, plan, table)
        return report


def ranges_text(table: dict[str, Any]) -> str:
    """How far the bisection went: key ranges whose digests were compared, and those joined row by row."""
    if "keys" in table.get("incremental", {}):
        return f"{table['incremental']['keys']} changed keys"
    bisection = table.get("bisection", {})
    return f"{bisection.get('ranges_compared', 0)} / {bisection.get('ranges_joined', 0)}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Parity report: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        "| new table | expected | new | missing | extra | differing | ranges compared / joined |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in report["tables"]:
        lines.append(
            f"| {t['table']} | {t['expected_rows']} | {t['new_rows']} | {t['missing_rows']} | {t['extra_rows']}"
            f" | {t['mismatched_rows']} | {ranges_text(t)} |"
        )
    for t in report["tables"]:
        for sample in t["samples"]:
            lines.append(f"- `{t['table']}` {sample['key']}: {sample['problem']} {sample.get('columns', '')}")
    return "\n".join(lines) + "\n"
