from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dualshift.executor.pgserver import fresh_database, server
from dualshift.executor.sample_data import load_sample_data

REPO = Path(__file__).resolve().parents[2]
PLAN = REPO / "fixtures" / "xbot" / "dualshift.toml"
SAMPLE_ROWS = 3000


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    with server() as dsn:
        yield dsn
        drop_orphaned_roles(dsn)


def drop_orphaned_roles(dsn: str) -> None:
    """The functions' roles dualshift made in test databases that are gone (roles are cluster-wide): a
    role still owning or holding something in a live database is left alone."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """DO $$ DECLARE r record; BEGIN
                 FOR r IN SELECT a.rolname FROM pg_catalog.pg_roles a
                          WHERE a.rolname LIKE 'dualshift\\_%' AND a.rolname <> 'dualshift_sync'
                            AND NOT EXISTS (SELECT FROM pg_catalog.pg_shdepend d WHERE d.refobjid = a.oid)
                 LOOP
                   BEGIN EXECUTE format('DROP ROLE %I', r.rolname);
                   EXCEPTION WHEN dependent_objects_still_exist OR undefined_object THEN NULL; END;
                 END LOOP; END $$"""
        )


@pytest.fixture
def dsn(admin_dsn: str) -> Iterator[str]:
    """A fresh database holding the fixture's nine old tables with sample data."""
    with fresh_database(admin_dsn) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            load_sample_data(conn, SAMPLE_ROWS)
        yield url


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn
