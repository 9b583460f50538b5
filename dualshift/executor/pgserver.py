"""A PostgreSQL to run against: the one at $DATABASE_URL or 127.0.0.1:5432, or a throwaway cluster
started from the local binaries (initdb + pg_ctl) in a temporary directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(dsn: str) -> bool:
    try:
        with psycopg.connect(dsn, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _without_password(dsn: str) -> str:
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "a malformed connection string"
    parts.pop("password", None)
    return psycopg.conninfo.make_conninfo(**parts)


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise RuntimeError(f"no PostgreSQL server answers and {name} is not installed")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def server(throwaway: bool = False) -> Iterator[str]:
    """An admin DSN of a server that answers; a throwaway one is stopped and removed afterwards."""
    chosen = os.environ.get("DATABASE_URL")
    if chosen and not throwaway:
        if not _answers(chosen):  # the user named a server: never quietly use another one
            raise RuntimeError(
                f"DATABASE_URL ({_without_password(chosen)}) does not answer; unset it to use a local server"
            )
        yield chosen
        return
    if not throwaway and _answers(LOCAL_DSN):
        yield LOCAL_DSN
        return
    directory = Path(tempfile.mkdtemp(prefix="dualshift-pg-"))
    port = _free_port()
    run_as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    if run_as:
        shutil.chown(directory, "postgres")
    data = directory / "data"
    subprocess.run(
        [*run_as, _binary("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True
    )
    subprocess.run(
        [
            *run_as,
            _binary("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(directory / "log"),
            "-w",
            "-o",
            f"-p {port} -k {directory} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, _binary("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def fresh_database(admin_dsn: str, prefix: str = "dualshift") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
