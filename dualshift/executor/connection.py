"""Connections, the advisory lock, timeouts, and the SQL sink that either runs or prints (dry run)."""

from __future__ import annotations

import getpass
import os
import random
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

LOCK_KEY = zlib.crc32(b"dualshift migrate")  # one advisory lock per database for every executor


class ExecutorError(RuntimeError):
    """A phase that cannot run, with the reason (and, where there is one, the command that fixes it)."""


T = TypeVar("T")


@dataclass(frozen=True)
class Timeouts:
    lock_ms: int = 500  # DDL's lock wait per try (`with_lock_retries`): never stall the application for long
    statement_ms: int = 600_000
    row_lock_ms: int = 10_000  # any other statement's lock wait (a batch behind an application's row lock)
    connect_s: int = 10
    idle_in_transaction_ms: int = 60_000
    lock_attempts: int = 8  # tries of `with_lock_retries` before giving up
    backoff_ms: int = 100  # first pause between tries; doubles, with jitter, up to backoff_max_ms
    backoff_max_ms: int = 5000


def blockers(conn: psycopg.Connection, relations: Sequence[str]) -> list[str]:
    """Other sessions holding locks on these relations ("schema.table"): pid, age and query of each."""
    rows = conn.execute(
        "SELECT DISTINCT a.pid, pg_catalog.now() - coalesce(a.xact_start, a.query_start), pg_catalog.left(a.query, 120)"
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
                conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{timeouts.lock_ms}ms",))
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


# Every executor session reads and compares values the same way, whatever PGTZ, PGOPTIONS, or the
# role's and database's settings say, and resolves no name through a schema another role can write.
PINNED_SETTINGS = {
    "search_path": "pg_catalog, pg_temp",
    "TimeZone": "UTC",
    "extra_float_digits": "3",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
}
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def session_settings(timeouts: Timeouts) -> dict[str, str]:
    return {
        **PINNED_SETTINGS,
        "lock_timeout": f"{timeouts.row_lock_ms}ms",
        "statement_timeout": f"{timeouts.statement_ms}ms",
        "idle_in_transaction_session_timeout": f"{timeouts.idle_in_transaction_ms}ms",
    }


def _options(settings: dict[str, str], given: str) -> str:
    """libpq `options`: the user's own first, then ours, which win (spaces escaped as libpq wants)."""
    ours = " ".join(f"-c {name}={value.replace(' ', chr(92) + ' ')}" for name, value in settings.items())
    return f"{given} {ours}".strip()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].removeprefix("connection is bad: ") if lines else type(exc).__name__


def connect(dsn: str, timeouts: Timeouts = Timeouts()) -> psycopg.Connection:
    """An autocommit session with the pinned settings, verified after connecting; every failure to
    connect (a malformed DSN, a refused or silent server) is one ExecutorError line."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ExecutorError(f"invalid DSN: {_first_line(exc)}") from None
    settings = session_settings(timeouts)
    options = _options(settings, str(given.get("options") or os.environ.get("PGOPTIONS", "")))
    parameters = {"connect_timeout": timeouts.connect_s, **KEEPALIVES, "application_name": "dualshift"}
    try:
        try:
            conn = psycopg.connect(dsn, autocommit=True, options=options, **parameters)
        except psycopg.OperationalError as exc:
            if "options" not in str(exc):  # a pooler that refuses the startup `options`: SET them instead
                raise
            conn = psycopg.connect(dsn, autocommit=True, **parameters)
    except psycopg.OperationalError as exc:
        message = _first_line(exc)
        if "timeout" in message.lower():
            message = f"no answer from the server within {timeouts.connect_s} s ({message})"
        raise ExecutorError(f"cannot connect: {message}") from None
    except psycopg.Error as exc:
        raise ExecutorError(f"cannot connect: {_first_line(exc)}") from None
    _pin(conn, settings)
    return conn


def _pin(conn: psycopg.Connection, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
    shown = {
        name: conn.execute("SELECT pg_catalog.current_setting(%s)", (name,)).fetchone()[0] for name in PINNED_SETTINGS
    }
    wrong = {name: value for name, value in shown.items() if value != PINNED_SETTINGS[name]}
    if wrong:
        conn.close()
        raise ExecutorError(f"the server would not keep the session settings dualshift needs: {wrong}")


@contextmanager
def advisory_lock(conn: psycopg.Connection) -> Iterator[None]:
    got = conn.execute("SELECT pg_catalog.pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
    if not got:
        holder = conn.execute(
            "SELECT a.pid, a.application_name, a.usename, a.client_addr, a.backend_start, a.state"
            " FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.database = ("
            "   SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())"
            " AND l.classid = %s AND l.objid = %s LIMIT 1",
            (LOCK_KEY >> 32, LOCK_KEY & 0xFFFFFFFF),
        ).fetchone()
        who = ""
        if holder:
            pid, application, user, address, started, state = holder
            who = (
                f" (held by pid {pid}, {application or 'no application name'}, user {user}"
                f" from {address or 'a local socket'}, connected since {started:%Y-%m-%d %H:%M:%S %Z}, {state})"
            )
        raise ExecutorError(f"another dualshift executor is running on this database{who}; wait for it to finish")
    try:
        yield
    finally:
        conn.execute("SELECT pg_catalog.pg_advisory_unlock(%s)", (LOCK_KEY,))


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
    step: str | None = None  # the step running now, as a migration file names it (None: never emitted)
    ran: list[tuple[str | None, str]] = field(default_factory=list)  # (step, statement) executed, in order

    def text(self, statement: sql.Composable) -> str:
        return statement.as_string(self.conn)

    @contextmanager
    def concern(self, step: str | None) -> Iterator[None]:
        """What runs inside belongs to `step` (`--emit-migrations` writes one file per step)."""
        previous, self.step = self.step, step
        try:
            yield
        finally:
            self.step = previous

    def run_all(self, statements: Iterable[sql.Composable], step: str) -> None:
        """Each statement in order, as part of `step` (see `concern`)."""
        with self.concern(step):
            for statement in statements:
                self.run(statement)

    def run(self, statement: sql.Composable, params: tuple | None = None) -> None:
        text = self.text(statement)
        self.statements.append(text)
        if not self.dry_run:
            self.conn.execute(statement, params)
            self.ran.append((self.step, text))
