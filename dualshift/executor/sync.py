"""`backfill --sync triggers`: triggers on the old tables that mirror every write into the new tables
in the same transaction — the database-level safety net for call sites not yet rewritten to the
dual-write wrapper. Removed by `rollback` and `cleanup`.

The rule is the backfill's (see backfill.py): after a write to an old table, the trigger takes the
advisory lock of each new-table key the write touched (the old and the new key of an update), then
re-reads, in precedence order, which source holds the key and copies that source's row (under
`precedence = "coalesce"`, the merged row of every source holding it: merge.py), or deletes the
new row when no source holds it. So deleting or re-keying the winning source's row hands the key to
the next source that holds it, and a write that waited on another never acts on what it read before.

What runs, and as whom: the functions live in `dualshift_private`, pin their own settings
(`search_path = pg_catalog, pg_temp`, the plan's time zone, number and date formats), and are
SECURITY DEFINER, owned by a NOLOGIN role made for this migration that holds exactly SELECT, INSERT,
UPDATE, DELETE on the new tables, SELECT on their sources and INSERT on dualshift.failed_writes (and a
policy letting it through where row-level security is on). An application role that may insert into
one old table can therefore still do so, and no role gains anything: the role cannot log in and the
functions cannot be called directly. A mirror that fails (a check, NOT NULL or cast of the new table
rejects the row, a lock wait times out) never fails the application's write: it is rolled back to
its own savepoint and recorded in dualshift.failed_writes, and the next backfill pass repairs it.

Each old table's trigger is created in its own short transaction that locks only that table, with
lock-timeout retries, so installing never deadlocks with application writes.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from dualshift.executor import faults, merge, owners
from dualshift.executor.backfill import (
    FAILED_WRITES,
    MAX_LOCKED_KEYS,
    SYNC_TRIGGER,
    conflict_action,
    mapped_lock_key,
)
from dualshift.executor.catalog import SourceMapping
from dualshift.executor.connection import Sink, Timeouts, with_lock_retries
from dualshift.executor.names import API_SCHEMA, PRIVATE_SCHEMA, SYNC_GROUP, ensure_sync_group, fit
from dualshift.plan import NewTable, Plan, Source

TRIGGER = SYNC_TRIGGER
POLICY = "dualshift_sync"
# Key locks a transaction's triggers have taken (a transaction-local setting): past MAX_LOCKED_KEYS a
# mirror is recorded as failed instead, so one bulk write cannot fill the server's shared lock table.
LOCK_COUNTER = "dualshift.locked_keys"


def role_name(conn: psycopg.Connection, plan: Plan) -> str:
    """The functions' owner (owners.py): one role per database and migration."""
    return owners.role_name(conn, plan, owners.SYNC)


def trigger_function(mapping: SourceMapping) -> sql.Identifier:
    return sql.Identifier(PRIVATE_SCHEMA, fit("sync", mapping.table.name, mapping.source.table))


def resync_function(table: NewTable) -> sql.Identifier:
    return sql.Identifier(PRIVATE_SCHEMA, fit("resync", table.name))


def _function(
    conn: psycopg.Connection, plan: Plan, name: sql.Identifier, arguments: sql.Composable, returns: str, body: str
) -> sql.Composable:
    return sql.SQL(
        "CREATE OR REPLACE FUNCTION {name}({arguments}) RETURNS {returns} LANGUAGE plpgsql SECURITY DEFINER {settings}"
        " AS {body}"
    ).format(
        name=name,
        arguments=arguments,
        returns=sql.SQL(returns),
        settings=owners.settings_clause(plan),
        body=sql.Literal(body),
    )


def resync_statement(conn: psycopg.Connection, plan: Plan, mappings: list[SourceMapping]) -> sql.Composable:
    """`resync_<table>(key…)`: give one key the row of the first source holding it, or no row."""
    table = mappings[0].table
    if table.merges_sources:
        return _merged_resync_statement(conn, plan, mappings)
    new = sql.Identifier(plan.new_schema, table.name)
    values = [sql.SQL(f"${i + 1}") for i in range(len(table.key))]
    steps = []
    for mapping in mappings:
        steps.append(
            sql.SQL(
                "  INSERT INTO {new} ({columns}) SELECT {select} FROM {old} o WHERE {match}"
                " ORDER BY {old_keys}, o.ctid LIMIT 1\n"
                "    ON CONFLICT ({key}) {action};\n"
                "  IF FOUND THEN RETURN; END IF;\n"
            ).format(
                new=new,
                columns=sql.SQL(", ").join(map(sql.Identifier, mapping.new_columns)),
                select=mapping.select_list(),
                old=sql.Identifier(mapping.source.schema, mapping.source.table),
                match=mapping.key_match(values),
                old_keys=mapping.key_columns(),
                key=sql.SQL(", ").join(map(sql.Identifier, table.key)),
                action=conflict_action(mapping),
            )
        )
    delete = sql.SQL("  DELETE FROM {} n WHERE {};\n").format(
        new,
        sql.SQL(" AND ").join(
            sql.SQL("n.{} = {}").format(sql.Identifier(k), v) for k, v in zip(table.key, values, strict=True)
        ),
    )
    body = sql.SQL("BEGIN\n{}{}END").format(sql.SQL("").join(steps), delete).as_string(conn)
    arguments = sql.SQL(", ").join(sql.SQL(table.column(k).type) for k in table.key)
    return _function(conn, plan, resync_function(table), arguments, "void", body)


def _delete_key(plan: Plan, table: NewTable, values: list[sql.Composable]) -> sql.Composable:
    return sql.SQL("DELETE FROM {} n WHERE {};").format(
        sql.Identifier(plan.new_schema, table.name),
        sql.SQL(" AND ").join(
            sql.SQL("n.{} = {}").format(sql.Identifier(k), v) for k, v in zip(table.key, values, strict=True)
        ),
    )


def _merged_resync_statement(conn: psycopg.Connection, plan: Plan, mappings: list[SourceMapping]) -> sql.Composable:
    """`resync_<table>(key…)` under `precedence = "coalesce"`: the key's merged row of every source
    holding it (merge.py, as the backfill writes it), or no row."""
    table = mappings[0].table
    values = [sql.SQL(f"${i + 1}") for i in range(len(table.key))]
    held = {m.precedence: sql.Identifier(f"_ds_held_{m.precedence}") for m in mappings}
    checks = sql.SQL("").join(
        sql.SQL("  {} := EXISTS (SELECT 1 FROM {} o WHERE {});\n").format(
            held[m.precedence], sql.Identifier(m.source.schema, m.source.table), m.key_match(values)
        )
        for m in mappings
    )
    any_held = sql.SQL(" OR ").join(held.values())
    upsert = merge.MergedUpsert(plan, table, None, tuple(mappings)).statement(None, values, any_held)
    body = (
        sql.SQL(
            "DECLARE\n{declare}BEGIN\n{checks}  IF NOT ({any_held}) THEN\n    {delete}\n    RETURN;\n  END IF;\n"
            "  {upsert};\nEND"
        )
        .format(
            declare=sql.SQL("").join(sql.SQL("  {} boolean;\n").format(h) for h in held.values()),
            checks=checks,
            any_held=any_held,
            delete=_delete_key(plan, table, values),
            upsert=upsert,
        )
        .as_string(conn)
    )
    arguments = sql.SQL(", ").join(sql.SQL(table.column(k).type) for k in table.key)
    return _function(conn, plan, resync_function(table), arguments, "void", body)


def trigger_function_statement(conn: psycopg.Connection, plan: Plan, mapping: SourceMapping) -> sql.Composable:
    table, source = mapping.table, mapping.source
    fields = [sql.Identifier(f"__k{i}") for i in range(len(table.key))]
    key_record = sql.SQL("{lock} AS __lock, {keys}").format(
        lock=mapped_lock_key(mapping),
        keys=sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(e, f) for e, f in zip(mapping.key_exprs(), fields, strict=True)
        ),
    )

    def args(record: str) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(record), f) for f in fields)

    def resync(record: str) -> sql.Composable:
        return sql.SQL("PERFORM {}({});").format(resync_function(table), args(record))

    body = sql.SQL(
        "DECLARE\n  old_key record;\n  new_key record;\n  locked integer;\n"
        "BEGIN\n"
        "  BEGIN\n"
        "    locked := COALESCE(NULLIF(pg_catalog.current_setting({counter}, true), ''), '0')::integer;\n"
        "    IF locked >= {max_locked} THEN\n"
        "      RAISE EXCEPTION 'this transaction already mirrored {max_locked} keys (each holds a lock until it commits):"
        " the rest are left to the next backfill pass';\n"
        "    END IF;\n"
        "    PERFORM pg_catalog.set_config({counter}, (locked + 1 + (TG_OP = 'UPDATE')::integer)::text, true);\n"
        "    IF TG_OP <> 'INSERT' THEN\n"
        "      SELECT {key_record} INTO old_key FROM (SELECT OLD.*) o;\n"
        "    END IF;\n"
        "    IF TG_OP <> 'DELETE' THEN\n"
        "      SELECT {key_record} INTO new_key FROM (SELECT NEW.*) o;\n"
        "      IF {new_null} THEN\n"
        "        RAISE EXCEPTION 'the row''s key ({key_names}) has a NULL part';\n"
        "      END IF;\n"
        "    END IF;\n"
        "    IF TG_OP = 'INSERT' THEN\n"
        "      PERFORM pg_catalog.pg_advisory_xact_lock(new_key.__lock);\n"
        "      {resync_new}\n"
        "    ELSIF TG_OP = 'DELETE' THEN\n"
        "      PERFORM pg_catalog.pg_advisory_xact_lock(old_key.__lock);\n"
        "      {resync_old}\n"
        "    ELSE\n"
        "      PERFORM pg_catalog.pg_advisory_xact_lock(LEAST(old_key.__lock, new_key.__lock));\n"
        "      PERFORM pg_catalog.pg_advisory_xact_lock(GREATEST(old_key.__lock, new_key.__lock));\n"
        "      IF ROW({old_args}) IS DISTINCT FROM ROW({new_args}) THEN\n"
        "        {resync_old}\n"
        "      END IF;\n"
        "      {resync_new}\n"
        "    END IF;\n"
        "  EXCEPTION WHEN others THEN\n"
        "    INSERT INTO {failed} (old_table, new_table, operation, payload, error, call_site)\n"
        "    VALUES ({old_table}, {new_table}, pg_catalog.lower(TG_OP),\n"
        "      CASE WHEN TG_OP = 'DELETE' THEN pg_catalog.to_jsonb(OLD) ELSE pg_catalog.to_jsonb(NEW) END,\n"
        "      SQLERRM, 'trigger');\n"
        "  END;\n"
        "  RETURN NULL;\n"
        "END"
    ).format(
        key_record=key_record,
        counter=sql.Literal(LOCK_COUNTER),
        max_locked=sql.SQL(str(MAX_LOCKED_KEYS)),
        new_null=sql.SQL(" OR ").join(sql.SQL("new_key.{} IS NULL").format(f) for f in fields),
        key_names=sql.SQL(", ".join(source.key).replace("'", "''").replace("%", "%%")),
        resync_new=resync("new_key"),
        resync_old=resync("old_key"),
        old_args=args("old_key"),
        new_args=args("new_key"),
        failed=FAILED_WRITES,
        old_table=sql.Literal(source.table),
        new_table=sql.Literal(table.name),
    )
    return _function(conn, plan, trigger_function(mapping), sql.SQL(""), "trigger", body.as_string(conn))


# ------------------------------------------------------------------------------------------------


def _policy(conn: psycopg.Connection, role: str, schema: str, table: str) -> list[sql.Composable]:
    """Where row-level security is on, a policy that lets the functions' owner (and no one else) through."""
    return owners.policy_statements(conn, POLICY, role, schema, table)


def _grant_statements(conn: psycopg.Connection, plan: Plan, role: str, mappings: list[SourceMapping]) -> list:
    """The GRANTs, checked (owners.granted): the triggers read the old tables, write the new one."""
    table = mappings[0].table
    new = sql.Identifier(plan.new_schema, table.name)
    grants = [
        *owners.schema_usage({plan.new_schema, API_SCHEMA, PRIVATE_SCHEMA, *(m.source.schema for m in mappings)}),
        *owners.relation_grants(conn, ("SELECT", "INSERT", "UPDATE", "DELETE"), [new]),
        *owners.relation_grants(conn, ("SELECT",), [sql.Identifier(m.source.schema, m.source.table) for m in mappings]),
        *owners.relation_grants(conn, ("INSERT",), [FAILED_WRITES]),
        *owners.sequence_grants(conn, [new, FAILED_WRITES]),
    ]
    sources = ", ".join(f"{m.source.schema}.{m.source.table}" for m in mappings)
    return owners.granted(
        role, grants, f"the sync triggers on {sources} (mirroring into {plan.new_schema}.{table.name})"
    )


def grant_statements(
    conn: psycopg.Connection, plan: Plan, role: str, mappings: dict[tuple[str, str], SourceMapping]
) -> list[sql.Composable]:
    """The role and what every new table's functions need, each privilege checked (owners.granted)."""
    statements = [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(PRIVATE_SCHEMA)),
        sql.SQL(ensure_sync_group()),
        *owners.role_statements(conn, role, (SYNC_GROUP,)),
    ]
    for table in plan.tables:
        statements += _grant_statements(conn, plan, role, [mappings[(table.name, s.table)] for s in table.sources])
    return statements


def prepare_statements(
    conn: psycopg.Connection, plan: Plan, role: str, mappings: list[SourceMapping]
) -> list[sql.Composable]:
    """One new table's part: the role, its grants, the functions (owned by it), its policy."""
    table = mappings[0].table
    key_types = sql.SQL(", ").join(sql.SQL(table.column(k).type) for k in table.key)
    functions = [(resync_statement(conn, plan, mappings), resync_function(table), key_types)]
    functions += [(trigger_function_statement(conn, plan, m), trigger_function(m), sql.SQL("")) for m in mappings]
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(PRIVATE_SCHEMA)),
        sql.SQL(ensure_sync_group()),
        *owners.role_statements(conn, role, (SYNC_GROUP,)),
        *_grant_statements(conn, plan, role, mappings),
        *owners.owned_functions(role, functions),
        *_policy(conn, role, plan.new_schema, table.name),
    ]


def trigger_statements(conn: psycopg.Connection, role: str, mapping: SourceMapping) -> list[sql.Composable]:
    source = mapping.source
    old = sql.Identifier(source.schema, source.table)
    return [
        *_policy(conn, role, source.schema, source.table),
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), old),
        sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            sql.Identifier(TRIGGER), old, trigger_function(mapping)
        ),
    ]


def install(
    conn: psycopg.Connection,
    plan: Plan,
    mappings: dict[tuple[str, str], SourceMapping],
    sink: Sink,
    timeouts: Timeouts = Timeouts(),
) -> list[str]:
    """First one transaction for the role and every table's grants, checked (a grant the executor may not
    give refuses the phase before anything else is made); then per new table one for the functions
    (locking only the new table), and one per old table for its trigger (locking only that table). Safe
    to run again."""
    role = role_name(conn, plan)
    _in_one_transaction(
        conn,
        sink,
        timeouts,
        lambda: grant_statements(conn, plan, role, mappings),
        "granting the sync triggers' role its privileges",
        [f"{plan.new_schema}.{t.name}" for t in plan.tables],
    )
    installed = []
    for table in plan.tables:
        table_mappings = [mappings[(table.name, s.table)] for s in table.sources]
        _in_one_transaction(
            conn,
            sink,
            timeouts,
            lambda table_mappings=table_mappings: prepare_statements(conn, plan, role, table_mappings),
            f"preparing the sync triggers of {table.name}",
            [f"{plan.new_schema}.{table.name}"],
        )
        faults.point("backfill.sync_prepared")
        for mapping in table_mappings:
            name = f"{mapping.source.schema}.{mapping.source.table}"
            _in_one_transaction(
                conn,
                sink,
                timeouts,
                lambda mapping=mapping: trigger_statements(conn, role, mapping),
                f"installing the sync trigger on {name}",
                [name],
            )
            faults.point("backfill.sync_installed")
            installed.append(name)
    return installed


def _in_one_transaction(
    conn: psycopg.Connection,
    sink: Sink,
    timeouts: Timeouts,
    statements: Callable[[], list[sql.Composable]],
    what: str,
    relations: list[str],
) -> None:
    def action() -> None:
        for statement in statements():
            sink.run(statement)

    if sink.dry_run:
        action()
        return
    with_lock_retries(conn, action, what, relations, timeouts)


def remove(
    conn: psycopg.Connection,
    plan: Plan,
    sink: Sink,
    schema_of: Callable[[Source], str] | None = None,
    timeouts: Timeouts = Timeouts(),
) -> None:
    """Drop the sync triggers, their policies, functions and role (wherever the old tables are now).
    Inside the caller's transaction if it has one; otherwise one short lock-retrying transaction per
    table, as for installing."""
    role = role_name(conn, plan)
    inline = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE or sink.dry_run
    for table in plan.tables:
        relations = [(plan.new_schema, table.name, False)]
        relations += [(schema_of(s) if schema_of else s.schema, s.table, True) for s in table.sources]
        for schema, name, is_source in relations:
            statements = _removal_statements(conn, schema, name, is_source)
            if not statements:
                continue
            if inline:
                for statement in statements:
                    sink.run(statement)
            else:
                _in_one_transaction(
                    conn,
                    sink,
                    timeouts,
                    lambda s=statements: s,
                    f"removing the sync trigger of {schema}.{name}",
                    [f"{schema}.{name}"],
                )
        for source in table.sources:
            function = trigger_function(SourceMapping(table, source, 0, ()))
            sink.run(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function))
        key_types = sql.SQL(", ").join(sql.SQL(table.column(k).type) for k in table.key)
        sink.run(sql.SQL("DROP FUNCTION IF EXISTS {}({})").format(resync_function(table), key_types))
    for statement in owners.drop_statements(conn, role):
        sink.run(statement)


def _removal_statements(conn: psycopg.Connection, schema: str, name: str, is_source: bool) -> list[sql.Composable]:
    target = sql.Identifier(schema, name)
    statements: list[sql.Composable] = []
    if is_source and _has_trigger(conn, schema, name):
        statements.append(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), target))
    if owners.has_policy(conn, POLICY, schema, name):
        statements.append(sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY), target))
    return statements


def covered_tables(conn: psycopg.Connection, plan: Plan) -> set[str]:
    """The old tables whose writes the sync triggers mirror now (the readiness gate's safety net)."""
    return {s.table for t in plan.tables for s in t.sources if _has_trigger(conn, s.schema, s.table)}


def _has_trigger(conn: psycopg.Connection, schema: str, table: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM pg_catalog.pg_trigger WHERE tgname = %s AND tgrelid = pg_catalog.to_regclass(%s)",
            (TRIGGER, sql.Identifier(schema, table).as_string(conn)),
        ).fetchone()
        is not None
    )
