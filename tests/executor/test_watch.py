"""`migrate watch`: healthy runs are recorded; drift and failed mirror writes roll reads back; metrics."""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import replace

import psycopg
import pytest
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor import watch
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.catalog import validate
from dualshift.executor.connection import connect
from dualshift.executor.phases import Executor
from dualshift.plan import PlanError, load_plan

from .conftest import PLAN


def _switched(dsn: str, sync_triggers: bool) -> Executor:
    ex = Executor(connect(dsn), load_plan(PLAN), dsn)
    ex.create()
    ex.backfill(BackfillOptions(batch_size=1000), sync_triggers=sync_triggers)
    assert ex.verify()["passed"]
    ex.switch_reads(50)
    return ex


def _check(ex: Executor) -> watch.Health:
    return watch.check(ex.conn, ex.plan, validate(ex.conn, ex.plan), interval_s=60)


def _read_percent(db: psycopg.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT value::text FROM dualshift.flags WHERE name = 'read_from_new_percent'")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_healthy_migration_stays_switched_and_is_green(dsn: str, db: psycopg.Connection) -> None:
    ex = _switched(dsn, sync_triggers=True)
    db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('w1', gen_random_uuid(), 'mirrored')")
    health = _check(ex)
    assert health.healthy, health.breaches
    assert set(health.probe_ms) >= {"public.tweets", "public.posted_content"}
    watch.record(ex.conn, ex.plan, health)
    assert watch.green_since(ex.conn, ex.plan) is not None
    assert _read_percent(db) == ["50"]


def test_drift_rolls_reads_back_and_is_audited_and_published(dsn: str, db: psycopg.Connection) -> None:
    ex = _switched(dsn, sync_triggers=False)  # no net: a write the wrapper did not mirror stays behind
    db.execute(
        "INSERT INTO tweets (tweet_id, decision_id, text, posted_at)"
        " SELECT 'late' || n, gen_random_uuid(), 'only old', now() - interval '1 minute' FROM generate_series(1, 3) n"
    )
    metrics = watch.Metrics()
    port = _free_port()
    metrics.serve(port)
    lines: list[str] = []
    health = watch.run(lambda: _check(ex), lambda h: watch.act(ex, h), 60, True, lines.append, metrics)
    assert health.drift_rows["tweets"] == 3 and not health.healthy
    assert lines[-1].startswith("BREACH: 3 row(s) written to tweets in the last 15 min are missing from posted_content")
    assert lines[-1].endswith("→ reads switched back to the old tables (read_from_new_percent = 0)")
    assert _read_percent(db) == ["0"]
    audited = db.execute("SELECT action FROM dualshift_private.audit WHERE phase = 'watch'").fetchall()
    assert audited == [("breach: reads switched back to the old tables (read_from_new_percent = 0)",)]
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'dualshift_sync_drift_rows{source="tweets"} 3.0' in scraped
    assert "dualshift_healthy 0.0" in scraped
    watch.record(ex.conn, ex.plan, health)
    assert watch.green_since(ex.conn, ex.plan) is None


def test_failed_mirror_writes_are_a_breach(dsn: str, db: psycopg.Connection) -> None:
    ex = _switched(dsn, sync_triggers=True)
    db.execute(
        "INSERT INTO dualshift.failed_writes (old_table, new_table, operation, payload, error)"
        " VALUES ('tweets', 'posted_content', 'insert', '{}', 'permission denied for table posted_content')"
    )
    health = _check(ex)
    assert health.breaches == ["1 mirror write(s) failed in the last 60 s (limit 0)"]


def test_status_says_when_seven_green_days_make_it_ready_for_cleanup(dsn: str, db: psycopg.Connection) -> None:
    ex = _switched(dsn, sync_triggers=True)
    watch.record(ex.conn, ex.plan, _check(ex))
    db.execute("UPDATE dualshift_private.watch_runs SET at = now() - interval '8 days'")  # the first green run
    watch.record(ex.conn, ex.plan, _check(ex))
    status = ex.status()
    assert status["green_since"] is not None and status["ready_for_cleanup_since"] is not None
    broken = watch.Health(breaches=["planted"])
    watch.record(ex.conn, ex.plan, broken)
    assert ex.status()["ready_for_cleanup_since"] is None and ex.status()["green_since"] is None


API_ROLES = """
DO $$ BEGIN CREATE ROLE anon NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE authenticated NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE service_role NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
"""


def _plant_mismatches(db: psycopg.Connection, rows: int) -> None:
    """What the generated wrapper sends when a shadow read differs, through the API role's INSERT-only grant."""
    with db.transaction():
        db.execute("SET LOCAL ROLE authenticated")
        for n in range(rows):
            db.execute(
                "INSERT INTO dualshift.shadow_mismatches"
                " (old_table, new_table, key, columns, missing_from, served_from, call_site)"
                " VALUES ('tweets', 'posted_content', %s, '{text}', NULL, 'old', 'src/jobs/poster.ts:12:7')",
                (Jsonb({"tweet_id": f"t{n}"}),),
            )


def test_shadow_read_mismatches_are_a_rate_that_rolls_reads_back(dsn: str, db: psycopg.Connection) -> None:
    db.execute(API_ROLES)
    ex = _switched(dsn, sync_triggers=True)
    _plant_mismatches(db, 2)
    db.execute("INSERT INTO dualshift.shadow_mismatches (old_table, new_table) VALUES ('a', 'another_plans_table')")
    health = _check(ex)
    assert health.shadow_mismatches == {"posted_content": 2} and health.shadow_mismatches_per_minute == 2.0
    assert health.breaches == [
        "shadow reads found 2 mismatching row(s) per minute (posted_content 2 in the last 60 s; limit 0)"
    ]
    tolerant = replace(ex.plan, watch=replace(ex.plan.watch, max_shadow_mismatches_per_minute=2.5))
    assert watch.check(ex.conn, tolerant, validate(ex.conn, tolerant), interval_s=60).healthy

    port = _free_port()
    result = CliRunner().invoke(
        app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), "watch", "--once", "--metrics-port", str(port)]
    )
    assert result.exit_code == 1
    assert "BREACH: shadow reads found 2 mismatching row(s) per minute" in result.output
    assert result.output.rstrip().endswith("→ reads switched back to the old tables (read_from_new_percent = 0)")
    assert _read_percent(db) == ["0"]
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'dualshift_shadow_mismatches{table="posted_content"} 2.0' in scraped
    assert "dualshift_shadow_mismatches_per_minute 2.0" in scraped
    recorded = db.execute("SELECT key, columns, call_site FROM dualshift.shadow_mismatches ORDER BY id").fetchone()
    assert recorded == ({"tweet_id": "t0"}, ["text"], "src/jobs/poster.ts:12:7")


def test_the_shadow_mismatch_threshold_must_be_a_number(tmp_path) -> None:
    text = PLAN.read_text()
    assert "\n[watch]" in text
    for value in ('"many"', "-1", "nan"):
        bad = tmp_path / "plan.toml"
        bad.write_text(text.replace("\n[watch]", f"\n[watch]\nmax_shadow_mismatches_per_minute = {value}", 1))
        with pytest.raises(PlanError, match=r"watch\.max_shadow_mismatches_per_minute must be a number >= 0"):
            load_plan(bad)
