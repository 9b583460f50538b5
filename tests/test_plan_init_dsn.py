"""`dualshift plan init --dsn`: a draft from the live catalog that loads, passes `plan check --dsn`
as written, and runs."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.plan import load_plan
from dualshift.plan_tools import widest_type
from tests.executor import conftest as executor_fixtures

admin_dsn, dsn, db = executor_fixtures.admin_dsn, executor_fixtures.dsn, executor_fixtures.db
MAP = executor_fixtures.PLAN.parent / "expected" / "DATABASE_INTERACTION_MAP.json"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def draft(dsn: str, out: Path, *extra: str) -> str:
    result = run("plan", "init", "--dsn", dsn, "--out", str(out), *extra)
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_a_draft_from_the_code_and_the_catalog_passes_check_and_runs(dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "draft.toml"
    text = draft(dsn, out, "--map", str(MAP))
    plan = load_plan(out)
    by_sources = {tuple(s.table for s in t.sources): t for t in plan.tables}
    # tweets' only unique NOT NULL key is tweet_id: it cannot join a table keyed by decision_id, and says so.
    assert set(by_sources) == {
        ("posted_decisions", "posts"),
        ("outcomes", "real_tweet_metrics", "tweet_analytics", "tweet_metrics"),
        ("content_metadata", "content_generation_metadata_comprehensive"),
    }
    assert "tweets left out: none of its unique NOT NULL keys ([['tweet_id']]) lines up with ['decision_id']" in text
    metrics = by_sources[("outcomes", "real_tweet_metrics", "tweet_analytics", "tweet_metrics")]
    assert metrics.key == ("tweet_id", "collected_at")
    assert metrics.source("tweet_metrics").rename == {"measured_at": "collected_at"}
    assert metrics.column("collected_at").type == "timestamp with time zone"
    assert not metrics.column("collected_at").nullable and metrics.column("likes").nullable
    content = by_sources[("content_metadata", "content_generation_metadata_comprehensive")]
    assert content.column("quality_score").type == "numeric(5,4)"
    assert content.column("status").default == "'queued'::text" and not content.column("status").nullable
    # Each twin holds columns the other lacks: the draft merges them column by column, and says why.
    assert content.precedence == "coalesce" and content.merges_sources
    lines = text.splitlines()
    why = next(
        i for i, line in enumerate(lines) if line.startswith("# Each source holds columns another lacks (content_")
    )
    assert lines[why + 2] == 'precedence = "coalesce"'
    assert all(s.drop == ("id",) for t in plan.tables for s in t.sources)

    checked = run("plan", "check", "--plan", str(out), "--dsn", dsn, "--json")
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout)
    assert report["errors"] == 0
    todos = [(f["line"], f["message"]) for f in report["findings"] if f["check"] == "todo"]
    lines = text.splitlines()
    assert todos and all("TODO" in lines[line - 1] for line, _ in todos)
    assert (5, "the migration's id; the executor keys its state by it") in todos

    for phase in (["create"], ["backfill", "--batch-size", "500", "--sync", "triggers"]):
        result = run("migrate", "--dsn", dsn, "--plan", str(out), *phase)
        assert result.exit_code == 0, (phase, result.output)


def test_a_draft_from_the_code_and_the_catalog_verifies(dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "draft.toml"
    draft(dsn, out, "--map", str(MAP))
    for phase in (["create"], ["backfill", "--sync", "triggers"], ["verify"]):
        result = run("migrate", "--dsn", dsn, "--plan", str(out), *phase)
        assert result.exit_code == 0, (phase, result.output)


def test_without_the_code_clusters_come_from_shared_keys_and_columns(dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "draft.toml"
    draft(dsn, out)
    plan = load_plan(out)
    assert sorted(tuple(sorted(s.table for s in t.sources)) for t in plan.tables) == [
        ("content_generation_metadata_comprehensive", "content_metadata"),
        ("outcomes", "real_tweet_metrics", "tweet_analytics"),
        ("posted_decisions", "posts"),
    ]
    assert run("plan", "check", "--plan", str(out), "--dsn", dsn).exit_code == 0


@pytest.fixture
def supabase_like(db: psycopg.Connection) -> psycopg.Connection:
    """Two twins with a mixed-case enum, a domain, an identity and a generated column; a system
    schema's table that looks like them."""
    db.execute(
        """
        CREATE TYPE public."reportTypes" AS ENUM ('daily', 'weekly');
        CREATE DOMAIN public.score AS numeric(6,2) CHECK (VALUE >= 0);
        CREATE TABLE public.reports (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, report_id uuid NOT NULL UNIQUE,
          kind public."reportTypes" NOT NULL, score public.score, title varchar(40), body text,
          title_length integer GENERATED ALWAYS AS (length(title)) STORED,
          created_at timestamp NOT NULL DEFAULT now(), CHECK (length(body) < 10000));
        CREATE TABLE public.reports_archive (
          id bigserial PRIMARY KEY, report_id uuid NOT NULL UNIQUE, kind public."reportTypes",
          score public.score, title text, body text, created_at timestamptz NOT NULL DEFAULT now(),
          CHECK (length(body) < 10000));
        INSERT INTO public.reports (report_id, kind, score, title, body)
          SELECT md5('r' || i)::uuid, 'daily', i, 'title ' || i, 'body' FROM generate_series(1, 40) i;
        INSERT INTO public.reports_archive (report_id, kind, score, title, body)
          SELECT md5('r' || i)::uuid, 'weekly', i, 'old ' || i, 'body' FROM generate_series(30, 60) i;
        CREATE INDEX ON public.reports (kind); CREATE INDEX ON public.reports_archive (kind);
        CREATE INDEX ON public.reports (title);
        ALTER TABLE public.reports ENABLE ROW LEVEL SECURITY;
        CREATE POLICY reports_read ON public.reports FOR SELECT USING (true);
        CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
        CREATE TRIGGER reports_archive_touch BEFORE UPDATE ON public.reports_archive
          FOR EACH ROW EXECUTE FUNCTION public.touch();
        CREATE SCHEMA auth;
        CREATE TABLE auth.reports_v3 (id bigserial PRIMARY KEY, report_id uuid NOT NULL UNIQUE,
          kind text, score numeric, title text, body text, created_at timestamptz);
        """
    )
    return db


def test_a_draft_keeps_real_types_and_leaves_system_schemas_out(
    supabase_like: psycopg.Connection, dsn: str, tmp_path: Path
) -> None:
    out = tmp_path / "draft.toml"
    text = draft(dsn, out)
    assert "auth" not in text
    plan = load_plan(out)
    table = next(t for t in plan.tables if {s.table for s in t.sources} == {"reports", "reports_archive"})
    assert table.key == ("report_id",)
    types = {c.name: (c.type, c.nullable) for c in table.columns}
    assert types["kind"] == ('public."reportTypes"', True)  # NULL allowed in the archive
    assert types["score"] == ("public.score", True)
    assert types["title"] == ("text", True)  # varchar(40) and text: text holds both
    assert types["created_at"] == ("timestamp with time zone", False)
    assert "id" not in types and "title_length" not in types  # identity, serial, generated: per table
    assert table.checks == ("(length(body) < 10000)",)
    assert {s.table: s.drop for s in table.sources} == {"reports": ("id", "title_length"), "reports_archive": ("id",)}
    assert [i.columns for i in table.indexes] == [("kind",)]  # only the index both sources have
    assert "  # row security on; policies: reports_read" in text
    assert "  # TODO: triggers on reports_archive (reports_archive_touch) are not carried over" in text
    checked = run("plan", "check", "--plan", str(out), "--dsn", dsn, "--json")
    assert checked.exit_code == 0, checked.output
    assert run("migrate", "--dsn", dsn, "--plan", str(out), "create").exit_code == 0
    created = supabase_like.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = to_regclass(%s) AND attname = 'kind'",
        (f"public.{table.name}",),
    ).fetchone()
    assert created == ('"reportTypes"',)


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (["integer", "bigint"], ("bigint", True)),
        (["smallint", "integer"], ("integer", True)),
        (["numeric(5,4)", "integer"], ("numeric", True)),
        (["numeric(5,4)", "numeric(10,2)"], ("numeric", True)),
        (["timestamp without time zone", "timestamp with time zone"], ("timestamp with time zone", True)),
        (["character varying(10)", "text"], ("text", True)),
        (["json", "jsonb"], ("jsonb", True)),
        (['public."reportTypes"', 'public."reportTypes"'], ('public."reportTypes"', True)),
        (["uuid", "text"], ("text", False)),
    ],
)
def test_widest_type(types: list[str], expected: tuple[str, bool]) -> None:
    assert widest_type(types) == expected
