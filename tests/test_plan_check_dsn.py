"""`dualshift plan check --dsn`: the executor's validation and the preflight, every problem at once,
as a table and as JSON; and the plan's type names (quoted, mixed-case, schema-qualified)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor.catalog import columns_of
from dualshift.plan import PlanError, load_plan, parse_plan
from dualshift.plan_tools import check_plan
from dualshift.reports.interaction_map import load_map
from tests.executor import conftest as executor_fixtures

# The executor tests' database fixtures: a fresh database per test holding the xbot fixture's old tables.
admin_dsn, dsn, db = executor_fixtures.admin_dsn, executor_fixtures.dsn, executor_fixtures.db
PLAN = executor_fixtures.PLAN

MAP = PLAN.parent / "expected" / "DATABASE_INTERACTION_MAP.json"
FINDING_KEYS = {"severity", "check", "message", "table", "source", "column", "line", "count", "samples"}


def two_mistakes(tmp_path: Path) -> tuple[Path, int, int]:
    """The fixture plan with a source table that does not exist and a type that does not exist."""
    text = PLAN.read_text()
    text = text.replace('table = "posts"', 'table = "postz"')
    text = text.replace('{ name = "tone", type = "text" }', '{ name = "tone", type = "tone_kind" }')
    path = tmp_path / "two_mistakes.toml"
    path.write_text(text)
    lines = text.splitlines()
    return path, lines.index('  table = "postz"') + 1, lines.index('  { name = "tone", type = "tone_kind" },') + 1


def invoke(*args: str):
    return CliRunner().invoke(app, ["plan", "check", *args])


def test_two_mistakes_are_both_printed_with_their_lines(dsn: str, tmp_path: Path) -> None:
    plan, postz_line, tone_line = two_mistakes(tmp_path)
    result = invoke("--plan", str(plan), "--dsn", dsn)
    assert result.exit_code == 1
    rows = [line for line in result.stdout.splitlines() if "│ error" in line]
    assert len(rows) == 2
    assert (
        f"{plan}:{tone_line} " in rows[0] and "unknown-type" in rows[0] and "type tone_kind does not exist" in rows[0]
    )
    assert f"{plan}:{postz_line} " in rows[1] and "missing-table" in rows[1] and "public.postz" in rows[1]
    assert result.stdout.rstrip().endswith("2 error(s), 10 warning(s)")


def test_json_has_the_documented_shape(dsn: str, tmp_path: Path) -> None:
    plan, postz_line, tone_line = two_mistakes(tmp_path)
    result = invoke("--plan", str(plan), "--dsn", dsn, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert set(report) == {"plan", "passed", "errors", "warnings", "findings", "precedence", "dependents"}
    assert (report["plan"], report["passed"], report["errors"], report["warnings"]) == (str(plan), False, 2, 10)
    for finding in report["findings"]:
        assert set(finding) == FINDING_KEYS
        assert finding["severity"] in ("error", "warning") and isinstance(finding["samples"], list)
    errors = [(f["check"], f["line"]) for f in report["findings"] if f["severity"] == "error"]
    assert errors == [("unknown-type", tone_line), ("missing-table", postz_line)]
    # content_queue has a broken type and posts is gone: the data checks run on what can be read.
    set_aside = {f["source"]: (f["count"], len(f["samples"])) for f in report["findings"] if f["check"] == "set-aside"}
    assert set_aside == {"public.tweets": (500, 10), "public.real_tweet_metrics": (750, 10)}


def test_a_plan_that_fits_passes_and_prints_the_warnings(dsn: str) -> None:
    result = invoke("--plan", str(PLAN), "--dsn", dsn, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["errors"] == 0 and report["warnings"] == 13


def test_a_code_column_the_database_lacks_is_a_warning_about_the_code(db: psycopg.Connection) -> None:
    plan = load_plan(PLAN)
    calls = list(load_map(MAP).calls)
    writer = next(c for c in calls if c.table == "outcomes" and c.is_write)
    calls.append(dataclasses.replace(writer, write_columns=("post_hour",), line=999))
    without_database = [f for f in check_plan(plan, PLAN.read_text(), calls) if "post_hour" in f.message]
    assert [(f.severity, f.check) for f in without_database] == [("error", "code-unmapped-column")]
    columns = {s.table: list(columns_of(db, s.schema, s.table)) for t in plan.tables for s in t.sources}
    with_database = [f for f in check_plan(plan, PLAN.read_text(), calls, columns) if "post_hour" in f.message]
    assert [(f.severity, f.check, f.source, f.column) for f in with_database] == [
        ("warning", "code-column-absent", "public.outcomes", "post_hour")
    ]
    assert "the database does not have" in with_database[0].message


def test_map_and_dsn_together(dsn: str) -> None:
    result = invoke("--plan", str(PLAN), "--map", str(MAP), "--dsn", dsn, "--json")
    assert result.exit_code == 0, result.output
    checks = sorted(f["check"] for f in json.loads(result.stdout)["findings"])
    # every xbot source drops the id its database generates: one warning each
    assert checks == ["code-dynamic-table", *["dropped-generated-key"] * 9, *["set-aside"] * 4]


def test_bad_invocations_say_so_in_one_line(tmp_path: Path) -> None:
    result = invoke("--plan", str(PLAN))
    assert result.exit_code == 2 and "give --map" in result.stderr
    result = invoke("--plan", str(PLAN), "--dsn", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert result.exit_code == 2 and result.stderr.startswith("dualshift: --dsn: cannot connect")
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# type names in the plan

PLAN_WITH_TYPE = """version = 1
name = "t"
[[tables]]
name = "n"
key = ["id"]
columns = [{{ name = "id", type = "bigint" }}, {{ name = "kind", type = {spelled} }}]
  [[tables.sources]]
  table = "o"
  key = ["id"]
"""


@pytest.mark.parametrize(
    "spelled",
    [
        "'\"reportTypes\"'",
        "'public.\"reportTypes\"'",
        '\'"public"."reportTypes"\'',
        "'public.\"reportTypes\"[]'",
        "'public.report_types[][]'",
        '"numeric(5,4)"',
        '"timestamp(3) with time zone"',
        '"character varying(20)"',
        '"double precision"',
        '\'"a ""quoted"" name"\'',
    ],
)
def test_type_names_sql_accepts(spelled: str) -> None:
    plan = parse_plan(PLAN_WITH_TYPE.format(spelled=spelled))
    assert plan.tables[0].column("kind").type == tomllib.loads(f"v = {spelled}")["v"]


@pytest.mark.parametrize(
    "spelled",
    [
        '"uuid; drop table x"',
        "'\"reportTypes'",
        '\'"a"; drop table x; "b"\'',
        '"text primary key"',
        '"text not null default 1"',
        "'text collate \"C\"'",
        '"a.b.c"',
        '"text -- comment"',
        '"(text)"',
        '"int4range(1,2) or true"',
    ],
)
def test_type_names_anything_else_is_refused(spelled: str) -> None:
    with pytest.raises(PlanError, match="invalid SQL type") as raised:
        parse_plan(PLAN_WITH_TYPE.format(spelled=spelled))
    assert raised.value.line == 6
