"""The Supabase fixture's databases and the migration driven through the command line, shared by the
end-to-end and fault-injection tests (and their longer variants under benchmarks/).

The executor is driven only through `dualshift migrate … --plan … --dsn …` (the contract users have):
in a subprocess where a crash or an environment variable matters, in-process (typer's CliRunner)
where only the outcome does. The judging is the ledger's (tests/executor/ledger.py), never dualshift's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from dualshift.executor.supabase_data import PLAN, clean_dirt, load_supabase_data

DUALSHIFT = Path(sys.executable).parent / "dualshift"
SEED_ROWS = 600
OLD_NAMES = [
    "content_metadata",
    "content_generation_metadata_comprehensive",
    "posted_decisions",
    "tweets",
    "outcomes",
    "tweet_metrics",
]
NEW_TABLES = {
    "content_queue": ["content_metadata", "content_generation_metadata_comprehensive"],
    "posted_content": ["posted_decisions", "tweets"],
    "engagement_metrics": ["outcomes", "tweet_metrics"],
}
# What the wrapper needs through the API (the `dualshift` schema): nothing else may open up.
API_ALLOWANCES = {"dualshift.flags": frozenset({"SELECT"}), "dualshift.failed_writes": frozenset({"INSERT"})}


@dataclass
class Step:
    command: str
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def line(self) -> str:
        tail = self.output.strip().splitlines()[-1:] if self.output.strip() else []
        return f"`{self.command}` exited {self.exit_code}" + (f": {tail[0][:300]}" if tail else "")


def migrate(dsn: str, *args: str, env: dict[str, str] | None = None, plan: Path = PLAN, timeout: float = 300) -> Step:
    """`dualshift migrate --dsn … --plan … ARGS` in its own process."""
    command = [str(DUALSHIFT), "migrate", "--dsn", dsn, "--plan", str(plan), *args]
    environment = dict(os.environ)
    environment.pop("DUALSHIFT_FAULT", None)  # armed only where a test asks for it
    environment.update(env or {})
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)
    return Step(" ".join(args), done.returncode, done.stdout + done.stderr)


def migrate_here(dsn: str, *args: str, plan: Path = PLAN) -> Step:
    """The same command in this process (faster; no fault can fire: DUALSHIFT_FAULT is never set here)."""
    from typer.testing import CliRunner

    from dualshift.cli import app

    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(plan), *args])
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += f"\n{type(result.exception).__name__}: {result.exception}"
    return Step(" ".join(args), result.exit_code, output)


def _create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        conn.execute(statement)
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)


def _drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def template_database(
    admin_dsn: str, rows: int = SEED_ROWS, dirt: tuple[str, ...] = (), clean: bool = False
) -> Iterator[str]:
    """A loaded fixture database used only as a template (copies are fast); yields its name."""
    name = f"supafix_tmpl_{uuid.uuid4().hex[:10]}"
    dsn = _create_database(admin_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_supabase_data(conn, rows, dirt)
            if clean:
                clean_dirt(conn)
        yield name
    finally:
        _drop_database(admin_dsn, name)


@contextmanager
def copy_of(admin_dsn: str, template: str, prefix: str = "supafix") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    dsn = _create_database(admin_dsn, name, template)
    try:
        yield dsn
    finally:
        _drop_database(admin_dsn, name)


@contextmanager
def loaded_database(
    admin_dsn: str, rows: int = SEED_ROWS, dirt: tuple[str, ...] = (), clean: bool = False
) -> Iterator[str]:
    """A fresh database holding the fixture (with the named dirt, then cleaned if asked)."""
    name = f"supafix_{uuid.uuid4().hex[:10]}"
    dsn = _create_database(admin_dsn, name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            load_supabase_data(conn, rows, dirt)
            if clean:
                clean_dirt(conn)
        yield dsn
    finally:
        _drop_database(admin_dsn, name)
