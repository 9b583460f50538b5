"""The inventory of what depends on the old tables, and the plan's decision for each (`[dependents]`).

Read-only, before any DDL (`plan check --dsn`, `migrate create`'s preflight): every view and
materialized view that reads an old table (through other views too), every foreign key into or out of
one, every trigger on one (with the function it calls), every function whose body names one, every
policy of another table that reads one, every publication membership, every pg_cron job whose command
names one (when pg_cron is installed) and every sequence owned by one of its columns. The readers are
cleanup's own (dependents.py), so the inventory lists what cleanup will act on.

Each object needs a line in the plan's `[dependents]` table, `"<kind> <name>" = "<decision>"`, and the
decision must be one cleanup carries out for that object (`Dependent.does`, its default first; what
each does, and how rollback undoes it, is dependents.py's and the README's table):

- views: `recreate` (over the compatibility view), `repoint` (over the new table, when it shows the same
  rows and every column read keeps its name and type), `archive`, `drop`; a view read only through
  other views follows them (`recreate`) or is dropped; materialized views: `archive`, `recreate`, `drop`
  (a view is dropped only with every view that reads it);
- foreign keys into an old table: `repoint` (when the columns map to a unique key of the new table),
  `archive`, `drop`; foreign keys out of one: `archive`, `drop`;
- triggers: `carry` (updated_at-style only), `archive`, `drop`;
- functions: `recreate` (they read the old name, the view; `archive` for BEGIN ATOMIC ones), `drop`;
- other tables' policies and pg_cron jobs: `recreate` (through the view), `drop` (a named job only);
- publication memberships: `carry`, `archive` or `drop` (listed by name; a filtered one is not carried);
- owned sequences: `archive` (they go where their table goes).

A decision cleanup cannot carry out is refused with why and what it can do instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

import psycopg

from dualshift.executor import dependents, names
from dualshift.executor.views import qualified_names
from dualshift.findings import Finding
from dualshift.plan import Plan, PlanError, line_of, parse_plan, plan_lines

SECTION = "[dependents]"


@dataclass(frozen=True)
class Dependent:
    kind: str  # "view", "materialized view", "foreign key", "trigger", "function", "policy", "publication", …
    name: str  # schema-qualified, as the plan's key spells it after the kind
    old_table: str  # the old table it depends on, schema-qualified
    detail: str  # how it depends on it
    does: tuple[str, ...]  # the decisions cleanup carries out for it, the one it takes by default first
    why_not: str = ""  # why a decision one might expect is not among them

    @property
    def key(self) -> str:
        return f"{self.kind} {self.name}"

    def plan_line(self) -> str:
        return f'{json.dumps(self.key)} = "{self.does[0]}"'


# The old tables a view reads, directly or through other views.
VIEW_READS = """
WITH RECURSIVE reads(oid, depth) AS (
  SELECT d.refobjid, 1
  FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_depend d ON d.objid = r.oid
  WHERE r.ev_class = pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %(schema)s::text, %(name)s::text)) AND d.refobjid <> r.ev_class
    AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  UNION
  SELECT d.refobjid, reads.depth + 1
  FROM reads JOIN pg_catalog.pg_rewrite r ON r.ev_class = reads.oid JOIN pg_catalog.pg_depend d ON d.objid = r.oid
  WHERE d.refobjid <> r.ev_class AND reads.depth < 100
    AND d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass
    AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
)
SELECT DISTINCT oid::int FROM reads WHERE oid = ANY(%(old)s::oid[])
"""
FOREIGN_KEYS_OUT = """
SELECT c.conname, n.nspname, t.relname, c.conrelid::int, c.confrelid::int, pg_catalog.pg_get_constraintdef(c.oid)
FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_class t ON t.oid = c.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'f' AND (c.conrelid = ANY(%(old)s::oid[]) OR c.confrelid = ANY(%(old)s::oid[]))
ORDER BY n.nspname, t.relname, c.conname
"""
TRIGGERS = """
SELECT t.tgname, t.tgrelid::int, t.tgfoid::pg_catalog.regprocedure::text
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
WHERE t.tgrelid = ANY(%(old)s::oid[]) AND NOT t.tgisinternal AND NOT (pn.nspname = ANY(%(ours)s))
ORDER BY t.tgrelid, t.tgname
"""
FUNCTIONS = """
SELECT p.oid::pg_catalog.regprocedure::text, coalesce(p.prosrc, ''), p.prosqlbody IS NOT NULL
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE NOT (n.nspname = ANY(%(skip)s)) AND n.nspname NOT LIKE 'pg\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
ORDER BY 1
"""
OWNED_SEQUENCES = """
SELECT n.nspname, s.relname, d.refobjid::int, a.attname
FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
  AND d.deptype IN ('a', 'i') AND d.refobjid = ANY(%(old)s::oid[])
ORDER BY 1, 2
"""
# Functions are never read from PostgreSQL's own schemas, Supabase's, or dualshift's.
NOT_SEARCHED = ("information_schema", "pg_catalog", "auth", "storage", "extensions", "graphql", "graphql_public",
                "realtime", "supabase_functions", "supabase_migrations", "vault", "pgsodium", "cron", "net",
                names.API_SCHEMA, names.PRIVATE_SCHEMA)  # fmt: skip


def _names_table(text: str, table: str) -> bool:
    """Whether SQL text names the table: as a whole word (unquoted, any case) or quoted exactly."""
    if f'"{table}"' in text:
        return True
    plain = table.lower() == table and re.fullmatch(r"[a-z_][a-z0-9_$]*", table)
    return bool(plain and re.search(rf"(?<![\w$]){re.escape(table)}(?![\w$])", text, re.IGNORECASE))


def take(conn: psycopg.Connection, plan: Plan) -> list[Dependent]:
    """Every object that depends on an old table of the plan, each with what cleanup can do for it."""
    old = dependents._old_tables(conn, plan)  # oid → (schema, table, new table)
    where = {oid: f"{schema}.{table}" for oid, (schema, table, _) in old.items()}
    found: list[Dependent] = []
    with qualified_names(conn):
        found += _views(conn, plan, old, where)
        found += _foreign_keys(conn, plan, old, where)
        found += _triggers(conn, plan, old, where)
        found += _policies(conn, plan, old)
        found += _publications(conn, plan, old)
        found += _functions(conn, old)
        found += _cron_jobs(conn, old)
        found += _sequences(conn, where)
    return found


def _views(conn: psycopg.Connection, plan: Plan, old: dict, where: dict[int, str]) -> list[Dependent]:
    found = []
    for view in dependents.views_over(conn, list(old)):
        read = conn.execute(VIEW_READS, {"schema": view.schema, "name": view.name, "old": list(old)}).fetchall()
        reads = ", ".join(sorted(where[oid] for (oid,) in read))
        detail = "reads it" if view.direct else "reads it through other views"
        kind, name = view.key.rsplit(" ", 1)
        if view.kind == "m":
            does, why_not = ("archive", "recreate", "drop"), "a materialized view holds rows: it is created again"
        elif not view.direct:
            does, why_not = ("recreate", "drop"), "it follows the views it reads"
        else:
            why_not = dependents.view_refusal(conn, plan, old, replace(view, decision="repoint"), {}) or ""
            does = ("recreate", "archive", "drop") if why_not else ("recreate", "repoint", "archive", "drop")
        found.append(Dependent(kind, name, reads, detail, does, why_not))
    return found


def _foreign_keys(conn: psycopg.Connection, plan: Plan, old: dict, where: dict[int, str]) -> list[Dependent]:
    found = []
    refusals = {(fk.schema, fk.table, fk.name): why for fk, why in dependents.foreign_keys_into(conn, plan, old)}
    rows = conn.execute(FOREIGN_KEYS_OUT, {"old": list(old)}).fetchall()
    for name, schema, table, relid, referenced, definition in rows:
        key = f"{schema}.{table}.{name}"
        if relid in old:  # declared on an old table: it moves with it
            why = "it is declared on the old table, whose rows stay in the archive"
            found.append(Dependent("foreign key", key, where[relid], definition, ("archive", "drop"), why))
            continue
        why = refusals.get((schema, table, name))
        does = ("archive", "drop") if why else ("repoint", "archive", "drop")
        found.append(Dependent("foreign key", key, where[referenced], definition, does, why or ""))
    return found


def _triggers(conn: psycopg.Connection, plan: Plan, old: dict, where: dict[int, str]) -> list[Dependent]:
    judged = {(t.old_schema, t.old_table, t.name): t for t in dependents._triggers(conn, plan, old, {})[0]}
    rows = conn.execute(TRIGGERS, {"old": list(old), "ours": [names.API_SCHEMA, names.PRIVATE_SCHEMA]}).fetchall()
    found = []
    for name, relid, function in rows:
        schema, table, _ = old[relid]
        verdict = judged[(schema, table, name)]
        carried = verdict.decision == "carry"
        detail = f"calls {function}" + ("" if carried else f"; stays on the archive: {verdict.reason}")
        does = ("carry", "archive", "drop") if carried else ("archive", "drop")
        why = "" if carried else verdict.reason
        found.append(Dependent("trigger", f"{schema}.{table}.{name}", where[relid], detail, does, why))
    return found


def _policies(conn: psycopg.Connection, plan: Plan, old: dict) -> list[Dependent]:
    ours = {(plan.new_schema, t.name) for t in plan.tables}
    found = []
    for policy in dependents.policies_over(conn, list(old)):
        if (policy.schema, policy.table) in ours:
            continue  # the new tables' own policies, written by `create`
        text = f"{policy.using or ''} {policy.check or ''}"
        reads = ", ".join(f"{s}.{t}" for s, t, _ in old.values() if _names_table(text, t))
        key = f"{policy.schema}.{policy.table}.{policy.name}"
        found.append(Dependent("policy", key, reads, "reads it", ("recreate", "drop"), "it reads the old name"))
    return found


def _publications(conn: psycopg.Connection, plan: Plan, old: dict) -> list[Dependent]:
    found = []
    # Every membership as it is (the plan's decisions are judged in `findings`, its owners in `_owners`).
    for member in dependents._publications(conn, plan, old, {}, check_owners=False)[0]:
        table = f"{member.old_schema}.{member.old_table}"
        detail = "publishes it" if member.whole else "publishes it with a column list or row filter"
        if not member.explicit:
            does: tuple[str, ...] = ("carry",)
        elif member.whole:
            does = ("carry", "archive", "drop")
        else:
            does = ("archive", "drop")
        why = "" if member.explicit and member.whole else dependents._membership_limit(member.explicit, member.whole)
        found.append(Dependent("publication", f"{member.publication} {table}", table, detail, does, why))
    return found


def _functions(conn: psycopg.Connection, old: dict) -> list[Dependent]:
    found = []
    for signature, body, atomic in conn.execute(FUNCTIONS, {"skip": list(NOT_SEARCHED)}).fetchall():
        for schema, table, _ in old.values():
            if _names_table(body, table):
                does = ("archive", "drop") if atomic else ("recreate", "drop")
                detail = "its body names it" + (" (BEGIN ATOMIC: bound to the archived table)" if atomic else "")
                why = "it keeps naming the old table, which is then the compatibility view"
                found.append(Dependent("function", signature, f"{schema}.{table}", detail, does, why))
    return found


def _cron_jobs(conn: psycopg.Connection, old: dict) -> list[Dependent]:
    if not conn.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron'").fetchone():
        return []
    found = []
    jobs = conn.execute("SELECT coalesce(jobname, jobid::text), command, jobname IS NOT NULL FROM cron.job ORDER BY 1")
    for job, command, named in jobs:
        for schema, table, _ in old.values():
            if _names_table(command, table):
                does = ("recreate", "drop") if named else ("recreate",)
                why = "its command keeps naming the old table" + ("" if named else "; only a named job can be dropped")
                found.append(Dependent("cron job", job, f"{schema}.{table}", "its command names it", does, why))
    return found


def _sequences(conn: psycopg.Connection, where: dict[int, str]) -> list[Dependent]:
    rows = conn.execute(OWNED_SEQUENCES, {"old": list(where)}).fetchall()
    why = "a sequence owned by a column goes where its table goes"
    return [
        Dependent("sequence", f"{schema}.{name}", where[relid], f"owned by its column {column}", ("archive",), why)
        for schema, name, relid, column in rows
    ]


def findings(conn: psycopg.Connection, plan: Plan) -> tuple[list[Dependent], list[Finding]]:
    """The inventory and what the plan lacks about it: an error per object without a decision (naming
    the line to add) or with one cleanup does not carry out; a warning per decision naming nothing."""
    inventory = take(conn, plan)
    decided = dict(plan.dependents)
    lines = plan_lines(plan)
    section = line_of(lines, SECTION) if lines else None
    found: list[Finding] = []
    readers = _reader_refusals(conn, plan, decided)
    for dependent in inventory:
        decision = decided.get(dependent.key)
        about = f"{dependent.key} depends on {dependent.old_table} ({dependent.detail})"
        line = line_of(lines, f'"{dependent.key}"') if lines else section
        if decision is None:
            message = f"{about}: add to {SECTION}: {dependent.plan_line()}"
            found.append(Finding("error", "dependent-undecided", message, source=dependent.old_table, line=section))
        elif decision not in dependent.does:
            why = f" ({dependent.why_not})" if dependent.why_not else ""
            message = f"{about}: dualshift cannot {decision} it{why}; it can {' or '.join(dependent.does)}"
            found.append(Finding("error", "dependent-decision", message, source=dependent.old_table, line=line))
        elif dependent.key in readers:
            message = f"{about}: dualshift cannot {decision} it: {readers[dependent.key]}"
            found.append(Finding("error", "dependent-decision", message, source=dependent.old_table, line=line))
    if not found:
        found += _owners(conn, plan, decided, section)
    listed = {d.key for d in inventory}
    if len(dependents._old_tables(conn, plan)) < len(plan.old_tables):
        return inventory, found  # an old table is missing (an error already): a decision about it is not stale
    for key in decided:
        if key not in listed:
            message = f'{SECTION} names "{key}", which depends on no old table'
            line = line_of(lines, f'"{key}"') if lines else section
            found.append(Finding("warning", "dependent-unknown", message, line=line))
    return inventory, found


def _owners(conn: psycopg.Connection, plan: Plan, decided: dict[str, str], line: int | None) -> list[Finding]:
    """What cleanup would refuse, under the plan's (valid) decisions, about publications it must alter
    that the executor role does not own: reported now rather than at cleanup."""
    try:
        dependents._publications(conn, plan, dependents._old_tables(conn, plan), decided)
    except dependents.PublicationsNotOwned as refused:
        return [Finding("error", "dependent-owner", str(refused), line=line)]
    return []


def decided(inventory: list[Dependent], plan: Plan) -> list[dict]:
    """For `plan check --json`: each object, the plan's decision for it (None: missing) and what cleanup can do."""
    decisions = dict(plan.dependents)
    return [
        {
            "kind": d.kind,
            "name": d.name,
            "old_table": d.old_table,
            "detail": d.detail,
            "decision": decisions.get(d.key),
            "can": list(d.does),
        }
        for d in inventory
    ]


def _reader_refusals(conn: psycopg.Connection, plan: Plan, decided: dict[str, str]) -> dict[str, str]:
    """Views whose decision other views' decisions make impossible (a view dropped while another still
    reads it), by key."""
    old = dependents._old_tables(conn, plan)
    found = {}
    for view in dependents.views_over(conn, list(old)):
        decision = decided.get(view.key)
        if decision in ("drop", "recreate", "archive"):
            refusal = dependents.view_refusal(conn, plan, old, replace(view, decision=decision), decided)
            if refusal:
                found[view.key] = refusal
    return found


def draft_section(conn: psycopg.Connection, draft: str) -> str:
    """For `plan init --dsn`: the `[dependents]` table of a draft plan, each object with the decision
    cleanup takes by default (empty when the draft declares no table)."""
    try:
        plan = parse_plan(draft, "<draft>")
    except PlanError:
        return ""
    inventory = take(conn, plan)
    if not inventory:
        return ""
    lines = ["", "# ─── What depends on the old tables, and what cleanup does with each (one line per object)", SECTION]
    lines += [f"{d.plan_line()}  # {d.detail[:100]}" for d in inventory]
    return "\n".join(lines) + "\n"
