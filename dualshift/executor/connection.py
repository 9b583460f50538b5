"""Connections, the advisory lock, timeouts, and the SQL sink that either runs or prints (dry run)."""

from __future__ import annotations

import getpass
import random
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from psycopg import sql

LOCK_KEY = zlib.crc32(b"dualshift migrate")  # one advisory lock per database for every executor


class ExecutorError(RuntimeError):
    """A phase that cannot run, with the reason (and, where there is one, the command that fixes it)."""


T = TypeVar("T")


@dataclass(frozen=True)
class Timeouts:
    lock_ms: int = 3000  # never queue behind production traffic for long
    statement_ms: int = 600_000
    lock_attempts: int = 8  # tries of `with_lock_retries` before giving up
    backoff_ms: int = 100  # first pause between tries; doubles, with jitter, up to backoff_max_ms
    backoff_max_ms: int = 5000


def blockers(conn: psycopg.Connection, relations: Sequence[str]) -> list[str]:
    """Other sessions holding locks on these relations ("schema.table"): pid, age and query of each."""
    rows = conn.execute(
        "SELECT DISTINCT a.pid, now() - coalesce(a.xact_start, a.query_start), left(a.query, 120)"
        " FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid()"
        " AND l.relation = ANY(SELECT pg_catalog.to_regclass(r)::oid FROM pg_catalog.unnest(%s::text[]) r)",
        (list(relations),),
    ).fetchall()
    return [f"pid {pid} ({age.total_seconds():.1f} s in transaction: {query!r})" for pid, age, query in rows]


def with_lock_retries(
    conn: psycopg.Connection, action: Callable[[], T], what: str, relations: Sequence[str], timeouts: Timeouts
) -> T:
    """Run `action` in one transaction with a short `SET LOCAL lock_timeout`, retrying on lock timeouts
    with exponential backoff and jitter, so a long-running transaction never makes dualshift queue an
    ACCESS EXCLUSIVE lock that stalls the application. Nothing of a failed try is kept."""
    for attempt in range(1, timeouts.lock_attempts + 1):
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{timeouts.lock_ms}ms")))
                return action()
        except psycopg.errors.LockNotAvailable:
            holding = blockers(conn, relations)
            if attempt == timeouts.lock_attempts:
                raise ExecutorError(
                    f"{what}: could not take its locks in {attempt} tries of {timeouts.lock_ms} ms"
                    f" (nothing of it was kept); blocked by {', '.join(holding) or 'a session that has since ended'}"
                ) from None
            pause = min(timeouts.backoff_max_ms, timeouts.backoff_ms * 2 ** (attempt - 1))
            time.sleep(pause * random.uniform(0.5, 1.0) / 1000)
    raise AssertionError("unreachable")


def connect(dsn: str, timeouts: Timeouts = Timeouts()) -> psycopg.Connection:
    try:
        conn = psycopg.connect(dsn, autocommit=True, application_name="dualshift")
    except psycopg.OperationalError as exc:
        raise ExecutorError(f"cannot connect: {str(exc).strip().splitlines()[0]}") from exc
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{timeouts.lock_ms}ms")))
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{timeouts.statement_ms}ms")))
    return conn


@contextmanager
def advisory_lock(conn: psycopg.Connection) -> Iterator[None]:
    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
    if not got:
        holder = conn.execute(
            "SELECT application_name, client_addr, backend_start FROM pg_stat_activity a JOIN pg_locks l"
            " ON l.pid = a.pid WHERE l.locktype = 'advisory' AND l.objid = %s LIMIT 1",
            (LOCK_KEY & 0xFFFFFFFF,),
        ).fetchone()
        who = f" (held by {holder[0] or 'a session'} since {holder[2]:%H:%M:%S})" if holder else ""
        raise ExecutorError(f"another dualshift executor is running on this database{who}; wait for it to finish")
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class Sink:
    """Where a phase's SQL goes: executed, or only collected for --dry-run. Either way it is recorded."""

    conn: psycopg.Connection
    dry_run: bool = False
    statements: list[str] = field(default_factory=list)

    def text(self, statement: sql.Composable) -> str:
        return statement.as_string(self.conn)

    def run(self, statement: sql.Composable, params: tuple | None = None) -> None:
        self.statements.append(self.text(statement))
        if not self.dry_run:
            self.conn.execute(statement, params)
