"""The roles that own dualshift's SECURITY DEFINER functions.

Each kind of function (the sync triggers, verify's change capture, the reverse sync, the compatibility
views' write triggers) of each migration in each database is owned by its own role,
`dualshift_<kind>_<database>_<plan>`: NOLOGIN, NOINHERIT, no attribute, holding exactly the privileges
its functions need, granted by the module that makes them as a list of `Grant`s: the same list emits the
GRANTs and, in the same transaction, checks that the role holds each one (`granted`). An executor that is
not superuser may lack the grant option on an object it does not own (on Supabase, schema `auth` for the
policies' `auth.uid()`); PostgreSQL then only warns, and the check refuses the phase instead. The functions pin their settings
(`search_path = pg_catalog, pg_temp` first) and PUBLIC may not call them. A role is created with its
functions and dropped with them: `DROP OWNED BY` takes back its grants and policies, so a rolled-back
migration leaves no role and no privilege behind, and a finalized one only the compatibility views' role.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from dualshift.executor.backfill import session_settings
from dualshift.executor.connection import ExecutorError
from dualshift.executor.names import PRIVATE_SCHEMA, fit
from dualshift.plan import Plan

SYNC = "sync"
CAPTURE = "capture"
REVERSE_SYNC = "reverse_sync"
COMPAT = "compat"


def role_name(conn: psycopg.Connection, plan: Plan, kind: str) -> str:
    """One role per database and migration (roles are cluster-wide) and kind of function."""
    database = conn.execute("SELECT pg_catalog.current_database()").fetchone()[0]
    return fit(f"dualshift_{kind}", database, plan.name)


def function_owner(conn: psycopg.Connection, function: str) -> str | None:
    """The owner of a function without arguments (`schema.name`), or None when there is none."""
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(p.proowner) FROM pg_catalog.pg_proc p"
        " WHERE p.oid = pg_catalog.to_regprocedure(%s || '()')",
        (function,),
    ).fetchone()
    return row[0] if row else None


def role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def settings_clause(plan: Plan) -> sql.Composable:
    """`SET search_path = pg_catalog, pg_temp SET TimeZone = …`: what every function dualshift creates pins."""
    clauses = []
    for name, value in session_settings(plan):
        if name == "search_path":  # a list: each schema its own identifier, not one quoted string
            value_sql = sql.SQL(", ").join(sql.Identifier(s.strip()) for s in value.split(","))
        else:
            value_sql = sql.Literal(value)
        clauses.append(sql.SQL("SET {} = {}").format(sql.Identifier(name), value_sql))
    return sql.SQL(" ").join(clauses)


def role_statements(conn: psycopg.Connection, role: str, groups: tuple[str, ...] = ()) -> list[sql.Composable]:
    """The role (if missing), its groups, and, for an executor that is not superuser, the membership it
    needs to hand the role its functions."""
    who = sql.Identifier(role)
    # Idempotent, not conditional on this cluster: `--emit-migrations` replays the statement elsewhere.
    # A role of that name someone else made with rights of its own is refused: the functions would run with them.
    statements: list[sql.Composable] = [
        sql.SQL(
            "DO $dualshift$ BEGIN IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {name})"
            " THEN CREATE ROLE {who} NOLOGIN NOINHERIT;"
            " ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {name} AND (rolcanlogin OR rolsuper"
            " OR rolbypassrls OR rolcreaterole OR rolcreatedb OR rolreplication OR rolinherit)) THEN"
            " RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = pg_catalog.format("
            "'role %s already exists with LOGIN, SUPERUSER, BYPASSRLS, CREATEROLE, CREATEDB, REPLICATION or"
            " INHERIT; dualshift hands its SECURITY DEFINER functions only to a role it can trust to hold nothing"
            " else: drop or rename that role', {name}); END IF; END $dualshift$"
        ).format(name=sql.Literal(role), who=who)
    ]
    statements += [sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), who) for group in groups]
    superuser = conn.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()[0]
    if not superuser:
        statements.append(sql.SQL("GRANT {} TO CURRENT_USER").format(who))
    return statements


@dataclass(frozen=True)
class Grant:
    """One privilege a function role needs: `target` as the has_*_privilege function takes it (a schema's
    name, a qualified relation, a regprocedure); `reason` where the caller's `needed_by` is not enough."""

    privilege: str
    kind: str  # "schema" | "table" | "sequence" | "function"
    target: str
    reason: str = ""

    def on(self) -> sql.Composable:
        target = sql.Identifier(self.target) if self.kind == "schema" else sql.SQL(self.target)
        return sql.SQL("{} {}").format(sql.SQL(self.kind.upper()), target)


# kind → (the has_*_privilege function, the query of the object's owner)
CHECKS = {
    "schema": ("has_schema_privilege", "SELECT o.nspowner FROM pg_catalog.pg_namespace o WHERE o.nspname = {}"),
    "table": (
        "has_table_privilege",
        "SELECT o.relowner FROM pg_catalog.pg_class o WHERE o.oid = pg_catalog.to_regclass({})",
    ),
    "sequence": (
        "has_sequence_privilege",
        "SELECT o.relowner FROM pg_catalog.pg_class o WHERE o.oid = pg_catalog.to_regclass({})",
    ),
    "function": (
        "has_function_privilege",
        "SELECT o.proowner FROM pg_catalog.pg_proc o WHERE o.oid = pg_catalog.to_regprocedure({})",
    ),
}


def schema_usage(schemas: set[str]) -> list[Grant]:
    return [Grant("USAGE", "schema", schema) for schema in sorted(schemas)]


def relation_grants(
    conn: psycopg.Connection, privileges: tuple[str, ...], relations: list[sql.Identifier], reason: str = ""
) -> list[Grant]:
    return [Grant(p, "table", r.as_string(conn), reason) for r in relations for p in privileges]


def sequence_grants(conn: psycopg.Connection, relations: list[sql.Identifier]) -> list[Grant]:
    """USAGE on the sequences that fill the relations' columns on INSERT (serial, identity, nextval defaults)."""
    sequences = conn.execute(
        "WITH r AS (SELECT pg_catalog.to_regclass(name) AS oid FROM pg_catalog.unnest(%s::text[]) AS name)"
        " SELECT d.objid::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_depend d"
        " JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
        " WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')"
        " AND d.refobjid IN (SELECT oid FROM r)"
        " UNION SELECT d.refobjid::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_attrdef ad"
        " JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid"
        " JOIN pg_catalog.pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'"
        " WHERE ad.adrelid IN (SELECT oid FROM r) ORDER BY 1",
        ([r.as_string(conn) for r in relations],),
    ).fetchall()
    return [Grant("USAGE", "sequence", sequence) for (sequence,) in sequences]


def grant_statements(role: str, grants: list[Grant]) -> list[sql.Composable]:
    """One GRANT per object, its privileges together, in the order first named."""
    privileges: dict[Grant, list[str]] = {}
    for grant in grants:
        key = Grant("", grant.kind, grant.target)
        if grant.privilege not in privileges.setdefault(key, []):
            privileges[key].append(grant.privilege)
    return [
        sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(", ").join(map(sql.SQL, names)), key.on(), sql.Identifier(role))
        for key, names in privileges.items()
    ]


MISSING = """DO $dualshift$ DECLARE missing record; BEGIN
  SELECT * INTO missing FROM (VALUES {rows}) AS v(n, held, what, object, owner, reason) WHERE NOT v.held
  ORDER BY v.n LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = pg_catalog.format(
      'role %s lacks %s on %s, which %s need%s; the executor role %s could not grant it (it lacks the'
      ' privilege or its grant option; PostgreSQL only warned "no privileges were granted"); have %s run'
      ' `GRANT %s ON %s TO %s WITH GRANT OPTION`, or run dualshift as %s',
      pg_catalog.quote_ident({role}), missing.what, missing.object, {needed_by}, missing.reason, pg_catalog.quote_ident(current_user),
      missing.owner, missing.what, missing.object, pg_catalog.quote_ident(current_user), missing.owner);
  END IF;
END $dualshift$"""


def check_statement(role: str, grants: list[Grant], needed_by: str) -> sql.Composable:
    """A statement that fails, naming the first privilege `role` does not hold, the object's owner and the
    fix, when a GRANT of `grants` was only warned about: run after the GRANTs, in their transaction."""
    rows = []
    for n, grant in enumerate(grants):
        function, owner = CHECKS[grant.kind]
        target = sql.Literal(grant.target)
        rows.append(
            sql.SQL(
                "({}, pg_catalog.{}({}, {}, {}), {}, {} || {},"
                " (SELECT pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(({})))), {})"
            ).format(
                sql.Literal(n),
                sql.SQL(function),
                sql.Literal(role),
                target,
                sql.Literal(grant.privilege),
                sql.Literal(grant.privilege),
                sql.Literal(grant.kind.upper() + " "),
                sql.SQL("pg_catalog.quote_ident({})").format(target) if grant.kind == "schema" else target,
                sql.SQL(owner).format(target),
                sql.Literal(f" ({grant.reason})" if grant.reason else ""),
            )
        )
    return sql.SQL(MISSING).format(
        rows=sql.SQL(", ").join(rows), role=sql.Literal(role), needed_by=sql.Literal(needed_by)
    )


def granted(role: str, grants: list[Grant], needed_by: str) -> list[sql.Composable]:
    """The GRANTs, then the check that each took (`check_statement`)."""
    if not grants:
        return []
    return [*grant_statements(role, grants), check_statement(role, grants, needed_by)]


def require_role_management(conn: psycopg.Connection) -> None:
    """Refuse, before any change, an executor that may not create and drop the functions' roles."""
    quoted, superuser, createrole = conn.execute(
        "SELECT pg_catalog.quote_ident(rolname), rolsuper, rolcreaterole FROM pg_catalog.pg_roles"
        " WHERE rolname = current_user"
    ).fetchone()
    if not (superuser or createrole):
        raise ExecutorError(
            f"role {quoted} may not create roles (no CREATEROLE): dualshift makes a role to own each kind of"
            f" trigger function it installs; run dualshift as a role with CREATEROLE (on Supabase: postgres) or"
            f" have a superuser run `ALTER ROLE {quoted} CREATEROLE`; nothing was changed"
        )


def _relation(conn: psycopg.Connection, schema: str, table: str) -> str:
    return sql.Identifier(schema, table).as_string(conn)


def has_row_security(conn: psycopg.Connection, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT c.relrowsecurity FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass(%s)",
        (_relation(conn, schema, table),),
    ).fetchone()
    return bool(row and row[0])


def has_policy(conn: psycopg.Connection, policy: str, schema: str, table: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM pg_catalog.pg_policy WHERE polname = %s AND polrelid = pg_catalog.to_regclass(%s)",
            (policy, _relation(conn, schema, table)),
        ).fetchone()
        is not None
    )


def policy_statements(
    conn: psycopg.Connection, policy: str, role: str, schema: str, table: str
) -> list[sql.Composable]:
    """Where row-level security is on, a permissive policy that lets `role` (and no one else) through."""
    if not has_row_security(conn, schema, table):
        return []
    target = sql.Identifier(schema, table)
    return [
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(policy), target),
        sql.SQL("CREATE POLICY {} ON {} TO {} USING (true) WITH CHECK (true)").format(
            sql.Identifier(policy), target, sql.Identifier(role)
        ),
    ]


def owned_functions(
    role: str, functions: list[tuple[sql.Composable, sql.Identifier, sql.Composable]]
) -> list[sql.Composable]:
    """Each `(CREATE FUNCTION …, name, argument types)` created, then handed to `role`, PUBLIC's EXECUTE
    revoked; the role holds CREATE on dualshift_private only for the handing over."""
    who = sql.Identifier(role)
    private = sql.Identifier(PRIVATE_SCHEMA)
    statements = [sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(private, who)]
    for create, name, arguments in functions:
        statements += [
            create,
            sql.SQL("ALTER FUNCTION {}({}) OWNER TO {}").format(name, arguments, who),
            sql.SQL("REVOKE ALL ON FUNCTION {}({}) FROM PUBLIC").format(name, arguments),
        ]
    statements.append(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(private, who))
    return statements


def drop_statements(conn: psycopg.Connection, role: str) -> list[sql.Composable]:
    """The role gone with everything it owns or was granted in this database (run after its triggers)."""
    if not role_exists(conn, role):
        return []
    who = sql.Identifier(role)
    if used_in_other_databases(conn, role):  # a replay of `--emit-migrations` in another database, say
        return [sql.SQL("DROP OWNED BY {}").format(who)]
    return [sql.SQL("DROP OWNED BY {}").format(who), sql.SQL("DROP ROLE {}").format(who)]


def used_in_other_databases(conn: psycopg.Connection, role: str) -> bool:
    """Roles are cluster-wide: one that owns or holds something in another database must outlive this
    database's migration (dropping it would fail the phase); that database's own cleanup drops it."""
    return (
        conn.execute(
            "SELECT 1 FROM pg_catalog.pg_shdepend d JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid"
            " WHERE r.rolname = %s AND d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass"
            " AND d.dbid NOT IN (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname ="
            " pg_catalog.current_database())) LIMIT 1",
            (role,),
        ).fetchone()
        is not None
    )
