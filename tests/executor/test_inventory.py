"""The inventory of what depends on the old tables (executor/inventory.py) on fixtures/supabase, and
the plan's `[dependents]` decisions that `plan check --dsn` and `migrate create`'s preflight require."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor import inventory
from dualshift.executor.supabase_data import PLAN
from dualshift.plan import load_plan

from .supabase_scenario import loaded_database, migrate_here

# Counted by hand in fixtures/supabase/schema.sql: 2 views, 1 foreign key into an old table, 1 trigger
# (and its function), 3 memberships of supabase_realtime, 6 identity/serial sequences; no function body,
# other table's policy or pg_cron job names an old table.
EXPECTED = [
    # content_queue.quality_score is numeric(5,4), not numeric: the view cannot read it in place of the old one.
    ("view public.owner_content", "public.content_metadata", ("recreate", "archive", "drop")),
    # posted_content holds the partitions of posted_decisions and tweets: the view cannot read it in their place.
    ("view public.post_engagement", "public.outcomes, public.posted_decisions", ("recreate", "archive", "drop")),
    ("foreign key public.replies.replies_decision_id_fkey", "public.posted_decisions", ("repoint", "archive", "drop")),
    (
        "trigger public.content_metadata.content_metadata_updated_at",
        "public.content_metadata",
        ("carry", "archive", "drop"),
    ),
    ("publication supabase_realtime public.content_metadata", "public.content_metadata", ("carry", "archive", "drop")),
    ("publication supabase_realtime public.posted_decisions", "public.posted_decisions", ("carry", "archive", "drop")),
    ("publication supabase_realtime public.tweets", "public.tweets", ("carry", "archive", "drop")),
    *(
        (f"sequence public.{table}_id_seq", f"public.{table}", ("archive",))
        for table in (
            "content_generation_metadata_comprehensive",
            "content_metadata",
            "outcomes",
            "posted_decisions",
            "tweet_metrics",
            "tweets",
        )
    ),
]


@pytest.fixture(scope="module")
def supabase_dsn(admin_dsn: str) -> Iterator[str]:
    with loaded_database(admin_dsn, rows=60, clean=True) as dsn:
        yield dsn


def without_decisions(tmp_path: Path, *keys: str, replace: dict[str, str] | None = None) -> Path:
    """The fixture's plan with the decision lines of `keys` removed (and some replaced)."""
    lines = [line for line in PLAN.read_text().splitlines() if not any(line.startswith(f'"{k}"') for k in keys)]
    text = "\n".join(lines) + "\n"
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_the_inventory_lists_every_dependent_object_of_the_fixture(supabase_dsn: str) -> None:
    with psycopg.connect(supabase_dsn, autocommit=True) as conn:
        found, findings = inventory.findings(conn, load_plan(PLAN))
    assert [(d.key, d.old_table, d.does) for d in found] == EXPECTED
    assert next(d for d in found if d.kind == "trigger").detail == "calls public.set_updated_at()"
    assert findings == []  # the fixture's plan decides each


def test_plan_check_json_lists_the_inventory_with_each_decision(supabase_dsn: str, tmp_path: Path) -> None:
    plan = without_decisions(tmp_path, "view public.post_engagement")
    result = CliRunner().invoke(app, ["plan", "check", "--plan", str(plan), "--dsn", supabase_dsn, "--json"])
    listed = json.loads(result.stdout)["dependents"]
    assert [(f"{d['kind']} {d['name']}", d["old_table"], tuple(d["can"])) for d in listed] == EXPECTED
    decisions = {f"{d['kind']} {d['name']}": d["decision"] for d in listed}
    assert decisions["view public.post_engagement"] is None  # the missing line (an error finding too)
    assert decisions["foreign key public.replies.replies_decision_id_fkey"] == "repoint"
    assert decisions["sequence public.tweets_id_seq"] == "archive"


def test_plan_check_names_each_undecided_dependent_and_the_line_to_add(supabase_dsn: str, tmp_path: Path) -> None:
    plan = without_decisions(
        tmp_path,
        "view public.post_engagement",
        "foreign key public.replies.replies_decision_id_fkey",
        "sequence public.tweets_id_seq",
        replace={'"trigger public.content_metadata.content_metadata_updated_at" = "carry"': (
            '"trigger public.content_metadata.content_metadata_updated_at" = "repoint"'
        )},
    )  # fmt: skip
    result = CliRunner().invoke(app, ["plan", "check", "--plan", str(plan), "--dsn", supabase_dsn, "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    about = {f["message"].split(" depends on ")[0]: f for f in report["findings"] if f["check"].startswith("dependent")}
    assert set(about) == {
        "view public.post_engagement",
        "foreign key public.replies.replies_decision_id_fkey",
        "sequence public.tweets_id_seq",
        "trigger public.content_metadata.content_metadata_updated_at",
    }
    section = plan.read_text().splitlines().index("[dependents]") + 1
    view = about["view public.post_engagement"]
    assert view["severity"] == "error" and view["line"] == section
    assert view["message"].endswith('add to [dependents]: "view public.post_engagement" = "recreate"')
    assert about["foreign key public.replies.replies_decision_id_fkey"]["message"].endswith(' = "repoint"')
    assert about["sequence public.tweets_id_seq"]["severity"] == "error"
    assert about["sequence public.tweets_id_seq"]["message"].endswith(' = "archive"')
    trigger = about["trigger public.content_metadata.content_metadata_updated_at"]
    assert trigger["check"] == "dependent-decision"
    assert "cannot repoint it; it can carry or archive or drop" in trigger["message"]
    assert trigger["line"] == next(
        n for n, line in enumerate(plan.read_text().splitlines(), 1) if line.startswith('"trigger ')
    )


def test_create_refuses_while_a_dependent_has_no_decision(supabase_dsn: str, tmp_path: Path) -> None:
    plan = without_decisions(tmp_path, "view public.owner_content")
    step = migrate_here(supabase_dsn, "create", plan=plan)
    assert step.exit_code == 2, step.output
    assert 'add to [dependents]: "view public.owner_content" = "recreate"' in step.output
    with psycopg.connect(supabase_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.content_queue')").fetchone()[0] is None


def test_a_decision_that_is_not_one_of_the_five_is_a_plan_error(tmp_path: Path) -> None:
    from dualshift.plan import PlanError

    plan = without_decisions(tmp_path, replace={'"view public.owner_content" = "recreate"': (
        '"view public.owner_content" = "rebuild"'
    )})  # fmt: skip
    with pytest.raises(PlanError, match="must be one of recreate, repoint, carry, archive, drop"):
        load_plan(plan)


PLANTED = """
CREATE VIEW public.owner_content_count AS SELECT count(*) AS n FROM public.owner_content;
CREATE MATERIALIZED VIEW public.tweet_days AS SELECT date_trunc('day', posted_at) AS day, count(*) FROM public.tweets GROUP BY 1;
CREATE FUNCTION public.tweet_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM public.tweets $$;
CREATE FUNCTION public.unrelated() RETURNS int LANGUAGE sql AS $$ SELECT 1 AS tweets_seen $$;
CREATE POLICY replies_of_tweets ON public.replies FOR SELECT TO authenticated
  USING (EXISTS (SELECT 1 FROM public.tweets t WHERE t.decision_id = replies.decision_id));
CREATE TABLE public.authors (handle text PRIMARY KEY);
ALTER TABLE public.tweets ADD COLUMN author text CONSTRAINT tweets_author_fkey REFERENCES public.authors (handle);
CREATE FUNCTION public.note_outcome() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER note_outcome AFTER INSERT ON public.outcomes FOR EACH ROW EXECUTE FUNCTION public.note_outcome();
"""


def test_every_other_kind_of_dependent_is_found_with_what_cleanup_does(admin_dsn: str) -> None:
    with loaded_database(admin_dsn, rows=30, clean=True) as dsn, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLANTED)
        found = {d.key: (d.old_table, d.detail, d.does) for d in inventory.take(conn, load_plan(PLAN))}
    planted = {key: found[key] for key in found.keys() - {key for key, _, _ in EXPECTED}}
    assert planted == {
        "view public.owner_content_count": (
            "public.content_metadata",
            "reads it through other views",
            ("recreate", "drop"),
        ),
        "materialized view public.tweet_days": ("public.tweets", "reads it", ("archive", "recreate", "drop")),
        "function public.tweet_count()": ("public.tweets", "its body names it", ("recreate", "drop")),
        "policy public.replies.replies_of_tweets": ("public.tweets", "reads it", ("recreate", "drop")),
        "foreign key public.tweets.tweets_author_fkey": (
            "public.tweets",
            "FOREIGN KEY (author) REFERENCES public.authors(handle)",
            ("archive", "drop"),
        ),
        "trigger public.outcomes.note_outcome": (
            "public.outcomes",
            "calls public.note_outcome(); stays on the archive: only row-level BEFORE INSERT/UPDATE triggers are"
            " carried over",
            ("archive", "drop"),
        ),
    }
