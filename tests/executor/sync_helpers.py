"""A small two-source migration of our own, for the sync-trigger and backfill-key tests.

`items` consolidates `first_items` and `second_items` (in that precedence order): the rule the tests
check is "each key holds the row of the first source that holds it, and no row when none does".
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from dualshift.executor import sync
from dualshift.executor.catalog import validate
from dualshift.executor.connection import Sink, connect
from dualshift.executor.pgserver import fresh_database
from dualshift.executor.phases import Executor
from dualshift.plan import parse_plan

SCHEMA = """
CREATE TABLE first_items (id integer, value text, updated_at timestamp);
CREATE TABLE second_items (id integer, value text, updated_at timestamp);
"""

PLAN = """
version = 1
name = "{name}"
[session]
timezone = "{timezone}"

[[tables]]
name = "items"
key = ["id"]
columns = [
  {{ name = "id", type = "integer", nullable = false, unique = true }},
  {{ name = "value", type = "text" }},
  {{ name = "origin", type = "text", nullable = false }},
  {{ name = "updated_at", type = "timestamptz" }},
]
checks = ["value IS DISTINCT FROM 'rejected by the new table'"]

  [[tables.sources]]
  table = "{first}"
  key = ["id"]
  constants = {{ origin = "first" }}

  [[tables.sources]]
  table = "{second}"
  key = ["id"]
  constants = {{ origin = "second" }}
"""


def items_plan(
    path: str = "items.toml", timezone: str = "UTC", first: str = "first_items", second: str = "second_items"
):
    text = PLAN.format(name=f"items-{uuid.uuid4().hex[:8]}", timezone=timezone, first=first, second=second)
    return parse_plan(text, path)


@contextmanager
def items_database(admin_dsn: str, schema: str = SCHEMA) -> Iterator[str]:
    with fresh_database(admin_dsn) as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema)
        yield dsn


def executor(dsn: str, plan) -> Executor:
    # skip_preflight: these tests prove backfill's and the triggers' own safety nets, which the
    # preflight of `create` would otherwise pre-empt by refusing the same data first.
    return Executor(connect(dsn), plan, dsn, skip_preflight=True)


def install_triggers(ex: Executor) -> None:
    """The sync triggers alone, nothing copied yet (what `backfill --sync triggers` installs first)."""
    sync.install(ex.conn, ex.plan, validate(ex.conn, ex.plan), Sink(ex.conn))


def expected(conn: psycopg.Connection, first: str = "first_items", second: str = "second_items") -> dict:
    """What the rule says `items` holds, computed from the old tables without dualshift's code."""
    rows = {}
    for table, origin in ((second, "second"), (first, "first")):  # the first source last: it wins
        for key, value in conn.execute(sql.SQL("SELECT id, value FROM {}").format(sql.Identifier(table))):
            rows[key] = (value, origin)
    return rows


def actual(conn: psycopg.Connection) -> dict:
    return {key: (value, origin) for key, value, origin in conn.execute("SELECT id, value, origin FROM items")}


def wait_until_blocked(
    conn: psycopg.Connection, pid: int | None = None, application: str | None = None, timeout: float = 5.0
) -> bool:
    """True once backend `pid` (or any backend of `application` in this database) waits on a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            " AND (pid = %s OR application_name = %s)",
            (pid, application),
        ).fetchone()
        if row[0]:
            return True
        time.sleep(0.02)
    return False


class Writer(threading.Thread):
    """Runs `work(conn)` on its own connection in a thread; keeps the exception it raised, if any."""

    def __init__(self, dsn: str, work: Callable[[psycopg.Connection], None]) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work(self.conn)
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = 30) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the writer is still blocked"
        self.conn.close()
        if self.error:
            raise self.error


def commit_once_blocked(
    db: psycopg.Connection, holder: psycopg.Connection, waiter: Writer, application: str | None = None
) -> None:
    """Start `waiter`, wait until it blocks on a lock `holder`'s open transaction holds, then commit and
    close `holder` and let `waiter` finish. With `application`, wait for a backend of that application
    (the work opens its own connection, as the backfill does) rather than the waiter's own."""
    waiter.start()
    assert wait_until_blocked(db, None if application else waiter.pid, application)
    holder.commit()
    waiter.finish()
    holder.close()
