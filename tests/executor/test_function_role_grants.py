"""An executor that is not superuser (hosted Supabase's `postgres`): a privilege it may not pass on to a
function role is refused up front, with the fix, and nothing of the phase is kept; so is an executor that
may not create roles."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dualshift.executor import owners
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import ExecutorError, connect
from dualshift.executor.pgserver import fresh_database
from dualshift.executor.phases import Executor
from dualshift.executor.state import current_phase
from dualshift.plan import Plan, load_plan

from .supabase_scenario import migrate_here

PLAN = """
version = 1
name = "{name}"
{before}
[[tables]]
name = "items"
key = ["id"]
columns = [
  {{ name = "id", type = "integer", nullable = false, unique = true }},
  {{ name = "value", type = "text" }},
  {{ name = "origin", type = "text", nullable = false }},
]

  [[tables.sources]]
  schema = "{schema}"
  table = "first_items"
  key = ["id"]
  constants = {{ origin = "first" }}

  [[tables.sources]]
  schema = "{schema}"
  table = "second_items"
  key = ["id"]
  constants = {{ origin = "second" }}
"""


# A table in public, first in the plan: the refusal of the second table's grants must keep nothing of it.
NOTES = """
[[tables]]
name = "all_notes"
key = ["id"]
columns = [{ name = "id", type = "integer", nullable = false, unique = true }, { name = "body", type = "text" }]

  [[tables.sources]]
  table = "notes"
  key = ["id"]
"""


def _tables(schema: str) -> str:
    return f"""
CREATE TABLE {schema}.first_items (id integer PRIMARY KEY, value text);
CREATE TABLE {schema}.second_items (id integer PRIMARY KEY, value text);
INSERT INTO {schema}.first_items SELECT n, 'first ' || n FROM generate_series(1, 50) n;
INSERT INTO {schema}.second_items SELECT n, 'second ' || n FROM generate_series(30, 80) n;
"""


class Cluster:
    """A database, an executor role that is not superuser, and a role owning a schema the executor may
    only use (as supabase_auth_admin owns `auth` on hosted Supabase)."""

    def __init__(self, admin: psycopg.Connection, dsn: str, tmp_path: Path) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.admin, self.tmp_path = admin, tmp_path
        self.executor, self.other = f"ds_exec_{suffix}", f"ds_auth_admin_{suffix}"
        self.dsn = psycopg.conninfo.make_conninfo(dsn, user=self.executor)

    def setup(self, createrole: bool = True) -> None:
        executor, other = sql.Identifier(self.executor), sql.Identifier(self.other)
        database = self.admin.execute("SELECT current_database()").fetchone()[0]
        self.admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER {}").format(
                executor, sql.SQL("CREATEROLE" if createrole else "NOCREATEROLE")
            )
        )
        self.admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(other))
        self.admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), executor))
        self.admin.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(executor))
        # `auth` of our own: a function the policies call, in a schema the executor may use, not pass on.
        self.admin.execute(sql.SQL("CREATE SCHEMA auth AUTHORIZATION {}").format(other))
        self.admin.execute(
            "CREATE FUNCTION auth.uid() RETURNS text LANGUAGE sql STABLE SET search_path = pg_catalog"
            " AS $$ SELECT pg_catalog.current_setting('app.user', true) $$"
        )
        self.admin.execute(sql.SQL("ALTER FUNCTION auth.uid() OWNER TO {}").format(other))
        self.admin.execute(sql.SQL("GRANT USAGE ON SCHEMA auth TO {}").format(executor))

    def as_executor(self, statements: str) -> None:
        with self.admin.transaction():
            self.admin.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.executor)))
            self.admin.execute(statements)

    def plan(self, schema: str = "public", before: str = "") -> Plan:
        path = self.tmp_path / "items.toml"
        path.write_text(PLAN.format(name=f"grants-{uuid.uuid4().hex[:8]}", schema=schema, before=before))
        return load_plan(path)

    def run(self, plan: Plan, *args: str):
        return migrate_here(self.dsn, *args, plan=plan.path)

    def function_roles(self) -> list[str]:
        return [
            name
            for (name,) in self.admin.execute(
                "SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid ="
                " p.pronamespace WHERE n.nspname = 'dualshift_private' ORDER BY 1"
            )
        ]


@pytest.fixture
def cluster(admin_dsn: str, tmp_path: Path) -> Iterator[Cluster]:
    with fresh_database(admin_dsn) as dsn, psycopg.connect(dsn, autocommit=True) as admin:
        made = Cluster(admin, dsn, tmp_path)
        yield made
    with psycopg.connect(admin_dsn, autocommit=True) as admin:  # the database is gone, and what they held in it
        for role in (made.executor, made.other):
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _quoted(conn: psycopg.Connection, name: str) -> str:
    return conn.execute("SELECT quote_ident(%s)", (name,)).fetchone()[0]


def _refusal(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_cleanup_refuses_a_compat_role_the_executor_cannot_grant_what_a_policy_calls(cluster: Cluster) -> None:
    cluster.setup()
    cluster.as_executor(_tables("public"))
    cluster.admin.execute("ALTER TABLE public.first_items ENABLE ROW LEVEL SECURITY")
    cluster.admin.execute(
        "CREATE POLICY own ON public.first_items USING (auth.uid() IS NULL OR value LIKE auth.uid() || '%')"
    )
    plan = cluster.plan()
    for args in (("create", "--skip-preflight"), ("backfill", "--sync", "triggers"), ("verify",)):
        step = cluster.run(plan, *args)
        assert step.ok, step.line()
    compat = owners.role_name(cluster.admin, plan, owners.COMPAT)
    before = current_phase(cluster.admin, plan.name)
    functions_before = cluster.function_roles()

    step = cluster.run(plan, "cleanup", "--backup-dir", str(cluster.tmp_path / "backups"), "--force")

    assert step.exit_code == 2, step.line()
    line = _refusal(step.output)
    assert f"role {_quoted(cluster.admin, compat)} lacks USAGE on SCHEMA auth" in line, line
    assert "the compatibility views' write triggers need" in line, line
    assert f"`GRANT USAGE ON SCHEMA auth TO {cluster.executor} WITH GRANT OPTION`" in line, line
    assert f"have {cluster.other} run" in line, line
    assert current_phase(cluster.admin, plan.name) == before
    assert not owners.role_exists(cluster.admin, compat)
    assert cluster.function_roles() == functions_before
    assert cluster.admin.execute("SELECT to_regclass('public.first_items')::text").fetchone()[0] is not None
    assert cluster.admin.execute("SELECT to_regnamespace('dualshift_archive')").fetchone()[0] is None

    cluster.admin.execute(
        sql.SQL("GRANT USAGE ON SCHEMA auth TO {} WITH GRANT OPTION").format(sql.Identifier(cluster.executor))
    )
    step = cluster.run(plan, "cleanup", "--backup-dir", str(cluster.tmp_path / "backups"), "--force")
    assert step.ok, step.line()
    assert current_phase(cluster.admin, plan.name) == "cleaned"
    assert cluster.admin.execute("SELECT has_schema_privilege(%s, 'auth', 'USAGE')", (compat,)).fetchone()[0]
    cluster.admin.execute("INSERT INTO public.first_items (id, value) VALUES (500, 'through the view')")
    assert cluster.admin.execute("SELECT origin FROM public.items WHERE id = 500").fetchone() == ("first",)


def test_backfill_refuses_sync_triggers_whose_role_cannot_reach_the_old_tables_schema(cluster: Cluster) -> None:
    cluster.setup()
    executor = sql.Identifier(cluster.executor)
    cluster.admin.execute(sql.SQL("CREATE SCHEMA legacy AUTHORIZATION {}").format(sql.Identifier(cluster.other)))
    cluster.admin.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA legacy TO {}").format(executor))
    cluster.as_executor(_tables("legacy"))
    cluster.as_executor(
        "CREATE TABLE public.notes (id integer PRIMARY KEY, body text); INSERT INTO public.notes VALUES (1, 'a')"
    )
    plan = cluster.plan("legacy", before=NOTES)
    assert cluster.run(plan, "create", "--skip-preflight").ok
    sync_role = owners.role_name(cluster.admin, plan, owners.SYNC)

    step = cluster.run(plan, "backfill", "--sync", "triggers")

    assert step.exit_code == 2, step.line()
    line = _refusal(step.output)
    assert f"role {_quoted(cluster.admin, sync_role)} lacks USAGE on SCHEMA legacy" in line, line
    assert "the sync triggers on legacy.first_items, legacy.second_items" in line, line
    assert f"`GRANT USAGE ON SCHEMA legacy TO {cluster.executor} WITH GRANT OPTION`" in line, line
    assert current_phase(cluster.admin, plan.name) == "created"
    assert not owners.role_exists(cluster.admin, sync_role)
    assert cluster.function_roles() == []
    assert cluster.admin.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone()[0] == 0

    cluster.admin.execute(sql.SQL("GRANT USAGE ON SCHEMA legacy TO {} WITH GRANT OPTION").format(executor))
    step = cluster.run(plan, "backfill", "--sync", "triggers")
    assert step.ok, step.line()
    cluster.admin.execute("UPDATE legacy.first_items SET value = 'mirrored' WHERE id = 1")
    assert cluster.admin.execute("SELECT value FROM public.items WHERE id = 1").fetchone() == ("mirrored",)
    cluster.admin.execute("UPDATE public.notes SET body = 'mirrored' WHERE id = 1")
    assert cluster.admin.execute("SELECT body FROM public.all_notes WHERE id = 1").fetchone() == ("mirrored",)


def test_an_executor_that_may_not_create_roles_is_refused_before_any_change(cluster: Cluster) -> None:
    cluster.setup(createrole=False)
    cluster.as_executor(_tables("public"))
    plan = cluster.plan()
    ex = Executor(connect(cluster.dsn), plan, cluster.dsn, skip_preflight=True)
    with pytest.raises(ExecutorError, match=f"role {cluster.executor} may not create roles .no CREATEROLE."):
        ex.create()
    ex.conn.close()
    step = cluster.run(plan, "create", "--skip-preflight")
    assert step.exit_code == 2 and "ALTER ROLE" in _refusal(step.output), step.line()
    assert cluster.admin.execute("SELECT to_regclass('public.items')").fetchone()[0] is None
    assert cluster.admin.execute("SELECT to_regnamespace('dualshift')").fetchone()[0] is None

    cluster.admin.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(cluster.executor)))
    ex = Executor(connect(cluster.dsn), plan, cluster.dsn, skip_preflight=True)
    ex.create()
    ex.backfill(BackfillOptions(), sync_triggers=True)
    ex.conn.close()
    assert cluster.function_roles() == [owners.role_name(cluster.admin, plan, owners.SYNC)]
