"""`migrate snapshot`: pg_dump's schema restores into an empty database with no error and gives the
same catalog as the database it was taken from (the Supabase fixture after `create`)."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import psycopg

from dualshift.executor.cleanup import pg_environment
from dualshift.executor.pgserver import fresh_database
from dualshift.executor.supabase_data import create_roles

from .schema_catalog import differences, schema_catalog
from .supabase_scenario import loaded_database, migrate_here


def restore(dsn: str, script: Path) -> subprocess.CompletedProcess:
    """psql stopping at the first error; the connection only in its environment."""
    return subprocess.run(
        ["psql", "-X", "--quiet", "--no-password", "-v", "ON_ERROR_STOP=1", "-f", str(script)],
        env=pg_environment(dsn),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_snapshot_restores_into_an_empty_database_with_the_same_catalog(admin_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "snapshot"
    with loaded_database(admin_dsn, rows=60, clean=True) as dsn:
        assert migrate_here(dsn, "create").ok
        taken = migrate_here(dsn, "snapshot", "--out-dir", str(out))
        assert taken.ok, taken.output
        sql_file, json_file = out / "PRODUCTION_SCHEMA_SNAPSHOT.sql", out / "PRODUCTION_SCHEMA_SNAPSHOT.json"
        assert stat.S_IMODE(out.stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in (sql_file, json_file)} == {0o600}
        assert "CREATE POLICY" in sql_file.read_text() and "GENERATED ALWAYS AS" in sql_file.read_text()
        tables = json.loads(json_file.read_text())["tables"]
        assert tables["public.content_metadata"]["rows"] == 60
        with psycopg.connect(dsn, autocommit=True) as conn:
            original = schema_catalog(conn)
        with fresh_database(admin_dsn, "snaprestore") as target:
            with psycopg.connect(target, autocommit=True) as conn:
                create_roles(conn)
            restored = restore(target, sql_file)
            assert restored.returncode == 0, restored.stderr
            assert "ERROR" not in restored.stderr
            with psycopg.connect(target, autocommit=True) as conn:
                copy = schema_catalog(conn)
    assert differences(original, copy) == {}
    assert any(row[2] == "content_length" and row[7] == "s" for row in original["columns"])  # generated, kept


def test_snapshot_passes_no_credentials_on_the_command_line() -> None:
    from dualshift.executor.snapshot import dump_command

    command = dump_command("/usr/bin/pg_dump")
    assert command[1:] == ["--schema-only", "--no-password", command[3]]
    assert command[3].startswith("--lock-wait-timeout=")
