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
