"""Phase `verify`: parity of every new table with its sources, computed inside the database.

The expected content of a new table is, for every key, the row of the highest-precedence source that
holds it, mapped. Both sides are reduced to (key, md5 of the mapped columns) in the database and
joined on the key in one pass, so no table ever leaves the server: the counts of missing, extra and
differing keys come back, and only a sample of differing rows (as JSON, to name the columns).
Both sides live in one database, so a single hash join finds every differing key; bisecting hashed
key ranges only pays when the two sides are on different servers.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor.catalog import SourceMapping
from dualshift.plan import NewTable, Plan

SAMPLE = 10


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


def _row_hash(columns: list[str], alias: str, fed_by: dict[str, list[int]] | None = None) -> sql.Composable:
    """md5 of the row's text form. Both sides have the new table's column types (the expected side is
    cast), so the text is canonical: NULL and '' differ, numeric scale and jsonb spacing follow the type.
    On the expected side a column the winning source does not feed takes the new table's value (its
    default), so only what a source carries is compared."""
    values = []
    for column in columns:
        value: sql.Composable = sql.Identifier(alias, column)
        if fed_by is not None:
            value = sql.SQL("CASE WHEN e.__precedence = ANY({}) THEN {} ELSE {} END").format(
                sql.Literal(fed_by[column]), value, sql.Identifier("n", column)
            )
        values.append(value)
    if not values:
        return sql.SQL("''")
    return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(values))


def compare_table(
    conn: psycopg.Connection, plan: Plan, table: NewTable, mappings: list[SourceMapping], freshness_hours: int
) -> dict[str, Any]:
    # Columns every source feeds; a column only some sources feed is compared where it is fed.
    columns = [c for c in table.column_names if any(c in m.new_columns for m in mappings)]
    compared = [c for c in columns if c not in table.key]
    fed_by = {c: [m.precedence for m in mappings if c in m.new_columns] for c in compared}
    key_match = sql.SQL(" AND ").join(sql.SQL("e.{0} = n.{0}").format(sql.Identifier(k)) for k in table.key)
    new = sql.Identifier(plan.new_schema, table.name)
    expected = _expected(plan, table, mappings, columns)
    counts = conn.execute(
        sql.SQL(
            "WITH e AS ({expected}), "
            "j AS (SELECT e.__precedence, (e.{k0} IS NULL) AS extra, (n.{k0} IS NULL) AS missing, "
            "{eh} <> {nh} AS differs FROM e FULL JOIN {new} n ON {match}) "
            "SELECT count(*) FILTER (WHERE missing), count(*) FILTER (WHERE extra), "
            "count(*) FILTER (WHERE differs AND NOT missing AND NOT extra), "
            "(SELECT count(*) FROM e), (SELECT count(*) FROM {new}) FROM j"
        ).format(
            expected=expected,
            k0=sql.Identifier(table.key[0]),
            eh=_row_hash(compared, "e", fed_by),
            nh=_row_hash(compared, "n"),
            new=new,
            match=key_match,
        )
    ).fetchone()
    missing, extra, differing, expected_rows, new_rows = counts
    samples = _samples(conn, table, expected, new, key_match, compared, fed_by) if differing or missing or extra else []
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
    }


def _samples(conn, table: NewTable, expected, new, key_match, compared: list[str], fed_by) -> list[dict[str, Any]]:
    rows = conn.execute(
        sql.SQL(
            "WITH e AS ({expected}) SELECT to_jsonb(e), to_jsonb(n) FROM e FULL JOIN {new} n ON {match} "
            "WHERE e.{k0} IS NULL OR n.{k0} IS NULL OR {eh} <> {nh} ORDER BY {order} LIMIT {limit}"
        ).format(
            expected=expected,
            new=new,
            match=key_match,
            k0=sql.Identifier(table.key[0]),
            eh=_row_hash(compared, "e", fed_by),
            nh=_row_hash(compared, "n"),
            order=sql.SQL(", ").join(sql.SQL("coalesce(e.{0}, n.{0})").format(sql.Identifier(k)) for k in table.key),
            limit=sql.Literal(SAMPLE),
        )
    ).fetchall()
    samples = []
    for old_row, new_row in rows:
        key = {k: (old_row or new_row).get(k) for k in table.key}
        if old_row is not None:
            old_row = dict(old_row)
        if old_row is None:
            samples.append({"key": key, "problem": "extra: in the new table, in no source"})
        elif new_row is None:
            samples.append({"key": key, "problem": "missing from the new table"})
        else:
            winner = old_row.get("__precedence")
            columns = {
                c: {"expected": old_row.get(c), "new": new_row.get(c)}
                for c in compared
                if winner in fed_by[c] and old_row.get(c) != new_row.get(c)
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
        tables.append(
            compare_table(
                conn, plan, table, [mappings[(table.name, s.table)] for s in table.sources], thresholds.freshness_hours
            )
        )
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


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Parity report: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        "| new table | expected | new | missing | extra | differing |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for t in report["tables"]:
        lines.append(
            f"| {t['table']} | {t['expected_rows']} | {t['new_rows']} | {t['missing_rows']} | {t['extra_rows']} | {t['mismatched_rows']} |"
        )
    for t in report["tables"]:
        for sample in t["samples"]:
            lines.append(f"- `{t['table']}` {sample['key']}: {sample['problem']} {sample.get('columns', '')}")
    return "\n".join(lines) + "\n"
