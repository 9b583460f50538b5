"""The rest of the schema after cleanup: views, foreign keys, triggers and publications follow the rows."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from psycopg import sql

from dualshift.executor import dependents
from dualshift.plan import Plan, load_plan

from .conftest import PLAN
from .decisions import decided
from .test_compat_views import filled, move, one

DEPENDENT_SCHEMA = """
CREATE VIEW public.recent_tweets WITH (security_barrier = true) AS
  SELECT tweet_id, text, posted_at FROM public.tweets WHERE posted_at > '2026-01-01';
CREATE VIEW public.recent_tweet_count AS SELECT count(*) AS tweets FROM public.recent_tweets;
COMMENT ON VIEW public.recent_tweets IS 'the last tweets';

CREATE TABLE public.decision_notes (
  id bigserial PRIMARY KEY,
  decision_id uuid NOT NULL REFERENCES public.content_metadata (decision_id) ON DELETE CASCADE,
  note text
);
INSERT INTO public.decision_notes (decision_id, note) SELECT decision_id, 'note' FROM public.content_metadata LIMIT 50;
INSERT INTO public.decision_notes (decision_id, note) VALUES (md5('d7')::uuid, 'seven');  -- no post holds d7
ALTER TABLE public.decision_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_of_tweets ON public.decision_notes
  USING (EXISTS (SELECT 1 FROM public.tweets t WHERE t.decision_id = decision_notes.decision_id));

CREATE FUNCTION public.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();  -- update the timestamp (a comment, not a statement)
  RETURN NEW;
END $$;
CREATE TRIGGER touch BEFORE UPDATE ON public.content_metadata
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE TRIGGER touch BEFORE UPDATE ON public.content_generation_metadata_comprehensive
  FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

CREATE TABLE public.tweet_log (tweet_id text, at timestamptz DEFAULT now());
CREATE FUNCTION public.log_tweet() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.tweet_log (tweet_id) VALUES (NEW.tweet_id);
  RETURN NEW;
END $$;
CREATE TRIGGER log_tweet AFTER INSERT ON public.tweets FOR EACH ROW EXECUTE FUNCTION public.log_tweet();

CREATE PUBLICATION supabase_realtime FOR TABLE public.tweets, public.posts, public.content_metadata;
CREATE PUBLICATION topics_only FOR TABLE public.posts WHERE (topic IS NOT NULL) WITH (publish = 'insert');
"""


def published(db: psycopg.Connection) -> list[tuple[str, str]]:
    return db.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' ORDER BY 1, 2"
    ).fetchall()


def policy_reads(db: psycopg.Connection) -> list[tuple[str, str]]:
    return db.execute(
        "SELECT DISTINCT d.refobjid::regclass::text, c.relkind::text FROM pg_depend d"
        " JOIN pg_policy p ON p.oid = d.objid JOIN pg_class c ON c.oid = d.refobjid"
        " WHERE d.classid = 'pg_policy'::regclass AND p.polname = 'notes_of_tweets' AND c.relname = 'tweets'"
    ).fetchall()


def sees_note(db: psycopg.Connection, role: str, note: str) -> bool:
    with db.transaction():
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        return one(db, "SELECT count(*) FROM decision_notes WHERE note = %s", note) == 1


def referenced(db: psycopg.Connection) -> str:
    return one(
        db, "SELECT confrelid::regclass::text FROM pg_constraint WHERE conname = 'decision_notes_decision_id_fkey'"
    )


@pytest.fixture
def reader(db: psycopg.Connection):
    role = f"dependents_reader_{uuid.uuid4().hex[:8]}"
    db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        db.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role)))


def migrated(dsn: str, db: psycopg.Connection, reader: str) -> tuple[Plan, dependents.Captured]:
    db.execute(DEPENDENT_SCHEMA)
    db.execute(sql.SQL("GRANT SELECT ON public.recent_tweets TO {}").format(sql.Identifier(reader)))
    plan = decided(dsn, PLAN)  # a decision for each dependent, as `plan init --dsn` drafts them
    mappings = filled(dsn, plan)
    state: dict = {}

    def around(conn: psycopg.Connection, moved: bool) -> None:
        if not moved:
            state["captured"] = dependents.capture(conn, plan)
        else:
            for statement in dependents.after_move_statements(conn, plan, state["captured"]):
                conn.execute(statement)

    move(db, plan, mappings, around)
    return plan, state["captured"]


def test_dependents_follow_the_rows_to_the_new_tables(dsn: str, db: psycopg.Connection, reader: str) -> None:
    _, captured = migrated(dsn, db, reader)
    # Views: the dependent view reads the new rows (through the compatibility view), grants and options kept.
    count_before = one(db, "SELECT tweets FROM recent_tweet_count")
    db.execute(
        "INSERT INTO posted_content (decision_id, tweet_id, content, source_table) VALUES (gen_random_uuid(), 't-new', 'fresh', 'tweets')"
    )
    assert one(db, "SELECT text FROM recent_tweets WHERE tweet_id = 't-new'") == "fresh"
    assert one(db, "SELECT tweets FROM recent_tweet_count") == count_before + 1
    assert one(db, "SELECT reloptions FROM pg_class WHERE oid = 'public.recent_tweets'::regclass") == [
        "security_barrier=true"
    ]
    assert one(db, "SELECT has_table_privilege(%s, 'public.recent_tweets', 'SELECT')", reader)
    assert one(db, "SELECT obj_description('public.recent_tweets'::regclass, 'pg_class')") == "the last tweets"
    # Foreign keys: re-pointed to the new table, and a cascade delete through it works.
    assert referenced(db) == "content_queue"
    decision = one(db, "SELECT decision_id FROM decision_notes WHERE note = 'note' LIMIT 1")
    db.execute("DELETE FROM content_queue WHERE decision_id = %s", (decision,))
    assert one(db, "SELECT count(*) FROM decision_notes WHERE decision_id = %s", decision) == 0
    assert one(db, "SELECT convalidated FROM pg_constraint WHERE conname = 'decision_notes_decision_id_fkey'")
    # Triggers: the updated_at trigger fires on the new table (once: the twins' copies are one trigger).
    db.execute("UPDATE content_queue SET updated_at = '2020-01-01' WHERE decision_id = md5('d7')::uuid")
    assert one(
        db, "SELECT updated_at > now() - interval '1 minute' FROM content_queue WHERE decision_id = md5('d7')::uuid"
    )
    assert (
        one(db, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.content_queue'::regclass AND tgname = 'touch'")
        == 1
    )
    # Writes through the old name reach it too.
    db.execute(
        "UPDATE content_metadata SET updated_at = '2020-01-01', tone = 'calm' WHERE decision_id = md5('d8')::uuid"
    )
    assert one(
        db, "SELECT updated_at > now() - interval '1 minute' FROM content_metadata WHERE decision_id = md5('d8')::uuid"
    )
    # The business trigger is left on the archive, for a person to decide, and says so.
    assert [d for d in captured.needs_decision if "log_tweet" in d] == [
        "trigger log_tweet on public.tweets stays on the archived table: only row-level BEFORE INSERT/UPDATE"
        " triggers are carried over"
    ]
    # Publications: the new tables are published where the old ones were, the archive no longer.
    assert published(db) == [("public", "content_queue"), ("public", "posted_content")]
    # A row filter is not widened to the whole new table: a person decides.
    assert "publication topics_only publishes public.posts with a column list or row filter: add posted_content" in (
        " ".join(captured.needs_decision)
    )
    assert db.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'topics_only'"
    ).fetchall() == [("archive_xbot", "posts")]
    # Policies: another table's policy reads the old name (the view over the new rows), not the archive.
    assert policy_reads(db) == [("tweets", "v")]
    db.execute(sql.SQL("GRANT SELECT ON decision_notes, tweets, posted_content TO {}").format(sql.Identifier(reader)))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(reader)))
    assert not sees_note(db, reader, "seven")
    db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-7', md5('d7')::uuid, 'now posted')")
    assert sees_note(db, reader, "seven")


def test_rollback_after_cleanup_puts_every_dependent_back(dsn: str, db: psycopg.Connection, reader: str) -> None:
    plan, captured = migrated(dsn, db, reader)
    kept = dependents.Captured.from_json(json.loads(json.dumps(captured.to_json())))  # as cleanup stores it
    assert kept == captured
    steps = dependents.rollback_statements(db, plan, kept)
    with db.transaction():
        for statement in steps.before_restore:
            db.execute(statement)
        for table in plan.tables:
            for source in table.sources:
                db.execute(sql.SQL("DROP VIEW {}").format(sql.Identifier(source.schema, source.table)))
                db.execute(
                    sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
                        sql.Identifier(plan.archive_schema, source.table), sql.Identifier(source.schema)
                    )
                )
        for statement in steps.after_restore:
            db.execute(statement)
    assert referenced(db) == "content_metadata"
    assert policy_reads(db) == [("tweets", "r")]
    assert published(db) == [("public", "content_metadata"), ("public", "posts"), ("public", "tweets")]
    assert (
        one(db, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.content_queue'::regclass AND tgname = 'touch'")
        == 0
    )
    db.execute("INSERT INTO tweets (tweet_id, decision_id, text) VALUES ('t-back', gen_random_uuid(), 'back')")
    assert one(db, "SELECT text FROM recent_tweets WHERE tweet_id = 't-back'") == "back"
    assert one(db, "SELECT count(*) FROM tweet_log WHERE tweet_id = 't-back'") == 1
    assert one(db, "SELECT has_table_privilege(%s, 'public.recent_tweets', 'SELECT')", reader)
    assert one(db, "SELECT reloptions FROM pg_class WHERE oid = 'public.recent_tweets'::regclass") == [
        "security_barrier=true"
    ]
    assert one(db, "SELECT tweets FROM recent_tweet_count") == one(
        db, "SELECT count(*) FROM tweets WHERE posted_at > '2026-01-01'"
    )


@pytest.mark.parametrize(
    ("constraint", "why"),
    [
        ("REFERENCES public.tweets (tweet_id)", r"posted_content \(tweet_id\) is not a unique key of the new table"),
        ("REFERENCES public.content_metadata (id)", "the plan drops id"),
        ("REFERENCES public.posts (decision_id)", "pointer.ref is text and posted_content.decision_id is uuid"),
    ],
)
def test_a_foreign_key_that_cannot_follow_is_refused_by_name(
    dsn: str, db: psycopg.Connection, constraint: str, why: str
) -> None:
    plan = load_plan(PLAN)
    filled(dsn, plan)
    # posts.decision_id is text in this database; the plan makes it uuid.
    db.execute("ALTER TABLE posts ALTER COLUMN decision_id TYPE text")
    column_type = "bigint" if "(id)" in constraint else "text"
    db.execute(f"CREATE TABLE public.pointer (ref {column_type} CONSTRAINT pointer_ref_fkey {constraint})")
    with pytest.raises(dependents.DependentsRefused, match=f"foreign key pointer_ref_fkey of public.pointer .*{why}"):
        dependents.capture(db, plan)
