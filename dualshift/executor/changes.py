"""Change capture for incremental re-verify: which keys were written since the last passing verify.

Statement-level AFTER triggers with transition tables on every source and every new table record the
new-table key of each written row (a source row's key mapped as backfill maps it) into
`dualshift_private.verify_changes`, with the writing transaction's id. A passing verify stores its
snapshot as the table's watermark; the next `verify --incremental` reads, in its own snapshot, the
keys written by transactions the watermark did not see and compares only those rows, so its cost
follows the number of writes, not the size of the tables. A transaction still running at that moment
is invisible to both, so it stays pending for the next run.

The capture never fails the application's statement: the trigger function catches every error and
then records a key-less row, which makes the next incremental verify of that table a full one (so does
a TRUNCATE). Functions live in `dualshift_private`, are SECURITY DEFINER with a pinned search_path and
pinned session settings, so a key's text is the same whoever writes. They are owned by the migration's
capture role (owners.py), which holds INSERT on `verify_changes` (and its sequence), USAGE on
`dualshift_private`, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from psycopg import sql

from dualshift.executor import owners
from dualshift.executor.catalog import SourceMapping
from dualshift.executor.connection import Timeouts, with_lock_retries
from dualshift.executor.names import PRIVATE_SCHEMA, fit
from dualshift.plan import NewTable, Plan

CHANGES = sql.Identifier(PRIVATE_SCHEMA, "verify_changes")
WATERMARKS = sql.Identifier(PRIVATE_SCHEMA, "verify_watermarks")
EVENTS = ("insert", "update", "delete", "truncate")
MAX_KEYS = 100_000  # past this many changed keys, a full comparison is cheaper than key lookups

SCHEMA_SQL = sql.SQL(
    "CREATE SCHEMA IF NOT EXISTS {schema};"
    " CREATE TABLE IF NOT EXISTS {changes} (id bigserial PRIMARY KEY, plan text NOT NULL, new_table text NOT NULL,"
    "  key text[], xid xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id());"
    " CREATE INDEX IF NOT EXISTS verify_changes_plan_table ON {changes} (plan, new_table);"
    " CREATE TABLE IF NOT EXISTS {watermarks} (plan text NOT NULL, new_table text NOT NULL,"
    "  snapshot pg_snapshot NOT NULL, at timestamptz NOT NULL DEFAULT pg_catalog.now(), PRIMARY KEY (plan, new_table))"
).format(schema=sql.Identifier(PRIVATE_SCHEMA), changes=CHANGES, watermarks=WATERMARKS)


def _function_name(plan: Plan, table: NewTable, relation: str) -> str:
    return fit("capture", plan.name, table.name, relation)


def _trigger_name(plan: Plan, event: str) -> str:
    return fit("dualshift_capture", plan.name, event)


def relations(plan: Plan, table: NewTable) -> Iterator[tuple[str, str, str]]:
    """(schema, table, function name) of every relation whose writes change the table's verdict."""
    for source in table.sources:
        yield source.schema, source.table, _function_name(plan, table, f"{source.schema}.{source.table}")
    yield plan.new_schema, table.name, _function_name(plan, table, "new")


def _key_text(table: NewTable, mapping: SourceMapping | None) -> sql.Composable:
    """ARRAY[key as text, …] over transition-table rows aliased `o` (the alias the mapping expects)."""
    exprs = dict(mapping.pairs) if mapping else {k: sql.Identifier("o", k) for k in table.key}
    return sql.SQL("ARRAY[{}]").format(
        sql.SQL(", ").join(sql.SQL("CAST({} AS text)").format(exprs[k]) for k in table.key)
    )


def _function(conn: psycopg.Connection, plan: Plan, table: NewTable, name: str, mapping: SourceMapping | None):
    record = sql.SQL(
        "INSERT INTO {changes} (plan, new_table, key) SELECT DISTINCT {plan}, {table}, {key} FROM {rows} o"
    )
    marker = sql.SQL("INSERT INTO {} (plan, new_table, key) VALUES ({}, {}, NULL)").format(
        CHANGES, sql.Literal(plan.name), sql.Literal(table.name)
    )

    def from_rows(rows: str) -> sql.Composable:
        return record.format(
            changes=CHANGES,
            plan=sql.Literal(plan.name),
            table=sql.Literal(table.name),
            key=_key_text(table, mapping),
            rows=sql.Identifier(rows),
        )

    body = sql.SQL(
        "BEGIN\n"
        "  BEGIN\n"
        "    IF TG_OP = 'TRUNCATE' THEN {marker}; END IF;\n"
        "    IF TG_OP IN ('INSERT', 'UPDATE') THEN {new_rows}; END IF;\n"
        "    IF TG_OP IN ('DELETE', 'UPDATE') THEN {old_rows}; END IF;\n"
        "  EXCEPTION WHEN OTHERS THEN\n"
        "    BEGIN {marker}; EXCEPTION WHEN OTHERS THEN NULL; END;\n"  # keys unknown: next run is a full one
        "  END;\n"
        "  RETURN NULL;\n"
        "END"
    ).format(marker=marker, new_rows=from_rows("_ds_new_rows"), old_rows=from_rows("_ds_old_rows"))
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER {settings} AS {body}"
    ).format(
        name=sql.Identifier(PRIVATE_SCHEMA, name),
        settings=owners.settings_clause(plan),
        body=sql.Literal(body.as_string(conn)),
    )


def _role_statements(conn: psycopg.Connection, role: str) -> list[sql.Composable]:
    """The capture role and its one privilege: recording keys."""
    return [
        *owners.role_statements(conn, role),
        *owners.granted(
            role,
            [
                *owners.schema_usage({PRIVATE_SCHEMA}),
                *owners.relation_grants(conn, ("INSERT",), [CHANGES]),
                *owners.sequence_grants(conn, [CHANGES]),
            ],
            "verify's change-capture triggers",
        ),
    ]


def _triggers(plan: Plan, schema: str, relation: str, function: str) -> list[sql.Composable]:
    referencing = {
        "insert": "REFERENCING NEW TABLE AS _ds_new_rows FOR EACH STATEMENT",
        "update": "REFERENCING NEW TABLE AS _ds_new_rows OLD TABLE AS _ds_old_rows FOR EACH STATEMENT",
        "delete": "REFERENCING OLD TABLE AS _ds_old_rows FOR EACH STATEMENT",
        "truncate": "FOR EACH STATEMENT",
    }
    return [
        sql.SQL("CREATE OR REPLACE TRIGGER {} AFTER {} ON {} {} EXECUTE FUNCTION {}()").format(
            sql.Identifier(_trigger_name(plan, event)),
            sql.SQL(event.upper()),
            sql.Identifier(schema, relation),
            sql.SQL(referencing[event]),
            sql.Identifier(PRIVATE_SCHEMA, function),
        )
        for event in EVENTS
    ]


def _installed(conn: psycopg.Connection, plan: Plan, schema: str, relation: str, function: str) -> bool:
    """All four capture triggers are on the relation, calling its function, owned by the capture role."""
    found = conn.execute(
        "SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid"
        " JOIN pg_catalog.pg_namespace fs ON fs.oid = p.pronamespace"
        " WHERE t.tgrelid = pg_catalog.to_regclass(pg_catalog.quote_ident(%s) || '.' || pg_catalog.quote_ident(%s))"
        " AND fs.nspname = %s AND p.proname = %s AND t.tgname = ANY(%s) AND t.tgenabled <> 'D'"
        " AND pg_catalog.pg_get_userbyid(p.proowner) = %s",
        (
            schema,
            relation,
            PRIVATE_SCHEMA,
            function,
            [_trigger_name(plan, e) for e in EVENTS],
            owners.role_name(conn, plan, owners.CAPTURE),
        ),
    ).fetchone()[0]
    return found == len(EVENTS)


def capturing(conn: psycopg.Connection, plan: Plan, table: NewTable) -> bool:
    return all(_installed(conn, plan, *r) for r in relations(plan, table))


def install(
    conn: psycopg.Connection,
    plan: Plan,
    mappings: dict[tuple[str, str], SourceMapping],
    timeouts: Timeouts = Timeouts(),
) -> list[str]:
    """Switch the capture on where it is not, one relation per transaction (short locks, no deadlock
    with the application's writes across tables). A table whose capture was (re)started loses its
    watermark: its next incremental verify is a full one."""
    conn.execute(SCHEMA_SQL)
    role = owners.role_name(conn, plan, owners.CAPTURE)
    with conn.transaction():
        for statement in _role_statements(conn, role):
            conn.execute(statement)
    installed = []
    for table in plan.tables:
        started = False
        for schema, relation, function in relations(plan, table):
            if _installed(conn, plan, schema, relation, function):
                continue
            mapping = (
                mappings.get((table.name, relation)) if schema != plan.new_schema or relation != table.name else None
            )
            name = sql.Identifier(PRIVATE_SCHEMA, function)
            statements = [
                *owners.owned_functions(role, [(_function(conn, plan, table, function, mapping), name, sql.SQL(""))]),
                *_triggers(plan, schema, relation, function),
            ]

            def action(statements=statements) -> None:
                for statement in statements:
                    conn.execute(statement)

            with_lock_retries(
                conn, action, f"verify change capture on {schema}.{relation}", [f"{schema}.{relation}"], timeouts
            )
            installed.append(f"{schema}.{relation}")
            started = True
        if started:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE plan = %s AND new_table = %s").format(WATERMARKS), (plan.name, table.name)
            )
    return installed


def pending_keys(conn: psycopg.Connection, plan: Plan, table: NewTable) -> list[tuple[str | None, ...]] | None:
    """The keys written since the table's last passing verify, as seen by the current snapshot; None
    when they are not known (no capture, no watermark, a key lost by the capture, a TRUNCATE, or so
    many that a full comparison is cheaper)."""
    if (
        conn.execute("SELECT pg_catalog.to_regclass(%s)", (f"{PRIVATE_SCHEMA}.verify_watermarks",)).fetchone()[0]
        is None
    ):
        return None
    if not capturing(conn, plan, table):
        return None
    watermark = conn.execute(
        sql.SQL("SELECT snapshot FROM {} WHERE plan = %s AND new_table = %s").format(WATERMARKS),
        (plan.name, table.name),
    ).fetchone()
    if watermark is None:
        return None
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT c.key FROM {} c WHERE c.plan = %s AND c.new_table = %s"
            " AND NOT pg_catalog.pg_visible_in_snapshot(c.xid, %s::pg_snapshot) LIMIT %s"
        ).format(CHANGES),
        (plan.name, table.name, watermark[0], MAX_KEYS + 1),
    ).fetchall()
    if len(rows) > MAX_KEYS or any(key is None for (key,) in rows):
        return None
    return [tuple(key) for (key,) in rows]


def mark_verified(conn: psycopg.Connection, plan: Plan, table: NewTable) -> None:
    """In the verify's own transaction: its snapshot becomes the watermark, and the changes it saw are
    dropped. Only when the capture was on all along (otherwise a write could be missing from the log)."""
    if not capturing(conn, plan, table):
        return
    snapshot = conn.execute("SELECT pg_catalog.pg_current_snapshot()").fetchone()[0]
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (plan, new_table, snapshot) VALUES (%s, %s, %s::pg_snapshot)"
            " ON CONFLICT (plan, new_table) DO UPDATE SET snapshot = EXCLUDED.snapshot, at = pg_catalog.now()"
        ).format(WATERMARKS),
        (plan.name, table.name, snapshot),
    )
    conn.execute(
        sql.SQL(
            "DELETE FROM {} c WHERE c.plan = %s AND c.new_table = %s"
            " AND pg_catalog.pg_visible_in_snapshot(c.xid, %s::pg_snapshot)"
        ).format(CHANGES),
        (plan.name, table.name, snapshot),
    )


def remove_statements(conn: psycopg.Connection, plan: Plan) -> list[sql.Composable]:
    """Statements that switch the capture off (for cleanup and rollback to run in their own transaction):
    dropping each function drops its triggers with it, wherever the tables have moved; then its role."""
    return [
        *(
            sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(sql.Identifier(PRIVATE_SCHEMA, function))
            for table in plan.tables
            for _, _, function in relations(plan, table)
        ),
        *owners.drop_statements(conn, owners.role_name(conn, plan, owners.CAPTURE)),
    ]
