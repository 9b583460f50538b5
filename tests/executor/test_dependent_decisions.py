"""Each `[dependents]` decision carried out by `migrate cleanup` on fixtures/supabase, and undone exactly by
`migrate rollback`: the catalog of every dependent object after the rollback is the one before `create`."""

from __future__ import annotations

from pathlib import Path

import psycopg

from dualshift.executor import inventory
from dualshift.executor.supabase_data import PLAN
from dualshift.plan import load_plan

from .supabase_scenario import loaded_database, migrate_here

PLANTED = """
CREATE VIEW public.posted_content_rows AS
  SELECT decision_id, content, status FROM public.content_metadata WHERE status = 'posted';
CREATE VIEW public.tweet_texts AS SELECT tweet_id, text FROM public.tweets;
GRANT SELECT ON public.tweet_texts TO authenticated;
CREATE VIEW public.metric_rows AS SELECT tweet_id FROM public.tweet_metrics;
CREATE MATERIALIZED VIEW public.tweet_days AS
  SELECT date_trunc('day', posted_at) AS day, count(*) AS n FROM public.tweets GROUP BY 1;
CREATE UNIQUE INDEX tweet_days_day ON public.tweet_days (day);
CREATE MATERIALIZED VIEW public.outcome_count AS SELECT count(*) AS n FROM public.outcomes;
CREATE INDEX outcome_count_n ON public.outcome_count (n);
CREATE FUNCTION public.tweet_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM public.tweets $$;
CREATE FUNCTION public.outcome_total() RETURNS bigint LANGUAGE sql SET search_path = '' AS
  $$ SELECT count(*) FROM public.outcomes $$;
REVOKE ALL ON FUNCTION public.outcome_total() FROM PUBLIC, anon;
COMMENT ON FUNCTION public.outcome_total() IS 'outcomes so far';
CREATE POLICY replies_of_tweets ON public.replies AS RESTRICTIVE FOR SELECT TO authenticated
  USING (EXISTS (SELECT 1 FROM public.tweets t WHERE t.decision_id = replies.decision_id));
CREATE TABLE public.authors (handle text PRIMARY KEY);
ALTER TABLE public.tweets ADD COLUMN author text CONSTRAINT tweets_author_fkey REFERENCES public.authors (handle);
CREATE TABLE public.reviews (decision_id uuid CONSTRAINT reviews_decision_fkey
  REFERENCES public.content_metadata (decision_id) ON DELETE CASCADE);
"""
# What the plan decides, where it is not cleanup's default.
DECISIONS = {
    "view public.posted_content_rows": "repoint",
    "view public.tweet_texts": "drop",
    "view public.metric_rows": "archive",
    "materialized view public.tweet_days": "recreate",
    "materialized view public.outcome_count": "drop",
    "function public.outcome_total()": "drop",
    "policy public.replies.replies_of_tweets": "drop",
    "foreign key public.tweets.tweets_author_fkey": "drop",
    "foreign key public.reviews.reviews_decision_fkey": "drop",
    "foreign key public.replies.replies_decision_id_fkey": "archive",
    "trigger public.content_metadata.content_metadata_updated_at": "drop",
    "publication supabase_realtime public.content_metadata": "drop",
    "publication supabase_realtime public.posted_decisions": "archive",
}
NAMES = ("tweet_texts", "metric_rows", "posted_content_rows", "tweet_days", "outcome_count", "owner_content")
CATALOG = {
    "views": "SELECT c.relname, c.relkind::text, pg_get_viewdef(c.oid), c.relacl::text, c.reloptions::text"
    " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%(names)s) ORDER BY 1",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = ANY(%(names)s) ORDER BY 1",
    "constraints": "SELECT conname, conrelid::regclass::text, pg_get_constraintdef(oid), convalidated"
    " FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY 1",
    "triggers": "SELECT tgname, tgrelid::regclass::text, pg_get_triggerdef(t.oid), tgenabled::text FROM pg_trigger t"
    " JOIN pg_proc p ON p.oid = t.tgfoid WHERE NOT tgisinternal AND p.pronamespace = 'public'::regnamespace"
    " ORDER BY 1, 2",
    "policies": "SELECT policyname, permissive, roles::text, cmd, qual, with_check FROM pg_policies"
    " WHERE tablename = 'replies' ORDER BY 1",
    "publications": "SELECT pubname, schemaname, tablename FROM pg_publication_tables ORDER BY 1, 2, 3",
    "functions": "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text,"
    " obj_description(p.oid, 'pg_proc') FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1",
}


def catalog(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {what: conn.execute(query, {"names": list(NAMES)}).fetchall() for what, query in CATALOG.items()}


def decided_plan(conn: psycopg.Connection, tmp_path: Path) -> Path:
    text = PLAN.read_text(encoding="utf-8")
    text = text[: text.index("\n[dependents]")] + "\n"
    lines = inventory.draft_section(conn, text).splitlines()
    for key, decision in DECISIONS.items():
        index = next(n for n, line in enumerate(lines) if line.startswith(f'"{key}" = '))
        lines[index] = f'"{key}" = "{decision}"'
    path = tmp_path / "plan.toml"
    path.write_text(text + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def one(conn: psycopg.Connection, query: str):
    return conn.execute(query).fetchone()[0]


def reads(conn: psycopg.Connection, view: str) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT DISTINCT d.refobjid::regclass::text FROM pg_rewrite r JOIN pg_depend d ON d.objid = r.oid"
            " WHERE r.ev_class = %s::regclass AND d.refobjid <> r.ev_class AND d.refclassid = 'pg_class'::regclass"
            " ORDER BY 1",
            (view,),
        )
    ]


def test_cleanup_carries_out_each_decision_and_rollback_undoes_it(admin_dsn: str, tmp_path: Path) -> None:
    with loaded_database(admin_dsn, rows=30, clean=True) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLANTED)
        plan = decided_plan(conn, tmp_path)
        before = catalog(conn)
        for args in (
            ("create",),
            ("backfill", "--sync", "triggers"),
            ("verify",),
            ("switch-reads", "100"),
            ("cleanup", "--backup-dir", str(tmp_path / "backup")),
        ):
            step = migrate_here(dsn, *args, plan=plan)
            assert step.ok, step.line()
        conn.execute("SET search_path = public")
        # Views: re-pointed to the new table, kept on the archive, dropped, recreated (materialized, indexed).
        assert reads(conn, "public.posted_content_rows") == ["content_queue"]
        assert reads(conn, "public.metric_rows") == ["archive_supabase.tweet_metrics"]
        assert one(conn, "SELECT to_regclass('public.tweet_texts')") is None
        assert one(conn, "SELECT to_regclass('public.outcome_count')") is None
        assert reads(conn, "public.tweet_days") == ["tweets"]  # the compatibility view
        assert one(conn, "SELECT to_regclass('public.tweet_days_day')") is not None
        acl = {row[0]: row[3] for row in catalog(conn)["views"]}
        assert acl["tweet_days"] == next(row[3] for row in before["views"] if row[0] == "tweet_days")
        assert one(conn, "SELECT sum(n) FROM tweet_days") == one(conn, "SELECT count(*) FROM tweets")
        # Functions: one kept (it reads the old name, now the view), one dropped.
        assert one(conn, "SELECT tweet_count()") == one(conn, "SELECT count(*) FROM tweets")
        assert one(conn, "SELECT to_regprocedure('public.outcome_total()')") is None
        # Policies, foreign keys, triggers, publications.
        assert one(conn, "SELECT count(*) FROM pg_policies WHERE policyname = 'replies_of_tweets'") == 0
        constraints = dict(conn.execute("SELECT conname, confrelid::regclass::text FROM pg_constraint").fetchall())
        assert "tweets_author_fkey" not in constraints and "reviews_decision_fkey" not in constraints
        assert constraints["replies_decision_id_fkey"] == "archive_supabase.posted_decisions"
        assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'content_metadata_updated_at%'") == 0
        assert conn.execute(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' ORDER BY 1, 2"
        ).fetchall() == [("archive_supabase", "posted_decisions"), ("public", "posted_content")]

        step = migrate_here(dsn, "rollback", plan=plan)
        assert step.ok, step.line()
        conn.execute("RESET search_path")
        after = catalog(conn)
    for what in CATALOG:
        assert after[what] == before[what], what


def test_preflight_refuses_a_decision_cleanup_cannot_carry_out_and_says_what_to_choose(
    admin_dsn: str, tmp_path: Path
) -> None:
    with loaded_database(admin_dsn, rows=30, clean=True) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLANTED + "CREATE TABLE public.tweet_refs (tweet_id text REFERENCES public.tweets (tweet_id));")
        plan = decided_plan(conn, tmp_path)
        text = plan.read_text(encoding="utf-8")
        for key, decision in {
            "view public.owner_content": "repoint",  # quality_score becomes numeric(5,4)
            "view public.posted_content_rows": "drop",  # nothing else reads it: fine
            "view public.metric_rows": "carry",
            "sequence public.tweets_id_seq": "carry",
            "materialized view public.tweet_days": "repoint",
            "foreign key public.tweet_refs.tweet_refs_tweet_id_fkey": "repoint",
        }.items():
            text = "\n".join(
                f'"{key}" = "{decision}"' if line.startswith(f'"{key}" = ') else line for line in text.splitlines()
            )
        plan.write_text(text + "\n", encoding="utf-8")
        step = migrate_here(dsn, "create", plan=plan)
        assert step.exit_code == 2, step.output
        output = " ".join(step.output.split())
        assert (
            "view public.owner_content depends on public.content_metadata (reads it): dualshift cannot repoint it"
            " (content_metadata.quality_score is numeric and content_queue.quality_score is numeric(5,4): choose"
            " recreate); it can recreate or archive or drop"
        ) in output
        assert "view public.metric_rows depends on public.tweet_metrics (reads it): dualshift cannot carry it" in output
        assert "a sequence owned by a column goes where its table goes); it can archive" in output
        assert "materialized view public.tweet_days depends on public.tweets (reads it): dualshift cannot repoint" in (
            output
        )
        assert (
            "foreign key public.tweet_refs.tweet_refs_tweet_id_fkey depends on public.tweets (FOREIGN KEY (tweet_id)"
            " REFERENCES public.tweets(tweet_id)): dualshift cannot repoint it (posted_content (tweet_id) is not a"
            " unique key of the new table); it can archive or drop"
        ) in output
        assert "posted_content_rows" not in output
        assert one(conn, "SELECT to_regclass('public.content_queue')") is None


def test_a_view_may_be_dropped_only_with_the_views_that_read_it(admin_dsn: str, tmp_path: Path) -> None:
    with loaded_database(admin_dsn, rows=30, clean=True) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLANTED + "CREATE VIEW public.tweet_text_count AS SELECT count(*) AS n FROM public.tweet_texts;")
        plan = decided_plan(conn, tmp_path)  # tweet_texts dropped, the view reading it recreated
        found = [f for f in inventory.findings(conn, load_plan(plan))[1] if f.is_error]
    assert [f.message.split(": ", 1)[1] for f in found] == [
        "dualshift cannot drop it: view public.tweet_text_count read(s) it: drop them too, or choose recreate"
    ]
