"""verify's verdict: column names that look like aliases, NULL keys, duplicate keys, lossy casts, the
operator's session settings, and functions planted in `public`."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from dualshift.executor import verify
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import connect
from dualshift.executor.phases import Executor
from dualshift.plan import parse_plan


def _plan(name: str, columns: str, key: str, extra: str = "") -> str:
    return f"""
version = 1
name = "{name}"
[[tables]]
name = "target"
key = [{key}]
columns = [
{columns}
]
  [[tables.sources]]
  table = "origin"
  key = [{key}]
{extra}
"""


def _migrated(dsn: str, plan_text: str) -> Executor:
    ex = Executor(connect(dsn), parse_plan(plan_text, "plan.toml"), dsn)
    ex.create()
    ex.backfill(BackfillOptions(batch_size=500))
    return ex


ALIAS_COLUMNS = """
  { name = "e", type = "uuid", nullable = false },
  { name = "n", type = "text" },
  { name = "o", type = "text" },
  { name = "h", type = "bigint" },
  { name = "b", type = "text" },
  { name = "u", type = "text" },
  { name = "w", type = "text" },
  { name = "s", type = "text" },
  { name = "j", type = "jsonb" },
"""


@pytest.fixture
def aliases(dsn: str, db: psycopg.Connection) -> Executor:
    db.execute(
        "CREATE TABLE origin (e uuid PRIMARY KEY, n text, o text, h bigint, b text, u text, w text, s text, j jsonb)"
    )
    db.execute(
        "INSERT INTO origin SELECT md5('a' || i)::uuid, 'n' || i, 'o' || i, i, 'b' || i % 7, 'u', 'w', 's',"
        " jsonb_build_object('i', i) FROM generate_series(1, 5000) i"
    )
    return _migrated(dsn, _plan("test-aliases", ALIAS_COLUMNS, '"e"'))


def test_columns_named_like_aliases_pass_when_equal(aliases: Executor) -> None:
    report = aliases.verify()
    assert report["passed"], report
    assert report["tables"][0]["expected_rows"] == report["tables"][0]["new_rows"] == 5000


def test_columns_named_like_aliases_find_a_planted_difference(
    aliases: Executor, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify, "LEAF_ROWS", 100)  # bisect: ranges, width_bucket, the join, the samples
    db.execute("UPDATE target SET n = 'planted', j = '{\"i\": -1}' WHERE e = md5('a77')::uuid")
    db.execute("DELETE FROM target WHERE e = md5('a78')::uuid")
    table = aliases.verify()["tables"][0]
    assert (table["missing_rows"], table["extra_rows"], table["mismatched_rows"]) == (1, 0, 1)
    assert table["bisection"]["levels"] >= 1
    differing = next(s for s in table["samples"] if s["problem"] == "values differ")
    assert differing["columns"] == {
        "n": {"expected": "n77", "new": "planted"},
        "j": {"expected": {"i": 77}, "new": {"i": -1}},
    }


def test_a_column_with_the_reserved_prefix_is_refused(dsn: str, db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE origin (id int PRIMARY KEY, _ds_h text)")
    columns = '{ name = "id", type = "integer", nullable = false },\n{ name = "_ds_h", type = "text" },'
    ex = _migrated(dsn, _plan("test-prefix", columns, '"id"'))
    with pytest.raises(Exception, match="_ds_h start with _ds_, which verify reserves"):
        ex.verify()


KEYED = """
  { name = "team_id", type = "integer" },
  { name = "member", type = "text" },
  { name = "score", type = "integer" },
"""


@pytest.fixture
def teams(dsn: str, db: psycopg.Connection) -> Executor:
    db.execute("CREATE TABLE origin (team_id integer, member text, score integer)")  # no key constraint
    db.execute("INSERT INTO origin SELECT i / 3, 'm' || i % 3, i FROM generate_series(0, 2999) i")
    return _migrated(dsn, _plan("test-keys", KEYED, '"team_id", "member"'))


def test_rows_with_a_null_key_part_count_as_missing(teams: Executor, db: psycopg.Connection) -> None:
    assert teams.verify()["passed"]
    db.execute("INSERT INTO origin VALUES (NULL, 'ghost', 1), (5000, NULL, 2)")
    table = teams.verify()["tables"][0]
    assert table["missing_rows"] == 2 and table["null_key_rows"] == 2
    nulls = [s for s in table["samples"] if "NULL part" in s["problem"]]
    assert sorted(s["key"]["member"] or "" for s in nulls) == ["", "ghost"]


def test_a_key_twice_in_one_source_is_reported_not_hidden(teams: Executor, db: psycopg.Connection) -> None:
    assert teams.verify()["passed"]
    db.execute("INSERT INTO origin SELECT team_id, member, score FROM origin WHERE team_id = 42 AND member = 'm1'")
    report = teams.verify()
    table = report["tables"][0]
    assert not report["passed"]
    assert table["duplicate_keys"] == 1 and table["mismatched_rows"] >= 1
    [duplicate] = [s for s in table["samples"] if "rows of origin" in s["problem"]]
    assert duplicate["key"] == {"team_id": 42, "member": "m1"}


def test_a_value_rounded_by_the_new_type_fails_verify(dsn: str, db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE origin (id int PRIMARY KEY, score numeric, label varchar(40), ref text)")
    db.execute(
        "INSERT INTO origin SELECT i, (i % 10) / 10.0, 'label ' || i, md5('r' || i)::uuid::text"
        " FROM generate_series(1, 2000) i"
    )
    columns = """
  { name = "id", type = "integer", nullable = false },
  { name = "score", type = "numeric(5,4)" },
  { name = "label", type = "text" },
  { name = "ref", type = "uuid" },
"""
    ex = _migrated(dsn, _plan("test-lossy", columns, '"id"'))
    assert ex.verify()["passed"]  # an identical copy: widening varchar → text and text → uuid lose nothing
    db.execute("UPDATE origin SET score = 0.123456 WHERE id = 7")
    db.execute("UPDATE target SET score = 0.1235 WHERE id = 7")  # what backfill or the trigger would write
    report = ex.verify()
    table = report["tables"][0]
    assert not report["passed"] and table["mismatched_rows"] == 1
    [sample] = table["samples"]
    assert sample["key"] == {"id": 7} and "does not survive the cast" in sample["problem"]
    assert sample["columns"]["score"]["old"] == "0.123456"


def test_a_value_that_cannot_be_cast_is_a_finding_not_a_crash(dsn: str, db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE origin (id int PRIMARY KEY, ref text)")
    db.execute("INSERT INTO origin SELECT i, md5('r' || i)::uuid::text FROM generate_series(1, 500) i")
    columns = '{ name = "id", type = "integer", nullable = false },\n{ name = "ref", type = "uuid" },'
    ex = _migrated(dsn, _plan("test-uncastable", columns, '"id"'))
    db.execute("UPDATE origin SET ref = 'not a uuid' WHERE id = 9")
    table = ex.verify()["tables"][0]
    assert table["mismatched_rows"] == 1
    [sample] = table["samples"]
    assert sample["key"] == {"id": 9} and sample["columns"]["ref"]["old"] == "not a uuid"


SESSION_COLUMNS = """
  { name = "id", type = "integer", nullable = false },
  { name = "at", type = "timestamptz" },
  { name = "ratio", type = "double precision" },
"""


@pytest.mark.parametrize("session", [{"TimeZone": "Asia/Tokyo"}, {"extra_float_digits": "0"}])
def test_the_verdict_does_not_depend_on_the_operators_session(
    dsn: str, db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch, session: dict[str, str]
) -> None:
    db.execute("CREATE TABLE origin (id int PRIMARY KEY, at timestamp, ratio double precision)")
    db.execute(
        "INSERT INTO origin SELECT i, timestamp '2026-03-29 00:30' + i * interval '7 minutes', i / 3.0::float8"
        " FROM generate_series(1, 3000) i"
    )
    ex = _migrated(dsn, _plan("test-session", SESSION_COLUMNS, '"id"'))  # backfilled in UTC, as the plan says
    monkeypatch.setenv("PGTZ", "Asia/Tokyo")  # libpq passes it to the operator's session
    ex.conn = psycopg.connect(dsn, autocommit=True)
    for name, value in session.items():
        ex.conn.execute(f"SET {name} = '{value}'")
    assert ex.conn.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
    first = ex.verify()
    assert first["passed"], first
    # 0.1 + 0.2 and 0.3 differ in their last bit only: equal in text with extra_float_digits = 0.
    db.execute("UPDATE origin SET ratio = 0.1::float8 + 0.2::float8 WHERE id = 11")
    db.execute("UPDATE target SET ratio = 0.3 WHERE id = 11")
    table = ex.verify()["tables"][0]
    assert table["mismatched_rows"] == 1 and table["samples"][0]["key"] == {"id": 11}


def test_functions_planted_in_public_never_run(dsn: str, db: psycopg.Connection, admin_dsn: str) -> None:
    db.execute("CREATE TABLE origin (id uuid PRIMARY KEY, note text)")
    db.execute("INSERT INTO origin SELECT md5('p' || i)::uuid, 'note ' || i FROM generate_series(1, 6000) i")
    columns = '{ name = "id", type = "uuid", nullable = false },\n{ name = "note", type = "text" },'
    ex = _migrated(dsn, _plan("test-hostile", columns, '"id"'))
    hostile = f"hostile_{uuid.uuid4().hex[:12]}"
    db.execute(f"CREATE ROLE {hostile}")
    try:
        db.execute("CREATE TABLE public.ran (what text)")
        db.execute(f"GRANT CREATE ON SCHEMA public TO {hostile}; GRANT INSERT ON public.ran TO {hostile}")
        db.execute(f"SET ROLE {hostile}")
        for signature in ("width_bucket(uuid, uuid[])", "count(uuid)", "json_build_array(text)"):
            name = signature.split("(")[0]
            returns = "integer" if name != "json_build_array" else "json"
            db.execute(
                f"CREATE FUNCTION public.{signature} RETURNS {returns} LANGUAGE sql"
                f" AS $$ INSERT INTO public.ran VALUES ('{name}'); SELECT NULL::{returns} $$"
            )
        db.execute("RESET ROLE")
        db.execute("UPDATE target SET note = 'planted' WHERE id = md5('p4321')::uuid")
        ex.conn.execute("SET search_path = public, pg_catalog")  # the worst an operator's session can do
        report = ex.verify()
        assert report["tables"][0]["mismatched_rows"] == 1 and report["tables"][0]["bisection"]["levels"] >= 1
        assert db.execute("SELECT count(*) FROM public.ran").fetchone()[0] == 0
    finally:
        db.execute("RESET ROLE")
        db.execute(f"DROP OWNED BY {hostile}; DROP ROLE {hostile}")
