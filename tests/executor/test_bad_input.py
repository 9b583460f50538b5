"""Bad input to `dualshift migrate`: one clear line on stderr, exit 2, nothing changed in the database."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from typer.testing import CliRunner

from dualshift.cli import app
from dualshift.executor.backfill import BackfillOptions
from dualshift.executor.connection import connect
from dualshift.executor.pgserver import fresh_database
from dualshift.executor.phases import Executor
from dualshift.executor.sample_data import load_sample_data
from dualshift.plan import load_plan

from .conftest import PLAN


def _everything(db: psycopg.Connection) -> dict:
    """What a refused command must leave as it was: dualshift's rows, the catalog, the row counts."""
    return {
        "flags": db.execute("SELECT scope, name, value::text FROM dualshift.flags ORDER BY 1, 2").fetchall(),
        "state": db.execute("SELECT plan, phase, plan_hash FROM dualshift_private.state").fetchall(),
        "checkpoints": db.execute(
            "SELECT new_table, source, rows_copied, done FROM dualshift_private.checkpoints ORDER BY 1, 2"
        ).fetchall(),
        "relations": db.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('public', 'dualshift', 'dualshift_private', 'archive_xbot') ORDER BY 1, 2"
        ).fetchall(),
        "rows": db.execute(
            "SELECT (SELECT count(*) FROM public.content_queue), (SELECT count(*) FROM public.content_metadata)"
        ).fetchone(),
        "triggers": db.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone()[0],
    }


@pytest.fixture(scope="module")
def backfilled(admin_dsn: str) -> Iterator[str]:
    """One database at 'backfilled' for every refused command (each must leave it as it was)."""
    with fresh_database(admin_dsn) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            load_sample_data(conn, 1000)
        ex = Executor(connect(url), load_plan(PLAN), url)
        ex.create()
        ex.backfill(BackfillOptions())
        ex.conn.close()
        yield url


@pytest.fixture
def db(backfilled: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(backfilled, autocommit=True) as conn:
        yield conn


BAD = {
    "batch size 0": (["backfill", "--batch-size", "0"], "--batch-size 0: a batch needs at least 1 row"),
    "negative batch size": (["backfill", "--batch-size", "-5"], "--batch-size -5"),
    "negative max batches": (["backfill", "--max-batches", "-1"], "--max-batches -1: give 0 (no limit) or more"),
    "negative lock timeout": (["--lock-timeout-ms", "-1", "switch-reads", "0"], "--lock-timeout-ms -1"),
    "zero lock timeout (wait forever)": (["--lock-timeout-ms", "0", "create"], "--lock-timeout-ms 0"),
    "non-JSON flag": (["flags", "--set", "dual_write=yes please"], "is not JSON"),
    "flag without a value": (["flags", "--set", "dual_write"], "write NAME=VALUE"),
    "unknown flag": (["flags", "--set", "read_new=5"], "unknown flag 'read_new'"),
    "flag percent out of range": (
        ["flags", "--set", "content_queue.read_from_new_percent=500"],
        "read_from_new_percent must be a whole number from 0 to 100, not 500",
    ),
    "flag percent not a number": (["flags", "--set", 'read_from_new_percent="50"'], 'not "50"'),
    "flag percent before a passing verify": (
        ["flags", "--set", "read_from_new_percent=50"],
        "cannot run switch-reads: the migration is at 'backfilled'",
    ),
    "flag on a table not in the plan": (
        ["flags", "--set", "tweets.shadow_reads=true"],
        "tweets is not a new table of plan xbot-9-to-3",
    ),
    "boolean flag with a number": (["flags", "--set", "dual_write=1"], "dual_write takes true or false"),
    "switch-reads on a table not in the plan": (
        ["switch-reads", "50", "--table", "no_such_table"],
        "no_such_table is not a new table of plan xbot-9-to-3; choose one of content_queue, posted_content",
    ),
    "switch-reads above 100": (["switch-reads", "500"], "not 500"),
    "switch-reads below 0": (["switch-reads", "--", "-1"], "not -1"),
    "negative throttle": (["backfill", "--max-rows-per-s", "-1"], "--max-rows-per-s -1"),
    "zero connect timeout": (["--connect-timeout", "0", "status"], "--connect-timeout 0"),
    "unknown sync mode": (["backfill", "--sync", "trigger"], "--sync trigger: choose none or triggers"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case: str, backfilled: str, db: psycopg.Connection) -> None:
    args, expected = BAD[case]
    before = _everything(db)
    result = CliRunner().invoke(app, ["migrate", "--dsn", backfilled, "--plan", str(PLAN), *args])
    assert result.exit_code == 2, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert _everything(db) == before


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:notaport/x", "cannot connect: invalid integer value"),
        ("host=127.0.0.1 port", 'invalid DSN: missing "=" after "port"'),
        ("postgresql://postgres@127.0.0.1:5432/x?sslmode=sometimes", "cannot connect: invalid sslmode value"),
    ],
)
def test_a_malformed_dsn_is_one_line(dsn: str, expected: str) -> None:
    result = CliRunner().invoke(app, ["migrate", "--dsn", dsn, "--plan", str(PLAN), "status"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_flags_that_pass_the_checks_are_set(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        _flags_that_pass_the_checks_are_set(dsn, db)


def _flags_that_pass_the_checks_are_set(backfilled: str, db: psycopg.Connection) -> None:
    ex = Executor(connect(backfilled), load_plan(PLAN), backfilled)
    ex.create()
    ex.backfill(BackfillOptions())
    ex.conn.close()

    def flags(*args: str):
        return CliRunner().invoke(app, ["migrate", "--dsn", backfilled, "--plan", str(PLAN), "flags", *args])

    assert flags("--set", "content_queue.shadow_reads=true").exit_code == 0
    assert CliRunner().invoke(app, ["migrate", "--dsn", backfilled, "--plan", str(PLAN), "verify"]).exit_code == 0
    result = flags("--set", "posted_content.read_from_new_percent=40")
    assert result.exit_code == 0, result.stderr
    assert db.execute("SELECT phase FROM dualshift_private.state").fetchone()[0] == "switched"  # as switch-reads
    assert (
        db.execute(
            "SELECT value FROM dualshift.flags WHERE scope = 'posted_content' AND name = 'read_from_new_percent'"
        ).fetchone()[0]
        == 40
    )
    assert db.execute(
        "SELECT value FROM dualshift.flags WHERE scope = 'content_queue' AND name = 'shadow_reads'"
    ).fetchone() == (True,)


def test_ctrl_c_during_backfill_says_what_was_kept_audits_it_and_resumes(dsn: str) -> None:
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    db = psycopg.connect(dsn, autocommit=True)  # this module's `db` is its shared backfilled database
    base = [sys.executable, "-m", "dualshift", "migrate", "--dsn", dsn, "--plan", str(PLAN)]
    assert subprocess.run([*base, "create"], capture_output=True).returncode == 0
    slow = subprocess.Popen(
        [*base, "backfill", "--batch-size", "20", "--max-rows-per-s", "200"], stderr=subprocess.PIPE, text=True
    )
    status = Path(f"/proc/{slow.pid}/status")

    def copied() -> int:
        return db.execute("SELECT coalesce(sum(rows_copied), 0) FROM dualshift_private.checkpoints").fetchone()[0]

    def handler_in_place() -> bool:  # before Python installs its SIGINT handler, SIGINT just kills it
        caught = next(line for line in status.read_text().splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) & (1 << (signal.SIGINT - 1)))

    while slow.poll() is None and not handler_in_place():
        time.sleep(0.05)
    started = copied()
    while slow.poll() is None and copied() < started + 20:  # the backfill is copying (50 rows a second)
        time.sleep(0.1)
    assert slow.poll() is None, slow.communicate()[1]
    slow.send_signal(signal.SIGINT)
    _, stderr = slow.communicate(timeout=60)
    assert slow.returncode == 130, stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("dualshift: interrupted (Ctrl-C): every step that committed is kept")
    audited = db.execute("SELECT phase FROM dualshift_private.audit WHERE action = 'interrupted'").fetchall()
    assert audited == [("backfill",)]
    resumed = subprocess.run([*base, "backfill"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    db.close()


def test_a_database_error_raised_while_ctrl_c_unwinds_counts_as_the_interruption() -> None:
    """psycopg cancels the query on Ctrl-C; the rollback on the way out can then fail with "another command
    is already in progress", which must still read as the interruption (exit 130), not a database error."""
    from dualshift.executor.cli import _raised_by_ctrl_c

    def unwinding() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise psycopg.OperationalError("another command is already in progress") from None

    with pytest.raises(psycopg.OperationalError) as raised:
        unwinding()
    assert _raised_by_ctrl_c(raised.value)
    assert not _raised_by_ctrl_c(psycopg.OperationalError("server closed the connection unexpectedly"))
