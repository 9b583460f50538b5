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

`rollback_statements(conn, plan, captured)` undoes step 3 for a rollback after cleanup; call it
while the compatibility views still exist. `Captured.to_json`/`from_json` let cleanup keep the
capture in its state for that rollback. Nothing here runs SQL that changes anything: every function
returns statements for the caller to run.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
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


@dataclass(frozen=True)
class DependentPolicy:
    """A row-level security policy of another table whose expressions read an old table."""

    name: str
    schema: str
    table: str
    using: str | None  # pg_get_expr under `pg_catalog, pg_temp`
    check: str | None


@dataclass(frozen=True)
class Membership:
    publication: str
    old_schema: str
    old_table: str
    new_table: str
    explicit: bool  # listed by name (pg_publication_rel), not through FOR ALL TABLES / TABLES IN SCHEMA
    whole: bool  # no column list and no row filter
    add_new: bool  # the new table must be added (it would not be a member otherwise)


@dataclass
class Captured:
    views: list[DependentView] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    triggers: list[OldTrigger] = field(default_factory=list)
    publications: list[Membership] = field(default_factory=list)
    policies: list[DependentPolicy] = field(default_factory=list)

    @property
    def needs_decision(self) -> list[str]:
        """What cleanup leaves on the archive for a person to decide, each with the reason."""
        found = [
            f"materialized view {v.schema}.{v.name} reads the archived tables: re-create it over the old names by hand"
            for v in self.views
            if v.kind == "m"
        ]
        found += [
            f"trigger {t.name} on {t.old_schema}.{t.old_table} stays on the archived table: {t.reason}"
            for t in self.triggers
            if not t.recreate
        ]
        found += [
            f"publication {m.publication} publishes {m.old_schema}.{m.old_table} with a column list or row filter:"
            f" add {m.new_table} to it by hand"
            for m in self.publications
            if m.add_new and not m.whole
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
  pg_catalog.obj_description(c.oid, 'pg_class'), max(reading.depth), min(reading.depth) = 1
FROM reading JOIN pg_catalog.pg_class c ON c.oid = reading.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
WHERE NOT (c.oid = ANY(%(relations)s::oid[]))
GROUP BY c.oid, n.nspname, c.relname, c.relkind, c.reloptions, o.rolname, c.relacl
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
        )
        for schema, name, kind, definition, options, owner, grants, comment, depth, direct in rows
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
    return statements


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


def _foreign_keys(conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]]) -> list[ForeignKey]:
    with qualified_names(conn):
        rows = conn.execute(FOREIGN_KEYS, {"old": list(old)}).fetchall()
    found, refused = [], []
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
        new_columns = tuple(fed.get(c) for c in old_columns)
        where = f"foreign key {name} of {schema}.{table} (into {old_schema}.{old_table} ({', '.join(old_columns)}))"
        if None in new_columns:
            refused.append(f"{where}: the plan drops {', '.join(c for c in old_columns if c not in fed)}")
            continue
        new_oid = _regclass(conn, plan.new_schema, new_table)
        keys = [set(k) for (k,) in conn.execute(UNIQUE_KEYS, (new_oid,)).fetchall()] if new_oid else []
        if set(new_columns) not in keys:
            refused.append(f"{where}: {new_table} ({', '.join(new_columns)}) is not a unique key of the new table")
            continue
        clash = _type_clashes(conn, (schema, table, columns), (plan.new_schema, new_table, new_columns))
        if clash:
            refused.append(f"{where}: {clash}")
            continue
        if cols:
            refused.append(f"{where}: ON DELETE SET NULL/DEFAULT with a column list; re-point it by hand")
            continue
        found.append(
            ForeignKey(
                name=name,
                schema=schema,
                table=table,
                columns=tuple(columns),
                old_schema=old_schema,
                old_table=old_table,
                old_columns=tuple(old_columns),
                new_table=new_table,
                new_columns=new_columns,
                tail=_fk_tail(match, upd, dele, deferrable, deferred),
                validated=valid,
                definition=text,
            )
        )
    if refused:
        raise DependentsRefused(
            "cleanup cannot re-point these foreign keys to the new tables (nothing was changed): " + "; ".join(refused)
        )
    return found


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


def _triggers(conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]]) -> list[OldTrigger]:
    with qualified_names(conn):
        rows = conn.execute(TRIGGERS, {"old": list(old), "ours": [names.API_SCHEMA, names.PRIVATE_SCHEMA]}).fetchall()
    found: list[OldTrigger] = []
    taken: dict[tuple[str, str], str] = {}  # (new table, trigger name) → the definition re-created under it
    for name, relid, definition, tgtype, enabled, language, body, columns in rows:
        old_schema, old_table, new_table = old[relid]
        new_columns = {c.name for c in plan.table(new_table).columns}
        recreate, reason = _judge_trigger(tgtype, language, body, definition, set(columns), new_columns)
        portable = _portable(conn, name, old_schema, old_table, definition)
        new_name = name
        if recreate and portable is None:
            recreate, reason = False, "its definition could not be moved to the new table"
        if recreate:
            if taken.get((new_table, name)) == portable:
                continue  # the same trigger on a twin: once on the new table is enough
            if (new_table, name) in taken:
                new_name = names.fit(name, old_table)
            taken[(new_table, new_name)] = portable
        found.append(
            OldTrigger(name, old_schema, old_table, new_table, definition, new_name, enabled, recreate, reason)
        )
    return found


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


def _publications(conn: psycopg.Connection, plan: Plan, old: dict[int, tuple[str, str, str]]) -> list[Membership]:
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
    added: set[tuple[str, str]] = set()
    for publication, schema, table, explicit, whole, covers_target in rows:
        new_table = located[(schema, table)]
        already = _explicit_member(conn, publication, plan.new_schema, new_table)
        add_new = not covers_target and not already and (publication, new_table) not in added
        if add_new and whole:
            added.add((publication, new_table))
        found.append(Membership(publication, schema, table, new_table, explicit, whole, add_new))
    return found


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
    their schemas, the new ones in plan.new_schema). Raises DependentsRefused for a foreign key that
    cannot follow its rows to the new table."""
    old = _old_tables(conn, plan)
    return Captured(
        views=views_over(conn, list(old)),
        foreign_keys=_foreign_keys(conn, plan, old),
        triggers=_triggers(conn, plan, old),
        publications=_publications(conn, plan, old),
        policies=policies_over(conn, list(old)),
    )


def after_move_statements(conn: psycopg.Connection, plan: Plan, captured: Captured) -> list[sql.Composable]:
    """Run in the cleanup transaction after the compatibility views exist: dependents re-pointed."""
    statements: list[sql.Composable] = []
    # A view keeps its OID, owner, grants and dependents: only the ones reading an old table change.
    for view in captured.views:
        if view.direct and view.kind == "v":
            statements.append(_create_view(view, replace=True))
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
        if member.add_new and member.whole:
            statements.append(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(member.publication), sql.Identifier(plan.target_schema, member.new_table)
                )
            )
        if member.explicit and member.whole:  # the archive no longer serves the application: stop publishing it
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
        if view.kind == "m":
            after.append(
                sql.SQL("CREATE MATERIALIZED VIEW {}{} AS {}").format(
                    view.identifier, _with_options(view), sql.SQL(view.definition)
                )
            )
        else:
            after.append(_create_view(view, replace=False))
        after.append(revoke_every_grant(conn, view.schema, view.name))
        after += _view_extras(view)
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
        if member.add_new and member.whole:
            before.append(
                sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                    sql.Identifier(member.publication), sql.Identifier(plan.target_schema, member.new_table)
                )
            )
        if member.explicit and member.whole:
            after.append(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(member.publication), sql.Identifier(member.old_schema, member.old_table)
                )
            )
    return RollbackStatements(before, after)
