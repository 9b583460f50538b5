"""Phase `backfill`: copy old → new inside the database, in keyset-paginated, checkpointed batches.

The rule, here and in the sync triggers: a new-table row holds the mapped row of the first source
(in precedence order) that holds its key, and no row when no source does (where the plan sets
`precedence = "coalesce"` on the table or a column, the first source holding a key copies it with the
later sources' rows for the key read alongside, each column merged by its rule: merge.py). Under
concurrent writers the rule is kept with one transaction-level advisory lock per new-table key (`lock_key`): whoever
writes a new-table row (a backfill batch, a sync trigger) first takes the locks of its keys, and only
then, in a new statement (so with a snapshot that sees every write committed before the lock was
granted), reads which source wins. The last to take a key's lock is the last to write its row, and it
saw every source change made before: the row ends as the rule says.

A batch: lock the next rows of the source (FOR SHARE, so an application write to one of them waits
for the batch and its mirror lands after it), take their keys' advisory locks in a fixed order (with a
lock timeout below the deadlock detector's, retrying the batch on a timeout), then copy the rows whose
key no earlier source holds. While the new table holds none of a batch's keys, the copy is a plain
INSERT (speculative insertion, which ON CONFLICT needs for every row, costs about a third of the copy);
the first unique violation redoes the batch with ON CONFLICT, which the rest of the source's run then
keeps. Each batch and its checkpoint commit together, so a killed run resumes where it stopped.

Before copying, a pass checks each source's keys (read-only): a key shared by two rows of one source,
or a key with a NULL part, is refused with one line naming the table, the key and samples (NULL keys
always; duplicates unless `on_duplicate_key="first"`, which keeps each key's first row in the
source's key order and reports how many were left out). A completed pass also repairs what the
wrapper and the triggers recorded in dualshift.failed_writes: the copy re-upserts every row, and rows
whose key no source has any more (failed deletes) are removed.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dualshift.executor import faults, merge
from dualshift.executor.catalog import SourceMapping
from dualshift.executor.connection import ExecutorError, Sink
from dualshift.executor.names import PRIVATE_SCHEMA
from dualshift.plan import Plan

Progress = Callable[[str, int, int], None]  # (label, rows done, rows total)

FAILED_WRITES = sql.Identifier("dualshift", "failed_writes")
# Advisory locks live in the server's shared lock table (max_locks_per_transaction times connections
# entries, 3,840 on a small Supabase instance): a transaction never holds more than this many.
MAX_LOCKED_KEYS = 1000
KEY_LOCK_TIMEOUT = "500ms"  # below deadlock_timeout (1 s): a batch that waits on a writer backs off first
BATCH_ATTEMPTS = 30
ON_DUPLICATE_KEY = ("refuse", "first")
SYNC_TRIGGER = "dualshift_sync"  # the triggers' name (sync.py installs them)
SAMPLES = 10


@dataclass(frozen=True)
class BackfillOptions:
    batch_size: int = 5000
    max_rows_per_s: float | None = None
    max_batches: int | None = None  # stop early (tests, and a bounded first run)
    on_duplicate_key: str = "refuse"  # or "first": each key's first row in the source's key order wins


def checkpoints(conn: psycopg.Connection) -> sql.Identifier:
    """The checkpoints table: in the private schema, or where a database set up before it kept them."""
    moved = conn.execute("SELECT pg_catalog.to_regclass(%s)", (f"{PRIVATE_SCHEMA}.checkpoints",)).fetchone()[0]
    return sql.Identifier(PRIVATE_SCHEMA if moved else "dualshift", "checkpoints")


def sync_triggers_on(conn: psycopg.Connection, mappings: list[SourceMapping]) -> bool:
    """Whether a sync trigger mirrors any of these sources: then batches must take the keys' locks."""
    sources = [f'"{m.source.schema}"."{m.source.table}"' for m in mappings]
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgname = %s"
        " AND tgrelid = ANY(SELECT pg_catalog.to_regclass(s) FROM pg_catalog.unnest(%s::pg_catalog.text[]) s))",
        (SYNC_TRIGGER, sources),
    ).fetchone()[0]


def session_settings(plan: Plan) -> list[tuple[str, str]]:
    """The settings every statement that maps rows runs under, in the backfill and in the triggers alike,
    so that neither a planted function in `public` nor the writer's session changes what is copied."""
    return [
        ("search_path", "pg_catalog, pg_temp"),
        ("TimeZone", plan.timezone),
        ("DateStyle", "ISO, YMD"),
        ("IntervalStyle", "postgres"),
        ("extra_float_digits", "3"),
    ]


@contextmanager
def pinned_transaction(conn: psycopg.Connection, plan: Plan) -> Iterator[None]:
    with conn.transaction():
        for name, value in session_settings(plan):
            conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))
        yield


def lock_key(table_name: str, key_values: list[sql.Composable]) -> sql.Composable:
    """The advisory lock (bigint) of one new-table key. It hashes the values by their types (not their
    text), so the time zone or number formatting of the session computing it does not matter."""
    return sql.SQL("pg_catalog.hash_record_extended(ROW(CAST({} AS pg_catalog.text), {}), 0)").format(
        sql.Literal(table_name), sql.SQL(", ").join(key_values)
    )


def mapped_lock_key(mapping: SourceMapping) -> sql.Composable:
    return lock_key(mapping.table.name, mapping.key_exprs())


def take_locks(conn: psycopg.Connection, locks: list[int]) -> None:
    """Take these keys' advisory locks in ascending order (everyone's order, so batches never deadlock
    each other); waits are bounded by KEY_LOCK_TIMEOUT."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(KEY_LOCK_TIMEOUT)))
    conn.execute(
        "SELECT pg_catalog.count(pg_catalog.pg_advisory_xact_lock(h))"
        " FROM pg_catalog.unnest(%s::pg_catalog.int8[]) WITH ORDINALITY AS u(h, i)",
        (sorted(set(locks)),),
    )


def _keys(source_key: tuple[str, ...], alias: str = "o") -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(alias, k) for k in source_key)


def _range(mapping: SourceMapping, after: list | None, last: list | None) -> sql.Composable:
    keys = _keys(mapping.source.key)
    clauses = []
    if after is not None:
        clauses.append(sql.SQL("({}) > ({})").format(keys, sql.SQL(", ").join(sql.Literal(v) for v in after)))
    if last is not None:
        clauses.append(sql.SQL("({}) <= ({})").format(keys, sql.SQL(", ").join(sql.Literal(v) for v in last)))
    return sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")


def next_batch_statement(
    mapping: SourceMapping, batch_size: int, after: list | None, locking: bool = True
) -> sql.Composable:
    """The next keyset batch, its rows locked FOR SHARE: (rows, last old key, the keys' advisory locks,
    when `locking`)."""
    source = mapping.source
    key_names = [sql.Identifier(f"__key_{i}") for i in range(len(source.key))]
    return sql.SQL(
        "WITH batch AS (SELECT {keys_as}, {lock} AS __lock FROM {old} o WHERE {where}"
        " ORDER BY {keys} LIMIT {limit} FOR SHARE OF o)\n"
        "SELECT (SELECT pg_catalog.count(*) FROM batch),"
        " (SELECT pg_catalog.json_build_array({last}) FROM batch ORDER BY {descending} LIMIT 1),"
        " {locks}"
    ).format(
        keys_as=sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(sql.Identifier("o", k), name)
            for k, name in zip(source.key, key_names, strict=True)
        ),
        lock=mapped_lock_key(mapping) if locking else sql.SQL("NULL::pg_catalog.int8"),
        locks=sql.SQL("(SELECT pg_catalog.array_agg(DISTINCT __lock) FROM batch)" if locking else "NULL"),
        old=sql.Identifier(source.schema, source.table),
        where=_range(mapping, after, None),
        keys=_keys(source.key),
        limit=sql.Literal(batch_size),
        last=sql.SQL(", ").join(key_names),
        descending=sql.SQL(", ").join(sql.SQL("{} DESC").format(name) for name in key_names),
    )


def held_by_earlier(plan: Plan, mapping: SourceMapping, all_mappings: list[SourceMapping], row: str) -> sql.Composable:
    """SQL: an earlier source than `mapping` holds the key of new-table-shaped row `row`."""
    clauses = [
        sql.SQL("EXISTS (SELECT 1 FROM {} o WHERE {})").format(
            sql.Identifier(earlier.source.schema, earlier.source.table),
            earlier.key_match([sql.Identifier(row, k) for k in mapping.table.key]),
        )
        for earlier in all_mappings[: mapping.precedence]
    ]
    return sql.SQL(" OR ").join(clauses) if clauses else sql.SQL("false")


def copy_statement(
    plan: Plan,
    mapping: SourceMapping,
    all_mappings: list[SourceMapping],
    after: list | None,
    last: list | None,
    upsert: bool = True,
    locking: bool = True,
) -> sql.Composable:
    """Copy the batch's rows (when `locking`, those whose key lock is in the parameter `locks`) that no
    earlier source outranks. One row per new key: the first in the source's key order."""
    source, table = mapping.source, mapping.table
    columns = sql.SQL(", ").join(map(sql.Identifier, mapping.new_columns))
    on_conflict = (
        sql.SQL(" ON CONFLICT ({}) {}").format(
            sql.SQL(", ").join(map(sql.Identifier, table.key)), conflict_action(mapping)
        )
        if upsert
        else sql.SQL("")
    )
    key_exprs = sql.SQL(", ").join(mapping.key_exprs())
    if table.merges_sources:
        return _merged_copy_statement(plan, mapping, all_mappings, after, last, upsert, locking)
    return sql.SQL(
        "INSERT INTO {new} ({columns}) SELECT {columns} FROM ("
        "SELECT DISTINCT ON ({key_exprs}) {select} FROM {old} o"
        " WHERE {range}{locked}"
        " ORDER BY {key_exprs}, {old_keys}, o.ctid) b WHERE NOT ({earlier}){on_conflict}"
    ).format(
        new=sql.Identifier(plan.new_schema, table.name),
        columns=columns,
        key_exprs=key_exprs,
        select=mapping.select_list(),
        old=sql.Identifier(source.schema, source.table),
        range=_range(mapping, after, last),
        locked=sql.SQL(" AND {} = ANY(%(locks)s::pg_catalog.int8[])").format(mapped_lock_key(mapping))
        if locking
        else sql.SQL(""),
        old_keys=_keys(source.key),
        earlier=held_by_earlier(plan, mapping, all_mappings, "b"),
        on_conflict=on_conflict,
    )


def _batch_rows(mapping: SourceMapping, after: list | None, last: list | None, locking: bool) -> sql.Composable:
    """The batch's rows, mapped: one per new key, the first in the source's key order."""
    key_exprs = sql.SQL(", ").join(mapping.key_exprs())
    return sql.SQL(
        "SELECT DISTINCT ON ({key_exprs}) {select} FROM {old} o WHERE {range}{locked}"
        " ORDER BY {key_exprs}, {old_keys}, o.ctid"
    ).format(
        key_exprs=key_exprs,
        select=mapping.select_list(),
        old=sql.Identifier(mapping.source.schema, mapping.source.table),
        range=_range(mapping, after, last),
        locked=sql.SQL(" AND {} = ANY(%(locks)s::pg_catalog.int8[])").format(mapped_lock_key(mapping))
        if locking
        else sql.SQL(""),
        old_keys=_keys(mapping.source.key),
    )


def _merged_copy_statement(
    plan: Plan,
    mapping: SourceMapping,
    all_mappings: list[SourceMapping],
    after: list | None,
    last: list | None,
    upsert: bool,
    locking: bool,
) -> sql.Composable:
    """Under `precedence = "coalesce"`: the batch's keys that no earlier source holds, each with the
    merged row of every source holding it (this one and the later ones, read for the key)."""
    later = tuple(all_mappings[mapping.precedence + 1 :])
    upsert_rows = merge.MergedUpsert(plan, mapping.table, mapping, later)
    base = sql.SQL("({}) {}").format(_batch_rows(mapping, after, last, locking), sql.Identifier(merge.BASE))
    return upsert_rows.statement(
        base,
        None,
        sql.SQL("NOT ({})").format(held_by_earlier(plan, mapping, all_mappings, merge.BASE)),
        upsert,
    )


def conflict_action(mapping: SourceMapping) -> sql.Composable:
    """ON CONFLICT's action: the winning source's row overwrites (precedence is decided before, under
    the key's lock). With nothing but the key to write, a no-op update still reports the row as written."""
    updates = [c for c in mapping.new_columns if c not in mapping.table.key] or [mapping.table.key[0]]
    return sql.SQL("DO UPDATE SET {}").format(
        sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in updates)
    )


# ------------------------------------------------------------------------------------------------
# Keys: a read-only check per source before a pass copies anything.


@dataclass(frozen=True)
class KeyFindings:
    null_rows: int
    null_samples: list
    duplicate_keys: int
    duplicate_rows: int
    duplicate_samples: list

    @property
    def left_out(self) -> int:
        """Rows a copy that keeps each key's first row leaves out."""
        return self.duplicate_rows - self.duplicate_keys


def check_keys(conn: psycopg.Connection, plan: Plan, mapping: SourceMapping) -> KeyFindings:
    source = mapping.source
    old = sql.Identifier(source.schema, source.table)
    any_null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier("o", k)) for k in source.key)
    old_keys = sql.SQL("pg_catalog.json_build_array({})").format(_keys(source.key))
    new_keys = sql.SQL("pg_catalog.json_build_array({})").format(sql.SQL(", ").join(mapping.key_exprs()))
    where = f"{source.schema}.{source.table} (key {', '.join(source.key)}) → {mapping.table.name}"
    try:
        with pinned_transaction(conn, plan):
            nulls, null_samples = conn.execute(
                sql.SQL(
                    "SELECT pg_catalog.count(*), (pg_catalog.array_agg(CAST(k AS pg_catalog.text)))[1:{n}]"
                    " FROM (SELECT {old_keys} AS k FROM {old} o WHERE {any_null}) s"
                ).format(n=sql.Literal(SAMPLES), old_keys=old_keys, old=old, any_null=any_null)
            ).fetchone()
            keys, rows, samples = conn.execute(
                sql.SQL(
                    "SELECT pg_catalog.count(*), pg_catalog.sum(n),"
                    " (pg_catalog.array_agg(k ORDER BY k))[1:{n}] FROM ("
                    "SELECT CAST({new_keys} AS pg_catalog.text) AS k, pg_catalog.count(*) AS n FROM {old} o"
                    " WHERE NOT ({any_null}) GROUP BY 1 HAVING pg_catalog.count(*) > 1) d"
                ).format(n=sql.Literal(SAMPLES), new_keys=new_keys, old=old, any_null=any_null)
            ).fetchone()
    except psycopg.errors.DataException as exc:
        raise ExecutorError(f"backfill: {where}: a key does not fit the new table's key type: {exc}") from None
    return KeyFindings(nulls, list(null_samples or []), keys, int(rows or 0), list(samples or []))


def refuse_bad_keys(findings: dict[str, KeyFindings], on_duplicate_key: str) -> None:
    problems = []
    for where, found in findings.items():
        if found.null_rows:
            problems.append(
                f"{where}: {found.null_rows} row(s) have a NULL key part, e.g. {', '.join(found.null_samples)}"
                " (a NULL key can never be copied: give those rows a key or delete them)"
            )
        if found.duplicate_keys and on_duplicate_key != "first":
            problems.append(
                f"{where}: {found.duplicate_keys} key(s) are held by {found.duplicate_rows} rows,"
                f" e.g. {', '.join(found.duplicate_samples)} (make the key unique, or pass"
                " --on-duplicate-key first to keep each key's first row in the source's key order)"
            )
    if problems:
        raise ExecutorError("backfill refuses to copy, nothing was copied: " + "; ".join(problems))


# ------------------------------------------------------------------------------------------------
# Batches.


def _checkpoint(conn: psycopg.Connection, mapping: SourceMapping) -> tuple[list | None, int, bool]:
    row = conn.execute(
        sql.SQL("SELECT last_key, rows_copied, done FROM {} WHERE new_table = %s AND source = %s").format(
            checkpoints(conn)
        ),
        (mapping.table.name, mapping.source.table),
    ).fetchone()
    if row is None:
        conn.execute(
            sql.SQL("INSERT INTO {} (new_table, source) VALUES (%s, %s)").format(checkpoints(conn)),
            (mapping.table.name, mapping.source.table),
        )
        return None, 0, False
    return row[0], row[1], row[2]


def _count(conn: psycopg.Connection, mapping: SourceMapping) -> int:
    return conn.execute(
        sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(
            sql.Identifier(mapping.source.schema, mapping.source.table)
        )
    ).fetchone()[0]


def copy_source(
    conn: psycopg.Connection,
    plan: Plan,
    mapping: SourceMapping,
    all_mappings: list[SourceMapping],
    options: BackfillOptions,
    sink: Sink,
    progress: Progress,
    locking: bool = True,
) -> int:
    """Copy one source from its checkpoint to its end; return the batches run. With `locking` (sync
    triggers are on), each batch takes its keys' advisory locks, and holds at most MAX_LOCKED_KEYS."""
    last_key, copied, done = _checkpoint(conn, mapping)
    if done:
        return 0
    total = _count(conn, mapping)
    label = f"{mapping.source.table} → {mapping.table.name}"
    batch_size = min(options.batch_size, MAX_LOCKED_KEYS) if locking else options.batch_size
    batches = 0
    upsert = False
    if sink.dry_run:
        sink.statements.append(sink.text(next_batch_statement(mapping, batch_size, last_key, locking)))
        first = copy_statement(plan, mapping, all_mappings, last_key, None, upsert=False, locking=locking)
        sink.statements.append(sink.text(first))
        again = sink.text(copy_statement(plan, mapping, all_mappings, last_key, None, locking=locking))
        sink.statements.append(f"-- the batch again, when the new table already holds one of its keys:\n{again}")
        return 1
    while options.max_batches is None or batches < options.max_batches:
        started = time.monotonic()
        rows, last, upsert = _run_batch(conn, plan, mapping, all_mappings, batch_size, last_key, upsert, locking)
        if rows:
            last_key = last
            copied += rows
        if len(sink.statements) < 3:
            statement = copy_statement(plan, mapping, all_mappings, last_key, None, upsert, locking)
            sink.statements.append(sink.text(statement))
        batches += 1
        progress(label, copied, total)
        if rows < batch_size:
            return batches
        if options.max_rows_per_s:
            pause = rows / options.max_rows_per_s - (time.monotonic() - started)
            if pause > 0:
                time.sleep(pause)
    return batches


def _run_batch(
    conn: psycopg.Connection,
    plan: Plan,
    mapping: SourceMapping,
    all_mappings: list[SourceMapping],
    batch_size: int,
    after: list | None,
    upsert: bool,
    locking: bool,
) -> tuple[int, list | None, bool]:
    """One batch and its checkpoint in one transaction, retried when a writer holds one of its keys."""
    for attempt in range(1, BATCH_ATTEMPTS + 1):
        try:
            with pinned_transaction(conn, plan):
                rows, last, upsert = _copy_batch(conn, plan, mapping, all_mappings, batch_size, after, upsert, locking)
                conn.execute(
                    sql.SQL(
                        "UPDATE {} SET last_key = %s, rows_copied = rows_copied + %s, done = %s"
                        " WHERE new_table = %s AND source = %s"
                    ).format(checkpoints(conn)),
                    (
                        json.dumps(last if rows else after),
                        rows,
                        rows < batch_size,
                        mapping.table.name,
                        mapping.source.table,
                    ),
                )
            faults.point("backfill.batch_committed")
            return rows, last, upsert
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
            if attempt == BATCH_ATTEMPTS:
                raise ExecutorError(
                    f"backfill: {mapping.source.table} → {mapping.table.name}: writers held the batch's keys"
                    f" through {attempt} tries; nothing of this batch was kept, run backfill again to resume"
                ) from None
            time.sleep(min(2.0, 0.02 * 2**attempt) * random.uniform(0.5, 1.0))
        except psycopg.errors.IntegrityError as exc:
            raise ExecutorError(
                f"backfill: {mapping.source.schema}.{mapping.source.table} → {mapping.table.name}: a row in the"
                f" batch {'after key ' + json.dumps(after) if after else 'at the start'} does not fit the new table"
                f" ({exc.diag.message_primary}; {exc.diag.message_detail or 'no detail'}); nothing of this batch was"
                " kept, the rows before it are; fix the row and run backfill again"
            ) from None
    raise AssertionError("unreachable")


def _copy_batch(
    conn: psycopg.Connection,
    plan: Plan,
    mapping: SourceMapping,
    all_mappings: list[SourceMapping],
    batch_size: int,
    after: list | None,
    upsert: bool,
    locking: bool,
) -> tuple[int, list | None, bool]:
    """Copy one batch inside the caller's transaction: (rows, last key, whether ON CONFLICT is now needed)."""
    rows, last, locks = conn.execute(next_batch_statement(mapping, batch_size, after, locking)).fetchone()
    if not rows:
        return 0, None, upsert
    params = None
    if locking:
        take_locks(conn, locks)
        params = {"locks": locks}
    if not upsert:
        try:
            with conn.transaction():
                conn.execute(copy_statement(plan, mapping, all_mappings, after, last, False, locking), params)
            return rows, last, False
        except psycopg.errors.UniqueViolation:
            pass  # the new table holds one of these keys already (a dual write): this batch and the rest upsert
    conn.execute(copy_statement(plan, mapping, all_mappings, after, last, True, locking), params)
    return rows, last, True


# ------------------------------------------------------------------------------------------------
# After a complete pass.


def repair_deletes(conn: psycopg.Connection, plan: Plan, mappings: list[SourceMapping], sink: Sink) -> int:
    """Remove new rows whose key no source holds any more (deletes a mirror could not make), a chunk of
    keys at a time, each under its keys' locks and checked again after them."""
    table = mappings[0].table
    new = sql.Identifier(plan.new_schema, table.name)
    orphan = sql.SQL(" AND ").join(
        sql.SQL("NOT EXISTS (SELECT 1 FROM {} o WHERE {})").format(
            sql.Identifier(m.source.schema, m.source.table), m.key_match([sql.Identifier("n", k) for k in table.key])
        )
        for m in mappings
    )
    lock = lock_key(table.name, [sql.Identifier("n", k) for k in table.key])
    find = sql.SQL("SELECT DISTINCT {lock} FROM {new} n WHERE {orphan} LIMIT {limit}").format(
        lock=lock, new=new, orphan=orphan, limit=sql.Literal(MAX_LOCKED_KEYS)
    )
    delete = sql.SQL("DELETE FROM {new} n WHERE {lock} = ANY(%(locks)s::pg_catalog.int8[]) AND {orphan}").format(
        new=new, lock=lock, orphan=orphan
    )
    sink.statements.append(sink.text(delete))
    if sink.dry_run:
        return 0
    removed = 0
    for _ in range(100):
        with pinned_transaction(conn, plan):
            locks = [r[0] for r in conn.execute(find).fetchall()]
            if not locks:
                return removed
            take_locks(conn, locks)
            removed += conn.execute(delete, {"locks": locks}).rowcount
    return removed


def run(
    conn: psycopg.Connection,
    plan: Plan,
    mappings: dict[tuple[str, str], SourceMapping],
    options: BackfillOptions,
    sink: Sink,
    progress: Progress,
) -> dict:
    if options.batch_size < 1:
        raise ExecutorError(f"--batch-size {options.batch_size}: it must be at least 1")
    if options.on_duplicate_key not in ON_DUPLICATE_KEY:
        raise ExecutorError(f"--on-duplicate-key {options.on_duplicate_key}: choose {' or '.join(ON_DUPLICATE_KEY)}")
    pass_started = conn.execute("SELECT pg_catalog.now()").fetchone()[0]
    findings = {
        f"{m.source.schema}.{m.source.table} (key {', '.join(m.source.key)}) → {m.table.name}": check_keys(
            conn, plan, m
        )
        for m in mappings.values()
    }
    refuse_bad_keys(findings, options.on_duplicate_key)
    summary: dict[str, dict] = {}
    complete = True
    for table in plan.tables:
        table_mappings = [mappings[(table.name, s.table)] for s in table.sources]
        locking = sync_triggers_on(conn, table_mappings) or sink.dry_run
        for mapping in table_mappings:
            copy_source(conn, plan, mapping, table_mappings, options, sink, progress, locking)
        state = conn.execute(
            sql.SQL(
                "SELECT pg_catalog.bool_and(done), pg_catalog.sum(rows_copied) FROM {} WHERE new_table = %s"
            ).format(checkpoints(conn)),
            (table.name,),
        ).fetchone()
        finished = bool(state[0]) and not sink.dry_run
        removed = 0
        if finished:
            removed = repair_deletes(conn, plan, table_mappings, sink)
            replayed = conn.execute(
                sql.SQL(
                    "UPDATE {} SET replayed_at = pg_catalog.now()"
                    " WHERE new_table = %s AND replayed_at IS NULL AND recorded_at < %s"
                ).format(FAILED_WRITES),
                (table.name, pass_started),
            ).rowcount
        else:
            replayed = 0
            complete = False
        left_out = sum(f.left_out for w, f in findings.items() if w.endswith(f"→ {table.name}"))
        summary[table.name] = {
            "rows_copied": int(state[1] or 0),
            "complete": finished,
            "stale_rows_removed": removed,
            "failed_writes_replayed": replayed,
            "duplicate_key_rows_left_out": left_out,
        }
    return {"tables": summary, "complete": complete}


def reset_checkpoints(conn: psycopg.Connection, plan: Plan) -> None:
    """A finished pass starts over next time: a second backfill is a full re-sync (and a replay)."""
    names = [t.name for t in plan.tables]
    conn.execute(
        sql.SQL(
            "DELETE FROM {0} WHERE new_table = ANY(%s) AND NOT EXISTS ("
            " SELECT 1 FROM {0} c WHERE c.new_table = ANY(%s) AND NOT c.done)"
        ).format(checkpoints(conn)),
        (names, names),
    )
