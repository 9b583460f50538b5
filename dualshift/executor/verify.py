"""Phase `verify`: parity of every new table with its sources, computed inside the database.

The expected content of a new table is, for every key, the row of the highest-precedence source that
holds it, mapped. Both sides are reduced in the database to (key, md5 of the compared columns). Key
ranges are compared by their row count and the sum of their hashes, and a range that differs is cut
into smaller ranges (bounds sampled from the new table's key index) and compared again, down to ranges
of a few thousand rows. Only those are joined row by row, to count missing, extra and differing keys
and to name the columns of a sample of differing rows. No table leaves the server, and an unchanged
range costs one hash per row. When most ranges differ, cutting them further cannot narrow anything
down, so they are joined at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor.catalog import SourceMapping
from dualshift.plan import NewTable, Plan

SAMPLE = 10
FANOUT = 64  # ranges a differing range is cut into
LEAF_ROWS = 2000  # a range this small is joined row by row rather than cut again
MAX_JOINED_RANGES = 64  # past this many leaf ranges, one join over the whole table is cheaper than a long OR

Bound = tuple[str, ...]  # a key, each column in its text form (exact for every type)
Range = tuple[Bound | None, Bound | None]  # [low, high): None is unbounded


def _expected(plan: Plan, table: NewTable, mappings: list[SourceMapping], columns: list[str]) -> sql.Composable:
    """SELECT key…, cols… of the rows the new table should hold (precedence applied)."""
    branches = []
    for mapping in mappings:
        exprs = dict(mapping.pairs)
        select = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(exprs.get(c, sql.SQL("NULL")), sql.Identifier(c)) for c in columns
        )
        branches.append(
            sql.SQL("SELECT {} AS __precedence, {} FROM {} o").format(
                sql.Literal(mapping.precedence), select, sql.Identifier(mapping.source.schema, mapping.source.table)
            )
        )
    if len(branches) == 1:
        return branches[0]  # one source: its rows are the expected rows, no precedence to sort out
    keys = sql.SQL(", ").join(map(sql.Identifier, table.key))
    return sql.SQL("SELECT DISTINCT ON ({keys}) * FROM ({union}) u ORDER BY {keys}, __precedence").format(
        keys=keys, union=sql.SQL(" UNION ALL ").join(branches)
    )


def _partially_fed(fed_by: dict[str, list[int]], sources: int) -> set[str]:
    """Columns that some of the table's sources do not feed."""
    return {column for column, feeding in fed_by.items() if len(feeding) < sources}


def _masked(columns: list[str], alias: str, winner: sql.Composable | None, fed_by: dict[str, list[int]], sources: int):
    """The compared values of a row. A column the winning source does not feed is not held against it:
    on both sides it is replaced by NULL for the rows that source wins."""
    partial = _partially_fed(fed_by, sources) if winner is not None else set()
    values = []
    for column in columns:
        value: sql.Composable = sql.Identifier(alias, column)
        if column in partial:
            value = sql.SQL("CASE WHEN {} = ANY({}) THEN {} END").format(winner, sql.Literal(fed_by[column]), value)
        values.append(value)
    return values


def _row_hash(values: list[sql.Composable]) -> sql.Composable:
    """md5 of the row's text form. Both sides have the new table's column types (the expected side is
    cast), so the text is canonical: NULL and '' differ, numeric scale and jsonb spacing follow the type."""
    if not values:
        return sql.SQL("md5('')")
    return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(values))


@dataclass
class Sides:
    """The two relations compared, each as SELECT key columns…, __h (row hash)."""

    table: NewTable
    expected: sql.Composable  # the expected rows with __precedence and every column (for the join)
    new: sql.Identifier
    compared: list[str]
    fed_by: dict[str, list[int]]
    mappings: list[SourceMapping]
    partial: bool = field(init=False)

    def __post_init__(self) -> None:
        self.partial = bool(_partially_fed(self.fed_by, len(self.mappings)))

    def key_types(self) -> list[str]:
        return [self.table.column(k).type for k in self.table.key]

    def hashed_expected(self) -> sql.Composable:
        values = _masked(self.compared, "e", sql.SQL("e.__precedence"), self.fed_by, len(self.mappings))
        return sql.SQL("SELECT {}, {} AS __h FROM ({}) e").format(
            self._keys("e"), _row_hash(self._key_values("e") + values), self.expected
        )

    def hashed_new(self) -> sql.Composable:
        if not self.partial:
            values = _masked(self.compared, "n", None, self.fed_by, len(self.mappings))
            return sql.SQL("SELECT {}, {} AS __h FROM {} n").format(
                self._keys("n"), _row_hash(self._key_values("n") + values), self.new
            )
        # Which source wins each key decides which columns count: a key-only pass over the sources.
        values = _masked(self.compared, "n", sql.SQL("w.__precedence"), self.fed_by, len(self.mappings))
        match = sql.SQL(" AND ").join(sql.SQL("w.{0} = n.{0}").format(sql.Identifier(k)) for k in self.table.key)
        return sql.SQL("SELECT {}, {} AS __h FROM {} n LEFT JOIN ({}) w ON {}").format(
            self._keys("n"), _row_hash(self._key_values("n") + values), self.new, self.winners(), match
        )

    def _key_values(self, alias: str) -> list[sql.Composable]:
        # The key is hashed too: two rows of one range that swapped their values must change its digest.
        return [sql.Identifier(alias, k) for k in self.table.key]

    def _keys(self, alias: str) -> sql.Composable:
        return sql.SQL(", ").join(self._key_values(alias))

    def winners(self) -> sql.Composable:
        branches = []
        for mapping in self.mappings:
            exprs = dict(mapping.pairs)
            keys = sql.SQL(", ").join(sql.SQL("{} AS {}").format(exprs[k], sql.Identifier(k)) for k in self.table.key)
            branches.append(
                sql.SQL("SELECT {} AS __precedence, {} FROM {} o").format(
                    sql.Literal(mapping.precedence), keys, sql.Identifier(mapping.source.schema, mapping.source.table)
                )
            )
        keys = sql.SQL(", ").join(map(sql.Identifier, self.table.key))
        return sql.SQL("SELECT DISTINCT ON ({keys}) * FROM ({union}) u ORDER BY {keys}, __precedence").format(
            keys=keys, union=sql.SQL(" UNION ALL ").join(branches)
        )


# ---------------------------------------------------------------------------------------------
# Key ranges


def _key(table: NewTable, alias: str) -> sql.Composable:
    columns = [sql.Identifier(alias, k) for k in table.key]
    if len(columns) == 1:
        return columns[0]
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(columns))


def _literal(bound: Bound, types: list[str]) -> sql.Composable:
    values = [sql.SQL("CAST({} AS {})").format(sql.Literal(v), sql.SQL(t)) for v, t in zip(bound, types, strict=True)]
    if len(values) == 1:
        return values[0]
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(values))


def _in_ranges(sides: Sides, alias: str, ranges: list[Range]) -> sql.Composable:
    """A WHERE clause for rows whose key lies in one of the ranges (btree-indexable row comparisons)."""
    if any(low is None and high is None for low, high in ranges):
        return sql.SQL("TRUE")
    key, types = _key(sides.table, alias), sides.key_types()
    clauses = []
    for low, high in ranges:
        parts = []
        if low is not None:
            parts.append(sql.SQL("{} >= {}").format(key, _literal(low, types)))
        if high is not None:
            parts.append(sql.SQL("{} < {}").format(key, _literal(high, types)))
        clauses.append(sql.SQL("({})").format(sql.SQL(" AND ").join(parts)))
    return sql.SQL(" OR ").join(clauses)


def _sample_bounds(conn: psycopg.Connection, sides: Sides, span: Range, rows: int) -> list[Bound]:
    """Up to FANOUT - 1 keys of the new table inside the range, evenly spaced, in key order."""
    step = max(2, -(-rows // FANOUT))
    keys = sql.SQL(", ").join(sql.Identifier("n", k) for k in sides.table.key)
    texts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in sides.table.key)
    found = conn.execute(
        sql.SQL(
            "SELECT json_build_array({texts}) FROM (SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS __r"
            " FROM {new} n WHERE {where}) s WHERE __r % {step} = 0 ORDER BY __r LIMIT {limit}"
        ).format(
            texts=texts,
            keys=keys,
            new=sides.new,
            where=_in_ranges(sides, "n", [span]),
            step=sql.Literal(step),
            limit=sql.Literal(FANOUT - 1),
        )
    ).fetchall()
    return [tuple(row[0]) for row in found]


def _split(span: Range, bounds: list[Bound]) -> list[Range]:
    edges: list[Bound | None] = [span[0], *bounds, span[1]]
    return list(pairwise(edges))


def _range_digests(conn: psycopg.Connection, sides: Sides, relation: sql.Composable, ranges: list[Range]) -> dict:
    """{range index: (rows, sum of 64-bit hash prefixes)} for one side, in one pass over sorted, disjoint
    ranges: a row's range is the number of range lows at or below its key (width_bucket)."""
    open_below = ranges[0][0] is None
    lows = [low for low, _ in (ranges[1:] if open_below else ranges)]
    if any(low is None for low in lows):
        raise ValueError("only the first range may be open below")
    bucket: sql.Composable = sql.SQL("0")
    if lows:
        types = sides.key_types()
        bucket = sql.SQL("width_bucket({}, ARRAY[{}]) - {}").format(
            _key(sides.table, "s"),
            sql.SQL(", ").join(_literal(low, types) for low in lows),
            sql.Literal(0 if open_below else 1),
        )
    rows = conn.execute(
        sql.SQL(
            "SELECT {bucket} AS b, count(*), sum(('x' || left(s.__h, 16))::bit(64)::bigint) FROM ({relation}) s"
            " WHERE {where} GROUP BY b"
        ).format(bucket=bucket, relation=relation, where=_in_ranges(sides, "s", ranges))
    ).fetchall()
    return {b: (count, total) for b, count, total in rows}


@dataclass
class Bisection:
    """Which key ranges still differ after comparing range digests level by level."""

    leaves: list[Range] = field(default_factory=list)
    levels: int = 0
    ranges_compared: int = 0
    expected_rows: int | None = None
    new_rows: int | None = None


def bisect(conn: psycopg.Connection, sides: Sides) -> Bisection:
    result = Bisection()
    total = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sides.new)).fetchone()[0]
    pending: list[tuple[Range, int]] = [((None, None), total)]  # ranges to cut, with their new-table rows
    expected, new = sides.hashed_expected(), sides.hashed_new()
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
        left, right = _range_digests(conn, sides, expected, ranges), _range_digests(conn, sides, new, ranges)
        if result.levels == 1:  # the first level covers the whole key space
            result.expected_rows = sum(count for count, _ in left.values())
            result.new_rows = sum(count for count, _ in right.values())
        differing = [i for i in range(len(ranges)) if left.get(i) != right.get(i)]
        if len(differing) * 2 > len(ranges):
            result.leaves.extend(ranges[i] for i in differing)  # most differ: cutting further narrows nothing
            break
        pending = [(ranges[i], right.get(i, (0, 0))[0]) for i in differing]
    return result


def _joined(sides: Sides, leaves: list[Range]) -> sql.Composable:
    """The expected rows (e) fully joined with the new table (n) over the leaf ranges, with each side's
    row hash; the winner of a key masks the columns its source does not feed on both sides."""
    if len(leaves) > MAX_JOINED_RANGES:
        leaves = [(None, None)]
    winner = sql.SQL("e.__precedence")
    match = sql.SQL(" AND ").join(sql.SQL("e.{0} = n.{0}").format(sql.Identifier(k)) for k in sides.table.key)
    return sql.SQL(
        "SELECT e.__precedence, to_jsonb(e) AS e_row, to_jsonb(n) AS n_row, e.{k0} IS NULL AS extra,"
        " n.{k0} IS NULL AS missing, {eh} <> {nh} AS differs"
        " FROM (SELECT * FROM ({expected}) e WHERE {e_in}) e FULL JOIN (SELECT * FROM {new} n WHERE {n_in}) n ON {match}"
    ).format(
        k0=sql.Identifier(sides.table.key[0]),
        eh=_row_hash(_masked(sides.compared, "e", winner, sides.fed_by, len(sides.mappings))),
        nh=_row_hash(_masked(sides.compared, "n", winner, sides.fed_by, len(sides.mappings))),
        expected=sides.expected,
        e_in=_in_ranges(sides, "e", leaves),
        new=sides.new,
        n_in=_in_ranges(sides, "n", leaves),
        match=match,
    )


def compare_table(
    conn: psycopg.Connection, plan: Plan, table: NewTable, mappings: list[SourceMapping], freshness_hours: int
) -> dict[str, Any]:
    # Columns some source feeds; a column only some sources feed is compared where the winner feeds it.
    columns = [c for c in table.column_names if any(c in m.new_columns for m in mappings)]
    compared = [c for c in columns if c not in table.key]
    fed_by = {c: [m.precedence for m in mappings if c in m.new_columns] for c in compared}
    new = sql.Identifier(plan.new_schema, table.name)
    sides = Sides(table, _expected(plan, table, mappings, columns), new, compared, fed_by, mappings)
    found = bisect(conn, sides)
    missing = extra = differing = 0
    samples: list[dict[str, Any]] = []
    expected_rows, new_rows = found.expected_rows, found.new_rows
    if found.leaves:
        joined = _joined(sides, found.leaves)
        missing, extra, differing, left, right = conn.execute(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE missing), count(*) FILTER (WHERE extra),"
                " count(*) FILTER (WHERE differs AND NOT missing AND NOT extra),"
                " count(*) FILTER (WHERE NOT extra), count(*) FILTER (WHERE NOT missing) FROM ({}) j"
            ).format(joined)
        ).fetchone()
        if expected_rows is None:  # the whole key space was one leaf: the join counted both sides
            expected_rows, new_rows = left, right
        if missing or extra or differing:
            samples = _samples(conn, sides, joined)
    per_source = [_source_figures(conn, plan, table, m, new, freshness_hours, missing > 0) for m in mappings]
    return {
        "table": table.name,
        "expected_rows": expected_rows,
        "new_rows": new_rows,
        "missing_rows": missing,
        "extra_rows": extra,
        "mismatched_rows": differing,
        "samples": samples,
        "sources": per_source,
        "compared_columns": compared,
        "bisection": {
            "levels": found.levels,
            "ranges_compared": found.ranges_compared,
            "ranges_joined": len(found.leaves),
        },
    }


def _samples(conn: psycopg.Connection, sides: Sides, joined: sql.Composable) -> list[dict[str, Any]]:
    order = sql.SQL(", ").join(
        sql.SQL("coalesce(e_row->>{0}, n_row->>{0})").format(sql.Literal(k)) for k in sides.table.key
    )
    rows = conn.execute(
        sql.SQL("SELECT e_row, n_row FROM ({}) j WHERE missing OR extra OR differs ORDER BY {} LIMIT {}").format(
            joined, order, sql.Literal(SAMPLE)
        )
    ).fetchall()
    samples = []
    for old_row, new_row in rows:
        key = {k: (old_row or new_row).get(k) for k in sides.table.key}
        if old_row is None:
            samples.append({"key": key, "problem": "extra: in the new table, in no source"})
        elif new_row is None:
            samples.append({"key": key, "problem": "missing from the new table"})
        else:
            winner = old_row.get("__precedence")
            columns = {
                c: {"expected": old_row.get(c), "new": new_row.get(c)}
                for c in sides.compared
                if winner in sides.fed_by[c] and old_row.get(c) != new_row.get(c)
            }
            samples.append({"key": key, "problem": "values differ", "columns": columns})
    return samples


def _source_figures(
    conn, plan: Plan, table: NewTable, mapping: SourceMapping, new, hours: int, look_for_missing: bool
) -> dict[str, Any]:
    old = sql.Identifier(mapping.source.schema, mapping.source.table)
    exprs = dict(mapping.pairs)
    match = sql.SQL(" AND ").join(sql.SQL("n.{} = {}").format(sql.Identifier(k), exprs[k]) for k in table.key)
    fresh = sql.SQL("TRUE")
    if mapping.source.timestamp:
        fresh = sql.SQL("o.{} >= now() - make_interval(hours => {})").format(
            sql.Identifier(mapping.source.timestamp), sql.Literal(hours)
        )
    # One pass over the source answers all four questions; the anti-join only when the table misses keys.
    absent = sql.SQL("FALSE")
    if look_for_missing:
        absent = sql.SQL("NOT EXISTS (SELECT 1 FROM {} n WHERE {})").format(new, match)
    rows, missing, recent, recent_missing = conn.execute(
        sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE absent), count(*) FILTER (WHERE fresh),"
            " count(*) FILTER (WHERE fresh AND absent) FROM ("
            "SELECT {fresh} AS fresh, {absent} AS absent FROM {old} o) s"
        ).format(fresh=fresh, old=old, absent=absent)
    ).fetchone()
    return {
        "source": mapping.source.table,
        "rows": rows,
        "missing_rows": missing,
        "recent_rows": recent,
        "recent_missing": recent_missing,
    }


def run(conn: psycopg.Connection, plan: Plan, mappings: dict[tuple[str, str], SourceMapping]) -> dict[str, Any]:
    thresholds = plan.thresholds
    tables = []
    for table in plan.tables:
        # One snapshot for all of a table's queries: a write landing between two levels of the bisection
        # (or between the two sides of one level) must not make differing rows look equal, or the reverse.
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            table_mappings = [mappings[(table.name, s.table)] for s in table.sources]
            tables.append(compare_table(conn, plan, table, table_mappings, thresholds.freshness_hours))
    passed = all(
        t["missing_rows"] <= thresholds.max_missing_rows
        and t["extra_rows"] <= thresholds.max_extra_rows
        and t["mismatched_rows"] <= thresholds.max_mismatched_rows
        for t in tables
    )
    return {
        "passed": passed,
        "tables": tables,
        "thresholds": vars(thresholds) if hasattr(thresholds, "__dict__") else {},
    }


def ranges_text(table: dict[str, Any]) -> str:
    """How far the bisection went: key ranges whose digests were compared, and those joined row by row."""
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
