"""Connections, the advisory lock, timeouts, and the SQL sink that either runs or prints (dry run)."""

from __future__ import annotations

import getpass
import json
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
    """Other sessions holding locks on these relations ("schema.table"): pid, age and query of each (the age
    by the clock, so that it is right inside a transaction too)."""
    rows = conn.execute(
        "SELECT a.pid, pg_catalog.clock_timestamp() - coalesce(a.xact_start, a.query_start),"
        " pg_catalog.left(a.query, 120) FROM pg_catalog.pg_stat_activity a"
        " WHERE a.pid IN (SELECT l.pid FROM pg_catalog.pg_locks l WHERE l.granted"
        " AND l.pid <> pg_catalog.pg_backend_pid()"
        " AND l.relation = ANY(SELECT pg_catalog.to_regclass(r)::oid FROM pg_catalog.unnest(%s::text[]) r))",
        (list(relations),),
    ).fetchall()
    return [_describe(pid, age.total_seconds(), query) for pid, age, query in rows]


class LockBusy(Exception):
    """A lock `lock_in_turn` could not take within its try, and who held it when the wait began."""

    def __init__(self, relation: str, holding: list[str]) -> None:
        super().__init__(f"{relation} is locked by {', '.join(holding) or 'another session'}")
        self.relation = relation
        self.holding = holding


LOCK_STEPS_SETTING = "dualshift.lock_steps"  # what LOCK_IN_TURN locks: {"relations": [...], "share": ...}
LOCK_RAN_OUT = "dualshift: lock wait ran out"
# The part of the try's lock timeout the waits may use together; the rest is for the transaction's own
# work, which the application also waits out once it is queued behind a lock.
LOCKING_SHARE = 0.8

# Server-side, so that no client round trip (or a client short of CPU) lengthens what the application
# waits behind the locks already taken; when a wait runs out, every lock taken so far is let go at
# once (the block is a subtransaction), before the error reaches the client.
# A view gets its ACCESS EXCLUSIVE lock from an ALTER that changes nothing (its owner to its owner):
# LOCK TABLE on a view also locks, at once, every table the view reads (PostgreSQL 11+), which would
# take the new table before the sibling views that writers take first: a writer that has just taken a
# sibling view would wait for the new table behind us while we wait for its view, a lock cycle.
# The holders of a relation are read before waiting for it: once a wait is given up, the sessions
# queued behind it take the lock and would be named instead.
LOCK_IN_TURN = sql.SQL("""DO $dualshift$
DECLARE
  asked jsonb := pg_catalog.current_setting('dualshift.lock_steps')::jsonb;
  timeout_ms integer := (SELECT s.setting::integer FROM pg_catalog.pg_settings s WHERE s.name = 'lock_timeout');
  budget_ms integer := (timeout_ms * (asked ->> 'share')::numeric)::integer;
  started timestamptz := pg_catalog.clock_timestamp();
  step record;
  waiting_for text;
  held jsonb;
BEGIN
  BEGIN
    FOR step IN
      SELECT c.oid::pg_catalog.regclass AS target, c.relkind, pg_catalog.pg_get_userbyid(c.relowner) AS owner
      FROM pg_catalog.jsonb_array_elements_text(asked -> 'relations') WITH ORDINALITY AS r(name, position)
      JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(r.name)
      ORDER BY r.position
    LOOP
      waiting_for := step.target::text;
      SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(a.pid,
          EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() - coalesce(a.xact_start, a.query_start)),
          pg_catalog.left(a.query, 120)))
        INTO held
        FROM pg_catalog.pg_stat_activity a
        WHERE a.pid IN (SELECT l.pid FROM pg_catalog.pg_locks l WHERE l.granted AND l.relation = step.target
          AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
          AND l.pid <> pg_catalog.pg_backend_pid());
      IF timeout_ms > 0 THEN  -- 0: no limit
        PERFORM pg_catalog.set_config('lock_timeout', GREATEST(1, budget_ms
          - (EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() - started) * 1000)::integer) || 'ms', true);
      END IF;
      IF step.relkind = 'v' THEN
        EXECUTE pg_catalog.format('ALTER VIEW %s OWNER TO %I', step.target, step.owner);
      ELSE
        EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', step.target);
      END IF;
    END LOOP;
  EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION USING ERRCODE = 'lock_not_available', MESSAGE = 'dualshift: lock wait ran out',
      DETAIL = pg_catalog.jsonb_build_object('relation', waiting_for, 'holders', coalesce(held, '[]'))::text;
  END;
  PERFORM pg_catalog.set_config('lock_timeout', timeout_ms || 'ms', true);
END
$dualshift$""")


def _describe(pid: int, seconds: float, query: str | None) -> str:
    return f"pid {pid} ({seconds:.1f} s in transaction: {query!r})"


def lock_in_turn(sink: Sink, relations: list[sql.Identifier]) -> None:
    """ACCESS EXCLUSIVE on each relation, in the order given, inside the caller's transaction, all the
    waits together within LOCKING_SHARE of ONE lock timeout (the try's, set by `with_lock_retries`): a
    lock held while waiting for the next stalls the application behind it. A wait that runs out lets
    go of every lock taken and raises LockBusy naming who held that relation. Recorded as the one
    `LOCK TABLE` statement it amounts to; none when there is nothing to lock (`LOCK TABLE` needs a name)."""
    if not relations:
        return
    sink.statements.append(
        sink.text(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.SQL(", ").join(relations)))
    )
    if sink.dry_run:
        return
    conn = sink.conn
    names = [relation.as_string(conn) for relation in relations]
    asked = {"relations": names, "share": LOCKING_SHARE}
    conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (LOCK_STEPS_SETTING, json.dumps(asked)))
    try:
        conn.execute(LOCK_IN_TURN)
    except psycopg.errors.LockNotAvailable as exc:
        if exc.diag.message_primary != LOCK_RAN_OUT or not exc.diag.message_detail:
            raise
        ran_out = json.loads(exc.diag.message_detail)
        raise LockBusy(ran_out["relation"], [_describe(*holder) for holder in ran_out["holders"]]) from None


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
        except (psycopg.errors.LockNotAvailable, LockBusy) as exc:
            holding = exc.holding if isinstance(exc, LockBusy) else blockers(conn, relations)
            waiting_for = f"waiting for {exc.relation}, " if isinstance(exc, LockBusy) else ""
            if attempt == timeouts.lock_attempts:
                raise ExecutorError(
                    f"{what}: could not take its locks in {attempt} tries of {timeouts.lock_ms} ms"
                    f" (nothing of it was kept); {waiting_for}blocked by"
                    f" {', '.join(holding) or 'a session that has since ended'}"
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
