"""Connections, the advisory lock, timeouts, and the SQL sink that either runs or prints (dry run)."""

from __future__ import annotations

import getpass
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

LOCK_KEY = zlib.crc32(b"dualshift migrate")  # one advisory lock per database for every executor


class ExecutorError(RuntimeError):
    """A phase that cannot run, with the reason (and, where there is one, the command that fixes it)."""


@dataclass(frozen=True)
class Timeouts:
    lock_ms: int = 3000  # never queue behind production traffic for long
    statement_ms: int = 600_000


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
