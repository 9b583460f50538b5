"""The views under the old names after cleanup: the old shape, each source's own rows, writes as before.

Every test does the cleanup move itself (old tables to the archive, compatibility views under the old
names), so the views are tested whatever shape `cleanup.run` has.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from dualshift.executor import views
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.catalog import SourceMapping, validate
from dualshift.executor.connection import connect
from dualshift.executor.phases import Executor
from dualshift.plan import Plan, load_plan

from .conftest import PLAN


def filled(dsn: str, plan: Plan) -> dict[tuple[str, str], SourceMapping]:
    """create and backfill: the new tables beside the old ones, holding every row."""
    ex = Executor(connect(dsn), plan, dsn)
    ex.create()
    ex.backfill(BackfillOptions(batch_size=2000))
    mappings = validate(ex.conn, plan)
    ex.conn.close()
    return mappings


def move(conn: psycopg.Connection, plan: Plan, mappings: dict, around=None) -> None:
    """The cleanup move in one transaction: old tables to the archive, the compatibility views in their place.
    `around(conn, moved)` runs before (moved=False) and after (moved=True) the move, inside it."""
    with conn.transaction():
        if around:
            around(conn, False)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(plan.archive_schema)))
        for table in plan.tables:
            for source in table.sources:
                conn.execute(
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(source.schema, source.table), sql.Identifier(plan.archive_schema)
                    )
                )
        for statement in views.owner_statements(conn, plan):
            conn.execute(statement)
        for table in plan.tables:
            for source in table.sources:
                for statement in views.compat_view_statements(conn, plan, mappings[(table.name, source.table)]):
                    conn.execute(statement)
        if around:
            around(conn, True)


def shape(conn: psycopg.Connection, schema: str, name: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        (schema, name),
    ).fetchall()


def one(conn: psycopg.Connection, query: str, *params):
    return conn.execute(query, params or None).fetchone()[0]


@pytest.fixture
def xbot(dsn: str, db: psycopg.Connection) -> Plan:
    plan = load_plan(PLAN)
    # Old types that differ from the plan's: old code compares decision_id with text, reads a naive timestamp.
    db.execute("ALTER TABLE posts ALTER COLUMN decision_id TYPE text, ALTER COLUMN posted_at TYPE timestamp")
    # A mixed-case enum where the new table has text.
    db.execute(
        """CREATE TYPE public."PostStatus" AS ENUM ('queued', 'posted', 'failed');
        ALTER TABLE content_metadata ALTER COLUMN status DROP DEFAULT,
          ALTER COLUMN status TYPE public."PostStatus" USING status::public."PostStatus",
          ALTER COLUMN status SET DEFAULT 'queued'"""
    )
    mappings = filled(dsn, plan)
    move(db, plan, mappings)
    return plan


def test_each_view_has_the_old_columns_types_and_order(xbot: Plan, db: psycopg.Connection) -> None:
    for table in xbot.tables:
        for source in table.sources:
            assert shape(db, "public", source.table) == shape(db, xbot.archive_schema, source.table), source.table
            options = one(db, "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", f"public.{source.table}")
            assert options == ["security_barrier=true"]
    # A dropped column is there and NULL; an old type is kept and compares with text as before.
    assert one(db, "SELECT count(*) FROM content_generation_metadata_comprehensive WHERE features IS NOT NULL") == 0
    decision = one(db, "SELECT decision_id FROM posted_content WHERE source_table = 'posts' LIMIT 1")
    assert one(db, "SELECT count(*) FROM posts WHERE decision_id = %s::text", str(decision)) == 1
    naive = one(db, "SELECT posted_at FROM posts WHERE decision_id = %s::text", str(decision))
    assert naive.tzinfo is None
    assert naive == one(db, "SELECT posted_at AT TIME ZONE 'UTC' FROM posted_content WHERE decision_id = %s", decision)
    assert ("status", '"PostStatus"') in shape(db, "public", "content_metadata")
    posted = one(db, """SELECT count(*) FROM content_metadata WHERE status = 'posted'::"PostStatus" """)
    assert posted == one(db, "SELECT count(*) FROM content_queue WHERE status = 'posted'") > 0


def test_each_old_name_shows_its_own_rows(xbot: Plan, db: psycopg.Connection) -> None:
    for name in ("posted_content", "engagement_metrics"):
        table = xbot.table(name)
        assert table.sources_are == "partitions"
        total = one(db, f"SELECT count(*) FROM {name}")
        seen = 0
        for source in table.sources:
            predicate = table.partition_predicate(source.table)
            through_view = one(db, f'SELECT count(*) FROM "{source.table}"')
            assert through_view == one(db, f"SELECT count(*) FROM {name} WHERE {predicate}") > 0, source.table
            seen += through_view
        assert seen == total  # every row shows under exactly one old name
    # Twins: both content tables show every row of content_queue.
    rows = one(db, "SELECT count(*) FROM content_queue")
    assert one(db, "SELECT count(*) FROM content_metadata") == rows == 3900
    assert one(db, "SELECT count(*) FROM content_generation_metadata_comprehensive") == rows
    # The rest: outcomes owns the rows of no constant source, tweet_metrics its own.
    assert one(db, "SELECT count(*) FROM outcomes WHERE data_source IS NOT NULL") == 0
    assert one(db, "SELECT count(*) FROM engagement_metrics WHERE data_source = 'tweet_metrics'") == one(
        db, "SELECT count(*) FROM tweet_metrics"
    )


def test_a_single_row_update_through_a_partition_changes_one_row(xbot: Plan, db: psycopg.Connection) -> None:
    before = dict(db.execute("SELECT id, row_to_json(m)::text FROM engagement_metrics m").fetchall())
    tweet, measured = db.execute("SELECT tweet_id, measured_at FROM tweet_metrics ORDER BY tweet_id LIMIT 1").fetchone()
    # This tweet also has rows from other sources; only tweet_metrics' row may change.
    assert one(db, "SELECT count(DISTINCT data_source) FROM engagement_metrics WHERE tweet_id = %s", tweet) >= 1
    updated = db.execute(
        "UPDATE tweet_metrics SET like_count = like_count + 1000 WHERE tweet_id = %s RETURNING like_count, measured_at",
        (tweet,),
    ).fetchall()
    assert len(updated) == 1 and updated[0][1] == measured
    after = dict(db.execute("SELECT id, row_to_json(m)::text FROM engagement_metrics m").fetchall())
    changed = [key for key in before if before[key] != after[key]]
    assert len(changed) == 1 and before.keys() == after.keys()
    assert one(db, "SELECT data_source FROM engagement_metrics WHERE id = %s", changed[0]) == "tweet_metrics"
    # A delete through the view takes only that source's row.
    other = one(
        db,
        "SELECT count(*) FROM engagement_metrics WHERE tweet_id = %s AND data_source IS DISTINCT FROM 'tweet_metrics'",
        tweet,
    )
    assert db.execute("DELETE FROM tweet_metrics WHERE tweet_id = %s", (tweet,)).rowcount == 1
    assert one(db, "SELECT count(*) FROM engagement_metrics WHERE tweet_id = %s", tweet) == other


def test_a_write_through_a_view_that_reaches_no_row_reports_none(xbot: Plan, db: psycopg.Connection) -> None:
    """An UPDATE or DELETE the new table skips (here its own BEFORE trigger) is no row written through the view."""
    tweet = one(db, "SELECT tweet_id FROM tweet_metrics ORDER BY tweet_id LIMIT 1")
    db.execute(
        "CREATE FUNCTION public.skip_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;"
        " CREATE TRIGGER skip_row BEFORE UPDATE OR DELETE ON public.engagement_metrics"
        " FOR EACH ROW EXECUTE FUNCTION public.skip_row()"
    )
    assert db.execute("UPDATE tweet_metrics SET like_count = 7 WHERE tweet_id = %s", (tweet,)).rowcount == 0
    assert db.execute("DELETE FROM tweet_metrics WHERE tweet_id = %s", (tweet,)).rowcount == 0
    assert one(db, "SELECT count(*) FROM tweet_metrics WHERE tweet_id = %s", tweet) == 1


def test_inserts_through_a_view_add_the_source_constants_and_return_the_old_row(
    xbot: Plan, db: psycopg.Connection
) -> None:
    decision = uuid.uuid4()
    row = db.execute(
        "INSERT INTO tweets (tweet_id, decision_id, text, url) VALUES ('t-new', %s, 'hello', 'https://x/1')"
        " RETURNING id, tweet_id, text, posted_at",
        (decision,),
    ).fetchone()
    assert row[0] is None  # tweets.id was dropped by the plan: the new table numbers its own rows
    assert row[1:3] == ("t-new", "hello") and row[3] is not None  # the old default now() filled posted_at
    landed = db.execute(
        "SELECT source_table, decision_type, content, tweet_url FROM posted_content WHERE decision_id = %s", (decision,)
    ).fetchone()
    assert landed == ("tweets", "single", "hello", "https://x/1")
    assert one(db, "SELECT count(*) FROM tweets WHERE tweet_id = 't-new'") == 1
    assert one(db, "SELECT count(*) FROM posts WHERE tweet_id = 't-new'") == 0
    # The old defaults: content_metadata's decision_type and decision_id, as the old table gave them.
    decision_id, decision_type = db.execute(
        "INSERT INTO content_metadata (content) VALUES ('draft via view') RETURNING decision_id, decision_type"
    ).fetchone()
    assert decision_type == "single" and decision_id is not None
    assert one(db, "SELECT status FROM content_queue WHERE decision_id = %s", decision_id) == "queued"
    db.execute("UPDATE content_metadata SET status = 'failed' WHERE decision_id = %s", (decision_id,))
    assert one(db, "SELECT status FROM content_queue WHERE decision_id = %s", decision_id) == "failed"
    # An old text column takes text, lands as uuid, and comes back as text.
    text_id = str(uuid.uuid4())
    returned = one(
        db,
        "INSERT INTO posts (decision_id, tweet_id, content, posted_at) VALUES (%s, 't-p', 'c', '2026-12-01 10:00')"
        " RETURNING decision_id",
        text_id,
    )
    assert returned == text_id
    assert str(one(db, "SELECT posted_at FROM posted_content WHERE decision_id = %s::uuid", text_id)).startswith(
        "2026-12-01 10:00:00+00"
    )


def test_a_write_outside_the_partition_is_refused(xbot: Plan, db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="falls outside the rows of source outcomes"):
        db.execute(
            "INSERT INTO outcomes (decision_id, tweet_id, data_source) VALUES (gen_random_uuid(), 't-x', 'tweet_metrics')"
        )
    assert one(db, "SELECT count(*) FROM engagement_metrics WHERE tweet_id = 't-x'") == 0


def test_view_writes_refuse_names_the_view_and_the_setting(dsn: str, db: psycopg.Connection) -> None:
    plan = load_plan(PLAN)
    posted = plan.table("posted_content")
    refusing = replace(
        posted, sources=tuple(replace(s, view_writes="refuse") if s.table == "posts" else s for s in posted.sources)
    )
    plan = replace(plan, tables=tuple(refusing if t.name == "posted_content" else t for t in plan.tables))
    move(db, plan, filled(dsn, plan))
    with pytest.raises(
        psycopg.errors.FeatureNotSupported, match=r'view public\.posts are refused: .*view_writes = "refuse"'
    ):
        db.execute("UPDATE posts SET content = 'x' WHERE tweet_id = 't1'")
    assert one(db, "SELECT count(*) FROM posts") > 0  # reads still work
    db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-ok', gen_random_uuid(), 'fine')")


@pytest.fixture
def two_roles(db: psycopg.Connection):
    """A role with explicit grants and one that only Supabase-style default privileges would reach."""
    suffix = uuid.uuid4().hex[:8]
    roles = (f"views_reader_{suffix}", f"views_defaulted_{suffix}")
    for role in roles:
        db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    try:
        yield roles
    finally:
        for role in roles:
            db.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role)))


def test_views_carry_the_old_grants_and_no_more(dsn: str, db: psycopg.Connection, two_roles) -> None:
    reader, defaulted = map(sql.Identifier, two_roles)
    db.execute(sql.SQL("GRANT SELECT ON tweets TO {0}; GRANT SELECT, DELETE ON posts TO {0}").format(reader))
    db.execute(sql.SQL("GRANT UPDATE (content) ON posts TO {}").format(reader))
    db.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {}").format(defaulted))
    plan = load_plan(PLAN)
    move(db, plan, filled(dsn, plan))
    granted = db.execute(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = %s AND table_schema = 'public' AND table_name = ANY(%s) ORDER BY 1, 2",
        (two_roles[0], list(plan.old_tables)),
    ).fetchall()
    assert granted == [("posts", "DELETE"), ("posts", "SELECT"), ("tweets", "SELECT")]
    assert db.execute(
        "SELECT table_name, column_name, privilege_type FROM information_schema.column_privileges"
        " WHERE grantee = %s AND privilege_type = 'UPDATE' AND table_schema = 'public'",
        (two_roles[0],),
    ).fetchall() == [("posts", "content", "UPDATE")]
    # Default privileges gave the new views ALL for the second role: taken back, it had nothing before.
    assert (
        one(
            db,
            "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = %s AND table_name = ANY(%s)",
            two_roles[1],
            list(plan.old_tables),
        )
        == 0
    )
    # The old grants hold at the view, whatever the new table grants (nothing: tweets and the other sources
    # do not grant the reader the same): what it could do works, what it could not is refused.
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(reader))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            db.execute("SELECT count(*) FROM posted_content")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            db.execute("UPDATE posts SET topic = 'not granted' WHERE tweet_id = 't1'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-no', gen_random_uuid(), 'x')")
        assert db.execute("UPDATE posts SET content = 'granted' WHERE tweet_id = 't1'").rowcount == 1
        assert db.execute("DELETE FROM posts WHERE tweet_id = 't1'").rowcount == 1
    assert one(db, "SELECT count(*) FROM posts WHERE tweet_id = 't1'") == 0
    # The trigger writes with its owner's rights: nobody but a trigger may run it.
    function = views.CompatView(
        plan, plan.table("posted_content"), plan.table("posted_content").source("posts"), (), (), None
    )
    assert not one(
        db, "SELECT has_function_privilege(%s, %s, 'EXECUTE')", two_roles[0], function.function.as_string(db) + "()"
    )


REFUSED_BY_POLICY = 'new row violates row-level security policy for table "tweets"'


@pytest.fixture
def policed(dsn: str, db: psycopg.Connection, two_roles) -> sql.Identifier:
    """The role may read, add and edit the old tweets table (nothing else), under that table's own policies:
    it sees and edits the t1… tweets, adds only t1… ones, may not write 'forbidden', deletes nothing."""
    plan = load_plan(PLAN)
    mappings = filled(dsn, plan)
    role = sql.Identifier(two_roles[0])
    db.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON tweets TO {}").format(role))
    db.execute("ALTER TABLE tweets ENABLE ROW LEVEL SECURITY")
    for policy in (
        "CREATE POLICY mine ON tweets FOR SELECT TO {} USING (tweet_id LIKE 't1%')",
        "CREATE POLICY edit ON tweets FOR UPDATE TO {} USING (tweet_id LIKE 't1%') WITH CHECK (text <> 'forbidden')",
        "CREATE POLICY add ON tweets FOR INSERT TO {} WITH CHECK (tweet_id LIKE 't1%')",
    ):
        db.execute(sql.SQL(policy).format(role))
    move(db, plan, mappings)
    return role


def test_the_old_tables_row_level_security_holds_through_its_view(policed: sql.Identifier, db: psycopg.Connection):
    mine = one(db, "SELECT count(*) FROM posted_content WHERE source_table = 'tweets' AND tweet_id LIKE 't1%'")
    assert 0 < mine < one(db, "SELECT count(*) FROM tweets")
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(policed))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            db.execute("SELECT count(*) FROM posted_content")  # the new table: not every source grants it
        assert one(db, "SELECT count(*) FROM tweets") == mine
        assert db.execute("UPDATE tweets SET text = 'seen'").rowcount == mine
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=REFUSED_BY_POLICY), db.transaction():
            db.execute("UPDATE tweets SET text = 'forbidden' WHERE tweet_id LIKE 't1%'")
        assert db.execute("DELETE FROM tweets").rowcount == 0  # no DELETE policy: nothing the role may delete
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=REFUSED_BY_POLICY), db.transaction():
            db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t9-new', gen_random_uuid(), 'x')")
        db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t1-new', gen_random_uuid(), 'added')")
    assert one(db, "SELECT count(*) FROM posted_content WHERE content = 'seen'") == mine
    assert one(db, "SELECT count(*) FROM posted_content WHERE tweet_id = 't1-new' AND source_table = 'tweets'") == 1
    assert one(db, "SELECT count(*) FROM posted_content WHERE tweet_id = 't9-new'") == 0


def test_a_write_through_the_view_is_checked_by_a_policy_that_reads_a_table_and_calls_a_function(
    dsn: str, db: psycopg.Connection, two_roles
) -> None:
    """The old table's policy reads a table behind row-level security and calls a function PUBLIC may not:
    the write trigger's role (the compat role, not the executor's) is given just those, so the policy
    decides as it did on the old table, for the role the session acts as."""
    plan = load_plan(PLAN)
    mappings = filled(dsn, plan)
    app = sql.Identifier(two_roles[0])
    db.execute("CREATE SCHEMA gate")
    db.execute("CREATE TABLE gate.allowed (prefix text PRIMARY KEY)")
    db.execute("INSERT INTO gate.allowed VALUES ('t1')")
    db.execute("ALTER TABLE gate.allowed ENABLE ROW LEVEL SECURITY")
    db.execute(
        "CREATE FUNCTION gate.prefix(t text) RETURNS text LANGUAGE sql IMMUTABLE"
        " SET search_path = pg_catalog AS $$ SELECT substr(t, 1, 2) $$"
    )
    db.execute("REVOKE EXECUTE ON FUNCTION gate.prefix(text) FROM PUBLIC")
    for grant in (
        "GRANT USAGE ON SCHEMA gate TO {}",
        "GRANT SELECT ON gate.allowed TO {}",
        "GRANT EXECUTE ON FUNCTION gate.prefix(text) TO {}",
        "CREATE POLICY app_reads ON gate.allowed FOR SELECT TO {} USING (true)",
        "GRANT SELECT, INSERT ON tweets TO {}",
        "CREATE POLICY seen ON tweets FOR SELECT TO {} USING (true)",
        "CREATE POLICY gated ON tweets FOR INSERT TO {}"
        " WITH CHECK (EXISTS (SELECT FROM gate.allowed a WHERE a.prefix = gate.prefix(tweet_id)))",
    ):
        db.execute(sql.SQL(grant).format(app))
    db.execute("ALTER TABLE tweets ENABLE ROW LEVEL SECURITY")
    move(db, plan, mappings)
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(app))
        db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t1-gated', gen_random_uuid(), 'in')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=REFUSED_BY_POLICY), db.transaction():
            db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t9-gated', gen_random_uuid(), 'x')")
    assert one(db, "SELECT count(*) FROM posted_content WHERE tweet_id LIKE '%-gated'") == 1
    compat = views.role_name(db, plan)
    assert db.execute(
        "SELECT pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.oid = 'dualshift_private.compat_public_tweets'::regproc"
    ).fetchone() == (compat,)
    assert db.execute(
        "SELECT has_schema_privilege(%s, 'gate', 'USAGE'), has_table_privilege(%s, 'gate.allowed', 'SELECT'),"
        " has_function_privilege(%s, 'gate.prefix(text)', 'EXECUTE'),"
        " EXISTS (SELECT FROM pg_policy WHERE polname = 'dualshift_compat' AND polrelid = 'gate.allowed'::regclass)",
        (compat, compat, compat),
    ).fetchone() == (True, True, True, True)


def test_a_callers_own_condition_never_sees_a_row_the_view_hides(policed: sql.Identifier, db: psycopg.Connection):
    """The view reads with its owner's rights: a cheap function of the caller's in WHERE must not run on the
    rows the old table's policies hid from it (security_barrier), or it could leak them."""
    db.execute(
        "CREATE FUNCTION pg_temp.peek(t text) RETURNS boolean LANGUAGE plpgsql COST 0.0001 AS"
        " $$BEGIN RAISE NOTICE 'peeked %', t; RETURN true; END$$"
    )
    seen: list[str] = []
    db.add_notice_handler(lambda notice: seen.append(notice.message_primary))
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(policed))
        db.execute("SELECT count(*) FROM tweets WHERE pg_temp.peek(tweet_id)").fetchone()
    assert seen and all(message.startswith("peeked t1") for message in seen), seen[:5]


def test_an_insert_through_a_partition_respects_precedence(xbot: Plan, db: psycopg.Connection) -> None:
    total = one(db, "SELECT count(*) FROM engagement_metrics")
    tweet, measured = db.execute("SELECT tweet_id, measured_at FROM tweet_metrics ORDER BY tweet_id LIMIT 1").fetchone()
    # outcomes comes first in the plan: a key tweet_metrics holds passes to outcomes, as backfill would have it.
    db.execute(
        "INSERT INTO outcomes (decision_id, tweet_id, likes, collected_at) VALUES (gen_random_uuid(), %s, 77, %s)",
        (tweet, measured),
    )
    assert one(db, "SELECT likes FROM outcomes WHERE tweet_id = %s AND collected_at = %s", tweet, measured) == 77
    assert one(db, "SELECT count(*) FROM tweet_metrics WHERE tweet_id = %s AND measured_at = %s", tweet, measured) == 0
    assert one(db, "SELECT count(*) FROM engagement_metrics") == total
    # The other way round the key stays outcomes': a duplicate, named, and nothing changes.
    with pytest.raises(psycopg.errors.UniqueViolation, match=r"Key \(tweet_id, collected_at\)=\(.*\) already exists"):
        db.execute(
            "INSERT INTO tweet_metrics (decision_id, tweet_id, like_count, measured_at) VALUES (gen_random_uuid(), %s, 1, %s)",
            (tweet, measured),
        )
    assert one(db, "SELECT likes FROM outcomes WHERE tweet_id = %s AND collected_at = %s", tweet, measured) == 77


KEPT_ID_PLAN = """
version = 1
name = "widgets-kept-id"

[schemas]
archive = "archive_widgets"

[[tables]]
name = "gadgets"
key = ["id"]
columns = [
  { name = "id", type = "bigint", nullable = false },
  { name = "name", type = "text", nullable = false },
  { name = "made_at", type = "timestamptz", nullable = false, default = "now()" },
  { name = "label", type = "text" },
]

  [[tables.sources]]
  table = "widgets"
  key = ["id"]

[dependents]
"sequence public.widgets_id_seq" = "archive"
"""


def test_identity_and_generated_columns_the_plan_keeps_work_through_the_view(
    dsn: str, db: psycopg.Connection, tmp_path, two_roles
) -> None:
    db.execute(
        "CREATE TABLE public.widgets (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,"
        " made_at timestamp NOT NULL DEFAULT '2026-06-01 12:00',"
        " label text GENERATED ALWAYS AS (upper(name) || '-' || id) STORED)"
    )
    db.execute("INSERT INTO public.widgets (name) SELECT 'w' || i FROM generate_series(1, 20) i")
    path = tmp_path / "dualshift.toml"
    path.write_text(KEPT_ID_PLAN)
    plan = load_plan(path)
    move(db, plan, filled(dsn, plan))
    assert shape(db, "public", "widgets") == [
        ("id", "bigint"),
        ("name", "text"),
        ("made_at", "timestamp without time zone"),
        ("label", "text"),
    ]
    new_id, made_at = db.execute("INSERT INTO widgets (name) VALUES ('fresh') RETURNING id, made_at").fetchone()
    assert new_id == 21  # the old identity's next value, no clash with the carried rows
    assert str(made_at) == "2026-06-01 12:00:00"  # the old default, in the old type
    assert one(db, "SELECT made_at FROM gadgets WHERE id = 21").isoformat() == "2026-06-01T12:00:00+00:00"
    assert db.execute("UPDATE widgets SET name = 'renamed' WHERE id = 21 RETURNING id, label").fetchone() == (
        21,
        "RENAMED-21",
    )
    # The old generated column is computed as the old table computed it, though the new table stores it.
    assert db.execute("SELECT name, label FROM gadgets WHERE id = 21").fetchone() == ("renamed", "RENAMED-21")
    assert one(db, "SELECT label FROM widgets WHERE id = 3") == "W3-3"  # carried by backfill
    # A role that may insert into widgets, and nothing on its identity's sequence, still may: as before.
    db.execute(sql.SQL("GRANT SELECT, INSERT ON widgets TO {}").format(sql.Identifier(two_roles[0])))
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(two_roles[0])))
        assert one(db, "INSERT INTO widgets (name) VALUES ('by a role') RETURNING id, label") == 22


def test_a_key_an_earlier_partition_holds_is_a_named_duplicate(xbot: Plan, db: psycopg.Connection) -> None:
    held = one(db, "SELECT decision_id FROM posted_content WHERE source_table = 'posted_decisions' LIMIT 1")
    with pytest.raises(psycopg.errors.UniqueViolation, match=r"through view public\.tweets: .* for tweets or a source"):
        db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-dup', %s, 'x')", (held,))
    assert one(db, "SELECT source_table FROM posted_content WHERE decision_id = %s", held) == "posted_decisions"
    # A key only posts (listed after tweets) holds passes to tweets.
    later = one(db, "SELECT decision_id FROM posted_content WHERE source_table = 'posts' LIMIT 1")
    db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-took', %s, 'mine')", (later,))
    assert db.execute(
        "SELECT source_table, content FROM posted_content WHERE decision_id = %s", (later,)
    ).fetchone() == ("tweets", "mine")


def test_an_insert_through_the_second_twins_view_merges_into_the_one_row(xbot: Plan, db: psycopg.Connection) -> None:
    """Twins are one entity: before cleanup the application wrote a decision to both twins; now the second
    insert lands on the row the first made, fills what only it knows and leaves the first twin's values."""
    key = uuid.uuid4()
    db.execute(
        "INSERT INTO content_metadata (decision_id, content, decision_type, angle) VALUES (%s, 'first', 'single', 'a1')",
        (key,),
    )
    returned = db.execute(
        "INSERT INTO content_generation_metadata_comprehensive (decision_id, content, angle, tone, predicted_engagement)"
        " VALUES (%s, 'second', 'a2', 'calm', 0.5) RETURNING content, tone",
        (key,),
    ).fetchone()
    assert returned == ("first", "calm")  # the one row, as the view shows it
    row = db.execute(
        "SELECT content, angle, tone, predicted_er FROM content_queue WHERE decision_id = %s", (key,)
    ).fetchall()
    assert [tuple(map(str, r)) for r in row] == [("first", "a1", "calm", "0.5000")]
    # The first twin wins a key the second inserted, as backfill's precedence has it.
    other = uuid.uuid4()
    db.execute(
        "INSERT INTO content_generation_metadata_comprehensive (decision_id, content, angle) VALUES (%s, 'second', 'a2')",
        (other,),
    )
    db.execute("INSERT INTO content_metadata (decision_id, content, angle) VALUES (%s, 'first', 'a1')", (other,))
    assert db.execute("SELECT content, angle FROM content_queue WHERE decision_id = %s", (other,)).fetchall() == [
        ("first", "a1")
    ]


def test_an_identity_the_plan_keeps_numbers_on_through_the_view_after_finalize(admin_dsn: str, tmp_path) -> None:
    """fixtures/supabase maps content_metadata's identity `id`: `RETURNING id` through the view gives the
    old numbering after cleanup, and after `finalize` dropped the archive (and the sequence with it)."""
    from .supabase_scenario import loaded_database, migrate_here

    insert = (
        "INSERT INTO public.content_metadata (content) VALUES ('numbered') RETURNING id",
        "SELECT max(id) FROM public.content_metadata",
    )
    with loaded_database(admin_dsn, rows=40) as url, psycopg.connect(url, autocommit=True) as conn:
        highest = one(conn, insert[1])
        for args in (
            ("create",),
            ("backfill",),
            ("verify",),
            ("switch-reads", "100"),
            ("cleanup", "--backup-dir", str(tmp_path)),
        ):
            assert migrate_here(url, *args).ok, args
        cleaned = one(conn, insert[0])
        assert cleaned == highest + 1
        assert migrate_here(url, "finalize").ok
        assert one(conn, "SELECT to_regclass('archive_supabase.content_metadata')") is None
        assert one(conn, insert[0]) == cleaned + 1
        assert one(conn, "SELECT count(*) FROM public.content_queue WHERE id = %s", cleaned + 1) == 1
