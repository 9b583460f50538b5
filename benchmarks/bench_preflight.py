"""The preflight's data checks on the xbot fixture, beside one plain scan of every source.

    .venv/bin/python benchmarks/bench_preflight.py --rows 100000

Runs in a fresh database on the server at $DATABASE_URL or 127.0.0.1:5432 (or a throwaway cluster).
Two columns are made to need a value-by-value cast check (text → uuid, numeric → numeric(5,4)) and a
few traps are planted, so the figures include the plpgsql cast functions and the sample queries.
The reference is `SELECT count(*)` over each of the nine tables: the least any data check can cost.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import psycopg
from psycopg import sql

from dualshift.executor import preflight
from dualshift.executor.pgserver import fresh_database, server
from dualshift.executor.sample_data import load_sample_data
from dualshift.plan import load_plan

PLAN = Path(__file__).resolve().parents[1] / "fixtures" / "xbot" / "dualshift.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="content rows (the other tables follow)")
    args = parser.parse_args()
    with (
        server() as admin,
        fresh_database(admin, "dualshift_bench") as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        load_sample_data(conn, args.rows)
        conn.execute("ALTER TABLE tweet_metrics ALTER decision_id TYPE text")
        conn.execute("ALTER TABLE content_generation_metadata_comprehensive ALTER predicted_engagement TYPE numeric")
        conn.execute("UPDATE tweet_metrics SET decision_id = 'not-a-uuid' WHERE tweet_id = 't5'")
        conn.execute("ANALYZE")
        plan = load_plan(PLAN)
        total_rows = 0
        started = time.perf_counter()
        for table in plan.tables:
            for source in table.sources:
                relation = sql.Identifier(source.schema, source.table)
                total_rows += conn.execute(sql.SQL("SELECT count(*) FROM {}").format(relation)).fetchone()[0]
        scan = time.perf_counter() - started
        started = time.perf_counter()
        findings = preflight.check_all(conn, plan)
        checks = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": total_rows,
                "plain_scan_s": round(scan, 2),
                "preflight_s": round(checks, 2),
                "ratio": round(checks / scan, 1),
                "findings": [(f.check, f.source, f.count) for f in findings],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
