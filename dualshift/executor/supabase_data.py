"""The Supabase-shaped fixture (fixtures/supabase/schema.sql) filled with deterministic data.

Six old tables and the ones that stay: about 4.3 rows per content row (`rows` = 1200 gives 5,100
rows). Every value is a function of the row number, so two loads give the same database. The dirt
that dualshift must refuse comes on top, one kind at a time or all three:

- `null_key`: tweet_metrics rows whose measured_at (part of the plan's key) is NULL;
- `duplicate_key`: tweets rows sharing a decision_id (the plan's key) with another tweet;
- `lossy_cast`: content_metadata.quality_score values (numeric) that numeric(5,4) would round.

`fixtures/supabase/clean_dirty_rows.sql` is what the README tells a user to run about them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psycopg
from psycopg import sql

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "supabase"
SCHEMA_SQL = FIXTURE / "schema.sql"
CLEAN_SQL = FIXTURE / "clean_dirty_rows.sql"
PLAN = FIXTURE / "dualshift.toml"
DIRT_KINDS = ("null_key", "duplicate_key", "lossy_cast")
OWNERS = 4  # owner_id of content rows: md5('owner' || k)::uuid for k in 0..3

FILL = """
INSERT INTO public.content_metadata (decision_id, owner_id, content, decision_type, status, quality_score,
  generator_name, raw_topic, scheduled_at, created_at, updated_at)
SELECT md5('c' || i)::uuid, md5('owner' || i % {owners})::uuid,
  'post ' || i || ' about ' || (ARRAY['sleep','zone 2','protein','stress'])[1 + i % 4],
  (ARRAY['single','thread','reply'])[1 + i % 3], (ARRAY['queued','ready','posted','failed'])[1 + i % 4],
  round(((i % 97) / 100.0)::numeric, 4), (ARRAY['data_nerd','contrarian','coach'])[1 + i % 3],
  (ARRAY['sleep','zone 2','protein','stress'])[1 + i % 4], timestamp '2026-11-01' + i * interval '1 minute',
  timestamptz '2026-10-01 00:00Z' + i * interval '1 minute', timestamptz '2026-10-01 00:00Z' + i * interval '1 minute'
FROM generate_series(0, {n} - 1) AS i;

INSERT INTO public.content_generation_metadata_comprehensive (decision_id, owner_id, content, decision_type, status,
  topic, quality_score, features, created_at, updated_at)
SELECT md5('c' || i)::uuid, md5('owner' || i % {owners})::uuid, 'draft ' || i, 'single', 'queued',
  'topic ' || i % 11, round(((i % 40) / 1000.0)::numeric, 3), jsonb_build_object('hook', i % 10),
  timestamptz '2026-09-30 00:00Z' + i * interval '1 minute', timestamptz '2026-09-30 00:00Z' + i * interval '1 minute'
FROM generate_series(0, {n} - 1) AS i;

INSERT INTO public.posted_decisions (decision_id, tweet_id, owner_id, content, decision_type, posted_at)
SELECT md5('p' || i)::uuid, 'p' || i, md5('owner' || i % {owners})::uuid, 'posted ' || i,
  (ARRAY['single','thread'])[1 + i % 2], timestamptz '2026-11-01 00:00Z' + i * interval '1 minute'
FROM generate_series(0, {n} / 2 - 1) AS i;

INSERT INTO public.tweets (tweet_id, decision_id, text, url, posted_at)
SELECT 't' || i, md5('t' || i)::uuid, 'tweet text ' || i, 'https://x.com/i/status/' || i,
  timestamptz '2026-11-01 00:00Z' + i * interval '1 minute'
FROM generate_series(0, {n} / 3 - 1) AS i;

INSERT INTO public.replies (decision_id, body, created_at)
SELECT md5('p' || i)::uuid, 'reply to ' || i, timestamptz '2026-11-02 00:00Z' + i * interval '1 minute'
FROM generate_series(0, {n} / 2 - 1, 2) AS i;

INSERT INTO public.outcomes (decision_id, tweet_id, likes, impressions, engagement_rate, report_type, collected_at)
SELECT md5('p' || i % ({n} / 2))::uuid, 'p' || i % ({n} / 2), i % 50, i % 500, round(((i % 30) / 1000.0)::numeric, 4),
  (ARRAY['dailyReport','weeklyReport','trackerReport'])[1 + i % 3]::public."reportTypes",
  timestamptz '2026-11-02 00:00Z' + i * interval '1 minute'
FROM generate_series(0, {n} * 2 / 3 - 1) AS i;

INSERT INTO public.tweet_metrics (decision_id, tweet_id, like_count, view_count, measured_at)
SELECT md5('t' || i % ({n} / 3))::uuid, 't' || i % ({n} / 3), i % 53, i % 900,
  timestamp '2026-11-05' + i * interval '1 minute'
FROM generate_series(0, {n} / 2 - 1) AS i;
"""

DIRT = {
    "null_key": """
INSERT INTO public.tweet_metrics (decision_id, tweet_id, like_count, view_count, measured_at)
SELECT md5('t' || k)::uuid, 't' || k, k, 10 * k, NULL FROM generate_series(0, 7) AS k;
""",
    "duplicate_key": """
INSERT INTO public.tweets (tweet_id, decision_id, text, url, posted_at)
SELECT 'dup' || k, md5('t' || k)::uuid, 'the same decision tweeted again ' || k, NULL,
  timestamptz '2026-11-03 00:00Z' + k * interval '1 minute'
FROM generate_series(0, 4) AS k;
""",
    "lossy_cast": """
UPDATE public.content_metadata SET quality_score = 0.123456
WHERE decision_id IN (SELECT md5('c' || i)::uuid FROM generate_series(7, 1000, 200) AS i);
""",
}


def create_roles(conn: psycopg.Connection) -> None:
    """Only the Supabase roles (the fixture's first statement), e.g. before restoring a dump elsewhere."""
    text = SCHEMA_SQL.read_text(encoding="utf-8")
    start = text.index("DO $roles$")
    end = text.index("$roles$;", start + len("DO $roles$")) + len("$roles$;")
    conn.execute(text[start:end])


def create_schema(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))


def fill(conn: psycopg.Connection, rows: int) -> None:
    text = FILL.replace("{n}", "{rows}").replace("{owners}", str(OWNERS))
    conn.execute(sql.SQL(text).format(rows=sql.Literal(rows)))


def add_dirt(conn: psycopg.Connection, kinds: Iterable[str] = DIRT_KINDS) -> None:
    for kind in kinds:
        conn.execute(DIRT[kind])


def clean_dirt(conn: psycopg.Connection) -> None:
    """What the README tells a user to do about the dirty rows (fixtures/supabase/clean_dirty_rows.sql)."""
    conn.execute(CLEAN_SQL.read_text(encoding="utf-8"))


def load_supabase_data(conn: psycopg.Connection, rows: int = 1200, dirt: Iterable[str] = DIRT_KINDS) -> None:
    """The schema, `rows` content rows and what follows from them, and the named kinds of dirt.

    `conn` must be in autocommit mode (clean_dirty_rows.sql runs its own transaction)."""
    if rows < 30:
        raise ValueError("the Supabase fixture needs at least 30 content rows")
    create_schema(conn)
    fill(conn, rows)
    add_dirt(conn, dirt)
