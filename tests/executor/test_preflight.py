"""Preflight on the xbot fixture: every planted trap is found at once, with its count and sample keys,
and `migrate create` refuses before any DDL while one stands."""

from __future__ import annotations

import json
from datetime import datetime

import psycopg
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor import preflight
from dualshift.executor.catalog import ValidationError, check, validate
from dualshift.findings import Finding
from dualshift.plan import load_plan, parse_plan

from .conftest import PLAN


def uuid_of(i: int, db: psycopg.Connection) -> str:
    """The decision id sample_data gives row i."""
    return str(db.execute("SELECT md5(%s)::uuid", (f"d{i}",)).fetchone()[0])


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def plant_dirty_rows(db: psycopg.Connection) -> dict[str, object]:
    """One trap of each kind; returns the sample key each should be reported with."""
    # A duplicate key on a batch boundary: a second row for the 100th key in key order.
    boundary = db.execute("SELECT decision_id FROM content_metadata ORDER BY decision_id OFFSET 99 LIMIT 1").fetchone()[
        0
    ]
    db.execute("ALTER TABLE content_metadata DROP CONSTRAINT content_metadata_decision_id_key")
    db.execute(
        "INSERT INTO content_metadata (decision_id, content, decision_type, status)"
        " SELECT decision_id, content || ' (copy)', decision_type, status FROM content_metadata WHERE decision_id = %s",
        (boundary,),
    )
    # A value the check `decision_type IN ('single', 'thread', 'reply')` refuses.
    db.execute("UPDATE content_metadata SET decision_type = 'poll' WHERE decision_id = md5('d7')::uuid")
    # 0.123456 into numeric(5,4) rounds; 12.5 does not fit at all. Rows 3500 and 3501 exist only in this source.
    db.execute("ALTER TABLE content_generation_metadata_comprehensive ALTER predicted_engagement TYPE numeric")
    db.execute(
        "UPDATE content_generation_metadata_comprehensive SET predicted_engagement = 0.123456"
        " WHERE decision_id = md5('d3500')::uuid"
    )
    db.execute(
        "UPDATE content_generation_metadata_comprehensive SET predicted_engagement = 12.5"
        " WHERE decision_id = md5('d3501')::uuid"
    )
    # NULL where the new table is NOT NULL (posted_content.tweet_id); row 11 is held by no earlier source.
    db.execute("ALTER TABLE posts ALTER tweet_id DROP NOT NULL")
    db.execute("UPDATE posts SET tweet_id = NULL WHERE decision_id = md5('d11')::uuid")
    # A NULL key part.
    db.execute("ALTER TABLE outcomes ALTER collected_at DROP NOT NULL")
    (null_key_row,) = db.execute(
        "UPDATE outcomes SET collected_at = NULL WHERE tweet_id = 't10' AND collected_pass = 0 RETURNING id"
    ).fetchone()
    # Text that is not a uuid, into a uuid column.
    db.execute("ALTER TABLE tweet_metrics ALTER decision_id TYPE text")
    db.execute("UPDATE tweet_metrics SET decision_id = 'not-a-uuid' WHERE tweet_id = 't5'")
    # A row precedence sets aside: tweet_analytics (earlier) holds t6 at 11-03 00:00 with likes = 6.
    db.execute(
        "INSERT INTO tweet_metrics (decision_id, tweet_id, like_count, measured_at)"
        " VALUES (md5('d6')::uuid::text, 't6', 999, '2026-11-03 00:00+00')"
    )
    return {"boundary": str(boundary), "null_key_row": null_key_row}


def by_check(findings: list[Finding]) -> dict[tuple[str, str | None, str | None], Finding]:
    found = {(f.check, f.source, f.column): f for f in findings}
    assert len(found) == len(findings), "one finding per check, source and column"
    return found


def test_a_clean_database_passes_with_the_rows_precedence_sets_aside_as_warnings(db: psycopg.Connection) -> None:
    findings = preflight.check_all(db, load_plan(PLAN))
    assert [f for f in findings if f.is_error] == []
    set_aside = {f.source: f.count for f in findings if f.check == "set-aside"}
    # sample_data: the comprehensive twin repeats rows 900-2999 of content_metadata with other content;
    # tweets repeat every 6th posted decision, posts 400 of their 600; real_tweet_metrics' pass 1 repeats
    # outcomes' pass 1 for every 4th tweet. Every other finding would be a false alarm.
    assert set_aside == {
        "public.content_generation_metadata_comprehensive": 2100,
        "public.tweets": 500,
        "public.posts": 400,
        "public.real_tweet_metrics": 750,
    }
    # Every xbot source drops the bigserial id its database generates: `RETURNING id` would read NULL.
    generated = [f for f in findings if f.check == "dropped-generated-key"]
    assert len(generated) == 9 and {f.column for f in generated} == {"id"}
    findings = [f for f in findings if f not in generated]
    assert len(findings) == 4
    for finding in findings:
        assert len(finding.samples) == 10 and finding.samples == tuple(sorted(finding.samples))


def test_every_planted_trap_is_reported_at_once_with_counts_and_sample_keys(db: psycopg.Connection) -> None:
    planted = plant_dirty_rows(db)
    findings = preflight.check_all(db, load_plan(PLAN))
    found = by_check(findings)
    errors = {(f.check, f.source, f.column, f.count) for f in findings if f.is_error}
    assert errors == {
        ("duplicate-key", "public.content_metadata", None, 1),
        ("check", "public.content_metadata", None, 1),
        ("lossy-cast", "public.content_generation_metadata_comprehensive", "predicted_engagement", 1),
        ("invalid-cast", "public.content_generation_metadata_comprehensive", "predicted_engagement", 1),
        ("not-null", "public.posts", "tweet_id", 1),
        ("null-key", "public.outcomes", None, 1),
        ("invalid-cast", "public.tweet_metrics", "decision_id", 1),
    }
    duplicate = found[("duplicate-key", "public.content_metadata", None)]
    assert duplicate.samples == ([planted["boundary"]],) and "(2 rows)" in duplicate.message
    assert found[("check", "public.content_metadata", None)].samples == ([uuid_of(7, db)],)
    comprehensive = "public.content_generation_metadata_comprehensive"
    assert found[("lossy-cast", comprehensive, "predicted_engagement")].samples == ([uuid_of(3500, db)],)
    assert found[("invalid-cast", comprehensive, "predicted_engagement")].samples == ([uuid_of(3501, db)],)
    assert found[("not-null", "public.posts", "tweet_id")].samples == ([uuid_of(11, db)],)
    # A key with a NULL part identifies nothing: the samples are the table's own primary key.
    null_key = found[("null-key", "public.outcomes", None)]
    assert null_key.samples == ([planted["null_key_row"]],) and "samples are its primary key (id)" in null_key.message
    (key,) = found[("invalid-cast", "public.tweet_metrics", "decision_id")].samples
    assert key[0] == "t5" and at(key[1]) == at("2026-11-04T00:00:00+00:00")
    set_aside = {f.source: f.count for f in findings if f.check == "set-aside" and f.severity == "warning"}
    assert set_aside == {
        "public.content_generation_metadata_comprehensive": 2100,
        "public.tweets": 500,
        "public.posts": 400,
        "public.real_tweet_metrics": 750,
        "public.tweet_metrics": 1,
    }
    (key,) = found[("set-aside", "public.tweet_metrics", None)].samples
    assert key[0] == "t6" and at(key[1]) == at("2026-11-03T00:00:00+00:00")
    # Each finding points at the plan: the source's key, the new column, the check.
    lines = PLAN.read_text().splitlines()
    assert lines[found[("null-key", "public.outcomes", None)].line - 1].strip() == 'key = ["tweet_id", "collected_at"]'
    assert 'name = "predicted_er"' in lines[found[("lossy-cast", comprehensive, "predicted_engagement")].line - 1]
    assert "decision_type IN" in lines[found[("check", "public.content_metadata", None)].line - 1]


def test_preflight_writes_nothing_inside_its_read_only_snapshot_and_leaves_nothing_behind(
    db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant_dirty_rows(db)
    plan = load_plan(PLAN)
    mappings, _ = check(db, plan)
    statements: list[str] = []
    execute = db.execute

    def recording(query, params=None, **kwargs):
        statements.append(query if isinstance(query, str) else query.as_string(db))
        return execute(query, params, **kwargs)

    monkeypatch.setattr(db, "execute", recording)
    assert preflight.run(db, plan, mappings)
    monkeypatch.undo()
    begin = statements.index("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    end = next(i for i, s in enumerate(statements) if s.startswith("DROP FUNCTION"))
    assert begin < end
    assert not [s for s in statements[begin:end] if s.split()[0] in ("CREATE", "DROP", "INSERT", "UPDATE", "DELETE")]
    assert all('"pg_temp".' in s for s in statements if s.startswith(("CREATE", "DROP")))
    left = db.execute(
        "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname LIKE 'pg_temp%' AND p.proname LIKE 'dualshift%'"
    ).fetchone()[0]
    assert left == 0


def test_migrate_create_refuses_on_preflight_errors_and_creates_nothing(dsn: str, db: psycopg.Connection) -> None:
    plant_dirty_rows(db)
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), "create"])
    assert result.exit_code == 2
    assert "preflight found rows that would be lost or refused" in result.stderr
    for text in (
        "held by more than one row",
        "NULL in the key",
        "change when cast",
        "cannot be cast",
        "is NOT NULL",
        "violate the check",
    ):
        assert text in result.stderr, text
    assert db.execute(
        "SELECT to_regclass('public.content_queue'), to_regclass('public.engagement_metrics'),"
        " to_regclass('dualshift_private.state'), to_regnamespace('dualshift'), to_regnamespace('dualshift_private')"
    ).fetchone() == (None, None, None, None, None)


def test_skip_preflight_creates_and_is_audited(dsn: str, db: psycopg.Connection) -> None:
    plant_dirty_rows(db)
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), "create", "--skip-preflight"])
    assert result.exit_code == 0, result.output
    assert db.execute("SELECT to_regclass('public.content_queue')").fetchone()[0] is not None
    detail = db.execute(
        "SELECT detail FROM dualshift_private.audit WHERE phase = 'create' AND result = 'ok'"
    ).fetchone()[0]
    assert detail["preflight"]["skipped"] is True


def test_a_clean_database_creates_with_the_preflight_figures(dsn: str, db: psycopg.Connection) -> None:
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), "create"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)["preflight"]
    assert (figures["skipped"], figures["errors"], figures["warnings"], len(figures["warned"])) == (False, 0, 13, 9)
    assert set(figures["dependents"].values()) == {"archive"} and len(figures["dependents"]) == 9  # id sequences
    # one line per source, naming it, the column and the fix
    tweets = next(line for line in figures["warned"] if "public.tweets.id" in line)
    assert "RETURNING id` through the view tweets gives NULL; map it: add a column id to posted_content" in tweets
    assert "\n" not in tweets


def test_validation_reports_every_problem_at_once(db: psycopg.Connection, tmp_path) -> None:
    text = (
        PLAN.read_text()
        .replace('table = "posts"', 'table = "postz"')
        .replace('key = ["tweet_id", "measured_at"]', 'key = ["tweet_id", "measured"]')
        .replace('drop = ["id", "features"]', 'drop = ["id", "features", "gone"]')
        .replace('drop = ["id", "collection_phase"]', 'drop = ["id"]')
    )
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ValidationError) as raised:
        validate(db, load_plan(bad))
    assert [(f.check, f.source) for f in raised.value.findings] == [
        ("missing-table", "public.postz"),
        ("missing-column", "public.tweet_metrics"),
    ]
    postz_line = text.splitlines().index('  table = "postz"') + 1
    assert f"{bad}:{postz_line}: error: source public.postz of posted_content: no such table" in str(raised.value)
    _, findings = check(db, load_plan(bad))
    warnings = {(f.check, f.column) for f in findings if not f.is_error}
    assert warnings == {
        ("dropped-column-absent", "gone"),
        ("unmapped-column", "collection_phase"),
        ("dropped-generated-key", "id"),
    }


def test_a_column_shadowed_by_a_rename_is_refused(db: psycopg.Connection, tmp_path) -> None:
    # tweet_metrics renames measured_at to collected_at; an old column also named collected_at would
    # migrate nowhere, silently (the plan loader cannot see it: only the database knows the columns).
    db.execute("ALTER TABLE tweet_metrics ADD COLUMN collected_at timestamptz")
    _, findings = check(db, load_plan(PLAN))
    assert [(f.check, f.source, f.column) for f in findings if f.is_error] == [
        ("shadowed-column", "public.tweet_metrics", "collected_at")
    ]


MIXED_CASE_PLAN = """
version = 1
name = "reports"

[[tables]]
name = "report_log"
key = ["id"]
columns = [
  { name = "id", type = "bigint", nullable = false },
  { name = "kind", type = 'public."reportTypes"', nullable = false },
  { name = "kinds", type = 'public."reportTypes"[]' },
]

  [[tables.sources]]
  table = "reports"
  key = ["id"]
"""


@pytest.fixture
def reports(db: psycopg.Connection) -> psycopg.Connection:
    db.execute(
        """CREATE TYPE public."reportTypes" AS ENUM ('daily', 'weekly');
        CREATE TABLE public.reports (id bigint PRIMARY KEY, kind text NOT NULL, kinds text[]);
        INSERT INTO public.reports SELECT i, (ARRAY['daily', 'weekly'])[1 + i % 2], ARRAY['daily']
          FROM generate_series(1, 50) i;"""
    )
    return db


def test_a_mixed_case_enum_type_loads_checks_and_creates(reports: psycopg.Connection, dsn: str, tmp_path) -> None:
    plan_file = tmp_path / "reports.toml"
    plan_file.write_text(MIXED_CASE_PLAN)
    plan = load_plan(plan_file)
    assert plan.table("report_log").column("kind").type == 'public."reportTypes"'
    assert preflight.check_all(reports, plan) == []
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(plan_file), "create"])
    assert result.exit_code == 0, result.output
    types = reports.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = 'public.report_log'::regclass AND a.attname IN ('kind', 'kinds') ORDER BY 1"
    ).fetchall()
    assert types == [("kind", '"reportTypes"'), ("kinds", '"reportTypes"[]')]


def test_a_mixed_case_enum_unquoted_or_a_bad_label_is_named(reports: psycopg.Connection, tmp_path) -> None:
    plan_file = tmp_path / "reports.toml"
    plan_file.write_text(MIXED_CASE_PLAN.replace("""type = 'public."reportTypes"',""", 'type = "reportTypes",'))
    _, findings = check(reports, load_plan(plan_file))
    (finding,) = findings
    assert finding.check == "unknown-type" and finding.line == 10
    assert 'write it as public."reportTypes"' in finding.message
    reports.execute("UPDATE public.reports SET kind = 'monthly' WHERE id = 7")
    findings = preflight.check_all(reports, parse_plan(MIXED_CASE_PLAN))
    assert [(f.check, f.column, f.count, f.samples) for f in findings] == [("invalid-cast", "kind", 1, ([7],))]


def test_keys_are_compared_in_the_new_key_type(db: psycopg.Connection, tmp_path) -> None:
    # Two spellings of one uuid are two keys in a text column and one in the new uuid key: only one
    # row could reach the new table.
    db.execute(
        "CREATE TABLE public.legacy (id text, note text);"
        " INSERT INTO public.legacy VALUES ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'upper'),"
        " ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'lower'), ('b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'other'),"
        " (NULL, 'no key')"
    )
    plan_file = tmp_path / "legacy.toml"
    plan_file.write_text(
        'version = 1\nname = "legacy"\n[[tables]]\nname = "notes"\nkey = ["id"]\n'
        'columns = [{ name = "id", type = "uuid", nullable = false }, { name = "note", type = "text" }]\n'
        '  [[tables.sources]]\n  table = "legacy"\n  key = ["id"]\n'
    )
    findings = preflight.check_all(db, load_plan(plan_file))
    # Without a primary key of its own, a NULL-key row can only be shown by its key.
    assert [(f.check, f.count, f.samples) for f in findings] == [
        ("null-key", 1, ([None],)),
        ("duplicate-key", 1, (["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],)),
    ]


def test_functions_and_operators_planted_in_public_are_never_called(db: psycopg.Connection) -> None:
    # A role with CREATE on public plants look-alikes that would win name resolution on a session
    # whose search_path puts public first; each records that it ran.
    plant_dirty_rows(db)
    db.execute(
        """
        CREATE FUNCTION public.spy_uuid_eq(a uuid, b uuid) RETURNS boolean LANGUAGE plpgsql AS
          $$ BEGIN PERFORM pg_catalog.set_config('spy.called', 'uuid =', false); RETURN pg_catalog.uuid_eq(a, b); END $$;
        CREATE OPERATOR public.= (LEFTARG = uuid, RIGHTARG = uuid, FUNCTION = public.spy_uuid_eq);
        CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE plpgsql AS
          $$ BEGIN PERFORM pg_catalog.set_config('spy.called', 'lower', false); RETURN $1; END $$;
        CREATE FUNCTION public.to_regtype(text) RETURNS regtype LANGUAGE plpgsql AS
          $$ BEGIN PERFORM pg_catalog.set_config('spy.called', 'to_regtype', false); RETURN NULL; END $$;
        CREATE FUNCTION public.json_build_array(uuid) RETURNS json LANGUAGE plpgsql AS
          $$ BEGIN PERFORM pg_catalog.set_config('spy.called', 'json_build_array', false); RETURN '[]'; END $$;
        """
    )
    db.execute("SET search_path = public, pg_catalog")
    assert db.execute("SELECT current_setting('spy.called', true)").fetchone()[0] in (None, "")
    findings = preflight.check_all(db, load_plan(PLAN))
    assert len([f for f in findings if f.is_error]) == 7
    assert db.execute("SELECT current_setting('spy.called', true)").fetchone()[0] in (None, "")


def test_json_text_truncation_and_integer_range(db: psycopg.Connection, tmp_path) -> None:
    db.execute(
        "CREATE TABLE public.misc (id integer PRIMARY KEY, doc text, code text, big bigint);"
        " INSERT INTO public.misc VALUES (1, '{\"a\": 1}', 'abc', 7), (2, '{not json', 'abcde', 8),"
        " (3, '[1, 2]', 'abcdefgh', 9), (4, NULL, NULL, 3000000000), (5, ' {\"b\" : 2} ', 'ab ', -1)"
    )
    plan_file = tmp_path / "misc.toml"
    plan_file.write_text(
        'version = 1\nname = "misc"\n[[tables]]\nname = "misc_v2"\nkey = ["id"]\ncolumns = [\n'
        '  { name = "id", type = "bigint", nullable = false },\n  { name = "doc", type = "jsonb" },\n'
        '  { name = "code", type = "varchar(5)" },\n  { name = "big", type = "integer" },\n]\n'
        '  [[tables.sources]]\n  table = "misc"\n  key = ["id"]\n'
    )
    findings = preflight.check_all(db, load_plan(plan_file))
    # Text that parses is fine however it is spelled (row 5's spaces); truncation and range are not.
    assert sorted((f.check, f.column, f.count, f.samples) for f in findings) == [
        ("invalid-cast", "big", 1, ([4],)),
        ("invalid-cast", "doc", 1, ([2],)),
        ("lossy-cast", "code", 1, ([3],)),
    ]
    lines = plan_file.read_text().splitlines()
    assert all(f'name = "{f.column}"' in lines[f.line - 1] for f in findings)
    # Where every value casts, one plain scan counts what changes (no value-by-value functions)…
    plan_file.write_text(
        plan_file.read_text()
        .replace('{ name = "doc", type = "jsonb" }', '{ name = "doc", type = "text" }')
        .replace('{ name = "big", type = "integer" }', '{ name = "big", type = "bigint" }')
    )
    findings = preflight.check_all(db, load_plan(plan_file))
    assert [(f.check, f.column, f.count, f.samples) for f in findings] == [("lossy-cast", "code", 1, ([3],))]
    # …and a domain's own check refuses a value as any invalid input does.
    db.execute("CREATE DOMAIN public.positive AS bigint CHECK (VALUE > 0); UPDATE public.misc SET big = 0 WHERE id = 4")
    plan_file.write_text(plan_file.read_text().replace('type = "bigint" }', 'type = "public.positive" }'))
    findings = preflight.check_all(db, load_plan(plan_file))
    assert sorted((f.check, f.column, f.count, f.samples) for f in findings) == [
        ("invalid-cast", "big", 2, ([4], [5])),
        ("lossy-cast", "code", 1, ([3],)),
    ]
