"""Backfill and verify on a 1M-row table, beside what the database itself does at best.

    .venv/bin/python benchmarks/bench_executor.py --rows 1000000

Runs in a fresh database on the server at $DATABASE_URL or 127.0.0.1:5432 (or a throwaway cluster):
1. the database's own limit for a copy: one plain INSERT INTO … SELECT * FROM old into a copy of the old
   table, and one INSERT INTO … SELECT with the plan's mapping (renames, casts) into a table built
   like the new one — the same work as the backfill, in one statement;
2. `dualshift migrate backfill` (keyset batches with checkpoints, resumable) into an empty new table,
   where every batch is a plain INSERT;
3. the database's own limit for a parity check: one full-table hash of each side;
4. `dualshift migrate verify` on identical tables, then with one planted difference (it must find it,
   bisecting the hashed key ranges down to one);
5. backfill again over a new table that dual writes have already given one key in ten, where every
   batch hits a key the table holds and is redone with ON CONFLICT (the slow path, for comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dualshift.executor.backfill import BackfillOptions  # noqa: E402
from dualshift.executor.catalog import validate  # noqa: E402
from dualshift.executor.connection import connect  # noqa: E402
from dualshift.executor.pgserver import fresh_database, server  # noqa: E402
from dualshift.executor.phases import Executor  # noqa: E402
from dualshift.plan import parse_plan  # noqa: E402

PLAN = """
version = 1
name = "bench-executor"
[[tables]]
name = "bench_queue"
key = ["decision_id"]
columns = [
  { name = "decision_id", type = "uuid", nullable = false },
  { name = "content", type = "text", nullable = false },
  { name = "status", type = "text" },
  { name = "raw_topic", type = "text" },
  { name = "quality_score", type = "numeric(5,4)" },
  { name = "created_at", type = "timestamptz" },
]
  [[tables.sources]]
  table = "bench_old"
  key = ["decision_id"]
  rename = { topic = "raw_topic" }
  drop = ["id"]
[dependents]
"sequence public.bench_old_id_seq" = "archive"
"""

OLD = """
CREATE TABLE bench_old (id bigserial PRIMARY KEY, decision_id uuid UNIQUE NOT NULL, content text NOT NULL,
  status text, topic text, quality_score numeric(5,4), created_at timestamptz);
INSERT INTO bench_old (decision_id, content, status, topic, quality_score, created_at)
SELECT md5('b' || i)::uuid, 'content of post number ' || i, (ARRAY['queued','posted'])[1 + i % 2], 'topic ' || i % 50,
  round(((i % 97) / 100.0)::numeric, 4), timestamptz '2026-01-01' + i * interval '1 second'
FROM generate_series(1, %s) AS i;
CREATE TABLE bench_plain (LIKE bench_old INCLUDING ALL);
"""


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def mapped_copy_rate(executor: Executor, plan, rows: int) -> int:
    """The database's limit for the same work as the backfill: one INSERT … SELECT with the plan's
    mapping (renames and casts) into a table built like the new one (same key and indexes)."""
    table = plan.tables[0]
    mapping = validate(executor.conn, plan)[(table.name, table.sources[0].table)]
    conn = executor.conn
    conn.execute(
        sql.SQL("CREATE TABLE public.bench_mapped (LIKE {} INCLUDING ALL)").format(sql.Identifier("public", table.name))
    )
    statement = sql.SQL("INSERT INTO public.bench_mapped ({}) SELECT {} FROM public.bench_old o").format(
        sql.SQL(", ").join(map(sql.Identifier, mapping.new_columns)), mapping.select_list()
    )
    seconds, _ = timed(lambda: conn.execute(statement))
    conn.execute("DROP TABLE public.bench_mapped")
    return round(rows / seconds)


def held_keys_backfill_rate(executor: Executor, plan, args: argparse.Namespace) -> int:
    """Backfill into a new table that already holds every tenth key (as dual writes leave it)."""
    table = plan.tables[0].name
    conn = executor.conn
    conn.execute(
        sql.SQL("DELETE FROM {} WHERE pg_catalog.get_byte(pg_catalog.uuid_send(decision_id), 15) % 10 <> 0").format(
            sql.Identifier("public", table)
        )
    )
    conn.execute("DELETE FROM dualshift_private.checkpoints")
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier("public", table)))
    seconds, _ = timed(lambda: executor.backfill(BackfillOptions(batch_size=args.batch_size)))
    return round(args.rows / seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "executor.json")
    args = parser.parse_args()
    results: dict[str, object] = {"rows": args.rows, "batch_size": args.batch_size}
    with server() as admin, fresh_database(admin, "dualshift_bench") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(OLD.replace("%s", str(args.rows)))
            conn.execute("VACUUM ANALYZE bench_old")
            seconds, _ = timed(lambda: conn.execute("INSERT INTO bench_plain SELECT * FROM bench_old"))
            results["plain_copy_rows_per_s"] = round(args.rows / seconds)
            hash_sql = "SELECT md5(string_agg(md5(t::text), '' ORDER BY decision_id)) FROM {} t"
            seconds, _ = timed(
                lambda: (
                    conn.execute(hash_sql.format("bench_old")).fetchone(),
                    conn.execute(hash_sql.format("bench_plain")).fetchone(),
                )
            )
            results["full_hash_both_sides_s"] = round(seconds, 2)
        plan = parse_plan(PLAN, "bench.toml")
        executor = Executor(connect(dsn), plan, dsn)
        executor.create()
        results["plain_mapped_copy_rows_per_s"] = mapped_copy_rate(executor, plan, args.rows)
        seconds, _ = timed(lambda: executor.backfill(BackfillOptions(batch_size=args.batch_size)))
        results["backfill_rows_per_s"] = round(args.rows / seconds)
        results["backfill_over_plain_copy"] = round(
            results["backfill_rows_per_s"] / results["plain_copy_rows_per_s"], 2
        )
        results["backfill_over_plain_mapped_copy"] = round(
            results["backfill_rows_per_s"] / results["plain_mapped_copy_rows_per_s"], 2
        )
        seconds, report = timed(executor.verify)
        results["verify_identical_s"] = round(seconds, 2)
        results["verify_identical_passed"] = report["passed"]
        results["verify_rows_per_s"] = round(args.rows / seconds)
        executor.conn.execute(
            "UPDATE public.bench_queue SET raw_topic = 'planted' WHERE decision_id = md5('b' || %s)::uuid",
            (args.rows // 2,),
        )
        seconds, report = timed(executor.verify)
        table = report["tables"][0]
        results["verify_planted_s"] = round(seconds, 2)
        results["verify_planted_found"] = table["mismatched_rows"] == 1 and table["samples"][0]["columns"] == {
            "raw_topic": {"expected": f"topic {(args.rows // 2) % 50}", "new": "planted"}
        }
        results["verify_planted_bisection"] = table["bisection"]
        results["backfill_over_held_keys_rows_per_s"] = held_keys_backfill_rate(executor, plan, args)
        results["backfill_over_held_keys_over_plain_mapped_copy"] = round(
            results["backfill_over_held_keys_rows_per_s"] / results["plain_mapped_copy_rows_per_s"], 2
        )
        executor.conn.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    tempfile.tempdir = None
    main()
