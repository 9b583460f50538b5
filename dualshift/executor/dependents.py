"""What the rest of the schema hangs on the old tables, and how cleanup carries it over to the new ones.

Moving an old table to the archive schema takes everything attached to it along (PostgreSQL follows
OIDs, not names): views over it would read the frozen archive, foreign keys would point into it, its
triggers would fire only there, and realtime would publish the archive. So `cleanup` works in three
steps, all in its one transaction:

1. `capture(conn, plan)`, BEFORE the move, while the old tables are in place (and the new tables in
   `plan.new_schema`): reads views (pg_depend/pg_rewrite), foreign keys into old tables
   (pg_constraint), triggers on old tables (pg_trigger), publication memberships
   (pg_publication_tables) and policies of other tables whose expressions read an old table. Refuses (`DependentsRefused`, naming each constraint) a foreign key
   that cannot be re-pointed, before anything has changed.
2. the move, and the compatibility views (`views.compat_view_statements`).
3. `after_move_statements(conn, plan, captured)`: dependent views re-created over the compatibility
   views (their options and grants kept), foreign keys re-pointed to the new table (NOT VALID, then
   VALIDATE; ON DELETE/UPDATE actions kept), updated_at-style triggers re-created on the new table,
   the new table added to every publication an old table was in (and the archived table dropped
   from it), policies of other tables that read an old table written again so they read the old name.
   `Captured.needs_decision` lists what was left for a person (and why).
   Each object gets the plan's `[dependents]` decision (inventory.py lists what each kind can take):
   `archive` leaves it on the archived table, `drop` drops it after the move (`Captured.dropped` keeps
   the statements that create it again, exactly as it was, for the rollback), `repoint` rewrites a view
   over the new table, `recreate` of a materialized view creates it again over the compatibility view.

`rollback_statements(conn, plan, captured)` undoes step 3 for a rollback after cleanup; call it
while the compatibility views still exist. `Captured.to_json`/`from_json` let cleanup keep the
capture in its state for that rollback. Nothing here runs SQL that changes anything: every function
returns statements for the caller to run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from dualshift.executor import names
from dualshift.executor.connection import ExecutorError
from dualshift.executor.views import catalog_columns, qualified_names, revoke_every_grant
from dualshift.plan import Plan

# pg_trigger.tgtype bits
ROW, BEFORE, INSERT, DELETE, UPDATE, TRUNCATE, INSTEAD = 1, 2, 4, 8, 16, 32, 64
FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
ROW_REFERENCE = re.compile(r'\b(?:new|old)\s*\.\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)', re.IGNORECASE)
STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
# A body with one of these does more than set fields of NEW: a person decides where it belongs now.
SIDE_EFFECTS = re.compile(r"\b(insert|update|delete|execute|perform|copy|notify|merge|call)\b", re.IGNORECASE)


class DependentsRefused(ExecutorError):
    """A dependent object cleanup cannot carry over; nothing has changed yet."""


class PublicationsNotOwned(DependentsRefused):
    """Cleanup must alter publications the executor role does not own (preflight reports it too)."""


@dataclass(frozen=True)
class DependentView:
    schema: str
    name: str
    kind: str  # "v" view, "m" materialized view
    definition: str  # pg_get_viewdef under `pg_catalog, pg_temp`: every name qualified
    options: tuple[str, ...]  # reloptions, e.g. "security_invoker=true"
    owner: str
    grants: tuple[tuple[str, str, bool], ...]  # (grantee as SQL, privilege, grantable)
    comment: str | None
    depth: int  # 1: reads an old table directly; n: through n-1 other views
    direct: bool
    indexes: tuple[str, ...] = ()  # a materialized view's CREATE INDEX statements
    populated: bool = True
    decision: str = ""  # the plan's `[dependents]` decision ("": cleanup's default)
    repointed: str = ""  # decision "repoint": the definition over the new tables

    @property
    def key(self) -> str:
        return f"{'materialized view' if self.kind == 'm' else 'view'} {self.schema}.{self.name}"

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass(frozen=True)
class ForeignKey:
    name: str
    schema: str  # the referencing table
    table: str
    columns: tuple[str, ...]
    old_schema: str  # the old table it references
    old_table: str
    old_columns: tuple[str, ...]
    new_table: str
    new_columns: tuple[str, ...]
    tail: str  # MATCH / ON UPDATE / ON DELETE / DEFERRABLE, as the constraint had them
    validated: bool
    definition: str  # pg_get_constraintdef as it was, for the rollback
    decision: str = ""


@dataclass(frozen=True)
class OldTrigger:
    name: str
    old_schema: str
    old_table: str
    new_table: str
    definition: str  # pg_get_triggerdef on the old table
    new_name: str
    enabled: str  # pg_trigger.tgenabled
    recreate: bool
    reason: str  # why it is (or is not) re-created on the new table
    decision: str = ""


@dataclass(frozen=True)
class DependentPolicy:
    """A row-level security policy of another table whose expressions read an old table."""

    name: str
    schema: str
    table: str
    using: str | None  # pg_get_expr under `pg_catalog, pg_temp`
    check: str | None
    decision: str = ""


@dataclass(frozen=True)
class Membership:
    publication: str
    old_schema: str
    old_table: str
    new_table: str
    explicit: bool  # listed by name (pg_publication_rel), not through FOR ALL TABLES / TABLES IN SCHEMA
    whole: bool  # no column list and no row filter
    add_new: bool  # the new table must be added (it would not be a member otherwise)
    decision: str = ""


@dataclass(frozen=True)
class Dropped:
    """An object the plan decides to drop: the statements that drop it after the move, and those that
    create it again, exactly as it was, once a rollback has put the old tables back."""

    key: str
    drop: tuple[str, ...]
    restore: tuple[str, ...]


@dataclass
class Captured:
    views: list[DependentView] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    triggers: list[OldTrigger] = field(default_factory=list)
    publications: list[Membership] = field(default_factory=list)
    policies: list[DependentPolicy] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)  # in the order they are dropped

    @property
    def needs_decision(self) -> list[str]:
        """What cleanup leaves on the archive for a person to decide, each with the reason."""
        found = [
            f"materialized view {v.schema}.{v.name} reads the archived tables: re-create it over the old names by hand"
            for v in self.views
            if v.kind == "m" and v.decision in ("", "archive")
        ]
        found += [
            f"trigger {t.name} on {t.old_schema}.{t.old_table} stays on the archived table: {t.reason}"
            for t in self.triggers
            if not t.recreate and t.decision != "carry"  # "carry": a twin's copy is already carried
        ]
        found += [
            f"publication {m.publication} publishes {m.old_schema}.{m.old_table} with a column list or row filter:"
            f" add {m.new_table} to it by hand"
            for m in self.publications
            if m.add_new and not m.whole and m.decision in ("", "archive")
        ]
        return found

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Captured:
        def tuples(row: dict[str, Any]) -> dict[str, Any]:
            return {
                k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                for k, v in row.items()
            }

        return cls(
            views=[DependentView(**tuples(v)) for v in data.get("views", [])],
            foreign_keys=[ForeignKey(**tuples(f)) for f in data.get("foreign_keys", [])],
            triggers=[OldTrigger(**t) for t in data.get("triggers", [])],
            publications=[Membership(**m) for m in data.get("publications", [])],
            policies=[DependentPolicy(**p) for p in data.get("policies", [])],
            dropped=[Dropped(**tuples(d)) for d in data.get("dropped", [])],
        )


def _regclass(conn: psycopg.Connection, schema: str, name: str) -> int | None:
    row = conn.execute(
        "SELECT pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))::oid::int", (schema, name)
    ).fetchone()
    return row[0]


def _old_tables(conn: psycopg.Connection, plan: Plan) -> dict[int, tuple[str, str, str]]:
    """oid → (schema, old table, new table) of every source that exists."""
    found = {}
    for table in plan.tables:
        for source in table.sources:
            oid = _regclass(conn, source.schema, source.table)
            if oid is not None:
                found[oid] = (source.schema, source.table, table.name)
    return found


# ─── views ─────────────────────────────────────────────────────────────────────────────────────────

DEPENDENT_VIEWS = """
WITH RECURSIVE reading(oid, depth) AS (
  SELECT r.ev_class, 1
  FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
  WHERE d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
    AND d.refobjid = ANY(%(relations)s::oid[]) AND r.ev_class <> d.refobjid
  UNION ALL
  SELECT r.ev_class, reading.depth + 1
  FROM reading JOIN pg_catalog.pg_depend d ON d.refobjid = reading.oid
    AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
  WHERE r.ev_class <> reading.oid AND reading.depth < 100
)
SELECT n.nspname, c.relname, c.relkind::text, pg_catalog.pg_get_viewdef(c.oid),
  coalesce(c.reloptions, '{}'), pg_catalog.quote_ident(o.rolname),
  ARRAY(SELECT ARRAY[CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(g.rolname) END,
                     a.privilege_type, a.is_grantable::text]
        FROM pg_catalog.aclexplode(c.relacl) a LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
        WHERE a.grantee <> c.relowner ORDER BY 1),
  pg_catalog.obj_description(c.oid, 'pg_class'), max(reading.depth), min(reading.depth) = 1,
  ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid
        ORDER BY i.indexrelid), c.relispopulated
FROM reading JOIN pg_catalog.pg_class c ON c.oid = reading.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
WHERE NOT (c.oid = ANY(%(relations)s::oid[]))
GROUP BY c.oid, n.nspname, c.relname, c.relkind, c.reloptions, o.rolname, c.relacl, c.relispopulated
ORDER BY max(reading.depth), n.nspname, c.relname
"""


def views_over(conn: psycopg.Connection, relations: list[int]) -> list[DependentView]:
    """Every view that reads these relations, directly or through other views, shallowest first."""
    if not relations:
        return []
    with qualified_names(conn):
        rows = conn.execute(DEPENDENT_VIEWS, {"relations": relations}).fetchall()
    return [
        DependentView(
            schema=schema,
            name=name,
            kind=kind,
            definition=definition.strip().rstrip(";"),
            options=tuple(options),
            owner=owner,
            grants=tuple((g, p, grantable == "true") for g, p, grantable in grants),
            comment=comment,
            depth=depth,
            direct=direct,
            indexes=tuple(indexes),
            populated=populated,
        )
        for schema, name, kind, definition, options, owner, grants, comment, depth, direct, indexes, populated in rows
    ]


def _with_options(view: DependentView) -> sql.Composable:
    if not view.options:
        return sql.SQL("")
    return sql.SQL(" WITH ({})").format(sql.SQL(", ").join(sql.SQL(o) for o in view.options))


def _create_view(view: DependentView, replace: bool) -> sql.Composable:
    return sql.SQL("CREATE {}VIEW {}{} AS {}").format(
        sql.SQL("OR REPLACE ") if replace else sql.SQL(""),
        view.identifier,
        _with_options(view),
        sql.SQL(view.definition),
    )


def _view_extras(view: DependentView) -> list[sql.Composable]:
    """Owner, grants and comment of a view created anew."""
    kind = sql.SQL("MATERIALIZED VIEW" if view.kind == "m" else "VIEW")
    statements: list[sql.Composable] = [
        sql.SQL("ALTER {} {} OWNER TO {}").format(kind, view.identifier, sql.SQL(view.owner)),
        *(
            sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege),
                view.identifier,
                sql.SQL(grantee),
                sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
            )
            for grantee, privilege, grantable in view.grants
        ),
    ]
    if view.comment is not None:
        statements.append(sql.SQL("COMMENT ON {} {} IS {}").format(kind, view.identifier, sql.Literal(view.comment)))
    return statements + [sql.SQL(index) for index in view.indexes]


def _create_materialized(view: DependentView) -> sql.Composable:
    return sql.SQL("CREATE MATERIALIZED VIEW {}{} AS {}{}").format(
        view.identifier,
        _with_options(view),
        sql.SQL(view.definition),
        sql.SQL("") if view.populated else sql.SQL(" WITH NO DATA"),
    )


def _created_anew(conn: psycopg.Connection, view: DependentView) -> list[sql.Composable]:
    """The view (or materialized view) created again as it was: definition, owner, exactly its grants, comment,
    indexes."""
    create = _create_materialized(view) if view.kind == "m" else _create_view(view, replace=False)
    return [create, revoke_every_grant(conn, view.schema, view.name), *_view_extras(view)]


# ─── foreign keys ──────────────────────────────────────────────────────────────────────────────────

FOREIGN_KEYS = """
SELECT c.conname, n.nspname, t.relname,
  ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY k(num, i)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.i),
  c.confrelid::int,
  ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY k(num, i)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.i),
  c.confmatchtype::text, c.confupdtype::text, c.confdeltype::text, c.condeferrable, c.condeferred,
  c.convalidated, pg_catalog.pg_get_constraintdef(c.oid), c.confdelsetcols IS NOT NULL
FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'f' AND c.confrelid = ANY(%(old)s::oid[]) AND NOT (c.conrelid = ANY(%(old)s::oid[]))
ORDER BY n.nspname, t.relname, c.conname
"""

UNIQUE_KEYS = """
SELECT ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(i.indkey) k(num)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num)
FROM pg_catalog.pg_index i
WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
"""


def _fk_tail(match: str, on_update: str, on_delete: str, deferrable: bool, deferred: bool) -> str:
    tail = " MATCH FULL" if match == "f" else ""
    if on_update != "a":
        tail += f" ON UPDATE {FK_ACTIONS[on_update]}"
    if on_delete != "a":
        tail += f" ON DELETE {FK_ACTIONS[on_delete]}"
    if deferrable:
        tail += " DEFERRABLE INITIALLY DEFERRED" if deferred else " DEFERRABLE"
    return tail


def foreign_keys_into(
    conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]]
) -> list[tuple[ForeignKey, str | None]]:
    """Each foreign key of another table into an old table, with why it cannot be re-pointed to the new
    table (None: it can). Before `create` the new table's keys are the plan's."""
    with qualified_names(conn):
        rows = conn.execute(FOREIGN_KEYS, {"old": list(old)}).fetchall()
    found = []
    for (
        name,
        schema,
        table,
        columns,
        target,
        old_columns,
        match,
        upd,
        dele,
        deferrable,
        deferred,
        valid,
        text,
        cols,
    ) in rows:
        old_schema, old_table, new_table = old[target]
        fed = plan.table(new_table).column_mapping(old_table)
        mapped = tuple(fed.get(c) for c in old_columns)
        fk = ForeignKey(
            name=name,
            schema=schema,
            table=table,
            columns=tuple(columns),
            old_schema=old_schema,
            old_table=old_table,
            old_columns=tuple(old_columns),
            new_table=new_table,
            new_columns=tuple(c or "" for c in mapped),
            tail=_fk_tail(match, upd, dele, deferrable, deferred),
            validated=valid,
            definition=text,
        )
        found.append((fk, _repoint_refusal(conn, plan, fk, mapped, cols)))
    return found


def _repoint_refusal(
    conn: psycopg.Connection, plan: Plan, fk: ForeignKey, mapped: tuple[str | None, ...], column_list: bool
) -> str | None:
    if None in mapped:
        fed = plan.table(fk.new_table).column_mapping(fk.old_table)
        return f"the plan drops {', '.join(c for c in fk.old_columns if c not in fed)}"
    new_oid = _regclass(conn, plan.new_schema, fk.new_table)
    if new_oid is None:  # before `create`: the plan's key
        planned = plan.table(fk.new_table)
        keys = [set(planned.key)] + [{c.name} for c in planned.columns if c.unique]
    else:
        keys = [set(k) for (k,) in conn.execute(UNIQUE_KEYS, (new_oid,)).fetchall()]
    if set(fk.new_columns) not in keys:
        return f"{fk.new_table} ({', '.join(fk.new_columns)}) is not a unique key of the new table"
    if new_oid is not None:
        clash = _type_clashes(conn, (fk.schema, fk.table, fk.columns), (plan.new_schema, fk.new_table, fk.new_columns))
        if clash:
            return clash
    if column_list:
        return "ON DELETE SET NULL/DEFAULT with a column list; re-point it by hand"
    return None


def _foreign_keys(
    conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]], decided: dict[str, str]
) -> tuple[list[ForeignKey], list[Dropped]]:
    """The foreign keys to re-point (refused by name when one cannot be) and those to drop; the ones kept
    on the archive are left alone."""
    repointed, dropped, refused = [], [], []
    for fk, refusal in foreign_keys_into(conn, plan, old):
        key = f"foreign key {fk.schema}.{fk.table}.{fk.name}"
        decision = decided.get(key, "repoint")
        if decision == "drop":
            dropped.append(
                _dropped_constraint(conn, key, (fk.schema, fk.schema, fk.table), fk.name, fk.definition, fk.validated)
            )
        elif decision == "repoint" and refusal:
            refused.append(
                f"foreign key {fk.name} of {fk.schema}.{fk.table}"
                f" (into {fk.old_schema}.{fk.old_table} ({', '.join(fk.old_columns)})): {refusal}"
            )
        elif decision == "repoint":
            repointed.append(replace(fk, decision=decision))
    if refused:
        raise DependentsRefused(
            "cleanup cannot re-point these foreign keys to the new tables (nothing was changed): " + "; ".join(refused)
        )
    return repointed, dropped


def _dropped_constraint(
    conn: psycopg.Connection, key: str, where: tuple[str, str, str], name: str, definition: str, validated: bool
) -> Dropped:
    """A foreign key dropped after the move (its table then in `schema_after`), added again on rollback."""
    schema_after, schema_before, table = where
    before = sql.Identifier(schema_before, table)
    restore = [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
            before, sql.Identifier(name), sql.SQL(definition.removesuffix(" NOT VALID"))
        )
    ]
    if validated:
        restore.append(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(before, sql.Identifier(name)))
    drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
        sql.Identifier(schema_after, table), sql.Identifier(name)
    )
    return Dropped(key, (drop.as_string(conn),), tuple(s.as_string(conn) for s in restore))


FOREIGN_KEYS_FROM = """
SELECT c.conname, c.conrelid::int, pg_catalog.pg_get_constraintdef(c.oid), c.convalidated
FROM pg_catalog.pg_constraint c
WHERE c.contype = 'f' AND c.conrelid = ANY(%(old)s::oid[])
ORDER BY c.conrelid, c.conname
"""


def _foreign_keys_from(
    conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]], decided: dict[str, str]
) -> list[Dropped]:
    """The foreign keys declared on an old table that the plan drops (the others stay with the archive)."""
    with qualified_names(conn):
        rows = conn.execute(FOREIGN_KEYS_FROM, {"old": list(old)}).fetchall()
    dropped = []
    for name, relid, definition, validated in rows:
        schema, table, _ = old[relid]
        key = f"foreign key {schema}.{table}.{name}"
        if decided.get(key) == "drop":
            where = (plan.archive_schema, schema, table)
            dropped.append(_dropped_constraint(conn, key, where, name, definition, validated))
    return dropped


COMPARABLE = """
SELECT %(fk)s::oid = %(pk)s::oid
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_cast
             WHERE castsource = %(fk)s::oid AND casttarget = %(pk)s::oid AND castcontext = 'i')
  OR EXISTS (SELECT 1 FROM pg_catalog.pg_amop o JOIN pg_catalog.pg_am m ON m.oid = o.amopmethod
             WHERE m.amname = 'btree' AND o.amopstrategy = 3 AND o.amoplefttype = %(pk)s::oid AND o.amoprighttype = %(fk)s::oid)
"""


def _type_clashes(conn: psycopg.Connection, referencing: tuple, referenced: tuple) -> str | None:
    """Why PostgreSQL could not compare the referencing columns with the new key (as it decides: the same
    type, an implicit cast, or a cross-type btree equality), or None."""
    (schema, table, columns), (new_schema, new_table, new_columns) = referencing, referenced
    have = {c.name: c for c in catalog_columns(conn, schema, table)}
    want = {c.name: c for c in catalog_columns(conn, new_schema, new_table)}
    for column, new_column in zip(columns, new_columns, strict=True):
        fk, pk = have[column], want[new_column]
        if not conn.execute(COMPARABLE, {"fk": fk.type_oid, "pk": pk.type_oid}).fetchone()[0]:
            return f"{table}.{column} is {fk.type} and {new_table}.{new_column} is {pk.type}: change one of them first"
    return None


def _add_foreign_key(fk: ForeignKey, target: sql.Composable, columns: sql.Composable) -> list[sql.Composable]:
    table = sql.Identifier(fk.schema, fk.table)
    statements = [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}){} NOT VALID").format(
            table,
            sql.Identifier(fk.name),
            sql.SQL(", ").join(map(sql.Identifier, fk.columns)),
            target,
            columns,
            sql.SQL(fk.tail),
        )
    ]
    if fk.validated:
        statements.append(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(table, sql.Identifier(fk.name)))
    return statements


def _drop_foreign_key(fk: ForeignKey) -> sql.Composable:
    return sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
        sql.Identifier(fk.schema, fk.table), sql.Identifier(fk.name)
    )


# ─── triggers ──────────────────────────────────────────────────────────────────────────────────────

TRIGGERS = """
SELECT t.tgname, t.tgrelid::int, pg_catalog.pg_get_triggerdef(t.oid), t.tgtype::int, t.tgenabled::text,
  l.lanname, p.prosrc,
  ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(t.tgattr) k(num)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = k.num)
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE t.tgrelid = ANY(%(old)s::oid[]) AND NOT t.tgisinternal AND NOT (pn.nspname = ANY(%(ours)s))
ORDER BY t.tgrelid, t.tgname
"""


def _row_references(text: str) -> set[str]:
    """Columns a trigger reads or sets through NEW.x / OLD.x (quoted names unquoted, others lowercased)."""
    found = set()
    for name in ROW_REFERENCE.findall(text):
        found.add(name[1:-1].replace('""', '"') if name.startswith('"') else name.lower())
    return found


def _judge_trigger(tgtype: int, language: str, body: str, definition: str, columns: set[str], new_columns: set[str]):
    """(re-create on the new table?, why): only row-level BEFORE INSERT/UPDATE triggers in plpgsql that
    do nothing but set fields of NEW, and only of columns the new table has under the same name."""
    if not tgtype & ROW or not tgtype & BEFORE or tgtype & (DELETE | TRUNCATE | INSTEAD):
        return False, "only row-level BEFORE INSERT/UPDATE triggers are carried over"
    if language != "plpgsql":
        return False, f"its function is in {language}, which dualshift does not read"
    if SIDE_EFFECTS.search(COMMENT.sub(" ", STRING_LITERAL.sub("''", body))):
        return False, "its function writes elsewhere or runs dynamic SQL (a business rule): decide where it belongs"
    missing = (_row_references(body) | _row_references(definition) | columns) - new_columns
    if missing:
        return False, f"it uses column(s) {', '.join(sorted(missing))}, which the new table does not have"
    return True, "sets only fields of the row, all of them columns of the new table"


def _triggers(
    conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]], decided: dict[str, str]
) -> tuple[list[OldTrigger], list[Dropped]]:
    """Each trigger on an old table with the plan's decision (default: carried when it can be, else kept
    on the archive), and the ones it drops. Raises DependentsRefused for a carry it cannot do."""
    with qualified_names(conn):
        rows = conn.execute(TRIGGERS, {"old": list(old), "ours": [names.API_SCHEMA, names.PRIVATE_SCHEMA]}).fetchall()
    found: list[OldTrigger] = []
    dropped: list[Dropped] = []
    refused: list[str] = []
    taken: dict[tuple[str, str], str] = {}  # (new table, trigger name) → the definition re-created under it
    for name, relid, definition, tgtype, enabled, language, body, columns in rows:
        old_schema, old_table, new_table = old[relid]
        key = f"trigger {old_schema}.{old_table}.{name}"
        new_columns = {c.name for c in plan.table(new_table).columns}
        recreate, reason = _judge_trigger(tgtype, language, body, definition, set(columns), new_columns)
        portable = _portable(conn, name, old_schema, old_table, definition)
        if recreate and portable is None:
            recreate, reason = False, "its definition could not be moved to the new table"
        decision = decided.get(key, "carry" if recreate else "archive")
        if decision == "drop":
            dropped.append(_dropped_trigger(conn, plan, key, name, (old_schema, old_table), definition, enabled))
            continue
        if decision == "carry" and not recreate:
            refused.append(f"trigger {name} on {old_schema}.{old_table}: {reason}")
            continue
        trigger = OldTrigger(name, old_schema, old_table, new_table, definition, name, enabled, False, reason, decision)
        if decision == "carry":
            if taken.get((new_table, name)) == portable:  # the same trigger on a twin: once on the new table
                trigger = replace(trigger, reason="the same trigger of a twin is carried")
            else:
                new_name = names.fit(name, old_table) if (new_table, name) in taken else name
                taken[(new_table, new_name)] = portable
                trigger = replace(trigger, new_name=new_name, recreate=True)
        found.append(trigger)
    if refused:
        raise DependentsRefused("cleanup cannot carry these triggers to the new tables: " + "; ".join(refused))
    return found, dropped


def _dropped_trigger(
    conn: psycopg.Connection, plan: Plan, key: str, name: str, table: tuple[str, str], definition: str, enabled: str
) -> Dropped:
    drop = sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), sql.Identifier(plan.archive_schema, table[1]))
    restore = [definition]
    mode = {"D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}.get(enabled)
    if mode:
        restore.append(
            sql.SQL("ALTER TABLE {} {} {}")
            .format(sql.Identifier(*table), sql.SQL(mode), sql.Identifier(name))
            .as_string(conn)
        )
    return Dropped(key, (drop.as_string(conn),), tuple(restore))


def _portable(conn: psycopg.Connection, name: str, schema: str, table: str, definition: str) -> str | None:
    """The definition with the trigger name and the table left as placeholders, or None when they are not
    where pg_get_triggerdef puts them."""
    quoted_name, quoted_table = conn.execute(
        "SELECT pg_catalog.quote_ident(%s), pg_catalog.format('%%I.%%I', %s::text, %s::text)", (name, schema, table)
    ).fetchone()
    head = f"CREATE TRIGGER {quoted_name} "
    on = f" ON {quoted_table} "
    if not definition.startswith(head) or on not in definition:
        return None
    return "CREATE TRIGGER {name} " + definition[len(head) :].replace("{", "{{").replace("}", "}}").replace(
        on, " ON {table} ", 1
    )


def _create_trigger(conn: psycopg.Connection, plan: Plan, trigger: OldTrigger) -> list[sql.Composable]:
    template = _portable(conn, trigger.name, trigger.old_schema, trigger.old_table, trigger.definition)
    new_table = sql.Identifier(plan.target_schema, trigger.new_table)
    statements: list[sql.Composable] = [
        sql.SQL(template).format(name=sql.Identifier(trigger.new_name), table=new_table)
    ]
    mode = {"D": "DISABLE TRIGGER", "R": "ENABLE REPLICA TRIGGER", "A": "ENABLE ALWAYS TRIGGER"}.get(trigger.enabled)
    if mode:
        statements.append(
            sql.SQL("ALTER TABLE {} {} {}").format(new_table, sql.SQL(mode), sql.Identifier(trigger.new_name))
        )
    return statements


# ─── publications ──────────────────────────────────────────────────────────────────────────────────

PUBLICATIONS = """
SELECT p.pubname, pt.schemaname, pt.tablename,
  EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr WHERE pr.prpubid = p.oid
          AND pr.prrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', pt.schemaname, pt.tablename))),
  NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr WHERE pr.prpubid = p.oid
          AND pr.prrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', pt.schemaname, pt.tablename))
          AND (pr.prattrs IS NOT NULL OR pr.prqual IS NOT NULL)),
  p.puballtables OR EXISTS (SELECT 1 FROM pg_catalog.pg_publication_namespace pn
          WHERE pn.pnpubid = p.oid AND pn.pnnspid = pg_catalog.to_regnamespace(%(target)s)::oid)
FROM pg_catalog.pg_publication p JOIN pg_catalog.pg_publication_tables pt ON pt.pubname = p.pubname
WHERE (pt.schemaname, pt.tablename) IN (SELECT * FROM unnest(%(schemas)s::text[], %(tables)s::text[]))
ORDER BY 1, 2, 3
"""


def _publications(
    conn: psycopg.Connection,
    plan: Plan,
    old: dict[int, tuple[str, str, str]],
    decided: dict[str, str],
    check_owners: bool = True,
) -> tuple[list[Membership], list[Dropped]]:
    """Each publication membership of an old table with the plan's decision (default: a whole membership
    is carried to the new table, a filtered one kept on the archive), and the ones it drops; refused
    (`check_owners`) when a publication to alter is not the executor role's."""
    located = {(schema, table): new for schema, table, new in old.values()}
    rows = conn.execute(
        PUBLICATIONS,
        {
            "target": plan.target_schema,
            "schemas": [s for s, _ in located],
            "tables": [t for _, t in located],
        },
    ).fetchall()
    found: list[Membership] = []
    dropped: list[Dropped] = []
    refused: list[str] = []
    added: set[tuple[str, str]] = set()
    altered: set[str] = set()  # the publications cleanup must ALTER: only their owner may
    for publication, schema, table, explicit, whole, covers_target in rows:
        key = f"publication {publication} {schema}.{table}"
        decision = decided.get(key, "carry" if whole else "archive")
        new_table = located[(schema, table)]
        if decision == "drop" and explicit:
            dropped.append(_dropped_membership(conn, plan, key, publication, (schema, table)))
            altered.add(publication)
            continue
        if decision not in ("carry", "archive") or (decision == "carry" and not whole):
            refused.append(f"{key}: {_membership_limit(explicit, whole)}")
            continue
        already = _explicit_member(conn, publication, plan.new_schema, new_table)
        add_new = not covers_target and not already and (publication, new_table) not in added
        if add_new and whole and decision == "carry":
            added.add((publication, new_table))
        found.append(Membership(publication, schema, table, new_table, explicit, whole, add_new, decision))
        if decision == "carry" and whole and (add_new or explicit):
            altered.add(publication)
    if refused:
        raise DependentsRefused("cleanup cannot do what the plan says with: " + "; ".join(refused))
    if check_owners:
        _refuse_publications_not_owned(conn, sorted(altered))
    return found, dropped


NOT_OWNED_PUBLICATIONS = """
SELECT pg_catalog.quote_ident(p.pubname), pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(p.pubowner)),
  pg_catalog.quote_ident(current_user)
FROM pg_catalog.pg_publication p
WHERE p.pubname = ANY(%s::text[]) AND NOT pg_catalog.pg_has_role(current_user, p.pubowner, 'USAGE')
ORDER BY 1
"""


def _refuse_publications_not_owned(conn: psycopg.Connection, publications: list[str]) -> None:
    """Only a publication's owner may add or drop its tables (hosted Supabase's `postgres` is not superuser):
    refuse up front with the fix rather than fail midway on `must be owner of publication`."""
    rows = conn.execute(NOT_OWNED_PUBLICATIONS, (publications,)).fetchall()
    if not rows:
        return
    executor = rows[0][2]
    fixes = "; ".join(f"have {owner} run `ALTER PUBLICATION {name} OWNER TO {executor}`" for name, owner, _ in rows)
    names = ", ".join(f"{name} (owner {owner})" for name, owner, _ in rows)
    raise PublicationsNotOwned(
        f"cleanup must add the new tables to publication {names} and drop the archived tables from it, which only"
        f" its owner may do, not the executor role {executor}: {fixes}, or run dualshift as the owner, or decide"
        f" `archive` for these memberships in the plan"
    )


def _membership_limit(explicit: bool, whole: bool) -> str:
    """What a publication membership can become, for a refusal."""
    if not explicit:
        return "it is published through FOR ALL TABLES / TABLES IN SCHEMA: only carry"
    return "it has a column list or row filter: archive or drop (add the new table to it by hand)"


PUBLICATION_REL = """
SELECT pr.prattrs IS NOT NULL,
  ARRAY(SELECT a.attname::text FROM pg_catalog.unnest(pr.prattrs) k(num)
        JOIN pg_catalog.pg_attribute a ON a.attrelid = pr.prrelid AND a.attnum = k.num ORDER BY a.attnum),
  pg_catalog.pg_get_expr(pr.prqual, pr.prrelid)
FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
WHERE p.pubname = %s AND pr.prrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))
"""


def _dropped_membership(
    conn: psycopg.Connection, plan: Plan, key: str, publication: str, table: tuple[str, str]
) -> Dropped:
    """The old table taken out of the publication (the new one not added); on rollback put back with its
    column list and row filter."""
    with qualified_names(conn):
        listed, columns, where = conn.execute(PUBLICATION_REL, (publication, *table)).fetchone()
    drop = sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
        sql.Identifier(publication), sql.Identifier(plan.archive_schema, table[1])
    )
    restore = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}{}{}").format(
        sql.Identifier(publication),
        sql.Identifier(*table),
        sql.SQL(" ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns))) if listed else sql.SQL(""),
        sql.SQL(" WHERE ({})").format(sql.SQL(where)) if where else sql.SQL(""),
    )
    return Dropped(key, (drop.as_string(conn),), (restore.as_string(conn),))


def _explicit_member(conn: psycopg.Connection, publication: str, schema: str, table: str) -> bool:
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel pr JOIN pg_catalog.pg_publication p"
        " ON p.oid = pr.prpubid WHERE p.pubname = %s"
        " AND pr.prrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text)))",
        (publication, schema, table),
    ).fetchone()[0]


# ─── policies ──────────────────────────────────────────────────────────────────────────────────────

DEPENDENT_POLICIES = """
SELECT DISTINCT p.polname, n.nspname, c.relname,
  pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_policy p ON p.oid = d.objid
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass
  AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  AND d.refobjid = ANY(%(relations)s::oid[]) AND NOT (p.polrelid = ANY(%(relations)s::oid[]))
ORDER BY 2, 3, 1
"""


def policies_over(conn: psycopg.Connection, relations: list[int]) -> list[DependentPolicy]:
    """Policies of other tables (the new ones included) whose expressions read these relations."""
    if not relations:
        return []
    with qualified_names(conn):
        rows = conn.execute(DEPENDENT_POLICIES, {"relations": relations}).fetchall()
    return [DependentPolicy(*row) for row in rows]


def _alter_policy(policy: DependentPolicy, table: sql.Identifier, using: str | None, check: str | None):
    clauses = []
    if using is not None:
        clauses.append(sql.SQL("USING ({})").format(sql.SQL(using)))
    if check is not None:
        clauses.append(sql.SQL("WITH CHECK ({})").format(sql.SQL(check)))
    return sql.SQL("ALTER POLICY {} ON {} {}").format(sql.Identifier(policy.name), table, sql.SQL(" ").join(clauses))


def _policy_table(plan: Plan, policy: DependentPolicy) -> sql.Identifier:
    """Where the policy's table is once cleanup has run (a new table of the plan moves to the target schema)."""
    if policy.schema == plan.new_schema and plan.table(policy.table) is not None:
        return sql.Identifier(plan.target_schema, policy.table)
    return sql.Identifier(policy.schema, policy.table)


# ─── the three entry points ────────────────────────────────────────────────────────────────────────


def capture(conn: psycopg.Connection, plan: Plan) -> Captured:
    """Everything outside the plan that hangs on the old tables, read BEFORE the move (the old tables in
    their schemas, the new ones in plan.new_schema), each with the plan's `[dependents]` decision (a
    missing one: cleanup's default). Raises DependentsRefused for a decision it cannot carry out."""
    old = _old_tables(conn, plan)
    decided = dict(plan.dependents)
    views, dropped_views = _views(conn, plan, old, decided)
    policies, dropped_policies = _policies(conn, plan, old, decided)
    foreign_keys, dropped_keys = _foreign_keys(conn, plan, old, decided)
    triggers, dropped_triggers = _triggers(conn, plan, old, decided)
    publications, dropped_memberships = _publications(conn, plan, old, decided)
    return Captured(
        views=views,
        foreign_keys=foreign_keys,
        triggers=triggers,
        publications=publications,
        policies=policies,
        # In the order they are dropped (a rollback creates them again the other way round): readers first.
        dropped=dropped_views
        + dropped_policies
        + dropped_triggers
        + dropped_keys
        + _foreign_keys_from(conn, plan, old, decided)
        + dropped_memberships
        + _cron_jobs(conn, decided)
        + _functions(conn, decided),
    )


def _views(
    conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]], decided: dict[str, str]
) -> tuple[list[DependentView], list[Dropped]]:
    kept, dropped, refused = [], [], []
    for view in views_over(conn, list(old)):
        default = "archive" if view.kind == "m" else "recreate"
        view = replace(view, decision=decided.get(view.key, default))
        refusal = view_refusal(conn, plan, old, view, decided)
        if refusal:
            refused.append(f"{view.key}: {refusal}")
        elif view.decision == "drop":
            drop = sql.SQL("DROP {} {}").format(
                sql.SQL("MATERIALIZED VIEW" if view.kind == "m" else "VIEW"), view.identifier
            )
            restore = tuple(s.as_string(conn) for s in _created_anew(conn, view))
            dropped.insert(0, Dropped(view.key, (drop.as_string(conn),), restore))  # the deepest first
        elif view.decision == "repoint":
            kept.append(replace(view, repointed=_repointed_definition(conn, plan, old, view)))
        else:
            kept.append(view)
    if refused:
        raise DependentsRefused("cleanup cannot do what the plan says with: " + "; ".join(refused))
    return kept, dropped


def view_refusal(
    conn: psycopg.Connection,
    plan: Plan,
    old: dict[int, tuple[str, str, str]],
    view: DependentView,
    decided: dict[str, str],
) -> str | None:
    """Why cleanup cannot do the view's decision (None: it can)."""
    if view.decision == "repoint":
        if view.kind == "m" or not view.direct:
            return "only a view that reads an old table itself can be re-pointed: choose recreate"
        return _repoint_view_refusal(conn, plan, old, view)
    if view.decision not in ("drop", "recreate", "archive"):
        return None
    if view.decision == "archive" and not (view.kind == "m" or view.direct):
        return "it reads the old table through other views, which decide for it: choose recreate or drop"
    if view.decision == "drop" or (view.kind == "m" and view.decision == "recreate"):
        readers = [r.key for r in _readers(conn, view) if decided.get(r.key) != "drop"]
        if readers:
            return f"{', '.join(readers)} read(s) it: drop them too, or choose {'archive' if view.kind == 'm' else 'recreate'}"
    return None


def _readers(conn: psycopg.Connection, view: DependentView) -> list[DependentView]:
    oid = _regclass(conn, view.schema, view.name)
    return views_over(conn, [oid]) if oid is not None else []


VIEW_COLUMNS = """
SELECT DISTINCT d.refobjid::int, a.attname::text
FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_depend d ON d.objid = r.oid
JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE r.ev_class = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))
  AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.refobjid = ANY(%s::oid[])
ORDER BY 1, 2
"""


def _repoint_view_refusal(
    conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]], view: DependentView
) -> str | None:
    """A view reads the new table in place of an old one only when that shows the same rows (one source
    or twins) and every column it uses is a column of the new table under the same name and type."""
    used = conn.execute(VIEW_COLUMNS, (view.schema, view.name, list(old))).fetchall()
    for relid in sorted({relid for relid, _ in used}):
        schema, table, new = old[relid]
        target = plan.table(new)
        if target.sources_are == "partitions" and len(target.sources) > 1:
            return f"{new} also holds the other partitions' rows, which {schema}.{table} does not: choose recreate"
        fed = target.column_mapping(table)
        for relation, column in used:
            if relation != relid:
                continue
            if fed.get(column) != column:
                became = f"is {fed[column]} in {new}" if column in fed else f"has no column in {new}"
                return f"{table}.{column} {became}: choose recreate"
            was, becomes = _types(conn, relid, column, target.column(column).type)
            if was != becomes:
                return f"{table}.{column} is {was} and {new}.{column} is {becomes}: choose recreate"
    try:
        _repointed_definition(conn, plan, old, view)
    except ValueError as exc:
        return str(exc)
    return None


def _types(conn: psycopg.Connection, relid: int, column: str, planned: str) -> tuple[str, str]:
    """The old column's type and the plan's for it, both as format_type spells them (typmod included: a
    view column may not change either)."""
    was = conn.execute(
        "SELECT pg_catalog.format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute"
        " WHERE attrelid = %s AND attname = %s",
        (relid, column),
    ).fetchone()[0]
    modifier = re.search(r"\(([^)]*)\)\s*$", planned)
    base = conn.execute(
        "SELECT pg_catalog.format_type(pg_catalog.to_regtype(%s), NULL)",
        (planned[: modifier.start()] if modifier else planned,),
    ).fetchone()[0]
    return was, f"{base}({modifier.group(1).replace(' ', '')})" if modifier else base


def _repointed_definition(
    conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]], view: DependentView
) -> str:
    """The view's definition with each old table in FROM/JOIN replaced by its new table, under the old
    table's name as alias (pg_get_viewdef qualifies every column by it)."""
    definition = view.definition
    for schema, table, new in old.values():
        qualified, alias, target = conn.execute(
            "SELECT pg_catalog.format('%%I.%%I', %s::text, %s::text), pg_catalog.quote_ident(%s),"
            " pg_catalog.format('%%I.%%I', %s::text, %s::text)",
            (schema, table, table, plan.target_schema, new),
        ).fetchone()
        pattern = re.compile(
            rf"(\b(?:FROM|JOIN)\s+\(*){re.escape(qualified)}(?![\w$.\"])( (?!ON\b|USING\b)[A-Za-z_\"][\w$\"]*)?"
        )
        definition = pattern.sub(lambda m, t=target, a=alias: f"{m.group(1)}{t}{m.group(2) or ' ' + a}", definition)
        if re.search(rf"(?<![\w$.\"]){re.escape(qualified)}(?![\w$\"])", definition):
            raise ValueError(f"its definition names {qualified} outside FROM/JOIN: choose recreate")
    return definition


DEPENDENT_POLICY_DETAILS = """
SELECT p.polpermissive, p.polcmd::text,
  ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(r)) END
        FROM pg_catalog.unnest(p.polroles) r ORDER BY 1)
FROM pg_catalog.pg_policy p
WHERE p.polname = %s AND p.polrelid = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %s::text, %s::text))
"""
POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


def _policies(
    conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]], decided: dict[str, str]
) -> tuple[list[DependentPolicy], list[Dropped]]:
    kept, dropped = [], []
    for policy in policies_over(conn, list(old)):
        key = f"policy {policy.schema}.{policy.table}.{policy.name}"
        ours = policy.schema == plan.new_schema and plan.table(policy.table) is not None  # written by `create`
        if ours or decided.get(key) != "drop":
            kept.append(replace(policy, decision=decided.get(key, "recreate")))
            continue
        permissive, command, roles = conn.execute(
            DEPENDENT_POLICY_DETAILS, (policy.name, policy.schema, policy.table)
        ).fetchone()
        table = sql.Identifier(policy.schema, policy.table)
        restore = sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}{}{}").format(
            sql.Identifier(policy.name),
            table,
            sql.SQL("PERMISSIVE" if permissive else "RESTRICTIVE"),
            sql.SQL(POLICY_COMMANDS[command]),
            sql.SQL(", ").join(sql.SQL(r) for r in roles),
            sql.SQL(" USING ({})").format(sql.SQL(policy.using)) if policy.using is not None else sql.SQL(""),
            sql.SQL(" WITH CHECK ({})").format(sql.SQL(policy.check)) if policy.check is not None else sql.SQL(""),
        )
        drop = sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(policy.name), _policy_table(plan, policy))
        dropped.append(Dropped(key, (drop.as_string(conn),), (restore.as_string(conn),)))
    return kept, dropped


FUNCTION_DETAILS = """
SELECT p.oid::pg_catalog.regprocedure::text, pg_catalog.pg_get_functiondef(p.oid),
  pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(p.proowner)),
  ARRAY(SELECT ARRAY[CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END,
                     a.is_grantable::text]
        FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
        WHERE a.grantee <> p.proowner ORDER BY 1),
  pg_catalog.obj_description(p.oid, 'pg_proc')
FROM pg_catalog.pg_proc p WHERE p.oid = pg_catalog.to_regprocedure(%s)
"""
REVOKE_FUNCTION_GRANTS = """
DECLARE grantee text;
BEGIN
  FOR grantee IN SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END
    FROM pg_catalog.pg_proc p CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
    WHERE p.oid = {function}::pg_catalog.regprocedure AND a.grantee <> p.proowner
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s', {function}, grantee);
  END LOOP;
END
"""


def _functions(conn: psycopg.Connection, decided: dict[str, str]) -> list[Dropped]:
    """The functions the plan drops (the others keep naming the old table, now the compatibility view);
    on rollback each is created again with its owner, exactly its grants and its comment."""
    dropped = []
    for key, decision in decided.items():
        if decision != "drop" or not key.startswith("function "):
            continue
        with qualified_names(conn):
            row = conn.execute(FUNCTION_DETAILS, (key.removeprefix("function "),)).fetchone()
        if row is None:
            continue
        signature, definition, owner, grants, comment = row
        function = sql.SQL(signature)
        restore = [
            sql.SQL(definition),
            sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(function, sql.SQL(owner)),
            sql.SQL("DO {}").format(
                sql.Literal(sql.SQL(REVOKE_FUNCTION_GRANTS).format(function=sql.Literal(signature)).as_string(conn))
            ),
            *(
                sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}{}").format(
                    function, sql.SQL(grantee), sql.SQL(" WITH GRANT OPTION" if grantable == "true" else "")
                )
                for grantee, grantable in grants
            ),
        ]
        if comment is not None:
            restore.append(sql.SQL("COMMENT ON FUNCTION {} IS {}").format(function, sql.Literal(comment)))
        drop = sql.SQL("DROP FUNCTION {}").format(function)
        dropped.append(Dropped(key, (drop.as_string(conn),), tuple(s.as_string(conn) for s in restore)))
    return dropped


def _cron_jobs(conn: psycopg.Connection, decided: dict[str, str]) -> list[Dropped]:
    """The pg_cron jobs the plan drops (unscheduled; on rollback scheduled again as they were)."""
    wanted = [k.removeprefix("cron job ") for k, d in decided.items() if d == "drop" and k.startswith("cron job ")]
    if not wanted or not conn.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'").fetchone():
        return []
    rows = conn.execute(
        "SELECT jobname, schedule, command, database, username, active FROM cron.job WHERE jobname = ANY(%s)"
        " ORDER BY jobname",
        (wanted,),
    ).fetchall()
    return [
        Dropped(
            f"cron job {name}",
            (sql.SQL("SELECT cron.unschedule({})").format(sql.Literal(name)).as_string(conn),),
            (
                sql.SQL("SELECT cron.schedule_in_database({})")
                .format(sql.SQL(", ").join(map(sql.Literal, (name, schedule, command, database, username, active))))
                .as_string(conn),
            ),
        )
        for name, schedule, command, database, username, active in rows
    ]


def after_move_statements(conn: psycopg.Connection, plan: Plan, captured: Captured) -> list[sql.Composable]:
    """Run in the cleanup transaction after the compatibility views exist: dependents re-pointed."""
    statements: list[sql.Composable] = [sql.SQL(s) for d in captured.dropped for s in d.drop]
    # A view keeps its OID, owner, grants and dependents: only the ones reading an old table change.
    for view in captured.views:
        if view.decision == "repoint":
            statements.append(_create_view(replace(view, definition=view.repointed), replace=True))
        elif view.direct and view.kind == "v" and view.decision in ("", "recreate"):
            statements.append(_create_view(view, replace=True))
        elif view.kind == "m" and view.decision == "recreate":
            statements.append(sql.SQL("DROP MATERIALIZED VIEW {}").format(view.identifier))
            statements += _created_anew(conn, view)
    # A policy's expression holds the old table's OID: written again, it reads the old name, now the view.
    for policy in captured.policies:
        statements.append(_alter_policy(policy, _policy_table(plan, policy), policy.using, policy.check))
    for fk in captured.foreign_keys:
        statements.append(_drop_foreign_key(fk))
        statements += _add_foreign_key(
            fk,
            sql.Identifier(plan.target_schema, fk.new_table),
            sql.SQL(", ").join(map(sql.Identifier, fk.new_columns)),
        )
    for trigger in captured.triggers:
        if trigger.recreate:
            statements += _create_trigger(conn, plan, trigger)
    for member in captured.publications:
        if member.add_new and member.whole and member.decision in ("", "carry"):
            statements.append(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(member.publication), sql.Identifier(plan.target_schema, member.new_table)
                )
            )
        if member.explicit and member.whole and member.decision in ("", "carry"):
            # the archive no longer serves the application: stop publishing it
            statements.append(
                sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                    sql.Identifier(member.publication), sql.Identifier(plan.archive_schema, member.old_table)
                )
            )
    return statements


@dataclass
class RollbackStatements:
    """`before_restore`: run while the compatibility views exist, before they are dropped.
    `after_restore`: run once the old tables are back under their names."""

    before_restore: list[sql.Composable]
    after_restore: list[sql.Composable]


def rollback_statements(conn: psycopg.Connection, plan: Plan, captured: Captured | None) -> RollbackStatements:
    """Undo `after_move_statements` for a rollback after cleanup. Views come from the catalog (every view
    over a compatibility view is dropped, then created again over the restored table, with its owner,
    options, grants and comment); foreign keys, triggers and publications need the capture cleanup kept
    (None: only the views are handled)."""
    compat = [
        oid
        for table in plan.tables
        for source in table.sources
        if (oid := _regclass(conn, source.schema, source.table)) is not None
    ]
    dependent = views_over(conn, compat)
    before: list[sql.Composable] = [
        sql.SQL("DROP {} {}").format(sql.SQL("MATERIALIZED VIEW" if view.kind == "m" else "VIEW"), view.identifier)
        for view in reversed(dependent)
    ]
    after: list[sql.Composable] = []
    for view in dependent:
        after += _created_anew(conn, view)
    for policy in policies_over(conn, compat):
        table = sql.Identifier(policy.schema, policy.table)
        # While the views are dropped and the tables moved back (one transaction: nobody sees it) the
        # policy reads nothing; then it reads the old name again, now the restored table.
        before.append(_alter_policy(policy, table, policy.using and "false", policy.check and "false"))
        after.append(_alter_policy(policy, table, policy.using, policy.check))
    if captured is None:
        return RollbackStatements(before, after)
    for fk in captured.foreign_keys:
        before.append(_drop_foreign_key(fk))
        after.append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                sql.Identifier(fk.schema, fk.table),
                sql.Identifier(fk.name),
                sql.SQL(fk.definition.removesuffix(" NOT VALID")),
            )
        )
        if fk.validated:
            after.append(
                sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    sql.Identifier(fk.schema, fk.table), sql.Identifier(fk.name)
                )
            )
    for trigger in captured.triggers:
        if trigger.recreate:
            before.append(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(trigger.new_name), sql.Identifier(plan.target_schema, trigger.new_table)
                )
            )
    for member in captured.publications:
        if member.add_new and member.whole and member.decision in ("", "carry"):
            before.append(
                sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                    sql.Identifier(member.publication), sql.Identifier(plan.target_schema, member.new_table)
                )
            )
        if member.explicit and member.whole and member.decision in ("", "carry"):
            after.append(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(member.publication), sql.Identifier(member.old_schema, member.old_table)
                )
            )
    # A re-pointed view reads the old tables again; what cleanup dropped is created again, readers last.
    after += [_create_view(view, replace=True) for view in captured.views if view.decision == "repoint"]
    after += [sql.SQL(statement) for dropped in reversed(captured.dropped) for statement in dropped.restore]
    return RollbackStatements(before, after)
