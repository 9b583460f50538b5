"""Phase `backfill`: copy old → new inside the database, in keyset-paginated, checkpointed batches.

Sources are copied in precedence order. A batch holds a share lock on the old rows it copies until it
commits, so an application write to one of them waits for the batch and its mirror lands after it:
the copy never overwrites a newer dual write with an older value. The first source of a new table owns its keys (its rows
overwrite: ON CONFLICT DO UPDATE); later sources only fill keys nobody has (ON CONFLICT DO NOTHING),
the same rule the dual-write wrapper follows. While the new table holds none of a batch's keys, the
batch is a plain INSERT (speculative insertion, which ON CONFLICT needs for every row, costs about a
third of the copy); the first unique violation rolls that batch back to a savepoint and redoes it with
ON CONFLICT, which the rest of the source's run then keeps. Each batch and its checkpoint commit
together, so a killed run resumes where it stopped. A completed pass also repairs what the wrapper recorded in
dualshift.failed_writes: the copy re-upserts every row, and rows whose key no source has any more
(failed deletes) are removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dualshift.executor.catalog import SourceMapping
from dualshift.executor.connection import Sink
from dualshift.plan import Plan

Progress = Callable[[str, int, int], None]  # (label, rows done, rows total)


@dataclass(frozen=True)
class BackfillOptions:
    batch_size: int = 5000
    max_rows_per_s: float | None = None
    max_batches: int | None = None  # stop early (tests, and a bounded first run)


def batch_statement(
    plan: Plan, mapping: SourceMapping, batch_size: int, after: list | None, upsert: bool = True
) -> sql.Composable:
    """One keyset batch: lock the next old rows, copy them mapped, return (rows, last key). Without
    `upsert` the copy is a plain INSERT, which fails on a key the new table already holds."""
    source, table = mapping.source, mapping.table
    old = sql.Identifier(source.schema, source.table)
    new = sql.Identifier(plan.new_schema, table.name)
    keys = sql.SQL(", ").join(sql.Identifier("o", k) for k in source.key)
    where = sql.SQL("")
    if after is not None:
        where = sql.SQL("WHERE ({}) > ({})").format(keys, sql.SQL(", ").join(sql.Literal(v) for v in after))
    columns = sql.SQL(", ").join(map(sql.Identifier, mapping.new_columns))
    conflict = sql.SQL(", ").join(map(sql.Identifier, table.key))
    on_conflict = (
        sql.SQL("ON CONFLICT ({}) {}").format(conflict, conflict_action(plan, mapping)) if upsert else sql.SQL("")
    )
    # The key travels under its own names: an old key column may share its name with a new column.
    key_names = [sql.Identifier(f"__key_{i}") for i in range(len(source.key))]
    return sql.SQL(
        "WITH batch AS (SELECT {keys_as}, {select} FROM {old} o {where} ORDER BY {keys} LIMIT {limit} FOR SHARE),\n"
        "copied AS (INSERT INTO {new} ({columns}) SELECT {columns} FROM batch {on_conflict})\n"
        "SELECT (SELECT count(*) FROM batch), (SELECT json_build_array({last}) FROM batch ORDER BY {descending} LIMIT 1)"
    ).format(
        keys_as=sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.Identifier("o", k), name)
            for k, name in zip(source.key, key_names, strict=True)
        ),
        select=mapping.select_list(),
        old=old,
        where=where,
        keys=keys,
        limit=sql.Literal(batch_size),
        new=new,
        columns=columns,
        on_conflict=on_conflict,
        last=sql.SQL(", ").join(key_names),
        descending=sql.SQL(", ").join(sql.SQL("{} DESC").format(name) for name in key_names),
    )


def conflict_action(plan: Plan, mapping: SourceMapping) -> sql.Composable:
    """ON CONFLICT's action for a source: overwrite, except that a later source updates only the keys
    no earlier source holds (the first source wins)."""
    updates = [c for c in mapping.new_columns if c not in mapping.table.key]
    if not updates:
        return sql.SQL("DO NOTHING")
    action = sql.SQL("DO UPDATE SET {}").format(
        sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates)
    )
    if mapping.precedence > 0:
        action = sql.SQL("{} WHERE {}").format(action, not_held_by_earlier(plan, mapping))
    return action


def not_held_by_earlier(plan: Plan, mapping: SourceMapping) -> sql.Composable:
    table = mapping.table
    clauses = []
    for earlier in table.sources[: mapping.precedence]:
        match = sql.SQL(" AND ").join(
            sql.SQL("CAST({} AS {}) = EXCLUDED.{}").format(
                sql.Identifier("h", old), sql.SQL(table.column(new).type), sql.Identifier(new)
            )
            for old, new in zip(earlier.key, table.key, strict=True)
        )
        clauses.append(
            sql.SQL("NOT EXISTS (SELECT 1 FROM {} h WHERE {})").format(
                sql.Identifier(earlier.schema, earlier.table), match
            )
        )
    return sql.SQL(" AND ").join(clauses)


def _checkpoint(conn: psycopg.Connection, mapping: SourceMapping) -> tuple[list | None, int, bool]:
    row = conn.execute(
        "SELECT last_key, rows_copied, done FROM dualshift_private.checkpoints WHERE new_table = %s AND source = %s",
        (mapping.table.name, mapping.source.table),
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO dualshift_private.checkpoints (new_table, source) VALUES (%s, %s)",
            (mapping.table.name, mapping.source.table),
        )
        return None, 0, False
    return row[0], row[1], row[2]


def _count(conn: psycopg.Connection, mapping: SourceMapping) -> int:
    return conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(mapping.source.schema, mapping.source.table))
    ).fetchone()[0]


def copy_source(
    conn: psycopg.Connection,
    plan: Plan,
    mapping: SourceMapping,
    options: BackfillOptions,
    sink: Sink,
    progress: Progress,
) -> int:
    """Copy one source from its checkpoint to its end; return the batches run."""
    last_key, copied, done = _checkpoint(conn, mapping)
    if done:
        return 0
    total = _count(conn, mapping)
    label = f"{mapping.source.table} → {mapping.table.name}"
    batches = 0
    upsert = False
    while True:
        if options.max_batches is not None and batches >= options.max_batches:
            return batches
        started = time.monotonic()
        if sink.dry_run:
            sink.statements.append(sink.text(batch_statement(plan, mapping, options.batch_size, last_key, False)))
            again = sink.text(batch_statement(plan, mapping, options.batch_size, last_key))
            sink.statements.append(f"-- the batch again, when the new table already holds one of its keys:\n{again}")
            return 1
        after = last_key
        with conn.transaction():
            rows, last, upsert = _copy_batch(conn, plan, mapping, options.batch_size, after, upsert)
            if rows:
                last_key = last
                copied += rows
            conn.execute(
                "UPDATE dualshift_private.checkpoints SET last_key = %s, rows_copied = %s, done = %s"
                " WHERE new_table = %s AND source = %s",
                (json.dumps(last_key), copied, rows < options.batch_size, mapping.table.name, mapping.source.table),
            )
        if len(sink.statements) < 3:
            sink.statements.append(sink.text(batch_statement(plan, mapping, options.batch_size, after, upsert)))
        batches += 1
        progress(label, copied, total)
        if rows < options.batch_size:
            return batches
        if options.max_rows_per_s:
            pause = rows / options.max_rows_per_s - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)


def _copy_batch(
    conn: psycopg.Connection, plan: Plan, mapping: SourceMapping, batch_size: int, after: list | None, upsert: bool
) -> tuple[int, list | None, bool]:
    """Copy one batch inside the caller's transaction: (rows, last key, whether ON CONFLICT is now needed)."""
    if not upsert:
        try:
            with conn.transaction():
                rows, last = conn.execute(batch_statement(plan, mapping, batch_size, after, upsert=False)).fetchone()
            return rows, last, False
        except psycopg.errors.UniqueViolation:
            pass  # the new table holds one of these keys already (a dual write): this batch and the rest upsert
    rows, last = conn.execute(batch_statement(plan, mapping, batch_size, after)).fetchone()
    return rows, last, True


def repair_deletes(conn: psycopg.Connection, plan: Plan, mappings: list[SourceMapping], sink: Sink) -> int:
    """Remove new rows whose key no source holds any more (deletes the dual write could not mirror)."""
    table = mappings[0].table
    new = sql.Identifier(plan.new_schema, table.name)
    clauses = []
    for mapping in mappings:
        pairs = zip(mapping.source.key, table.key, strict=True)
        match = sql.SQL(" AND ").join(
            sql.SQL("CAST({} AS {}) = n.{}").format(
                sql.Identifier("o", old), sql.SQL(table.column(new_key).type), sql.Identifier(new_key)
            )
            for old, new_key in pairs
        )
        clauses.append(
            sql.SQL("NOT EXISTS (SELECT 1 FROM {} o WHERE {})").format(
                sql.Identifier(mapping.source.schema, mapping.source.table), match
            )
        )
    statement = sql.SQL("DELETE FROM {} n WHERE {}").format(new, sql.SQL(" AND ").join(clauses))
    sink.statements.append(sink.text(statement))
    if sink.dry_run:
        return 0
    return conn.execute(statement).rowcount


def run(
    conn: psycopg.Connection,
    plan: Plan,
    mappings: dict[tuple[str, str], SourceMapping],
    options: BackfillOptions,
    sink: Sink,
    progress: Progress,
) -> dict:
    pass_started = conn.execute("SELECT now()").fetchone()[0]
    summary: dict[str, dict] = {}
    complete = True
    for table in plan.tables:
        table_mappings = [mappings[(table.name, s.table)] for s in table.sources]
        for mapping in table_mappings:
            copy_source(conn, plan, mapping, options, sink, progress)
        state = conn.execute(
            "SELECT bool_and(done), sum(rows_copied) FROM dualshift_private.checkpoints WHERE new_table = %s",
            (table.name,),
        ).fetchone()
        finished = bool(state[0]) and not sink.dry_run
        removed = 0
        if finished:
            removed = repair_deletes(conn, plan, table_mappings, sink)
            replayed = conn.execute(
                "UPDATE dualshift.failed_writes SET replayed_at = now()"
                " WHERE new_table = %s AND replayed_at IS NULL AND recorded_at < %s",
                (table.name, pass_started),
            ).rowcount
        else:
            replayed = 0
            complete = False
        summary[table.name] = {
            "rows_copied": int(state[1] or 0),
            "complete": finished,
            "stale_rows_removed": removed,
            "failed_writes_replayed": replayed,
        }
    return {"tables": summary, "complete": complete}


def reset_checkpoints(conn: psycopg.Connection, plan: Plan) -> None:
    """A finished pass starts over next time: a second backfill is a full re-sync (and a replay)."""
    conn.execute(
        "DELETE FROM dualshift_private.checkpoints WHERE new_table = ANY(%s) AND NOT EXISTS ("
        " SELECT 1 FROM dualshift_private.checkpoints c WHERE c.new_table = ANY(%s) AND NOT c.done)",
        ([t.name for t in plan.tables], [t.name for t in plan.tables]),
    )
