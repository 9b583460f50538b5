"""`migrate verify` against its peers on one pair of tables (text, numeric, timestamptz, jsonb) in one database.

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python benchmarks/bench_verify_peers.py --rows 1000000

Runs in a fresh database on the server at $DATABASE_URL or 127.0.0.1:5432 (or a throwaway cluster), and
times in the same run, on the same identical tables:
1. `migrate verify`'s comparison (no change capture: the comparison alone);
2. reladiff's hashdiff (PyPI `reladiff`: checksums of key segments in the database, bisected), over every
   column, with as many threads as the server has cores;
3. a plain `EXCEPT` both ways (two queries, each counting the rows of one side missing from the other);
then plants one changed value in the middle of the table and checks that verify finds it (and how long
that takes), and times an incremental re-verify after a thousand application writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dualshift.executor import changes, verify  # noqa: E402
from dualshift.executor.catalog import validate  # noqa: E402
from dualshift.executor.connection import connect  # noqa: E402
from dualshift.executor.pgserver import fresh_database, server  # noqa: E402
from dualshift.plan import parse_plan  # noqa: E402

PLAN = """
version = 1
name = "bench-verify-peers"
[[tables]]
name = "peer_new"
key = ["id"]
columns = [
  { name = "id", type = "bigint", nullable = false },
  { name = "body", type = "text" },
  { name = "amount", type = "numeric(12,4)" },
  { name = "at", type = "timestamptz" },
  { name = "doc", type = "jsonb" },
]
  [[tables.sources]]
  table = "peer_old"
  key = ["id"]
"""

COLUMNS = "id bigint PRIMARY KEY, body text, amount numeric(12,4), at timestamptz, doc jsonb"


def load(conn: psycopg.Connection, rows: int) -> None:
    conn.execute(f"CREATE TABLE peer_old ({COLUMNS})")
    conn.execute(f"CREATE TABLE peer_new ({COLUMNS})")
    conn.execute(
        "INSERT INTO peer_old SELECT i, 'message body number ' || i || repeat(' x', i %% 20),"
        " round((i::bigint * 7919 %% 100000) / 97.0, 4), timestamptz '2026-01-01' + i * interval '17 seconds',"
        " jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i %% 13), 'ok', i %% 2 = 0)"
        " FROM generate_series(1, %s) i",
        (rows,),
    )
    conn.execute("INSERT INTO peer_new SELECT * FROM peer_old")
    conn.execute("VACUUM ANALYZE peer_old")
    conn.execute("VACUUM ANALYZE peer_new")


def timed(what: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = what()
    return time.perf_counter() - start, result


def run_verify(dsn: str, capture: bool = False, incremental: bool = False) -> dict:
    plan = parse_plan(PLAN, "bench.toml")
    with connect(dsn) as conn:
        return verify.run(conn, plan, validate(conn, plan), incremental=incremental, capture=capture)


def run_reladiff(dsn: str, threads: int) -> int:
    # reladiff connects through psycopg2 and wants a URI.
    import reladiff

    parts = psycopg.conninfo.conninfo_to_dict(dsn)
    user = parts.get("user") or "postgres"
    password = f":{parts['password']}" if parts.get("password") else ""
    uri = f"postgresql://{user}{password}@{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}/{parts['dbname']}"
    columns = ("body", "amount", "at", "doc")
    old = reladiff.connect_to_table(uri, "peer_old", "id", thread_count=threads, extra_columns=columns)
    new = reladiff.connect_to_table(uri, "peer_new", "id", thread_count=threads, extra_columns=columns)
    differ = reladiff.HashDiffer(threaded=threads > 1, max_threadpool_size=threads)
    try:
        return sum(1 for _ in differ.diff_tables(old, new))
    finally:
        old.database.close()  # its threads' sessions stay idle in transaction, holding their locks, until closed
        if new.database is not old.database:
            new.database.close()


def run_except(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT count(*) FROM (SELECT * FROM peer_old EXCEPT SELECT * FROM peer_new) d").fetchone()
        right = conn.execute("SELECT count(*) FROM (SELECT * FROM peer_new EXCEPT SELECT * FROM peer_old) d").fetchone()
        return left[0], right[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--writes", type=int, default=1000, help="application writes before the incremental run")
    args = parser.parse_args()
    threads = os.cpu_count() or 2
    with server() as admin, fresh_database(admin) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_s, _ = timed(lambda: load(conn, args.rows))
            settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name LIKE 'max_parallel%'"))
        results: dict[str, Any] = {"rows": args.rows, "load_s": round(load_s, 1), "parallel": settings}
        verify_s, report = timed(lambda: run_verify(dsn))
        assert report["passed"], report
        reladiff_s, differences = timed(lambda: run_reladiff(dsn, threads))
        assert differences == 0, differences
        except_s, counts = timed(lambda: run_except(dsn))
        assert counts == (0, 0), counts
        fastest_peer = min(reladiff_s, except_s)
        print(f"verify {verify_s:.2f} s, reladiff {reladiff_s:.2f} s, EXCEPT {except_s:.2f} s", flush=True)
        results.update(
            verify_s=round(verify_s, 2),
            reladiff_hashdiff_s=round(reladiff_s, 2),
            except_both_ways_s=round(except_s, 2),
            verify_over_fastest_peer=round(verify_s / fastest_peer, 3),
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            middle = args.rows // 2
            conn.execute("UPDATE peer_new SET amount = amount + 0.0001 WHERE id = %s", (middle,))
        planted_s, report = timed(lambda: run_verify(dsn))
        table = report["tables"][0]
        assert table["mismatched_rows"] == 1 and table["samples"][0]["key"] == {"id": middle}, table
        results.update(planted_difference_s=round(planted_s, 2), planted_bisection=table["bisection"])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE peer_new SET amount = amount - 0.0001 WHERE id = %s", (middle,))
        capture_s, report = timed(lambda: run_verify(dsn, capture=True))  # switches the capture on
        assert report["passed"], report
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(args.writes):  # the application, writing both sides (as the sync triggers would)
                with conn.transaction():
                    key = args.rows + 1 + i
                    conn.execute("INSERT INTO peer_old (id, body) VALUES (%s, 'new')", (key,))
                    conn.execute("INSERT INTO peer_new (id, body) VALUES (%s, 'new')", (key,))
        incremental_s, report = timed(lambda: run_verify(dsn, capture=True, incremental=True))
        assert report["passed"] and report["tables"][0]["incremental"] == {"keys": args.writes}, report
        results.update(
            full_verify_with_capture_s=round(capture_s, 2),
            incremental_after_writes=args.writes,
            incremental_s=round(incremental_s, 3),
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            for statement in changes.remove_statements(parse_plan(PLAN, "bench.toml")):
                conn.execute(statement)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
