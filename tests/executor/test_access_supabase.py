"""Access never widens and rows stay as visible as they were: grants under Supabase's default
privileges and with plain grants, and row level security carried from every source.

The schema is Supabase-shaped: roles anon, authenticated and service_role, an `auth.uid()` that
reads `request.jwt.claims` as PostgREST sets them, and (where the test says so) Supabase's
default privileges, which grant ALL on every new table to all three roles.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import ExecutorError, connect
from dualshift.executor.create import PRIVILEGES, RewriteError, rewrite_expression, source_row_filter
from dualshift.executor.pgserver import fresh_database
from dualshift.executor.phases import Executor
from dualshift.plan import Plan, load_plan

SUPABASE_ROLE_OPTIONS = {
    "anon": "NOLOGIN NOINHERIT",
    "authenticated": "NOLOGIN NOINHERIT",
    "service_role": "NOLOGIN NOINHERIT BYPASSRLS",
}
SUPABASE_ROLES = tuple(SUPABASE_ROLE_OPTIONS)
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")

PLAN = """
version = 1
name = "access-test"

[[tables]]
name = "notes"
key = ["note_id"]
sources_are = "partitions"
columns = [
  { name = "note_id", type = "uuid", nullable = false },
  { name = "owner_id", type = "uuid", nullable = false },
  { name = "body", type = "text", nullable = false },
  { name = "is_public", type = "boolean", nullable = false, default = "false" },
  { name = "team_id", type = "integer" },
  { name = "origin", type = "text", nullable = false },
]
  [[tables.sources]]
  table = "notes_a"
  key = ["id"]
  rename = { id = "note_id", author = "owner_id" }
  constants = { origin = "a" }

  [[tables.sources]]
  table = "notes_b"
  key = ["id"]
  rename = { id = "note_id" }
  constants = { origin = "b" }

  [[tables.sources]]
  table = "notes_c"
  key = ["id"]
  rename = { id = "note_id" }
  constants = { origin = "c" }

[[tables]]
name = "profiles"
key = ["id"]
sources_are = "twins"
columns = [
  { name = "id", type = "uuid", nullable = false },
  { name = "user_id", type = "uuid" },
  { name = "display_name", type = "text" },
  { name = "team_id", type = "integer" },
  { name = "is_public", type = "boolean", nullable = false, default = "false" },
]
  [[tables.sources]]
  table = "profiles_main"
  key = ["id"]

  [[tables.sources]]
  table = "profiles_copy"
  key = ["id"]
  rename = { uid = "user_id" }
  drop = ["legacy_flag"]
"""

SCHEMA = """
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(coalesce(current_setting('request.jwt.claim.sub', true),
                         current_setting('request.jwt.claims', true)::jsonb ->> 'sub'), '')::uuid
$$;
GRANT USAGE ON SCHEMA auth, public TO anon, authenticated, service_role;
CREATE TABLE public.notes_a (id uuid PRIMARY KEY, author uuid NOT NULL, body text NOT NULL,
  is_public boolean NOT NULL DEFAULT false, team_id integer);
CREATE TABLE public.notes_b (id uuid PRIMARY KEY, owner_id uuid NOT NULL, body text NOT NULL,
  is_public boolean NOT NULL DEFAULT false, team_id integer);
CREATE TABLE public.notes_c (id uuid PRIMARY KEY, owner_id uuid NOT NULL, body text NOT NULL,
  is_public boolean NOT NULL DEFAULT false, team_id integer);
CREATE TABLE public.profiles_main (id uuid PRIMARY KEY, user_id uuid, display_name text, team_id integer,
  is_public boolean NOT NULL DEFAULT false);
CREATE TABLE public.profiles_copy (id uuid PRIMARY KEY, uid uuid, display_name text, team_id integer,
  is_public boolean NOT NULL DEFAULT false, legacy_flag boolean);
CREATE TABLE public.team_members (team_id integer NOT NULL, user_id uuid NOT NULL);
"""

# What Supabase sets for the `postgres` role in every project (supabase/postgres migrations).
SUPABASE_DEFAULT_PRIVILEGES = """
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
"""

USERS = [uuid.UUID(int=n) for n in range(1, 6)]


def _ensure_supabase_roles(admin_dsn: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for role, options in SUPABASE_ROLE_OPTIONS.items():
            conn.execute(
                sql.SQL("DO $$ BEGIN CREATE ROLE {} {}; EXCEPTION WHEN duplicate_object THEN NULL; END $$").format(
                    sql.Identifier(role), sql.SQL(options)
                )
            )


@pytest.fixture
def own_roles(admin_dsn: str) -> Iterator[dict[str, str]]:
    """Roles only this test uses: `reader` (every source), `partial` (one source), `nobody` (only PUBLIC)."""
    names = {kind: f"ds_access_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("reader", "partial", "nobody")}
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    yield names
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def supabase_db(admin_dsn: str, own_roles: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Plan]]:
    _ensure_supabase_roles(admin_dsn)
    plan_path = tmp_path / "dualshift.toml"
    plan_path.write_text(PLAN)
    with fresh_database(admin_dsn, "dualshift_access") as url:
        try:
            yield url, load_plan(plan_path)
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                for name in own_roles.values():
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))


def _setup(conn: psycopg.Connection, supabase_defaults: bool) -> None:
    if supabase_defaults:
        conn.execute(SUPABASE_DEFAULT_PRIVILEGES)
    conn.execute(SCHEMA)


def _fill(conn: psycopg.Connection, rows_per_source: int = 60) -> None:
    rng = random.Random(11)
    for team in (1, 2, 3):
        for user in rng.sample(USERS[:4], 2):
            conn.execute("INSERT INTO public.team_members VALUES (%s, %s)", (team, user))
    for table, owner in (("notes_a", "author"), ("notes_b", "owner_id"), ("notes_c", "owner_id")):
        for _ in range(rows_per_source):
            body = rng.choice(["draft: ", "note: "]) + uuid.uuid4().hex[:6]
            conn.execute(
                sql.SQL("INSERT INTO {} (id, {}, body, is_public, team_id) VALUES (%s, %s, %s, %s, %s)").format(
                    sql.Identifier("public", table), sql.Identifier(owner)
                ),
                (uuid.uuid4(), rng.choice(USERS), body, rng.random() < 0.3, rng.choice([1, 2, 3, None])),
            )
    for _ in range(40):
        row = (uuid.uuid4(), rng.choice(USERS), uuid.uuid4().hex[:8], rng.choice([1, 2, 3]), rng.random() < 0.5)
        conn.execute("INSERT INTO public.profiles_main VALUES (%s, %s, %s, %s, %s)", row)
        conn.execute("INSERT INTO public.profiles_copy VALUES (%s, %s, %s, %s, %s, true)", row)


# ─── grants ──────────────────────────────────────────────────────────────────────────────────


def _grant_scenario(conn: psycopg.Connection, roles: dict[str, str]) -> None:
    reader, partial = (sql.Identifier(roles[k]) for k in ("reader", "partial"))
    statements = [
        sql.SQL("GRANT SELECT ON public.notes_a, public.notes_b, public.notes_c TO anon, authenticated, {}").format(
            reader
        ),
        sql.SQL("GRANT SELECT ON public.notes_a TO {}").format(partial),
        sql.SQL("GRANT INSERT ON public.notes_a, public.notes_b TO anon"),
        # anon may not touch notes_c at all (under the defaults, it had ALL)
        sql.SQL("REVOKE ALL ON public.notes_c FROM anon"),
        # authenticated reads notes_b through a column grant only, one column (author → owner_id) renamed
        sql.SQL("REVOKE SELECT ON public.notes_b FROM authenticated"),
        sql.SQL("GRANT SELECT (id, owner_id, body) ON public.notes_b TO authenticated"),
        sql.SQL("GRANT UPDATE (body) ON public.notes_a, public.notes_b, public.notes_c TO authenticated"),
        sql.SQL("REVOKE UPDATE ON public.notes_c FROM authenticated"),
        sql.SQL("GRANT UPDATE (body, is_public) ON public.notes_c TO authenticated"),
        sql.SQL("GRANT REFERENCES ON public.notes_a, public.notes_b TO PUBLIC"),
        sql.SQL("GRANT TRIGGER ON public.notes_a, public.notes_b, public.notes_c TO PUBLIC"),
        sql.SQL("GRANT INSERT, UPDATE ON public.profiles_main, public.profiles_copy TO {}").format(reader),
    ]
    for statement in statements:
        conn.execute(statement)


def _has(conn: psycopg.Connection, function: str, *args: object) -> bool:
    return conn.execute(f"SELECT pg_catalog.{function}({', '.join(['%s'] * len(args))})", args).fetchone()[0]


def _assert_intersection(conn: psycopg.Connection, plan: Plan, role: str) -> dict[str, set[str]]:
    """For each table privilege and each column privilege: the new table's equals the sources' intersection."""
    held: dict[str, set[str]] = {}
    for table in plan.tables:
        new = f"public.{table.name}"
        sources = [
            (f"public.{s.table}", {n: o for o, n in table.column_mapping(s.table).items()}) for s in table.sources
        ]
        for privilege in PRIVILEGES:
            expected = all(_has(conn, "has_table_privilege", role, s, privilege) for s, _ in sources)
            actual = _has(conn, "has_table_privilege", role, new, privilege)
            assert actual == expected, (role, new, privilege)
            if actual:
                held.setdefault(table.name, set()).add(privilege)
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (new,),
            )
        ]
        for column in columns:
            for privilege in COLUMN_PRIVILEGES:
                expected = all(
                    _has(conn, "has_table_privilege", role, s, privilege)
                    or (column in old and _has(conn, "has_column_privilege", role, s, old[column], privilege))
                    for s, old in sources
                )
                actual = _has(conn, "has_column_privilege", role, new, column, privilege)
                assert actual == expected, (role, new, column, privilege)
                if actual:
                    held.setdefault(table.name, set()).add(f"{privilege}({column})")
    return held


@pytest.mark.parametrize("supabase_defaults", [True, False], ids=["supabase-default-privileges", "plain-grants"])
def test_grants_on_new_tables_are_the_intersection_of_the_sources(
    supabase_db, own_roles: dict[str, str], supabase_defaults: bool
) -> None:
    url, plan = supabase_db
    with psycopg.connect(url, autocommit=True) as conn:
        _setup(conn, supabase_defaults)
        _grant_scenario(conn, own_roles)
        Executor(connect(url), plan, url).create()
        roles = [*SUPABASE_ROLES, *own_roles.values()]
        held = {role: _assert_intersection(conn, plan, role) for role in roles}
        # anon had nothing on notes_c: it gets on notes only what PUBLIC has, however the defaults were set
        assert held["anon"]["notes"] == {"TRIGGER"}
        assert held[own_roles["reader"]]["notes"] >= {"SELECT"}
        assert not {"INSERT", "UPDATE", "DELETE"} & held[own_roles["reader"]]["notes"]
        assert held[own_roles["partial"]]["notes"] == {"TRIGGER"}  # the intersection: see README, compatibility views
        # column grants intersect through the rename: notes_b granted SELECT on id, owner_id, body
        authenticated = held["authenticated"]["notes"]
        assert {"SELECT(note_id)", "SELECT(owner_id)", "SELECT(body)"} <= authenticated
        assert "SELECT(is_public)" not in authenticated and "SELECT" not in authenticated
        assert "UPDATE(body)" in authenticated and "UPDATE(team_id)" not in authenticated
        # notes_c allows UPDATE of body and is_public; the defaults gave UPDATE on all of notes_a and notes_b
        assert ("UPDATE(is_public)" in authenticated) == supabase_defaults
        # PUBLIC is a grantee like any other: TRIGGER on all three sources, REFERENCES on two
        assert held[own_roles["nobody"]]["notes"] == {"TRIGGER"}
        if supabase_defaults:
            assert {"INSERT", "DELETE", "TRUNCATE"} <= held["service_role"]["notes"]
        # the identity sequence: USAGE exactly where INSERT is granted, nothing else
        sequence = conn.execute("SELECT pg_get_serial_sequence('public.notes', 'id')").fetchone()[0]
        for role in roles:
            inserts = _has(conn, "has_any_column_privilege", role, "public.notes", "INSERT")
            assert _has(conn, "has_sequence_privilege", role, sequence, "USAGE") == inserts, role
            assert not _has(conn, "has_sequence_privilege", role, sequence, "UPDATE"), role


def test_a_dry_run_shows_the_revokes_the_default_privileges_call_for(supabase_db) -> None:
    url, plan = supabase_db
    with psycopg.connect(url, autocommit=True) as conn:
        _setup(conn, supabase_defaults=True)
        statements = Executor(connect(url), plan, url, dry_run=True).create()["statements"]
        assert 'REVOKE ALL ON TABLE "public"."notes" FROM "anon", "authenticated", "service_role"' in statements
        assert (
            'REVOKE ALL ON SEQUENCE "public"."notes_id_seq" FROM "anon", "authenticated", "service_role"' in statements
        )
        assert conn.execute("SELECT to_regclass('public.notes')").fetchone()[0] is None


# ─── row level security ──────────────────────────────────────────────────────────────────────

POLICIES = """
ALTER TABLE public.notes_a ENABLE ROW LEVEL SECURITY;
CREATE POLICY "own notes" ON public.notes_a FOR ALL TO authenticated USING (author = auth.uid());
CREATE POLICY "public notes" ON public.notes_a FOR SELECT TO anon, authenticated USING (is_public);
CREATE POLICY "no drafts" ON public.notes_a AS RESTRICTIVE FOR SELECT TO authenticated
  USING (body NOT LIKE 'draft%');
ALTER TABLE public.notes_b ENABLE ROW LEVEL SECURITY;
CREATE POLICY "team notes" ON public.notes_b FOR SELECT TO authenticated
  USING (EXISTS (SELECT 1 FROM public.team_members m WHERE m.team_id = notes_b.team_id AND m.user_id = auth.uid()));
CREATE POLICY "own insert" ON public.notes_b FOR INSERT TO authenticated WITH CHECK (owner_id = auth.uid());
ALTER TABLE public.profiles_main ENABLE ROW LEVEL SECURITY;
CREATE POLICY "visible" ON public.profiles_main FOR SELECT TO anon, authenticated
  USING (is_public OR user_id = auth.uid());
ALTER TABLE public.profiles_copy ENABLE ROW LEVEL SECURITY;
CREATE POLICY "team" ON public.profiles_copy FOR SELECT TO authenticated
  USING (team_id IN (SELECT m.team_id FROM public.team_members m WHERE m.user_id = auth.uid()));
"""

VIEWERS = [("anon", None), *[("authenticated", str(u)) for u in USERS], ("service_role", None)]


def _visible(conn: psycopg.Connection, role: str, sub: str | None, query: sql.Composable) -> set | None:
    """What `role` sees, as PostgREST runs a request: SET LOCAL ROLE and the JWT claims in the transaction.
    None: permission denied."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        claims = {"role": role, **({"sub": sub} if sub else {})}
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        try:
            with conn.transaction():
                return {row[0] for row in conn.execute(query)}
        except psycopg.errors.InsufficientPrivilege:
            return None


def _ids(table: str, key: str = "id", where: str = "true") -> sql.Composable:
    return sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.Identifier(key), sql.Identifier("public", table), sql.SQL(where)
    )


def test_each_role_sees_through_the_new_table_the_rows_each_source_showed_it(
    supabase_db, own_roles: dict[str, str]
) -> None:
    url, plan = supabase_db
    partial = own_roles["partial"]  # may read notes_a only, and there only team 1's notes
    with psycopg.connect(url, autocommit=True) as conn:
        _setup(conn, supabase_defaults=True)
        conn.execute(POLICIES)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public, auth TO {}").format(sql.Identifier(partial)))
        conn.execute(sql.SQL("GRANT SELECT ON public.notes_a TO {}").format(sql.Identifier(partial)))
        conn.execute(
            sql.SQL('CREATE POLICY "team one" ON public.notes_a FOR SELECT TO {} USING (team_id = 1)').format(
                sql.Identifier(partial)
            )
        )
        _fill(conn)
        notes = plan.table("notes")
        viewers = [*VIEWERS, (partial, None)]
        before = {
            viewer: {s.table: _visible(conn, *viewer, _ids(s.table)) for t in plan.tables for s in t.sources}
            for viewer in viewers
        }
        executor = Executor(connect(url), plan, url)
        executor.create()
        executor.backfill(BackfillOptions())
        assert conn.execute("SELECT count(*) FROM public.notes").fetchone()[0] == 180
        forced = conn.execute(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.notes'::regclass"
        )
        assert forced.fetchone() == (True, False)
        seen_any = 0
        for viewer in VIEWERS:  # the roles that could read every source
            for source in notes.sources:
                after = _visible(conn, *viewer, _ids("notes", "note_id", notes.partition_predicate(source.table)))
                assert after == before[viewer][source.table], (viewer, source.table)
                seen_any += len(after)
            # twins with different policies: a profile is visible when both twins showed it
            expected = before[viewer]["profiles_main"] & before[viewer]["profiles_copy"]
            assert _visible(conn, *viewer, _ids("profiles")) == expected, viewer
        assert seen_any > 0
        # the notes_c rows (no RLS there) stay visible to every role that may read notes_c
        assert len(before[("anon", None)]["notes_c"]) == 60
        # a restrictive policy of one source does not hide another source's rows
        drafts_b = _visible(
            conn, "authenticated", str(USERS[0]), _ids("notes", "note_id", "origin = 'b' AND body LIKE 'draft%'")
        )
        assert drafts_b, "some team notes of notes_b are drafts and stay visible"
        # a role that could read only some sources has nothing on the new table (the grant intersection) ...
        assert before[(partial, None)]["notes_a"] and before[(partial, None)]["notes_b"] is None
        assert _visible(conn, partial, None, _ids("notes", "note_id")) is None
        # ... but a view running with its owner's rights, filtered by source_row_filter, gives every role
        # exactly the rows of that source it saw before: the design the compatibility views can take
        for table in plan.tables:
            for source in table.sources:
                view = sql.Identifier("public", f"{source.table}_as_before")
                row_filter = source_row_filter(conn, plan, table, source.table)
                conn.execute(
                    sql.SQL("CREATE VIEW {} AS SELECT {} AS id FROM {} WHERE {}").format(
                        view, sql.Identifier(table.key[0]), sql.Identifier("public", table.name), sql.SQL(row_filter)
                    )
                )
                grantees = sql.SQL(", ").join(map(sql.Identifier, [*SUPABASE_ROLES, partial]))
                conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(view, grantees))
                for viewer in viewers:
                    if before[viewer][source.table] is None:
                        continue  # the view's own grants are the views' module's business
                    shown = _visible(conn, *viewer, sql.SQL("SELECT id FROM {}").format(view))
                    assert shown == before[viewer][source.table], (viewer, source.table)


def test_writes_are_checked_by_the_policies_of_the_rows_source(supabase_db) -> None:
    url, plan = supabase_db
    with psycopg.connect(url, autocommit=True) as conn:
        _setup(conn, supabase_defaults=True)
        conn.execute(POLICIES)
        conn.execute("ALTER TABLE public.notes_b FORCE ROW LEVEL SECURITY")
        Executor(connect(url), plan, url).create()
        forced = "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.notes'::regclass"
        assert conn.execute(forced).fetchone() == (True, True)  # one source forces it: so does the new table
        insert = "INSERT INTO public.notes (note_id, owner_id, body, origin) VALUES (gen_random_uuid(), %s, 'x', %s)"
        me, other = str(USERS[0]), str(USERS[1])
        for origin in ("a", "b"):  # notes_a's FOR ALL policy and notes_b's INSERT policy: own rows only
            with conn.transaction():
                conn.execute("SET LOCAL ROLE authenticated")
                conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": me}),))
                conn.execute(insert, (me, origin))
                with (
                    pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
                    conn.transaction(),
                ):
                    conn.execute(insert, (other, origin))
        with conn.transaction():  # notes_c had no RLS: authenticated may insert any row there
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute(insert, (other, "c"))
        conn.execute(insert, (other, "a"))  # as the owner: someone else's note in each partition
        conn.execute(insert, (other, "b"))
        with conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": me}),))
            updated = conn.execute("UPDATE public.notes SET body = 'edited' RETURNING origin, owner_id::text")
            # notes_a: its FOR ALL policy, own note only; notes_b: no UPDATE policy, none; notes_c: no RLS, all
            assert sorted(updated.fetchall()) == [("a", me), ("c", other)]


# ─── policy expressions through the plan's renames ──────────────────────────────────────────


def test_policy_expressions_are_rewritten_to_the_new_columns() -> None:
    mapping = {"id": "note_id", "author": "owner_id", "team_id": "team_id"}
    assert rewrite_expression("(author = auth.uid())", "notes_a", "notes", mapping, set()) == "owner_id = auth.uid()"
    rewritten = rewrite_expression(
        "(EXISTS ( SELECT 1 FROM team_members m WHERE ((m.team_id = notes_a.team_id) AND (m.user_id = notes_a.author))))",
        "notes_a",
        "notes",
        mapping,
        {"notes_b"},
    )
    assert "notes.team_id" in rewritten and "notes.owner_id" in rewritten and "m.user_id" in rewritten
    assert "notes_a" not in rewritten
    with pytest.raises(RewriteError, match="column legacy_flag"):
        rewrite_expression("legacy_flag", "notes_a", "notes", mapping, set())
    with pytest.raises(RewriteError, match="reads table notes_b"):
        rewrite_expression("(id IN (SELECT notes_b.id FROM notes_b))", "notes_a", "notes", mapping, {"notes_b"})
    with pytest.raises(RewriteError, match="whole row"):
        rewrite_expression("(EXISTS (SELECT 1 WHERE row(notes_a.*) IS NOT NULL))", "notes_a", "notes", mapping, set())


def test_a_policy_that_cannot_be_carried_over_stops_create_with_nothing_created(supabase_db) -> None:
    url, plan = supabase_db
    with psycopg.connect(url, autocommit=True) as conn:
        _setup(conn, supabase_defaults=True)
        conn.execute("ALTER TABLE public.profiles_copy ENABLE ROW LEVEL SECURITY")
        conn.execute('CREATE POLICY "legacy only" ON public.profiles_copy FOR SELECT TO anon USING (legacy_flag)')
        with pytest.raises(ExecutorError, match=r"policy 'legacy only' on public.profiles_copy .*column legacy_flag"):
            Executor(connect(url), plan, url).create()
        assert conn.execute("SELECT to_regclass('public.notes'), to_regclass('public.profiles')").fetchone() == (
            None,
            None,
        )


def test_twins_with_the_same_policies_after_renames_get_them_copied(supabase_db) -> None:
    url, plan = supabase_db
    with psycopg.connect(url, autocommit=True) as conn:
        _setup(conn, supabase_defaults=True)
        conn.execute(
            """
            ALTER TABLE public.profiles_main ENABLE ROW LEVEL SECURITY;
            ALTER TABLE public.profiles_copy ENABLE ROW LEVEL SECURITY;
            CREATE POLICY "mine" ON public.profiles_main FOR ALL TO authenticated USING (user_id = auth.uid());
            CREATE POLICY "mine" ON public.profiles_copy FOR ALL TO authenticated USING (uid = auth.uid());
            """
        )
        Executor(connect(url), plan, url).create()
        policies = conn.execute(
            "SELECT policyname, permissive, roles, cmd, qual FROM pg_policies WHERE tablename = 'profiles'"
        ).fetchall()
        assert policies == [("mine", "PERMISSIVE", ["authenticated"], "ALL", "(user_id = auth.uid())")]


def test_a_new_table_without_an_id_key_can_join_the_realtime_publication(admin_dsn: str) -> None:
    """fixtures/supabase declares its own `id` on content_queue (mapped from content_metadata's, for
    `RETURNING id`): no primary key, so the key is the replica identity, or every UPDATE and DELETE of
    the table fails once cleanup adds it to supabase_realtime."""
    from .supabase_scenario import loaded_database, migrate_here

    with loaded_database(admin_dsn, rows=40) as url:
        assert migrate_here(url, "create").ok
        with psycopg.connect(url, autocommit=True) as conn:
            identity = conn.execute("SELECT relreplident FROM pg_class WHERE oid = 'public.content_queue'::regclass")
            assert identity.fetchone()[0] == "i"
            conn.execute("ALTER PUBLICATION supabase_realtime ADD TABLE public.content_queue")
            conn.execute("INSERT INTO public.content_queue (content) VALUES ('realtime')")
            assert conn.execute("UPDATE public.content_queue SET status = 'ready'").rowcount == 1
            assert conn.execute("DELETE FROM public.content_queue").rowcount == 1
