"""`dualshift migrate watch`: the seeds' health monitor (seed 000 §4) with automatic rollback.

Every interval: each old and new table answers a bounded probe; recent rows of each source are looked
up in the new table (sync drift); mirror writes that failed are counted (`dualshift.failed_writes`), and
so are the rows the wrapper's shadow reads found different (`dualshift.shadow_mismatches`, as a rate per
minute); sessions waiting on a lock on the migration's tables are counted. A figure past the plan's `[watch]`
threshold is a breach: the plan's action runs (reads back to the old tables, or dual writes off, or
only the alert), it is written to the audit log, and the run says so in one line. Every run is
recorded, so `status` can say how long the migration has been green.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from dualshift.executor.catalog import SourceMapping, table_exists
from dualshift.executor.names import API_SCHEMA, PRIVATE_SCHEMA
from dualshift.plan import Plan

GRACE_SECONDS = 10  # the wrapper mirrors after the old write returns: the newest rows may be in flight
RUNS_DDL = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {}.watch_runs (id bigserial PRIMARY KEY, plan text NOT NULL,"
    " at timestamptz NOT NULL DEFAULT pg_catalog.now(), healthy boolean NOT NULL, figures jsonb NOT NULL)"
).format(sql.Identifier(PRIVATE_SCHEMA))


@dataclass
class Health:
    probe_ms: dict[str, float] = field(default_factory=dict)  # "schema.table" → milliseconds (-1: failed)
    drift_rows: dict[str, int] = field(default_factory=dict)  # old table → recent rows missing in the new one
    failed_writes: int = 0
    shadow_mismatches: dict[str, int] = field(default_factory=dict)  # new table → mismatching rows in the interval
    shadow_mismatches_per_minute: float = 0.0
    lock_waits: int = 0
    breaches: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.breaches

    def figures(self) -> dict:
        return {
            "probe_ms": self.probe_ms,
            "drift_rows": self.drift_rows,
            "failed_writes": self.failed_writes,
            "shadow_mismatches": self.shadow_mismatches,
            "shadow_mismatches_per_minute": self.shadow_mismatches_per_minute,
            "lock_waits": self.lock_waits,
            "breaches": self.breaches,
        }


def _relations(plan: Plan) -> list[tuple[str, str]]:
    old = [(s.schema, s.table) for t in plan.tables for s in t.sources]
    return old + [(plan.new_schema, t.name) for t in plan.tables]


def probe(conn: psycopg.Connection, schema: str, table: str, limit_ms: int) -> float:
    """Milliseconds for a one-row read, bounded by a statement timeout; -1 when it fails or times out."""
    start = time.perf_counter()
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(f"{max(limit_ms, 1) * 2}ms")))
            conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(schema, table))).fetchall()
    except psycopg.Error:
        return -1.0
    return (time.perf_counter() - start) * 1000


def drift(conn: psycopg.Connection, plan: Plan, mapping: SourceMapping, minutes: int) -> int:
    """Rows the source wrote in the last `minutes` (by its `timestamp` column) whose key the new table lacks."""
    source, table = mapping.source, mapping.table
    if source.timestamp is None:
        return 0
    exprs = dict(mapping.pairs)
    match = sql.SQL(" AND ").join(sql.SQL("n.{} = {}").format(sql.Identifier(k), exprs[k]) for k in table.key)
    statement = sql.SQL(
        "SELECT pg_catalog.count(*) FROM {old} o WHERE o.{ts} > pg_catalog.now() - pg_catalog.make_interval(mins => %s)"
        " AND o.{ts} <= pg_catalog.now() - pg_catalog.make_interval(secs => %s)"
        " AND NOT EXISTS (SELECT 1 FROM {new} n WHERE {match})"
    ).format(
        old=sql.Identifier(source.schema, source.table),
        ts=sql.Identifier(source.timestamp),
        new=sql.Identifier(plan.new_schema, table.name),
        match=match,
    )
    return int(conn.execute(statement, (minutes, GRACE_SECONDS)).fetchone()[0])


def failed_writes(conn: psycopg.Connection, seconds: float) -> int:
    if not table_exists(conn, API_SCHEMA, "failed_writes"):
        return 0
    statement = sql.SQL(
        "SELECT pg_catalog.count(*) FROM {} WHERE replayed_at IS NULL"
        " AND recorded_at > pg_catalog.now() - pg_catalog.make_interval(secs => %s)"
    ).format(sql.Identifier(API_SCHEMA, "failed_writes"))
    return int(conn.execute(statement, (seconds,)).fetchone()[0])


def shadow_mismatches(conn: psycopg.Connection, plan: Plan, seconds: float) -> dict[str, int]:
    """Rows the wrapper's shadow reads recorded as different in the last `seconds`, per new table of the plan."""
    if not table_exists(conn, API_SCHEMA, "shadow_mismatches"):
        return {}
    statement = sql.SQL(
        "SELECT new_table, pg_catalog.count(*) FROM {} WHERE new_table = ANY(%s) AND recorded_at > pg_catalog.now()"
        " - pg_catalog.make_interval(secs => %s) GROUP BY new_table ORDER BY new_table"
    ).format(sql.Identifier(API_SCHEMA, "shadow_mismatches"))
    tables = [t.name for t in plan.tables]
    return {table: int(count) for table, count in conn.execute(statement, (tables, seconds))}


def lock_waits(conn: psycopg.Connection, plan: Plan) -> int:
    names = [f'"{schema}"."{table}"' for schema, table in _relations(plan)]
    return int(
        conn.execute(
            "SELECT pg_catalog.count(DISTINCT l.pid) FROM pg_catalog.pg_locks l WHERE NOT l.granted"
            " AND l.relation = ANY(SELECT pg_catalog.to_regclass(r)::oid FROM pg_catalog.unnest(%s::text[]) r)",
            (names,),
        ).fetchone()[0]
    )


def check(
    conn: psycopg.Connection, plan: Plan, mappings: dict[tuple[str, str], SourceMapping], interval_s: float
) -> Health:
    limits = plan.watch
    health = Health()
    for schema, table in _relations(plan):
        if table_exists(conn, schema, table):
            health.probe_ms[f"{schema}.{table}"] = elapsed = probe(conn, schema, table, limits.max_probe_ms)
            if elapsed < 0:
                health.breaches.append(f"{schema}.{table} did not answer a one-row read")
            elif elapsed > limits.max_probe_ms:
                health.breaches.append(f"{schema}.{table} answered in {elapsed:.0f} ms (limit {limits.max_probe_ms})")
    for (_, old), mapping in sorted(mappings.items()):
        if table_exists(conn, mapping.source.schema, old) and table_exists(conn, plan.new_schema, mapping.table.name):
            health.drift_rows[old] = missing = drift(conn, plan, mapping, limits.drift_minutes)
            if missing > limits.max_drift_rows:
                health.breaches.append(
                    f"{missing} row(s) written to {old} in the last {limits.drift_minutes} min are missing from"
                    f" {mapping.table.name} (limit {limits.max_drift_rows})"
                )
    health.failed_writes = failed_writes(conn, interval_s)
    if health.failed_writes > limits.max_failed_writes:
        health.breaches.append(
            f"{health.failed_writes} mirror write(s) failed in the last {interval_s:.0f} s (limit {limits.max_failed_writes})"
        )
    health.shadow_mismatches = shadow_mismatches(conn, plan, interval_s)
    health.shadow_mismatches_per_minute = rate = sum(health.shadow_mismatches.values()) * 60 / max(interval_s, 1)
    if rate > limits.max_shadow_mismatches_per_minute:
        tables = ", ".join(f"{t} {n}" for t, n in health.shadow_mismatches.items())
        health.breaches.append(
            f"shadow reads found {rate:g} mismatching row(s) per minute ({tables} in the last {interval_s:.0f} s;"
            f" limit {limits.max_shadow_mismatches_per_minute:g})"
        )
    health.lock_waits = lock_waits(conn, plan)
    if health.lock_waits > limits.max_lock_waits:
        health.breaches.append(f"{health.lock_waits} session(s) wait on locks of the migration's tables")
    return health


def record(conn: psycopg.Connection, plan: Plan, health: Health) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(PRIVATE_SCHEMA)))
    conn.execute(RUNS_DDL)
    conn.execute(
        sql.SQL("INSERT INTO {}.watch_runs (plan, healthy, figures) VALUES (%s, %s, %s)").format(
            sql.Identifier(PRIVATE_SCHEMA)
        ),
        (plan.name, health.healthy, psycopg.types.json.Jsonb(health.figures())),
    )


def green_since(conn: psycopg.Connection, plan: Plan) -> datetime | None:
    """When the current run of healthy watches began (None: never watched, or the last run breached)."""
    if not table_exists(conn, PRIVATE_SCHEMA, "watch_runs"):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT pg_catalog.min(at) FROM {t} w WHERE w.plan = %s AND w.at > coalesce("
            "(SELECT pg_catalog.max(at) FROM {t} b WHERE b.plan = %s AND NOT b.healthy), '-infinity')),"
            " (SELECT healthy FROM {t} l WHERE l.plan = %s ORDER BY at DESC LIMIT 1)"
        ).format(t=sql.Identifier(PRIVATE_SCHEMA, "watch_runs")),
        (plan.name, plan.name, plan.name),
    ).fetchone()
    return row[0] if row[1] else None


GREEN_DAYS = 7  # seed 001: "if YES to all for 7 days → ready for cleanup"


def cleanup_readiness(conn: psycopg.Connection, plan: Plan) -> dict[str, object]:
    """`status`: since when every watch was healthy, and from when that makes the migration ready for cleanup."""
    since = green_since(conn, plan)
    if since is None:
        return {"green_since": None, "ready_for_cleanup_since": None}
    ready = since + timedelta(days=GREEN_DAYS)
    now = conn.execute("SELECT pg_catalog.now()").fetchone()[0]
    return {
        "green_since": since,
        "ready_for_cleanup_since": ready if ready <= now else None,
        "ready_for_cleanup_at": ready,
    }


class Metrics:
    """The figures as Prometheus gauges on their own registry (`--metrics-port`)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.probe = Gauge(
            "dualshift_probe_milliseconds",
            "One-row read time per table (-1: failed)",
            ["table"],
            registry=self.registry,
        )
        self.drift = Gauge(
            "dualshift_sync_drift_rows",
            "Recent source rows missing from the new table",
            ["source"],
            registry=self.registry,
        )
        self.failed = Gauge(
            "dualshift_failed_writes", "Mirror writes that failed in the last interval", registry=self.registry
        )
        self.shadow = Gauge(
            "dualshift_shadow_mismatches",
            "Rows the wrapper's shadow reads found different in the last interval",
            ["table"],
            registry=self.registry,
        )
        self.shadow_rate = Gauge(
            "dualshift_shadow_mismatches_per_minute",
            "Shadow-read mismatches per minute over the last interval",
            registry=self.registry,
        )
        self.locks = Gauge(
            "dualshift_lock_waits", "Sessions waiting on locks of the migration's tables", registry=self.registry
        )
        self.healthy = Gauge("dualshift_healthy", "1 when the last check found no breach", registry=self.registry)
        self.breaches = Counter("dualshift_breaches", "Checks that found a breach", registry=self.registry)

    def serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def update(self, health: Health) -> None:
        for table, value in health.probe_ms.items():
            self.probe.labels(table).set(value)
        for source, value in health.drift_rows.items():
            self.drift.labels(source).set(value)
        self.failed.set(health.failed_writes)
        self.shadow.clear()  # a table without mismatches this interval drops out rather than keeping its last count
        for table, value in health.shadow_mismatches.items():
            self.shadow.labels(table).set(value)
        self.shadow_rate.set(health.shadow_mismatches_per_minute)
        self.locks.set(health.lock_waits)
        self.healthy.set(1 if health.healthy else 0)
        if not health.healthy:
            self.breaches.inc()


def run(
    check_once: Callable[[], Health],
    act: Callable[[Health], str],
    interval_s: float,
    once: bool,
    report: Callable[[str], None],
    metrics: Metrics | None = None,
) -> Health:
    """The loop: check, publish, act on a breach; until stopped, or once."""
    while True:
        health = check_once()
        if metrics is not None:
            metrics.update(health)
        if health.healthy:
            report("healthy: " + ", ".join(f"{k} {v}" for k, v in _summary(health).items()))
        else:
            report(f"BREACH: {'; '.join(health.breaches)} → {act(health)}")
        if once:
            return health
        time.sleep(interval_s)


def _summary(health: Health) -> dict[str, object]:
    slowest = max(health.probe_ms.values(), default=0.0)
    return {
        "slowest probe ms": round(slowest),
        "drift rows": sum(health.drift_rows.values()),
        "failed writes": health.failed_writes,
        "shadow mismatches/min": round(health.shadow_mismatches_per_minute, 2),
        "lock waits": health.lock_waits,
    }


def act(executor, health: Health) -> str:
    """The plan's action on a breach, audited; reads go back even when another executor holds the lock."""
    from dualshift.executor.connection import ExecutorError
    from dualshift.executor.state import audit, set_flag

    conn, plan = executor.conn, executor.plan
    action = plan.watch.action
    if action == "switch-reads-0":
        try:
            executor.switch_reads(0)
        except ExecutorError:  # another phase holds the executor's lock, or the phase is earlier: flags only
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET value = '0', updated_at = pg_catalog.now() WHERE name = 'read_from_new_percent'"
                ).format(sql.Identifier(API_SCHEMA, "flags"))
            )
        done = "reads switched back to the old tables (read_from_new_percent = 0)"
    elif action == "dual-write-off":
        set_flag(conn, "dual_write", False)
        done = "dual writes turned off (dual_write = false)"
    else:
        done = "alert only (plan: watch.action = alert)"
    audit(conn, executor.key, "watch", f"breach: {done}", "ok", health.figures(), [])
    return done
