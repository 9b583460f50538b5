"""An independent ledger of application writes, and the checks that judge a migration by it.

Nothing here imports dualshift: the writers are plain SQL on their own psycopg connections, acting as
the application would (Supabase's `service_role`, or `authenticated` with the JWT claims PostgREST
sets), and a write enters the ledger only after its COMMIT returned. The checker then asks the
database, with plain SQL, where every committed row is and what it holds:

- rows lost: a row the seed data and the ledger say must exist, absent from where it must be (the old
  tables or the views under their names, the new tables while they are being filled);
- rows wrongly changed: present but holding other values (an old name must show the old types);
- rows extra: present although deleted (a delete undone) or never written;
- privileges: has_table_privilege for every role on every relation, compared before and after;
- visible rows: what each role sees through each old name (SET ROLE and request.jwt.claims), compared
  with a reference database that received the same writes and was never migrated.

One departure from the un-migrated database is modelled, and only where the twins' shared row makes
the un-migrated outcome impossible (README section 6, "twins after cleanup"): while the old names are
views over the new table, an update or delete through a twin's view reaches every twin holding the key,
an update with only the columns whose value it changed in the shared row (the row of the first twin
that holds the key). Each writer learns, inside its transaction, whether it wrote through a view.

`SUPABASE` describes the old tables of fixtures/supabase the way a person reading its plan would:
which columns the application owns, which new table each one feeds, renames and constants.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# The API roles, and PUBLIC (every role, present and future): a grant to it widens access for all.
API_ROLES = ("anon", "authenticated", "service_role", "authenticator", "public")


@dataclass(frozen=True)
class OldTable:
    """An old table as the application knows it, and the new table its rows must reach."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]  # the columns compared (key included); never identity or trigger-set ones
    new_table: str
    rename: dict[str, str] = field(default_factory=dict)  # old column → new column
    constants: dict[str, Any] = field(default_factory=dict)  # new column → value for this source's rows
    owns_values: bool = True  # False for a lower-precedence twin: the new table holds the winner's values
    derived: dict[str, Callable[[dict], Any]] = field(default_factory=dict)  # generated columns
    dropped: tuple[str, ...] = ()  # compared columns the plan drops: not compared through the views
    twin: bool = False  # one of the twins of its new table (listed in their precedence order)

    def new_name(self, column: str) -> str:
        return self.rename.get(column, column)


SUPABASE: tuple[OldTable, ...] = (
    OldTable(
        "content_metadata",
        ("decision_id",),
        (
            "decision_id",
            "owner_id",
            "content",
            "content_length",
            "decision_type",
            "status",
            "quality_score",
            "generator_name",
            "raw_topic",
            "scheduled_at",
            "created_at",
        ),
        "content_queue",
        derived={"content_length": lambda row: len(row["content"])},
        dropped=("content_length",),
        twin=True,
    ),
    OldTable(
        "content_generation_metadata_comprehensive",
        ("decision_id",),
        ("decision_id", "owner_id", "content", "decision_type", "status", "topic", "quality_score", "created_at"),
        "content_queue",
        rename={"topic": "raw_topic"},
        owns_values=False,
        twin=True,
    ),
    OldTable(
        "posted_decisions",
        ("decision_id",),
        ("decision_id", "tweet_id", "owner_id", "content", "decision_type", "posted_at"),
        "posted_content",
        constants={"source_table": "posted_decisions"},
    ),
    OldTable(
        "tweets",
        ("decision_id",),
        ("tweet_id", "decision_id", "text", "url", "posted_at"),
        "posted_content",
        rename={"text": "content", "url": "tweet_url"},
        constants={"source_table": "tweets"},
    ),
    OldTable(
        "outcomes",
        ("tweet_id", "collected_at"),
        ("decision_id", "tweet_id", "likes", "impressions", "engagement_rate", "report_type", "collected_at"),
        "engagement_metrics",
        constants={"data_source": "outcomes"},
    ),
    OldTable(
        "tweet_metrics",
        ("tweet_id", "measured_at"),
        ("decision_id", "tweet_id", "like_count", "view_count", "measured_at"),
        "engagement_metrics",
        rename={"like_count": "likes", "view_count": "views", "measured_at": "collected_at"},
        constants={"data_source": "tweet_metrics"},
    ),
)


def _norm(value: Any) -> str:
    """A key part as text that survives a type change (timestamp → timestamptz read as UTC, uuid → text)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _loose(value: Any) -> Any:
    """A value compared across the old and the new table: a timestamp without time zone is UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


Key = tuple[str, ...]


@dataclass(frozen=True)
class Write:
    seq: int
    table: str
    op: str  # insert | update | delete
    key: dict[str, Any]
    values: dict[str, Any]  # the columns written (insert, update)
    through_view: bool = False  # the old name was a view over the new table when it committed


@dataclass
class Failure:
    table: str
    op: str
    error: str
    during: str  # the migration step under way when it failed


class Ledger:
    """Every committed application write, in commit order, and every failed one."""

    def __init__(self) -> None:
        self.writes: list[Write] = []
        self.failures: list[Failure] = []
        self.during = "before the migration"  # set by the test as it moves from step to step
        self._lock = threading.Lock()

    def committed(
        self,
        table: str,
        op: str,
        key: dict[str, Any],
        values: dict[str, Any] | None = None,
        through_view: bool = False,
    ) -> None:
        with self._lock:
            self.writes.append(Write(len(self.writes), table, op, dict(key), dict(values or {}), through_view))

    def failed(self, table: str, op: str, error: str) -> None:
        with self._lock:
            first_line = error.strip().splitlines()[0] if error.strip() else error
            self.failures.append(Failure(table, op, first_line, self.during))

    def summary(self) -> dict[str, Any]:
        ops: dict[str, int] = {}
        for write in self.writes:
            ops[write.op] = ops.get(write.op, 0) + 1
        failed: dict[str, int] = {}
        for failure in self.failures:
            failed[failure.during] = failed.get(failure.during, 0) + 1
        return {
            "committed": len(self.writes),
            "by_operation": ops,
            "failed": len(self.failures),
            "failed_during": failed,
        }


# ─── Application writers ─────────────────────────────────────────────────────────────────────


class Writer(threading.Thread):
    """One application process writing through plain SQL; each writer owns its keys."""

    def __init__(self, dsn: str, number: int, ledger: Ledger, stop: threading.Event, pause_s: float = 0.004) -> None:
        super().__init__(daemon=True, name=f"{type(self).__name__}-{number}")
        self.dsn, self.number, self.ledger, self.stop, self.pause_s = dsn, number, ledger, stop, pause_s
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.crashed: BaseException | None = None
        self.step = 0
        self.conn: psycopg.Connection | None = None
        self.through_view = False  # whether the last committed transaction wrote through a view

    def run(self) -> None:
        try:
            self.conn = psycopg.connect(self.dsn, options="-c TimeZone=UTC")
            while not self.stop.is_set():
                while self.hold.is_set() and not self.stop.is_set():
                    self.holding.set()
                    time.sleep(0.005)
                self.holding.clear()
                self.write_once(self.step)
                self.step += 1
                time.sleep(self.pause_s)
        except BaseException as exc:  # a writer that dies is reported, never silent
            self.crashed = exc
        finally:
            self.holding.set()
            if self.conn is not None:
                self.conn.close()

    def write_once(self, step: int) -> None:
        raise NotImplementedError

    def transaction(
        self,
        table: str,
        op: str,
        statements: list[tuple[sql.Composable, tuple]],
        role: str | None = None,
        sub: str | None = None,
        may_miss: int = 0,
    ) -> list[Any] | None:
        """Run the statements in one transaction as the role; return each one's first row (or rowcount).
        A statement that changes no row fails the write, except the last `may_miss` ones. Before the commit,
        `through_view` is read: the locks the write holds keep the old name what it was when written."""
        conn = self.conn
        assert conn is not None
        results: list[Any] = []
        try:
            if role:
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                claims = {"role": role, **({"sub": sub} if sub else {})}
                conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            for number, (statement, params) in enumerate(statements):
                cursor = conn.execute(statement, params)
                if cursor.rowcount == 0 and number < len(statements) - may_miss:
                    raise LookupError(f"{op} on {table} changed no row")
                results.append(cursor.fetchone() if cursor.description else cursor.rowcount)
            through_view = conn.execute(
                "SELECT c.relkind = 'v' FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass(%s)",
                (f"public.{table}",),
            ).fetchone()
            conn.commit()
        except (psycopg.Error, LookupError) as exc:
            with suppress(psycopg.Error):
                conn.rollback()
            self.ledger.failed(table, op, f"{type(exc).__name__}: {exc}")
            return None
        self.through_view = bool(through_view and through_view[0])
        return results


def _u(text: str) -> uuid.UUID:
    import hashlib

    return uuid.UUID(hashlib.md5(text.encode()).hexdigest())


BASE = datetime(2027, 1, 1, tzinfo=UTC)


class ContentWriter(Writer):
    """A signed-in user drafting content (both twins at once, as the old code did), and the service
    updating seed rows assigned to this writer."""

    def __init__(self, *args: Any, seed_rows: int = 1200, writers: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = str(_u(f"writer-owner{self.number}"))
        self.mine: list[uuid.UUID] = []
        self.seed = [i for i in range(seed_rows) if i % max(writers, 1) == self.number]

    def write_once(self, step: int) -> None:
        kind = step % 6
        if kind in (0, 1, 3) or not self.mine:
            self._insert(step)
        elif kind == 2:
            self._update(self.mine[(step * 7) % len(self.mine)], step)
        elif kind == 4:
            self._update_seed(step)
        else:
            self._remove(self.mine.pop(0))

    def _insert(self, step: int) -> None:
        key = _u(f"cw{self.number}-{step}")
        at = BASE + timedelta(seconds=step, microseconds=self.number)
        main = {
            "decision_id": key,
            "owner_id": uuid.UUID(self.owner),
            "content": f"draft {self.number}-{step}",
            "decision_type": "single",
            "status": "queued",
            "quality_score": Decimal(step % 100) / 100,  # numeric: two digits survive numeric(5,4)
            "generator_name": "live",
            "raw_topic": "sleep",
            "scheduled_at": (at + timedelta(days=1)).replace(tzinfo=None),
            "created_at": at,
        }
        # The application writes the same decision to both twins: whatever the rule for a write through
        # the lower-precedence twin's view (ignored or applied), the row must end up the same.
        twin = {
            "decision_id": key,
            "owner_id": uuid.UUID(self.owner),
            "content": main["content"],
            "decision_type": "single",
            "status": "queued",
            "topic": main["raw_topic"],
            "quality_score": main["quality_score"],
            "created_at": at,
        }
        done = self.transaction(
            "content_metadata",
            "insert",
            [_insert_sql("content_metadata", main, returning="id"), _insert_sql(TWIN, twin)],
            role="authenticated",
            sub=self.owner,
        )
        if done is None:
            return
        self.ledger.committed("content_metadata", "insert", {"decision_id": key}, main, self.through_view)
        self.ledger.committed(TWIN, "insert", {"decision_id": key}, twin, self.through_view)
        if done[0] is None or done[0][0] is None:
            self.ledger.failed("content_metadata", "insert", "RETURNING id gave no id")
        self.mine.append(key)

    def _update(self, key: uuid.UUID, step: int) -> None:
        main = {"status": "ready", "quality_score": Decimal(step % 77) / 100, "content": f"edited {step}"}
        twin = {"status": main["status"], "quality_score": main["quality_score"], "content": main["content"]}
        if self.transaction(
            "content_metadata",
            "update",
            [
                _update_sql("content_metadata", main, {"decision_id": key}),
                _update_sql(TWIN, twin, {"decision_id": key}),
            ],
            role="authenticated",
            sub=self.owner,
        ):
            self.ledger.committed("content_metadata", "update", {"decision_id": key}, main, self.through_view)
            self.ledger.committed(TWIN, "update", {"decision_id": key}, twin, self.through_view)

    def _update_seed(self, step: int) -> None:
        if not self.seed:
            return
        key = _u(f"c{self.seed[step % len(self.seed)]}")
        values = {"status": "posted", "generator_name": f"service {step}"}
        if self.transaction(
            "content_metadata",
            "update",
            [_update_sql("content_metadata", values, {"decision_id": key})],
            "service_role",
        ):
            self.ledger.committed("content_metadata", "update", {"decision_id": key}, values, self.through_view)

    def _remove(self, key: uuid.UUID) -> None:
        if self.transaction(
            "content_metadata",
            "delete",
            [_delete_sql("content_metadata", {"decision_id": key}), _delete_sql(TWIN, {"decision_id": key})],
            role="authenticated",
            sub=self.owner,
            may_miss=1,  # through the views, the twins' one row is gone after the first delete
        ):
            self.ledger.committed("content_metadata", "delete", {"decision_id": key}, through_view=self.through_view)
            self.ledger.committed(TWIN, "delete", {"decision_id": key}, through_view=self.through_view)


TWIN = "content_generation_metadata_comprehensive"


class PostWriter(Writer):
    """The posting service (service_role): decisions with a reply, tweets; edits and deletes its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decisions: list[uuid.UUID] = []
        self.tweets: list[uuid.UUID] = []

    def write_once(self, step: int) -> None:
        kind = step % 8
        if kind in (0, 1) or not self.decisions:
            self._insert_decision(step)
        elif kind in (2, 3) or not self.tweets:
            self._insert_tweet(step)
        elif kind == 4:
            key = self.decisions[(step * 5) % len(self.decisions)]
            self._update("posted_decisions", key, {"content": f"posted, edited {step}"})
        elif kind == 5:
            key = self.tweets[(step * 3) % len(self.tweets)]
            self._update("tweets", key, {"text": f"tweet, edited {step}", "url": None})
        elif kind == 6:
            self._remove("posted_decisions", self.decisions.pop(0))
        else:
            self._remove("tweets", self.tweets.pop(0))

    def _insert_decision(self, step: int) -> None:
        key = _u(f"pw{self.number}-{step}")
        values = {
            "decision_id": key,
            "tweet_id": f"pw{self.number}-{step}",
            "owner_id": _u(f"owner{step % 4}"),
            "content": f"posted {self.number}-{step}",
            "decision_type": "thread",
            "posted_at": BASE + timedelta(minutes=step, microseconds=self.number),
        }
        reply = {"decision_id": key, "body": f"first reply to {step}"}
        done = self.transaction(
            "posted_decisions",
            "insert",
            [_insert_sql("posted_decisions", values, returning="id"), _insert_sql("replies", reply)],
            "service_role",
        )
        if done is None:
            return
        self.ledger.committed("posted_decisions", "insert", {"decision_id": key}, values)
        if done[0] is None or done[0][0] is None:
            self.ledger.failed("posted_decisions", "insert", "RETURNING id gave no id")
        self.decisions.append(key)

    def _insert_tweet(self, step: int) -> None:
        key = _u(f"tw{self.number}-{step}")
        values = {
            "tweet_id": f"tw{self.number}-{step}",
            "decision_id": key,
            "text": f"tweet {self.number}-{step}",
            "url": f"https://x.com/i/status/w{self.number}{step}",
            "posted_at": BASE + timedelta(minutes=step, microseconds=self.number),
        }
        if self.transaction("tweets", "insert", [_insert_sql("tweets", values)], "service_role"):
            self.ledger.committed("tweets", "insert", {"decision_id": key}, values)
            self.tweets.append(key)

    def _update(self, table: str, key: uuid.UUID, values: dict[str, Any]) -> None:
        if self.transaction(table, "update", [_update_sql(table, values, {"decision_id": key})], "service_role"):
            self.ledger.committed(table, "update", {"decision_id": key}, values)

    def _remove(self, table: str, key: uuid.UUID) -> None:
        if self.transaction(table, "delete", [_delete_sql(table, {"decision_id": key})], "service_role"):
            self.ledger.committed(table, "delete", {"decision_id": key})


class MetricsWriter(Writer):
    """The metrics collector (the database owner, as a cron job connects): new snapshots, corrections,
    deletes of its own snapshots, and corrections of seed rows assigned to this writer."""

    def __init__(self, *args: Any, seed_rows: int = 1200, writers: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.decisions = seed_rows // 2  # seed outcomes follow posted_decisions p0 … p(n/2 - 1)
        self.seed = [i for i in range(seed_rows * 2 // 3) if i % max(writers, 1) == self.number]

    def write_once(self, step: int) -> None:
        kind = step % 7
        if kind in (0, 1) or not self.outcomes:
            key = {"tweet_id": f"mo{self.number}", "collected_at": BASE + timedelta(seconds=step)}
            values = {
                **key,
                "decision_id": _u(f"mo{self.number}"),
                "likes": step % 40,
                "impressions": step % 400,
                "engagement_rate": Decimal(step % 90) / 10000,
                "report_type": ("dailyReport", "weeklyReport", "trackerReport")[step % 3],
            }
            if self.transaction("outcomes", "insert", [_insert_sql("outcomes", values)]):
                self.ledger.committed("outcomes", "insert", key, values)
                self.outcomes.append(key)
        elif kind in (2, 3) or not self.metrics:
            key = {"tweet_id": f"mm{self.number}", "measured_at": datetime(2027, 2, 1) + timedelta(seconds=step)}
            values = {**key, "decision_id": _u(f"mm{self.number}"), "like_count": step % 30, "view_count": step % 300}
            if self.transaction("tweet_metrics", "insert", [_insert_sql("tweet_metrics", values)]):
                self.ledger.committed("tweet_metrics", "insert", key, values)
                self.metrics.append(key)
        elif kind == 4:
            key = self.metrics[(step * 3) % len(self.metrics)]
            values = {"like_count": 1000 + step, "view_count": 5000 + step}
            if self.transaction("tweet_metrics", "update", [_update_sql("tweet_metrics", values, key)]):
                self.ledger.committed("tweet_metrics", "update", key, values)
        elif kind == 5 and self.seed:
            i = self.seed[step % len(self.seed)]
            key = {
                "tweet_id": f"p{i % self.decisions}",
                "collected_at": datetime(2026, 11, 2, tzinfo=UTC) + timedelta(minutes=i),
            }
            values = {"likes": 7000 + step, "report_type": "trackerReport"}
            if self.transaction("outcomes", "update", [_update_sql("outcomes", values, key)]):
                self.ledger.committed("outcomes", "update", key, values)
        else:
            table, pool = ("outcomes", self.outcomes) if step % 2 else ("tweet_metrics", self.metrics)
            if pool:
                key = pool.pop(0)
                if self.transaction(table, "delete", [_delete_sql(table, key)]):
                    self.ledger.committed(table, "delete", key)


def _insert_sql(table: str, values: dict[str, Any], returning: str | None = None) -> tuple[sql.Composable, tuple]:
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier("public", table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    if returning:
        statement = sql.SQL("{} RETURNING {}").format(statement, sql.Identifier(returning))
    return statement, tuple(values.values())


def _update_sql(table: str, values: dict[str, Any], key: dict[str, Any]) -> tuple[sql.Composable, tuple]:
    statement = sql.SQL("UPDATE {} SET {} WHERE {}").format(
        sql.Identifier("public", table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values),
        sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key),
    )
    return statement, (*values.values(), *key.values())


def _delete_sql(table: str, key: dict[str, Any]) -> tuple[sql.Composable, tuple]:
    statement = sql.SQL("DELETE FROM {} WHERE {}").format(
        sql.Identifier("public", table),
        sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in key),
    )
    return statement, tuple(key.values())


class Team:
    """The writers of one run: start them, hold them still between transactions, stop them."""

    def __init__(self, dsn: str, ledger: Ledger, seed_rows: int, per_kind: int = 1, pause_s: float = 0.004) -> None:
        self.stop = threading.Event()
        self.writers: list[Writer] = []
        for n in range(per_kind):
            self.writers.append(
                ContentWriter(dsn, n, ledger, self.stop, pause_s, seed_rows=seed_rows, writers=per_kind)
            )
            self.writers.append(PostWriter(dsn, n, ledger, self.stop, pause_s))
            self.writers.append(
                MetricsWriter(dsn, n, ledger, self.stop, pause_s, seed_rows=seed_rows, writers=per_kind)
            )

    def start(self) -> None:
        for writer in self.writers:
            writer.start()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Every writer finishes the transaction it is in and waits while the block runs."""
        for writer in self.writers:
            writer.hold.set()
        deadline = time.monotonic() + 120
        for writer in self.writers:
            while writer.is_alive() and not writer.holding.wait(0.05):
                if time.monotonic() > deadline:  # a write stuck for two minutes: say so, never hang
                    raise TimeoutError(f"{writer.name} did not finish its transaction within 120 s")
        try:
            yield
        finally:
            for writer in self.writers:
                writer.hold.clear()

    def finish(self) -> list[str]:
        """Stop every writer; the reasons of any that crashed (a crash is not an application error)."""
        self.stop.set()
        for writer in self.writers:
            writer.join(timeout=60)
        return [f"{w.name}: {w.crashed!r}" for w in self.writers if w.crashed]


# ─── The checker ─────────────────────────────────────────────────────────────────────────────


def _rows(conn: psycopg.Connection, schema: str, relation: str) -> list[dict[str, Any]] | str:
    """Every row of a relation as the superuser sees it, or the error reading it gave."""
    try:
        with conn.transaction():
            cursor = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, relation)))
            names = [d.name for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"


@dataclass
class Finding:
    lost: int = 0
    wrong: int = 0
    extra: int = 0
    unreadable: str | None = None
    samples: list[str] = field(default_factory=list)

    def add(self, kind: str, sample: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {sample}")

    @property
    def clean(self) -> bool:
        return not (self.lost or self.wrong or self.extra or self.unreadable)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lost": self.lost,
            "wrong": self.wrong,
            "extra": self.extra,
            "unreadable": self.unreadable,
            "samples": self.samples,
        }


class Checker:
    """What must be where: the seed rows as first read, with every committed write applied."""

    def __init__(self, ledger: Ledger, tables: tuple[OldTable, ...] = SUPABASE) -> None:
        self.ledger = ledger
        self.tables = tables
        self.initial: dict[str, dict[Key, dict[str, Any]]] = {}

    def spec(self, name: str) -> OldTable:
        return next(t for t in self.tables if t.name == name)

    def snapshot(self, conn: psycopg.Connection, schema: str = "public") -> None:
        """Read the old tables before any writer starts."""
        for table in self.tables:
            rows = _rows(conn, schema, table.name)
            if isinstance(rows, str):
                raise RuntimeError(f"cannot read {table.name} for the ledger's snapshot: {rows}")
            self.initial[table.name] = {
                tuple(_norm(r[k]) for k in table.key): {c: r[c] for c in table.columns} for r in rows
            }

    def expected(self, table: OldTable) -> dict[Key, dict[str, Any]]:
        """The rows `table` must hold: the snapshot with every committed write applied in commit order."""
        group = self.twins_of(table)
        rows = {t.name: {key: dict(values) for key, values in self.initial[t.name].items()} for t in group}
        for write in list(self.ledger.writes):
            written = next((t for t in group if t.name == write.table), None)
            if written is None:
                continue
            key = tuple(_norm(write.key[k]) for k in written.key)
            if write.through_view and write.op != "insert" and len(group) > 1:
                self._through_twin_view(group, rows, written, write, key)
            else:
                _apply(written, rows[written.name], write, key)
            for twin in group:
                _derive(twin, rows[twin.name], key)
        return rows[table.name]

    def twins_of(self, table: OldTable) -> list[OldTable]:
        """The twins of `table`'s new table in precedence order (`table` alone when it is no twin)."""
        if not table.twin:
            return [table]
        return [t for t in self.tables if t.twin and t.new_table == table.new_table]

    @staticmethod
    def _through_twin_view(
        group: list[OldTable], rows: dict[str, dict[Key, dict[str, Any]]], written: OldTable, write: Write, key: Key
    ) -> None:
        """An update or delete through a twin's view acts on the twins' one shared row (the first twin
        holding the key): every twin holding the key follows it, an update with the columns it changed."""
        if write.op == "delete":
            for twin in group:
                rows[twin.name].pop(key, None)
            return
        holder = next((t for t in group if key in rows[t.name]), None)
        if holder is None:
            return  # the view shows no such row: the update changed nothing
        shared = {holder.new_name(c): v for c, v in rows[holder.name][key].items()}
        changed = {
            written.new_name(c): v
            for c, v in write.values.items()
            if written.new_name(c) not in shared or shared[written.new_name(c)] != v
        }
        for twin in group:
            if key in rows[twin.name]:
                rows[twin.name][key].update(
                    {c: changed[twin.new_name(c)] for c in twin.columns if twin.new_name(c) in changed}
                )

    def old_names(
        self, conn: psycopg.Connection, schema: str = "public", through_views: bool = False
    ) -> dict[str, Finding]:
        """Each old name (a table, or the view left under its name) against what must be there. Through
        the views, a lower-precedence twin shows the winner's values: only its keys are compared."""
        found: dict[str, Finding] = {}
        for table in self.tables:
            finding = found.setdefault(table.name, Finding())
            rows = _rows(conn, schema, table.name)
            if isinstance(rows, str):
                finding.unreadable = rows
                continue
            expected = self.expected(table)
            seen: set[Key] = set()
            for row in rows:
                key = tuple(_norm(row.get(k)) for k in table.key)
                if key in seen or key not in expected:
                    finding.add("extra", f"{table.name} {key}")
                    continue
                seen.add(key)
                if table.owns_values or not through_views:
                    compared = [c for c in table.columns if not (through_views and c in table.dropped)]
                    differing = [c for c in compared if c not in row or row[c] != expected[key][c]]
                    if differing:
                        finding.add("wrong", f"{table.name} {key}: {_diff(differing, row, expected[key])}")
            for key in expected.keys() - seen:
                finding.add("lost", f"{table.name} {key}")
        return found

    def new_tables(self, conn: psycopg.Connection, schema: str = "public") -> dict[str, Finding]:
        """Each new table holds every row of its sources, mapped, and no other."""
        found: dict[str, Finding] = {}
        for new_table in dict.fromkeys(t.new_table for t in self.tables):
            finding = found.setdefault(new_table, Finding())
            rows = _rows(conn, schema, new_table)
            if isinstance(rows, str):
                finding.unreadable = rows
                continue
            sources = [t for t in self.tables if t.new_table == new_table]
            new_key = [sources[0].rename.get(k, k) for k in sources[0].key]
            actual = {tuple(_norm(r[k]) for k in new_key): r for r in rows}
            claimed: set[Key] = set()
            for source in sources:
                for key, old in self.expected(source).items():
                    row = actual.get(key)
                    if row is None:
                        finding.add("lost", f"{source.name} {key} not in {new_table}")
                        continue
                    if source.owns_values and key not in claimed:
                        differing = [
                            c
                            for c in source.columns
                            if source.rename.get(c, c) in row and _loose(row[source.rename.get(c, c)]) != _loose(old[c])
                        ]
                        differing += [c for c, v in source.constants.items() if row.get(c) != v]
                        if differing:
                            finding.add("wrong", f"{new_table} {key} from {source.name}: {differing}")
                    claimed.add(key)
            for key in actual.keys() - claimed:
                finding.add("extra", f"{new_table} {key}")
        return found


def _apply(table: OldTable, rows: dict[Key, dict[str, Any]], write: Write, key: Key) -> None:
    """A write as an un-migrated table receives it."""
    if write.op == "delete":
        rows.pop(key, None)
    elif write.op == "insert":
        rows[key] = {c: write.values.get(c) for c in table.columns}
    elif key in rows:
        rows[key].update({c: v for c, v in write.values.items() if c in table.columns})


def _derive(table: OldTable, rows: dict[Key, dict[str, Any]], key: Key) -> None:
    for column, rule in table.derived.items():
        if key in rows:
            rows[key][column] = rule(rows[key])


def _diff(columns: list[str], row: dict[str, Any], expected: dict[str, Any]) -> str:
    return ", ".join(f"{c}={row.get(c, '<missing>')!r} expected {expected[c]!r}" for c in columns[:3])


def total(findings: dict[str, Finding], kind: str) -> int:
    return sum(getattr(f, kind) for f in findings.values()) + (
        sum(1 for f in findings.values() if f.unreadable) if kind == "lost" else 0
    )


# ─── Access ──────────────────────────────────────────────────────────────────────────────────


def privileges(conn: psycopg.Connection, roles: tuple[str, ...] = API_ROLES) -> dict[tuple[str, str], frozenset[str]]:
    """(role, schema.relation) → the privileges the role holds on it, with USAGE on its schema."""
    rows = conn.execute(
        "SELECT r.rolname, n.nspname || '.' || c.relname, p.privilege"
        " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " CROSS JOIN pg_catalog.unnest(%s::text[]) AS r(rolname) CROSS JOIN pg_catalog.unnest(%s::text[]) AS p(privilege)"
        " WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"
        " AND pg_catalog.has_schema_privilege(r.rolname, n.oid, 'USAGE')"
        " AND pg_catalog.has_table_privilege(r.rolname, c.oid, p.privilege)",
        (list(roles), list(PRIVILEGES)),
    ).fetchall()
    held: dict[tuple[str, str], set[str]] = {}
    for role, relation, privilege in rows:
        held.setdefault((role, relation), set()).add(privilege)
    return {k: frozenset(v) for k, v in held.items()}


def relations(conn: psycopg.Connection) -> set[str]:
    """Every table and view of the database outside the system schemas, as schema.name."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
    ).fetchall()
    return {r[0] for r in rows}


def gained(
    before: dict[tuple[str, str], frozenset[str]],
    existed: set[str],
    after: dict[tuple[str, str], frozenset[str]],
    sources_of: dict[str, list[str]],
) -> list[str]:
    """Privileges a role holds after and did not hold before. A relation that is new (a new table) may
    give a role only what it held on every one of its sources; any other new relation, nothing."""
    found = []
    for (role, relation), now in sorted(after.items()):
        if relation in existed:
            allowed = before.get((role, relation), frozenset())
        elif relation in sources_of:
            allowed = frozenset.intersection(*(before.get((role, s), frozenset()) for s in sources_of[relation]))
        else:
            allowed = frozenset()
        extra = now - allowed
        if extra:
            found.append(f"{role} gained {', '.join(sorted(extra))} on {relation}")
    return found


@dataclass(frozen=True)
class Viewer:
    label: str
    role: str
    sub: str | None = None


def viewers(owners: int = 4) -> tuple[Viewer, ...]:
    """The API roles as PostgREST sets them: anon, two signed-in users, a writer's user, the service."""
    return (
        Viewer("anon", "anon"),
        Viewer("user0", "authenticated", str(_u("owner0"))),
        Viewer(f"user{owners - 1}", "authenticated", str(_u(f"owner{owners - 1}"))),
        Viewer("writer-user0", "authenticated", str(_u("writer-owner0"))),
        Viewer("service_role", "service_role"),
    )


def visible_counts(conn: psycopg.Connection, relations: list[str], who: tuple[Viewer, ...]) -> dict[str, int | str]:
    """'viewer relation' → rows the viewer sees through it, or why it could not read it."""
    counts: dict[str, int | str] = {}
    for viewer in who:
        for relation in relations:
            claims = {"role": viewer.role, **({"sub": viewer.sub} if viewer.sub else {})}
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(viewer.role)))
                    conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
                    counts[f"{viewer.label} {relation}"] = conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", relation))
                    ).fetchone()[0]
            except psycopg.Error as exc:
                counts[f"{viewer.label} {relation}"] = type(exc).__name__
    return counts


def count_differences(expected: dict[str, int | str], actual: dict[str, int | str]) -> list[str]:
    return [f"{k}: {actual.get(k)!r}, expected {v!r}" for k, v in expected.items() if actual.get(k) != v]


class Replayer:
    """Applies the ledger's committed writes, in commit order, to a reference database that is never
    migrated: what each role sees there is what it must see through the migrated database's old names."""

    def __init__(self, dsn: str, ledger: Ledger) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, options="-c TimeZone=UTC")
        self.ledger = ledger
        self.applied = 0

    def catch_up(self) -> int:
        writes = self.ledger.writes[self.applied :]
        with self.conn.transaction():
            for write in writes:
                if write.op == "insert":
                    statement, params = _insert_sql(write.table, write.values)
                elif write.op == "update":
                    statement, params = _update_sql(write.table, write.values, write.key)
                else:
                    statement, params = _delete_sql(write.table, write.key)
                self.conn.execute(statement, params)
        self.applied += len(writes)
        return len(writes)

    def close(self) -> None:
        self.conn.close()
