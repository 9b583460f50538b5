"""The plan file: the contract shared by codemods, wrapper and executor."""

from __future__ import annotations

from pathlib import Path

import pytest

from dualshift.plan import PlanError, load_plan, parse_plan

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "xbot" / "dualshift.toml"


def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def test_example_plan_is_the_seeds_nine_to_three() -> None:
    plan = load_plan(EXAMPLE)
    assert [t.name for t in plan.tables] == ["content_queue", "posted_content", "engagement_metrics"]
    assert len(plan.old_tables) == 9
    assert plan.table_mapping["tweets"] == "posted_content"
    assert plan.table("content_queue").sources[0].table == "content_metadata"  # precedence order kept


def test_column_mapping_applies_renames_drops_and_skips_constants() -> None:
    plan = load_plan(EXAMPLE)
    posted = plan.table("posted_content")
    mapping = posted.column_mapping("tweets")
    assert mapping["text"] == "content"
    assert mapping["url"] == "tweet_url"
    assert "source_table" not in mapping.values()  # a constant, not a copied column
    assert "decision_type" not in mapping.values()
    assert "id" not in mapping
    metrics = plan.table("engagement_metrics").source("tweet_metrics")
    assert metrics.new_column("like_count", plan.table("engagement_metrics").column_names) == "likes"
    assert metrics.new_column("id", plan.table("engagement_metrics").column_names) is None


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('table = "posts"', 'table = "posts; DROP TABLE x"', "not a plain SQL identifier"),
        ('name = "content_queue"', 'name = "content\\"queue"', "not a plain SQL identifier"),
        ('type = "uuid"', 'type = "uuid; drop"', "invalid SQL type"),
        ("default = \"'queued'\"", "default = \"'queued'; DELETE FROM x\"", "without ; or comments"),
        ('key = ["tweet_id", "measured_at"]', 'key = ["tweet_id"]', "has a key of 1 column(s)"),
        ('rename = { topic = "raw_topic" }', 'rename = { topic = "no_such_column" }', "does not have"),
        (
            'rename = { topic = "raw_topic", predicted_engagement = "predicted_er" }',
            'rename = { topic = "raw_topic", predicted_engagement = "raw_topic" }',
            "renames two columns to raw_topic",
        ),
        ('name = "xbot-9-to-3"', 'name = "xbot 9 to 3"', "the migration's id"),
        ('table = "tweets"', 'view_writes = "maybe"\n  table = "tweets"', "view_writes of source tweets"),
    ],
)
def test_bad_plans_are_rejected_with_file_and_line(old: str, new: str, message: str) -> None:
    text = example_text()
    assert old in text
    broken = text.replace(old, new, 1)
    with pytest.raises(PlanError) as caught:
        parse_plan(broken, "plan.toml")
    error = caught.value
    assert message in str(error)
    assert str(error).startswith("plan.toml:")
    assert error.line is not None
    # The line named is the one that holds the offending text.
    assert (
        new.split("=")[0].strip() in broken.splitlines()[error.line - 1] or new in broken.splitlines()[error.line - 1]
    )


def test_invalid_toml_reports_its_line() -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan('version = 1\n[schemas\nnew = "x"\n', "broken.toml")
    assert caught.value.line == 2
    assert "invalid TOML" in str(caught.value)


def test_a_source_cannot_feed_two_new_tables() -> None:
    text = example_text().replace('table = "posts"', 'table = "tweets"', 1)
    with pytest.raises(PlanError, match="feeds both"):
        parse_plan(text, "plan.toml")


def test_missing_file_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "absent.toml")


def test_a_plan_without_a_name_is_refused_on_its_first_line() -> None:
    text = example_text().replace('name = "xbot-9-to-3"\n', "", 1)
    with pytest.raises(PlanError, match="needs `name") as caught:
        parse_plan(text, "plan.toml")
    assert caught.value.line == text.splitlines().index("version = 1") + 1


def test_sources_with_distinct_constants_are_partitions_and_twins_are_not() -> None:
    plan = load_plan(EXAMPLE)
    assert plan.name == "xbot-9-to-3" and plan.timezone == "UTC"
    queue, posted, metrics = plan.tables
    assert queue.sources_are == "twins" and queue.partition_predicate("content_metadata") is None
    assert posted.sources_are == "partitions"
    assert posted.partition_predicate("tweets") == "\"source_table\" = 'tweets'"
    # outcomes sets no data_source: it owns the rows no other source's predicate selects.
    rest = metrics.partition_predicate("outcomes")
    assert rest.count("NOT coalesce") == 3 and "'tweet_metrics'" in rest


def test_partitions_need_an_owner_for_every_source_but_one() -> None:
    text = example_text().replace('name = "posted_content"', 'name = "posted_content"\nsources_are = "partitions"')
    text = text.replace('constants = { source_table = "tweets", decision_type = "single" }', "", 1)
    text = text.replace('constants = { source_table = "posts", decision_type = "single" }', "", 1)
    with pytest.raises(PlanError, match="at most one source may own the rest"):
        parse_plan(text, "plan.toml")
