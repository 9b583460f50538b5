"""The seeds' nine old tables (fixtures/xbot/schema.sql) filled with realistic, deterministic data.

Built with generate_series inside the database, so tens of thousands of rows take a moment. The two
content tables share most decision ids with conflicting values; posted_decisions, tweets and posts
overlap on decision ids; the four metrics tables hold time series snapshots of the same tweets.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql

SCHEMA_SQL = Path(__file__).resolve().parents[2] / "fixtures" / "xbot" / "schema.sql"

FILL = """
INSERT INTO content_metadata (decision_id, content, decision_type, status, scheduled_at, generator_name, raw_topic,
  angle, tone, quality_score, predicted_er, created_at, updated_at)
SELECT md5('d' || i)::uuid, 'post ' || i || ' about ' || (ARRAY['sleep','zone 2','protein','stress'])[1 + i % 4],
  (ARRAY['single','thread','reply'])[1 + i % 3], (ARRAY['queued','posted','posted','failed'])[1 + i % 4],
  timestamptz '2026-11-01' + i * interval '1 minute', (ARRAY['data_nerd','contrarian','coach'])[1 + i % 3],
  (ARRAY['sleep','zone 2','protein','stress'])[1 + i % 4], 'angle ' || i % 7, 'tone ' || i % 5,
  round(((i % 97) / 100.0)::numeric, 4), round(((i % 50) / 1000.0)::numeric, 4),
  now() - (i % 2000) * interval '1 hour', now() - (i % 2000) * interval '1 hour'
FROM generate_series(0, {n} - 1) AS i;

INSERT INTO content_generation_metadata_comprehensive (decision_id, content, decision_type, status, generator_name,
  topic, angle, tone, predicted_engagement, features, created_at, updated_at)
SELECT md5('d' || i)::uuid, 'draft ' || i, 'single', 'queued', 'gen_' || i % 4, 'topic ' || i % 11, 'a' || i % 3,
  't' || i % 2, round(((i % 40) / 1000.0)::numeric, 4), jsonb_build_object('hook', i % 10),
  now() - (i % 1500) * interval '1 hour', now() - (i % 1500) * interval '1 hour'
FROM generate_series({n} * 3 / 10, {n} + {n} * 3 / 10 - 1) AS i;

INSERT INTO posted_decisions (decision_id, tweet_id, content, decision_type, generator_name, raw_topic, posted_at)
SELECT md5('d' || i)::uuid, 't' || i, 'post ' || i, 'single', 'data_nerd', 'sleep',
  timestamptz '2026-11-01' + i * interval '1 minute'
FROM generate_series(0, {n} - 1, 2) AS i;

INSERT INTO tweets (tweet_id, decision_id, text, url, posted_at)
SELECT 't' || i, md5('d' || i)::uuid, 'tweet text ' || i, 'https://x.com/i/status/' || i,
  timestamptz '2026-11-01' + i * interval '1 minute'
FROM generate_series(0, {n} - 1, 3) AS i;

INSERT INTO posts (decision_id, tweet_id, content, topic, posted_at)
SELECT md5('d' || i)::uuid, 't' || i, 'post copy ' || i, 'topic ' || i % 5, timestamptz '2026-11-01' + i * interval '1 minute'
FROM generate_series(1, {n} - 1, 5) AS i;

INSERT INTO outcomes (decision_id, tweet_id, likes, retweets, replies, views, engagement_rate, collected_at, collected_pass)
SELECT md5('d' || i)::uuid, 't' || i, i % 50, i % 9, i % 4, i % 500, round(((i % 30) / 1000.0)::numeric, 4),
  timestamptz '2026-11-02' + p * interval '1 hour', p
FROM generate_series(0, {n} - 1, 2) AS i, generate_series(0, 1) AS p;

INSERT INTO real_tweet_metrics (decision_id, tweet_id, likes, retweets, bookmarks, impressions, collected_at, collection_phase)
SELECT md5('d' || i)::uuid, 't' || i, i % 51, i % 8, i % 3, i % 700, timestamptz '2026-11-02' + p * interval '1 hour', 'T+' || p
FROM generate_series(0, {n} - 1, 4) AS i, generate_series(1, 2) AS p;

INSERT INTO tweet_analytics (decision_id, tweet_id, likes, impressions, profile_clicks, snapshot_at)
SELECT md5('d' || i)::uuid, 't' || i, i % 52, i % 800, i % 6, timestamptz '2026-11-03' + i % 3 * interval '1 minute'
FROM generate_series(0, {n} - 1, 6) AS i;

INSERT INTO tweet_metrics (decision_id, tweet_id, like_count, retweet_count, reply_count, view_count, measured_at)
SELECT md5('d' || i)::uuid, 't' || i, i % 53, i % 7, i % 5, i % 900, timestamptz '2026-11-04'
FROM generate_series(0, {n} - 1, 5) AS i;
"""


def create_old_tables(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA_SQL.read_text(encoding="utf-8"))


def load_sample_data(conn: psycopg.Connection, rows: int = 20000) -> None:
    """The nine old tables with about `rows` content rows and the posts and metrics that follow from them."""
    create_old_tables(conn)
    conn.execute(sql.SQL(FILL.replace("{n}", "{rows}")).format(rows=sql.Literal(rows)))


__all__ = ["load_sample_data", "resources"]
