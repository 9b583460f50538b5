"""`--emit-migrations DIR` on create, cleanup and finalize: the files, replayed in order with psql into
a database holding only the schema from before the migration, give the catalog the executor's run
gave; each is recorded as applied in supabase_migrations.schema_migrations, so `db push` skips it."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from dualshift.executor.names import API_SCHEMA, PRIVATE_SCHEMA
from dualshift.executor.pgserver import fresh_database
from dualshift.executor.supabase_data import create_schema

from .schema_catalog import differences, schema_catalog
from .supabase_scenario import loaded_database, migrate_here
from .test_snapshot import restore

FILE_NAME = re.compile(r"^(\d{14})_dualshift_supabase-6-to-3_(create|cleanup|finalize)_([a-z_]+)\.sql$")
# dualshift's bookkeeping tables (state, audit, checkpoints, verify's change capture, cleanup's runs) are
# made by whichever command needs them first, outside the migration history; their functions, triggers
# and policies are compared like every other object.
BOOKKEEPING = (API_SCHEMA, PRIVATE_SCHEMA)
HISTORY = ("supabase_migrations",)


def replay(dsn: str, files: list[Path]) -> None:
    for file in files:
        done = restore(dsn, file)
        assert done.returncode == 0 and "ERROR" not in done.stderr, f"{file.name}: {done.stderr}"


def new_files(directory: Path, seen: set[Path]) -> list[Path]:
    found = sorted(p for p in directory.iterdir() if p not in seen)
    seen.update(found)
    return found


def catalog(dsn: str) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return schema_catalog(conn, skip=HISTORY, skip_tables_of=BOOKKEEPING)


def test_emitted_migrations_replay_into_the_catalog_the_executor_made(admin_dsn: str, tmp_path: Path) -> None:
    out, seen = tmp_path / "supabase" / "migrations", set()
    with loaded_database(admin_dsn, rows=60, clean=True) as dsn, fresh_database(admin_dsn, "replay") as replica:
        with psycopg.connect(replica, autocommit=True) as conn:
            create_schema(conn)  # the schema from before the migration, no row
        steps = [
            ("create", "--emit-migrations", str(out)),
            ("backfill", "--sync", "triggers"),
            ("verify",),
            ("cleanup", "--backup-dir", str(tmp_path / "backup"), "--emit-migrations", str(out)),
            ("finalize", "--emit-migrations", str(out)),
        ]
        emitted: dict[str, list[Path]] = {}
        for args in steps:
            step = migrate_here(dsn, *args)
            assert step.ok, step.output
            if "--emit-migrations" not in args:
                continue
            files = new_files(out, seen)
            emitted[args[0]] = files
            replay(replica, files)
            assert differences(catalog(dsn), catalog(replica)) == {}, args[0]
        with psycopg.connect(dsn, autocommit=True) as conn:
            history = conn.execute(
                "SELECT version, name, statements FROM supabase_migrations.schema_migrations ORDER BY version"
            ).fetchall()
    files = [f for phase in ("create", "cleanup", "finalize") for f in emitted[phase]]
    names = [FILE_NAME.match(f.name) for f in files]
    assert all(names), [f.name for f in files]
    assert [(m.group(2), m.group(3)) for m in names] == [
        ("create", "dualshift_schemas"),
        ("create", "tables"),
        ("create", "grants_policies"),
        ("cleanup", "archive"),
        ("cleanup", "views"),
        ("cleanup", "dependents"),
        ("cleanup", "reverse_sync"),
        ("finalize", "reverse_sync_off"),
        ("finalize", "drop_archive"),
    ]
    versions = [m.group(1) for m in names]
    assert versions == sorted(set(versions))  # distinct, in the order they ran
    assert [(v, n) for v, n, _ in history] == [(m.group(1), f.name[15:-4]) for m, f in zip(names, files, strict=True)]
    for (_, _, statements), file in zip(history, files, strict=True):
        assert statements and all(s in file.read_text() for s in statements)
    text = "".join(f.read_text() for f in files)
    assert "CONCURRENTLY" not in text and "NOTIFY" not in text and "LOCK TABLE" not in text
    ran = [s.split(None, 1)[0].upper() for _, _, statements in history for s in statements]
    assert not {"INSERT", "UPDATE", "DELETE", "COPY"} & set(ran)  # no row moves: backfill and catch-up are data


def test_a_statement_that_needs_its_own_transaction_refuses_the_phase() -> None:
    from dualshift.executor.connection import ExecutorError
    from dualshift.executor.migrations import group_by_concern, refuse_outside_transaction

    try:
        refuse_outside_transaction(['CREATE INDEX CONCURRENTLY i ON "public"."t" (a)'])
    except ExecutorError as exc:
        assert "CREATE INDEX CONCURRENTLY" in str(exc) and "nothing was changed" in str(exc)
    else:
        raise AssertionError("CONCURRENTLY was accepted")
    ran = [
        ("tables", "CREATE TABLE a ()"),
        (None, "LOCK TABLE a"),
        ("views", "CREATE VIEW v AS SELECT 1;"),
        ("tables", "CREATE TABLE b ()"),
    ]
    assert group_by_concern(ran) == [
        ("tables", ["CREATE TABLE a ()", "CREATE TABLE b ()"]),
        ("views", ["CREATE VIEW v AS SELECT 1"]),
    ]


def test_a_migrations_folder_that_is_a_file_refuses_create_before_any_change(admin_dsn: str, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "migrations"
    not_a_folder.write_text("")
    with loaded_database(admin_dsn, rows=60, clean=True) as dsn:
        dry = migrate_here(dsn, "--dry-run", "create", "--emit-migrations", str(tmp_path / "dry"))
        assert dry.ok and not (tmp_path / "dry").exists()  # a dry run writes nothing
        step = migrate_here(dsn, "create", "--emit-migrations", str(not_a_folder))
        assert step.exit_code == 2 and step.output.count("\n") == 1, step.output
        assert "is not a directory; nothing was changed" in step.output
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('public.content_queue')").fetchone()[0] is None
            assert conn.execute("SELECT to_regnamespace('supabase_migrations')").fetchone()[0] is None
